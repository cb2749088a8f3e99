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

use ssehub_harness::http_client::Client;

/// Reads `client`'s SSE frames until the one whose id (a cursor) is headed by the event id `marker`;
/// returns them as they came (comments, such as heartbeats, left out), the marker last.
///
/// How a test shows that an event did NOT arrive without waiting for it: publish it, then a
/// marker every stream reads; whatever was to come before the marker has come once it is here.
fn frames_until(client: &mut Client, marker: &str) -> Vec<String> {
    let head = format!("id: {marker}");
    let (mut frames, mut text) = (Vec::new(), String::new());
    while !frames.last().is_some_and(|frame: &String| frame.starts_with(&head)) {
        text.push_str(&client.read_chunk().expect("the stream goes on until the marker"));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if !frame.starts_with(':') {
                frames.push(frame);
            }
        }
    }
    frames
}
