//! The Redis decoders, wrapped for ssehub's fuzz targets: not part of the API, may change in any release.
//!
//! The fuzz package (`fuzz/`) and its seed tests need the decoders of what
//! other publishers may write to Redis (channel envelopes, stream entries,
//! entry ids) without those internals being public. Each function here calls
//! the decoder the hub itself uses, unchanged.

use std::cmp::Ordering;
use std::fmt;

use super::codec::{self, Skip, StreamId};
use crate::{Audience, Category, Event, EventId};

/// Why a message or stream entry was refused: the decoder's skip reason, without its details.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Over the size limit; the size read.
    Oversize(usize),
    /// Not UTF-8.
    NotUtf8,
    /// Not a JSON envelope of the expected shape.
    Malformed,
    /// A required field of a field-per-key stream entry is missing.
    MissingField(&'static str),
    /// `event_id` is not a UUID.
    BadEventId,
    /// `user_id` is not a UUID.
    BadUserId,
    /// `user_id` names another user than the one asked for.
    UserMismatch,
    /// `occurred_at` is not a date-time the decoder reads.
    BadTimestamp,
    /// `event_type` is not a valid event type name.
    BadEventType,
    /// `data` is not JSON text.
    DataNotJson,
    /// `category` names no category.
    UnknownCategory,
    /// No `category`, and the event type maps to none.
    NoCategory,
    /// A message on a channel of no audience.
    UnknownChannel,
    /// A control message that is not a disconnect order.
    BadControl,
}

impl From<Skip> for Refusal {
    fn from(skip: Skip) -> Self {
        match skip {
            Skip::Oversize(n) => Refusal::Oversize(n),
            Skip::NotUtf8 => Refusal::NotUtf8,
            Skip::Malformed(_) => Refusal::Malformed,
            Skip::MissingField(name) => Refusal::MissingField(name),
            Skip::BadEventId => Refusal::BadEventId,
            Skip::BadUserId => Refusal::BadUserId,
            Skip::UserMismatch => Refusal::UserMismatch,
            Skip::BadTimestamp => Refusal::BadTimestamp,
            Skip::BadEventType => Refusal::BadEventType,
            Skip::DataNotJson => Refusal::DataNotJson,
            Skip::UnknownCategory(_) => Refusal::UnknownCategory,
            Skip::NoCategory(_) => Refusal::NoCategory,
            Skip::UnknownChannel => Refusal::UnknownChannel,
            Skip::BadControl => Refusal::BadControl,
        }
    }
}

/// The hub's decoder for one category type: a size limit and the event-type-to-category hook.
pub struct Decoder<C>(codec::Decoder<C>);

impl<C: Category> Decoder<C> {
    /// A decoder refusing inputs over `max_bytes`, taking a missing category from `category_of_event_type`.
    pub fn new(max_bytes: usize, category_of_event_type: fn(&str) -> Option<C>) -> Self {
        Decoder(codec::Decoder { max_bytes, category_of_event_type })
    }

    /// A channel message (or an `event` stream field) for `audience`: the event and the entry id it carries.
    pub fn envelope(&self, audience: Audience, bytes: &[u8]) -> Result<(Event<C>, Option<EntryId>), Refusal> {
        let decoded = self.0.envelope(audience, bytes)?;
        Ok((decoded.event, decoded.stream_id.map(EntryId)))
    }

    /// A stream entry for `audience`: the single `event` field, or one field per envelope key.
    pub fn entry(&self, audience: Audience, fields: &[(&[u8], &[u8])]) -> Result<Event<C>, Refusal> {
        Ok(self.0.entry(audience, fields)?)
    }
}

/// The envelope the hub publishes for `event`.
pub fn envelope<C: Category>(event: &Event<C>) -> String {
    codec::envelope(event)
}

/// The envelope the hub publishes for `event` on a channel, carrying its entry id.
pub fn envelope_with_entry_id<C: Category>(event: &Event<C>, id: EntryId) -> String {
    format!("{},\"stream_id\":\"{}\"}}", codec::envelope_prefix(event), id.0)
}

/// Only the event id of a stream entry, as the replay reads it to locate an id.
pub fn entry_event_id(fields: &[(&[u8], &[u8])]) -> Option<EventId> {
    codec::entry_event_id(fields)
}

/// A stream entry id (`ms-seq`), ordered as Redis orders them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EntryId(StreamId);

impl EntryId {
    /// The id `ms-seq`.
    pub fn new(ms: u64, seq: u64) -> Self {
        EntryId(StreamId { ms, seq })
    }

    /// Reads an entry id as the hub reads it from Redis.
    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok().map(EntryId)
    }

    /// Its millisecond part.
    pub fn ms(self) -> u64 {
        self.0.ms
    }

    /// Its sequence part.
    pub fn seq(self) -> u64 {
        self.0.seq
    }

    /// The `(id` form the hub sends for "after this entry".
    pub fn exclusive(self) -> String {
        self.0.exclusive()
    }
}

impl PartialOrd for EntryId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EntryId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
