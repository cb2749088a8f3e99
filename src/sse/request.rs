//! The request side of an SSE endpoint: the client's `Last-Event-ID` and `?categories=`, with errors fit for a 400.

use std::borrow::Cow;

use crate::cursor::LastEventId;
use crate::parse::{self, CategoryError, LastEventIdError};
use crate::{Category, CategorySet};

/// The request header a reconnecting `EventSource` sends its last received id in (lowercase).
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";

/// The query parameter read by [`last_event_id`] when there is no header.
///
/// `EventSource` cannot set headers on its first request; a page that kept the
/// last id (say, across a reload) passes it as `?lastEventId=`.
pub const LAST_EVENT_ID_PARAM: &str = "lastEventId";

/// The query parameter read by [`categories`].
pub const CATEGORIES_PARAM: &str = "categories";

/// Reads the client's last event id: the `Last-Event-ID` header, else the `lastEventId` query parameter.
///
/// `header` is the raw header value, if the request has one; `query` is the
/// raw query string (without `?`), if any. A header with a non-blank value
/// wins over the query parameter; a blank one counts as absent. Values are
/// parsed by [`parse::resume_point`]: a cursor, or a plain event id. No id
/// anywhere is `Ok(None)`.
///
/// # Errors
///
/// The chosen value is neither a valid cursor nor a hyphenated UUID (or is
/// too long); the message is fit for a 400 response.
///
/// # Examples
///
/// ```
/// use ssehub::sse;
///
/// let header = b"01936f3c-7d5e-7a10-8b2c-3d4e5f607182";
/// let from_query = "user=u1&lastEventId=01936f3c-0000-7000-8000-000000000000";
///
/// let id = sse::last_event_id(Some(header), Some(from_query)).unwrap().unwrap();
/// assert_eq!(id.to_string(), "01936f3c-7d5e-7a10-8b2c-3d4e5f607182"); // the header wins
///
/// let id = sse::last_event_id(None, Some(from_query)).unwrap().unwrap();
/// assert_eq!(id.to_string(), "01936f3c-0000-7000-8000-000000000000");
///
/// assert_eq!(sse::last_event_id(None, None).unwrap(), None);
/// assert!(sse::last_event_id(Some(b"42"), None).is_err());
/// ```
pub fn last_event_id(
    header: Option<&[u8]>,
    query: Option<&str>,
) -> Result<Option<LastEventId>, LastEventIdError> {
    if let Some(header) = header.filter(|h| !h.trim_ascii().is_empty()) {
        // Non-UTF-8 bytes become U+FFFD, which no cursor or UUID contains: the parser rejects them.
        return parse::resume_point(&String::from_utf8_lossy(header));
    }
    match query_values(query, LAST_EVENT_ID_PARAM).next() {
        Some(value) => parse::resume_point(&value),
        None => Ok(None),
    }
}

/// Reads the category filter from every `categories` parameter of a query string.
///
/// `query` is the raw query string (without `?`), if any. Values are
/// percent-decoded, then parsed by [`parse::categories`]: comma-separated
/// and repeated forms both work (`categories=ai,import` or
/// `categories=ai&categories=import`); no value means every category.
///
/// # Errors
///
/// An unknown category name, or too long a list; the message names the bad
/// name and lists the valid ones, fit for a 400 response.
///
/// # Examples
///
/// ```
/// use ssehub::{sse, CategorySet, fixture::ExampleCategory as C};
///
/// let filter: CategorySet<C> = sse::categories(Some("categories=ai%2Cimport&categories=security")).unwrap();
/// assert_eq!(filter, CategorySet::only(C::Ai).with(C::Import).with(C::Security));
/// assert!(sse::categories::<C>(None).unwrap().is_all());
///
/// let error = sse::categories::<C>(Some("categories=ai,crypto")).unwrap_err();
/// assert!(error.to_string().starts_with("invalid category 'crypto'"));
/// ```
pub fn categories<C: Category>(query: Option<&str>) -> Result<CategorySet<C>, CategoryError<C>> {
    let values: Vec<Cow<'_, str>> = query_values(query, CATEGORIES_PARAM).collect();
    parse::categories(values.iter().map(|v| v.as_ref()))
}

/// The decoded values of every `name` parameter in a raw query string.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = Cow<'q, str>> + 'q {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).filter(move |(key, _)| key == name).map(|(_, v)| v)
}
