//! The actix-web example over real HTTP: its stream parsed by an independent SSE parser (eventsource-stream), filtered, and resumed after Last-Event-ID with exactly what was missed.

use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;

use bytes::Bytes;
use eventsource_stream::{Event as SseEvent, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use smol_hyper::rt::FuturesIo;

const ALICE: &str = "a11ce000-0000-4000-8000-000000000001";
const BOB: &str = "b0b00000-0000-4000-8000-000000000002";

type Events = Pin<Box<dyn Stream<Item = Result<SseEvent, EventStreamError<hyper::Error>>>>>;

/// The example server on a free port, in a thread with actix's runtime; stopped when dropped.
struct RunningExample {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl RunningExample {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (started, handle) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = ssehub_actix::server(listener, ssehub_actix::Hub::new()).unwrap();
                started.send(server.handle()).unwrap();
                server.await
            })
        });
        Self { addr, handle: handle.recv().expect("the server starts") }
    }
}

impl Drop for RunningExample {
    fn drop(&mut self) {
        smol::block_on(self.handle.stop(false));
    }
}

/// Sends one request on a connection of its own.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Incoming> {
    let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(FuturesIo::new(tcp)).await.unwrap();
    smol::spawn(connection).detach();
    let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender.send_request(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap()
}

/// Opens a stream and hands its events to the independent parser.
async fn open_events(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Events {
    let response = send(addr, "GET", path, headers, "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let chunks = BodyStream::new(response.into_body())
        .filter_map(|frame| async move { frame.map(|frame| frame.into_data().ok()).transpose() });
    Box::pin(chunks.eventsource())
}

/// Publishes `{"n": n}` to `user` in `category`; returns the event's id.
async fn publish(addr: SocketAddr, user: &str, category: &str, n: u32) -> String {
    let response =
        send(addr, "POST", &format!("/publish/{user}/{category}"), &[], &format!("{{\"n\":{n}}}")).await;
    assert_eq!(response.status(), 200);
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The next `count` events: `(n, id)` of each.
async fn next_events(events: &mut Events, count: usize) -> Vec<(u32, String)> {
    let mut received = Vec::new();
    while received.len() < count {
        let event = events.next().await.expect("the stream goes on").expect("well-formed SSE");
        assert_eq!(event.event, "update");
        let n = event.data.strip_prefix("{\"n\":").and_then(|rest| rest.strip_suffix('}')).unwrap();
        received.push((n.parse().unwrap(), event.id));
    }
    received
}

#[test]
fn stream_carries_the_users_events_in_its_categories_and_resumes_with_exactly_what_was_missed() {
    let example = RunningExample::start();
    let addr = example.addr;
    smol::block_on(async {
        let mut events = open_events(addr, &format!("/events/{ALICE}?categories=orders"), &[]).await;
        for n in 1..=3 {
            publish(addr, ALICE, "orders", n).await;
            // Neither another user's nor another category's events reach the stream.
            publish(addr, BOB, "orders", 100 + n).await;
            publish(addr, ALICE, "chat", 200 + n).await;
        }
        let seen = next_events(&mut events, 3).await;
        assert_eq!(seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2, 3]);
        drop(events);

        // Missed while away: 4 and 5. Resuming after 3 replays them, then goes on live with 6.
        publish(addr, ALICE, "orders", 4).await;
        publish(addr, ALICE, "chat", 204).await;
        publish(addr, ALICE, "orders", 5).await;
        let last_event_id = seen[2].1.as_str();
        let path = format!("/events/{ALICE}?categories=orders");
        let mut resumed = open_events(addr, &path, &[("last-event-id", last_event_id)]).await;
        publish(addr, ALICE, "orders", 6).await;
        let after = next_events(&mut resumed, 3).await;
        assert_eq!(
            after.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [4, 5, 6],
            "exactly the missed, then live"
        );

        // The resumed stream's cursors resume too: after 4, exactly 5 and 6.
        drop(resumed);
        let mut again = open_events(addr, &path, &[("last-event-id", after[0].1.as_str())]).await;
        let replayed = next_events(&mut again, 2).await;
        assert_eq!(replayed.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [5, 6]);
    });
}

#[test]
fn a_bad_category_or_last_event_id_is_refused_with_400_naming_it() {
    let example = RunningExample::start();
    smol::block_on(async {
        let response = send(example.addr, "GET", &format!("/events/{ALICE}?categories=nope"), &[], "").await;
        assert_eq!(response.status(), 400);
        let message = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&message).contains("nope"), "{message:?}");

        let headers = [("last-event-id", "42")];
        let response = send(example.addr, "GET", &format!("/events/{ALICE}"), &headers, "").await;
        assert_eq!(response.status(), 400);
    });
}
