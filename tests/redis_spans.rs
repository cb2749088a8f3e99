//! The Redis hub's `tracing` spans: subscribe, replay, publish batch and recovery each open one, with their fields.
//!
//! One test in this binary: it installs the process's global `tracing`
//! subscriber (the hub's tasks run on threads of their own), a minimal one
//! that writes down every span opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use ssehub::fixture::ExampleCategory as C;
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, Category, CategorySet, Event, EventId, EventSource, Publisher, UserId};
use ssehub_harness::redis_server::RedisServer;
use ssehub_harness::wait::{eventually, within};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};

/// A span opened: its name and its fields as `name=value` text.
#[derive(Clone, Debug)]
struct Opened {
    name: &'static str,
    fields: String,
}

/// Writes down every span opened; ignores everything else.
#[derive(Default)]
struct SpanLog {
    next_id: AtomicU64,
    opened: Arc<Mutex<Vec<Opened>>>,
}

struct FieldText<'a>(&'a mut String);

impl Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for SpanLog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = String::new();
        span.record(&mut FieldText(&mut fields));
        self.opened.lock().unwrap().push(Opened { name: span.metadata().name(), fields });
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The `n`th test event for `user`.
fn event(user: UserId, n: usize) -> Event<C> {
    Event::new(Audience::User(user), "test.event", C::ALL[n % C::ALL.len()], format!("{{\"n\":{n}}}"))
        .unwrap()
}

#[test]
fn subscribe_replay_publish_batches_and_recovery_open_spans() {
    let log = SpanLog::default();
    let opened = Arc::clone(&log.opened);
    tracing::subscriber::set_global_default(log).expect("the only subscriber of this test binary");
    let spans = |name: &str| -> Vec<Opened> {
        opened.lock().unwrap().iter().filter(|span| span.name == name).cloned().collect()
    };

    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub = within(
            "connect",
            RedisHub::<C>::builder(&server.url())
                .unwrap()
                .key_layout(KeyLayout::standalone_with_prefix("spans").unwrap())
                .connect(),
        )
        .await
        .expect("connect");
        let user = UserId::from_uuid(*EventId::new().as_uuid());
        let mut subscription =
            within("subscribe", hub.subscribe(user, CategorySet::all())).await.expect("subscribe");
        let subscribes = spans("ssehub.subscribe");
        assert_eq!(subscribes.len(), 1, "{subscribes:?}");
        assert!(subscribes[0].fields.contains(&user.to_string()), "{subscribes:?}");

        let first = event(user, 0);
        within("publish", hub.publish(first.clone())).await.expect("publish");
        assert_eq!(
            within("the first event", subscription.next()).await.expect("an event").expect("no error").id(),
            first.id()
        );
        let batches = spans("ssehub.publish_batch");
        assert!(!batches.is_empty(), "no publish batch span");
        assert!(batches.iter().all(|span| span.fields.contains("events=")), "{batches:?}");

        within("replay", hub.missed_events(user, first.id(), CategorySet::all())).await.expect("replay");
        let replays = spans("ssehub.replay");
        assert_eq!(replays.len(), 1, "{replays:?}");
        assert!(replays[0].fields.contains(&first.id().to_string()), "{replays:?}");

        // Redis drops the subscriber connection: the hub reconnects and recovers from the streams.
        assert!(spans("ssehub.recovery").is_empty());
        server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        eventually("a recovery span", || !spans("ssehub.recovery").is_empty()).await;
        let second = event(user, 1);
        within("publish", hub.publish(second.clone())).await.expect("publish");
        assert_eq!(
            within("the event after the recovery", subscription.next())
                .await
                .expect("an event")
                .expect("no error")
                .id(),
            second.id()
        );
    });
}
