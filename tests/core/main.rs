//! The core, the memory backend and the std layer, in one test crate: a plain `cargo test` runs it and needs nothing but Rust.
//!
//! Each module is the tests of one concern; the `serde` and `gzip` modules run
//! with those features. The Redis backend's tests are in `tests/redis`, the
//! example servers' (HTTP, browser) in `examples/demo/tests`.

/// Broken toy backends the conformance suite must reject.
mod conformance_rejects_broken;
/// The core on generated input (proptest), with the fuzz targets' checks.
mod core_properties;
/// One scenario on smol, async-std, tokio and `futures::executor`.
mod executors;
/// SSE frames written from the format's rules, for comparing the encoder's output against.
mod frames;
/// Groups: the cap per reader, the open groups gauge, resuming group streams under publishing.
mod groups;
/// Gzip-compressed bodies.
#[cfg(feature = "gzip")]
mod gzip;
/// The self-tests of the shared test harness (RESP codec, waits).
mod harness;
/// The conformance suite on the memory backend, one test per check.
mod memory_conformance;
/// Memory held by idle subscriptions (this crate's counting allocator).
mod memory_footprint;
/// The memory backend beyond the conformance suite.
mod memory_hub;
/// `resume` against a scripted backend.
mod resume;
/// Seeded random runs of publishers and a client that drops and resumes.
mod resume_randomized;
/// The core types through JSON.
#[cfg(feature = "serde")]
mod serde_support;
/// Presence and deadlines on the memory backend.
mod sessions;
/// Graceful shutdown of bound streams.
mod shutdown;
/// The SSE body stream and the request helpers.
mod sse_stream;
