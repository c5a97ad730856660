//! Memory per open conversation (target ≤ 256 bytes; 1M open conversations under 512 MB RSS;
//! docs/architecture.md#performance-targets).
//!
//! Opens `TW_BENCH_CONVERSATIONS` (default 1,000,000) conversations in one `PartitionJoin`, two
//! turns each (the shared benchmark traffic, decisions only, all within the attribution window so
//! nothing expires), and prints the resident-set growth per conversation. Deltas are drained every
//! 20k decisions, as the pipeline's commits do, so only the join state stays.
//!
//! Conversation ids are `conv-<n>` (10–11 bytes); `TW_BENCH_ID_LEN=36` pads them to a UUID's
//! length, which moves each id into the allocator's next size class.
//!
//! `cargo bench --bench join_memory`

#[path = "support/traffic.rs"]
mod traffic;

use tierwatch::config::Config;
use tierwatch::join::{JoinCounters, PartitionJoin};
use tierwatch::metrics::Deltas;

fn rss_bytes() -> u64 {
    // /proc/self/statm: size resident shared … in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let n: usize = std::env::var("TW_BENCH_CONVERSATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let id_len: usize = std::env::var("TW_BENCH_ID_LEN").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    // Not under `cargo test --benches`: a million conversations is a benchmark, not a test.
    if std::env::args().any(|a| a == "--bench").then_some(()).is_none() {
        println!("join_memory: run with `cargo bench --bench join_memory`");
        return;
    }
    let mut cfg = Config::from_toml_str("[sqlite]\npath = \"unused.db\"\n").expect("config");
    // Everything stays open: a window longer than the traffic's span.
    cfg.attribution.window_hours = 24.0 * 365.0;
    let settings = cfg.join_settings();
    // Decisions only, generated in chunks so the generator's own memory does not count.
    let before = rss_bytes();
    let mut join = PartitionJoin::new();
    let mut counters = JoinCounters::default();
    let mut deltas = Deltas::default();
    let mut opened = 0usize;
    let chunk = 20_000;
    while opened < n {
        let evs = traffic::events_from(opened, chunk.min(n - opened));
        for (_, ev) in &evs {
            if let tierwatch::event::Event::Decision(d) = ev {
                let mut d = d.clone();
                if d.conversation_id.len() < id_len {
                    d.conversation_id = format!("{:-<id_len$}", d.conversation_id);
                }
                let _ = join.apply_decision(&settings, &mut d, &mut deltas, &mut counters);
            }
        }
        deltas = Deltas::default();
        let _ = join.take_dirty();
        opened += chunk.min(n - opened);
    }
    let after = rss_bytes();
    let open = join.open_conversations();
    let per = (after.saturating_sub(before)) as f64 / open.max(1) as f64;
    println!(
        "join_memory: {open} open conversations (2 turns each, ids of {} bytes): RSS {:.1} MB → {:.1} MB, {per:.0} bytes per conversation \
         (target: ≤ 256)",
        if id_len > 0 { id_len.to_string() } else { "10–11".to_string() },
        before as f64 / 1e6,
        after as f64 / 1e6
    );
}
