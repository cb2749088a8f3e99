//! The example servers over real HTTP: the demo in this process and as its binary, on memory and Redis, over HTTP/2, in headless Chromium, and the axum example.
//!
//! The Redis modules (feature `fred`, on by default) start private
//! `redis-server` processes through `ssehub_harness`; the browser module
//! (feature `browser-test`) needs Chromium and Node.js (`bash tests/setup.sh`).

/// The axum example: tokens, delivery, replay, graceful shutdown.
#[cfg(feature = "fred")]
mod axum_app;
/// The demo page in headless Chromium.
#[cfg(feature = "browser-test")]
mod browser;
/// The demo's SSE endpoint over raw HTTP/1.1.
mod http;
/// The demo over TLS and HTTP/2: streams on one connection, GOAWAY on shutdown.
mod http2;
/// Demo processes sharing one Redis.
#[cfg(feature = "fred")]
mod redis;
/// Graceful shutdown and a rolling restart of demo processes.
#[cfg(feature = "fred")]
mod rolling_restart;
