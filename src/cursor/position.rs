//! Positions: how far a subscription has read one stream, and each of its streams.

use core::cmp::Ordering;
use core::fmt;

use super::{StreamKind, write_base36};
use alloc::vec::Vec;

use crate::{EventId, GroupId};

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
///
/// A stream with no position of its own (one the client has seen nothing
/// of, a group it joined since) is read after the [`horizon`](Self::horizon)
/// when there is one: a position taken before the connection that wrote the
/// cursor went live, so that everything published to such a stream since was
/// either delivered then or is replayed now.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Positions {
    /// In the user's own stream.
    pub own: Option<Position>,
    /// In the broadcast stream.
    pub broadcast: Option<Position>,
    /// In each group's stream the client has seen an event of.
    pub groups: GroupPositions,
    /// Where streams without a position of their own are read from (see above).
    pub horizon: Option<Position>,
}

impl Positions {
    /// No position in any stream: a first connection.
    pub const NONE: Positions =
        Positions { own: None, broadcast: None, groups: GroupPositions::NONE, horizon: None };

    /// Every stream after the event `id`, as a merge by event id orders
    /// events: what a plain event UUID as `Last-Event-ID` asks for.
    pub const fn after_event(id: EventId) -> Self {
        Positions {
            own: Some(Position::AfterEvent(id)),
            broadcast: Some(Position::AfterEvent(id)),
            groups: GroupPositions::NONE,
            horizon: Some(Position::AfterEvent(id)),
        }
    }

    /// The position in stream `kind`.
    pub fn get(&self, kind: StreamKind) -> Option<Position> {
        match kind {
            StreamKind::Own => self.own,
            StreamKind::Broadcast => self.broadcast,
            StreamKind::Group(group) => self.groups.get(group),
        }
    }

    /// Sets the position in stream `kind`.
    pub fn set(&mut self, kind: StreamKind, position: Option<Position>) {
        match kind {
            StreamKind::Own => self.own = position,
            StreamKind::Broadcast => self.broadcast = position,
            StreamKind::Group(group) => self.groups.set(group, position),
        }
    }

    /// Where stream `kind` is read from: its own position, else the horizon.
    pub fn start_of(&self, kind: StreamKind) -> Option<Position> {
        self.get(kind).or(self.horizon)
    }
}

/// A position in each group stream, by the group's [fingerprint](GroupId::fingerprint), in ascending order.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct GroupPositions(Vec<(u64, Position)>);

impl GroupPositions {
    /// No group position.
    pub const NONE: GroupPositions = GroupPositions(Vec::new());

    /// The position in `group`'s stream.
    pub fn get(&self, group: GroupId) -> Option<Position> {
        self.by_fingerprint(group.fingerprint())
    }

    /// The position in the stream of the group with this fingerprint.
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<Position> {
        let at = self.0.binary_search_by_key(&fingerprint, |(key, _)| *key).ok()?;
        Some(self.0[at].1)
    }

    /// Sets (or, with `None`, removes) the position in `group`'s stream.
    pub fn set(&mut self, group: GroupId, position: Option<Position>) {
        self.set_by_fingerprint(group.fingerprint(), position);
    }

    /// Sets (or removes) the position of the group with this fingerprint.
    pub fn set_by_fingerprint(&mut self, fingerprint: u64, position: Option<Position>) {
        match (self.0.binary_search_by_key(&fingerprint, |(key, _)| *key), position) {
            (Ok(at), Some(position)) => self.0[at].1 = position,
            (Ok(at), None) => {
                self.0.remove(at);
            }
            (Err(at), Some(position)) => self.0.insert(at, (fingerprint, position)),
            (Err(_), None) => {}
        }
    }

    /// Keeps only the groups `keep` says yes to (by fingerprint).
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.0.retain(|(fingerprint, _)| keep(*fingerprint));
    }

    /// How many group positions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each group's fingerprint and position, in ascending fingerprint order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Position)> + '_ {
        self.0.iter().copied()
    }
}
