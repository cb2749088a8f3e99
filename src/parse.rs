//! Allocation-free parsers for client input: `?categories=` values, Last-Event-ID (a cursor or an event id), event type names.
//!
//! Every parser does work bounded by its caps whatever the input, never
//! allocates, and never panics; each has a fuzz target in `fuzz/`.

use core::fmt;
use core::marker::PhantomData;

use uuid::Uuid;

use crate::cursor::{Cursor, CursorError, LastEventId};
use crate::{Category, CategorySet, EventId};

/// The most bytes all `?categories=` values may hold together (one more per value counted as separator).
pub const MAX_CATEGORIES_BYTES: usize = 1024;

/// The most non-empty category names a filter may list.
pub const MAX_CATEGORIES_ITEMS: usize = 64;

/// The longest event type name, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;

/// The longest Last-Event-ID value read, surrounding whitespace included:
/// the longest cursor ([`MAX_CURSOR_BYTES`](crate::cursor::MAX_CURSOR_BYTES),
/// room for 64 groups), since every frame's `id:` comes back as one.
pub const MAX_LAST_EVENT_ID_BYTES: usize = crate::cursor::MAX_CURSOR_BYTES;

/// How much of an unknown category name an error keeps for its message.
const KEPT_NAME_BYTES: usize = 64;

/// Parses the values of a `?categories=` query parameter into a filter.
///
/// Takes every value of the parameter (it may be repeated); each value is a
/// comma-separated list. Items are trimmed of ASCII whitespace; empty items
/// are ignored; no items at all means every category.
///
/// # Errors
///
/// An unknown name (the error names it and lists the valid ones), more than
/// [`MAX_CATEGORIES_BYTES`] bytes or more than [`MAX_CATEGORIES_ITEMS`] names.
///
/// # Examples
///
/// ```
/// use ssehub::{parse, CategorySet, fixture::ExampleCategory as C};
///
/// // ?categories=ai,provider&categories=security
/// let set: CategorySet<C> = parse::categories(["ai, provider", "security"]).unwrap();
/// assert_eq!(set, CategorySet::only(C::Ai).with(C::Provider).with(C::Security));
///
/// // no value, or only empty ones: no filter
/// assert!(parse::categories::<C>([""]).unwrap().is_all());
///
/// let err = parse::categories::<C>(["ai,foo"]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid category 'foo'; valid categories: data_sync, provider, ai, import, portfolio, security"
/// );
/// ```
pub fn categories<'a, C: Category>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<CategorySet<C>, CategoryError<C>> {
    let mut bits = 0u64;
    let mut bytes = 0usize;
    let mut items = 0usize;
    for value in values {
        bytes = bytes.saturating_add(value.len()).saturating_add(1);
        if bytes > MAX_CATEGORIES_BYTES + 1 {
            return Err(CategoryError::new(CategoryErrorKind::TooLong));
        }
        for item in value.split(',') {
            let name = item.trim_ascii();
            if name.is_empty() {
                continue;
            }
            items += 1;
            if items > MAX_CATEGORIES_ITEMS {
                return Err(CategoryError::new(CategoryErrorKind::TooMany));
            }
            match C::from_name(name) {
                Some(category) => bits |= 1u64 << (category.index() & 63),
                None => return Err(CategoryError::unknown(name)),
            }
        }
    }
    Ok(CategorySet::from_bits(bits).unwrap_or_else(CategorySet::all))
}

/// Parses a Last-Event-ID, from the header or a query parameter.
///
/// Surrounding ASCII whitespace is trimmed; an empty value means no id
/// (`Ok(None)`). Otherwise the value must be a hyphenated UUID.
///
/// # Examples
///
/// ```
/// use ssehub::parse;
///
/// let id = parse::last_event_id(" 01936f3c-7d5e-7a10-8b2c-3d4e5f607182 ").unwrap();
/// assert_eq!(id.unwrap().to_string(), "01936f3c-7d5e-7a10-8b2c-3d4e5f607182");
/// assert_eq!(parse::last_event_id("").unwrap(), None);
/// assert!(parse::last_event_id("42").is_err());
/// ```
pub fn last_event_id(value: &str) -> Result<Option<EventId>, LastEventIdError> {
    if value.len() > MAX_LAST_EVENT_ID_BYTES {
        return Err(LastEventIdError { kind: LastEventIdErrorKind::TooLong });
    }
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    uuid(value).map(|uuid| Some(EventId::from_uuid(uuid)))
}

/// Parses a `Last-Event-ID` value as a client sends it back: a [`Cursor`]
/// (what every frame's `id:` holds), or a plain event UUID (clients from
/// before cursors, and other publishers' clients).
///
/// Surrounding ASCII whitespace is trimmed; a blank value is `Ok(None)`. A
/// value holding `~` is read as a cursor, anything else as a UUID.
///
/// # Errors
///
/// A malformed cursor (the error names what is wrong), a value that is
/// neither a cursor nor a UUID, or one longer than [`MAX_LAST_EVENT_ID_BYTES`].
///
/// # Examples
///
/// ```
/// use ssehub::{parse, LastEventId};
///
/// let old = parse::resume_point("01936f3c-7d5e-7a10-8b2c-3d4e5f607182").unwrap().unwrap();
/// assert!(matches!(old, LastEventId::Event(_)));
/// let cursor = parse::resume_point("01936f3c-7d5e-7a10-8b2c-3d4e5f607182~1~9b1f02c4~ulx3k2p9s~b1.2").unwrap().unwrap();
/// assert!(matches!(cursor, LastEventId::Cursor(_)));
/// let error = parse::resume_point("01936f3c-7d5e-7a10-8b2c-3d4e5f607182~1~9b1f02c4~q1").unwrap_err();
/// assert_eq!(error.to_string(), "invalid cursor: unknown stream kind");
/// assert_eq!(parse::resume_point(" ").unwrap(), None);
/// ```
pub fn resume_point(value: &str) -> Result<Option<LastEventId>, LastEventIdError> {
    if value.len() > MAX_LAST_EVENT_ID_BYTES {
        return Err(LastEventIdError { kind: LastEventIdErrorKind::TooLong });
    }
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    if value.contains('~') {
        return Cursor::parse(value)
            .map(|cursor| Some(LastEventId::Cursor(cursor)))
            .map_err(|error| LastEventIdError { kind: LastEventIdErrorKind::Cursor(error) });
    }
    uuid(value).map(|uuid| Some(LastEventId::Event(EventId::from_uuid(uuid))))
}

/// Parses a hyphenated UUID, surrounding ASCII whitespace allowed.
pub(crate) fn uuid(value: &str) -> Result<Uuid, LastEventIdError> {
    let value = value.trim_ascii();
    if value.len() != 36 {
        return Err(LastEventIdError { kind: LastEventIdErrorKind::NotUuid });
    }
    Uuid::try_parse(value).map_err(|_| LastEventIdError { kind: LastEventIdErrorKind::NotUuid })
}

/// Checks an event type name: 1 to [`MAX_EVENT_TYPE_BYTES`] bytes, no CR, LF or NUL.
///
/// Event types go on the wire as the `event:` field, where a line break would
/// end the field and let the rest forge another.
///
/// # Examples
///
/// ```
/// use ssehub::parse;
///
/// assert_eq!(parse::event_type("portfolio.updated"), Ok("portfolio.updated"));
/// assert!(parse::event_type("").is_err());
/// assert!(parse::event_type("x\r\ndata: forged").is_err());
/// ```
pub fn event_type(name: &str) -> Result<&str, EventTypeError> {
    if name.is_empty() {
        return Err(EventTypeError { kind: EventTypeErrorKind::Empty });
    }
    if name.len() > MAX_EVENT_TYPE_BYTES {
        return Err(EventTypeError { kind: EventTypeErrorKind::TooLong });
    }
    if name.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Err(EventTypeError { kind: EventTypeErrorKind::ForbiddenCharacter });
    }
    Ok(name)
}

/// What is wrong with a `?categories=` value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CategoryErrorKind {
    /// A name that is no category.
    Unknown,
    /// More than [`MAX_CATEGORIES_BYTES`] bytes.
    TooLong,
    /// More than [`MAX_CATEGORIES_ITEMS`] names.
    TooMany,
}

/// A `?categories=` value that could not be parsed. Its message is fit for a 400 response.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CategoryError<C> {
    kind: CategoryErrorKind,
    name: [u8; KEPT_NAME_BYTES],
    name_len: u8,
    name_truncated: bool,
    _category: PhantomData<fn() -> C>,
}

impl<C: Category> CategoryError<C> {
    fn new(kind: CategoryErrorKind) -> Self {
        Self { kind, name: [0; KEPT_NAME_BYTES], name_len: 0, name_truncated: false, _category: PhantomData }
    }

    fn unknown(name: &str) -> Self {
        let mut end = name.len().min(KEPT_NAME_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut error = Self::new(CategoryErrorKind::Unknown);
        error.name[..end].copy_from_slice(&name.as_bytes()[..end]);
        error.name_len = end as u8;
        error.name_truncated = end < name.len();
        error
    }

    /// What is wrong.
    pub fn kind(&self) -> CategoryErrorKind {
        self.kind
    }

    /// The unknown name (its first 64 bytes), for [`CategoryErrorKind::Unknown`].
    pub fn unknown_name(&self) -> Option<&str> {
        (self.kind == CategoryErrorKind::Unknown)
            .then(|| core::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or(""))
    }
}

impl<C: Category> fmt::Display for CategoryError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CategoryErrorKind::Unknown => {
                f.write_str("invalid category '")?;
                for c in self.unknown_name().unwrap_or("").chars() {
                    if c.is_control() || c == '\'' || c == '\\' {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        f.write_fmt(format_args!("{c}"))?;
                    }
                }
                if self.name_truncated {
                    f.write_str("...")?;
                }
                f.write_str("'")?;
            }
            CategoryErrorKind::TooLong => {
                write!(f, "categories value too long (at most {MAX_CATEGORIES_BYTES} bytes)")?
            }
            CategoryErrorKind::TooMany => {
                write!(f, "too many categories listed (at most {MAX_CATEGORIES_ITEMS})")?
            }
        }
        f.write_str("; valid categories: ")?;
        for (i, category) in C::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(category.name())?;
        }
        Ok(())
    }
}

impl<C: Category> fmt::Debug for CategoryError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CategoryError").field("kind", &self.kind).field("name", &self.unknown_name()).finish()
    }
}

impl<C: Category> core::error::Error for CategoryError<C> {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LastEventIdErrorKind {
    NotUuid,
    TooLong,
    Empty,
    Cursor(CursorError),
}

/// A Last-Event-ID (or user id) that is not a hyphenated UUID.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LastEventIdError {
    kind: LastEventIdErrorKind,
}

impl LastEventIdError {
    pub(crate) const fn empty() -> Self {
        Self { kind: LastEventIdErrorKind::Empty }
    }

    /// What is wrong with the cursor, when the value was one.
    pub fn cursor_error(&self) -> Option<CursorError> {
        match self.kind {
            LastEventIdErrorKind::Cursor(error) => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for LastEventIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let LastEventIdErrorKind::Cursor(error) = self.kind {
            return fmt::Display::fmt(&error, f);
        }
        f.write_str(match self.kind {
            LastEventIdErrorKind::Cursor(_) => "",
            LastEventIdErrorKind::NotUuid => {
                "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182"
            }
            LastEventIdErrorKind::TooLong => "invalid event id: too long",
            LastEventIdErrorKind::Empty => "invalid event id: empty",
        })
    }
}

impl core::error::Error for LastEventIdError {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EventTypeErrorKind {
    Empty,
    TooLong,
    ForbiddenCharacter,
}

/// An event type name that cannot go on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventTypeError {
    kind: EventTypeErrorKind,
}

impl fmt::Display for EventTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventTypeErrorKind::Empty => f.write_str("invalid event type: empty"),
            EventTypeErrorKind::TooLong => {
                write!(f, "invalid event type: longer than {MAX_EVENT_TYPE_BYTES} bytes")
            }
            EventTypeErrorKind::ForbiddenCharacter => {
                f.write_str("invalid event type: contains CR, LF or NUL")
            }
        }
    }
}

impl core::error::Error for EventTypeError {}
