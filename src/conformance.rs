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
//! The checks live by concern in `src/conformance/`: live delivery
//! (`live.rs`), replay and resume after an event id (`replay.rs`), cursors
//! (`cursors.rs`), groups: delivery to the readers of a group and resume
//! of group streams (`groups.rs`), a subscription's life (`lifecycle.rs`),
//! generated workloads (`workload.rs`), the SSE body (`sse.rs`); beside them the
//! failure reports (`report.rs`) and test doubles (`doubles.rs`).
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
//!             .max_subscriptions_per_user(options.subscription_limits.max_per_user())
//!             .max_subscriptions(options.subscription_limits.max_per_process())
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

use crate::backend::SubscriptionLimits;
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
    /// The caps on open subscriptions the hub enforces.
    pub subscription_limits: SubscriptionLimits,
}

impl Default for HubOptions {
    /// 1000 events retained per audience, queues of 1024, retention on, the default caps.
    fn default() -> Self {
        Self {
            history_len: 1000,
            queue_capacity: 1024,
            retention: true,
            subscription_limits: SubscriptionLimits::new(),
        }
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

    /// These options with these caps on open subscriptions.
    #[must_use]
    pub fn with_subscription_limits(mut self, limits: SubscriptionLimits) -> Self {
        self.subscription_limits = limits;
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
            open_subscriptions_are_capped_per_user_and_per_process_exactly,
            disconnect_ends_every_stream_of_the_user_and_no_other,
            group_events_reach_exactly_the_subscriptions_that_read_the_group,
            group_streams_resume_exactly_after_the_cursor,
            generated_group_workloads_deliver_and_resume_exactly,
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
mod doubles;
mod groups;
mod lifecycle;
mod live;
mod replay;
mod report;
mod sessions;
mod sse;
mod workload;

pub use cursors::{
    a_cursor_made_for_another_user_is_refused,
    a_stale_position_in_one_stream_signals_a_gap_for_that_stream_only,
    every_frames_cursor_resumes_exactly_after_that_frame,
    resume_delivers_every_event_exactly_once_under_concurrent_publishing,
    resume_is_exactly_once_whatever_the_interleaving_of_streams,
};
use doubles::*;
pub use groups::*;
pub use lifecycle::*;
pub use live::*;
pub use replay::*;
use report::*;
pub use sessions::*;
pub use sse::*;
pub use workload::*;

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
