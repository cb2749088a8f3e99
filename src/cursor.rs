//! The SSE id as a cursor: a position in each stream a subscription reads, and its text form.
//!
//! Every audience is a stream of its own: the user's own events and the
//! broadcasts (and more kinds later). Order is kept within a stream, never
//! across streams, so what a client has seen is a [`Position`] per stream, a
//! [`Positions`]. The `id:` of every frame is a [`Cursor`]: the id of the
//! event the frame carries, then the positions reached with it. A reconnecting
//! browser sends it back as `Last-Event-ID`, and replay reads each stream
//! strictly after its own position: exactly once by construction, whatever
//! order the backend delivered the streams in.
//!
//! # The text form (version 1)
//!
//! ```text
//! 0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f~1~9b1f02c4~u<position>~b<position>
//! └──────────── the event's id ──────┘ │ └owner─┘ └ own ────┘ └ broadcasts
//!                                      └ version
//! ```
//!
//! - the event's own id first (hyphenated, 36 characters), so an application
//!   finds it as `lastEventId.slice(0, 36)`;
//! - `~1`: the format version;
//! - `~` and 8 lowercase hex digits: a fingerprint of the user the cursor was
//!   made for; a cursor presented by another user is refused;
//! - one `~`-separated item per stream with a known position, in a fixed
//!   order: `u` (the user's own stream), `b` (the broadcasts), then `g` and
//!   the group's 16 hex digit [fingerprint](crate::GroupId::fingerprint) for
//!   each group stream the client has seen an event of, or was being
//!   replayed (ascending fingerprints, at most [`MAX_GROUPS`]),
//!   then `h`, the horizon, where streams without a position are read from
//!   (see [`Positions`]); new kinds of stream are new letters, so the format
//!   grows without a new version;
//! - a position is a stream entry: its millisecond in base 36, then `.` and
//!   its sequence number in base 36 unless that is 0 (`lx3k2p9s`,
//!   `lx3k2p9s.2`); or `@` and the 32 hex digits of an event id, for "after
//!   this event" where the backend knew no entry (see [`Position::AfterEvent`]).
//!
//! Every part has one canonical spelling (lowercase, no leading zeros); the
//! parser accepts only that, so a cursor round-trips byte for byte. With both
//! streams at entry positions of today's milliseconds (8 base-36 digits until
//! the year 2059), a cursor is 67 bytes when both sequence numbers are 0 (the
//! common case) and at most 73 while they are below 1,296; the horizon adds
//! 10 bytes, and each group seen 26 (1,741 bytes with 64 groups; at most [`MAX_CURSOR_TEXT`] bytes in
//! all, with 64 groups at event-id positions).
//!
//! # Examples
//!
//! ```
//! use ssehub::cursor::{Cursor, Position, Positions};
//! use ssehub::{EventId, UserId};
//!
//! let user = UserId::from_u64(7);
//! let event: EventId = "0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f".parse().unwrap();
//! let positions = Positions {
//!     own: Some(Position::entry(1_733_590_000_123, 0)),
//!     broadcast: Some(Position::entry(1_733_590_000_100, 2)),
//!     ..Positions::NONE
//! };
//! let cursor = Cursor::new(event, user, positions.clone());
//! let text = cursor.to_string();
//! assert!(text.starts_with("0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f~1~"));
//! assert!(text.len() <= 80);
//!
//! let back: Cursor = text.parse().unwrap();
//! assert_eq!(back, cursor);
//! assert_eq!(back.positions_for(user), Ok(&positions));
//! assert!(back.positions_for(UserId::from_u64(8)).is_err());
//! ```

use core::fmt;
use core::str::FromStr;

use uuid::Uuid;

use crate::{Audience, EventId, GroupId, MAX_GROUPS, UserId};

mod position;
pub use position::{GroupPositions, Position, Positions};

/// The longest cursor text the parser reads, in bytes: room for
/// [`MAX_CURSOR_TEXT`] and surrounding whitespace.
pub const MAX_CURSOR_BYTES: usize = 4096;

/// The longest text form of a cursor, in bytes: an event id (36), the version
/// and owner (11), two streams and the horizon after an event id (35 each),
/// and [`MAX_GROUPS`] group streams (51 each, with the fingerprint).
pub const MAX_CURSOR_TEXT: usize = 36 + 11 + 3 * 35 + MAX_GROUPS * (35 + 16);

/// The format version this crate writes and reads.
pub const CURSOR_VERSION: u8 = 1;

/// A kind of stream a subscription reads: one position each in a [`Cursor`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum StreamKind {
    /// The user's own events.
    Own,
    /// The broadcasts.
    Broadcast,
    /// A group's events.
    Group(GroupId),
}

impl StreamKind {
    /// The kinds every subscription reads, in the order a cursor lists them
    /// (its groups come after them).
    pub const ALL: [StreamKind; 2] = [StreamKind::Own, StreamKind::Broadcast];

    /// The stream an event of `audience` is in.
    pub fn of(audience: Audience) -> Self {
        match audience {
            Audience::User(_) => StreamKind::Own,
            Audience::Broadcast => StreamKind::Broadcast,
            Audience::Group(group) => StreamKind::Group(group),
        }
    }

    /// The name the gap event gives it: `own`, `broadcast` or `group`.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Own => "own",
            StreamKind::Broadcast => "broadcast",
            StreamKind::Group(_) => "group",
        }
    }

    fn tag(self) -> u8 {
        match self {
            StreamKind::Own => b'u',
            StreamKind::Broadcast => b'b',
            StreamKind::Group(_) => b'g',
        }
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `id:` of a frame: the event's id, and the position reached in each stream with it.
///
/// See [the module docs](self) for the text form. `Display` writes it,
/// [`FromStr`] (or [`Cursor::parse`]) reads it back, canonical form only.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Cursor {
    event: EventId,
    owner: u32,
    positions: Positions,
}

impl Cursor {
    /// The cursor of `user`'s frame carrying `event`, with `positions` reached.
    pub fn new(event: EventId, user: UserId, positions: Positions) -> Self {
        Self { event, owner: owner_tag(user), positions }
    }

    /// Parses the text form (surrounding ASCII whitespace allowed).
    ///
    /// # Errors
    ///
    /// A [`CursorError`] naming what is wrong. Bounded work, no allocation,
    /// never a panic, whatever the input.
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        if text.len() > MAX_CURSOR_BYTES {
            return Err(CursorError(CursorErrorKind::TooLong));
        }
        let text = text.trim_ascii();
        let mut parts = text.split('~');
        let head = parts.next().unwrap_or_default();
        if head.len() != 36 {
            return Err(CursorError(CursorErrorKind::EventId));
        }
        let event = Uuid::try_parse(head).map_err(|_| CursorError(CursorErrorKind::EventId))?;
        if head.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(CursorError(CursorErrorKind::NotCanonical));
        }
        match parts.next() {
            Some("1") => {}
            Some(_) => return Err(CursorError(CursorErrorKind::Version)),
            None => return Err(CursorError(CursorErrorKind::Missing)),
        }
        let owner = parts.next().ok_or(CursorError(CursorErrorKind::Missing))?;
        if owner.len() != 8 || !owner.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CursorError(CursorErrorKind::Owner));
        }
        let owner = u32::from_str_radix(owner, 16).map_err(|_| CursorError(CursorErrorKind::Owner))?;
        let mut positions = Positions::NONE;
        // Items in this order: `u`, `b`, the groups by ascending fingerprint, `h`; each once.
        let mut next_item = 0;
        let mut last_group: Option<u64> = None;
        for item in parts {
            let tag = *item.as_bytes().first().ok_or(CursorError(CursorErrorKind::StreamKind))?;
            let order = match tag {
                b'u' => 0,
                b'b' => 1,
                b'g' => 2,
                b'h' => 3,
                _ => return Err(CursorError(CursorErrorKind::StreamKind)),
            };
            if order < next_item {
                return Err(CursorError(CursorErrorKind::StreamOrder));
            }
            // Groups repeat (in ascending order, checked below); the others do not.
            next_item = if order == 2 { 2 } else { order + 1 };
            // The tag is one ASCII byte: `item[1..]` starts on a char boundary.
            let rest = &item[1..];
            match tag {
                b'g' => {
                    let fingerprint = rest.get(..16).ok_or(CursorError(CursorErrorKind::Group))?;
                    if !fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                        return Err(CursorError(CursorErrorKind::Group));
                    }
                    let fingerprint = u64::from_str_radix(fingerprint, 16)
                        .map_err(|_| CursorError(CursorErrorKind::Group))?;
                    if last_group.is_some_and(|last| last >= fingerprint) {
                        return Err(CursorError(CursorErrorKind::StreamOrder));
                    }
                    if positions.groups.len() == MAX_GROUPS {
                        return Err(CursorError(CursorErrorKind::Group));
                    }
                    last_group = Some(fingerprint);
                    // 16 ASCII hex digits: `rest[16..]` starts on a char boundary.
                    let position = parse_position(&rest[16..]).map_err(CursorError)?;
                    positions.groups.set_by_fingerprint(fingerprint, Some(position));
                }
                b'h' => positions.horizon = Some(parse_position(rest).map_err(CursorError)?),
                _ => {
                    let kind = if tag == b'u' { StreamKind::Own } else { StreamKind::Broadcast };
                    positions.set(kind, Some(parse_position(rest).map_err(CursorError)?));
                }
            }
        }
        Ok(Self { event: EventId::from_uuid(event), owner, positions })
    }

    /// The id of the event whose frame carried this cursor.
    pub fn event_id(&self) -> EventId {
        self.event
    }

    /// The positions, if the cursor was made for `user`.
    ///
    /// # Errors
    ///
    /// [`CursorErrorKind::ForeignOwner`] when it was made for another user.
    pub fn positions_for(&self, user: UserId) -> Result<&Positions, CursorError> {
        if self.owner == owner_tag(user) {
            Ok(&self.positions)
        } else {
            Err(CursorError(CursorErrorKind::ForeignOwner))
        }
    }

    /// The positions, whoever the cursor was made for.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }
}

impl Cursor {
    /// Writes the text form into `buf`, without allocating; returns it. What
    /// `Display` writes, at the cost of a few stores per byte: the serving
    /// layer writes one for every frame.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssehub::cursor::{Cursor, MAX_CURSOR_TEXT, Position, Positions};
    /// use ssehub::{EventId, UserId};
    ///
    /// let positions = Positions { own: Some(Position::entry(7, 0)), ..Positions::NONE };
    /// let cursor = Cursor::new(EventId::new(), UserId::from_u64(1), positions);
    /// let mut buf = [0; MAX_CURSOR_TEXT];
    /// assert_eq!(cursor.encode(&mut buf), cursor.to_string());
    /// ```
    pub fn encode<'a>(&self, buf: &'a mut [u8; MAX_CURSOR_TEXT]) -> &'a str {
        encode_parts(self.event, self.owner, &self.positions, buf)
    }

    /// Writes the text form of `Cursor::new(event, user, positions)` into
    /// `buf` without making the cursor (nor cloning `positions`); returns it.
    pub fn encode_for<'a>(
        event: EventId,
        user: UserId,
        positions: &Positions,
        buf: &'a mut [u8; MAX_CURSOR_TEXT],
    ) -> &'a str {
        encode_parts(event, owner_tag(user), positions, buf)
    }

    /// [`encode_for`](Self::encode_for) into a buffer of any length of at least
    /// [`text_len_bound`]: what the serving layer writes each frame's `id:` with.
    #[cfg(feature = "std")]
    pub(crate) fn encode_for_into<'a>(
        event: EventId,
        user: UserId,
        positions: &Positions,
        buf: &'a mut [u8],
    ) -> &'a str {
        encode_parts(event, owner_tag(user), positions, buf)
    }
}

/// The most bytes the text form of a cursor with these positions takes.
#[cfg(feature = "std")]
pub(crate) fn text_len_bound(positions: &Positions) -> usize {
    36 + 11 + 3 * 35 + positions.groups.len().min(MAX_GROUPS) * (35 + 16)
}

/// Writes the text form into `buf`, at least [`text_len_bound`] long.
pub(crate) fn encode_parts<'a>(
    event: EventId,
    owner: u32,
    positions: &Positions,
    buf: &'a mut [u8],
) -> &'a str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    event.as_uuid().hyphenated().encode_lower(&mut buf[..36]);
    buf[36..39].copy_from_slice(b"~1~");
    for (i, byte) in buf[39..47].iter_mut().enumerate() {
        *byte = HEX[((owner >> (28 - 4 * i)) & 0xf) as usize];
    }
    let mut at = 47;
    let put_position = |buf: &mut [u8], at: &mut usize, position: Position| match position {
        Position::Entry { ms, seq } => {
            *at += put_base36(&mut buf[*at..], ms);
            if seq != 0 {
                buf[*at] = b'.';
                *at += 1 + put_base36(&mut buf[*at + 1..], seq);
            }
        }
        Position::AfterEvent(id) => {
            buf[*at] = b'@';
            id.as_uuid().simple().encode_lower(&mut buf[*at + 1..*at + 33]);
            *at += 33;
        }
    };
    for kind in StreamKind::ALL {
        let Some(position) = positions.get(kind) else { continue };
        buf[at] = b'~';
        buf[at + 1] = kind.tag();
        at += 2;
        put_position(buf, &mut at, position);
    }
    // At most `MAX_GROUPS` are written (a parsed cursor holds no more, nor
    // does one `resume` writes): the buffer has room for them.
    for (fingerprint, position) in positions.groups.iter().take(MAX_GROUPS) {
        buf[at..at + 2].copy_from_slice(b"~g");
        for (i, byte) in buf[at + 2..at + 18].iter_mut().enumerate() {
            *byte = HEX[((fingerprint >> (60 - 4 * i)) & 0xf) as usize];
        }
        at += 18;
        put_position(buf, &mut at, position);
    }
    if let Some(horizon) = positions.horizon {
        buf[at..at + 2].copy_from_slice(b"~h");
        at += 2;
        put_position(buf, &mut at, horizon);
    }
    // Only ASCII was written.
    core::str::from_utf8(&buf[..at]).unwrap_or_default()
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0; MAX_CURSOR_TEXT]))
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The fingerprint of `user` a cursor carries: FNV-1a of its 16 bytes, folded to 32 bits.
fn owner_tag(user: UserId) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.as_uuid().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32
}

fn parse_position(text: &str) -> Result<Position, CursorErrorKind> {
    if let Some(hex) = text.strip_prefix('@') {
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CursorErrorKind::Position);
        }
        let uuid = Uuid::try_parse(hex).map_err(|_| CursorErrorKind::Position)?;
        return Ok(Position::AfterEvent(EventId::from_uuid(uuid)));
    }
    let (ms, seq) = match text.split_once('.') {
        Some((ms, seq)) => {
            let seq = parse_base36(seq)?;
            if seq == 0 {
                // Sequence 0 is written by leaving it out.
                return Err(CursorErrorKind::NotCanonical);
            }
            (parse_base36(ms)?, seq)
        }
        None => (parse_base36(text)?, 0),
    };
    Ok(Position::Entry { ms, seq })
}

/// A base-36 number, lowercase, no leading zero (but `0` itself), at most `u64::MAX`.
fn parse_base36(text: &str) -> Result<u64, CursorErrorKind> {
    let bytes = text.as_bytes();
    match bytes {
        [] => return Err(CursorErrorKind::Position),
        [b'0', _, ..] => return Err(CursorErrorKind::NotCanonical),
        _ => {}
    }
    let mut value: u64 = 0;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            b'A'..=b'Z' => return Err(CursorErrorKind::NotCanonical),
            _ => return Err(CursorErrorKind::Position),
        };
        value = value
            .checked_mul(36)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(CursorErrorKind::Position)?;
    }
    Ok(value)
}

/// The base-36 digits of `value` (at most 13: `u64::MAX` has 13), least significant last.
fn base36_digits(mut value: u64) -> ([u8; 13], usize) {
    let mut digits = [0u8; 13];
    let mut start = digits.len();
    loop {
        start -= 1;
        let digit = (value % 36) as u8;
        digits[start] = if digit < 10 { b'0' + digit } else { b'a' + digit - 10 };
        value /= 36;
        if value == 0 {
            break;
        }
    }
    (digits, start)
}

/// Writes `value` in base 36 at the start of `out`; returns how many bytes.
fn put_base36(out: &mut [u8], value: u64) -> usize {
    let (digits, start) = base36_digits(value);
    let len = digits.len() - start;
    out[..len].copy_from_slice(&digits[start..]);
    len
}

fn write_base36(f: &mut fmt::Formatter<'_>, value: u64) -> fmt::Result {
    let (digits, start) = base36_digits(value);
    // Only ASCII digits and letters were written.
    f.write_str(core::str::from_utf8(&digits[start..]).map_err(|_| fmt::Error)?)
}

/// Why a cursor was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CursorError(CursorErrorKind);

impl CursorError {
    /// What is wrong.
    pub fn kind(&self) -> CursorErrorKind {
        self.0
    }
}

/// What is wrong with a cursor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum CursorErrorKind {
    /// Longer than [`MAX_CURSOR_BYTES`].
    TooLong,
    /// It does not start with a hyphenated event id.
    EventId,
    /// A version this crate does not read.
    Version,
    /// The version or the owner is missing.
    Missing,
    /// The owner is not 8 lowercase hex digits.
    Owner,
    /// It was made for another user.
    ForeignOwner,
    /// A stream item with an unknown kind letter, or empty.
    StreamKind,
    /// Stream items repeated or out of order.
    StreamOrder,
    /// A position that is not an entry or an event id.
    Position,
    /// A group item without 16 lowercase hex digits, or more than [`MAX_GROUPS`].
    Group,
    /// A spelling other than the canonical one (uppercase, a leading zero, `.0`).
    NotCanonical,
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            CursorErrorKind::TooLong => "invalid cursor: too long",
            CursorErrorKind::EventId => "invalid cursor: it must start with a hyphenated event id",
            CursorErrorKind::Version => "invalid cursor: unknown version",
            CursorErrorKind::Missing => "invalid cursor: version or owner missing",
            CursorErrorKind::Owner => "invalid cursor: bad owner fingerprint",
            CursorErrorKind::ForeignOwner => "invalid cursor: it belongs to another user",
            CursorErrorKind::StreamKind => "invalid cursor: unknown stream kind",
            CursorErrorKind::StreamOrder => "invalid cursor: streams repeated or out of order",
            CursorErrorKind::Position => "invalid cursor: bad stream position",
            CursorErrorKind::Group => "invalid cursor: bad group item",
            CursorErrorKind::NotCanonical => "invalid cursor: not in canonical form",
        })
    }
}

impl core::error::Error for CursorError {}

/// What a client sent as `Last-Event-ID`: a cursor, or a plain event id from before cursors.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum LastEventId {
    /// A cursor, as every frame's `id:` carries.
    Cursor(Cursor),
    /// A plain event UUID: resumed after that event as a merge by event id
    /// orders events ([`Positions::after_event`]), exact on one Redis server
    /// and in the memory backend, best effort across a Redis Cluster.
    Event(EventId),
}

impl LastEventId {
    /// The id of the event the client saw last.
    pub fn event_id(&self) -> EventId {
        match self {
            LastEventId::Cursor(cursor) => cursor.event_id(),
            LastEventId::Event(id) => *id,
        }
    }

    /// Where to resume `user`'s streams.
    ///
    /// # Errors
    ///
    /// [`CursorErrorKind::ForeignOwner`] for a cursor made for another user.
    pub fn positions_for(&self, user: UserId) -> Result<Positions, CursorError> {
        match self {
            LastEventId::Cursor(cursor) => cursor.positions_for(user).cloned(),
            LastEventId::Event(id) => Ok(Positions::after_event(*id)),
        }
    }
}

impl From<EventId> for LastEventId {
    fn from(id: EventId) -> Self {
        LastEventId::Event(id)
    }
}

impl From<Cursor> for LastEventId {
    fn from(cursor: Cursor) -> Self {
        LastEventId::Cursor(cursor)
    }
}

impl FromStr for LastEventId {
    type Err = crate::parse::LastEventIdError;

    /// Parses a cursor or a plain event id, as [`parse::resume_point`](crate::parse::resume_point) does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::parse::resume_point(s)?.ok_or(crate::parse::LastEventIdError::empty())
    }
}

impl fmt::Display for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastEventId::Cursor(cursor) => cursor.fmt(f),
            LastEventId::Event(id) => id.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests;
