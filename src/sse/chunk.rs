//! What one poll of an `SseStream` sends: frames gathered into one chunk, the gap event, the closing comment.

use std::fmt::Write as _;

use bytes::Bytes;

use super::{GAP_EVENT, REVOKED_COMMENT};
use crate::cursor::{LastEventId, StreamKind};
use crate::{Error, wire};

/// The output of one `poll_next`: nothing, one frame (passed on as it is, shared with the
/// other streams sending the same event), or several frames copied into one buffer.
pub(super) enum Chunk {
    Empty,
    One(Bytes),
    Many(Vec<u8>),
}

impl Chunk {
    pub(super) fn len(&self) -> usize {
        match self {
            Chunk::Empty => 0,
            Chunk::One(bytes) => bytes.len(),
            Chunk::Many(buffer) => buffer.len(),
        }
    }

    /// Appends an event's frame: its `id:` line, then `body` (its other fields and the blank line).
    pub(super) fn push_event(&mut self, id: &str, body: &[u8]) {
        let len = 5 + id.len() + body.len();
        if !matches!(self, Chunk::Many(_)) {
            let mut buffer = Vec::with_capacity(self.len() + len);
            if let Chunk::One(first) = self {
                buffer.extend_from_slice(first);
            }
            *self = Chunk::Many(buffer);
        }
        if let Chunk::Many(buffer) = self {
            buffer.extend_from_slice(b"id: ");
            buffer.extend_from_slice(id.as_bytes());
            buffer.push(b'\n');
            buffer.extend_from_slice(body);
        }
    }

    pub(super) fn push(&mut self, frame: Bytes) {
        match self {
            Chunk::Empty => *self = Chunk::One(frame),
            Chunk::One(first) => {
                let mut buffer = Vec::with_capacity(2 * (first.len() + frame.len()));
                buffer.extend_from_slice(first);
                buffer.extend_from_slice(&frame);
                *self = Chunk::Many(buffer);
            }
            Chunk::Many(buffer) => buffer.extend_from_slice(&frame),
        }
    }

    pub(super) fn into_bytes(self) -> Option<Bytes> {
        match self {
            Chunk::Empty => None,
            Chunk::One(bytes) => Some(bytes),
            Chunk::Many(buffer) => Some(Bytes::from(buffer)),
        }
    }
}

/// Writes the [`GAP_EVENT`] frame.
pub(super) fn write_gap(out: &mut String, last_delivered: Option<LastEventId>, stream: Option<StreamKind>) {
    let mut data = String::with_capacity(128);
    match last_delivered {
        // A cursor's or an id's text is letters, digits, `-`, `~`, `.` and `@`: nothing to escape in JSON.
        Some(id) => {
            let _ = write!(data, "{{\"last_event_id\":\"{id}\"");
        }
        None => data.push_str("{\"last_event_id\":null"),
    }
    if let Some(stream) = stream {
        let _ = write!(data, ",\"stream\":\"{stream}\"");
    }
    data.push('}');
    // GAP_EVENT is a valid event type and a String never refuses a write.
    let _ = wire::write_event(out, None, Some(GAP_EVENT), &data);
}

/// The comment sent before the body ends; generic on purpose, as a backend's
/// error text may hold details (addresses, keys) that are no business of the client.
pub(super) fn closing_reason(error: &Error) -> &'static str {
    match error {
        Error::Lagged { .. } => "closing: subscriber lagged behind; reconnect to resume",
        Error::Closed => "closing: server shutting down",
        Error::Revoked => REVOKED_COMMENT,
        _ => "closing: backend error; reconnect to resume",
    }
}
