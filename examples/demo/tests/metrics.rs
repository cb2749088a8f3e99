//! The demo's `GET /metrics` (Prometheus text) against what the test did: publishes, open streams, a lagged subscriber, replays, a refused publish; on Redis, a reconnect and its recovery.
//!
//! The memory test runs the demo in this process; the metrics recorder is
//! global to the process, and that test is the only one here recording with
//! `backend="memory"`. The Redis test runs the demo binary as a child process
//! on a private redis-server, so its figures are its own.

use ssehub_demo::page as server;

#[cfg(feature = "fred")]
use ssehub_harness::demo_process;
use ssehub_harness::http_client;
#[cfg(feature = "fred")]
use ssehub_harness::redis_server;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::executor::block_on;
use http_client::{Client, call};
use serde_json::Value;
use server::Topic as C;
use ssehub::memory::MemoryHub;
use ssehub::sse::SseOptions;
use ssehub::{CategorySet, DynHub, EventId, EventSource};
use ssehub_harness::wait::wait_until;

/// SSE streams kept open and read after every publish.
const STREAMS: usize = 3;
/// Events published to Alice.
const PUBLISHES: usize = 12;
/// The hub's per-subscriber queue: a subscription never read lags at the event after this many.
const QUEUE: usize = 4;

/// One sample of the scrape: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of a Prometheus text exposition (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                    let labels = body
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').unwrap();
                            (key.to_owned(), value.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            (name, labels, value)
        })
        .collect()
}

/// The value of the one sample named `name` with exactly `labels`, if scraped.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> =
        labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    let found: Vec<f64> =
        samples.iter().filter(|(n, l, _)| n == name && *l == wanted).map(|(_, _, value)| *value).collect();
    assert!(found.len() <= 1, "{name} {labels:?} scraped {} times", found.len());
    found.first().copied()
}

fn scrape(addr: std::net::SocketAddr) -> Vec<Sample> {
    let (head, body) = call(addr, "GET", "/metrics", &[], "");
    assert_eq!(head.status, 200, "{body}");
    assert!(head.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    // Every metric is described: the exporter writes its HELP line.
    for name in [ssehub::metrics::EVENTS_PUBLISHED, ssehub::metrics::EVENTS_DELIVERED] {
        assert!(body.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{body}");
    }
    // No label carries a user id.
    for user in server::USERS {
        assert!(!body.contains(&user.id.to_string()), "a user id in the metrics:\n{body}");
    }
    parse(&body)
}

/// Opens `/events` for Alice (with a Last-Event-ID, if given) and reads up to the `retry` line.
fn open_stream(addr: std::net::SocketAddr, last_event_id: Option<&str>) -> Client {
    let mut client = Client::connect(addr);
    let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("Last-Event-ID", id)).into_iter().collect();
    let target = format!("/events?user={}", server::USERS[0].id);
    assert_eq!(client.send("GET", &target, &headers, "").status, 200);
    assert!(client.read_chunk().unwrap().starts_with("retry:"));
    client
}

/// Publishes event `n` to Alice through `POST /publish`; returns the status and the event id (or the error).
fn publish(addr: std::net::SocketAddr, n: usize) -> (u16, String) {
    let body = format!(r#"{{"user":"{}","category":"ai","data":{{"n":{n}}}}}"#, server::USERS[0].id);
    let (head, response) = call(addr, "POST", "/publish", &[], &body);
    if head.status != 200 {
        return (head.status, response);
    }
    let reply: Value = serde_json::from_str(&response).unwrap();
    (head.status, reply["id"].as_str().unwrap().to_owned())
}

#[test]
fn metrics_count_what_the_demo_did() {
    // The recorder before the hub: the hub takes its metric handles when it is built.
    assert!(server::prometheus().is_some());
    // Alice's streams and the unread subscription fit, and after it lagged, the two reconnects: no more.
    let hub = MemoryHub::<C>::builder().queue_capacity(QUEUE).max_subscriptions_per_user(STREAMS + 2).build();
    let options = server::DemoOptions {
        sse: SseOptions::new().heartbeat(Duration::from_secs(60)),
        generator_interval: None,
    };
    let demo = server::start("127.0.0.1:0".parse().unwrap(), DynHub::new(hub.clone()), options).unwrap();

    let mut streams: Vec<Client> = (0..STREAMS).map(|_| open_stream(demo.addr(), None)).collect();
    // A subscription nobody reads: it lags at the event after QUEUE.
    let mut unread = block_on(hub.subscribe(server::USERS[0].id, CategorySet::all())).unwrap();

    // Each stream reads each event before the next is published, so none of them lags.
    let ids = publish_and_read(demo.addr(), 0..PUBLISHES, &mut streams);
    let unread_events = block_on(async {
        let mut events = 0;
        loop {
            match unread.next().await {
                Some(Ok(_)) => events += 1,
                Some(Err(error)) => {
                    assert!(error.is_lagged(), "{error}");
                    break events;
                }
                None => panic!("the unread subscription ended without lagging"),
            }
        }
    });
    assert!(unread_events <= QUEUE + 1, "{unread_events} events queued past a queue of {QUEUE}");

    // Two reconnects: one that history covers, one with an id the hub never issued.
    let mut replayed = open_stream(demo.addr(), Some(&ids[PUBLISHES - 3]));
    assert_eq!(replayed.read_frames(2).len(), 2);
    let unknown = EventId::new().to_string();
    let mut gapped = open_stream(demo.addr(), Some(&unknown));
    assert!(gapped.read_frames(1)[0].contains(ssehub::sse::GAP_EVENT));

    let samples = scrape(demo.addr());
    let memory = ("backend", "memory");
    assert_eq!(
        value(&samples, "ssehub_events_published_total", &[memory, ("audience", "user")]),
        Some(PUBLISHES as f64)
    );
    assert_eq!(
        value(&samples, "ssehub_events_delivered_total", &[memory]),
        Some((PUBLISHES * STREAMS + unread_events) as f64)
    );
    assert_eq!(value(&samples, "ssehub_subscribers_lagged_total", &[memory]), Some(1.0));
    // The live streams and the two reconnected ones; the lagged subscription is gone.
    assert_eq!(value(&samples, "ssehub_subscriptions_open", &[memory]), Some((STREAMS + 2) as f64));
    let replays = "ssehub_replay_duration_seconds_count";
    assert_eq!(value(&samples, replays, &[memory, ("status", "complete")]), Some(1.0));
    assert_eq!(value(&samples, replays, &[memory, ("status", "unknown_id")]), Some(1.0));
    assert_eq!(value(&samples, "ssehub_gaps_signalled_total", &[memory, ("at", "replay")]), Some(1.0));
    assert_eq!(value(&samples, "ssehub_gaps_signalled_total", &[memory, ("at", "live")]), None);
    assert_eq!(value(&samples, "ssehub_publish_refused_total", &[memory, ("reason", "closed")]), None);
    assert_eq!(value(&samples, "ssehub_online_users", &[memory]), Some(1.0));
    assert_eq!(value(&samples, "ssehub_disconnects_total", &[("reason", "lag")]), Some(1.0));

    // Over Alice's cap: 429, counted as a `limit` disconnect.
    let (head, body) = call(demo.addr(), "GET", &format!("/events?user={}", server::USERS[0].id), &[], "");
    assert_eq!(head.status, 429, "{body}");
    assert_eq!(value(&scrape(demo.addr()), "ssehub_disconnects_total", &[("reason", "limit")]), Some(1.0));

    // Disconnecting Alice ends her streams (`revoked`) and she is offline; each client sees the end.
    block_on(hub.disconnect(server::USERS[0].id)).unwrap();
    for stream in streams.iter_mut().chain([&mut replayed, &mut gapped]) {
        let frame = stream.read_frames(1).remove(0);
        assert!(frame.contains(ssehub::sse::REVOKED_COMMENT), "{frame}");
    }
    let samples = scrape(demo.addr());
    assert_eq!(
        value(&samples, "ssehub_disconnects_total", &[("reason", "revoked")]),
        Some((STREAMS + 2) as f64)
    );
    assert_eq!(value(&samples, "ssehub_online_users", &[memory]), Some(0.0));
    let mut streams: Vec<Client> = (0..STREAMS).map(|_| open_stream(demo.addr(), None)).collect();

    // A closed hub refuses the next publish, and every subscription closes.
    hub.close();
    let (status, _) = publish(demo.addr(), PUBLISHES);
    assert_eq!(status, 503);
    let samples = scrape(demo.addr());
    assert_eq!(value(&samples, "ssehub_publish_refused_total", &[memory, ("reason", "closed")]), Some(1.0));
    assert_eq!(
        value(&samples, "ssehub_events_published_total", &[memory, ("audience", "user")]),
        Some(PUBLISHES as f64)
    );
    assert_eq!(value(&samples, "ssehub_subscriptions_open", &[memory]), Some(0.0));
    assert_eq!(value(&samples, "ssehub_online_users", &[memory]), Some(0.0));
    // Each open stream ended on the closed hub: `shutdown`, counted as the body wrote its end.
    for stream in &mut streams {
        assert!(stream.read_frames(1)[0].contains("closing: server shutting down"));
    }
    wait_until(Duration::from_secs(30), "the streams' shutdown counted", || {
        value(&scrape(demo.addr()), "ssehub_disconnects_total", &[("reason", "shutdown")])
            == Some(STREAMS as f64)
    });
    drop((streams, replayed, gapped));
}

/// Publishes events `range` and reads each on every stream before the next.
fn publish_and_read(
    addr: std::net::SocketAddr,
    range: std::ops::Range<usize>,
    streams: &mut [Client],
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in range {
        let (status, id) = publish(addr, n);
        assert_eq!(status, 200, "{id}");
        ids.push(id);
        for stream in streams.iter_mut() {
            assert!(stream.read_frames(1)[0].contains(&format!("\"n\":{n}")));
        }
    }
    ids
}

#[cfg(feature = "fred")]
#[test]
fn redis_metrics_count_reconnects_recoveries_live_gaps_and_refusals() {
    use demo_process::DemoProcess;
    use redis_server::RedisServer;

    let redis = RedisServer::start();
    let demo =
        DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &["--redis", &redis.url(), "--generator-ms", "0"]);
    let mut streams: Vec<Client> = (0..STREAMS).map(|_| open_stream(demo.addr(), None)).collect();
    let before = PUBLISHES / 2;
    let ids = publish_and_read(demo.addr(), 0..before, &mut streams);

    // Redis drops the hub's subscriber connection: fred reconnects, the hub recovers from the streams.
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.as_int(), Some(1), "{killed}");
    let count = |samples: &[Sample], name: &str| value(samples, name, &[]).unwrap_or(0.0);
    wait_until(std::time::Duration::from_secs(30), "the reconnect and its recovery", || {
        let samples = scrape(demo.addr());
        count(&samples, "ssehub_redis_reconnects_total") >= 1.0
            && count(&samples, "ssehub_redis_recoveries_total") >= 1.0
    });
    publish_and_read(demo.addr(), before..PUBLISHES, &mut streams);
    let mut replayed = open_stream(demo.addr(), Some(&ids[before - 2]));
    assert!(replayed.read_frames(1)[0].contains(&ids[before - 1]));

    let samples = scrape(demo.addr());
    let redis_backend = ("backend", "redis");
    assert_eq!(count(&samples, "ssehub_redis_reconnects_total"), 1.0);
    assert_eq!(count(&samples, "ssehub_redis_recoveries_total"), 1.0);
    // Nothing was published while the connection was down: the recovery found nothing to read back.
    assert_eq!(count(&samples, "ssehub_redis_recovered_events_total"), 0.0);
    assert_eq!(
        value(&samples, "ssehub_events_published_total", &[redis_backend, ("audience", "user")]),
        Some(PUBLISHES as f64)
    );
    assert_eq!(
        value(&samples, "ssehub_events_delivered_total", &[redis_backend]),
        Some((PUBLISHES * STREAMS) as f64)
    );
    assert_eq!(value(&samples, "ssehub_subscriptions_open", &[redis_backend]), Some((STREAMS + 1) as f64));
    assert_eq!(
        value(&samples, "ssehub_replay_duration_seconds_count", &[redis_backend, ("status", "complete")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "ssehub_gaps_signalled_total", &[redis_backend, ("at", "live")]), None);
    assert_eq!(value(&samples, "ssehub_subscribers_lagged_total", &[redis_backend]), None);
    drop(replayed);

    // An event another writer stored in Alice's stream without publishing it: only a recovery can
    // deliver it. The next reconnect's recovery reads it back and every stream gets it.
    let alice_stream = format!("sse:stream:user:{}", server::USERS[0].id);
    let stored = EventId::new();
    let envelope = format!(
        r#"{{"event_id":"{stored}","event_type":"demo.stored","user_id":"{}","category":"ai","data":{{"stored":1}},"occurred_at":"2026-01-01T00:00:00Z"}}"#,
        server::USERS[0].id
    );
    assert!(!redis.command(&["XADD", &alice_stream, "*", "event", &envelope]).is_error());
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).as_int(), Some(1));
    for stream in &mut streams {
        assert!(stream.read_frames(1)[0].contains(&stored.to_string()), "the stored event, recovered");
    }
    // The counters move as the recovery ends, beside the delivery the streams saw: waited for.
    wait_until(std::time::Duration::from_secs(30), "the second recovery's counts", || {
        let samples = scrape(demo.addr());
        count(&samples, "ssehub_redis_recoveries_total") == 2.0
            && count(&samples, "ssehub_redis_recovered_events_total") == 1.0
    });

    // Another stored event, then the stream trimmed empty: the next recovery cannot read it, so
    // every open stream of Alice's gets the gap signal, live.
    assert!(
        !redis
            .command(&[
                "XADD",
                &alice_stream,
                "*",
                "event",
                &envelope.replace(&stored.to_string(), &EventId::new().to_string())
            ])
            .is_error()
    );
    assert!(!redis.command(&["XTRIM", &alice_stream, "MAXLEN", "0"]).is_error());
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).as_int(), Some(1));
    for stream in &mut streams {
        let frame = stream.read_frames(1).remove(0);
        assert!(frame.contains(&format!("event: {}\n", ssehub::sse::GAP_EVENT)), "a live gap: {frame}");
    }
    wait_until(std::time::Duration::from_secs(30), "a live gap counted for each stream", || {
        let samples = scrape(demo.addr());
        value(&samples, "ssehub_gaps_signalled_total", &[redis_backend, ("at", "live")])
            == Some(STREAMS as f64)
    });

    // Redis gone: the next publish is refused by the backend.
    redis.kill();
    let (status, error) = publish(demo.addr(), PUBLISHES);
    assert_ne!(status, 200, "{error}");
    let samples = scrape(demo.addr());
    assert_eq!(
        value(&samples, "ssehub_publish_refused_total", &[redis_backend, ("reason", "backend")]),
        Some(1.0)
    );
    drop(streams);
}
