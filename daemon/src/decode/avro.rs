//! Hand-written Avro binary decoder for the three v1 records.
//!
//! Reads a datum written with the committed schema straight into the structs: no schema walk, no
//! intermediate `Value`. Every read is bounds-checked; any malformation becomes a
//! [`RejectReason::Decode`] whose detail names the record and field. Trailing bytes after the
//! record are an error, which (together with the union/enum index checks) makes a stream's
//! decoder refuse a datum of another record type.
//!
//! The field order below must match the `.avsc` files; `tests::schema_field_layout` checks it.

use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, Stream, SupportTicket, TicketStatus};

use super::{Reject, RejectReason};

/// Decode one bare Avro datum of the given stream's record type.
pub(crate) fn decode_datum(stream: Stream, buf: &[u8]) -> Result<Event, Reject> {
    let (ev, end) = decode_prefix(stream, buf)?;
    if end != buf.len() {
        return Err(Reject::new(
            RejectReason::Decode,
            format!(
                "{}: {} trailing bytes after the record (record ends at byte {})",
                record_name(stream),
                buf.len() - end,
                end
            ),
        ));
    }
    Ok(ev)
}

/// Decode the datum at the start of `buf`, which may go on with more datums (an Avro container
/// block): the event and the length of its encoding.
pub(crate) fn decode_prefix(stream: Stream, buf: &[u8]) -> Result<(Event, usize), Reject> {
    let mut c = Cursor { buf, pos: 0, record: record_name(stream) };
    let ev = match stream {
        Stream::Routing => Event::Decision(read_decision(&mut c)?),
        Stream::Feedback => Event::Feedback(read_feedback(&mut c)?),
        Stream::Tickets => Event::Ticket(read_ticket(&mut c)?),
    };
    Ok((ev, c.pos))
}

fn record_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Routing => "RoutingDecision",
        Stream::Feedback => "Feedback",
        Stream::Tickets => "SupportTicket",
    }
}

fn read_decision(c: &mut Cursor<'_>) -> Result<RoutingDecision, Reject> {
    Ok(RoutingDecision {
        event_id: c.string("event_id")?,
        conversation_id: c.string("conversation_id")?,
        turn: c.int("turn")?,
        ts: c.long("ts")?,
        segment: c.opt_string("segment")?,
        query_text: c.opt_string("query_text")?,
        router: match c.enum_index("router", 2)? {
            0 => RouterKind::PreRoute,
            _ => RouterKind::Cascade,
        },
        classifier_version: c.string("classifier_version")?,
        intent: c.opt_string("intent")?,
        confidence: c.double("confidence")?,
        threshold: c.opt_double("threshold")?,
        tier: c.string("tier")?,
        model: c.string("model")?,
        escalated: c.boolean("escalated")?,
        latency_ms: c.double("latency_ms")?,
        input_tokens: c.int("input_tokens")?,
        output_tokens: c.int("output_tokens")?,
        cost_usd: c.double("cost_usd")?,
        capable_cost_usd: c.opt_double("capable_cost_usd")?,
    })
}

fn read_feedback(c: &mut Cursor<'_>) -> Result<Feedback, Reject> {
    Ok(Feedback {
        event_id: c.string("event_id")?,
        conversation_id: c.string("conversation_id")?,
        turn: c.opt_int("turn")?,
        ts: c.long("ts")?,
        kind: match c.enum_index("kind", 4)? {
            0 => FeedbackKind::ThumbsUp,
            1 => FeedbackKind::ThumbsDown,
            2 => FeedbackKind::Csat,
            _ => FeedbackKind::HumanReview,
        },
        score: c.opt_double("score")?,
        source: c.opt_string("source")?,
    })
}

fn read_ticket(c: &mut Cursor<'_>) -> Result<SupportTicket, Reject> {
    Ok(SupportTicket {
        event_id: c.string("event_id")?,
        ticket_id: c.string("ticket_id")?,
        conversation_id: c.opt_string("conversation_id")?,
        ts: c.long("ts")?,
        status: match c.enum_index("status", 2)? {
            0 => TicketStatus::Opened,
            _ => TicketStatus::Resolved,
        },
        cost_center: c.string("cost_center")?,
        channel: c.string("channel")?,
        handle_minutes: c.opt_double("handle_minutes")?,
        cost_usd: c.opt_double("cost_usd")?,
        reason: c.opt_string("reason")?,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    record: &'static str,
}

impl<'a> Cursor<'a> {
    #[cold]
    #[inline(never)]
    fn err(&self, field: &'static str, at: usize, what: std::fmt::Arguments<'_>) -> Reject {
        Reject::new(RejectReason::Decode, format!("{}.{field}: {what} (at byte {at})", self.record))
    }

    /// Raw unsigned varint of at most `max_bytes` bytes whose value fits in `max_bits` bits.
    #[inline(always)]
    fn varint(&mut self, field: &'static str, max_bytes: u32, max_bits: u32) -> Result<u64, Reject> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift: u32 = 0;
        for i in 0..max_bytes {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(field, start, format_args!("truncated varint")));
            };
            self.pos += 1;
            let low = u64::from(b & 0x7f);
            if i == max_bytes - 1 {
                // Last permitted byte: no continuation and no bits beyond `max_bits`.
                let room = max_bits - shift;
                if b & 0x80 != 0 || low >> room != 0 {
                    return Err(self.err(field, start, format_args!("varint overflow")));
                }
            }
            value |= low << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
        // Unreachable: the last iteration either returns or errors.
        Err(self.err(field, start, format_args!("varint overflow")))
    }

    #[inline(always)]
    fn long(&mut self, field: &'static str) -> Result<i64, Reject> {
        let n = self.varint(field, 10, 64)?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline(always)]
    fn int(&mut self, field: &'static str) -> Result<i32, Reject> {
        let n = self.varint(field, 5, 32)? as u32;
        Ok(((n >> 1) as i32) ^ -((n & 1) as i32))
    }

    #[inline(always)]
    fn double(&mut self, field: &'static str) -> Result<f64, Reject> {
        let start = self.pos;
        match self.buf.get(start..start.saturating_add(8)) {
            Some(s) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(s);
                self.pos = start + 8;
                Ok(f64::from_le_bytes(b))
            }
            None => Err(self.err(
                field,
                start,
                format_args!("truncated double: {} of 8 bytes left", self.buf.len().saturating_sub(start)),
            )),
        }
    }

    #[inline(always)]
    fn boolean(&mut self, field: &'static str) -> Result<bool, Reject> {
        let start = self.pos;
        match self.buf.get(start) {
            Some(0) => {
                self.pos += 1;
                Ok(false)
            }
            Some(1) => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) => Err(self.err(field, start, format_args!("invalid boolean byte {b:#04x}"))),
            None => Err(self.err(field, start, format_args!("truncated boolean"))),
        }
    }

    #[inline(always)]
    fn string(&mut self, field: &'static str) -> Result<String, Reject> {
        let start = self.pos;
        let len = self.long(field)?;
        if len < 0 {
            return Err(self.err(field, start, format_args!("negative string length {len}")));
        }
        let left = self.buf.len() - self.pos;
        if len as u64 > left as u64 {
            return Err(self.err(field, start, format_args!("string length {len} exceeds the {left} bytes left")));
        }
        let len = len as usize;
        let bytes = &self.buf[self.pos..self.pos + len];
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.pos += len;
                Ok(s.to_owned())
            }
            Err(e) => Err(self.err(field, start, format_args!("invalid UTF-8 at string byte {}", e.valid_up_to()))),
        }
    }

    /// Branch index of a `["null", X]` union: false = null, true = X.
    #[inline(always)]
    fn union_present(&mut self, field: &'static str) -> Result<bool, Reject> {
        let start = self.pos;
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(self.err(field, start, format_args!("union branch index {i} out of range [0, 1]"))),
        }
    }

    #[inline(always)]
    fn enum_index(&mut self, field: &'static str, symbols: i32) -> Result<i32, Reject> {
        let start = self.pos;
        let i = self.int(field)?;
        if (0..symbols).contains(&i) {
            Ok(i)
        } else {
            Err(self.err(field, start, format_args!("enum index {i} out of range (0..{symbols})")))
        }
    }

    #[inline(always)]
    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, Reject> {
        if self.union_present(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline(always)]
    fn opt_double(&mut self, field: &'static str) -> Result<Option<f64>, Reject> {
        if self.union_present(field)? {
            self.double(field).map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline(always)]
    fn opt_int(&mut self, field: &'static str) -> Result<Option<i32>, Reject> {
        if self.union_present(field)? {
            self.int(field).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(buf: &[u8]) -> Cursor<'_> {
        Cursor { buf, pos: 0, record: "T" }
    }

    fn zz_long(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if n < 0x80 {
                out.push(n as u8);
                return out;
            }
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
    }

    #[test]
    fn varint_long_extremes() {
        for v in [0i64, 1, -1, 63, -64, 64, -65, i64::MAX, i64::MIN, i32::MAX as i64, i32::MIN as i64] {
            let b = zz_long(v);
            let mut c = cur(&b);
            assert_eq!(c.long("f").unwrap(), v, "{v}");
            assert_eq!(c.pos, b.len());
        }
    }

    #[test]
    fn varint_int_extremes_and_overflow() {
        for v in [0i32, 1, -1, i32::MAX, i32::MIN] {
            let b = zz_long(v as i64);
            let mut c = cur(&b);
            assert_eq!(c.int("f").unwrap(), v);
        }
        // i32::MAX + 1 as a long does not fit an int.
        let b = zz_long(i32::MAX as i64 + 1);
        assert!(cur(&b).int("f").is_err());
        let b = zz_long(i32::MIN as i64 - 1);
        assert!(cur(&b).int("f").is_err());
        // 6-byte int.
        assert!(cur(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).int("f").is_err());
    }

    #[test]
    fn varint_long_overflow_and_truncation() {
        // 11 bytes.
        let b = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let e = cur(&b).long("fld").unwrap_err();
        assert_eq!(e.reason, RejectReason::Decode);
        assert!(e.detail.contains("T.fld"), "{}", e.detail);
        assert!(e.detail.contains("overflow"), "{}", e.detail);
        // 10th byte carrying more than the 64th bit.
        let b = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(cur(&b).long("f").unwrap_err().detail.contains("overflow"));
        // Truncated.
        let e = cur(&[0x80, 0x80]).long("f").unwrap_err();
        assert!(e.detail.contains("truncated"), "{}", e.detail);
        assert!(cur(&[]).long("f").is_err());
    }

    #[test]
    fn string_checks() {
        let mut b = zz_long(3);
        b.extend_from_slice(b"ab");
        assert!(cur(&b).string("s").unwrap_err().detail.contains("exceeds"));
        let mut b = zz_long(-1);
        b.extend_from_slice(b"ab");
        assert!(cur(&b).string("s").unwrap_err().detail.contains("negative"));
        let mut b = zz_long(2);
        b.extend_from_slice(&[0xc3, 0x28]);
        assert!(cur(&b).string("s").unwrap_err().detail.contains("UTF-8"));
        let mut b = zz_long(i64::MAX);
        b.push(b'a');
        assert!(cur(&b).string("s").is_err());
        let mut b = zz_long(4);
        b.extend_from_slice("é€".as_bytes().get(..4).unwrap());
        assert!(cur(&b).string("s").is_err()); // cut inside a multi-byte char
        let mut b = zz_long(5);
        b.extend_from_slice("é€".as_bytes());
        assert_eq!(cur(&b).string("s").unwrap(), "é€");
    }

    #[test]
    fn bool_union_enum_double_checks() {
        assert!(cur(&[2]).boolean("b").unwrap_err().detail.contains("invalid boolean"));
        assert!(cur(&[]).boolean("b").is_err());
        assert!(cur(&[4]).union_present("u").unwrap_err().detail.contains("union branch index 2"));
        assert!(cur(&[1]).union_present("u").unwrap_err().detail.contains("-1"));
        assert!(cur(&[4]).enum_index("e", 2).unwrap_err().detail.contains("enum index 2"));
        assert!(cur(&[1]).enum_index("e", 2).unwrap_err().detail.contains("enum index -1"));
        assert!(cur(&[0; 7]).double("d").unwrap_err().detail.contains("truncated double"));
        let b = 1.5f64.to_le_bytes();
        assert_eq!(cur(&b).double("d").unwrap(), 1.5);
    }
}
