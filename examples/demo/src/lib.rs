//! ssehub's example servers, as a crate the tests and the bench use without including its files: the demo page on smol + hyper 1, and the SSE endpoint on axum + tokio with the Redis backend.
//!
//! * [`page`]: the demo (`cargo run -p ssehub-demo --bin demo`), a web page
//!   with a live event log, publishing, dropped connections and replay, on
//!   the memory backend or (`--redis`) on Redis; over HTTP/2 with `--tls`
//!   ([`tls`]: a self-signed certificate, ALPN `h2` and `http/1.1`).
//! * `axum_app` (feature `fred`): the endpoint as an axum application writes
//!   it, with signed, expiring tokens and graceful shutdown
//!   (`cargo run -p ssehub-demo --bin axum`).
//!
//! Not published. Its tests (`tests/`) drive both over real HTTP: in-process,
//! through the binaries, and in headless Chromium (feature `browser-test`).

pub mod page;
pub mod tls;

#[cfg(feature = "fred")]
pub mod axum_app;
