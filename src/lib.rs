//! ssehub: Server-Sent Events delivery with category filters and gapless Last-Event-ID replay.
//!
//! Each connected client receives its user's own events plus broadcast events,
//! filtered by the categories it asked for. A client that reconnects with a
//! `Last-Event-ID` is replayed what it missed, and told plainly when history no
//! longer reaches back that far.
//!
//! Every audience is a stream of its own, ordered within itself; the SSE `id:`
//! of each frame is a [`Cursor`]: the position the connection has reached in
//! each stream. [`resume()`] replays each stream strictly after its own
//! position, so a reconnecting client gets every event exactly once, whatever
//! order the backend delivered the streams in (on a Redis Cluster they live
//! on different masters).
//!
//! The crate is one backend-agnostic pair of traits, [`EventSource`] and
//! [`Publisher`], with backends chosen by Cargo features. The core (event and
//! id types, [`Category`] and [`CategorySet`], the cursor in [`cursor`], the
//! parsers in [`parse`] and the text/event-stream encoder in [`wire`]) is
//! `no_std` + `alloc`.
//!
//! # The path of one event
//!
//! 1. [`Publisher::publish`] hands an [`Event`] to a backend
//!    ([`memory::MemoryHub`], or `fred::RedisHub` with the `fred` feature),
//!    which appends it to its audience's stream (retained for replay) and
//!    queues it for every live subscription it concerns, through the
//!    [`backend`] building blocks.
//! 2. [`resume`](resume()) turns a request into a stream: it subscribes
//!    ([`EventSource::subscribe`]), then reads what the client missed after
//!    its [`Cursor`] ([`EventSource::missed_since`]), and yields a
//!    [`Resumed`]: the missed events, then the live ones not among them.
//! 3. [`Resumed::into_sse`] makes it an [`sse::SseStream`]: text/event-stream
//!    frames ([`wire`]) whose `id:` is the cursor, a `retry:` hint,
//!    heartbeats, the gap signal, an end bound to a [`shutdown::Shutdown`].
//! 4. The response: [`sse::RESPONSE_HEADERS`] and that body, in hyper, axum
//!    or any framework that takes a stream of bytes (compressed with
//!    `gzip::GzipStream` if asked for).
//!
//! The request side ([`sse::last_event_id`], [`sse::categories`]) reads the
//! client's `Last-Event-ID` and `?categories=` with the allocation-free
//! parsers of [`parse`], refusing bad input with a message fit for a 400.
//!
//! # Features
//!
//! | feature        | default | what it adds |
//! |----------------|---------|--------------|
//! | `std`          | yes     | id generation from the clock ([`EventId::new`], [`Event::new`]) and the std layer |
//! | `memory`       | yes     | the in-process backend, runtime-neutral, no server |
//! | `fred`         | no      | the Redis backend on the `fred` client (pub/sub for live delivery, Streams for replay) |
//! | `conformance`  | no      | the backend conformance suite, for this crate's and third-party backends |
//! | `serde`        | no      | `Serialize`/`Deserialize` on the core types |
//! | `gzip`         | no      | [`gzip::GzipStream`]: `Content-Encoding: gzip` bodies flushed chunk by chunk, a few KiB per connection |
//! | `metrics`      | no      | operator metrics through the `metrics` facade: see [`metrics`] |
//! | `http`         | no      | `SseStream` as an `http_body::Body`, `sse::SseRequest` from `http` requests, ready responses (`sse::response`, `sse::error_response`) |
//! | `axum`         | no      | `sse::SseRequest` as an axum extractor; `SseStream` and `Error` as axum responses (on `axum-core`) |
//!
//! With `default-features = false` the crate builds for `no_std` targets that
//! have an allocator.
//!
//! # Example
//!
//! Categories are a small enum of your own, declared with [`categories!`]:
//!
//! ```
//! use ssehub::{categories, parse, CategorySet};
//!
//! categories! {
//!     /// What our events are about.
//!     pub enum Topic {
//!         Billing = "billing",
//!         Alerts = "alerts",
//!     }
//! }
//!
//! // `?categories=alerts` from a query string
//! let filter: CategorySet<Topic> = parse::categories(["alerts"]).unwrap();
//! assert!(filter.contains(Topic::Alerts));
//! assert!(!filter.contains(Topic::Billing));
//! assert_eq!(filter.to_string(), "alerts");
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

// The no_std core (+ alloc): events and ids, categories, cursors, the parsers of
// client input, the wire format, the backend traits. Nothing here needs an OS.
mod category;
pub mod cursor;
mod error;
mod event;
pub mod fixture;
mod group;
pub mod parse;
mod retention;
mod source;
pub mod wire;

// The std layer: the building blocks backends share, `resume`, the SSE body and
// its shutdown, compression, metrics.
#[cfg(feature = "std")]
pub mod backend;
#[cfg(feature = "gzip")]
pub mod gzip;
#[cfg(feature = "std")]
pub mod metrics;
#[cfg(feature = "std")]
pub mod resume;
#[cfg(feature = "std")]
pub mod shutdown;
#[cfg(feature = "std")]
pub mod sse;
#[cfg(feature = "std")]
pub use resume::{Resumed, resume};

// The backends, one feature each; their files live in `backends/`.
#[cfg(feature = "fred")]
#[path = "../backends/fred/mod.rs"]
pub mod fred;
#[cfg(feature = "memory")]
#[path = "../backends/memory/mod.rs"]
pub mod memory;

// Test support: the conformance suite every backend runs (its API is not semver-stable).
#[cfg(feature = "conformance")]
pub mod conformance;

pub use category::{Category, CategorySet, CategorySetIter};
pub use cursor::{Cursor, LastEventId, Position, Positions, StreamKind};
pub use error::{BoxError, Error, LimitScope};
pub use event::{Audience, DataNotJson, Event, EventId, InvalidEvent, UserId};
pub use group::{GroupId, Groups, MAX_GROUPS, Reader, TooManyGroups};
pub use retention::Retention;
pub use source::{
    BoxFuture, DynHub, EventSource, EventStream, Presence, Publisher, Replay, ReplayStatus, StreamRead,
    StreamReplay,
};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[doc(hidden)]
pub mod __private {
    pub use crate::category::assert_valid_names;
}
