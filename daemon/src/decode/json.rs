//! Plain-JSON wire format: a JSON object with the schema's field names (docs/contract.md#wire-formats).
//!
//! Not Avro's JSON encoding: a null is `null`, a union value is the bare value, an enum is its
//! symbol string, a timestamp is epoch milliseconds. Optional fields may be absent; unknown fields
//! are ignored. A missing required field or a wrong type is a [`RejectReason::Decode`] carrying
//! serde's message; anything but an object (e.g. an array of the field values) is refused.

use crate::event::{Event, Feedback, RoutingDecision, Stream, SupportTicket};

use super::{Reject, RejectReason};

pub(crate) fn decode(stream: Stream, buf: &[u8]) -> Result<Event, Reject> {
    // serde's derived structs also read a JSON array of the field values in schema order; the
    // format is an object (and the replay merge reads `ts` from it by name).
    if buf.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
        return Err(Reject::new(RejectReason::Decode, "json: expected a JSON object"));
    }
    let res = match stream {
        Stream::Routing => serde_json::from_slice::<RoutingDecision>(buf).map(Event::Decision),
        Stream::Feedback => serde_json::from_slice::<Feedback>(buf).map(Event::Feedback),
        Stream::Tickets => serde_json::from_slice::<SupportTicket>(buf).map(Event::Ticket),
    };
    res.map_err(|e| Reject::new(RejectReason::Decode, format!("json: {e}")))
}

/// Serialize one event as a plain JSON object (`None` fields are written as `null`).
pub(crate) fn encode(ev: &Event) -> Result<Vec<u8>, serde_json::Error> {
    match ev {
        Event::Decision(d) => serde_json::to_vec(d),
        Event::Feedback(f) => serde_json::to_vec(f),
        Event::Ticket(t) => serde_json::to_vec(t),
    }
}
