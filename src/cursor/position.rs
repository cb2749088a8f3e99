//! Positions: how far a subscription has read one stream, and each of its streams.

use core::cmp::Ordering;
use core::fmt;

use super::{StreamKind, write_base36};
use crate::EventId;

/// How far a subscription has read one stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Position {
    /// At the stream entry `ms`-`seq` (a Redis stream entry id; the memory
    /// backend's own numbering): replay resumes with the first entry after it.
    /// [`Position::START`] is before every entry.
    Entry {
        /// The entry's millisecond (or the backend's epoch).
        ms: u64,
        /// The entry's sequence number within `ms`.
        seq: u64,
    },
    /// Just after the event with this id, as a merge by event id orders events:
    /// for an event delivered without its entry (one published by another
    /// writer, which told no entry id), and for a plain event UUID sent as
    /// `Last-Event-ID` by a client from before cursors. The backend finds the
    /// event in this stream or another one it reads and goes on from there:
    /// exact where one sequence numbers every stream (one Redis server, the
    /// memory backend), by time otherwise.
    AfterEvent(EventId),
}

impl Position {
    /// Before every entry: the position of a stream with nothing in it yet.
    pub const START: Position = Position::Entry { ms: 0, seq: 0 };

    /// The position at entry `ms`-`seq`.
    pub const fn entry(ms: u64, seq: u64) -> Self {
        Position::Entry { ms, seq }
    }

    /// The entry, if this is an entry position.
    pub const fn as_entry(&self) -> Option<(u64, u64)> {
        match *self {
            Position::Entry { ms, seq } => Some((ms, seq)),
            Position::AfterEvent(_) => None,
        }
    }

    /// Whether `self` is at or after `other` in the same stream; `None` when
    /// either is an [`AfterEvent`](Position::AfterEvent), which orders only
    /// through the backend's history.
    pub fn partial_cmp_entry(&self, other: &Position) -> Option<Ordering> {
        Some(self.as_entry()?.cmp(&other.as_entry()?))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Position::Entry { ms, seq } => {
                write_base36(f, ms)?;
                if seq != 0 {
                    f.write_str(".")?;
                    write_base36(f, seq)?;
                }
                Ok(())
            }
            Position::AfterEvent(id) => write!(f, "@{}", id.as_uuid().simple()),
        }
    }
}

/// A position in each stream a subscription reads; `None` where it has none yet.
///
/// What [`EventSource::missed_since`](crate::EventSource::missed_since) replays after.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Positions {
    /// In the user's own stream.
    pub own: Option<Position>,
    /// In the broadcast stream.
    pub broadcast: Option<Position>,
}

impl Positions {
    /// No position in any stream: a first connection.
    pub const NONE: Positions = Positions { own: None, broadcast: None };

    /// Every stream after the event `id`, as a merge by event id orders
    /// events: what a plain event UUID as `Last-Event-ID` asks for.
    pub const fn after_event(id: EventId) -> Self {
        Positions { own: Some(Position::AfterEvent(id)), broadcast: Some(Position::AfterEvent(id)) }
    }

    /// The position in stream `kind`.
    pub fn get(&self, kind: StreamKind) -> Option<Position> {
        match kind {
            StreamKind::Own => self.own,
            StreamKind::Broadcast => self.broadcast,
        }
    }

    /// Sets the position in stream `kind`.
    pub fn set(&mut self, kind: StreamKind, position: Option<Position>) {
        match kind {
            StreamKind::Own => self.own = position,
            StreamKind::Broadcast => self.broadcast = position,
        }
    }
}
