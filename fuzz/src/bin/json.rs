//! AFL++ target: see `tierwatch_fuzz::targets::json`.

// `nohook`: a panic the code under test catches itself (apache-avro's, in the container reader)
// is not a crash; one that escapes the target still aborts the run.
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| tierwatch_fuzz::targets::json(data));
}
