//! The demo's `GET /metrics` (Prometheus text) against what the test did: publishes, open streams, a lagged subscriber, replays, a refused publish.
//!
//! One test in this binary: the metrics recorder is global to the process, so
//! every figure scraped is this test's own.

#[allow(dead_code)]
#[path = "../examples/demo/server.rs"]
mod server;

#[path = "support/http_client.rs"]
mod http_client;

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

fn scrape(demo: &server::RunningDemo) -> Vec<Sample> {
    let (head, body) = call(demo.addr(), "GET", "/metrics", &[], "");
    assert_eq!(head.status, 200, "{body}");
    assert!(head.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    // Every metric is described: the exporter writes its HELP line.
    for name in [ssehub::metrics::EVENTS_PUBLISHED, ssehub::metrics::EVENTS_DELIVERED] {
        assert!(body.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{body}");
    }
    // No label carries a user id.
    let alice = server::USERS[0].id.to_string();
    assert!(!body.contains(&alice), "a user id in the metrics:\n{body}");
    parse(&body)
}

/// Opens `/events` for Alice (with a Last-Event-ID, if given) and reads up to the `retry` line.
fn open_stream(demo: &server::RunningDemo, last_event_id: Option<&str>) -> Client {
    let mut client = Client::connect(demo.addr());
    let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("Last-Event-ID", id)).into_iter().collect();
    let target = format!("/events?user={}", server::USERS[0].id);
    assert_eq!(client.send("GET", &target, &headers, "").status, 200);
    assert!(client.read_chunk().unwrap().starts_with("retry:"));
    client
}

/// Publishes event `n` to Alice through `POST /publish`; returns its id.
fn publish(demo: &server::RunningDemo, n: usize) -> (u16, String) {
    let body = format!(r#"{{"user":"{}","category":"ai","data":{{"n":{n}}}}}"#, server::USERS[0].id);
    let (head, response) = call(demo.addr(), "POST", "/publish", &[], &body);
    if head.status != 200 {
        return (head.status, response);
    }
    let reply: Value = serde_json::from_str(&response).unwrap();
    (head.status, reply["id"].as_str().unwrap().to_owned())
}

#[test]
fn metrics_count_what_the_demo_did() {
    let hub = MemoryHub::<C>::builder().queue_capacity(QUEUE).build();
    let options = server::DemoOptions {
        sse: SseOptions::new().heartbeat(Duration::from_secs(60)),
        generator_interval: None,
    };
    let demo = server::start("127.0.0.1:0".parse().unwrap(), DynHub::new(hub.clone()), options).unwrap();

    let mut streams: Vec<Client> = (0..STREAMS).map(|_| open_stream(&demo, None)).collect();
    // A subscription nobody reads: it lags at the event after QUEUE.
    let mut unread = block_on(hub.subscribe(server::USERS[0].id, CategorySet::all())).unwrap();

    let mut ids = Vec::new();
    for n in 0..PUBLISHES {
        let (status, id) = publish(&demo, n);
        assert_eq!(status, 200, "{id}");
        ids.push(id);
        // Each stream reads each event before the next is published, so none of them lags.
        for stream in &mut streams {
            assert!(stream.read_frames(1)[0].contains(&format!("\"n\":{n}")));
        }
    }
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
    let mut replayed = open_stream(&demo, Some(&ids[PUBLISHES - 3]));
    assert_eq!(replayed.read_frames(2).len(), 2);
    let unknown = EventId::new().to_string();
    let mut gapped = open_stream(&demo, Some(&unknown));
    assert!(gapped.read_frames(1)[0].contains(ssehub::sse::GAP_EVENT));

    let samples = scrape(&demo);
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

    // A closed hub refuses the next publish, and every subscription closes.
    hub.close();
    let (status, _) = publish(&demo, PUBLISHES);
    assert_eq!(status, 503);
    let samples = scrape(&demo);
    assert_eq!(value(&samples, "ssehub_publish_refused_total", &[memory, ("reason", "closed")]), Some(1.0));
    assert_eq!(
        value(&samples, "ssehub_events_published_total", &[memory, ("audience", "user")]),
        Some(PUBLISHES as f64)
    );
    assert_eq!(value(&samples, "ssehub_subscriptions_open", &[memory]), Some(0.0));
    drop((streams, replayed, gapped));
}
