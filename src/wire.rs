//! The text/event-stream encoder: `id:`, `event:`, `data:`, `retry:` fields and comment frames.
//!
//! Every field is written so that no payload can forge another field or end
//! an event early: data is split at every line break (`\n`, `\r\n` or `\r`)
//! into one `data:` line each, and event types are checked when an
//! [`Event`] is made.

use core::fmt::{self, Write};

use crate::parse::{self, EventTypeError};
use crate::{Category, Event, EventId};

/// Appends the frame of `event` to `out`: `id:`, `event:`, its `data:` lines, and the blank line.
///
/// # Examples
///
/// ```
/// use ssehub::{wire, Audience, Event, fixture::ExampleCategory};
///
/// // Pretty-printed JSON: one `data:` line per line.
/// let event = Event::new(Audience::Broadcast, "note", ExampleCategory::Ai, "{\n  \"n\": 1\n}").unwrap();
/// let mut frame = String::new();
/// wire::encode_event(&event, &mut frame);
/// assert_eq!(frame, format!("id: {}\nevent: note\ndata: {{\ndata:   \"n\": 1\ndata: }}\n\n", event.id()));
/// ```
pub fn encode_event<C: Category>(event: &Event<C>, out: &mut alloc::string::String) {
    // Writing to a String cannot fail, and the event type was checked when the event was made.
    let _ = write_fields(out, Some(event.id()), Some(event.event_type()), event.data());
}

/// The frame of `event` without an `id:` line, in a buffer of exactly its
/// length, so that it becomes `Bytes` without a copy.
#[cfg(feature = "std")]
pub(crate) fn event_frame_body<C: Category>(event: &Event<C>) -> bytes::Bytes {
    // "event: " + type + "\n", "data: " + line + "\n" per line, "\n".
    let data_len: usize = Lines::new(event.data()).map(|line| 7 + line.len()).sum();
    let mut out = alloc::string::String::with_capacity(8 + event.event_type().len() + data_len + 1);
    let _ = write_fields(&mut out, None, Some(event.event_type()), event.data());
    bytes::Bytes::from(out)
}

/// Appends an `id:` line holding `id` (a [`Cursor`](crate::cursor::Cursor), say):
/// the line an event's frame starts with.
///
/// # Examples
///
/// ```
/// let mut out = String::new();
/// ssehub::wire::write_id_line(&mut out, &"0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f~1~9b1f02c4~u1");
/// assert_eq!(out, "id: 0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f~1~9b1f02c4~u1\n");
/// ```
pub fn write_id_line(out: &mut alloc::string::String, id: &dyn fmt::Display) {
    let _ = writeln!(out, "id: {id}");
}

/// Writes one event frame to any [`fmt::Write`]: optional id and event type, then the data.
///
/// Unlike [`encode_event`] this checks `event_type` first.
///
/// # Errors
///
/// An invalid event type (see [`parse::event_type`]); nothing is written then.
///
/// # Examples
///
/// ```
/// let mut out = String::new();
/// ssehub::wire::write_event(&mut out, None, Some("gap"), "{}").unwrap();
/// assert_eq!(out, "event: gap\ndata: {}\n\n");
/// ```
pub fn write_event<W: Write>(
    out: &mut W,
    id: Option<EventId>,
    event_type: Option<&str>,
    data: &str,
) -> Result<(), WireError> {
    if let Some(event_type) = event_type {
        parse::event_type(event_type).map_err(WireError::EventType)?;
    }
    write_fields(out, id, event_type, data).map_err(|_| WireError::Write)
}

fn write_fields<W: Write>(
    out: &mut W,
    id: Option<EventId>,
    event_type: Option<&str>,
    data: &str,
) -> fmt::Result {
    if let Some(id) = id {
        writeln!(out, "id: {id}")?;
    }
    if let Some(event_type) = event_type {
        out.write_str("event: ")?;
        out.write_str(event_type)?;
        out.write_char('\n')?;
    }
    for line in Lines::new(data) {
        out.write_str("data: ")?;
        out.write_str(line)?;
        out.write_char('\n')?;
    }
    out.write_char('\n')
}

/// Appends a `retry:` frame telling the client how long to wait before reconnecting.
///
/// # Examples
///
/// ```
/// let mut out = String::new();
/// ssehub::wire::write_retry(&mut out, 3000);
/// assert_eq!(out, "retry: 3000\n\n");
/// ```
pub fn write_retry(out: &mut alloc::string::String, millis: u32) {
    let _ = write!(out, "retry: {millis}\n\n");
}

/// Appends a comment frame (`: text`), as used for heartbeats; clients ignore it.
///
/// Each line of `text` becomes a comment line of its own.
///
/// # Examples
///
/// ```
/// let mut out = String::new();
/// ssehub::wire::write_comment(&mut out, "keep-alive");
/// assert_eq!(out, ": keep-alive\n\n");
/// ```
pub fn write_comment(out: &mut alloc::string::String, text: &str) {
    for line in Lines::new(text) {
        out.push_str(": ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// The lines of a text split at `\n`, `\r\n` and `\r`, as an SSE parser splits them.
/// Always at least one line; a trailing line break gives a last empty line.
struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: Some(text) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        match text.find(['\r', '\n']) {
            None => {
                self.rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                self.rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    }
}

/// Why a frame could not be written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum WireError {
    /// The event type is not a valid name.
    EventType(EventTypeError),
    /// The writer failed.
    Write,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::EventType(e) => fmt::Display::fmt(e, f),
            WireError::Write => f.write_str("the output refused the frame"),
        }
    }
}

impl core::error::Error for WireError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            WireError::EventType(e) => Some(e),
            WireError::Write => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn lines_split_at_every_kind_of_line_break() {
        let lines: Vec<_> = Lines::new("a\nb\r\nc\rd\r\r\n").collect();
        assert_eq!(lines, ["a", "b", "c", "d", "", ""]);
        assert_eq!(Lines::new("").collect::<Vec<_>>(), [""]);
    }
}
