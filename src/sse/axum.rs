//! The `axum` feature: `SseRequest` as an extractor, and `SseStream` and `Error` as responses.

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use futures_core::Stream;
use http::request::Parts;

use super::{SseRequest, SseStream};
use crate::{Category, Error, Event};

/// Reads `?categories=` and `Last-Event-ID` before the handler runs; a bad
/// value answers `400 Bad Request` with its message, and the handler does not run.
impl<C: Category, S: Send + Sync> FromRequestParts<S> for SseRequest<C> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts.uri.query(), &parts.headers)
            .map_err(|error| error.into_response().into_response())
    }
}

/// `200`, the SSE headers, and the stream as the body.
impl<C, S> IntoResponse for SseStream<S>
where
    C: Category,
    S: Stream<Item = Result<Event<C>, Error>> + Send + Unpin + 'static,
{
    fn into_response(self) -> Response {
        super::response(axum_core::body::Body::new(self)).into_response()
    }
}

/// A stream that could not start: [`status_of`](super::status_of) the error,
/// its message, and `Retry-After` on a 429 ([`error_response`](super::error_response)).
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        super::error_response(&self).into_response()
    }
}
