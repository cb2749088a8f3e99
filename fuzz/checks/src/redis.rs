//! The properties of the Redis decoders' fuzz targets: channel envelopes, stream entries, entry ids.
//!
//! `checks::redis`, compiled with this crate's `fred` feature: in the fuzz
//! package (whose default `fred` feature turns it on) and in the seed test
//! (`tests/seeds.rs`) under `--features fred`. What these decoders read,
//! any publisher with access to the Redis server can write. The decoders are
//! reached through `ssehub::fred::__fuzz`, which wraps the hub's own.

use std::cmp::Ordering;

use chrono::{Datelike as _, SecondsFormat};
use serde::Deserialize;
use serde::de::IgnoredAny;
use ssehub::fixture::ExampleCategory;
use ssehub::fred::__fuzz::{self, Decoder, EntryId, Refusal};
use ssehub::{Audience, Category, Event, EventId, UserId};

use super::is_valid_event_type;

/// The user the targets decode for.
pub const USER: UserId = UserId::from_uuid(uuid::Uuid::from_u128(0x5f0c_1f7e_2a43_4c1b_9d8e_0b6b_8f3c_2a11));

/// The field separator of `decode_stream_entry` inputs: a byte no UTF-8 text holds.
pub const FIELD_SEPARATOR: u8 = 0xFF;

/// JSON's whitespace, which the decoders leave out around `data`.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

fn decoder(max_bytes: usize) -> Decoder<ExampleCategory> {
    Decoder::new(max_bytes, ExampleCategory::from_event_type)
}

/// Another user than `user`, for checking that an envelope naming `user` is refused to others.
fn other_user(user: UserId) -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(user.as_uuid().as_u128() ^ 1))
}

/// The audiences every input is decoded for.
fn audiences() -> [Audience; 2] {
    [Audience::User(USER), Audience::Broadcast]
}

/// An envelope's shape, read independently of the decoder: the fields it
/// requires, with the same types (`data` any JSON value), unknown keys ignored.
#[derive(Deserialize)]
struct Shape {
    event_id: String,
    event_type: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[allow(dead_code)] // required, of any JSON type
    data: IgnoredAny,
    occurred_at: String,
    #[serde(default)]
    stream_id: Option<String>,
}

/// The parts of an envelope or a field-per-key entry, as text.
struct Parts<'a> {
    event_id: &'a str,
    event_type: &'a str,
    user_id: Option<&'a str>,
    category: Option<&'a str>,
    occurred_at: &'a str,
}

impl<'a> From<&'a Shape> for Parts<'a> {
    fn from(shape: &'a Shape) -> Self {
        Parts {
            event_id: &shape.event_id,
            event_type: &shape.event_type,
            user_id: shape.user_id.as_deref(),
            category: shape.category.as_deref(),
            occurred_at: &shape.occurred_at,
        }
    }
}

/// The user an envelope names, if it names one (empty or absent names none).
fn named_user(user_id: Option<&str>) -> Option<&str> {
    user_id.filter(|u| !u.is_empty())
}

/// What every decoded event satisfies: it is for the audience asked for, and
/// each part is what the input said (a user named is the user asked for).
fn check_event_matches(audience: Audience, parts: &Parts<'_>, event: &Event<ExampleCategory>) {
    assert_eq!(event.audience(), audience, "decoded for {audience:?}, got {event:?}");
    if let (Audience::User(user), Some(named)) = (audience, named_user(parts.user_id)) {
        assert_eq!(named.parse::<UserId>(), Ok(user), "an envelope naming {named:?} delivered to {user}");
    }
    assert_eq!(parts.event_id.parse::<EventId>(), Ok(event.id()), "event id");
    assert_eq!(event.event_type(), parts.event_type, "event type");
    assert!(is_valid_event_type(event.event_type()), "invalid event type {:?} accepted", event.event_type());
    let category = match parts.category {
        Some(name) => ExampleCategory::from_name(name),
        None => ExampleCategory::from_event_type(parts.event_type),
    };
    assert_eq!(Some(event.category()), category, "category of {event:?}");
    assert!(serde_json::from_str::<IgnoredAny>(event.data()).is_ok(), "data {:?} is not JSON", event.data());
    assert_eq!(event.data(), event.data().trim_matches(JSON_WHITESPACE), "data kept its whitespace");
    if let Some(time) = readable_rfc3339(parts.occurred_at) {
        assert_eq!(event.occurred_at(), time, "occurred_at {:?}", parts.occurred_at);
    }
}

/// An RFC 3339 date-time the decoders must read: one in UTC years 0000 to
/// 9999, whose envelope is RFC 3339 again (other years would not read back).
fn readable_rfc3339(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?.to_utc();
    (0..=9999).contains(&time.year()).then_some(time)
}

/// What a refusal says holds for the input (the parts, if the input had them all).
fn check_refusal_reason(audience: Audience, parts: &Parts<'_>, refusal: &Refusal) {
    match refusal {
        Refusal::BadEventId => {
            assert!(parts.event_id.parse::<EventId>().is_err(), "{:?} refused", parts.event_id)
        }
        Refusal::BadUserId => {
            assert!(matches!(audience, Audience::User(_)), "a user id checked for a broadcast");
            let named = named_user(parts.user_id).expect("a user named");
            assert!(named.parse::<UserId>().is_err(), "user id {named:?} refused");
        }
        Refusal::UserMismatch => {
            let Audience::User(user) = audience else { panic!("user mismatch on a broadcast") };
            let named = named_user(parts.user_id).expect("a user named");
            let named: UserId = named.parse().expect("a user id");
            assert_ne!(named, user, "the user asked for refused as another");
        }
        Refusal::UnknownCategory => {
            let name = parts.category.expect("a category named");
            assert_eq!(ExampleCategory::from_name(name), None, "category {name:?} refused");
        }
        Refusal::NoCategory => {
            assert_eq!(parts.category, None, "a category was named");
            assert_eq!(ExampleCategory::from_event_type(parts.event_type), None, "{:?}", parts.event_type);
        }
        Refusal::BadTimestamp => {
            assert!(readable_rfc3339(parts.occurred_at).is_none(), "RFC 3339 {:?} refused", parts.occurred_at)
        }
        Refusal::BadEventType => {
            assert!(!is_valid_event_type(parts.event_type), "{:?} refused", parts.event_type)
        }
        other => panic!("{other:?} is no refusal of an envelope's parts"),
    }
}

/// The round trips of an event decoded for `audience`: its envelope, the
/// channel envelope carrying an entry id, its stream entry (one `event` field),
/// and its field-per-key stream entry all decode to the same event, and its
/// envelope is a fixed point.
fn check_round_trips(audience: Audience, event: &Event<ExampleCategory>, entry_id: EntryId) {
    let big = decoder(usize::MAX);
    let text = __fuzz::envelope(event);
    let (back, no_id) =
        big.envelope(audience, text.as_bytes()).unwrap_or_else(|r| panic!("{text:?} refused: {r:?}"));
    assert_eq!(&back, event, "{text:?} read back as another event");
    assert_eq!(no_id, None, "{text:?} carries no entry id");
    assert_eq!(__fuzz::envelope(&back), text, "the envelope is no fixed point");

    let with_id = __fuzz::envelope_with_entry_id(event, entry_id);
    let back = big.envelope(audience, with_id.as_bytes());
    assert_eq!(back, Ok((event.clone(), Some(entry_id))), "{with_id:?}");

    let single: [(&[u8], &[u8]); 1] = [(b"event", text.as_bytes())];
    assert_eq!(big.entry(audience, &single).as_ref(), Ok(event), "entry {text:?}");
    assert_eq!(__fuzz::entry_event_id(&single), Some(event.id()));

    let id = event.id().to_string();
    let user = match event.audience() {
        Audience::User(user) => user.to_string(),
        Audience::Broadcast | Audience::Group(_) => String::new(),
    };
    let occurred_at = event.occurred_at().to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let fields: [(&[u8], &[u8]); 6] = [
        (b"event_id", id.as_bytes()),
        (b"event_type", event.event_type().as_bytes()),
        (b"user_id", user.as_bytes()),
        (b"category", event.category().name().as_bytes()),
        (b"data", event.data().as_bytes()),
        (b"occurred_at", occurred_at.as_bytes()),
    ];
    assert_eq!(big.entry(audience, &fields).as_ref(), Ok(event), "field-per-key entry of {event:?}");
    assert_eq!(__fuzz::entry_event_id(&fields), Some(event.id()));
}

/// The entry id round trips use: one from the input's bytes, so any id is tried.
fn entry_id_from(bytes: &[u8]) -> EntryId {
    let hash = super::fnv1a_128(bytes);
    EntryId::new((hash >> 64) as u64, hash as u64)
}

// ---------------------------------------------------------------------------
// decode_envelope

/// Fuzz entry for the channel message decoder: the input as an envelope, for a user and for broadcast.
pub fn decode_envelope(input: &[u8]) {
    for audience in audiences() {
        check_envelope(audience, input);
    }
}

/// The envelope decoder on `input` for `audience`: refused over the size
/// limit whatever it holds; else refused for a reason the input shows, or an
/// event for that audience, made of the input's parts, that round trips.
pub fn check_envelope(audience: Audience, input: &[u8]) {
    if let Some(under) = input.len().checked_sub(1) {
        let refused = decoder(under).envelope(audience, input);
        assert_eq!(refused, Err(Refusal::Oversize(input.len())), "over the limit");
    }
    let decoded = decoder(input.len()).envelope(audience, input);
    let text = std::str::from_utf8(input);
    let shape = text.as_ref().ok().and_then(|text| serde_json::from_str::<Shape>(text).ok());
    match (&decoded, &shape) {
        (Err(Refusal::NotUtf8), _) => assert!(text.is_err(), "UTF-8 refused"),
        (Err(Refusal::Malformed), None) => assert!(text.is_ok(), "not UTF-8, refused as malformed"),
        (_, None) => panic!("{input:?} is no envelope, yet decoded as {decoded:?}"),
        (Err(Refusal::Malformed), Some(_)) => panic!("envelope refused as malformed"),
        (Err(refusal), Some(shape)) => check_refusal_reason(audience, &shape.into(), refusal),
        (Ok((event, entry_id)), Some(shape)) => {
            check_event_matches(audience, &shape.into(), event);
            let expected_id = shape.stream_id.as_deref().and_then(EntryId::parse);
            assert_eq!(*entry_id, expected_id, "stream_id {:?}", shape.stream_id);
            if let (Audience::User(user), Some(_)) = (audience, named_user(shape.user_id.as_deref())) {
                let other = Audience::User(other_user(user));
                assert_eq!(decoder(input.len()).envelope(other, input), Err(Refusal::UserMismatch));
            }
            check_round_trips(audience, event, entry_id.unwrap_or_else(|| entry_id_from(input)));
        }
    }
}

// ---------------------------------------------------------------------------
// decode_stream_entry

/// Fuzz entry for the stream entry decoder: the input split at
/// [`FIELD_SEPARATOR`] into field name, value, name, value... (a last name
/// alone has an empty value), decoded for a user and for broadcast.
pub fn decode_stream_entry(input: &[u8]) {
    let pieces: Vec<&[u8]> = input.split(|b| *b == FIELD_SEPARATOR).collect();
    let fields: Vec<(&[u8], &[u8])> =
        pieces.chunks(2).map(|pair| (pair[0], pair.get(1).copied().unwrap_or_default())).collect();
    for audience in audiences() {
        check_entry(audience, &fields);
    }
}

/// The stream entry decoder on `fields` for `audience`: refused over the size
/// limit; with an `event` field, exactly the envelope decoder on it; else
/// refused for a reason the fields show, or an event made of them that round trips.
pub fn check_entry(audience: Audience, fields: &[(&[u8], &[u8])]) {
    let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if let Some(under) = size.checked_sub(1) {
        let refused = decoder(under).entry(audience, fields);
        assert_eq!(refused, Err(Refusal::Oversize(size)), "over the limit");
    }
    let decoder = decoder(size);
    let decoded = decoder.entry(audience, fields);
    let field = |name: &str| fields.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| *v);
    if let Some(envelope) = field("event") {
        let as_envelope = decoder.envelope(audience, envelope).map(|(event, _)| event);
        assert_eq!(decoded, as_envelope, "the `event` field decoded otherwise than as an envelope");
        if let Ok(event) = &decoded {
            assert_eq!(__fuzz::entry_event_id(fields), Some(event.id()), "entry_event_id");
        }
        return;
    }
    let text = |name: &str| field(name).map(std::str::from_utf8);
    let required = ["data", "event_id", "event_type", "occurred_at"];
    let optional = ["user_id", "category"];
    match &decoded {
        Err(Refusal::Oversize(_) | Refusal::Malformed | Refusal::UnknownChannel) => {
            panic!("field-per-key entry refused as {decoded:?}")
        }
        Err(Refusal::MissingField(name)) => {
            assert!(required.contains(name), "{name} is not required");
            assert_eq!(field(name), None, "{name} is there");
        }
        Err(Refusal::NotUtf8) => assert!(
            required.iter().chain(&optional).any(|name| matches!(text(name), Some(Err(_)))),
            "every field is UTF-8"
        ),
        Err(Refusal::DataNotJson) => {
            let data = text("data").expect("data").expect("UTF-8 data");
            assert!(serde_json::from_str::<IgnoredAny>(data).is_err(), "data {data:?} refused");
        }
        _ => {
            // Every other outcome comes with the fields all there and all UTF-8.
            let get = |name| text(name).map(|t| t.expect("a UTF-8 field"));
            let parts = Parts {
                event_id: get("event_id").expect("event_id"),
                event_type: get("event_type").expect("event_type"),
                user_id: get("user_id"),
                category: get("category"),
                occurred_at: get("occurred_at").expect("occurred_at"),
            };
            let data = get("data").expect("data");
            match &decoded {
                Err(refusal) => check_refusal_reason(audience, &parts, refusal),
                Ok(event) => {
                    check_event_matches(audience, &parts, event);
                    assert_eq!(event.data(), data.trim_matches(JSON_WHITESPACE), "data");
                    assert_eq!(__fuzz::entry_event_id(fields), Some(event.id()), "entry_event_id");
                    let bytes: Vec<u8> =
                        fields.iter().flat_map(|(k, v)| [*k, *v]).flatten().copied().collect();
                    check_round_trips(audience, event, entry_id_from(&bytes));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// parse_entry_id

/// Fuzz entry for the entry id parser: each line of the input as an id, each
/// line against the next, and (from every 32 bytes) two ids made of four `u64`s.
pub fn parse_entry_id(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let ids: Vec<Option<EntryId>> = text.split('\n').map(check_entry_id_text).collect();
    for pair in ids.windows(2) {
        if let [Some(a), Some(b)] = pair {
            check_entry_id_order(*a, *b);
        }
    }
    for chunk in input.chunks_exact(32) {
        let word = |i: usize| u64::from_le_bytes(chunk[i * 8..i * 8 + 8].try_into().unwrap());
        let (a, b) = (EntryId::new(word(0), word(1)), EntryId::new(word(2), word(3)));
        for id in [a, b] {
            assert_eq!(check_entry_id_text(&id.to_string()), Some(id), "{id} does not read back");
        }
        check_entry_id_order(a, b);
    }
}

/// The documented form of an entry id: `ms-seq`, each part 1 to 20 ASCII
/// digits (Redis writes no more) whose value is within `u64`.
pub fn expected_entry_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    let part = |p: &str| -> Option<u64> {
        if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digit by digit, so a value over u64::MAX is refused without `str::parse`.
        p.bytes().try_fold(0u64, |value, digit| value.checked_mul(10)?.checked_add(u64::from(digit - b'0')))
    };
    Some((part(ms)?, part(seq)?))
}

/// The parser accepts exactly the documented form, with its values; an id
/// prints as its values without leading zeros, which reads back to it.
pub fn check_entry_id_text(text: &str) -> Option<EntryId> {
    let parsed = EntryId::parse(text);
    let expected = expected_entry_id(text);
    assert_eq!(parsed.map(|id| (id.ms(), id.seq())), expected, "{text:?}");
    let id = parsed?;
    let printed = id.to_string();
    assert_eq!(printed, format!("{}-{}", id.ms(), id.seq()));
    let canonical = |p: &str| p.trim_start_matches('0').to_owned();
    let (ms, seq) = text.split_once('-').unwrap();
    let (printed_ms, printed_seq) = printed.split_once('-').unwrap();
    assert_eq!(canonical(printed_ms), canonical(ms), "{text:?} printed as {printed:?}");
    assert_eq!(canonical(printed_seq), canonical(seq), "{text:?} printed as {printed:?}");
    assert_eq!(EntryId::parse(&printed), Some(id), "{printed:?} does not read back");
    assert_eq!(id.exclusive(), format!("({printed}"));
    Some(id)
}

/// Entry ids order as Redis orders them: by millisecond, then sequence.
pub fn check_entry_id_order(a: EntryId, b: EntryId) {
    let expected: Ordering = (a.ms(), a.seq()).cmp(&(b.ms(), b.seq()));
    assert_eq!(a.cmp(&b), expected, "{a} against {b}");
    assert_eq!(b.cmp(&a), expected.reverse(), "{b} against {a}");
    assert_eq!(a == b, expected == Ordering::Equal);
}
