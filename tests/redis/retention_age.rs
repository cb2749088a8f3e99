//! Retention by age on Redis: events older than `max_age` leave the stream, and a stream lives `max_age` after its last event.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::time::{Duration, Instant};

use fred_support::{builder, event, fresh_user, within};
use redis_server::RedisServer;
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, Publisher, Retention};

const MAX_AGE: Duration = Duration::from_millis(400);

/// The longest a stream goes untrimmed by age under approximate trimming (`AGE_TRIM_INTERVAL`).
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// A server whose streams hold one entry per node, so approximate trimming drops entries one by one.
fn server() -> RedisServer {
    RedisServer::start_with_args(&["--stream-node-max-entries", "1"])
}

/// One user's stream under `retention`, on a server of its own.
struct Setup {
    server: RedisServer,
    hub: RedisHub<fred_support::C>,
    user: Audience,
    stream: String,
}

async fn setup(server: RedisServer, prefix: &str, retention: Retention) -> Setup {
    let hub = within("connect", builder(&server.url(), prefix).retention(Some(retention)).connect())
        .await
        .expect("connect");
    let user = Audience::User(fresh_user());
    let stream = KeyLayout::standalone_with_prefix(prefix).unwrap().stream(user);
    Setup { server, hub, user, stream }
}

fn entries(server: &RedisServer, stream: &str) -> usize {
    server.command(&["XLEN", stream]).as_int().expect("XLEN answers a number") as usize
}

fn ttl_ms(server: &RedisServer, stream: &str) -> i64 {
    server.command(&["PTTL", stream]).as_int().expect("PTTL answers a number")
}

#[test]
fn exact_trimming_drops_events_older_than_max_age_at_the_next_publish() {
    futures::executor::block_on(async {
        let Setup { server, hub, user, stream } =
            setup(server(), "age-exact", Retention::new(100, MAX_AGE).exact_trimming(true)).await;
        hub.publish(event(user, 0)).await.expect("publish");
        hub.publish(event(user, 1)).await.expect("publish");
        assert_eq!(entries(&server, &stream), 2);
        let ttl = ttl_ms(&server, &stream);
        assert!(ttl > 0 && ttl <= MAX_AGE.as_millis() as i64, "the stream expires after max_age: PTTL {ttl}");
        smol::Timer::after(MAX_AGE + Duration::from_millis(100)).await;
        hub.publish(event(user, 2)).await.expect("publish");
        assert_eq!(entries(&server, &stream), 1, "both older events are gone");
    });
}

#[test]
fn approximate_trimming_drops_old_events_within_a_trim_interval_and_the_stream_outlives_its_last_event() {
    futures::executor::block_on(async {
        let Setup { server, hub, user, stream } =
            setup(server(), "age-approximate", Retention::new(100, MAX_AGE)).await;
        hub.publish(event(user, 0)).await.expect("publish");
        // Publishes at a quick pace: whichever of them renewed the expiry, the stream lives at least
        // max_age after the last one, and at most max_age and one trim interval.
        for n in 1..20 {
            let published_at = Instant::now();
            hub.publish(event(user, n)).await.expect("publish");
            let ttl = ttl_ms(&server, &stream);
            let since = published_at.elapsed().as_millis() as i64;
            assert!(
                ttl >= MAX_AGE.as_millis() as i64 - since,
                "the stream lives max_age after its last event: PTTL {ttl} ms, {since} ms after publishing"
            );
            assert!(ttl <= (MAX_AGE + TRIM_INTERVAL).as_millis() as i64, "PTTL {ttl} ms");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        // Whenever the stream was last trimmed, it was at a publish above: a trim interval after the
        // last of them, the next publish trims again.
        smol::Timer::after(TRIM_INTERVAL + Duration::from_millis(50)).await;
        hub.publish(event(user, 20)).await.expect("publish");
        assert_eq!(entries(&server, &stream), 1, "every event older than max_age is gone");
    });
}

#[test]
fn without_an_age_limit_streams_do_not_expire() {
    futures::executor::block_on(async {
        let Setup { server, hub, user, stream } =
            setup(server(), "age-none", Retention::new(100, Duration::ZERO)).await;
        hub.publish(event(user, 0)).await.expect("publish");
        assert_eq!(ttl_ms(&server, &stream), -1, "no expiry");
    });
}

#[test]
fn a_publish_marker_lives_the_dedupe_window_and_then_publishing_the_event_again_stores_it_anew() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let window = Duration::from_millis(300);
        let hub = within(
            "connect",
            builder(&server.url(), "markers")
                .publish_dedupe_window(window)
                .retention(Some(Retention::default()))
                .connect(),
        )
        .await
        .expect("connect");
        let user = Audience::User(fresh_user());
        let stream = KeyLayout::standalone_with_prefix("markers").unwrap().stream(user);
        let published = event(user, 0);
        let marker = hub.key_layout().publish_marker(user, published.id());
        within("publish", hub.publish(published.clone())).await.expect("publish");
        // Within the window the marker is there, and the same event again stores nothing.
        let ttl = server.command(&["PTTL", marker.key()]).as_int().expect("an integer");
        assert!(ttl > 0 && ttl <= window.as_millis() as i64, "the marker's TTL: {ttl} ms");
        within("publish again", hub.publish(published.clone())).await.expect("publish again");
        assert_eq!(entries(&server, &stream), 1);
        // Past the window the marker is gone (Redis expired it, nothing swept it) ...
        fred_support::eventually("the marker to expire", || {
            server.command(&["EXISTS", marker.key()]).as_int() == Some(0)
        })
        .await;
        // ... so the same event is stored a second time: the window is the whole guarantee.
        within("publish after the window", hub.publish(published.clone())).await.expect("publish");
        assert_eq!(entries(&server, &stream), 2);
    });
}
