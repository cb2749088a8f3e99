//! The text/event-stream response: event stream to bytes (retry, heartbeats, gap events), headers, query helpers.
//!
//! [`SseStream`] turns a stream of events — typically what
//! [`resume()`](crate::resume()) returns — into the bytes of a
//! `text/event-stream` response body, ready for hyper, axum or any framework
//! that takes a stream of [`Bytes`]:
//!
//! 1. a `retry:` frame first, telling the browser how long to wait before it
//!    reconnects;
//! 2. each event as an `id:` / `event:` / `data:` frame, written by
//!    [`wire`];
//! 3. a heartbeat comment (`: heartbeat`) after each stretch of
//!    [`heartbeat`](SseOptions::heartbeat) without output, so proxies and
//!    load balancers keep an idle connection open and a dead client is noticed
//!    at the next write;
//! 4. [`Error::Gap`] as a [`GAP_EVENT`] event (see there for its data);
//! 5. after [`Error::Lagged`], [`Error::Closed`] or [`Error::Backend`], a
//!    comment saying why, then the end of the body. The browser's
//!    `EventSource` reconnects by itself and sends the last `id:` it received
//!    as `Last-Event-ID`; replay covers the rest.
//!
//! The heartbeat timer is [`async_io::Timer`], which runs on any executor.
//!
//! Bound to a [`Shutdown`] with [`SseStream::with_shutdown`], the stream ends
//! when the server stops, after a `retry:` field asking the client to
//! reconnect soon (see [`shutdown`](crate::shutdown)).
//!
//! The request side has [`last_event_id`] and [`categories`], which read the
//! two inputs of an SSE endpoint from the request's header and query string
//! and give errors whose message is fit for a 400 response; answer with a 400
//! before any stream starts. Send [`RESPONSE_HEADERS`] with the body.
//!
//! # Examples
//!
//! An endpoint, without the web framework:
//!
//! ```
//! use futures::StreamExt;
//! use ssehub::fixture::ExampleCategory as C;
//! use ssehub::{resume, sse, Audience, Event, Publisher, UserId};
//!
//! # #[cfg(feature = "memory")]
//! # fn main() {
//! use ssehub::memory::MemoryHub;
//!
//! futures::executor::block_on(async {
//!     let hub = MemoryHub::<C>::new();
//!     let user = UserId::from_uuid(uuid::Uuid::from_u128(7)); // from the session
//!
//!     // GET /events?categories=ai,security
//!     let (header, query) = (None, Some("categories=ai,security"));
//!     let filter = sse::categories::<C>(query).expect("else: 400 with the error's message");
//!     let last_event_id = sse::last_event_id(header, query).expect("else: 400 with the error's message");
//!
//!     let events = resume(&hub, user, last_event_id, filter).await?;
//!     let mut body = sse::SseStream::new(events); // the body; with sse::RESPONSE_HEADERS
//!     assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
//!
//!     let event = Event::new(Audience::User(user), "ai.done", C::Ai, r#"{"score":0.9}"#).unwrap();
//!     hub.publish(event.clone()).await?;
//!     let frame = format!("id: {}\nevent: ai.done\ndata: {{\"score\":0.9}}\n\n", event.id());
//!     assert_eq!(body.next().await.unwrap(), frame);
//!     Ok::<(), ssehub::Error>(())
//! })
//! .unwrap();
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Timer;
use bytes::Bytes;
use futures_core::Stream;

use crate::cursor::{Cursor, LastEventId, Positions, StreamKind};

/// The longest cursor without group positions: the event id, version and
/// owner, two streams and the horizon.
const FIXED_CURSOR_TEXT: usize = 36 + 11 + 3 * 35;
use crate::resume::Resumed;
use crate::shutdown::{Shutdown, Triggered};
use crate::{Audience, Category, Error, Event, EventId, UserId, wire};

#[cfg(feature = "axum")]
mod axum;
mod chunk;
#[cfg(feature = "http")]
mod http;
mod options;
mod request;

use chunk::{Chunk, closing_reason, write_gap};
#[cfg(feature = "http")]
pub use http::{RETRY_AFTER_SECS, RequestError, SseRequest, error_response, response, status_of};
pub use options::SseOptions;
pub use request::{CATEGORIES_PARAM, LAST_EVENT_ID_HEADER, LAST_EVENT_ID_PARAM, categories, last_event_id};

/// The `Content-Type` of an SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// The `Cache-Control` of an SSE response: caches must not store or merge the stream.
pub const CACHE_CONTROL: &str = "no-cache";

/// The `X-Accel-Buffering` of an SSE response: nginx must pass each frame on at once.
pub const X_ACCEL_BUFFERING: &str = "no";

/// Every header an SSE response needs, as lowercase `(name, value)` pairs.
///
/// # Examples
///
/// ```
/// let headers: Vec<String> = ssehub::sse::RESPONSE_HEADERS.iter().map(|(n, v)| format!("{n}: {v}")).collect();
/// assert_eq!(headers, ["content-type: text/event-stream", "cache-control: no-cache", "x-accel-buffering: no"]);
/// ```
pub const RESPONSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", CONTENT_TYPE),
    ("cache-control", CACHE_CONTROL),
    ("x-accel-buffering", X_ACCEL_BUFFERING),
];

/// The event type of the gap signal.
///
/// Sent in place of [`Error::Gap`]: events after the last one delivered may
/// have been lost and cannot be replayed, so a client should reload whatever
/// state it builds from events. Its data is a JSON object whose
/// `last_event_id` is the `id:` of the last event delivered before the gap
/// (a string: a cursor, or an event id), or `null` when none was, and whose
/// `stream` names the stream that may have lost events (`"own"` or
/// `"broadcast"`), where it is known; the other streams lost nothing:
///
/// ```text
/// event: gap
/// data: {"last_event_id":"01936f3c-7d5e-7a10-8b2c-3d4e5f607182~1~9b1f02c4~ulx3k2p9s~blx3k2p1a","stream":"broadcast"}
/// ```
///
/// It carries no `id:` field, so the client's last event id stays that of the
/// last real event. In a browser: `source.addEventListener("gap", e => ...)`.
pub const GAP_EVENT: &str = "gap";

/// The comment text of a heartbeat frame (`: heartbeat`).
pub const HEARTBEAT_COMMENT: &str = "heartbeat";

/// The closing comment of a stream whose credential expired ([`SseStream::with_deadline`]).
pub const EXPIRED_COMMENT: &str = "closing: credential expired; reconnect with a fresh one";

/// The closing comment of a stream whose user was disconnected ([`Error::Revoked`]).
pub const REVOKED_COMMENT: &str = "closing: access revoked";

/// The `retry:` delay sent when a stream ends at its deadline: the browser
/// reconnects at once, with the credential the page refreshed meanwhile.
pub const EXPIRED_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// How much output [`SseStream`] gathers into one chunk when many events are ready at once.
const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// The body of an SSE response: a stream of text/event-stream chunks made from a stream of events.
///
/// See the [module docs](self) for what it sends. Each item is one or more
/// whole frames (events ready at the same time are sent in one chunk), so a
/// client never sees half an event at a chunk boundary. A broadcast's frame
/// is encoded once and shared: sent to 10,000 streams, it is encoded once, and
/// a chunk of that one event is the shared [`Bytes`], not a copy. (The event
/// keeps its frame while it lives, in the memory hub's retained broadcasts
/// too; a user's event is encoded for each of its few streams instead.) It never fails: a
/// failure of the event stream ends the body, which is how an SSE client
/// learns to reconnect.
///
/// To log why a stream ended, inspect the events before they go in, e.g.
/// with `futures::StreamExt::inspect`.
///
/// `SseStream` is `Unpin`; the event stream must be too (box it otherwise).
///
/// # Examples
///
/// A lagging subscriber's stream ends after the events it did get:
///
/// ```
/// use std::time::{Duration, Instant};
/// use futures::{StreamExt, executor::block_on, stream};
/// use ssehub::{sse, Audience, Error, Event, fixture::ExampleCategory as C};
///
/// let event = Event::new(Audience::Broadcast, "ai.done", C::Ai, "{}").unwrap();
/// let events = stream::iter([Ok(event.clone()), Err(Error::Lagged { last_delivered: Some(event.id()) })]);
/// let options = sse::SseOptions::new().retry(Duration::from_secs(2));
/// let body = sse::SseStream::with_options(events, options);
///
/// let chunks: Vec<_> = block_on(body.collect());
/// assert_eq!(chunks[0], "retry: 2000\n\n");
/// assert_eq!(
///     chunks[1],
///     format!(
///         "id: {}\nevent: ai.done\ndata: {{}}\n\n: closing: subscriber lagged behind; reconnect to resume\n\n",
///         event.id()
///     ),
/// );
/// assert_eq!(chunks.len(), 2);
/// ```
pub struct SseStream<S> {
    events: S,
    options: SseOptions,
    /// Fires at the earliest instant a heartbeat may be due; moved only when it fires.
    heartbeat: Timer,
    /// When the last chunk went out: a heartbeat is due `heartbeat` after it.
    last_output: Instant,
    state: State,
    last_sent: Option<EventId>,
    /// Set by [`SseStream::with_cursor`]: each frame's `id:` is a cursor of
    /// this user's streams, advanced by the event it carries.
    cursor: Option<(UserId, Positions)>,
    /// Where a cursor with group positions is written, kept from frame to frame.
    cursor_buf: Vec<u8>,
    /// Set by [`SseStream::with_shutdown`]: ends the stream when the server stops.
    shutdown: Option<Triggered>,
    /// Set by [`SseStream::with_deadline`]: ends the stream when its credential expires.
    deadline: Option<Timer>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// The `retry:` frame is still to be sent.
    Starting,
    /// Passing events on.
    Streaming,
    /// The last chunk is out; the body ends.
    Finished,
}

impl<S> SseStream<S> {
    /// The body of `events` with the default [`SseOptions`].
    pub fn new(events: S) -> Self {
        Self::with_options(events, SseOptions::new())
    }

    /// The body of `events`, paced by `options`.
    pub fn with_options(events: S, options: SseOptions) -> Self {
        Self {
            events,
            heartbeat: Timer::after(options.heartbeat),
            last_output: Instant::now(),
            options,
            state: State::Starting,
            last_sent: None,
            cursor: None,
            cursor_buf: Vec::new(),
            shutdown: None,
            deadline: None,
        }
    }

    /// Writes each frame's `id:` as a [`Cursor`] of `user`'s streams, starting
    /// at `start` and advanced by each event's [`position`](Event::position),
    /// instead of the event's own id.
    ///
    /// [`Resumed::into_sse`] sets it from where [`resume`](crate::resume())
    /// started; that is the way to build the body of a resumed stream.
    #[must_use]
    pub fn with_cursor(mut self, user: UserId, start: Positions) -> Self {
        self.cursor = Some((user, start));
        self
    }

    /// Binds the stream to `shutdown`: once it is triggered, the stream's next
    /// chunk is a short `retry:` field and a closing comment, and the body ends.
    ///
    /// Events the event stream holds that were not written yet are not
    /// written; the client's `Last-Event-ID` is the last event that was, so
    /// replay on its reconnection delivers them. See [`crate::shutdown`].
    #[must_use]
    pub fn with_shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.triggered());
        self
    }

    /// Ends the stream at `deadline`, the expiry of the credential it was
    /// opened with (a token's `exp`), the way a shutdown does: a short
    /// `retry:` field ([`EXPIRED_RETRY`]), the closing comment
    /// [`EXPIRED_COMMENT`], the end of the body. The browser reconnects with
    /// its last cursor and the credential it holds then; the application's
    /// authentication decides again, and the replay delivers exactly what was
    /// published meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Expired`] when `deadline` is not in the future: answer the
    /// request `401 Unauthorized` instead of starting a stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use futures::StreamExt;
    /// use ssehub::sse::{EXPIRED_COMMENT, SseStream};
    /// use ssehub::{Error, Event, fixture::ExampleCategory as C};
    ///
    /// let events = futures::stream::pending::<Result<Event<C>, Error>>();
    /// let expires = SystemTime::now() + Duration::from_millis(20);
    /// let mut body = SseStream::new(events).with_deadline(expires).unwrap();
    /// futures::executor::block_on(async {
    ///     assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
    ///     assert_eq!(body.next().await.unwrap(), format!("retry: 250\n\n: {EXPIRED_COMMENT}\n\n"));
    ///     assert_eq!(body.next().await, None);
    /// });
    /// let past = SystemTime::now() - Duration::from_secs(1);
    /// assert!(matches!(SseStream::new(futures::stream::pending::<Result<Event<C>, Error>>()).with_deadline(past), Err(Error::Expired)));
    /// ```
    pub fn with_deadline(mut self, deadline: std::time::SystemTime) -> Result<Self, Error> {
        let left = deadline.duration_since(std::time::SystemTime::now()).map_err(|_| Error::Expired)?;
        if left.is_zero() {
            return Err(Error::Expired);
        }
        self.deadline = Some(Timer::after(left));
        Ok(self)
    }

    /// The last chunk, if the stream is bound to a shutdown that was triggered
    /// or to a deadline that passed, and has not ended yet; otherwise registers
    /// for their wake-ups.
    fn closing_chunk(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        if self.state == State::Finished {
            return None;
        }
        let shutdown = self.shutdown.as_mut().and_then(|shutdown| match shutdown.poll_closing_chunk(cx) {
            Poll::Ready(closing) => {
                crate::metrics::disconnects(crate::metrics::Disconnect::Shutdown, 1);
                Some(closing)
            }
            Poll::Pending => None,
        });
        let closing = shutdown.or_else(|| {
            let deadline = self.deadline.as_mut()?;
            Pin::new(deadline).poll(cx).is_ready().then(|| {
                crate::metrics::disconnects(crate::metrics::Disconnect::Expired, 1);
                let mut out = String::with_capacity(80);
                let retry = u32::try_from(EXPIRED_RETRY.as_millis()).unwrap_or(u32::MAX);
                wire::write_retry(&mut out, retry);
                wire::write_comment(&mut out, EXPIRED_COMMENT);
                Bytes::from(out)
            })
        })?;
        self.state = State::Finished;
        Some(closing)
    }

    /// The id of the last event written so far.
    pub fn last_sent_id(&self) -> Option<EventId> {
        self.last_sent
    }

    /// What a browser would send back as `Last-Event-ID` now: the `id:` of
    /// the last frame written (a cursor, or the event id without one).
    pub fn last_sent(&self) -> Option<LastEventId> {
        let id = self.last_sent?;
        Some(match self.cursor {
            Some((user, ref positions)) => LastEventId::Cursor(Cursor::new(id, user, positions.clone())),
            None => LastEventId::Event(id),
        })
    }

    /// The options this body runs with.
    pub fn options(&self) -> SseOptions {
        self.options
    }
}

impl<S> Drop for SseStream<S> {
    /// A body dropped before it ended: the client went away (`closed` in the metrics).
    fn drop(&mut self) {
        if self.state != State::Finished {
            crate::metrics::disconnects(crate::metrics::Disconnect::Closed, 1);
        }
    }
}

impl<S> std::fmt::Debug for SseStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("options", &self.options)
            .field("state", &self.state)
            .field("last_sent", &self.last_sent)
            .finish_non_exhaustive()
    }
}

impl<C, S> Stream for SseStream<S>
where
    C: Category,
    S: Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(closing) = self.closing_chunk(cx) {
            return Poll::Ready(Some(closing));
        }
        let this = self.get_mut();
        match this.state {
            State::Finished => return Poll::Ready(None),
            // Alone and at once: the client sees the response open without waiting for an event.
            State::Starting => {
                let mut out = String::new();
                wire::write_retry(&mut out, this.options.retry_millis());
                this.state = State::Streaming;
                this.last_output = Instant::now();
                return Poll::Ready(Some(Bytes::from(out)));
            }
            State::Streaming => {}
        }

        // Gather every event that is ready, so a burst (a replay) goes out in few chunks.
        let mut chunk = Chunk::Empty;
        while chunk.len() < MAX_CHUNK_BYTES {
            match Pin::new(&mut this.events).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    // Room for a cursor without groups on the stack; one with groups, on the heap.
                    let mut id = [0; FIXED_CURSOR_TEXT];
                    let with_groups = &mut this.cursor_buf;
                    let id = match &mut this.cursor {
                        Some((user, positions)) => {
                            if let Some(position) = event.position() {
                                positions.set(StreamKind::of(event.audience()), Some(position));
                            }
                            let buf: &mut [u8] = if positions.groups.is_empty() {
                                &mut id
                            } else {
                                with_groups.resize(crate::cursor::text_len_bound(positions), 0);
                                with_groups
                            };
                            Cursor::encode_for_into(event.id(), *user, positions, buf)
                        }
                        None => event.id().as_uuid().hyphenated().encode_lower(&mut id[..36]),
                    };
                    let body = match event.audience() {
                        // Encoded once and shared, whatever the number of streams sending it.
                        Audience::Broadcast | Audience::Group(_) => {
                            event.cached_frame_body(wire::event_frame_body)
                        }
                        // A user's event goes to that user's few streams: encoded for each, so
                        // that the memory hub's retained user events do not keep a second copy.
                        Audience::User(_) => wire::event_frame_body(&event),
                    };
                    chunk.push_event(id, &body);
                    this.last_sent = Some(event.id());
                }
                Poll::Ready(Some(Err(Error::Gap { last_delivered, stream }))) => {
                    let last = match this.last_sent() {
                        Some(last) => Some(last),
                        None => last_delivered.map(LastEventId::Event),
                    };
                    let mut out = String::new();
                    write_gap(&mut out, last, stream);
                    chunk.push(Bytes::from(out));
                }
                Poll::Ready(Some(Err(error))) => {
                    if matches!(error, Error::Closed) {
                        crate::metrics::disconnects(crate::metrics::Disconnect::Shutdown, 1);
                    }
                    let mut out = String::new();
                    wire::write_comment(&mut out, closing_reason(&error));
                    chunk.push(Bytes::from(out));
                    this.state = State::Finished;
                    break;
                }
                Poll::Ready(None) => {
                    this.state = State::Finished;
                    break;
                }
                Poll::Pending => break,
            }
        }

        if let Some(bytes) = chunk.into_bytes() {
            // No timer operation per chunk: the timer is moved when it fires (below).
            this.last_output = Instant::now();
            return Poll::Ready(Some(bytes));
        }
        if this.state == State::Finished {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.heartbeat).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(now) => {
                    let due = this.last_output + this.options.heartbeat;
                    if due > now {
                        // Output went out since the timer was set: wait out the rest of the interval.
                        this.heartbeat.set_at(due);
                        continue;
                    }
                    this.heartbeat.set_at(now + this.options.heartbeat);
                    this.last_output = now;
                    let mut out = String::new();
                    wire::write_comment(&mut out, HEARTBEAT_COMMENT);
                    return Poll::Ready(Some(Bytes::from(out)));
                }
            }
        }
    }
}

impl<C: Category, L> Resumed<C, L> {
    /// The response body of this stream, each frame's `id:` a cursor
    /// ([`SseStream::with_cursor`] from where it resumed).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "memory")] {
    /// use futures::StreamExt;
    /// use ssehub::fixture::ExampleCategory as C;
    /// use ssehub::{memory::MemoryHub, resume, sse::SseOptions, Audience, CategorySet, Event, Publisher, UserId};
    ///
    /// futures::executor::block_on(async {
    ///     let hub = MemoryHub::<C>::new();
    ///     let user = UserId::from_u64(1);
    ///     let resumed = resume(&hub, user, None, CategorySet::all()).await.unwrap();
    ///     let mut body = resumed.into_sse(SseOptions::new());
    ///     assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
    ///     let event = Event::new(Audience::User(user), "n", C::Ai, "1").unwrap();
    ///     hub.publish(event.clone()).await.unwrap();
    ///     let frame = body.next().await.unwrap();
    ///     let id = format!("id: {}~1~", event.id());
    ///     assert!(frame.starts_with(id.as_bytes()));
    /// });
    /// # }
    /// ```
    pub fn into_sse(self, options: SseOptions) -> SseStream<Self> {
        let (user, start) = (self.user(), self.positions());
        SseStream::with_options(self, options).with_cursor(user, start)
    }
}
