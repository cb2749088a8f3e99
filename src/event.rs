//! Event and identity types: `EventId` (UUIDv7), `UserId`, `Audience` and `Event`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cursor::Position;
use crate::parse::{self, EventTypeError};
use crate::{Category, GroupId};

/// The id of an event: a UUIDv7, so ids sort in publish order.
///
/// Ids made by [`EventId::new`] in one process are strictly increasing.
/// Ids of other versions (from foreign publishers) are accepted and compare by
/// their bytes.
///
/// # Examples
///
/// ```
/// use ssehub::EventId;
///
/// let first = EventId::new();
/// let second = EventId::new();
/// assert!(first < second);
/// assert_eq!(first.to_string().parse::<EventId>().unwrap(), first);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
pub struct EventId(Uuid);

impl EventId {
    /// A new id from the clock, greater than every id this process made before.
    #[cfg(feature = "std")]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id made of this UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID of this id.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The Unix time in milliseconds this id was made at, if it is a UUIDv7.
    pub fn timestamp_millis(&self) -> Option<u64> {
        (self.0.get_version_num() == 7).then(|| {
            let b = self.0.as_bytes();
            u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
        })
    }
}

#[cfg(feature = "std")]
impl Default for EventId {
    /// Same as [`EventId::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0.hyphenated())
    }
}

impl fmt::Display for EventId {
    /// The hyphenated lowercase form, as sent in the `id:` field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for EventId {
    type Err = parse::LastEventIdError;

    /// Parses the hyphenated form, surrounding ASCII whitespace allowed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::last_event_id(s)?.ok_or(parse::LastEventIdError::empty())
    }
}

impl From<Uuid> for EventId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

/// The id of a user: each user has a private stream of events.
///
/// A `UserId` is a UUID. Applications whose users have other ids map them
/// in one documented, stable way, the same in every process:
/// - a UUID: [`from_uuid`](Self::from_uuid), or `parse` its text;
/// - an integer (a database key): [`from_u64`](Self::from_u64), the UUID
///   whose 128 bits are the number (`42` is
///   `00000000-0000-0000-0000-00000000002a`);
/// - a string (a username, an external account id):
///   [`from_name`](Self::from_name), the UUIDv5 of its UTF-8 bytes in the
///   namespace [`UserId::NAMESPACE`], which any language's UUID library
///   reproduces (Python: `uuid.uuid5(namespace, name)`).
///
/// Distinct integers give distinct users, and so do distinct strings. The
/// text form (hyphenated) is what the Redis key layouts put in key names.
///
/// # Examples
///
/// ```
/// use ssehub::UserId;
///
/// let user: UserId = "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11".parse().unwrap();
/// assert_eq!(user.to_string(), "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11");
/// assert_eq!(UserId::from_u64(42).to_string(), "00000000-0000-0000-0000-00000000002a");
/// assert_eq!(UserId::from_name("alice").to_string(), "6faf7d51-beea-586f-8a59-5dfae50b0a21");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
pub struct UserId(Uuid);

/// The constructors, `NAMESPACE`, `Debug`, `Display`, `FromStr` and `From<Uuid>` of a UUID id
/// newtype ([`UserId`], [`GroupId`](crate::GroupId)): `$noun` names what it identifies in the docs,
/// `$namespace` is its `from_name` namespace, written out in `$namespace_text`, the UUIDv5 of
/// `https://crates.io/crates/ssehub#$fragment` in the URL namespace.
macro_rules! uuid_id {
    ($name:ident, $noun:literal, $namespace:literal, $namespace_text:literal, $fragment:literal) => {
        impl $name {
            #[doc = concat!(
                "The namespace of [`from_name`](Self::from_name):\n`", $namespace_text,
                "`, itself the UUIDv5 of\n`https://crates.io/crates/ssehub#", $fragment, "` in the URL namespace."
            )]
            pub const NAMESPACE: Uuid = Uuid::from_u128($namespace);

            #[doc = concat!("The ", $noun, " with this UUID.")]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            #[doc = concat!("The ", $noun, " with this integer id: the UUID whose 128 bits are `id`.")]
            pub const fn from_u64(id: u64) -> Self {
                Self(Uuid::from_u64_pair(0, id))
            }

            #[doc = concat!(
                "The ", $noun, " with this string id: the UUIDv5 of `name` in [`",
                stringify!($name), "::NAMESPACE`]."
            )]
            pub fn from_name(name: &str) -> Self {
                Self(Uuid::new_v5(&Self::NAMESPACE, name.as_bytes()))
            }

            #[doc = concat!("The UUID of this ", $noun, ".")]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl core::str::FromStr for $name {
            type Err = crate::parse::LastEventIdError;

            /// Parses the hyphenated form, surrounding ASCII whitespace allowed.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                crate::parse::uuid(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}
pub(crate) use uuid_id;

uuid_id!(
    UserId,
    "user",
    0xff9b_6a84_bfe7_535e_bbcc_60f3_ee56_8861,
    "ff9b6a84-bfe7-535e-bbcc-60f3ee568861",
    "user"
);

/// Who an event is for: one user, everyone, or the readers of a group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
pub enum Audience {
    /// The subscriptions of this user only.
    User(UserId),
    /// Every subscription.
    Broadcast,
    /// The subscriptions that read this group (see [`Reader`](crate::Reader)).
    Group(GroupId),
}

impl Audience {
    /// Whether a subscription of `user` that reads no group receives events
    /// for this audience; [`Reader::reads`](crate::Reader::reads) answers for
    /// a subscription with groups.
    pub fn includes(&self, user: UserId) -> bool {
        match self {
            Audience::User(u) => *u == user,
            Audience::Broadcast => true,
            Audience::Group(_) => false,
        }
    }
}

/// One event: cheap to clone (one reference count), immutable once made.
///
/// `data` is JSON text (any JSON value: an object, an array, a string, a
/// number, `true`, `false` or `null`), checked once, when the event is made,
/// so every backend accepts exactly the events that can be made. It is kept as
/// text end to end: ssehub never parses it on the delivery path.
///
/// # Examples
///
/// ```
/// use ssehub::{Audience, Event, fixture::ExampleCategory};
///
/// let event = Event::new(Audience::Broadcast, "import.done", ExampleCategory::Import, r#"{"rows":3}"#)
///     .unwrap();
/// assert_eq!(event.event_type(), "import.done");
/// assert_eq!(event.data(), r#"{"rows":3}"#);
///
/// // An event type with a line break could forge fields on the wire: refused.
/// assert!(Event::new(Audience::Broadcast, "a\nb", ExampleCategory::Import, "{}").is_err());
/// // Data that is not JSON text: refused.
/// let error = Event::new(Audience::Broadcast, "note", ExampleCategory::Import, "hello").unwrap_err();
/// assert!(error.to_string().contains("not JSON"));
/// ```
pub struct Event<C> {
    inner: Arc<EventInner<C>>,
}

struct EventInner<C> {
    id: EventId,
    audience: Audience,
    event_type: Box<str>,
    category: C,
    data: Box<str>,
    occurred_at: DateTime<Utc>,
    /// Where the backend put the event in its stream, once it did.
    position: Option<Position>,
    /// The event's text/event-stream frame without its `id:` line (which is a
    /// subscription's own cursor), encoded by the first stream that
    /// sends it and shared by every other: a broadcast to 10,000 connections
    /// is encoded once, not 10,000 times. `SseStream` fills it for broadcasts
    /// only, so that retained user events do not keep a second copy.
    #[cfg(feature = "std")]
    frame: std::sync::OnceLock<bytes::Bytes>,
}

impl<C: Category> Event<C> {
    /// A new event with a fresh id, occurring now.
    ///
    /// Fails if `event_type` is not a valid event type name
    /// (see [`parse::event_type`]) or `data` is not JSON text.
    #[cfg(feature = "std")]
    pub fn new(
        audience: Audience,
        event_type: &str,
        category: C,
        data: impl Into<Box<str>>,
    ) -> Result<Self, InvalidEvent> {
        Self::from_parts(EventId::new(), audience, event_type, category, data, Utc::now())
    }

    /// An event from all its parts, as read back from a backend.
    ///
    /// Fails if `event_type` is not a valid event type name
    /// (see [`parse::event_type`]) or `data` is not JSON text.
    pub fn from_parts(
        id: EventId,
        audience: Audience,
        event_type: &str,
        category: C,
        data: impl Into<Box<str>>,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, InvalidEvent> {
        let data = data.into();
        check_json(&data)?;
        Self::from_checked_parts(id, audience, event_type, category, data, occurred_at)
    }

    /// [`from_parts`](Self::from_parts) for data already known to be JSON text
    /// (a backend's decoder that parsed it as part of an envelope): checks the
    /// event type only.
    #[cfg_attr(not(feature = "fred"), allow(dead_code))]
    pub(crate) fn from_checked_parts(
        id: EventId,
        audience: Audience,
        event_type: &str,
        category: C,
        data: Box<str>,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, InvalidEvent> {
        let event_type = parse::event_type(event_type).map_err(InvalidEvent::EventType)?;
        Ok(Self {
            inner: Arc::new(EventInner {
                id,
                audience,
                event_type: event_type.into(),
                category,
                data,
                occurred_at,
                position: None,
                #[cfg(feature = "std")]
                frame: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The event's frame without its `id:` line (`event:`, `data:` lines and
    /// the blank line): `encode`d at the first call (by the serving layer,
    /// which knows the wire format; the event only keeps it) and shared, not
    /// copied, by every later one.
    #[cfg(feature = "std")]
    pub(crate) fn cached_frame_body(&self, encode: impl FnOnce(&Self) -> bytes::Bytes) -> bytes::Bytes {
        self.inner.frame.get_or_init(|| encode(self)).clone()
    }

    /// Where the backend put the event in its stream: set on the events a
    /// backend delivers and replays, `None` on an event as made.
    ///
    /// Ignored by `==`: an event is the same event wherever it is.
    pub fn position(&self) -> Option<Position> {
        self.inner.position
    }

    /// The event at `position` in its stream, as a backend delivers it.
    ///
    /// Shares the event's parts when this is its only handle; copies them otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssehub::cursor::Position;
    /// use ssehub::{Audience, Event, fixture::ExampleCategory as C};
    ///
    /// let event = Event::new(Audience::Broadcast, "note", C::Ai, "{}").unwrap();
    /// let placed = event.clone().with_position(Position::entry(1_700_000_000_000, 1));
    /// assert_eq!(placed.position(), Some(Position::entry(1_700_000_000_000, 1)));
    /// assert_eq!(placed, event);
    /// ```
    pub fn with_position(mut self, position: Position) -> Self {
        self.place(position);
        self
    }

    /// Sets the position; copies nothing when this is the event's only handle.
    pub(crate) fn place(&mut self, position: Position) {
        Arc::make_mut(&mut self.inner).position = Some(position);
    }

    /// Makes this handle the event's only one (copying its parts if another
    /// shares them), so that [`place`](Self::place) copies nothing: what a
    /// backend does before it takes the lock it places the event under.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    pub(crate) fn make_unique(&mut self) {
        Arc::make_mut(&mut self.inner);
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.inner.id
    }

    /// Who the event is for.
    pub fn audience(&self) -> Audience {
        self.inner.audience
    }

    /// The event type name, sent as the `event:` field.
    pub fn event_type(&self) -> &str {
        &self.inner.event_type
    }

    /// The event's category.
    pub fn category(&self) -> C {
        self.inner.category
    }

    /// The payload: JSON text.
    pub fn data(&self) -> &str {
        &self.inner.data
    }

    /// When the event occurred, with microsecond precision or better.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.inner.occurred_at
    }
}

impl<C: Clone> Clone for EventInner<C> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            audience: self.audience,
            event_type: self.event_type.clone(),
            category: self.category.clone(),
            data: self.data.clone(),
            occurred_at: self.occurred_at,
            position: self.position,
            #[cfg(feature = "std")]
            frame: self.frame.clone(),
        }
    }
}

impl<C> Clone for Event<C> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<C: Category> PartialEq for Event<C> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.id == other.inner.id
                && self.inner.audience == other.inner.audience
                && self.inner.event_type == other.inner.event_type
                && self.inner.category == other.inner.category
                && self.inner.data == other.inner.data
                && self.inner.occurred_at == other.inner.occurred_at)
    }
}

impl<C: Category> Eq for Event<C> {}

impl<C: Category> fmt::Debug for Event<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.inner.id)
            .field("audience", &self.inner.audience)
            .field("event_type", &self.inner.event_type)
            .field("category", &self.inner.category)
            .field("data", &self.inner.data)
            .field("occurred_at", &self.inner.occurred_at)
            .finish()
    }
}

/// Why an event could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidEvent {
    /// The event type is not a valid event type name (see [`parse::event_type`]).
    EventType(EventTypeError),
    /// The data is not JSON text.
    DataNotJson(DataNotJson),
}

impl fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidEvent::EventType(e) => e.fmt(f),
            InvalidEvent::DataNotJson(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for InvalidEvent {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            InvalidEvent::EventType(e) => Some(e),
            InvalidEvent::DataNotJson(e) => Some(e),
        }
    }
}

/// Event data that is not JSON text, and where the JSON parser gave up on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataNotJson {
    line: usize,
    column: usize,
}

impl DataNotJson {
    /// The line (from 1) where the data stops being JSON.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column (from 1) where the data stops being JSON.
    pub fn column(&self) -> usize {
        self.column
    }
}

impl fmt::Display for DataNotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event data is not JSON text (line {}, column {})", self.line, self.column)
    }
}

impl core::error::Error for DataNotJson {}

/// Checks that `data` is one JSON value, without keeping anything it parses.
fn check_json(data: &str) -> Result<(), InvalidEvent> {
    serde_json::from_str::<serde::de::IgnoredAny>(data)
        .map(drop)
        .map_err(|e| InvalidEvent::DataNotJson(DataNotJson { line: e.line(), column: e.column() }))
}

#[cfg(feature = "serde")]
mod serde_support;
