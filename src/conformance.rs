//! The backend conformance suite: one `pub async fn` per behaviour every backend must show.
//!
//! Every backend of this crate runs these checks in its tests, and a
//! third-party backend can run them too: implement [`HubFactory`] (how to make
//! a fresh, isolated hub from [`HubOptions`], and how many subscriptions it
//! has registered), then call [`run_all`] or the checks one by one from your
//! tests. Each check panics with a message naming what went wrong.
//!
//! The suite is runtime-neutral: it spawns no task and needs no particular
//! executor (its timeouts use `async-io`'s timer, which drives itself). Run it
//! under whichever runtime your backend needs. Waits are generous (seconds),
//! so a backend behind a network passes, and a broken one fails instead of
//! hanging. Users are fresh random ids for every check, and broadcasts the
//! check did not publish itself are ignored, so hubs that share a server with
//! other tests can run it side by side.
//!
//! Checks use [`ExampleCategory`] as their category type.
//!
//! # Examples
//!
//! A backend in a test of its own crate (here the memory backend, standing in
//! for yours):
//!
//! ```
//! use ssehub::conformance::{self, HubFactory, HubOptions};
//! use ssehub::fixture::ExampleCategory;
//!
//! # #[cfg(feature = "memory")]
//! # fn main() {
//! use ssehub::memory::MemoryHub;
//!
//! struct Factory;
//!
//! impl HubFactory for Factory {
//!     type Hub = MemoryHub<ExampleCategory>;
//!
//!     async fn create(&self, options: HubOptions) -> Self::Hub {
//!         let retention = ssehub::Retention::default().with_max_events(options.history_len as u64);
//!         MemoryHub::builder()
//!             .retention(options.retention.then_some(retention))
//!             .queue_capacity(options.queue_capacity)
//!             .build()
//!     }
//!
//!     async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
//!         hub.stats().open_subscriptions
//!     }
//! }
//!
//! // One check...
//! futures::executor::block_on(conformance::replay_merges_broadcasts_in_publish_order(&Factory));
//! // ...or all of them.
//! futures::executor::block_on(conformance::run_all(&Factory));
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures_lite::StreamExt;
use futures_lite::future;

use crate::fixture::ExampleCategory;
use crate::{
    Audience, Category, CategorySet, Error, Event, EventId, EventSource, Publisher, ReplayStatus, UserId,
    resume,
};

/// How long a check waits for one thing (an event, a count) before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a check needs of the hub it asks [`HubFactory::create`] for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubOptions {
    /// The most events retained per audience (each user, and the broadcasts).
    /// Trimming must be exact: a check publishes more and counts.
    pub history_len: usize,
    /// How many events may wait for one subscription before it lags.
    pub queue_capacity: usize,
    /// Whether events are retained for replay at all.
    pub retention: bool,
}

impl Default for HubOptions {
    /// 1000 events retained per audience, queues of 1024, retention on.
    fn default() -> Self {
        Self { history_len: 1000, queue_capacity: 1024, retention: true }
    }
}

impl HubOptions {
    /// These options with `history_len` retained events per audience.
    #[must_use]
    pub fn with_history_len(mut self, history_len: usize) -> Self {
        self.history_len = history_len;
        self
    }

    /// These options with queues of `queue_capacity` events.
    #[must_use]
    pub fn with_queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }

    /// These options with retention on or off.
    #[must_use]
    pub fn with_retention(mut self, retention: bool) -> Self {
        self.retention = retention;
        self
    }
}

/// Makes the hubs the checks run against.
pub trait HubFactory {
    /// The backend under test.
    type Hub: EventSource<ExampleCategory> + Publisher<ExampleCategory> + Clone + Send + Sync + 'static;

    /// A fresh hub configured by `options`, isolated from the hubs made
    /// before: none of their users' events or retained history reaches it.
    /// Panic if it cannot be made: the check fails with that message.
    fn create(&self, options: HubOptions) -> impl Future<Output = Self::Hub> + Send;

    /// How many subscriptions `hub` holds registered now (live or not yet
    /// cleaned up). Dropping or lagging must bring this back down; the checks
    /// wait up to [`WAIT`] for it to settle.
    fn active_subscriptions(&self, hub: &Self::Hub) -> impl Future<Output = usize> + Send;
}

/// Runs every check, one after the other.
pub async fn run_all<F: HubFactory>(factory: &F) {
    subscription_is_live_when_subscribe_returns(factory).await;
    subscriber_receives_own_events_only(factory).await;
    broadcasts_reach_every_subscriber(factory).await;
    category_filter_applies_to_live_and_replayed_events(factory).await;
    replay_after_retained_id_is_complete(factory).await;
    replay_merges_broadcasts_in_publish_order(factory).await;
    replay_after_trimmed_id_reports_truncated(factory).await;
    replay_after_unknown_id_reports_unknown_id(factory).await;
    replay_without_retention_reports_retention_disabled(factory).await;
    resume_without_last_event_id_is_live_only(factory).await;
    resume_after_truncated_history_signals_gap_first(factory).await;
    resume_delivers_every_event_exactly_once_under_concurrent_publishing(factory).await;
    lagged_subscriber_is_isolated_and_others_receive_everything(factory).await;
    dropping_a_subscription_unregisters_it(factory).await;
}

type C = ExampleCategory;

/// A user no other check or test uses: the bits of a fresh UUIDv7.
fn fresh_user() -> UserId {
    UserId::from_uuid(*EventId::new().as_uuid())
}

/// The `n`th test event for `audience`; categories rotate over the six.
fn make_event(audience: Audience, n: usize) -> Event<C> {
    let category = C::ALL[n % C::ALL.len()];
    make_event_in(audience, n, category)
}

fn make_event_in(audience: Audience, n: usize, category: C) -> Event<C> {
    Event::new(audience, "conformance.check", category, format!("{{\"n\":{n}}}")).expect("a valid event type")
}

async fn publish<H: Publisher<C>>(hub: &H, event: &Event<C>) {
    if let Err(error) = within("publish", hub.publish(event.clone())).await {
        panic!("publish of {} failed: {error}", event.id());
    }
}

async fn subscribe<H: EventSource<C>>(hub: &H, user: UserId, filter: CategorySet<C>) -> H::Subscription {
    match within("subscribe", hub.subscribe(user, filter)).await {
        Ok(subscription) => subscription,
        Err(error) => panic!("subscribe failed: {error}"),
    }
}

/// `future`'s output, or a panic naming `what` after [`WAIT`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    future::or(async { Some(future.await) }, async {
        async_io::Timer::after(WAIT).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// The next item of `stream`; panics if none comes within [`WAIT`].
async fn next_item<S>(stream: &mut S, what: &str) -> Option<Result<Event<C>, Error>>
where
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    within(what, stream.next()).await
}

/// Reads `stream` until the event `until` arrives; returns the events read
/// that this check published (`ours`), `until` included, in arrival order.
///
/// Broadcasts the check did not publish are skipped (another hub on a shared
/// server may send them); any other event, an error, or the end fails the check.
async fn read_until<S>(stream: &mut S, until: EventId, ours: &HashSet<EventId>, who: &str) -> Vec<Event<C>>
where
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    let mut received = Vec::new();
    loop {
        let what = format!("event {until} at {who}");
        match next_item(stream, &what).await {
            Some(Ok(event)) => {
                let id = event.id();
                if ours.contains(&id) {
                    received.push(event);
                    if id == until {
                        return received;
                    }
                } else if event.audience() != Audience::Broadcast {
                    panic!("{who} received an event it must never see: {event:?}");
                }
            }
            Some(Err(error)) => panic!("{who} got an error while waiting for {until}: {error}"),
            None => panic!("{who}'s stream ended while waiting for {until}"),
        }
    }
}

fn ids(events: &[Event<C>]) -> Vec<EventId> {
    events.iter().map(Event::id).collect()
}

/// Only the events this check published, in the order given.
fn only_ours(events: &[Event<C>], ours: &HashSet<EventId>) -> Vec<EventId> {
    events.iter().map(Event::id).filter(|id| ours.contains(id)).collect()
}

/// Waits until the hub holds `expected` subscriptions.
async fn expect_subscriptions<F: HubFactory>(factory: &F, hub: &F::Hub, expected: usize, when: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = factory.active_subscriptions(hub).await;
        if now == expected {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("{when}: the hub holds {now} subscriptions, expected {expected}");
        }
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
}

/// An event published right after `subscribe` returns reaches the subscription.
pub async fn subscription_is_live_when_subscribe_returns<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    for round in 0..20 {
        let user = fresh_user();
        let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
        let event = make_event(Audience::User(user), round);
        publish(&hub, &event).await;
        let ours = HashSet::from([event.id()]);
        let received = read_until(&mut subscription, event.id(), &ours, "a just-made subscription").await;
        assert_eq!(ids(&received), vec![event.id()]);
    }
}

/// A subscription yields its user's events and never another user's.
pub async fn subscriber_receives_own_events_only<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let mut alice_subscription = subscribe(&hub, alice, CategorySet::all()).await;
    let mut bob_subscription = subscribe(&hub, bob, CategorySet::all()).await;

    let (mut for_alice, mut for_bob) = (Vec::new(), Vec::new());
    for n in 0..20 {
        let (a, b) = (make_event(Audience::User(alice), n), make_event(Audience::User(bob), n));
        publish(&hub, &a).await;
        publish(&hub, &b).await;
        for_alice.push(a);
        for_bob.push(b);
    }
    // Each user's last event comes after every event of the other: anything
    // leaked would arrive before it.
    let bob_mark = make_event(Audience::User(bob), 20);
    let alice_last = make_event(Audience::User(alice), 21);
    let bob_last = make_event(Audience::User(bob), 22);
    for event in [&bob_mark, &alice_last, &bob_last] {
        publish(&hub, event).await;
    }
    for_bob.push(bob_mark);
    for_alice.push(alice_last.clone());
    for_bob.push(bob_last.clone());

    let ours: HashSet<EventId> = for_alice.iter().chain(&for_bob).map(Event::id).collect();
    let alice_got = read_until(&mut alice_subscription, alice_last.id(), &ours, "alice").await;
    let bob_got = read_until(&mut bob_subscription, bob_last.id(), &ours, "bob").await;
    assert_eq!(ids(&alice_got), ids(&for_alice), "alice must get exactly her events, in order");
    assert_eq!(ids(&bob_got), ids(&for_bob), "bob must get exactly his events, in order");

    // Replay keeps users apart too.
    let replay = within("missed_events", hub.missed_events(alice, for_alice[0].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::Complete);
    assert_eq!(only_ours(&replay.events, &ours), ids(&for_alice[1..]));
    assert!(
        replay
            .events
            .iter()
            .all(|e| e.audience() == Audience::User(alice) || e.audience() == Audience::Broadcast),
        "alice's replay holds another user's event"
    );
}

/// Every subscription of every user receives every broadcast, in order.
pub async fn broadcasts_reach_every_subscriber<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let users = [fresh_user(), fresh_user(), fresh_user()];
    let mut subscriptions = Vec::new();
    for user in users {
        for _ in 0..2 {
            subscriptions.push((user, subscribe(&hub, user, CategorySet::all()).await));
        }
    }
    let own = make_event(Audience::User(users[0]), 0);
    publish(&hub, &own).await;
    let broadcasts: Vec<Event<C>> = (1..=6).map(|n| make_event(Audience::Broadcast, n)).collect();
    for event in &broadcasts {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = broadcasts.iter().chain([&own]).map(Event::id).collect();
    let last = broadcasts[broadcasts.len() - 1].id();
    for (user, subscription) in &mut subscriptions {
        let received = read_until(subscription, last, &ours, "a broadcast subscriber").await;
        let mut expected = ids(&broadcasts);
        if *user == users[0] {
            expected.insert(0, own.id());
        }
        assert_eq!(ids(&received), expected, "every subscriber gets every broadcast, in publish order");
    }
}

/// A category filter lets through only its categories, for own events and
/// broadcasts, live and replayed.
pub async fn category_filter_applies_to_live_and_replayed_events<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let filter = CategorySet::only(C::Ai).with(C::Security);
    let mut filtered = subscribe(&hub, user, filter).await;
    let mut unfiltered = subscribe(&hub, user, CategorySet::all()).await;

    let first = make_event_in(Audience::User(user), 0, C::Security);
    publish(&hub, &first).await;
    let mut published = vec![first.clone()];
    for (n, category) in C::ALL.iter().enumerate() {
        for audience in [Audience::User(user), Audience::Broadcast] {
            let event = make_event_in(audience, n + 1, *category);
            publish(&hub, &event).await;
            published.push(event);
        }
    }
    let last = make_event_in(Audience::User(user), 99, C::Ai);
    publish(&hub, &last).await;
    published.push(last.clone());

    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let wanted: Vec<EventId> =
        published.iter().filter(|e| filter.contains(e.category())).map(Event::id).collect();
    let got = read_until(&mut filtered, last.id(), &ours, "a filtered subscriber").await;
    assert_eq!(ids(&got), wanted, "the filtered subscription gets exactly its categories, in order");
    let got = read_until(&mut unfiltered, last.id(), &ours, "an unfiltered subscriber").await;
    assert_eq!(ids(&got), ids(&published), "the unfiltered subscription gets everything");

    let replay =
        within("missed_events", hub.missed_events(user, first.id(), filter)).await.expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::Complete);
    assert!(replay.events.iter().all(|e| filter.contains(e.category())), "replay ignores the filter");
    assert_eq!(only_ours(&replay.events, &ours), wanted[1..].to_vec());
}

/// Replay after a retained id returns everything after it, in publish order, as complete.
pub async fn replay_after_retained_id_is_complete<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..10).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    for after in [0, 4, 9] {
        let replay =
            within("missed_events", hub.missed_events(user, published[after].id(), CategorySet::all()))
                .await
                .expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete, "replay after event #{after}");
        assert_eq!(
            only_ours(&replay.events, &ours),
            ids(&published[after + 1..]),
            "replay after event #{after}"
        );
    }
}

/// Replay merges the user's events and the broadcasts in publish order, from
/// a user event's id and from a broadcast's id alike.
pub async fn replay_merges_broadcasts_in_publish_order<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (user, other) = (fresh_user(), fresh_user());
    let plan = [
        Audience::User(user),
        Audience::Broadcast,
        Audience::User(other),
        Audience::User(user),
        Audience::User(user),
        Audience::Broadcast,
        Audience::User(other),
        Audience::Broadcast,
        Audience::User(user),
        Audience::Broadcast,
    ];
    let published: Vec<Event<C>> = plan.iter().enumerate().map(|(n, a)| make_event(*a, n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let visible: Vec<&Event<C>> = published.iter().filter(|e| e.audience().includes(user)).collect();
    for (position, after) in visible.iter().enumerate() {
        let replay = within("missed_events", hub.missed_events(user, after.id(), CategorySet::all()))
            .await
            .expect("missed_events");
        let expected: Vec<EventId> = visible[position + 1..].iter().map(|e| e.id()).collect();
        let kind = if after.audience() == Audience::Broadcast { "a broadcast" } else { "an own event" };
        assert_eq!(replay.status, ReplayStatus::Complete, "replay after {kind} (#{position})");
        assert_eq!(only_ours(&replay.events, &ours), expected, "replay after {kind} (#{position})");
    }
}

/// Replay after an id that history no longer holds reports truncated, with
/// what is still retained.
pub async fn replay_after_trimmed_id_reports_truncated<F: HubFactory>(factory: &F) {
    const KEPT: usize = 5;
    let hub = factory.create(HubOptions::default().with_history_len(KEPT)).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..4 * KEPT).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let replay = within("missed_events", hub.missed_events(user, published[1].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::Truncated, "replay after a trimmed id");
    assert_eq!(
        only_ours(&replay.events, &ours),
        ids(&published[published.len() - KEPT..]),
        "a truncated replay holds the retained events: the last {KEPT}"
    );

    // A retained id still replays completely.
    let retained = &published[published.len() - 3];
    let replay = within("missed_events", hub.missed_events(user, retained.id(), CategorySet::all()))
        .await
        .expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::Complete, "replay after a retained id");
    assert_eq!(only_ours(&replay.events, &ours), ids(&published[published.len() - 2..]));

    // Broadcasts are trimmed and reported the same way.
    let broadcasts: Vec<Event<C>> = (0..3 * KEPT).map(|n| make_event(Audience::Broadcast, n)).collect();
    for event in &broadcasts {
        publish(&hub, event).await;
    }
    let replay = within("missed_events", hub.missed_events(user, broadcasts[0].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::Truncated, "replay after a trimmed broadcast");
}

/// Replay after an id the hub never published reports unknown id, with every retained event.
pub async fn replay_after_unknown_id_reports_unknown_id<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..3).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let never_published = EventId::new();
    // A foreign id of another UUID version (v4 layout).
    let foreign = EventId::from_uuid(uuid::Uuid::from_u128(0x8d6e_1f4a_2b3c_4d5e_9f60_7a8b_9c0d_1e2f));
    for unknown in [never_published, foreign] {
        let replay = within("missed_events", hub.missed_events(user, unknown, CategorySet::all()))
            .await
            .expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::UnknownId, "replay after {unknown}");
        assert_eq!(
            only_ours(&replay.events, &ours),
            ids(&published),
            "an unknown id replays everything retained"
        );
    }
}

/// Without retention, replay reports it and returns nothing; live delivery works.
pub async fn replay_without_retention_reports_retention_disabled<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default().with_retention(false)).await;
    let user = fresh_user();
    let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
    let published: Vec<Event<C>> = (0..3).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let got = read_until(&mut subscription, published[2].id(), &ours, "a subscriber without retention").await;
    assert_eq!(ids(&got), ids(&published));
    let replay = within("missed_events", hub.missed_events(user, published[0].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::RetentionDisabled);
    assert!(replay.events.is_empty(), "a hub without retention replays nothing");
}

/// `resume` without a Last-Event-ID replays nothing and yields live events.
pub async fn resume_without_last_event_id_is_live_only<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let before = make_event(Audience::User(user), 0);
    publish(&hub, &before).await;
    let mut resumed = within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume");
    assert_eq!(resumed.replay_status(), None);
    let after = make_event(Audience::User(user), 1);
    publish(&hub, &after).await;
    let ours = HashSet::from([before.id(), after.id()]);
    let got = read_until(&mut resumed, after.id(), &ours, "a first connection").await;
    assert_eq!(ids(&got), vec![after.id()], "a first connection gets live events only");
}

/// When history does not cover the gap, `resume` yields `Error::Gap` first,
/// then what replay had, then live events.
pub async fn resume_after_truncated_history_signals_gap_first<F: HubFactory>(factory: &F) {
    const KEPT: usize = 5;
    let hub = factory.create(HubOptions::default().with_history_len(KEPT)).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..3 * KEPT).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let last_seen = published[0].id();
    let mut resumed =
        within("resume", resume(&hub, user, Some(last_seen), CategorySet::all())).await.expect("resume");
    assert_eq!(resumed.replay_status(), Some(ReplayStatus::Truncated));
    match next_item(&mut resumed, "the gap signal").await {
        Some(Err(Error::Gap { last_delivered })) => {
            assert_eq!(last_delivered, Some(last_seen), "the gap names the client's Last-Event-ID")
        }
        other => panic!("a resume over trimmed history must start with Error::Gap, got {other:?}"),
    }
    let live = make_event(Audience::User(user), 100);
    publish(&hub, &live).await;
    let ours: HashSet<EventId> = published.iter().chain([&live]).map(Event::id).collect();
    let got = read_until(&mut resumed, live.id(), &ours, "a resumed subscriber").await;
    let mut expected = ids(&published[published.len() - KEPT..]);
    expected.push(live.id());
    assert_eq!(ids(&got), expected, "after the gap: the retained events, then live ones");
}

/// Disconnecting at arbitrary points and resuming with the last id received
/// while events are being published yields every event exactly once, in order.
pub async fn resume_delivers_every_event_exactly_once_under_concurrent_publishing<F: HubFactory>(
    factory: &F,
) {
    const EVENTS: usize = 300;
    let hub = factory.create(HubOptions::default().with_history_len(2 * EVENTS)).await;
    let (user, other) = (fresh_user(), fresh_user());
    let first = make_event(Audience::User(user), 0);
    publish(&hub, &first).await;

    // The plan is fixed before anything runs, so both sides know it.
    let mut rng = Lcg(0x5eed_cafe);
    let published: Vec<Event<C>> = (1..=EVENTS)
        .map(|n| {
            let audience = match rng.below(5) {
                0 => Audience::Broadcast,
                1 => Audience::User(other),
                _ => Audience::User(user),
            };
            make_event(audience, n)
        })
        .collect();
    let last = make_event(Audience::User(user), EVENTS + 1);
    let expected: Vec<EventId> =
        published.iter().chain([&last]).filter(|e| e.audience().includes(user)).map(Event::id).collect();
    let ours: HashSet<EventId> = published.iter().chain([&first, &last]).map(Event::id).collect();

    let publisher = async {
        for event in published.iter().chain([&last]) {
            publish(&hub, event).await;
            future::yield_now().await;
        }
    };
    let client = async {
        let mut received: Vec<EventId> = Vec::new();
        // The last event of ours received, and the last of any (a foreign
        // broadcast may come after ours): Lagged must name the latter.
        let mut last_id = first.id();
        let mut last_any = first.id();
        let mut reconnects = 0;
        'connection: loop {
            // Let the publisher run between subscribing and replaying, so
            // the overlap of live and replayed events is exercised even on a
            // backend that answers both at once.
            let source =
                YieldBeforeReplay { hub: &hub, yields: rng_for_client(reconnects).below(4) as usize };
            let mut stream = within("resume", resume(&source, user, Some(last_id), CategorySet::all()))
                .await
                .unwrap_or_else(|e| panic!("resume failed: {e}"));
            assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete), "history covers every gap here");
            let stay_for = 1 + rng_for_client(reconnects).below(40);
            let mut taken = 0;
            loop {
                match next_item(&mut stream, "the next event of a resumed stream").await {
                    Some(Ok(event)) => {
                        let id = event.id();
                        last_any = id;
                        if !ours.contains(&id) {
                            assert_eq!(event.audience(), Audience::Broadcast, "a foreign event: {event:?}");
                            continue;
                        }
                        assert!(event.audience().includes(user), "another user's event: {event:?}");
                        received.push(id);
                        last_id = id;
                        if id == last.id() {
                            return (received, reconnects);
                        }
                        taken += 1;
                        if taken == stay_for {
                            reconnects += 1;
                            continue 'connection;
                        }
                    }
                    Some(Err(Error::Lagged { last_delivered })) => {
                        assert_eq!(last_delivered, Some(last_any), "Lagged names the last event received");
                        reconnects += 1;
                        continue 'connection;
                    }
                    Some(Err(error)) => panic!("resumed stream failed: {error}"),
                    None => panic!("resumed stream ended"),
                }
            }
        }
    };
    let ((), (received, reconnects)) = future::zip(publisher, client).await;
    assert!(reconnects > 0, "the client reconnected");
    if received != expected {
        let unique: HashSet<&EventId> = received.iter().collect();
        panic!(
            "after {reconnects} reconnects the client got {} events ({} distinct), expected {} exactly once in order",
            received.len(),
            unique.len(),
            expected.len()
        );
    }
}

/// A subscriber that stops reading gets `Error::Lagged` with the last id it
/// received and its stream ends; the others and the publisher do not wait
/// for it; resuming from that id recovers the rest.
pub async fn lagged_subscriber_is_isolated_and_others_receive_everything<F: HubFactory>(factory: &F) {
    const CAPACITY: usize = 8;
    const EVENTS: usize = 10 * CAPACITY;
    let hub = factory.create(HubOptions::default().with_queue_capacity(CAPACITY)).await;
    let baseline = factory.active_subscriptions(&hub).await;
    let (user, other) = (fresh_user(), fresh_user());
    let mut stalled = subscribe(&hub, user, CategorySet::all()).await;
    let mut fast_same_user = subscribe(&hub, user, CategorySet::all()).await;
    let mut fast_other_user = subscribe(&hub, other, CategorySet::all()).await;

    let published: Vec<Event<C>> = (0..EVENTS)
        .map(|n| make_event(if n % 4 == 3 { Audience::Broadcast } else { Audience::User(user) }, n))
        .collect();
    let last = published[EVENTS - 1].id();
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let for_user = ids(&published);
    let for_other: Vec<EventId> =
        published.iter().filter(|e| e.audience() == Audience::Broadcast).map(Event::id).collect();

    let publisher = async {
        for event in &published {
            publish(&hub, event).await;
            future::yield_now().await;
        }
    };
    let readers = future::zip(
        read_until(&mut fast_same_user, last, &ours, "a fast subscriber"),
        read_until(&mut fast_other_user, last, &ours, "a fast subscriber of another user"),
    );
    let ((), (same_user_got, other_user_got)) = future::zip(publisher, readers).await;
    assert_eq!(ids(&same_user_got), for_user, "a fast subscriber beside a stalled one gets everything");
    assert_eq!(ids(&other_user_got), for_other, "a fast subscriber of another user gets every broadcast");

    let (mut stalled_got, mut stalled_last) = (Vec::new(), None);
    let lagged_at = loop {
        match next_item(&mut stalled, "the stalled subscriber's events and Lagged").await {
            Some(Ok(event)) => {
                stalled_last = Some(event.id());
                if ours.contains(&event.id()) {
                    stalled_got.push(event.id());
                }
            }
            Some(Err(Error::Lagged { last_delivered })) => break last_delivered,
            Some(Err(error)) => panic!("the stalled subscriber got {error} instead of Error::Lagged"),
            None => panic!("the stalled subscriber's stream ended without Error::Lagged"),
        }
    };
    assert!(
        stalled_got.len() < EVENTS,
        "a subscriber {EVENTS} events behind with a queue of {CAPACITY} lags"
    );
    assert_eq!(stalled_got[..], for_user[..stalled_got.len()], "what the stalled subscriber got is in order");
    assert_eq!(lagged_at, stalled_last, "Lagged names the last event received");
    assert!(
        next_item(&mut stalled, "the end of a lagged stream").await.is_none(),
        "a lagged stream ends after Error::Lagged"
    );
    drop(stalled);

    // The lagged client reconnects with the id Lagged named and loses nothing.
    let mut resumed = within("resume", resume(&hub, user, lagged_at, CategorySet::all()))
        .await
        .expect("resume after lagging");
    if lagged_at.is_some() {
        assert_eq!(resumed.replay_status(), Some(ReplayStatus::Complete));
        let rest = read_until(&mut resumed, last, &ours, "the resumed lagged subscriber").await;
        assert_eq!(ids(&rest), for_user[stalled_got.len()..], "resuming after Lagged recovers the rest");
    }
    drop(resumed);
    drop(fast_same_user);
    drop(fast_other_user);
    expect_subscriptions(factory, &hub, baseline, "after the lagged and the fast subscriptions are gone")
        .await;
}

/// Dropping a subscription unregisters it; the hub goes back to holding none.
pub async fn dropping_a_subscription_unregisters_it<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let baseline = factory.active_subscriptions(&hub).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let first = subscribe(&hub, alice, CategorySet::all()).await;
    let second = subscribe(&hub, alice, CategorySet::only(C::Ai)).await;
    let mut third = subscribe(&hub, bob, CategorySet::all()).await;
    expect_subscriptions(factory, &hub, baseline + 3, "with three subscriptions").await;

    drop(first);
    expect_subscriptions(factory, &hub, baseline + 2, "after dropping one of three").await;
    drop(second);
    expect_subscriptions(factory, &hub, baseline + 1, "after dropping two of three").await;

    // The remaining one still works, and publishing to a user with no
    // subscription left is fine.
    for audience in [Audience::User(alice), Audience::Broadcast] {
        publish(&hub, &make_event(audience, 0)).await;
    }
    let event = make_event(Audience::User(bob), 1);
    publish(&hub, &event).await;
    let ours = HashSet::from([event.id()]);
    read_until(&mut third, event.id(), &ours, "the remaining subscriber").await;

    drop(third);
    expect_subscriptions(factory, &hub, baseline, "after dropping all").await;
}

/// A small deterministic generator: the checks must be reproducible.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn rng_for_client(reconnects: u64) -> Lcg {
    let mut rng = Lcg(0xc1_1e47 ^ reconnects.wrapping_mul(0x9e37_79b9));
    rng.below(2);
    rng
}

/// A hub whose `missed_events` first lets other futures run a few turns.
struct YieldBeforeReplay<'a, H> {
    hub: &'a H,
    yields: usize,
}

impl<H: EventSource<C>> EventSource<C> for YieldBeforeReplay<'_, H> {
    type Subscription = H::Subscription;

    fn subscribe(
        &self,
        user: UserId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send {
        self.hub.subscribe(user, filter)
    }

    async fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> Result<crate::Replay<C>, Error> {
        for _ in 0..self.yields {
            future::yield_now().await;
        }
        self.hub.missed_events(user, last_event_id, filter).await
    }
}
