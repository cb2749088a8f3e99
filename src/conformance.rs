//! The backend conformance suite: one `pub async fn` per rule every backend must keep.
//!
//! Every backend of this crate runs these checks in its tests, and a
//! third-party backend can run them too: implement [`HubFactory`] (how to make
//! a fresh, isolated hub from [`HubOptions`], how to close one, and how many
//! subscriptions it has registered), then generate one test per check with
//! [`conformance_tests!`](crate::conformance_tests), or call [`run_all`] or the
//! checks one by one from your tests.
//!
//! Each check's doc comment states its rule. A check that finds the rule
//! broken panics with a message that starts with `rule: ` and the rule, then
//! says what differed: the events missing, unexpected or repeated, and the
//! first divergence, field by field. Events are compared whole: id, audience,
//! event type, category, data (byte for byte) and `occurred_at` (to the
//! microsecond: [`Event::occurred_at`] promises microsecond precision or
//! better, so a backend may drop the nanoseconds).
//!
//! The suite is runtime-neutral: it spawns no task and needs no particular
//! executor (its timeouts use `async-io`'s timer, which drives itself). Run it
//! under whichever runtime your backend needs. Waits are generous (seconds),
//! so a backend behind a network passes, and a broken one fails instead of
//! hanging. No assertion depends on timing. Users are fresh random ids for
//! every check, and broadcasts the check did not publish itself are ignored,
//! so hubs that share a server with other tests can run it side by side.
//! Randomized checks use fixed seeds: a failure repeats.
//!
//! Checks use [`ExampleCategory`] as their category type.
//!
//! This module's API is not semver-stable: checks are added (and made
//! stricter) as the contract grows, in minor versions too. Pin the version a
//! backend was checked against.
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
//!         // The factory keeps no clone: dropping the check's handle must close the hub.
//!         let retention = ssehub::Retention::default().with_max_events(options.history_len as u64);
//!         MemoryHub::builder()
//!             .retention(options.retention.then_some(retention))
//!             .queue_capacity(options.queue_capacity)
//!             .build()
//!     }
//!
//!     async fn close(&self, hub: &Self::Hub) {
//!         hub.close();
//!     }
//!
//!     async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
//!         hub.stats().open_subscriptions
//!     }
//! }
//!
//! // One check...
//! futures::executor::block_on(conformance::replay_merges_broadcasts_in_publish_order(&Factory));
//! // ...or one `#[test]` per check, named after it, in a test file:
//! // ssehub::conformance_tests!(Factory, |check| futures::executor::block_on(check));
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures_lite::StreamExt;
use futures_lite::future;

use crate::fixture::ExampleCategory;
use crate::sse::{GAP_EVENT, SseStream};
use crate::{
    Audience, Category, CategorySet, Error, Event, EventId, EventSource, Positions, Publisher, Replay,
    ReplayStatus, StreamKind, StreamReplay, UserId, resume,
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
    ///
    /// The factory must keep no handle of its own to the hub: the close checks
    /// drop every handle they hold and expect the hub to close.
    fn create(&self, options: HubOptions) -> impl Future<Output = Self::Hub> + Send;

    /// Closes `hub` explicitly (its shutdown method), while other handles to
    /// it are still held. Panic if the backend cannot be closed: the close
    /// check fails with that message.
    fn close(&self, hub: &Self::Hub) -> impl Future<Output = ()> + Send;

    /// How many subscriptions `hub` holds registered now (live or not yet
    /// cleaned up). Dropping or lagging must bring this back down; the checks
    /// wait up to [`WAIT`] for it to settle.
    fn active_subscriptions(&self, hub: &Self::Hub) -> impl Future<Output = usize> + Send;
}

/// Calls `$callback!` with `$args` and the name of every check, in [`run_all`]'s order.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each_check {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            ($($args)*)
            subscription_is_live_when_subscribe_returns,
            subscriber_receives_own_events_only,
            broadcasts_reach_every_subscriber,
            category_filter_applies_to_live_and_replayed_events,
            replay_after_retained_id_is_complete,
            replay_merges_broadcasts_in_publish_order,
            replay_after_trimmed_id_reports_truncated,
            replay_after_unknown_id_reports_unknown_id,
            replay_without_retention_reports_retention_disabled,
            resume_without_last_event_id_is_live_only,
            resume_after_truncated_history_signals_gap_first,
            resume_delivers_every_event_exactly_once_under_concurrent_publishing,
            resume_is_exactly_once_whatever_the_interleaving_of_streams,
            every_frames_cursor_resumes_exactly_after_that_frame,
            a_stale_position_in_one_stream_signals_a_gap_for_that_stream_only,
            a_cursor_made_for_another_user_is_refused,
            lagged_subscriber_is_isolated_and_others_receive_everything,
            dropping_a_subscription_unregisters_it,
            closing_a_hub_ends_every_subscription_with_closed,
            dropping_every_hub_handle_ends_every_subscription_with_closed,
            event_data_of_every_json_kind_is_delivered_and_replayed_unchanged,
            lag_happens_exactly_when_the_queue_overflows,
            generated_workloads_deliver_and_replay_exactly,
            resume_and_sse_stream_pass_mid_stream_gaps_and_backend_errors_on,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run_each {
    (($factory:expr) $($check:ident),* $(,)?) => {
        $( $crate::conformance::$check($factory).await; )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ((($factory:expr) ($run:expr)) $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let factory = $factory;
                let run = $run;
                run($crate::conformance::$check(&factory));
            }
        )*
    };
}

/// One `#[test] fn` per conformance check, named after the check, so a failure names its rule.
///
/// `$factory` is an expression making the [`HubFactory`](crate::conformance::HubFactory)
/// (evaluated once per test); `$run` is a closure that runs a check's future
/// to completion on the executor the backend needs. Invoke it at the top of a
/// test file, or inside a `mod` of its own.
///
/// ```ignore
/// ssehub::conformance_tests!(MyFactory, |check| futures::executor::block_on(check));
/// ssehub::conformance_tests!(MyFactory::new(), |check| smol::block_on(check));
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr, $run:expr $(,)?) => {
        $crate::__conformance_each_check!(__conformance_test_fns!(($factory)($run)));
    };
}

/// Runs every check, one after the other.
pub async fn run_all<F: HubFactory>(factory: &F) {
    crate::__conformance_each_check!(__conformance_run_each!(factory));
}

type C = ExampleCategory;

mod cursors;
pub use cursors::{
    a_cursor_made_for_another_user_is_refused,
    a_stale_position_in_one_stream_signals_a_gap_for_that_stream_only,
    every_frames_cursor_resumes_exactly_after_that_frame,
    resume_delivers_every_event_exactly_once_under_concurrent_publishing,
    resume_is_exactly_once_whatever_the_interleaving_of_streams,
};

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
    Event::new(audience, "conformance.check", category, format!("{{\"n\":{n}}}")).expect("a valid event")
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

async fn missed<H: EventSource<C>>(
    hub: &H,
    user: UserId,
    after: EventId,
    filter: CategorySet<C>,
) -> Replay<C> {
    within("missed_events", hub.missed_events(user, after, filter))
        .await
        .unwrap_or_else(|error| panic!("missed_events after {after} failed: {error}"))
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

/// Reads `stream` until every event of `until` has arrived (the last event
/// of each stream the check waits for: each stream comes in order, streams in
/// any interleaving); returns the events read that this check published
/// (`ours`), in arrival order.
///
/// Broadcasts the check did not publish are skipped (another hub on a shared
/// server may send them); any other event, an error, or the end fails the
/// check, naming `rule`.
async fn read_until<S>(
    stream: &mut S,
    until: &[EventId],
    ours: &HashSet<EventId>,
    who: &str,
    rule: &str,
) -> Vec<Event<C>>
where
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    let mut received = Vec::new();
    let mut pending: HashSet<EventId> = until.iter().copied().collect();
    while !pending.is_empty() {
        let what = format!(
            "events {} at {who} (rule: {rule}; received so far: {})",
            id_list_of(pending.iter()),
            id_list(&received)
        );
        match next_item(stream, &what).await {
            Some(Ok(event)) => {
                let id = event.id();
                if ours.contains(&id) {
                    pending.remove(&id);
                    received.push(event);
                } else if event.audience() != Audience::Broadcast {
                    panic!("rule: {rule}; {who} received an event it must never see: {event:?}");
                }
            }
            Some(Err(error)) => {
                panic!(
                    "rule: {rule}; {who} got an error while waiting for {}: {error}",
                    id_list_of(pending.iter())
                )
            }
            None => {
                panic!("rule: {rule}; {who}'s stream ended while waiting for {}", id_list_of(pending.iter()))
            }
        }
    }
    received
}

/// The last event of each stream in `events`: what a reader of them waits for.
fn lasts(events: &[Event<C>]) -> Vec<EventId> {
    StreamKind::ALL
        .into_iter()
        .filter_map(|kind| events.iter().rev().find(|e| StreamKind::of(e.audience()) == kind).map(Event::id))
        .collect()
}

fn id_list_of<'a>(ids: impl IntoIterator<Item = &'a EventId>) -> String {
    let ids: Vec<String> = ids.into_iter().map(ToString::to_string).collect();
    format!("[{}]", ids.join(", "))
}

/// Panics naming `rule` unless `got` and `expected` hold the same events
/// stream by stream, each in order: the order a subscription promises.
fn assert_each_stream(rule: &str, context: &str, got: &[Event<C>], expected: &[Event<C>]) {
    for kind in StreamKind::ALL {
        let of_kind = |events: &[Event<C>]| -> Vec<Event<C>> {
            events.iter().filter(|e| StreamKind::of(e.audience()) == kind).cloned().collect()
        };
        assert_events(rule, &format!("{context}, the {kind} stream"), &of_kind(got), &of_kind(expected));
    }
}

/// Only the events this check published, in the order given.
fn only_ours(events: &[Event<C>], ours: &HashSet<EventId>) -> Vec<Event<C>> {
    events.iter().filter(|e| ours.contains(&e.id())).cloned().collect()
}

fn id_list<'a>(events: impl IntoIterator<Item = &'a Event<C>>) -> String {
    let ids: Vec<String> = events.into_iter().map(|e| e.id().to_string()).collect();
    format!("[{}]", ids.join(", "))
}

fn describe(event: &Event<C>) -> String {
    let audience = match event.audience() {
        Audience::User(user) => format!("user {user}"),
        Audience::Broadcast => "broadcast".to_string(),
    };
    format!(
        "{} ({audience}, {}, {}, data {})",
        event.id(),
        event.event_type(),
        event.category().name(),
        short(event.data())
    )
}

/// Long data shortened for a message: its length and both ends.
fn short(text: &str) -> String {
    if text.len() <= 80 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(32).collect();
    let tail: String = text.chars().rev().take(32).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{head:?}...{tail:?} ({} bytes)", text.len())
}

/// The first field in which `got` is not the event `expected`, or `None` if it is the same event.
///
/// `occurred_at` counts to the microsecond: the precision [`Event::occurred_at`] promises.
fn field_difference(got: &Event<C>, expected: &Event<C>) -> Option<String> {
    if got.id() != expected.id() {
        return Some(format!("id is {}, expected {}", got.id(), expected.id()));
    }
    if got.audience() != expected.audience() {
        return Some(format!("audience is {:?}, expected {:?}", got.audience(), expected.audience()));
    }
    if got.event_type() != expected.event_type() {
        return Some(format!("event_type is {:?}, expected {:?}", got.event_type(), expected.event_type()));
    }
    if got.category() != expected.category() {
        return Some(format!(
            "category is {}, expected {}",
            got.category().name(),
            expected.category().name()
        ));
    }
    if got.data() != expected.data() {
        let at = got.data().bytes().zip(expected.data().bytes()).position(|(a, b)| a != b);
        let at = at.unwrap_or(got.data().len().min(expected.data().len()));
        return Some(format!(
            "data differs from byte {at} on: it is {}, expected {}",
            short(got.data()),
            short(expected.data())
        ));
    }
    if got.occurred_at().timestamp_micros() != expected.occurred_at().timestamp_micros() {
        return Some(format!(
            "occurred_at is {:?}, expected {:?} (compared to the microsecond)",
            got.occurred_at(),
            expected.occurred_at()
        ));
    }
    None
}

/// What differs between two lists of events, or `None` if they hold the same events in the same order.
fn events_mismatch(got: &[Event<C>], expected: &[Event<C>]) -> Option<String> {
    let divergence = (0..got.len().max(expected.len())).find(|&i| match (got.get(i), expected.get(i)) {
        (Some(g), Some(e)) => field_difference(g, e).is_some(),
        _ => true,
    })?;
    let got_ids: HashSet<EventId> = got.iter().map(Event::id).collect();
    let expected_ids: HashSet<EventId> = expected.iter().map(Event::id).collect();
    let missing = id_list(expected.iter().filter(|e| !got_ids.contains(&e.id())));
    let unexpected = id_list(got.iter().filter(|e| !expected_ids.contains(&e.id())));
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for event in got {
        *counts.entry(event.id()).or_default() += 1;
    }
    let repeated = id_list(got.iter().filter(|e| counts[&e.id()] > 1));
    let detail = match (got.get(divergence), expected.get(divergence)) {
        (Some(g), Some(e)) if g.id() == e.id() => {
            format!("event {}: {}", g.id(), field_difference(g, e).unwrap_or_default())
        }
        (Some(g), Some(e)) => format!("got {}, expected {}", describe(g), describe(e)),
        (None, Some(e)) => format!("nothing more, expected {}", describe(e)),
        (Some(g), None) => format!("got {} after every expected event", describe(g)),
        (None, None) => String::new(),
    };
    Some(format!(
        "got {} events, expected {}; missing {missing}, unexpected {unexpected}, repeated {repeated}; \
         first divergence at index {divergence}: {detail}",
        got.len(),
        expected.len()
    ))
}

/// Panics naming `rule` unless `got` holds exactly the events `expected`, in order, whole.
fn assert_events(rule: &str, context: &str, got: &[Event<C>], expected: &[Event<C>]) {
    if let Some(mismatch) = events_mismatch(got, expected) {
        panic!("rule: {rule}; {context}: {mismatch}");
    }
}

/// Panics naming `rule` unless the replay's status is `expected`.
fn assert_status(rule: &str, context: &str, replay: &Replay<C>, expected: ReplayStatus) {
    if replay.status != expected {
        panic!(
            "rule: {rule}; {context}: the replay is {}, expected {expected} (it holds {} events: {})",
            replay.status,
            replay.events.len(),
            id_list(&replay.events)
        );
    }
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
            panic!(
                "rule: a dropped or ended subscription is unregistered; {when}: the hub holds {now} subscriptions, \
                 expected {expected}"
            );
        }
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
}

const LIVE: &str = "a subscription is live when subscribe returns: every event published after it reaches it";
const OWN_ONLY: &str =
    "a subscription yields its user's events and the broadcasts, in publish order, and never another user's";
const BROADCASTS: &str = "every subscription of every user receives every broadcast, in publish order";
const FILTER: &str =
    "a category filter lets through exactly its categories, for own events and broadcasts, live and replayed";
const REPLAY_COMPLETE: &str =
    "replay after a retained id holds every event published after it, in publish order, and is complete";
const REPLAY_MERGE: &str =
    "replay merges the user's events and the broadcasts in publish order, from either kind of id";
const REPLAY_TRUNCATED: &str = "replay after an id history no longer covers is truncated and holds exactly the retained \
                                events published after the id";
const REPLAY_UNKNOWN: &str =
    "replay after an id never published here reports unknown id and holds every retained event";
const REPLAY_DISABLED: &str =
    "without retention, replay reports retention disabled and holds nothing; live delivery works";
const RESUME_LIVE: &str = "resume without a Last-Event-ID replays nothing and yields live events";
const RESUME_GAP: &str = "resume over history that does not cover the gap yields Error::Gap first, then the retained events, then live ones";
const LAGGED: &str = "a lagging subscriber gets Error::Lagged naming the last event it received, then its stream ends; \
                      the others and the publisher do not wait for it; resuming from that id recovers the rest";

/// An event published right after `subscribe` returns reaches the subscription.
pub async fn subscription_is_live_when_subscribe_returns<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    for round in 0..20 {
        let user = fresh_user();
        let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
        let event = make_event(Audience::User(user), round);
        publish(&hub, &event).await;
        let ours = HashSet::from([event.id()]);
        let received =
            read_until(&mut subscription, &[event.id()], &ours, "a just-made subscription", LIVE).await;
        assert_events(LIVE, &format!("round {round}"), &received, &[event]);
    }
}

/// A subscription yields its user's events and never another user's; replay
/// keeps users apart too.
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
    let alice_got = read_until(&mut alice_subscription, &[alice_last.id()], &ours, "alice", OWN_ONLY).await;
    let bob_got = read_until(&mut bob_subscription, &[bob_last.id()], &ours, "bob", OWN_ONLY).await;
    assert_events(OWN_ONLY, "alice's subscription", &alice_got, &for_alice);
    assert_events(OWN_ONLY, "bob's subscription", &bob_got, &for_bob);

    let replay = missed(&hub, alice, for_alice[0].id(), CategorySet::all()).await;
    assert_status(OWN_ONLY, "alice's replay", &replay, ReplayStatus::Complete);
    assert_events(OWN_ONLY, "alice's replay", &only_ours(&replay.events, &ours), &for_alice[1..]);
    if let Some(foreign) = replay.events.iter().find(|e| !e.audience().includes(alice)) {
        panic!("rule: {OWN_ONLY}; alice's replay holds another user's event: {foreign:?}");
    }
}

/// Every subscription of every user receives every broadcast, in publish order.
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
    for (index, (user, subscription)) in subscriptions.iter_mut().enumerate() {
        let mut expected = broadcasts.clone();
        if *user == users[0] {
            expected.insert(0, own.clone());
        }
        let received =
            read_until(subscription, &lasts(&expected), &ours, "a broadcast subscriber", BROADCASTS).await;
        assert_each_stream(BROADCASTS, &format!("subscription #{index}"), &received, &expected);
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
    let wanted: Vec<Event<C>> = published.iter().filter(|e| filter.contains(e.category())).cloned().collect();
    let got = read_until(&mut filtered, &lasts(&wanted), &ours, "a filtered subscriber", FILTER).await;
    assert_each_stream(FILTER, "the filtered subscription", &got, &wanted);
    let got =
        read_until(&mut unfiltered, &lasts(&published), &ours, "an unfiltered subscriber", FILTER).await;
    assert_each_stream(FILTER, "the unfiltered subscription", &got, &published);

    let replay = missed(&hub, user, first.id(), filter).await;
    assert_status(FILTER, "the filtered replay", &replay, ReplayStatus::Complete);
    if let Some(wrong) = replay.events.iter().find(|e| !filter.contains(e.category())) {
        panic!("rule: {FILTER}; the filtered replay holds an event of another category: {wrong:?}");
    }
    assert_events(FILTER, "the filtered replay", &only_ours(&replay.events, &ours), &wanted[1..]);
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
        let replay = missed(&hub, user, published[after].id(), CategorySet::all()).await;
        let context = format!("replay after event #{after}");
        assert_status(REPLAY_COMPLETE, &context, &replay, ReplayStatus::Complete);
        assert_events(REPLAY_COMPLETE, &context, &only_ours(&replay.events, &ours), &published[after + 1..]);
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
    let visible: Vec<Event<C>> = published.iter().filter(|e| e.audience().includes(user)).cloned().collect();
    for (position, after) in visible.iter().enumerate() {
        let replay = missed(&hub, user, after.id(), CategorySet::all()).await;
        let kind = if after.audience() == Audience::Broadcast { "a broadcast" } else { "an own event" };
        let context = format!("replay after {kind} (#{position})");
        assert_status(REPLAY_MERGE, &context, &replay, ReplayStatus::Complete);
        assert_events(REPLAY_MERGE, &context, &only_ours(&replay.events, &ours), &visible[position + 1..]);
    }
}

/// Replay after an id that history no longer holds reports truncated, with
/// exactly the retained events published after that id; a retained id still
/// replays completely, unless the other audience was trimmed past it: then it
/// is truncated too. The same for the user's events and for broadcasts.
pub async fn replay_after_trimmed_id_reports_truncated<F: HubFactory>(factory: &F) {
    const KEPT: usize = 5;
    let hub = factory.create(HubOptions::default().with_history_len(KEPT)).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..4 * KEPT).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let mut ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let replay = missed(&hub, user, published[1].id(), CategorySet::all()).await;
    let context = "replay after a trimmed own event";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Truncated);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &published[published.len() - KEPT..],
    );

    // A retained id still replays completely.
    let retained = &published[published.len() - 3];
    let replay = missed(&hub, user, retained.id(), CategorySet::all()).await;
    let context = "replay after a retained own event";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Complete);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &published[published.len() - 2..],
    );

    // Broadcasts are trimmed and reported the same way. The user's retained
    // events were all published before the trimmed broadcast: none belongs in
    // its replay.
    let anchor = make_event(Audience::User(user), 4 * KEPT);
    publish(&hub, &anchor).await;
    let broadcasts: Vec<Event<C>> = (0..3 * KEPT).map(|n| make_event(Audience::Broadcast, n)).collect();
    for event in &broadcasts {
        publish(&hub, event).await;
    }
    ours.insert(anchor.id());
    ours.extend(broadcasts.iter().map(Event::id));
    // The user's newest event is retained, but broadcasts published after it were trimmed.
    let replay = missed(&hub, user, anchor.id(), CategorySet::all()).await;
    let context = "replay after a retained own event, with broadcasts trimmed past it";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Truncated);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &broadcasts[broadcasts.len() - KEPT..],
    );
    let replay = missed(&hub, user, broadcasts[0].id(), CategorySet::all()).await;
    let context = "replay after a trimmed broadcast";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Truncated);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &broadcasts[broadcasts.len() - KEPT..],
    );
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
        let replay = missed(&hub, user, unknown, CategorySet::all()).await;
        let context = format!("replay after {unknown}");
        assert_status(REPLAY_UNKNOWN, &context, &replay, ReplayStatus::UnknownId);
        assert_events(REPLAY_UNKNOWN, &context, &only_ours(&replay.events, &ours), &published);
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
    let got = read_until(
        &mut subscription,
        &[published[2].id()],
        &ours,
        "a subscriber without retention",
        REPLAY_DISABLED,
    )
    .await;
    assert_events(REPLAY_DISABLED, "live delivery without retention", &got, &published);
    let replay = missed(&hub, user, published[0].id(), CategorySet::all()).await;
    assert_status(REPLAY_DISABLED, "replay without retention", &replay, ReplayStatus::RetentionDisabled);
    assert_events(REPLAY_DISABLED, "replay without retention", &replay.events, &[]);
}

/// `resume` without a Last-Event-ID replays nothing and yields live events.
pub async fn resume_without_last_event_id_is_live_only<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let before = make_event(Audience::User(user), 0);
    publish(&hub, &before).await;
    let mut resumed = within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume");
    assert_eq!(resumed.replay_status(), None, "rule: {RESUME_LIVE}; a first connection has no replay status");
    let after = make_event(Audience::User(user), 1);
    publish(&hub, &after).await;
    let ours = HashSet::from([before.id(), after.id()]);
    let got = read_until(&mut resumed, &[after.id()], &ours, "a first connection", RESUME_LIVE).await;
    assert_events(RESUME_LIVE, "a first connection", &got, &[after]);
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
    let mut resumed = within("resume", resume(&hub, user, Some(last_seen.into()), CategorySet::all()))
        .await
        .expect("resume");
    assert_eq!(
        resumed.replay_status(),
        Some(ReplayStatus::Truncated),
        "rule: {RESUME_GAP}; the replay status after a trimmed id"
    );
    match next_item(&mut resumed, "the gap signal").await {
        Some(Err(Error::Gap { last_delivered, .. })) => assert_eq!(
            last_delivered,
            Some(last_seen),
            "rule: {RESUME_GAP}; the gap names the client's Last-Event-ID"
        ),
        other => panic!("rule: {RESUME_GAP}; the first item is {other:?}, expected Error::Gap"),
    }
    let live = make_event(Audience::User(user), 100);
    publish(&hub, &live).await;
    let ours: HashSet<EventId> = published.iter().chain([&live]).map(Event::id).collect();
    let got = read_until(&mut resumed, &[live.id()], &ours, "a resumed subscriber", RESUME_GAP).await;
    let mut expected = published[published.len() - KEPT..].to_vec();
    expected.push(live);
    assert_events(RESUME_GAP, "after the gap: the retained events, then live ones", &got, &expected);
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
    // Both of the user's through `resume`, so the stalled one has a cursor to come back with.
    let connect =
        || async { within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume") };
    let mut stalled = connect().await;
    let mut fast_same_user = connect().await;
    let mut fast_other_user = subscribe(&hub, other, CategorySet::all()).await;

    // The stalled subscriber reads one event before it stalls, so Lagged has
    // an id to name and the resume below always runs.
    let prelude = make_event(Audience::User(user), EVENTS);
    publish(&hub, &prelude).await;
    let prelude_ours = HashSet::from([prelude.id()]);
    for (subscription, who) in
        [(&mut stalled, "the subscriber about to stall"), (&mut fast_same_user, "a fast subscriber")]
    {
        let got = read_until(subscription, &[prelude.id()], &prelude_ours, who, LAGGED).await;
        assert_events(LAGGED, who, &got, std::slice::from_ref(&prelude));
    }

    let published: Vec<Event<C>> = (0..EVENTS)
        .map(|n| {
            make_event(
                if n % (CAPACITY / 2) == CAPACITY / 2 - 1 {
                    Audience::Broadcast
                } else {
                    Audience::User(user)
                },
                n,
            )
        })
        .collect();
    let ours: HashSet<EventId> = published.iter().chain([&prelude]).map(Event::id).collect();
    let for_other: Vec<Event<C>> =
        published.iter().filter(|e| e.audience() == Audience::Broadcast).cloned().collect();

    // The fast subscribers read along in steps of half their queue (each step ends with a
    // broadcast), so they keep up however the machine schedules them, while the stalled one falls
    // behind; the publisher never waits for it.
    let (mut same_user_got, mut other_user_got) = (Vec::new(), Vec::new());
    for step in published.chunks(CAPACITY / 2) {
        for event in step {
            publish(&hub, event).await;
        }
        let step_last = step[step.len() - 1].id();
        let (same, other) = future::zip(
            read_until(&mut fast_same_user, &lasts(step), &ours, "a fast subscriber", LAGGED),
            read_until(
                &mut fast_other_user,
                &[step_last],
                &ours,
                "a fast subscriber of another user",
                LAGGED,
            ),
        )
        .await;
        same_user_got.extend(same);
        other_user_got.extend(other);
    }
    assert_each_stream(LAGGED, "a fast subscriber beside a stalled one", &same_user_got, &published);
    assert_events(LAGGED, "a fast subscriber of another user", &other_user_got, &for_other);

    let (mut stalled_got, mut stalled_last) = (Vec::new(), Some(prelude.id()));
    let lagged_at = loop {
        match next_item(&mut stalled, "the stalled subscriber's events and Lagged").await {
            Some(Ok(event)) => {
                stalled_last = Some(event.id());
                if ours.contains(&event.id()) {
                    stalled_got.push(event);
                }
            }
            Some(Err(Error::Lagged { last_delivered })) => break last_delivered,
            Some(Err(error)) => {
                panic!("rule: {LAGGED}; the stalled subscriber got {error} instead of Error::Lagged")
            }
            None => panic!("rule: {LAGGED}; the stalled subscriber's stream ended without Error::Lagged"),
        }
    };
    assert!(
        stalled_got.len() < EVENTS,
        "rule: {LAGGED}; a subscriber {EVENTS} events behind with a queue of {CAPACITY} lags"
    );
    // What it got is, stream by stream, the first of what was published.
    let of_kind = |events: &[Event<C>], kind: StreamKind| -> Vec<Event<C>> {
        events.iter().filter(|e| StreamKind::of(e.audience()) == kind).cloned().collect()
    };
    let mut rest_expected = Vec::new();
    for kind in StreamKind::ALL {
        let (got, all) = (of_kind(&stalled_got, kind), of_kind(&published, kind));
        let context = format!("what the stalled subscriber got, the {kind} stream");
        assert_events(LAGGED, &context, &got, &all[..got.len().min(all.len())]);
        rest_expected.extend(all[got.len().min(all.len())..].iter().cloned());
    }
    assert_eq!(lagged_at, stalled_last, "rule: {LAGGED}; Lagged names the last event received");
    assert!(
        next_item(&mut stalled, "the end of a lagged stream").await.is_none(),
        "rule: {LAGGED}; a lagged stream ends after Error::Lagged"
    );

    // The lagged client reconnects with the cursor of the last event it got and loses nothing.
    let cursor = stalled.cursor().expect("a cursor: the stalled subscriber read the prelude");
    assert_eq!(Some(cursor.event_id()), lagged_at, "rule: {LAGGED}; the cursor is at the event Lagged named");
    drop(stalled);
    let mut resumed = within("resume", resume(&hub, user, Some(cursor.into()), CategorySet::all()))
        .await
        .expect("resume after lagging");
    assert_eq!(
        resumed.replay_status(),
        Some(ReplayStatus::Complete),
        "rule: {LAGGED}; history covers what the lagged subscriber missed"
    );
    let rest =
        read_until(&mut resumed, &lasts(&rest_expected), &ours, "the resumed lagged subscriber", LAGGED)
            .await;
    assert_each_stream(LAGGED, "resuming after Lagged", &rest, &rest_expected);
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
    let rule = "dropping a subscription leaves the others working";
    let got = read_until(&mut third, &[event.id()], &ours, "the remaining subscriber", rule).await;
    assert_events(rule, "the remaining subscriber", &got, &[event]);

    drop(third);
    expect_subscriptions(factory, &hub, baseline, "after dropping all").await;
}

const CLOSE: &str = "when a hub closes (explicitly, or when its last handle is dropped), every open subscription \
                     yields the events already queued, then Err(Error::Closed) exactly once, then ends for good";
const CLOSED_REFUSES: &str = "a closed hub refuses subscribe and publish with Err(Error::Closed)";

/// How a close check ends the hub.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CloseBy {
    Explicit,
    DroppingEveryHandle,
}

/// Close rule, explicit close: after [`HubFactory::close`], every open
/// subscription yields the events already queued for it, then
/// `Err(Error::Closed)` exactly once, then `None`, and `None` again if polled
/// on. A closed hub's `subscribe` and `publish` fail with `Error::Closed`.
pub async fn closing_a_hub_ends_every_subscription_with_closed<F: HubFactory>(factory: &F) {
    check_close_rule(factory, CloseBy::Explicit).await;
}

/// Close rule, last handle dropped: when every handle of a hub is dropped,
/// every open subscription yields the events already queued for it, then
/// `Err(Error::Closed)` exactly once, then `None`, and `None` again if polled on.
pub async fn dropping_every_hub_handle_ends_every_subscription_with_closed<F: HubFactory>(factory: &F) {
    check_close_rule(factory, CloseBy::DroppingEveryHandle).await;
}

async fn check_close_rule<F: HubFactory>(factory: &F, by: CloseBy) {
    let hub = factory.create(HubOptions::default()).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    // A reader per user reads everything, so the events are known to be queued
    // for the unread subscriptions of its user before the hub closes.
    let mut alice_reader = subscribe(&hub, alice, CategorySet::all()).await;
    let mut bob_reader = subscribe(&hub, bob, CategorySet::all()).await;
    let mut unread = [
        (alice, CategorySet::all(), subscribe(&hub, alice, CategorySet::all()).await),
        (alice, CategorySet::only(C::Ai), subscribe(&hub, alice, CategorySet::only(C::Ai)).await),
        (bob, CategorySet::all(), subscribe(&hub, bob, CategorySet::all()).await),
        // Nothing will be queued for this one: it passes only Security, and no event is.
        (bob, CategorySet::only(C::Security), subscribe(&hub, bob, CategorySet::only(C::Security)).await),
    ];
    let plan = [
        make_event_in(Audience::User(alice), 0, C::Ai),
        make_event_in(Audience::Broadcast, 1, C::Import),
        make_event_in(Audience::User(bob), 2, C::Ai),
        make_event_in(Audience::User(alice), 3, C::DataSync),
        make_event_in(Audience::Broadcast, 4, C::Ai),
        make_event_in(Audience::User(alice), 5, C::Ai),
        make_event_in(Audience::User(bob), 6, C::Portfolio),
    ];
    for event in &plan {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = plan.iter().map(Event::id).collect();
    for (reader, user, who) in
        [(&mut alice_reader, alice, "alice's reader"), (&mut bob_reader, bob, "bob's reader")]
    {
        let expected: Vec<Event<C>> = plan.iter().filter(|e| e.audience().includes(user)).cloned().collect();
        let got = read_until(reader, &lasts(&expected), &ours, who, CLOSE).await;
        assert_each_stream(CLOSE, &format!("{who} before the close"), &got, &expected);
    }

    let hub_handle = match by {
        CloseBy::Explicit => {
            within("close", factory.close(&hub)).await;
            let late = make_event(Audience::User(alice), 7);
            match within("publish after close", hub.publish(late)).await {
                Err(Error::Closed) => {}
                Ok(()) => panic!("rule: {CLOSED_REFUSES}; publish succeeded after the hub was closed"),
                Err(error) => panic!("rule: {CLOSED_REFUSES}; publish after close failed with {error}"),
            }
            match within("subscribe after close", hub.subscribe(alice, CategorySet::all())).await {
                Err(Error::Closed) => {}
                Ok(_) => panic!("rule: {CLOSED_REFUSES}; subscribe succeeded after the hub was closed"),
                Err(error) => panic!("rule: {CLOSED_REFUSES}; subscribe after close failed with {error}"),
            }
            Some(hub)
        }
        CloseBy::DroppingEveryHandle => {
            drop(hub);
            None
        }
    };

    let how = match by {
        CloseBy::Explicit => "after close",
        CloseBy::DroppingEveryHandle => "after the last hub handle was dropped",
    };
    expect_closed_end(&mut alice_reader, &[], &ours, &format!("alice's reader {how}")).await;
    expect_closed_end(&mut bob_reader, &[], &ours, &format!("bob's reader {how}")).await;
    for (index, (user, filter, subscription)) in unread.iter_mut().enumerate() {
        let queued: Vec<Event<C>> = plan
            .iter()
            .filter(|e| e.audience().includes(*user) && filter.contains(e.category()))
            .cloned()
            .collect();
        expect_closed_end(subscription, &queued, &ours, &format!("unread subscription #{index} {how}")).await;
    }
    // Closed explicitly, the hub was still held up to here: `close` alone must end the subscriptions.
    drop(hub_handle);
}

/// Reads a closed hub's subscription to its end: `queued`, `Err(Closed)` once, then `None` twice.
async fn expect_closed_end<S>(stream: &mut S, queued: &[Event<C>], ours: &HashSet<EventId>, who: &str)
where
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    let mut got = Vec::new();
    loop {
        match next_item(stream, &format!("the end of {who} (rule: {CLOSE})")).await {
            Some(Ok(event)) if !ours.contains(&event.id()) && event.audience() == Audience::Broadcast => {}
            Some(Ok(event)) => got.push(event),
            Some(Err(Error::Closed)) => break,
            Some(Err(error)) => panic!("rule: {CLOSE}; {who} yielded {error} instead of Err(Error::Closed)"),
            None => {
                assert_each_stream(CLOSE, &format!("{who}: the queued events"), &got, queued);
                panic!("rule: {CLOSE}; {who} ended without Err(Error::Closed)");
            }
        }
    }
    assert_each_stream(CLOSE, &format!("{who}: the queued events before Err(Error::Closed)"), &got, queued);
    for attempt in ["once", "twice"] {
        match next_item(stream, &format!("the end of {who} after Err(Error::Closed)")).await {
            None => {}
            Some(item) => panic!(
                "rule: {CLOSE}; {who} yielded {item:?} after Err(Error::Closed), polled {attempt} more: it must have ended"
            ),
        }
    }
}

const DATA: &str = "event data is JSON text of any kind and is delivered live and replayed unchanged: data byte for \
                    byte, with the same id, audience, event type, category and occurred_at (to the microsecond)";

/// The data of the data check: every kind of JSON text, each a byte sequence a backend must keep as is.
fn json_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        r#"{}"#,
        r#"[]"#,
        r#"{"n":1,"nested":{"list":[1,2,{"deep":[null,true,false]}],"empty":{}}}"#,
        r#"[1,"two",3.5,null,true,false,{"k":"v"},[]]"#,
        r#""plain string""#,
        r#""escapes: \" \\ \/ \b \f \n \r \t \u0000 \u00e9 \ud83d\ude00""#,
        r#""unicode as is: héllo wörld ✓ 😀 中文""#,
        r#""line one\nline two\r\nline three""#,
        r#""data: forged\n\nid: 1""#,
        "0",
        "-0",
        "42",
        "-1.5e-7",
        "1E+300",
        "12345678901234567890123456789",
        "3.14159265358979323846264338327950288",
        "true",
        "false",
        "null",
        "{ \"spaced\" : [ 1 , 2 ] , \"tab\":\t3 }",
        "{\n  \"pretty\": [\n    1,\n    2\n  ],\n  \"crlf\": true\r\n}",
        r#"{"a":1,"a":2}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Nested 32 deep.
    texts.push(format!("{}1{}", "[".repeat(32), "]".repeat(32)));
    // About 64 KiB: one long string with escapes and non-ASCII characters spread through it...
    let mut long = String::from("\"");
    while long.len() < 64 * 1024 {
        long.push_str("abcdefghij \\\"quoted\\\" ü 😀 \\n ");
    }
    long.push('"');
    texts.push(long);
    // ...and one large object.
    let mut object = String::from("{");
    let mut n = 0;
    while object.len() < 64 * 1024 {
        if n > 0 {
            object.push(',');
        }
        let _ = write!(object, "\"key{n}\":[{n},\"value {n}\",{{\"x\":{}}}]", n % 7 == 0);
        n += 1;
    }
    object.push('}');
    texts.push(object);
    texts
}

/// Data rule: event data is JSON text, checked where the event is made, and a
/// backend accepts every event that could be made. Every kind of JSON value —
/// objects, arrays, strings (escapes, `\n`, non-ASCII), numbers (negative,
/// exponents, beyond 64 bits), `true`, `false`, `null`, deep nesting, inner
/// whitespace and line breaks, ~64 KiB texts — is accepted by `publish`,
/// delivered live and replayed with its data byte for byte equal and the same
/// id, audience, event type, category and `occurred_at`. `occurred_at` is
/// compared to the microsecond (truncated): the precision
/// [`Event::occurred_at`] promises; the Redis backend keeps nanoseconds.
pub async fn event_data_of_every_json_kind_is_delivered_and_replayed_unchanged<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
    let first = make_event(Audience::User(user), 0);
    publish(&hub, &first).await;
    let times: [DateTime<Utc>; 4] = [
        Utc::now(),
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(123_456_789),
        Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 8).unwrap() + chrono::Duration::microseconds(999_999),
    ];
    let event_types = ["data.kind", "a", "ünïcode type: with spaces & punctuation!", "portfolio.updated"];
    let published: Vec<Event<C>> = json_texts()
        .into_iter()
        .enumerate()
        .map(|(n, data)| {
            let audience = if n % 3 == 2 { Audience::Broadcast } else { Audience::User(user) };
            Event::from_parts(
                EventId::new(),
                audience,
                event_types[n % event_types.len()],
                C::ALL[n % C::ALL.len()],
                data,
                times[n % times.len()],
            )
            .expect("valid JSON data and a valid event type")
        })
        .collect();
    for event in &published {
        if let Err(error) = within("publish", hub.publish(event.clone())).await {
            panic!("rule: {DATA}; publish refused {}: {error}", describe(event));
        }
    }
    let ours: HashSet<EventId> = published.iter().chain([&first]).map(Event::id).collect();
    let mut expected_live = vec![first.clone()];
    expected_live.extend(published.iter().cloned());
    let got = read_until(
        &mut subscription,
        &lasts(&expected_live),
        &ours,
        "a subscriber of every kind of data",
        DATA,
    )
    .await;
    assert_each_stream(DATA, "delivered live", &got, &expected_live);
    let replay = missed(&hub, user, first.id(), CategorySet::all()).await;
    assert_status(DATA, "replayed", &replay, ReplayStatus::Complete);
    assert_events(DATA, "replayed", &only_ours(&replay.events, &ours), &published);
}

const LAG_POINT: &str = "with queue capacity N, a subscription that reads nothing while N+k events arrive yields \
                         exactly the first N, then Err(Error::Lagged) naming the N-th, then ends";
const NO_LAG: &str = "a subscription that reads as fast as events come never lags";

/// Lag point: with queue capacity N, a subscription that reads nothing while
/// N+k events arrive (k ≥ 1) yields exactly the first N events, then
/// `Err(Error::Lagged { last_delivered: Some(id of the N-th) })`, then ends.
/// A subscription that reads each event as it comes never lags, however many
/// events pass through a small queue.
pub async fn lag_happens_exactly_when_the_queue_overflows<F: HubFactory>(factory: &F) {
    const CAPACITY: usize = 4;
    let hub = factory.create(HubOptions::default().with_queue_capacity(CAPACITY)).await;
    for overflow in [1, 3] {
        let user = fresh_user();
        let mut stalled = subscribe(&hub, user, CategorySet::all()).await;
        // Reading along, it knows when an event has been queued for the stalled one too.
        let mut reader = subscribe(&hub, user, CategorySet::all()).await;
        let published: Vec<Event<C>> =
            (0..CAPACITY + overflow).map(|n| make_event(Audience::User(user), n)).collect();
        let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
        for event in &published {
            publish(&hub, event).await;
            let got =
                read_until(&mut reader, &[event.id()], &ours, "a subscriber reading along", NO_LAG).await;
            assert_events(NO_LAG, "a subscriber reading along", &got, std::slice::from_ref(event));
        }
        let context = format!("capacity {CAPACITY}, {} events unread", CAPACITY + overflow);
        let mut got = Vec::new();
        let lagged = loop {
            match next_item(&mut stalled, &format!("the stalled subscription's items (rule: {LAG_POINT})"))
                .await
            {
                Some(Ok(event)) => got.push(event),
                Some(Err(Error::Lagged { last_delivered })) => break last_delivered,
                Some(Err(error)) => panic!("rule: {LAG_POINT}; {context}: the stream yielded {error}"),
                None => {
                    panic!(
                        "rule: {LAG_POINT}; {context}: the stream ended without Err(Error::Lagged) after {}",
                        id_list(&got)
                    )
                }
            }
        };
        assert_events(
            LAG_POINT,
            &format!("{context}: the events before Lagged"),
            &got,
            &published[..CAPACITY],
        );
        assert_eq!(
            lagged,
            Some(published[CAPACITY - 1].id()),
            "rule: {LAG_POINT}; {context}: Lagged must name the N-th event"
        );
        if let Some(item) = next_item(&mut stalled, "the end of a lagged stream").await {
            panic!("rule: {LAG_POINT}; {context}: the stream yielded {item:?} after Err(Error::Lagged)");
        }
    }

    // Through a queue of 2, many events, each read as soon as it is published.
    let hub = factory.create(HubOptions::default().with_queue_capacity(2)).await;
    let (user, other) = (fresh_user(), fresh_user());
    let mut keeping_up = subscribe(&hub, user, CategorySet::all()).await;
    let mut published = Vec::new();
    let mut ours = HashSet::new();
    for n in 0..100 {
        let audience = match n % 5 {
            0 => Audience::Broadcast,
            1 => Audience::User(other),
            _ => Audience::User(user),
        };
        let event = make_event(audience, n);
        ours.insert(event.id());
        publish(&hub, &event).await;
        if audience.includes(user) {
            let got =
                read_until(&mut keeping_up, &[event.id()], &ours, "a subscriber keeping up", NO_LAG).await;
            assert_events(NO_LAG, &format!("event #{n}"), &got, std::slice::from_ref(&event));
            published.push(event);
        }
    }
}

const WORKLOAD_LIVE: &str = "a subscription yields exactly its user's events and the broadcasts passing its filter \
                             published while it is subscribed, each audience in publish order, none twice";
const WORKLOAD_EARLY: &str = "before the events published while it is subscribed, a subscription may yield only \
                              events published just before it subscribed (still on their way): of each audience, \
                              the newest of those it would receive, in publish order";
const REPLAY_NOT_BEFORE: &str = "a replay never holds an event published at or before the Last-Event-ID";
const REPLAY_STATUS: &str = "replay status: complete when the Last-Event-ID is retained and neither the user's nor the \
                             broadcast history dropped an event published after it; truncated when one of them did, \
                             or when the id is no longer retained; unknown id when it was never published here; \
                             retention disabled without retention";
const REPLAY_EVENTS: &str = "a replay holds exactly the retained events of the user and the broadcasts that pass the \
                             filter and were published after the Last-Event-ID (every retained one for an unknown id), \
                             in publish order";

/// The kinds of replay the generated workloads must produce, so the check is known to test each.
const REPLAY_CASES: [&str; 6] = [
    "complete",
    "truncated: the id retained, the user's history trimmed past it",
    "truncated: the id retained, the broadcast history trimmed past it",
    "truncated: the id itself trimmed",
    "unknown id",
    "retention disabled",
];

/// A subscription of a generated workload and what it must receive.
struct Watcher<S> {
    user: UserId,
    filter: CategorySet<C>,
    /// How many events had been published when it subscribed.
    subscribed_at: usize,
    stream: Option<S>,
    expected: Vec<Event<C>>,
    received: Vec<Event<C>>,
}

/// What a generated workload has published so far.
#[derive(Default)]
struct Model {
    published: Vec<Event<C>>,
    ours: HashSet<EventId>,
}

impl Model {
    /// Which published events are still retained, by index: the last `history_len` of each audience.
    fn retained(&self, history_len: usize) -> Vec<bool> {
        let mut kept: HashMap<Audience, usize> = HashMap::new();
        let mut retained = vec![false; self.published.len()];
        for (index, event) in self.published.iter().enumerate().rev() {
            let count = kept.entry(event.audience()).or_default();
            retained[index] = *count < history_len;
            *count += 1;
        }
        retained
    }

    /// The replay a backend must return, and which of [`REPLAY_CASES`] it is.
    fn expected_replay(
        &self,
        retained: Option<&[bool]>,
        user: UserId,
        after: EventId,
        filter: CategorySet<C>,
    ) -> (ReplayStatus, Vec<Event<C>>, usize) {
        let Some(retained) = retained else { return (ReplayStatus::RetentionDisabled, Vec::new(), 5) };
        let wanted = |index: usize| {
            let event = &self.published[index];
            retained[index] && event.audience().includes(user) && filter.contains(event.category())
        };
        let Some(position) = self.published.iter().position(|e| e.id() == after) else {
            let events = (0..self.published.len()).filter(|i| wanted(*i)).map(|i| self.published[i].clone());
            return (ReplayStatus::UnknownId, events.collect(), 4);
        };
        let events =
            (position + 1..self.published.len()).filter(|i| wanted(*i)).map(|i| self.published[i].clone());
        let trimmed_after = |audience: Audience| {
            (position + 1..self.published.len())
                .any(|i| !retained[i] && self.published[i].audience() == audience)
        };
        let (status, case) = if !retained[position] {
            (ReplayStatus::Truncated, 3)
        } else if trimmed_after(Audience::User(user)) {
            (ReplayStatus::Truncated, 1)
        } else if trimmed_after(Audience::Broadcast) {
            (ReplayStatus::Truncated, 2)
        } else {
            (ReplayStatus::Complete, 0)
        };
        (status, events.collect(), case)
    }

    /// Whether a cautious backend may answer truncated where nothing after
    /// `after` was dropped: an audience dropped events, all before the id, and
    /// retains none from before it, so its history alone cannot show that
    /// what it dropped came before the id.
    fn cautious_truncation_allowed(&self, retained: &[bool], user: UserId, after: EventId) -> bool {
        let Some(position) = self.published.iter().position(|e| e.id() == after) else { return false };
        [Audience::User(user), Audience::Broadcast].into_iter().any(|audience| {
            let before = (0..position).filter(|i| self.published[*i].audience() == audience);
            let dropped_some = before.clone().any(|i| !retained[i]);
            let retains_one_before = before.clone().any(|i| retained[i]);
            dropped_some && !retains_one_before && self.published[position].audience() != audience
        })
    }
}

/// Generated-workload property, over several fixed seeds: users subscribe
/// (with random category filters) and drop their subscriptions at random
/// points while events for several users and broadcasts are published into
/// histories bounded by `history_len`.
///
/// Live: every subscription receives exactly its user's events and the
/// broadcasts that pass its filter and were published while it was
/// subscribed, each audience in publish order, none twice.
///
/// Replay, after every id any subscription received, with its filter, and
/// after ids never published here:
///
/// - **Complete**: the id is retained (in the user's or the broadcast
///   history) and neither audience dropped any event published after it.
/// - **Truncated**: some event published after the id may have been dropped:
///   the id is retained but the other audience was trimmed past it, or the id
///   is no longer retained (and so is no newer than what history dropped).
///   A backend that cannot tell which events trimming removed (Redis) may
///   also answer truncated when the other audience dropped events and
///   retains none from before the id: it cannot show that what it dropped
///   came before. Never the reverse: complete where an event after the id
///   was dropped is a silent loss.
/// - **UnknownId**: the id was never published here (a fresh id newer than
///   every event, or a UUID of another version).
/// - **RetentionDisabled**: the hub keeps no history; the replay is empty.
///
/// The replay holds exactly the retained events (of the user and the
/// broadcasts, passing the filter) published after the id, in publish order
/// — for an unknown id, every retained one. A replay never holds an event
/// published at or before the id.
pub async fn generated_workloads_deliver_and_replay_exactly<F: HubFactory>(factory: &F) {
    let mut seen = [0usize; REPLAY_CASES.len()];
    for (seed, retention) in
        [(0x5eed_0001, true), (0x5eed_0002, true), (0x5eed_0003, true), (0x5eed_0004, false)]
    {
        run_generated_workload(factory, seed, retention, &mut seen).await;
    }
    for (case, count) in REPLAY_CASES.iter().zip(seen) {
        assert!(
            count > 0,
            "the suite's own generator produced no replay of this kind: {case} (fix the suite)"
        );
    }
}

async fn run_generated_workload<F: HubFactory>(factory: &F, seed: u64, retention: bool, seen: &mut [usize]) {
    const HISTORY: usize = 6;
    const STEPS: usize = 90;
    const MOST_OPEN: usize = 6;
    let hub = factory.create(HubOptions::default().with_history_len(HISTORY).with_retention(retention)).await;
    let mut rng = Lcg(seed);
    let users = [fresh_user(), fresh_user(), fresh_user()];
    let mut model = Model::default();
    let mut watchers: Vec<Watcher<<F::Hub as EventSource<C>>::Subscription>> = Vec::new();
    let mut n = 0;
    for _ in 0..STEPS {
        let open: Vec<usize> = (0..watchers.len()).filter(|i| watchers[*i].stream.is_some()).collect();
        match rng.below(10) {
            0 | 1 if open.len() < MOST_OPEN => {
                let user = users[rng.below(users.len() as u64) as usize];
                let filter = if rng.below(3) == 0 {
                    CategorySet::all()
                } else {
                    CategorySet::from_bits(1 + rng.below((1 << C::ALL.len()) - 1))
                        .expect("bits of categories")
                };
                let subscribed_at = model.published.len();
                let stream = Some(subscribe(&hub, user, filter).await);
                watchers.push(Watcher {
                    user,
                    filter,
                    subscribed_at,
                    stream,
                    expected: Vec::new(),
                    received: Vec::new(),
                });
            }
            2 if !open.is_empty() => {
                let index = open[rng.below(open.len() as u64) as usize];
                check_watcher(&hub, &mut model, &mut watchers, index, &mut n, seed).await;
                watchers[index].stream = None;
            }
            _ => {
                let audience = match rng.below(4) {
                    0 => Audience::Broadcast,
                    _ => Audience::User(users[rng.below(users.len() as u64) as usize]),
                };
                let category = C::ALL[rng.below(C::ALL.len() as u64) as usize];
                n += 1;
                publish_in_workload(&hub, &mut model, &mut watchers, make_event_in(audience, n, category))
                    .await;
            }
        }
    }
    for index in 0..watchers.len() {
        if watchers[index].stream.is_some() {
            check_watcher(&hub, &mut model, &mut watchers, index, &mut n, seed).await;
            watchers[index].stream = None;
        }
    }

    let retained_flags = retention.then(|| model.retained(HISTORY));
    let retained = retained_flags.as_deref();
    let mut queries: Vec<(UserId, CategorySet<C>, EventId)> = Vec::new();
    let mut asked = HashSet::new();
    for watcher in &watchers {
        for event in &watcher.received {
            if asked.insert((watcher.user, watcher.filter.bits(), event.id())) {
                queries.push((watcher.user, watcher.filter, event.id()));
            }
        }
    }
    let foreign = EventId::from_uuid(uuid::Uuid::from_u128(0x8d6e_1f4a_2b3c_4d5e_9f60_7a8b_9c0d_1e2f));
    // A UUIDv7 a minute newer than every event: never published, and newer
    // than anything history dropped even at millisecond precision.
    let newest_ms = model.published.iter().filter_map(|e| e.id().timestamp_millis()).max().unwrap_or(0);
    let never_published = EventId::from_uuid(
        uuid::Builder::from_unix_timestamp_millis(newest_ms + 60_000, &[0x5e; 10]).into_uuid(),
    );
    for user in users {
        queries.push((user, CategorySet::all(), never_published));
        queries.push((user, CategorySet::only(C::Ai).with(C::Import), foreign));
    }
    for (user, filter, after) in queries {
        let replay = missed(&hub, user, after, filter).await;
        let (status, expected, case) = model.expected_replay(retained, user, after, filter);
        seen[case] += 1;
        let context =
            format!("seed {seed:#x}, user {user}, filter {filter}, after {after} ({})", REPLAY_CASES[case]);
        if let Some(position) = model.published.iter().position(|e| e.id() == after) {
            let not_after: HashSet<EventId> = model.published[..=position].iter().map(Event::id).collect();
            if let Some(early) = replay.events.iter().find(|e| not_after.contains(&e.id())) {
                panic!("rule: {REPLAY_NOT_BEFORE}; {context}: the replay holds {}", describe(early));
            }
        }
        let cautious = status == ReplayStatus::Complete
            && replay.status == ReplayStatus::Truncated
            && retained.is_some_and(|retained| model.cautious_truncation_allowed(retained, user, after));
        if !cautious {
            assert_status(REPLAY_STATUS, &context, &replay, status);
        }
        assert_events(REPLAY_EVENTS, &context, &only_ours(&replay.events, &model.ours), &expected);
    }
}

/// Publishes `event` and adds it to what every open subscription it reaches must receive.
async fn publish_in_workload<H: Publisher<C>, S>(
    hub: &H,
    model: &mut Model,
    watchers: &mut [Watcher<S>],
    event: Event<C>,
) {
    publish(hub, &event).await;
    for watcher in watchers.iter_mut().filter(|w| w.stream.is_some()) {
        if event.audience().includes(watcher.user) && watcher.filter.contains(event.category()) {
            watcher.expected.push(event.clone());
        }
    }
    model.ours.insert(event.id());
    model.published.push(event);
}

/// Publishes a marker the subscription `index` passes, reads up to it, and
/// checks everything the subscription received so far.
async fn check_watcher<H, S>(
    hub: &H,
    model: &mut Model,
    watchers: &mut [Watcher<S>],
    index: usize,
    n: &mut usize,
    seed: u64,
) where
    H: Publisher<C>,
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    let (user, filter) = (watchers[index].user, watchers[index].filter);
    let category = filter.iter().next().expect("a filter is never empty");
    *n += 1;
    let marker = make_event_in(Audience::User(user), *n, category);
    publish_in_workload(hub, model, watchers, marker.clone()).await;
    let watcher = &mut watchers[index];
    let stream = watcher.stream.as_mut().expect("an open subscription");
    let who = format!("subscription #{index} (seed {seed:#x}, filter {filter})");
    // Up to the newest expected event of each stream not received yet (the marker, and the
    // newest broadcast it passes): each stream comes in order, the two in any interleaving.
    let received: HashSet<EventId> = watcher.received.iter().map(Event::id).collect();
    let pending: Vec<Event<C>> =
        watcher.expected.iter().filter(|e| !received.contains(&e.id())).cloned().collect();
    let got = read_until(stream, &lasts(&pending), &model.ours, &who, WORKLOAD_LIVE).await;
    watcher.received.extend(got);
    // Each audience in publish order; the contract orders no user event against a broadcast, so
    // neither does it order an early event of one audience against a live one of the other.
    // Events published before it subscribed that were still on their way may come first in each
    // audience: the newest ones of those it would receive, in publish order.
    for audience in [Audience::User(user), Audience::Broadcast] {
        let of = |events: &[Event<C>]| {
            events.iter().filter(|e| e.audience() == audience).cloned().collect::<Vec<_>>()
        };
        let received = of(&watcher.received);
        let before: Vec<Event<C>> = of(&model.published[..watcher.subscribed_at])
            .into_iter()
            .filter(|e| filter.contains(e.category()))
            .collect();
        let early = received.iter().take_while(|e| before.iter().any(|b| b.id() == e.id())).count();
        assert_events(
            WORKLOAD_EARLY,
            &format!("{who}, {audience:?} events published before it subscribed"),
            &received[..early],
            &before[before.len() - early.min(before.len())..],
        );
        assert_events(
            WORKLOAD_LIVE,
            &format!("{who}, {audience:?} events"),
            &received[early..],
            &of(&watcher.expected),
        );
    }
}

const RESUME_MIDSTREAM: &str = "resume passes a mid-stream Err(Error::Gap) on, naming the last event it yielded, \
                                and goes on; it passes a backend error on and goes on";
const SSE_GAP: &str = "SseStream sends a mid-stream Gap as `event: gap` with data {\"last_event_id\":\"<id>\"} and no \
                       id, and goes on";
const SSE_ERROR: &str = "SseStream ends the body after a backend error, with a comment that does not carry the \
                         error's text";

/// The text of the backend error the fault injector yields; it must never reach a client.
const INJECTED_ERROR: &str = "injected failure talking to redis://secret-host:6379";

/// Mid-stream errors through `resume` and `SseStream`, over the hub under
/// test wrapped so that each subscription yields `Err(Error::Gap)` after the
/// user's 2nd event and an `Err(Error::Backend)` after the 4th.
///
/// `resume` passes the Gap on with `last_delivered` set to the last event it
/// yielded, then the following events; it passes the backend error on and
/// goes on with the events after it (only Lagged ends it). `SseStream` sends
/// the Gap as a [`GAP_EVENT`] frame with data
/// `{"last_event_id":"<id of the 2nd event>"}` and no `id:` field, goes on
/// with the 3rd and 4th events, then, after the backend error, sends a comment
/// (without the error's own text) and ends the body.
pub async fn resume_and_sse_stream_pass_mid_stream_gaps_and_backend_errors_on<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;

    // Through resume.
    let user = fresh_user();
    let source = InjectFaults { hub: &hub, gap_after: 2, error_after: 4 };
    let start = make_event(Audience::User(user), 0);
    publish(&hub, &start).await;
    let mut resumed = within("resume", resume(&source, user, Some(start.id().into()), CategorySet::all()))
        .await
        .expect("resume");
    let live: Vec<Event<C>> = (1..=6).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &live {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = live.iter().chain([&start]).map(Event::id).collect();
    let mut items = Vec::new();
    while items.len() < live.len() + 2 {
        match next_item(&mut resumed, &format!("the resumed stream's items (rule: {RESUME_MIDSTREAM})")).await
        {
            Some(Ok(event)) if !ours.contains(&event.id()) => {}
            Some(item) => items.push(item),
            None => panic!("rule: {RESUME_MIDSTREAM}; the resumed stream ended after {items:?}"),
        }
    }
    let shape: Vec<String> = items
        .iter()
        .map(|item| match item {
            Ok(event) => format!("event {}", event.id()),
            Err(Error::Gap { last_delivered, .. }) => format!("gap after {last_delivered:?}"),
            Err(Error::Backend(_)) => "backend error".to_string(),
            Err(other) => format!("error {other}"),
        })
        .collect();
    let expected_shape: Vec<String> = [
        format!("event {}", live[0].id()),
        format!("event {}", live[1].id()),
        format!("gap after {:?}", Some(live[1].id())),
        format!("event {}", live[2].id()),
        format!("event {}", live[3].id()),
        "backend error".to_string(),
        format!("event {}", live[4].id()),
        format!("event {}", live[5].id()),
    ]
    .into();
    assert_eq!(shape, expected_shape, "rule: {RESUME_MIDSTREAM}");
    let events: Vec<Event<C>> = items.into_iter().filter_map(Result::ok).collect();
    assert_events(RESUME_MIDSTREAM, "the events around the errors", &events, &live);
    drop(resumed);

    // Through SseStream.
    let user = fresh_user();
    let start = make_event(Audience::User(user), 0);
    publish(&hub, &start).await;
    let resumed = within("resume", resume(&source, user, Some(start.id().into()), CategorySet::all()))
        .await
        .expect("resume");
    let live: Vec<Event<C>> = (1..=6).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &live {
        publish(&hub, event).await;
    }
    let body = SseStream::new(resumed);
    let chunks: Vec<bytes::Bytes> =
        within(&format!("the end of the SSE body (rule: {SSE_ERROR})"), body.collect()).await;
    let text: String = chunks.iter().map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
    assert!(!text.contains(INJECTED_ERROR), "rule: {SSE_ERROR}; the body carries the error's text: {text:?}");
    let frames: Vec<Frame> =
        parse_frames(&text).into_iter().filter(|f| *f != Frame::comment("heartbeat")).collect();
    let ours: HashSet<String> = live.iter().chain([&start]).map(|e| e.id().to_string()).collect();
    // Foreign broadcasts may pass by on a shared server.
    let frames: Vec<Frame> =
        frames.into_iter().filter(|f| f.id.as_ref().is_none_or(|id| ours.contains(id))).collect();
    let event_frame = |event: &Event<C>| Frame {
        id: Some(event.id().to_string()),
        event: Some(event.event_type().to_string()),
        data: Some(event.data().to_string()),
        ..Frame::default()
    };
    let gap = Frame {
        event: Some(GAP_EVENT.to_string()),
        data: Some(format!("{{\"last_event_id\":\"{}\"}}", live[1].id())),
        ..Frame::default()
    };
    let expected_start =
        [event_frame(&live[0]), event_frame(&live[1]), gap, event_frame(&live[2]), event_frame(&live[3])];
    let (first, rest) = frames.split_first().unwrap_or_else(|| panic!("rule: {SSE_GAP}; an empty body"));
    assert!(first.retry.is_some(), "rule: {SSE_GAP}; the body starts with a retry frame, got {first:?}");
    if rest.len() != expected_start.len() + 1 || rest[..expected_start.len()] != expected_start {
        panic!(
            "rule: {SSE_GAP}; the frames are {rest:#?}, expected {expected_start:#?} and a closing comment; \
             the body: {text:?}"
        );
    }
    let closing = &rest[expected_start.len()];
    assert!(
        closing.comment.is_some() && closing.id.is_none() && closing.data.is_none(),
        "rule: {SSE_ERROR}; after a backend error the body ends with a comment, got {closing:?}"
    );
}

/// One frame of a text/event-stream body, as a client's parser sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<String>,
    comment: Option<String>,
}

impl Frame {
    fn comment(text: &str) -> Self {
        Self { comment: Some(text.to_string()), ..Self::default() }
    }
}

/// Splits a body into frames by the rules of the SSE format (lines end in LF
/// here, which is what ssehub writes): `field: value`, one leading space
/// dropped, `data` lines joined by LF, comments start with `:`.
fn parse_frames(text: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut frame = Frame::default();
        for line in block.split('\n') {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            let slot = match field {
                "" => &mut frame.comment,
                "id" => &mut frame.id,
                "event" => &mut frame.event,
                "retry" => &mut frame.retry,
                "data" => {
                    match &mut frame.data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(value);
                        }
                        None => frame.data = Some(value.to_string()),
                    }
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value.to_string());
        }
        frames.push(frame);
    }
    frames
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

/// A hub whose subscriptions yield `Err(Error::Gap)` after the user's
/// `gap_after`th event and `Err(Error::Backend)` after the `error_after`th.
struct InjectFaults<'a, H> {
    hub: &'a H,
    gap_after: usize,
    error_after: usize,
}

impl<H: EventSource<C>> EventSource<C> for InjectFaults<'_, H> {
    type Subscription = FaultyStream<H::Subscription>;

    async fn subscribe(&self, user: UserId, filter: CategorySet<C>) -> Result<Self::Subscription, Error> {
        let inner = self.hub.subscribe(user, filter).await?;
        Ok(FaultyStream {
            inner,
            user,
            own_events: 0,
            pending: None,
            gap_after: self.gap_after,
            error_after: self.error_after,
        })
    }

    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send {
        self.hub.missed_events(user, last_event_id, filter)
    }

    fn missed_since(
        &self,
        user: UserId,
        from: Positions,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<StreamReplay<C>, Error>> + Send {
        self.hub.missed_since(user, from, filter)
    }
}

/// The subscription of [`InjectFaults`].
struct FaultyStream<S> {
    inner: S,
    user: UserId,
    own_events: usize,
    pending: Option<Error>,
    gap_after: usize,
    error_after: usize,
}

impl<S> futures_core::Stream for FaultyStream<S>
where
    S: futures_core::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(error) = this.pending.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let item = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(event))) = &item
            && event.audience() == Audience::User(this.user)
        {
            this.own_events += 1;
            if this.own_events == this.gap_after {
                this.pending = Some(Error::Gap { last_delivered: Some(event.id()), stream: None });
            } else if this.own_events == this.error_after {
                this.pending = Some(Error::backend(INJECTED_ERROR));
            }
        }
        item
    }
}
