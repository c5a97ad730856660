//! Live-like benchmark traffic shared by the benchmarks: two decisions per conversation, feedback
//! on 1 in 4, a ticket on 1 in 10, time moving forward one conversation per 20 s.

use tierwatch::event::*;

/// `n` events as (stream index: 0 routing, 1 feedback, 2 tickets, event), in time order.
#[allow(dead_code)] // not every benchmark uses it
pub fn events(n: usize) -> Vec<(usize, Event)> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        conversation(i, &mut out);
        i += 1;
    }
    out.truncate(n);
    out
}

/// The events of conversations `first .. first + count` (all of them), in time order per
/// conversation.
#[allow(dead_code)] // not every benchmark uses it
pub fn events_from(first: usize, count: usize) -> Vec<(usize, Event)> {
    let mut out = Vec::with_capacity(count * 3);
    for i in first..first + count {
        conversation(i, &mut out);
    }
    out
}

/// One conversation's events.
fn conversation(i: usize, out: &mut Vec<(usize, Event)>) {
    let day = 1_767_571_200_000i64; // 2026-01-05T00:00Z
    let c = format!("conv-{i}");
    // Traffic moves forward in time as in a live stream or a replay: one conversation / 20 s.
    let start = day + i as i64 * 20_000;
    let tier = if i % 3 == 0 { "capable" } else { "cheap" };
    for k in 0..2 {
        out.push((
            0,
            Event::Decision(RoutingDecision {
                event_id: format!("d-{i}-{k}"),
                conversation_id: c.clone(),
                turn: k,
                ts: start + k as i64 * 60_000,
                segment: Some(["smb", "enterprise", "consumer"][i % 3].into()),
                query_text: Some("where is my charge from? it says ACME*SVC 14.99".into()),
                router: RouterKind::PreRoute,
                classifier_version: "clf-2026-01".into(),
                intent: Some("billing".into()),
                confidence: (i % 1000) as f64 / 1000.0,
                threshold: Some(0.6),
                tier: tier.into(),
                model: if tier == "cheap" { "small-1".into() } else { "large-1".into() },
                escalated: false,
                latency_ms: 100.0 + (i % 900) as f64,
                input_tokens: 220,
                output_tokens: 140,
                cost_usd: 0.0004,
                capable_cost_usd: Some(0.0016),
            }),
        ));
    }
    if i % 4 == 0 {
        out.push((
            1,
            Event::Feedback(Feedback {
                event_id: format!("f-{i}"),
                conversation_id: c.clone(),
                turn: Some(1),
                ts: start + 5 * 60_000,
                kind: if i % 8 == 0 { FeedbackKind::ThumbsDown } else { FeedbackKind::ThumbsUp },
                score: None,
                source: Some("widget".into()),
            }),
        ));
    }
    if i % 10 == 0 {
        out.push((
            2,
            Event::Ticket(SupportTicket {
                event_id: format!("t-{i}"),
                ticket_id: format!("T{i}"),
                conversation_id: Some(c.clone()),
                ts: start + 3 * 3_600_000,
                status: TicketStatus::Opened,
                cost_center: "support".into(),
                channel: "phone".into(),
                handle_minutes: None,
                cost_usd: None,
                reason: Some("billing".into()),
            }),
        ));
    }
}
