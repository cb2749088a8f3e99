//! The JSON envelope on channels and in streams: encoding, decoding once per message, and skip reasons.
//!
//! An envelope is `{"event_id","event_type","user_id","category","data","occurred_at"}`
//! (and `"group_id"` for a group's event, whose `user_id` is `null`),
//! with `data` embedded as raw JSON: it is copied as text, never parsed into a
//! tree on the delivery path. Envelopes written by other publishers may lack
//! `category` (a hook maps the event type to one) and may be stored in a
//! stream one field per envelope key instead of ssehub's single `event` field.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike as _, NaiveDateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Audience, Category, Event, EventId, Position, UserId};

/// The field of an ssehub stream entry that holds the whole envelope.
pub(crate) const ENTRY_FIELD: &str = "event";

/// The id of a stream entry: milliseconds and a sequence number, ordered as Redis orders them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct StreamId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl StreamId {
    /// Below every real entry id: the position of an empty stream.
    pub(crate) const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// The smallest id in millisecond `ms`.
    pub(crate) fn at_ms(ms: u64) -> Self {
        StreamId { ms, seq: 0 }
    }

    /// The `(id` form: every entry after this one.
    pub(crate) fn exclusive(self) -> String {
        format!("({self}")
    }

    /// The entry's position, as a cursor carries it.
    pub(crate) fn position(self) -> Position {
        Position::entry(self.ms, self.seq)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(());
        }
        Ok(StreamId { ms: ms.parse().map_err(|_| ())?, seq: seq.parse().map_err(|_| ())? })
    }
}

/// Why a message or stream entry was skipped instead of delivered.
#[derive(Debug)]
pub(crate) enum Skip {
    Oversize(usize),
    NotUtf8,
    Malformed(serde_json::Error),
    MissingField(&'static str),
    BadEventId,
    BadUserId,
    UserMismatch,
    BadTimestamp,
    BadEventType,
    DataNotJson,
    UnknownCategory(String),
    NoCategory(String),
    UnknownChannel,
    BadControl,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Oversize(n) => write!(f, "message of {n} bytes is over the size limit"),
            Skip::NotUtf8 => f.write_str("message is not UTF-8"),
            Skip::Malformed(e) => write!(f, "envelope is not valid: {e}"),
            Skip::MissingField(name) => write!(f, "envelope has no '{name}' field"),
            Skip::BadEventId => f.write_str("event_id is not a UUID"),
            Skip::BadUserId => f.write_str("user_id is not a UUID"),
            Skip::UserMismatch => f.write_str("user_id names another user than the channel"),
            Skip::BadControl => f.write_str("control message is not a disconnect order"),
            Skip::BadTimestamp => f.write_str("occurred_at is not an ISO 8601 date-time"),
            Skip::BadEventType => f.write_str("event_type is not a valid event type name"),
            Skip::DataNotJson => f.write_str("data is not JSON"),
            Skip::UnknownCategory(c) => write!(f, "unknown category '{c}'"),
            Skip::NoCategory(t) => write!(f, "no category for event type '{t}'"),
            Skip::UnknownChannel => f.write_str("message on a channel that is not one of the key layout's"),
        }
    }
}

/// The envelope of `event`, without its closing `}`.
///
/// The publish script closes it twice: as is for the stream entry, and with
/// the new entry's stream id added for the channel message.
/// An event's data is JSON text (checked when it was made), embedded as is
/// without the whitespace around it.
pub(crate) fn envelope_prefix<C: Category>(event: &Event<C>) -> String {
    let data = event.data().trim_matches([' ', '\t', '\n', '\r']);
    let event_type = serde_json::to_string(event.event_type()).expect("a str always serializes");
    let mut out = String::with_capacity(160 + event_type.len() + data.len());
    out.push_str("{\"event_id\":\"");
    out.push_str(&event.id().to_string());
    out.push_str("\",\"event_type\":");
    out.push_str(&event_type);
    match event.audience() {
        Audience::User(user) => {
            out.push_str(",\"user_id\":\"");
            out.push_str(&user.to_string());
            out.push('"');
        }
        Audience::Broadcast => out.push_str(",\"user_id\":null"),
        Audience::Group(group) => {
            out.push_str(",\"user_id\":null,\"group_id\":\"");
            out.push_str(&group.to_string());
            out.push('"');
        }
    }
    // Category names are checked at compile time to be plain ASCII: no escaping needed.
    out.push_str(",\"category\":\"");
    out.push_str(event.category().name());
    out.push_str("\",\"data\":");
    out.push_str(data);
    out.push_str(",\"occurred_at\":\"");
    out.push_str(&event.occurred_at().to_rfc3339_opts(SecondsFormat::AutoSi, true));
    out.push('"');
    out
}

/// The complete envelope of `event`.
pub(crate) fn envelope<C: Category>(event: &Event<C>) -> String {
    let mut out = envelope_prefix(event);
    out.push('}');
    out
}

/// The control message that disconnects `user` on every hub, sent by the hub `from`:
/// `{"disconnect":"<user id>","from":"<hub id>"}`.
pub(crate) fn disconnect_order(user: UserId, from: u64) -> String {
    format!(r#"{{"disconnect":"{user}","from":"{from:016x}"}}"#)
}

#[derive(Deserialize)]
struct ControlIn<'a> {
    #[serde(borrow)]
    disconnect: Cow<'a, str>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
}

/// The user a control message disconnects and the hub that sent it (0 if it names none), if it is
/// a disconnect order; the user id must be in its exact form.
pub(crate) fn disconnect_of(message: &[u8]) -> Option<(UserId, u64)> {
    let control: ControlIn<'_> = serde_json::from_slice(message).ok()?;
    let user: UserId = control.disconnect.parse().ok()?;
    let from = match control.from {
        Some(from) => u64::from_str_radix(&from, 16).ok()?,
        None => 0,
    };
    (user.to_string() == control.disconnect).then_some((user, from))
}

/// A decoded message: the event and, for messages ssehub published with retention, its stream entry id.
pub(crate) struct Decoded<C> {
    pub(crate) event: Event<C>,
    pub(crate) stream_id: Option<StreamId>,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(default, borrow)]
    stream_id: Option<Cow<'a, str>>,
}

/// Decodes envelopes for one category type, with the size limit and the category hook of a hub.
pub(crate) struct Decoder<C> {
    pub(crate) max_bytes: usize,
    pub(crate) category_of_event_type: fn(&str) -> Option<C>,
}

impl<C> Clone for Decoder<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for Decoder<C> {}

impl<C: Category> Decoder<C> {
    /// Decodes a channel message (or an `event` stream field) for `audience`.
    pub(crate) fn envelope(&self, audience: Audience, bytes: &[u8]) -> Result<Decoded<C>, Skip> {
        if bytes.len() > self.max_bytes {
            return Err(Skip::Oversize(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| Skip::NotUtf8)?;
        let env: EnvelopeIn<'_> = serde_json::from_str(text).map_err(Skip::Malformed)?;
        let stream_id = match env.stream_id.as_deref() {
            None => None,
            // A stream id we cannot read only costs exactness of de-duplication: treat it as absent.
            Some(s) => s.parse().ok(),
        };
        let event = self.event(
            audience,
            &env.event_id,
            &env.event_type,
            env.user_id.as_deref(),
            env.category.as_deref(),
            env.data.get(),
            &env.occurred_at,
        )?;
        Ok(Decoded { event, stream_id })
    }

    /// Decodes a stream entry: ssehub's single `event` field, or one field per envelope key.
    pub(crate) fn entry(&self, audience: Audience, fields: &[(&[u8], &[u8])]) -> Result<Event<C>, Skip> {
        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > self.max_bytes {
            return Err(Skip::Oversize(size));
        }
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| *v);
        if let Some(envelope) = field(ENTRY_FIELD) {
            return self.envelope(audience, envelope).map(|d| d.event);
        }
        let text = |name: &'static str| -> Result<Option<&str>, Skip> {
            field(name).map(|v| std::str::from_utf8(v).map_err(|_| Skip::NotUtf8)).transpose()
        };
        let required = |name: &'static str| text(name)?.ok_or(Skip::MissingField(name));
        // The value without the whitespace around it, as an envelope's `data` is read.
        let data = serde_json::from_str::<&RawValue>(required("data")?).map_err(|_| Skip::DataNotJson)?.get();
        self.event(
            audience,
            required("event_id")?,
            required("event_type")?,
            text("user_id")?,
            text("category")?,
            data,
            required("occurred_at")?,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        audience: Audience,
        event_id: &str,
        event_type: &str,
        user_id: Option<&str>,
        category: Option<&str>,
        data: &str,
        occurred_at: &str,
    ) -> Result<Event<C>, Skip> {
        let id: EventId = event_id.parse().map_err(|_| Skip::BadEventId)?;
        if let Audience::User(user) = audience {
            // Other publishers write an empty or null user_id on some events; only a different user is refused.
            if let Some(named) = user_id.filter(|u| !u.is_empty()) {
                let named: UserId = named.parse().map_err(|_| Skip::BadUserId)?;
                if named != user {
                    return Err(Skip::UserMismatch);
                }
            }
        }
        let category = match category {
            Some(name) => C::from_name(name).ok_or_else(|| Skip::UnknownCategory(truncated(name)))?,
            None => (self.category_of_event_type)(event_type)
                .ok_or_else(|| Skip::NoCategory(truncated(event_type)))?,
        };
        let occurred_at = parse_timestamp(occurred_at).ok_or(Skip::BadTimestamp)?;
        // `data` was parsed as a JSON value with the envelope or checked above.
        Event::from_checked_parts(id, audience, event_type, category, data.into(), occurred_at)
            .map_err(|_| Skip::BadEventType)
    }
}

/// Keeps log lines about hostile input short.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// RFC 3339, or the naive ISO 8601 form (taken as UTC) that `datetime.isoformat()` writes for naive times,
/// of a UTC year from 0000 to 9999.
///
/// Other years (`%Y` reads `-024` or `12345`, an offset can cross 0000 or
/// 9999) would make events whose envelope is no RFC 3339 date-time: the
/// hub could not read back what it wrote.
fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let time = match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(s, format).ok())?
            .and_utc(),
    };
    (0..=9999).contains(&time.year()).then_some(time)
}

/// Reads only the event id of a stream entry, for locating an id without decoding whole entries.
pub(crate) fn entry_event_id(fields: &[(&[u8], &[u8])]) -> Option<EventId> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        event_id: Cow<'a, str>,
    }
    let field = |name: &str| fields.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| *v);
    if let Some(envelope) = field(ENTRY_FIELD) {
        let id: IdOnly<'_> = serde_json::from_slice(envelope).ok()?;
        return id.event_id.parse().ok();
    }
    std::str::from_utf8(field("event_id")?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::ExampleCategory as C;

    fn decoder() -> Decoder<C> {
        Decoder { max_bytes: 4096, category_of_event_type: C::from_event_type }
    }

    fn user() -> UserId {
        "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11".parse().unwrap()
    }

    #[test]
    fn envelope_round_trips_with_data_kept_as_text() {
        let event =
            Event::new(Audience::User(user()), "ai.done", C::Ai, r#"{"a": [1, 2.50, "x\ny"]}"#).unwrap();
        let text = envelope(&event);
        assert!(text.contains(r#""data":{"a": [1, 2.50, "x\ny"]}"#), "{text}");
        let back = decoder().envelope(Audience::User(user()), text.as_bytes()).unwrap();
        assert_eq!(back.event, event);
        assert_eq!(back.stream_id, None);
    }

    #[test]
    fn broadcast_envelope_has_null_user() {
        let event = Event::new(Audience::Broadcast, "import", C::Import, "1").unwrap();
        let text = envelope(&event);
        assert!(text.contains(r#""user_id":null"#));
        assert_eq!(decoder().envelope(Audience::Broadcast, text.as_bytes()).unwrap().event, event);
    }

    #[test]
    fn data_that_is_not_json_makes_no_event() {
        let made = Event::<C>::new(Audience::Broadcast, "import", C::Import, "not json");
        assert!(matches!(made, Err(crate::InvalidEvent::DataNotJson(_))), "{made:?}");
    }

    #[test]
    fn stream_id_suffix_is_read_back() {
        let event = Event::new(Audience::Broadcast, "import", C::Import, "{}").unwrap();
        let text = format!("{},\"stream_id\":\"1700000000000-3\"}}", envelope_prefix(&event));
        let back = decoder().envelope(Audience::Broadcast, text.as_bytes()).unwrap();
        assert_eq!(back.stream_id, Some(StreamId { ms: 1_700_000_000_000, seq: 3 }));
    }

    #[test]
    fn envelope_without_category_takes_it_from_the_event_type() {
        let text = format!(
            r#"{{"event_id":"0190163d-8694-739b-aea5-966c26f8ad91","event_type":"portfolio.updated","user_id":"{}","data":{{"v":1}},"occurred_at":"2024-06-01T10:00:00.123456+00:00"}}"#,
            user()
        );
        let back = decoder().envelope(Audience::User(user()), text.as_bytes()).unwrap();
        assert_eq!(back.event.category(), C::Portfolio);
        assert_eq!(back.event.data(), r#"{"v":1}"#);
    }

    #[test]
    fn bad_envelopes_are_skipped_with_their_reason() {
        let d = decoder();
        let a = Audience::User(user());
        let ok = |extra: &str| {
            format!(
                r#"{{"event_id":"0190163d-8694-739b-aea5-966c26f8ad91","event_type":"ai","data":{{}},"occurred_at":"2024-06-01T10:00:00Z"{extra}}}"#
            )
        };
        assert!(d.envelope(a, ok("").as_bytes()).is_ok());
        assert!(matches!(d.envelope(a, b"not json"), Err(Skip::Malformed(_))));
        assert!(matches!(d.envelope(a, &[0xff, 0xfe]), Err(Skip::NotUtf8)));
        assert!(matches!(d.envelope(a, &vec![b' '; 5000]), Err(Skip::Oversize(5000))));
        assert!(matches!(d.envelope(a, br#"{"event_id":1}"#), Err(Skip::Malformed(_))));
        assert!(matches!(
            d.envelope(a, ok(r#","category":"nope""#).as_bytes()),
            Err(Skip::UnknownCategory(_))
        ));
        assert!(matches!(
            d.envelope(a, ok(r#","user_id":"00000000-0000-0000-0000-000000000001""#).as_bytes()),
            Err(Skip::UserMismatch)
        ));
        let no_category = ok("").replace(r#""ai""#, r#""weather""#);
        assert!(matches!(d.envelope(a, no_category.as_bytes()), Err(Skip::NoCategory(_))));
        let bad_time = ok("").replace("2024-06-01T10:00:00Z", "yesterday");
        assert!(matches!(d.envelope(a, bad_time.as_bytes()), Err(Skip::BadTimestamp)));
        let bad_type = ok("").replace(r#""ai""#, r#""a\nb""#);
        assert!(matches!(d.envelope(a, bad_type.as_bytes()), Err(Skip::NoCategory(_) | Skip::BadEventType)));
    }

    #[test]
    fn field_per_key_entries_are_read() {
        let u = user().to_string();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b"event_id", b"0190163d-8694-739b-aea5-966c26f8ad91"),
            (b"event_type", b"security"),
            (b"data", br#"{"ip":"10.0.0.1"}"#),
            (b"occurred_at", b"2024-06-01T10:00:00.5"),
            (b"user_id", u.as_bytes()),
        ];
        let event = decoder().entry(Audience::User(user()), &fields).unwrap();
        assert_eq!(event.category(), C::Security);
        assert_eq!(event.data(), r#"{"ip":"10.0.0.1"}"#);
        assert_eq!(event.occurred_at().timestamp_subsec_millis(), 500);
        assert_eq!(entry_event_id(&fields), Some(event.id()));
    }

    #[test]
    fn field_per_key_data_is_read_without_surrounding_whitespace_as_in_an_envelope() {
        let envelope = br#"{"event_id":"0190163d-8694-739b-aea5-966c26f8ad91","event_type":"ai","data": {"v": 1} ,"occurred_at":"2024-06-01T10:00:00Z"}"#;
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b"event_id", b"0190163d-8694-739b-aea5-966c26f8ad91"),
            (b"event_type", b"ai"),
            (b"data", b" \n{\"v\": 1}\t\r"),
            (b"occurred_at", b"2024-06-01T10:00:00Z"),
        ];
        let from_fields = decoder().entry(Audience::Broadcast, &fields).unwrap();
        assert_eq!(from_fields.data(), r#"{"v": 1}"#);
        assert_eq!(decoder().envelope(Audience::Broadcast, envelope).unwrap().event, from_fields);
    }

    #[test]
    fn timestamps_are_read_in_utc_years_0000_to_9999_only() {
        for good in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59+14:00"] {
            let time = parse_timestamp(good).unwrap_or_else(|| panic!("{good}"));
            let written = time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            assert_eq!(parse_timestamp(&written), Some(time), "{good} written as {written}");
        }
        for bad in [
            "-024-06-01T10:00:00.06199",
            "12345-06-01 10:00:00",
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn stream_ids_parse_and_order() {
        let a: StreamId = "5-1".parse().unwrap();
        let b: StreamId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "5-1");
        assert_eq!(b.exclusive(), "(10-0");
        for bad in ["", "5", "-1", "a-b", "1-", "99999999999999999999999-0"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad}");
        }
    }
}
