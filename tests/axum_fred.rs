//! The axum example's endpoint over real HTTP, on a private redis-server: headers, 400s, cross-process delivery, replay.

#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod axum_example;
#[path = "support/http_client.rs"]
mod http_client;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::net::SocketAddr;

use http_client::{Client, call};
use redis_server::RedisServer;
use ssehub::fixture::ExampleCategory as C;
use ssehub::fred::RedisHub;
use ssehub::{Audience, Event, Publisher, UserId};

const USER: &str = "a11ce000-0000-4000-8000-000000000001";
const OTHER: &str = "b0b00000-0000-4000-8000-000000000002";

/// The axum app on its own tokio runtime, and a second hub standing for another process.
struct Setup {
    addr: SocketAddr,
    elsewhere: RedisHub<C>,
    runtime: tokio::runtime::Runtime,
    _redis: RedisServer,
}

fn setup() -> Setup {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, elsewhere) = runtime.block_on(async {
        let hub = axum_example::Hub::connect(&redis.url()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, axum_example::app(hub)).await });
        (addr, RedisHub::<C>::connect(&redis.url()).await.unwrap())
    });
    Setup { addr, elsewhere, runtime, _redis: redis }
}

impl Setup {
    fn publish_elsewhere(&self, audience: Audience, category: C, n: u32) -> Event<C> {
        let event = Event::new(audience, "note", category, format!("{{\"n\":{n}}}")).unwrap();
        self.runtime.block_on(self.elsewhere.publish(event.clone())).unwrap();
        event
    }
}

fn frame_of(event: &Event<C>) -> String {
    let mut frame = String::new();
    ssehub::wire::encode_event(event, &mut frame);
    frame
}

#[test]
fn axum_endpoint_streams_what_another_process_publishes_and_replays_on_reconnect() {
    let setup = setup();
    let user: UserId = USER.parse().unwrap();
    let target = format!("/events?user={USER}&categories=ai,security");

    let mut client = Client::connect(setup.addr);
    let head = client.send("GET", &target, &[], "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert_eq!(client.read_chunk().unwrap(), "retry: 3000\n\n");

    // Another user's event and a filtered-out one never arrive; the next one does.
    setup.publish_elsewhere(Audience::User(OTHER.parse().unwrap()), C::Ai, 1);
    setup.publish_elsewhere(Audience::User(user), C::Import, 2);
    let seen = setup.publish_elsewhere(Audience::User(user), C::Ai, 3);
    assert_eq!(client.read_chunk().unwrap(), frame_of(&seen));
    drop(client);

    let missed = [
        setup.publish_elsewhere(Audience::Broadcast, C::Security, 4),
        setup.publish_elsewhere(Audience::User(user), C::Ai, 5),
    ];
    let mut client = Client::connect(setup.addr);
    assert_eq!(client.send("GET", &target, &[("Last-Event-ID", &seen.id().to_string())], "").status, 200);
    let expected: Vec<String> =
        std::iter::once("retry: 3000\n\n".to_owned()).chain(missed.iter().map(frame_of)).collect();
    assert_eq!(client.read_frames(3), expected);

    // POST /publish on the app reaches the open stream.
    let (head, id) =
        call(setup.addr, "POST", &format!("/publish?user={USER}&category=security"), &[], r#"{"x":1}"#);
    assert_eq!(head.status, 200, "{id}");
    assert_eq!(client.read_chunk().unwrap(), format!("id: {id}\nevent: security\ndata: {{\"x\":1}}\n\n"));
}

#[test]
fn axum_endpoint_refuses_bad_input_with_400_before_streaming() {
    let setup = setup();
    let (head, body) = call(setup.addr, "GET", &format!("/events?user={USER}&categories=nope"), &[], "");
    assert_eq!(head.status, 400);
    assert_eq!(
        body,
        "invalid category 'nope'; valid categories: data_sync, provider, ai, import, portfolio, security"
    );
    let (head, body) =
        call(setup.addr, "GET", &format!("/events?user={USER}"), &[("Last-Event-ID", "7")], "");
    assert_eq!(head.status, 400);
    assert_eq!(
        body,
        "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182"
    );
    let (head, body) = call(setup.addr, "GET", "/events", &[], "");
    assert_eq!(head.status, 400);
    assert_eq!(body, "missing user");
    let (head, _) = call(setup.addr, "POST", "/publish?broadcast=true&category=ai", &[], "not json");
    assert_eq!(head.status, 400);
}
