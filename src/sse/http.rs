//! The `http` feature: `SseStream` (and `GzipStream`) as an `http_body::Body`, the request read from `http` parts, and ready responses.
//!
//! Framework-neutral: hyper, axum, actix-web's `http` 1 bridge or any server
//! that takes an `http::Response<B: http_body::Body>` serves a stream in a few
//! lines, and a request that cannot start one gets its answer already made.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::{RESPONSE_HEADERS, SseStream};
use crate::cursor::LastEventId;
use crate::parse::{CategoryError, LastEventIdError};
use crate::{Category, CategorySet, Error, Event};

/// The `Retry-After` a refused subscribe answers with (seconds): when a cap was reached.
pub const RETRY_AFTER_SECS: u32 = 5;

impl<C, S> Body for SseStream<S>
where
    C: Category,
    S: Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.poll_next(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(feature = "gzip")]
impl<S> Body for crate::gzip::GzipStream<S>
where
    S: Stream<Item = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.poll_next(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// What an SSE request asks for: its category filter and where to resume.
///
/// # Examples
///
/// ```
/// use ssehub::fixture::ExampleCategory as C;
/// use ssehub::sse::SseRequest;
///
/// let request = http::Request::get("/events?categories=ai,security")
///     .header("last-event-id", "01936f3c-7d5e-7a10-8b2c-3d4e5f607182")
///     .body(())
///     .unwrap();
/// let asked = SseRequest::<C>::from_request(&request).unwrap();
/// assert!(asked.filter.contains(C::Ai) && !asked.filter.contains(C::Import));
/// assert!(asked.last_event_id.is_some());
///
/// let bad = http::Request::get("/events?categories=nope").body(()).unwrap();
/// let refusal = SseRequest::<C>::from_request(&bad).unwrap_err().into_response();
/// assert_eq!(refusal.status(), http::StatusCode::BAD_REQUEST);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseRequest<C: Category> {
    /// The categories asked for (`?categories=`; all without it).
    pub filter: CategorySet<C>,
    /// The `Last-Event-ID` header, else `?lastEventId=`: a cursor, or a plain event id.
    pub last_event_id: Option<LastEventId>,
}

impl<C: Category> SseRequest<C> {
    /// Reads a request's query string and headers.
    ///
    /// # Errors
    ///
    /// A [`RequestError`] naming the bad category or id: answer it with
    /// [`RequestError::into_response`] (400).
    pub fn from_parts(query: Option<&str>, headers: &HeaderMap) -> Result<Self, RequestError<C>> {
        let filter = super::categories::<C>(query).map_err(RequestError::Categories)?;
        let header = headers.get(super::LAST_EVENT_ID_HEADER).map(HeaderValue::as_bytes);
        let last_event_id = super::last_event_id(header, query).map_err(RequestError::LastEventId)?;
        Ok(Self { filter, last_event_id })
    }

    /// [`from_parts`](Self::from_parts) of a whole request (any body).
    ///
    /// # Errors
    ///
    /// As for [`from_parts`](Self::from_parts).
    pub fn from_request<B>(request: &http::Request<B>) -> Result<Self, RequestError<C>> {
        Self::from_parts(request.uri().query(), request.headers())
    }
}

/// Why an SSE request cannot start a stream: a bad `?categories=` or a bad `Last-Event-ID`.
#[derive(Debug)]
pub enum RequestError<C: Category> {
    /// An unknown category, or too long a list.
    Categories(CategoryError<C>),
    /// Neither a cursor nor an event id.
    LastEventId(LastEventIdError),
}

impl<C: Category> fmt::Display for RequestError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Categories(error) => fmt::Display::fmt(error, f),
            RequestError::LastEventId(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl<C: Category> std::error::Error for RequestError<C> {}

impl<C: Category> RequestError<C> {
    /// `400 Bad Request` with the message as a plain-text body.
    pub fn into_response(self) -> Response<String> {
        plain(StatusCode::BAD_REQUEST, self.to_string())
    }
}

/// The status a failed `resume` or `subscribe` answers a request with.
///
/// [`Error::InvalidCursor`] is 400; [`Error::TooManySubscriptions`] 429;
/// [`Error::Expired`] and [`Error::Revoked`] 401; the rest (a closed hub, a
/// backend error) 503.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidCursor(_) => StatusCode::BAD_REQUEST,
        Error::TooManySubscriptions { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Expired | Error::Revoked => StatusCode::UNAUTHORIZED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The answer to a request whose stream could not start: [`status_of`] the
/// error, its message as a plain-text body, and `Retry-After` on a 429.
///
/// # Examples
///
/// ```
/// use ssehub::{Error, LimitScope};
///
/// let refused = ssehub::sse::error_response(&Error::TooManySubscriptions { scope: LimitScope::User, limit: 64 });
/// assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(refused.headers()["retry-after"], "5");
/// ```
pub fn error_response(error: &Error) -> Response<String> {
    let status = status_of(error);
    let mut response = plain(status, error.to_string());
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

/// The response carrying an SSE `body` (an [`SseStream`], or a
/// [`GzipStream`](crate::gzip::GzipStream) of one with its own headers added):
/// `200` and the [`RESPONSE_HEADERS`].
pub fn response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    for (name, value) in RESPONSE_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}

fn plain(status: StatusCode, message: String) -> Response<String> {
    let mut response = Response::new(message);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
