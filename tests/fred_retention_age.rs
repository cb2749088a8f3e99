//! Retention by age on Redis: events older than `max_age` leave the stream, and a stream lives `max_age` after its last event.

#[path = "support/fred_support.rs"]
mod fred_support;
#[path = "support/redis_server.rs"]
mod redis_server;

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

async fn hub(server: &RedisServer, prefix: &str, retention: Retention) -> RedisHub<fred_support::C> {
    within("connect", builder(&server.url(), prefix).retention(Some(retention)).connect())
        .await
        .expect("connect")
}

fn entries(server: &RedisServer, stream: &str) -> usize {
    server.command(&["XLEN", stream]).as_int().expect("XLEN answers a number") as usize
}

fn ttl_ms(server: &RedisServer, stream: &str) -> i64 {
    server.command(&["PTTL", stream]).as_int().expect("PTTL answers a number")
}

#[test]
fn exact_trimming_drops_events_older_than_max_age_at_the_next_publish() {
    let server = server();
    let prefix = "age-exact";
    let user = fresh_user();
    let stream = KeyLayout::standalone_with_prefix(prefix).unwrap().stream(Audience::User(user));
    futures::executor::block_on(async {
        let hub = hub(&server, prefix, Retention::new(100, MAX_AGE).exact_trimming(true)).await;
        hub.publish(event(Audience::User(user), 0)).await.expect("publish");
        hub.publish(event(Audience::User(user), 1)).await.expect("publish");
        assert_eq!(entries(&server, &stream), 2);
        let ttl = ttl_ms(&server, &stream);
        assert!(ttl > 0 && ttl <= MAX_AGE.as_millis() as i64, "the stream expires after max_age: PTTL {ttl}");
        smol::Timer::after(MAX_AGE + Duration::from_millis(100)).await;
        hub.publish(event(Audience::User(user), 2)).await.expect("publish");
        assert_eq!(entries(&server, &stream), 1, "both older events are gone");
    });
}

#[test]
fn approximate_trimming_drops_old_events_within_a_trim_interval_and_the_stream_outlives_its_last_event() {
    let server = server();
    let prefix = "age-approximate";
    let user = fresh_user();
    let stream = KeyLayout::standalone_with_prefix(prefix).unwrap().stream(Audience::User(user));
    futures::executor::block_on(async {
        let hub = hub(&server, prefix, Retention::new(100, MAX_AGE)).await;
        hub.publish(event(Audience::User(user), 0)).await.expect("publish");
        // Publishes at a quick pace: whichever of them renewed the expiry, the stream lives at least
        // max_age after the last one, and at most max_age and one trim interval.
        for n in 1..20 {
            let published_at = Instant::now();
            hub.publish(event(Audience::User(user), n)).await.expect("publish");
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
        hub.publish(event(Audience::User(user), 20)).await.expect("publish");
        assert_eq!(entries(&server, &stream), 1, "every event older than max_age is gone");
    });
}

#[test]
fn without_an_age_limit_streams_do_not_expire() {
    let server = server();
    let prefix = "age-none";
    let user = fresh_user();
    let stream = KeyLayout::standalone_with_prefix(prefix).unwrap().stream(Audience::User(user));
    futures::executor::block_on(async {
        let hub = hub(&server, prefix, Retention::new(100, Duration::ZERO)).await;
        hub.publish(event(Audience::User(user), 0)).await.expect("publish");
        assert_eq!(ttl_ms(&server, &stream), -1, "no expiry");
    });
}
