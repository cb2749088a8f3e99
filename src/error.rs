//! The error type of subscriptions, replays and publishes.

use alloc::boxed::Box;
use core::fmt;

use crate::EventId;
use crate::cursor::{CursorError, StreamKind};

/// A backend's own error, carried by [`Error::Backend`].
pub type BoxError = Box<dyn core::error::Error + Send + Sync + 'static>;

/// What went wrong in a subscription, a replay or a publish.
///
/// In a subscription stream, [`Lagged`](Error::Lagged) is the last item: the
/// stream ends after it. [`Gap`](Error::Gap) is not: events may have been lost
/// at that point, and live events follow.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The subscriber fell behind and its queue filled up; its stream ends.
    ///
    /// `last_delivered` is the id of the last event the subscriber received
    /// (`None` if none): reconnecting with it as Last-Event-ID replays the rest.
    Lagged {
        /// The last event the subscriber received before this error.
        last_delivered: Option<EventId>,
    },
    /// Events may have been lost here and cannot be recovered (history
    /// trimmed, retention off, or the backend lost its data). The stream goes on.
    Gap {
        /// The last event the subscriber received before the gap.
        last_delivered: Option<EventId>,
        /// The stream that may have lost events, where the backend knows which.
        stream: Option<StreamKind>,
    },
    /// The hub was shut down.
    Closed,
    /// The cursor a client resumed with cannot be used: made for another
    /// user, say. Nothing was subscribed; answer it as a bad request.
    InvalidCursor(CursorError),
    /// Too many subscriptions are open: `scope` says whose cap was reached.
    /// Nothing was subscribed; answer it as `429 Too Many Requests` (with
    /// `Retry-After`). A dropped or ended subscription frees its place at once.
    TooManySubscriptions {
        /// The cap that was reached.
        scope: LimitScope,
        /// Its value.
        limit: usize,
    },
    /// The user was disconnected ([`disconnect`](crate::EventSource::disconnect)):
    /// the stream ends. Its reconnection meets the application's
    /// authentication again, which decides whether it may go on.
    Revoked,
    /// The credential a stream was to run under has already expired: refused
    /// before the stream starts; answer it as `401 Unauthorized`.
    Expired,
    /// The backend failed; the source is its own error.
    Backend(BoxError),
}

/// Whose cap on open subscriptions [`Error::TooManySubscriptions`] reports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum LimitScope {
    /// The subscriptions one user has open on this hub (this process).
    User,
    /// The subscriptions open on this hub (this process), all users together.
    Process,
}

impl fmt::Display for LimitScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitScope::User => "per-user",
            LimitScope::Process => "per-process",
        })
    }
}

impl Error {
    /// A backend failure wrapping the backend's own error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Error::Backend(error.into())
    }

    /// Whether this is [`Error::Lagged`].
    pub fn is_lagged(&self) -> bool {
        matches!(self, Error::Lagged { .. })
    }

    /// Whether this is [`Error::Gap`].
    pub fn is_gap(&self) -> bool {
        matches!(self, Error::Gap { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lagged { last_delivered: Some(id) } => {
                write!(f, "subscriber lagged behind; last event delivered: {id}")
            }
            Error::Lagged { last_delivered: None } => {
                f.write_str("subscriber lagged behind before any event was delivered")
            }
            Error::Gap { last_delivered, stream } => {
                f.write_str("events")?;
                if let Some(stream) = stream {
                    write!(f, " of the {stream} stream")?;
                }
                if let Some(id) = last_delivered {
                    write!(f, " after {id}")?;
                }
                f.write_str(" may have been lost and cannot be recovered")
            }
            Error::InvalidCursor(error) => write!(f, "{error}"),
            Error::Closed => f.write_str("the hub was shut down"),
            Error::TooManySubscriptions { scope, limit } => {
                write!(f, "too many open subscriptions: the {scope} cap of {limit} is reached")
            }
            Error::Revoked => f.write_str("the user was disconnected"),
            Error::Expired => f.write_str("the credential has expired"),
            Error::Backend(e) => write!(f, "backend error: {e}"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Backend(e) => Some(&**e),
            _ => None,
        }
    }
}
