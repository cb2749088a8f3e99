//! The properties the fuzz targets check, one entry point per target, shared with `tests/fuzz_seeds.rs`.
//!
//! This crate is a dependency of the fuzz package and of the main package's
//! property tests, and its own test (`tests/seeds.rs`) runs every committed
//! seed in `fuzz/seeds/<target>/` as an ordinary `cargo test` case on stable.
//! Each check panics, naming the input, when the property does not hold.
//!
//! The parsers are checked against small reference models written from their
//! documented rules, and the encoder against the independent SSE parser of the
//! `eventsource-stream` crate. The Redis decoders' checks are in [`redis`]
//! (`redis.rs`), compiled with this crate's `fred` feature only.

use std::convert::Infallible;
use std::fmt::Write as _;

use ssehub::cursor::{Cursor, CursorErrorKind, LastEventId, MAX_CURSOR_BYTES, Position, Positions};
use ssehub::fixture::ExampleCategory;
use ssehub::parse::{
    self, CategoryErrorKind, MAX_CATEGORIES_BYTES, MAX_CATEGORIES_ITEMS, MAX_EVENT_TYPE_BYTES,
    MAX_LAST_EVENT_ID_BYTES,
};
use ssehub::wire::{self, WireError};
use ssehub::{Audience, CategorySet, Event, EventId, UserId};

/// The Redis decoders' checks, with the `fred` feature (the fuzz package's default).
#[cfg(feature = "fred")]
pub mod redis;

/// The wire names of [`ExampleCategory`], in index order, as documented.
pub const EXAMPLE_NAMES: [&str; 6] = ["data_sync", "provider", "ai", "import", "portfolio", "security"];

/// The tail of every `?categories=` error message for [`ExampleCategory`].
pub const VALID_CATEGORIES: &str = "valid categories: data_sync, provider, ai, import, portfolio, security";

/// How many bytes of an unknown category name an error message keeps.
const KEPT_NAME_BYTES: usize = 64;

/// Whitespace that `parse` trims: the ASCII whitespace of the WHATWG definition.
fn is_trimmed_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

// ---------------------------------------------------------------------------
// parse_categories

/// Fuzz entry for `parse::categories`: the input is the parameter's values separated by `&`.
pub fn parse_categories(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let values: Vec<&str> = text.split('&').collect();
    check_categories(&values);
}

/// What `parse::categories` must return for some values, by the documented rules.
#[derive(Debug, PartialEq, Eq)]
pub enum ExpectedCategories {
    /// A filter with these bits (every category when no name was given).
    Set(u64),
    /// The values, joined with commas, are longer than [`MAX_CATEGORIES_BYTES`].
    TooLong,
    /// More than [`MAX_CATEGORIES_ITEMS`] names.
    TooMany,
    /// This (trimmed, whole) name is no category.
    Unknown(String),
}

/// The reference model: values are read in order, a value is refused as too
/// long before its items are looked at, and the first problem met wins.
pub fn expected_categories(values: &[&str]) -> ExpectedCategories {
    let mut joined_len = 0usize;
    let mut names = 0usize;
    let mut bits = 0u64;
    for (position, value) in values.iter().enumerate() {
        // Repeated values count as if joined by one comma.
        joined_len += value.len() + usize::from(position > 0);
        if joined_len > MAX_CATEGORIES_BYTES {
            return ExpectedCategories::TooLong;
        }
        for item in value.split(',') {
            let name = item.trim_matches(is_trimmed_whitespace);
            if name.is_empty() {
                continue;
            }
            names += 1;
            if names > MAX_CATEGORIES_ITEMS {
                return ExpectedCategories::TooMany;
            }
            match EXAMPLE_NAMES.iter().position(|known| *known == name) {
                Some(index) => bits |= 1 << index,
                None => return ExpectedCategories::Unknown(name.to_owned()),
            }
        }
    }
    ExpectedCategories::Set(if bits == 0 { (1 << EXAMPLE_NAMES.len()) - 1 } else { bits })
}

/// The exact message of an unknown-name error: the name (first 64 bytes, with
/// control characters, quotes and backslashes escaped), then the valid names.
pub fn expected_unknown_message(name: &str) -> String {
    let mut kept = name.len().min(KEPT_NAME_BYTES);
    while !name.is_char_boundary(kept) {
        kept -= 1;
    }
    let mut shown = String::new();
    for c in name[..kept].chars() {
        if c.is_control() || c == '\'' || c == '\\' {
            write!(shown, "{}", c.escape_default()).unwrap();
        } else {
            shown.push(c);
        }
    }
    let ellipsis = if kept < name.len() { "..." } else { "" };
    format!("invalid category '{shown}{ellipsis}'; {VALID_CATEGORIES}")
}

/// `parse::categories` gives exactly what the model says, with the exact
/// messages, and a filter it returns prints as a value that reads back to it.
pub fn check_categories(values: &[&str]) {
    let parsed = parse::categories::<ExampleCategory>(values.iter().copied());
    let expected = expected_categories(values);
    match (&parsed, &expected) {
        (Ok(set), ExpectedCategories::Set(bits)) => {
            assert_eq!(set.bits(), *bits, "wrong filter for {values:?}");
            let printed = set.to_string();
            let names: Vec<&str> = EXAMPLE_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(printed, names.join(","), "{set:?} printed wrongly");
            assert_eq!(
                parse::categories::<ExampleCategory>([printed.as_str()]).as_ref(),
                Ok(set),
                "{printed:?} does not read back"
            );
        }
        (Err(error), ExpectedCategories::TooLong) => {
            assert_eq!(error.kind(), CategoryErrorKind::TooLong, "{values:?}");
            assert_eq!(error.unknown_name(), None);
            assert_eq!(
                error.to_string(),
                format!(
                    "categories value too long (at most {MAX_CATEGORIES_BYTES} bytes); {VALID_CATEGORIES}"
                )
            );
        }
        (Err(error), ExpectedCategories::TooMany) => {
            assert_eq!(error.kind(), CategoryErrorKind::TooMany, "{values:?}");
            assert_eq!(error.unknown_name(), None);
            assert_eq!(
                error.to_string(),
                format!("too many categories listed (at most {MAX_CATEGORIES_ITEMS}); {VALID_CATEGORIES}")
            );
        }
        (Err(error), ExpectedCategories::Unknown(name)) => {
            assert_eq!(error.kind(), CategoryErrorKind::Unknown, "{values:?}");
            let kept = error.unknown_name().expect("an unknown-name error names the name");
            assert!(name.starts_with(kept), "error names {kept:?}, the input had {name:?}");
            assert_eq!(error.to_string(), expected_unknown_message(name));
        }
        _ => panic!("parse::categories({values:?}) gave {parsed:?}, expected {expected:?}"),
    }
}

// ---------------------------------------------------------------------------
// parse_last_event_id

/// Fuzz entry for `parse::last_event_id`: the input as a header value, and
/// (from its first 16 bytes and the rest) a UUID wrapped in whitespace.
pub fn parse_last_event_id(input: &[u8]) {
    check_last_event_id(&String::from_utf8_lossy(input));
    if let Some((uuid, rest)) = input.split_first_chunk::<16>() {
        let whitespace = [" ", "\t", "\n", "\r", "\x0C"];
        let pad = |bytes: &[u8]| -> String { bytes.iter().map(|b| whitespace[usize::from(b % 5)]).collect() };
        let (before, after) = rest.split_at(rest.len() / 2);
        // Upper or lower case hex, picked by the bits of the last UUID byte.
        let uppercase = uuid[15] & 1 == 1;
        let value = format!("{}{}{}", pad(before), hyphenated(uuid, uppercase), pad(after));
        check_last_event_id(&value);
        if value.len() <= MAX_LAST_EVENT_ID_BYTES {
            let id = parse::last_event_id(&value).unwrap().unwrap();
            assert_eq!(id.as_uuid().as_bytes(), uuid, "{value:?} read as another id");
        }
    }
}

/// The hyphenated form of 16 bytes, written here without the `uuid` crate.
pub fn hyphenated(bytes: &[u8; 16], uppercase: bool) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        if uppercase {
            write!(text, "{byte:02X}").unwrap();
        } else {
            write!(text, "{byte:02x}").unwrap();
        }
    }
    text
}

/// Whether `text` is a hyphenated UUID: 8-4-4-4-12 hex digits, either case.
pub fn is_hyphenated_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { *b == b'-' } else { b.is_ascii_hexdigit() })
}

/// `parse::last_event_id` (and `EventId`/`UserId` parsing) follow the
/// documented rules: over the cap is an error, blank is no id, a hyphenated
/// UUID is that id (printed back in lowercase), anything else is an error.
pub fn check_last_event_id(value: &str) {
    let parsed = parse::last_event_id(value);
    if value.len() > MAX_LAST_EVENT_ID_BYTES {
        let error = parsed.expect_err("a value over the cap is refused");
        assert_eq!(error.to_string(), "invalid event id: too long");
        assert!(value.parse::<EventId>().is_err());
        return;
    }
    let trimmed = value.trim_matches(is_trimmed_whitespace);
    if trimmed.is_empty() {
        assert_eq!(parsed, Ok(None), "blank {value:?} is no id");
        assert_eq!(
            value.parse::<EventId>().map_err(|e| e.to_string()),
            Err("invalid event id: empty".into())
        );
        assert!(value.parse::<UserId>().is_err());
    } else if is_hyphenated_uuid(trimmed) {
        let id = parsed.unwrap_or_else(|e| panic!("{value:?} refused: {e}")).expect("an id");
        assert_eq!(id.to_string(), trimmed.to_ascii_lowercase());
        assert_eq!(value.parse::<EventId>(), Ok(id));
        let user: UserId = value.parse().unwrap_or_else(|e| panic!("user id {value:?} refused: {e}"));
        assert_eq!(user.as_uuid(), id.as_uuid());
    } else {
        let error = parsed.expect_err("not a hyphenated UUID");
        assert_eq!(
            error.to_string(),
            "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182"
        );
        assert!(value.parse::<EventId>().is_err());
        assert!(value.parse::<UserId>().is_err());
    }
}

// ---------------------------------------------------------------------------
// event_type

/// Fuzz entry for `parse::event_type`: the input as a name.
pub fn event_type(input: &[u8]) {
    check_event_type(&String::from_utf8_lossy(input));
}

/// Whether `name` may be an event type, by the documented rule.
pub fn is_valid_event_type(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_EVENT_TYPE_BYTES && !name.contains(['\r', '\n', '\0'])
}

/// `parse::event_type` accepts exactly the valid names (returning the same
/// text), and `Event` and `wire::write_event` accept and refuse the same names.
pub fn check_event_type(name: &str) {
    let valid = is_valid_event_type(name);
    match parse::event_type(name) {
        Ok(accepted) => {
            assert!(valid, "{name:?} accepted");
            assert!(std::ptr::eq(accepted, name), "the accepted name is not the input");
        }
        Err(error) => {
            assert!(!valid, "{name:?} refused: {error}");
            let expected = if name.is_empty() {
                "invalid event type: empty".to_owned()
            } else if name.len() > MAX_EVENT_TYPE_BYTES {
                format!("invalid event type: longer than {MAX_EVENT_TYPE_BYTES} bytes")
            } else {
                "invalid event type: contains CR, LF or NUL".to_owned()
            };
            assert_eq!(error.to_string(), expected);
        }
    }
    let event = example_event(name, "{}");
    assert_eq!(event.is_ok(), valid, "Event accepts {name:?}: {}", event.is_ok());
    if let Ok(event) = event {
        assert_eq!(event.event_type(), name);
    }
    let mut out = String::from("before");
    let written = wire::write_event(&mut out, None, Some(name), "{}");
    assert_eq!(written.is_ok(), valid, "write_event accepts {name:?}: {written:?}");
    if written.is_err() {
        assert!(matches!(written, Err(WireError::EventType(_))));
        assert_eq!(out, "before", "a refused frame wrote something");
    }
}

/// `text` as a JSON array of strings, one per line, with the line breaks (`\n`, `\r\n`, `\r`) kept
/// as the whitespace between them: JSON text whose lines are as hostile as JSON allows.
pub fn json_keeping_line_breaks(text: &str) -> String {
    let mut out = String::from("[\"");
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                out.push_str("\",\r\n\"");
            }
            '\r' | '\n' => {
                out.push_str("\",");
                out.push(c);
                out.push('"');
            }
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str("\"]");
    out
}

fn example_event(event_type: &str, data: &str) -> Result<Event<ExampleCategory>, ssehub::InvalidEvent> {
    let id = EventId::from_uuid(uuid::Uuid::from_u128(0x0193_6f3c_7d5e_7a10_8b2c_3d4e_5f60_7182));
    Event::from_parts(
        id,
        Audience::Broadcast,
        event_type,
        ExampleCategory::Ai,
        data,
        chrono::DateTime::UNIX_EPOCH,
    )
}

// ---------------------------------------------------------------------------
// encoder_roundtrip

/// Fuzz entry for the encoder. The first byte steers: bit 0 gives the frame an
/// id, bit 1 surrounds it with comment and `retry:` frames, bits 4 to 7 are
/// the chunk size the bytes are fed in (0: one chunk). The rest is text:
/// before its first NUL the event type (no NUL: no event type), after it the
/// data. Ids and retry delays come from a hash of the input.
pub fn encoder_roundtrip(input: &[u8]) {
    let (control, rest) = input.split_first().map_or((0, input), |(c, rest)| (*c, rest));
    let text = String::from_utf8_lossy(rest);
    let (event_type, data) = match text.split_once('\0') {
        Some((event_type, data)) => (Some(event_type), data),
        None => (None, &*text),
    };
    let hash = fnv1a_128(input);
    let id = (control & 1 == 1).then(|| EventId::from_uuid(uuid::Uuid::from_u128(hash)));
    let split = match usize::from(control >> 4) {
        0 => Split::Whole,
        size => Split::Every(size),
    };
    check_event_round_trip(id, event_type, data, &split);
    if control & 2 == 2 {
        check_comment(data, &split);
        check_retry(hash as u32, data, &split);
        check_event_among_other_frames(id, event_type, data, hash as u32, &split);
    }
}

/// 128-bit FNV-1a: a stable, dependency-free hash for deriving ids from inputs.
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in bytes {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    hash
}

/// How bytes are fed to the SSE parser.
#[derive(Debug, Clone)]
pub enum Split {
    /// All in one chunk.
    Whole,
    /// In chunks of this many bytes (the last may be shorter), even inside a character.
    Every(usize),
    /// Cut at these offsets (taken modulo the length; any order, repeats allowed).
    At(Vec<usize>),
}

impl Split {
    fn chunks<'a>(&self, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Split::Whole => vec![bytes],
            Split::Every(size) => bytes.chunks((*size).max(1)).collect(),
            Split::At(cuts) => {
                let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut chunks = Vec::new();
                let mut start = 0;
                for cut in cuts {
                    chunks.push(&bytes[start..cut]);
                    start = cut;
                }
                chunks.push(&bytes[start..]);
                chunks
            }
        }
    }
}

/// What the independent parser read: its events, or its error.
pub fn read_events(stream: &str, split: &Split) -> Vec<eventsource_stream::Event> {
    use futures::StreamExt as _;
    let chunks = split.chunks(stream.as_bytes());
    let events = futures::executor::block_on(
        eventsource_stream::EventStream::new(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, Infallible>),
        ))
        .collect::<Vec<_>>(),
    );
    events
        .into_iter()
        .map(|event| event.unwrap_or_else(|e| panic!("SSE parser refused {stream:?}: {e}")))
        .collect()
}

/// The data a client sees for a payload: its line breaks (`\r\n`, `\r`, `\n`) as `\n`.
pub fn normalise_line_breaks(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// One frame from `write_event` (and, with an event type, the same from
/// `encode_event`) reads back as exactly one event with the same id, event
/// type and data; an invalid event type is refused and nothing is written.
pub fn check_event_round_trip(id: Option<EventId>, event_type: Option<&str>, data: &str, split: &Split) {
    let mut frame = String::new();
    let written = wire::write_event(&mut frame, id, event_type, data);
    if let Some(event_type) = event_type.filter(|name| !is_valid_event_type(name)) {
        assert!(matches!(written, Err(WireError::EventType(_))), "{event_type:?} accepted: {written:?}");
        assert!(frame.is_empty(), "a refused frame wrote {frame:?}");
        return;
    }
    written.unwrap_or_else(|e| panic!("write_event refused {event_type:?}: {e}"));
    assert_one_event(&frame, id, event_type, data, None, split);

    if let Some(event_type) = event_type {
        // Event data is JSON text: the same text as JSON strings, its line breaks kept between them.
        let data = &json_keeping_line_breaks(data);
        let event = example_event(event_type, data).expect("a valid event type and JSON data");
        let mut encoded = String::new();
        wire::encode_event(&event, &mut encoded);
        assert_one_event(&encoded, Some(event.id()), Some(event_type), data, None, split);
        if let Some(id) = id {
            let mut written = String::new();
            wire::write_event(&mut written, Some(id), Some(event_type), data).unwrap();
            let event_id_line = format!("id: {}\n", event.id());
            assert_eq!(
                encoded.strip_prefix(&event_id_line),
                written.strip_prefix(&format!("id: {id}\n")),
                "encode_event and write_event disagree"
            );
        }
    }
}

fn assert_one_event(
    stream: &str,
    id: Option<EventId>,
    event_type: Option<&str>,
    data: &str,
    retry_millis: Option<u32>,
    split: &Split,
) {
    let events = read_events(stream, split);
    assert_eq!(events.len(), 1, "{stream:?} read as {events:?}");
    let event = &events[0];
    assert_eq!(event.id, id.map(|id| id.to_string()).unwrap_or_default(), "id of {stream:?}");
    assert_eq!(event.event, event_type.unwrap_or("message"), "event type of {stream:?}");
    assert_eq!(event.data, normalise_line_breaks(data), "data of {stream:?}");
    assert_eq!(event.retry, retry_millis.map(|ms| std::time::Duration::from_millis(ms.into())));
}

/// A comment frame, whatever its text, is no event.
pub fn check_comment(text: &str, split: &Split) {
    let mut frame = String::new();
    wire::write_comment(&mut frame, text);
    let events = read_events(&frame, split);
    assert!(events.is_empty(), "comment {frame:?} read as {events:?}");
}

/// A `retry:` frame is no event, and its field line carries the delay.
///
/// `eventsource-stream` reports a delay only on the next event it dispatches
/// (and forgets it at the blank line of a frame without data), so the delay is
/// checked by reading the frame's field line followed by a data line.
pub fn check_retry(millis: u32, data: &str, split: &Split) {
    let mut frame = String::new();
    wire::write_retry(&mut frame, millis);
    assert!(read_events(&frame, split).is_empty(), "{frame:?} read as an event");
    let field_line = frame.strip_suffix('\n').expect("a frame ends with a blank line");
    assert!(
        field_line.ends_with('\n') && !field_line.ends_with("\n\n"),
        "{frame:?} is not one line and a blank"
    );
    let mut stream = field_line.to_owned();
    wire::write_event(&mut stream, None, None, data).unwrap();
    assert_one_event(&stream, None, None, data, Some(millis), split);
}

/// Comment and `retry:` frames before and after an event frame leave that
/// event exactly as it was written.
pub fn check_event_among_other_frames(
    id: Option<EventId>,
    event_type: Option<&str>,
    data: &str,
    retry_millis: u32,
    split: &Split,
) {
    let mut stream = String::new();
    wire::write_comment(&mut stream, data);
    wire::write_retry(&mut stream, retry_millis);
    if wire::write_event(&mut stream, id, event_type, data).is_err() {
        return;
    }
    wire::write_comment(&mut stream, "keep-alive");
    wire::write_retry(&mut stream, retry_millis);
    assert_one_event(&stream, id, event_type, data, None, split);
}

/// A filter printed and read back is the same filter.
pub fn check_category_set_round_trip(set: CategorySet<ExampleCategory>) {
    let printed = set.to_string();
    assert_eq!(parse::categories([printed.as_str()]), Ok(set), "{printed:?}");
}

// ---------------------------------------------------------------------------
// parse_cursor

/// Fuzz entry for `Cursor::parse` (and `parse::resume_point`): the input as a
/// `Last-Event-ID` value against a reference model of the documented grammar,
/// and (from its bytes) a cursor built field by field, printed and read back.
pub fn parse_cursor(input: &[u8]) {
    check_cursor(&String::from_utf8_lossy(input));
    if let Some((head, rest)) = input.split_first_chunk::<21>() {
        let (uuid, rest_of_head) = head.split_at(16);
        let owner_seed = rest_of_head[0];
        let number =
            |bytes: &[u8]| bytes.iter().fold(0u64, |n, b| n.wrapping_mul(251).wrapping_add(u64::from(*b)));
        let position = |selector: u8, bytes: &[u8]| match selector % 4 {
            0 => None,
            1 => Some(Position::entry(number(bytes), 0)),
            2 => Some(Position::entry(number(bytes) >> 16, number(&bytes[bytes.len() / 2..]) % 5000)),
            _ => Some(Position::AfterEvent(EventId::from_uuid(uuid::Uuid::from_u64_pair(
                number(bytes),
                !number(bytes),
            )))),
        };
        let (own_bytes, broadcast_bytes) = rest.split_at(rest.len() / 2);
        let mut positions = Positions {
            own: position(rest_of_head[1], own_bytes),
            broadcast: position(rest_of_head[2], broadcast_bytes),
            horizon: position(rest_of_head[3] >> 2, rest),
            ..Positions::NONE
        };
        // Up to 15 groups, each at a position drawn from a slice of the input.
        for i in 0..usize::from(rest_of_head[4] & 0x0f) {
            let bytes = &rest[i.min(rest.len())..];
            let fingerprint = number(bytes).rotate_left(i as u32 * 7) ^ i as u64;
            positions
                .groups
                .set_by_fingerprint(fingerprint, position(bytes.first().copied().unwrap_or(1), bytes));
        }
        let event = EventId::from_uuid(uuid::Uuid::from_bytes(uuid.try_into().expect("16 bytes")));
        let user = UserId::from_u64(
            u64::from(owner_seed) | u64::from(rest_of_head[3]) << 8 | u64::from(rest_of_head[4]) << 16,
        );
        let cursor = Cursor::new(event, user, positions.clone());
        let text = cursor.to_string();
        assert!(text.bytes().all(|b| b.is_ascii_graphic()), "{text:?} is printable ASCII without spaces");
        assert!(text.starts_with(&event.to_string()), "{text:?} starts with the event id");
        let back = Cursor::parse(&text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
        assert_eq!(back, cursor, "{text:?} read back as another cursor");
        assert_eq!(back.positions_for(user), Ok(&positions));
        assert_eq!(back.to_string(), text, "printing is canonical");
        match parse::resume_point(&text) {
            Ok(Some(LastEventId::Cursor(read))) => assert_eq!(read, cursor),
            other => panic!("resume_point({text:?}) gave {other:?}"),
        }
    }
}

/// `Cursor::parse` agrees with [`reference_cursor`] on acceptance and on the
/// refusal reason; an accepted cursor prints back as its trimmed text.
pub fn check_cursor(value: &str) {
    let parsed = Cursor::parse(value);
    let expected = reference_cursor(value);
    match (&parsed, &expected) {
        (Ok(cursor), Ok(())) => {
            assert_eq!(
                cursor.to_string(),
                value.trim_matches(is_trimmed_whitespace),
                "{value:?} is canonical"
            );
        }
        (Err(error), Err(kind)) => assert_eq!(error.kind(), *kind, "{value:?}: {error}"),
        _ => panic!("Cursor::parse({value:?}) gave {parsed:?}, the grammar says {expected:?}"),
    }
    // A `Last-Event-ID` holding `~` is read as a cursor, with the same verdict.
    let trimmed = value.trim_matches(is_trimmed_whitespace);
    if value.len() <= MAX_LAST_EVENT_ID_BYTES && trimmed.contains('~') {
        match (parse::resume_point(value), parsed) {
            (Ok(Some(LastEventId::Cursor(a))), Ok(b)) => assert_eq!(a, b),
            (Err(error), Err(kind)) => assert_eq!(error.cursor_error(), Some(kind), "{value:?}"),
            (got, parsed) => panic!("resume_point({value:?}) gave {got:?}, Cursor::parse {parsed:?}"),
        }
    }
}

/// The cursor grammar of `ssehub::cursor`, written from its documentation:
/// `Ok(())` for a valid cursor, else the first rule it breaks.
pub fn reference_cursor(value: &str) -> Result<(), CursorErrorKind> {
    if value.len() > MAX_CURSOR_BYTES {
        return Err(CursorErrorKind::TooLong);
    }
    let text = value.trim_matches(is_trimmed_whitespace);
    let mut parts = text.split('~');
    let head = parts.next().unwrap_or("");
    if !is_hyphenated_uuid(head) {
        return Err(CursorErrorKind::EventId);
    }
    if head.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(CursorErrorKind::NotCanonical);
    }
    match parts.next() {
        None => return Err(CursorErrorKind::Missing),
        Some("1") => {}
        Some(_) => return Err(CursorErrorKind::Version),
    }
    let owner = parts.next().ok_or(CursorErrorKind::Missing)?;
    if owner.len() != 8 || !owner.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(CursorErrorKind::Owner);
    }
    // `u`, `b`, then `g` items (16 lowercase hex digits, ascending, at most MAX_GROUPS), then `h`.
    let mut next_kind = 0;
    let mut groups: Vec<u64> = Vec::new();
    for item in parts {
        let kind = match item.bytes().next() {
            Some(b'u') => 0,
            Some(b'b') => 1,
            Some(b'g') => 2,
            Some(b'h') => 3,
            _ => return Err(CursorErrorKind::StreamKind),
        };
        if kind < next_kind {
            return Err(CursorErrorKind::StreamOrder);
        }
        next_kind = if kind == 2 { 2 } else { kind + 1 };
        let mut position = &item[1..];
        if kind == 2 {
            let hex = position.get(..16).ok_or(CursorErrorKind::Group)?;
            if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(CursorErrorKind::Group);
            }
            let fingerprint = u64::from_str_radix(hex, 16).map_err(|_| CursorErrorKind::Group)?;
            if groups.last().is_some_and(|last| *last >= fingerprint) {
                return Err(CursorErrorKind::StreamOrder);
            }
            if groups.len() == ssehub::MAX_GROUPS {
                return Err(CursorErrorKind::Group);
            }
            groups.push(fingerprint);
            position = &position[16..];
        }
        reference_position(position)?;
    }
    Ok(())
}

fn reference_position(text: &str) -> Result<(), CursorErrorKind> {
    if let Some(hex) = text.strip_prefix('@') {
        let lower_hex =
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        return if lower_hex { Ok(()) } else { Err(CursorErrorKind::Position) };
    }
    match text.split_once('.') {
        Some((ms, seq)) => {
            if reference_base36(seq)? == 0 {
                return Err(CursorErrorKind::NotCanonical);
            }
            reference_base36(ms).map(drop)
        }
        None => reference_base36(text).map(drop),
    }
}

fn reference_base36(text: &str) -> Result<u128, CursorErrorKind> {
    if text.is_empty() {
        return Err(CursorErrorKind::Position);
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(CursorErrorKind::NotCanonical);
    }
    let mut value: u128 = 0;
    for c in text.chars() {
        let digit = match c {
            '0'..='9' | 'a'..='z' => c.to_digit(36).expect("a base-36 digit"),
            'A'..='Z' => return Err(CursorErrorKind::NotCanonical),
            _ => return Err(CursorErrorKind::Position),
        };
        value = value * 36 + u128::from(digit);
        if value > u128::from(u64::MAX) {
            return Err(CursorErrorKind::Position);
        }
    }
    Ok(value)
}
