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
//! | `browser-test` | no      | test-only, nothing in the library: runs the crate's browser test (Chromium, Node.js) |
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

mod category;
pub mod cursor;
mod error;
mod event;
pub mod fixture;
#[cfg(feature = "fred")]
#[path = "../backends/fred/mod.rs"]
pub mod fred;
#[cfg(feature = "gzip")]
pub mod gzip;
pub mod parse;
mod retention;
#[cfg(feature = "std")]
pub mod shutdown;
mod source;
#[cfg(feature = "std")]
pub mod sse;
pub mod wire;

#[cfg(feature = "std")]
pub mod backend;
#[cfg(feature = "std")]
pub mod metrics;
#[cfg(feature = "std")]
pub mod resume;
#[cfg(feature = "std")]
pub use resume::{Resumed, resume};

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "memory")]
#[path = "../backends/memory/mod.rs"]
pub mod memory;

pub use category::{Category, CategorySet, CategorySetIter};
pub use cursor::{Cursor, LastEventId, Position, Positions, StreamKind};
pub use error::{BoxError, Error};
pub use event::{Audience, DataNotJson, Event, EventId, InvalidEvent, UserId};
pub use retention::Retention;
pub use source::{
    BoxFuture, DynHub, EventSource, EventStream, Publisher, Replay, ReplayStatus, StreamRead, StreamReplay,
};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[doc(hidden)]
pub mod __private {
    pub use crate::category::assert_valid_names;
}
