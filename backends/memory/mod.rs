//! The in-process backend: [`MemoryHub`], runtime-neutral, with per-audience retention and bounded per-subscriber queues.
//!
//! A [`MemoryHub`] is both an [`EventSource`] and a [`Publisher`]. It needs no
//! server and no executor of its own: publishing queues events straight into
//! the subscribers' queues, and a [`Subscription`] is a plain
//! [`Stream`](futures_core::Stream) that any executor can poll.
//!
//! - **Delivery.** Each subscription has its own queue, bounded by
//!   [`queue_capacity`](MemoryHubBuilder::queue_capacity) (1024 by default).
//!   A subscriber that falls that far behind gets [`Error::Lagged`] with the
//!   id of the last event it received, and its stream ends; nobody else waits
//!   for it. The bound is not allocated up front: an idle subscription holds
//!   no buffer.
//! - **Retention.** Each audience (each user, and the broadcasts) keeps its
//!   most recent events, as many and as old as its
//!   [`crate::Retention`] allows (by default 1000, and one hour)
//!   ([`retention`](MemoryHubBuilder::retention)), trimmed exactly.
//!   (1 hour). [`missed_events`](EventSource::missed_events) merges the
//!   user's and the broadcast history in publish order and says whether that
//!   is complete. Finding the Last-Event-ID takes a binary search (or a hash
//!   lookup when ids were published out of order), whatever the history length.
//!   An id no longer retained is reported
//!   [`Truncated`](crate::ReplayStatus::Truncated) when it is a UUIDv7 no newer than
//!   the events history has dropped, and [`UnknownId`](crate::ReplayStatus::UnknownId)
//!   otherwise. Age counts from when the hub retained the event, not from its
//!   `occurred_at`.
//! - **Order.** Every subscription sees its user's events and the broadcasts
//!   in one publish order, the same order replay merges them in, even with
//!   many threads publishing at once: that is what lets
//!   [`resume`](crate::resume()) hand over from replay to live without loss or
//!   duplicates.
//! - **Cleanup.** Dropping a subscription unregisters it; a user with no
//!   subscription and no retained event leaves nothing behind. Expired events
//!   are dropped as the hub is used, or by
//!   [`purge_expired`](MemoryHub::purge_expired). A lagged subscription is
//!   unregistered at once and holds at most its queue's events until it is
//!   read or dropped.
//!
//! # Examples
//!
//! ```
//! use futures::StreamExt;
//! use ssehub::fixture::ExampleCategory;
//! use ssehub::memory::MemoryHub;
//! use ssehub::{Audience, CategorySet, Event, EventSource, Publisher, ReplayStatus, UserId};
//!
//! futures::executor::block_on(async {
//!     let hub = MemoryHub::<ExampleCategory>::new();
//!     let alice = UserId::from_uuid(uuid::Uuid::from_u128(1));
//!
//!     let mut subscription = hub.subscribe(alice, CategorySet::all()).await?;
//!     let first = Event::new(Audience::User(alice), "import.started", ExampleCategory::Import, "{}").unwrap();
//!     let second = Event::new(Audience::Broadcast, "maintenance", ExampleCategory::Security, "{}").unwrap();
//!     hub.publish(first.clone()).await?;
//!     hub.publish(second.clone()).await?;
//!
//!     assert_eq!(subscription.next().await.unwrap()?, first);
//!     assert_eq!(subscription.next().await.unwrap()?, second);
//!
//!     // A client that saw only `first` gets the rest replayed.
//!     let replay = hub.missed_events(alice, first.id(), CategorySet::all()).await?;
//!     assert_eq!(replay.status, ReplayStatus::Complete);
//!     assert_eq!(replay.events, vec![second]);
//!     Ok::<(), ssehub::Error>(())
//! })
//! .unwrap();
//! ```

mod history;

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use crate::backend::Subscription;

use history::{History, Retained};

use crate::backend::{
    self, NOT_REGISTERED, Push, Registry, ReplaySide, StreamSide, SubscriberQueue, Wakeups, subscriber_queue,
};

use crate::{
    Audience, Category, CategorySet, Error, Event, EventId, EventSource, Position, Positions, Publisher,
    Replay, ReplayStatus, Retention, StreamReplay, UserId,
};

/// The default of [`MemoryHubBuilder::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Users are spread over this many independently locked shards, so that
/// publishes to different users and subscribes do not contend.
const SHARD_COUNT: usize = 16;

/// Locks `mutex`; a panic elsewhere never leaves our state half-updated in a
/// way later users could not cope with, so poisoning is ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Configures a [`MemoryHub`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ssehub::{fixture::ExampleCategory, memory::MemoryHub, Retention};
///
/// let hub = MemoryHub::<ExampleCategory>::builder()
///     .retention(Some(Retention::new(500, Duration::from_secs(15 * 60))))
///     .queue_capacity(256)
///     .build();
/// # let _ = hub;
/// ```
#[must_use]
pub struct MemoryHubBuilder<C: Category> {
    retention: Option<Retention>,
    queue_capacity: usize,
    _category: PhantomData<fn() -> C>,
}

impl<C: Category> Default for MemoryHubBuilder<C> {
    fn default() -> Self {
        Self {
            retention: Some(Retention::default()),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            _category: PhantomData,
        }
    }
}

impl<C: Category> Clone for MemoryHubBuilder<C> {
    fn clone(&self) -> Self {
        Self { _category: PhantomData, ..*self }
    }
}

impl<C: Category> fmt::Debug for MemoryHubBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHubBuilder")
            .field("retention", &self.retention)
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

impl<C: Category> MemoryHubBuilder<C> {
    /// How much history each audience (each user, and the broadcasts) keeps
    /// for replay; `None` keeps none. Default: [`Retention::default`] (1000
    /// events, one hour). Trimming is always exact here.
    ///
    /// Without retention, [`missed_events`](EventSource::missed_events)
    /// answers [`RetentionDisabled`](crate::ReplayStatus::RetentionDisabled).
    pub fn retention(mut self, retention: Option<Retention>) -> Self {
        self.retention = retention;
        self
    }

    /// How many events may wait for one subscription before it lags. Default 1024.
    ///
    /// A bound, not an allocation: the queue grows only as events wait in it.
    /// A subscription takes up to 32 waiting events at a time; they count as
    /// waiting until it comes back for more, so it may lag up to 31 events
    /// before the bound is really reached, never after.
    /// `0` is taken as `1`: a subscription must be able to hold one event.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events;
        self
    }

    /// Builds the hub.
    pub fn build(self) -> MemoryHub<C> {
        let limits = self.retention.map(|retention| RetentionLimits {
            max_len: usize::try_from(retention.max_events()).unwrap_or(usize::MAX),
            max_age_ms: u64::try_from(retention.max_age().as_millis()).unwrap_or(u64::MAX),
        });
        let config = Config { retention: self.retention, limits, queue_capacity: self.queue_capacity.max(1) };
        MemoryHub {
            shared: Arc::new(Shared {
                config,
                epoch: Instant::now(),
                epoch_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX).max(1)),
                next_seq: AtomicU64::new(1),
                handles: AtomicUsize::new(1),
                closed: AtomicBool::new(false),
                shards: (0..SHARD_COUNT).map(|_| Shard::default()).collect(),
                broadcast: Mutex::new(History::new()),
                broadcast_retained: AtomicUsize::new(0),
            }),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    /// As configured, for [`MemoryHub::retention`].
    retention: Option<Retention>,
    limits: Option<RetentionLimits>,
    queue_capacity: usize,
}

/// A [`Retention`] in the units the histories count in.
#[derive(Clone, Copy, Debug)]
struct RetentionLimits {
    max_len: usize,
    /// 0: no age limit.
    max_age_ms: u64,
}

impl RetentionLimits {
    /// Events retained at or before this instant have expired (`None`: none has).
    fn cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        if self.max_age_ms == 0 {
            return None;
        }
        now_ms.checked_sub(self.max_age_ms)
    }

    /// How often a shard is swept of expired users, in milliseconds.
    fn sweep_interval_ms(&self) -> u64 {
        (self.max_age_ms / 4).clamp(100, 60_000)
    }
}

/// An in-process hub: publish events, subscribe to them, replay what a client missed.
///
/// Cheap to clone: clones share one hub. Dropping the last clone closes the
/// hub: its subscriptions yield what is queued for them, then `Err(Closed)`, and end. See the
/// [module docs](self) for its delivery and retention rules.
pub struct MemoryHub<C: Category> {
    shared: Arc<Shared<C>>,
}

/// A snapshot of a [`MemoryHub`]'s activity, from [`MemoryHub::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Live subscriptions registered now.
    pub open_subscriptions: usize,
    /// Users the hub holds state for now (subscriptions or retained events).
    pub users: usize,
    /// Events retained now, all audiences together.
    pub retained_events: usize,
    /// Events published since the hub was built.
    pub published: u64,
    /// Events queued for subscriptions since the hub was built.
    pub delivered: u64,
    /// Subscriptions ended by lagging since the hub was built.
    pub lagged: u64,
}

struct Shared<C: Category> {
    config: Config,
    epoch: Instant,
    /// The Unix time in milliseconds the hub was made at: the `ms` of every
    /// position it gives out, so a cursor of an earlier hub (a restarted
    /// process) is told apart from one of this hub.
    epoch_ms: u64,
    /// The next hub-wide publish sequence number; taken under the lock(s) of
    /// every shard the event is delivered in, so it is the delivery order too.
    next_seq: AtomicU64,
    /// How many `MemoryHub` handles exist: the last one dropped closes the hub.
    handles: AtomicUsize,
    closed: AtomicBool,
    shards: Box<[Shard<C>]>,
    broadcast: Mutex<History<C>>,
    /// How many broadcasts are retained, readable without the broadcast lock.
    broadcast_retained: AtomicUsize,
}

/// One shard: its users behind one lock, and counters read without the lock.
#[repr(align(128))]
struct Shard<C: Category> {
    state: Mutex<ShardState<C>>,
    subscriptions: AtomicUsize,
    users: AtomicUsize,
    retained_events: AtomicUsize,
    published: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
    /// The operator metrics' handles, the same in every shard.
    metrics: crate::metrics::Handles,
}

impl<C: Category> Default for Shard<C> {
    fn default() -> Self {
        Self {
            state: Mutex::new(ShardState {
                users: HashMap::new(),
                listeners: Vec::new(),
                removed_until_ms: 0,
                removed_through_seq: 0,
                last_sweep_ms: 0,
            }),
            subscriptions: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            retained_events: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            metrics: crate::metrics::Handles::new(crate::metrics::Backend::Memory),
        }
    }
}

struct ShardState<C: Category> {
    users: HashMap<UserId, UserEntry<C>>,
    /// Every registration in the shard, whatever its user: what a broadcast
    /// serves, so users that only have history cost a broadcast nothing.
    listeners: Vec<Registration<C>>,
    /// The newest UUIDv7 timestamp of the events of users removed from this
    /// shard: a Last-Event-ID at or before it may have been dropped.
    removed_until_ms: u64,
    /// The newest sequence number dropped from the history of a user no longer in `users`.
    removed_through_seq: u64,
    last_sweep_ms: u64,
}

struct UserEntry<C: Category> {
    subscribers: Vec<Registration<C>>,
    history: History<C>,
}

impl<C: Category> UserEntry<C> {
    const fn new() -> Self {
        Self { subscribers: Vec::new(), history: History::new() }
    }

    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.history.is_empty()
    }
}

/// The two lists a registration is in; each keeps its position in one registry slot of the queue.
#[derive(Clone, Copy, Debug)]
enum List {
    /// The user's registrations: served by the user's events.
    User = 0,
    /// Every registration of the shard: served by broadcasts.
    Shard = 1,
}

impl<C: Category> Registry<C> for Shared<C> {
    fn unregister(&self, queue: &Arc<SubscriberQueue<C>>) {
        let shard = self.shard(queue.user());
        lock(&shard.state).unregister(shard, queue);
    }
}

struct Registration<C> {
    /// The subscription's filter, kept here so filtered-out events never touch its queue.
    filter_bits: u64,
    queue: Arc<SubscriberQueue<C>>,
}

impl<C> Clone for Registration<C> {
    fn clone(&self) -> Self {
        Self { filter_bits: self.filter_bits, queue: Arc::clone(&self.queue) }
    }
}

/// Delivery counts of one publish in one shard.
#[derive(Default)]
struct Delivered {
    queued: u64,
    lagged: u64,
}

/// Offers `event` to every registration that wants `category_bit`. The
/// queues that lagged (or had ended) go to `ended`, to be unregistered.
fn deliver<C: Category>(
    registrations: &[Registration<C>],
    event: &Event<C>,
    category_bit: u64,
    counts: &mut Delivered,
    wakeups: &mut Wakeups,
    ended: &mut Vec<Arc<SubscriberQueue<C>>>,
) {
    for registration in registrations {
        if registration.filter_bits & category_bit == 0 {
            continue;
        }
        match registration.queue.push(event, wakeups) {
            Push::Queued => counts.queued += 1,
            Push::Lagged => {
                counts.lagged += 1;
                ended.push(Arc::clone(&registration.queue));
            }
            Push::Ended => ended.push(Arc::clone(&registration.queue)),
        }
    }
}

/// Removes `queue` from `registrations` (one of its two lists), keeping the
/// slots of the others right. Returns whether it was there.
fn remove_from<C: Category>(
    registrations: &mut Vec<Registration<C>>,
    list: List,
    queue: &Arc<SubscriberQueue<C>>,
) -> bool {
    let slot = queue.slot(list as usize);
    let slot = if registrations.get(slot).is_some_and(|r| Arc::ptr_eq(&r.queue, queue)) {
        slot
    } else {
        // Slots are kept exact; this is a safety net, not a path taken.
        match registrations.iter().position(|r| Arc::ptr_eq(&r.queue, queue)) {
            Some(slot) => slot,
            None => return false,
        }
    };
    let removed = registrations.swap_remove(slot);
    removed.queue.set_slot(list as usize, NOT_REGISTERED);
    if let Some(moved) = registrations.get(slot) {
        moved.queue.set_slot(list as usize, slot);
    }
    true
}

impl<C: Category> ShardState<C> {
    /// Takes `queue` out of both its lists, and its user out of the shard if
    /// nothing is left of it. Returns whether it was registered.
    fn unregister(&mut self, shard: &Shard<C>, queue: &Arc<SubscriberQueue<C>>) -> bool {
        if queue.slot(List::User as usize) == NOT_REGISTERED {
            return false;
        }
        let user = queue.user();
        if let Some(entry) = self.users.get_mut(&user) {
            remove_from(&mut entry.subscribers, List::User, queue);
            if entry.is_unused() {
                self.remove_user(shard, user);
            }
        }
        queue.set_slot(List::User as usize, NOT_REGISTERED);
        remove_from(&mut self.listeners, List::Shard, queue);
        shrink_when_mostly_empty(&mut self.listeners);
        shard.subscriptions.fetch_sub(1, Ordering::Relaxed);
        shard.metrics.subscriptions(-1);
        true
    }

    /// Forgets `user`, remembering how far its dropped history reached.
    fn remove_user(&mut self, shard: &Shard<C>, user: UserId) {
        if let Some(removed) = self.users.remove(&user) {
            self.removed_until_ms = self.removed_until_ms.max(removed.history.dropped_until_ms());
            self.removed_through_seq = self.removed_through_seq.max(removed.history.last_dropped_seq());
            shard.users.fetch_sub(1, Ordering::Relaxed);
            if is_mostly_empty(self.users.len(), self.users.capacity()) {
                self.users.shrink_to(self.users.len() * 2);
            }
        }
    }
}

fn truncated_if(truncated: bool) -> ReplayStatus {
    if truncated { ReplayStatus::Truncated } else { ReplayStatus::Complete }
}

/// Whether a table or list should give memory back: when it is empty, or
/// below a quarter of a capacity past 64. It keeps twice its length, so
/// shrinking stays amortized.
fn is_mostly_empty(len: usize, capacity: usize) -> bool {
    (len == 0 && capacity > 0) || (capacity > 64 && len < capacity / 4)
}

fn shrink_when_mostly_empty<T>(list: &mut Vec<T>) {
    if is_mostly_empty(list.len(), list.capacity()) {
        list.shrink_to(list.len() * 2);
    }
}

impl<C: Category> Shared<C> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn shard_index(user: UserId) -> usize {
        let bits = user.as_uuid().as_u128();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARD_COUNT
    }

    fn shard(&self, user: UserId) -> &Shard<C> {
        &self.shards[Self::shard_index(user)]
    }

    fn subscribe_now(
        self: &Arc<Self>,
        user: UserId,
        filter: CategorySet<C>,
    ) -> Result<Subscription<C>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let shard = self.shard(user);
        let mut guard = lock(&shard.state);
        // Checked again under the lock: `close` empties each shard under it.
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let state = &mut *guard;
        let entry = state.users.entry(user).or_insert_with(|| {
            shard.users.fetch_add(1, Ordering::Relaxed);
            UserEntry::new()
        });
        let registry: Arc<dyn Registry<C>> = Arc::clone(self) as Arc<dyn Registry<C>>;
        let (queue, subscription) = subscriber_queue(user, self.config.queue_capacity, Some(registry));
        queue.set_slot(List::User as usize, entry.subscribers.len());
        queue.set_slot(List::Shard as usize, state.listeners.len());
        let registration = Registration { filter_bits: filter.bits(), queue: Arc::clone(&queue) };
        entry.subscribers.push(registration.clone());
        state.listeners.push(registration);
        shard.subscriptions.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        shard.metrics.subscriptions(1);
        Ok(subscription)
    }

    fn publish_now(&self, mut event: Event<C>) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        // A handle of its own, so that placing it under the lock copies nothing.
        event.make_unique();
        match event.audience() {
            Audience::User(user) => self.publish_to_user(user, event),
            Audience::Broadcast => self.publish_to_everyone(event),
        }
        Ok(())
    }

    /// The position of the event numbered `seq`.
    fn position(&self, seq: u64) -> Position {
        Position::entry(self.epoch_ms, seq)
    }

    fn publish_to_user(&self, user: UserId, mut event: Event<C>) {
        let retention = self.config.limits;
        let category_bit = CategorySet::only(event.category()).bits();
        let shard = self.shard(user);
        let mut counts = Delivered::default();
        let mut wakeups = Wakeups::new();
        let mut ended = Vec::new();
        let mut guard = lock(&shard.state);
        let state = &mut *guard;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        event.place(self.position(seq));
        let event = &event;
        match retention {
            Some(retention) => {
                let now_ms = self.now_ms();
                let entry = state.users.entry(user).or_insert_with(|| {
                    shard.users.fetch_add(1, Ordering::Relaxed);
                    UserEntry::new()
                });
                let mut dropped = 0;
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    dropped += entry.history.drop_retained_until(cutoff);
                }
                dropped += entry.history.push(seq, now_ms, event, retention.max_len);
                deliver(&entry.subscribers, event, category_bit, &mut counts, &mut wakeups, &mut ended);
                shard.retained_events.fetch_add(1, Ordering::Relaxed);
                shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
                if now_ms >= state.last_sweep_ms.saturating_add(retention.sweep_interval_ms()) {
                    self.sweep(shard, state, retention, now_ms);
                }
            }
            None => {
                if let Some(entry) = state.users.get(&user) {
                    deliver(&entry.subscribers, event, category_bit, &mut counts, &mut wakeups, &mut ended);
                }
            }
        }
        for queue in &ended {
            state.unregister(shard, queue);
        }
        drop(guard);
        wakeups.wake_all();
        shard.record(1, &counts);
    }

    fn publish_to_everyone(&self, mut event: Event<C>) {
        let category_bit = CategorySet::only(event.category()).bits();
        let mut wakeups = Wakeups::new();
        let mut ended = Vec::new();
        // Every shard is locked before the sequence number is taken and
        // released as soon as it has been served: each subscriber then sees
        // broadcasts and its user's events in sequence order, which is the
        // order replay merges them in.
        let mut guards: Vec<MutexGuard<'_, ShardState<C>>> =
            self.shards.iter().map(|s| lock(&s.state)).collect();
        {
            let mut broadcast = lock(&self.broadcast);
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            event.place(self.position(seq));
            if let Some(retention) = self.config.limits {
                let now_ms = self.now_ms();
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    broadcast.drop_retained_until(cutoff);
                }
                broadcast.push(seq, now_ms, &event, retention.max_len);
                self.broadcast_retained.store(broadcast.len(), Ordering::Relaxed);
            }
        }
        for (index, mut state) in guards.drain(..).enumerate() {
            let shard = &self.shards[index];
            let mut counts = Delivered::default();
            deliver(&state.listeners, &event, category_bit, &mut counts, &mut wakeups, &mut ended);
            for queue in ended.drain(..) {
                state.unregister(shard, &queue);
            }
            drop(state);
            shard.record(u64::from(index == 0), &counts);
        }
        // Only now is every shard unlocked.
        wakeups.wake_all();
    }

    /// Drops expired events of every user in the shard, and the users left with nothing.
    fn sweep(&self, shard: &Shard<C>, state: &mut ShardState<C>, retention: RetentionLimits, now_ms: u64) {
        state.last_sweep_ms = now_ms;
        let Some(cutoff) = retention.cutoff_ms(now_ms) else { return };
        let mut dropped = 0;
        let mut removed = 0;
        let mut removed_until_ms = state.removed_until_ms;
        let mut removed_through_seq = state.removed_through_seq;
        state.users.retain(|_, entry| {
            dropped += entry.history.drop_retained_until(cutoff);
            let keep = !entry.is_unused();
            if !keep {
                removed += 1;
                removed_until_ms = removed_until_ms.max(entry.history.dropped_until_ms());
                removed_through_seq = removed_through_seq.max(entry.history.last_dropped_seq());
            }
            keep
        });
        state.removed_until_ms = removed_until_ms;
        state.removed_through_seq = removed_through_seq;
        if is_mostly_empty(state.users.len(), state.users.capacity()) {
            state.users.shrink_to(state.users.len() * 2);
        }
        shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
        shard.users.fetch_sub(removed, Ordering::Relaxed);
    }

    fn replay(&self, user: UserId, last_event_id: EventId, filter: CategorySet<C>) -> Replay<C> {
        let Some(retention) = self.config.limits else { return Replay::retention_disabled() };
        let shard = self.shard(user);
        // The user's shard lock first, then the broadcast history: the order
        // broadcasts take them in. Holding both gives a snapshot consistent
        // with what this user's subscriptions have been delivered.
        let mut state = lock(&shard.state);
        let mut broadcast = lock(&self.broadcast);
        let now_ms = self.now_ms();
        let cutoff = retention.cutoff_ms(now_ms);
        if let Some(cutoff) = cutoff {
            broadcast.drop_retained_until(cutoff);
            self.broadcast_retained.store(broadcast.len(), Ordering::Relaxed);
        }
        let state = &mut *state;
        let mut entry = state.users.get_mut(&user);
        if let (Some(entry), Some(cutoff)) = (entry.as_mut(), cutoff) {
            let dropped = entry.history.drop_retained_until(cutoff);
            shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
        }
        let no_history = History::new();
        let own = entry.as_ref().map_or(&no_history, |entry| &entry.history);

        let replay = if let Some((position, seq)) = own.find(last_event_id) {
            let broadcasts = broadcast.starting_at(broadcast.first_after_seq(seq));
            backend::replay(
                last_event_id,
                ReplaySide {
                    events: own.starting_at(position + 1).map(Retained::in_publish_order),
                    holds_id: true,
                    trimmed_after_id: false,
                },
                ReplaySide {
                    events: broadcasts.map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: broadcast.last_dropped_seq() > seq,
                },
                filter,
            )
        } else if let Some((position, seq)) = broadcast.find(last_event_id) {
            // A user whose entry is gone had nothing retained after this
            // broadcast: its events would be younger than it, so unexpired.
            backend::replay(
                last_event_id,
                ReplaySide {
                    events: own.starting_at(own.first_after_seq(seq)).map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: own.last_dropped_seq() > seq,
                },
                ReplaySide {
                    events: broadcast.starting_at(position + 1).map(Retained::in_publish_order),
                    holds_id: true,
                    trimmed_after_id: false,
                },
                filter,
            )
        } else {
            let dropped_until_ms =
                own.dropped_until_ms().max(broadcast.dropped_until_ms()).max(state.removed_until_ms);
            let truncated = last_event_id.timestamp_millis().is_some_and(|ms| ms <= dropped_until_ms);
            backend::replay(
                last_event_id,
                ReplaySide {
                    events: own.starting_at(0).map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: truncated,
                },
                ReplaySide {
                    events: broadcast.starting_at(0).map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: truncated,
                },
                filter,
            )
        };
        drop(broadcast);
        if entry.is_some_and(|entry| entry.is_unused()) {
            state.remove_user(shard, user);
        }
        replay
    }

    fn replay_since(&self, user: UserId, from: Positions, filter: CategorySet<C>) -> StreamReplay<C> {
        let Some(retention) = self.config.limits else { return StreamReplay::retention_disabled() };
        let shard = self.shard(user);
        // The locks publishes of this user's streams take (shard, then
        // broadcasts): no event of either stream is numbered while they are held.
        let mut state = lock(&shard.state);
        let mut broadcast = lock(&self.broadcast);
        let now_ms = self.now_ms();
        let cutoff = retention.cutoff_ms(now_ms);
        if let Some(cutoff) = cutoff {
            broadcast.drop_retained_until(cutoff);
            self.broadcast_retained.store(broadcast.len(), Ordering::Relaxed);
        }
        let state = &mut *state;
        let mut entry = state.users.get_mut(&user);
        if let (Some(entry), Some(cutoff)) = (entry.as_mut(), cutoff) {
            let dropped = entry.history.drop_retained_until(cutoff);
            shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
        }
        let no_history = History::new();
        let own = entry.as_ref().map_or(&no_history, |entry| &entry.history);
        // Every event of these streams numbered so far is at or before it.
        let end = Some(self.position(self.next_seq.load(Ordering::Relaxed) - 1));
        let own_dropped_through = match entry {
            Some(_) => own.last_dropped_seq(),
            // A user forgotten since: as far as any forgotten user's history was dropped.
            None => state.removed_through_seq,
        };
        let dropped_until_ms =
            own.dropped_until_ms().max(broadcast.dropped_until_ms()).max(state.removed_until_ms);
        let streams = [
            (own, own_dropped_through, from.own),
            (&*broadcast, broadcast.last_dropped_seq(), from.broadcast),
        ];
        let [own_side, broadcast_side] = streams.map(|(history, dropped_through, from)| {
            // Where to start, how complete, and (after an id gone from history) which ids come after it.
            let (start, status, after_id) = match from {
                None => (history.len(), ReplayStatus::Complete, None),
                Some(Position::Entry { ms, seq }) if ms == self.epoch_ms => {
                    (history.first_after_seq(seq), truncated_if(dropped_through > seq), None)
                }
                // Numbered by an earlier hub: what came after it here is all retained, but its own history is gone.
                Some(Position::Entry { ms, .. }) if ms < self.epoch_ms => (0, ReplayStatus::Truncated, None),
                // Not a position this hub, or one before it, gave out.
                Some(Position::Entry { .. }) => (0, ReplayStatus::UnknownId, None),
                Some(Position::AfterEvent(id)) => match own.find(id).or_else(|| broadcast.find(id)) {
                    Some((_, seq)) => {
                        (history.first_after_seq(seq), truncated_if(dropped_through > seq), None)
                    }
                    // Gone from history: what followed it is told by id order (ids made by
                    // `EventId::new` ascend in publish order).
                    None if id.timestamp_millis().is_some_and(|ms| ms <= dropped_until_ms) => {
                        (0, ReplayStatus::Truncated, Some(id))
                    }
                    None => (0, ReplayStatus::UnknownId, None),
                },
            };
            StreamSide {
                events: history
                    .starting_at(start)
                    .filter(move |retained| after_id.is_none_or(|id| retained.event.id() > id))
                    .map(|retained| (self.position(retained.seq), &retained.event)),
                status,
                end,
            }
        });
        let replay = backend::stream_replay(own_side, broadcast_side, filter);
        drop(broadcast);
        if entry.is_some_and(|entry| entry.is_unused()) {
            state.remove_user(shard, user);
        }
        replay
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for shard in self.shards.iter() {
            let mut wakeups = Wakeups::new();
            let mut guard = lock(&shard.state);
            let state = &mut *guard;
            let unregistered = state.listeners.len();
            for registration in state.listeners.drain(..) {
                registration.queue.set_slot(List::User as usize, NOT_REGISTERED);
                registration.queue.set_slot(List::Shard as usize, NOT_REGISTERED);
                registration.queue.close(&mut wakeups);
            }
            let mut removed = 0;
            let mut removed_until_ms = state.removed_until_ms;
            let mut removed_through_seq = state.removed_through_seq;
            state.users.retain(|_, entry| {
                entry.subscribers.clear();
                let keep = !entry.is_unused();
                if !keep {
                    removed += 1;
                    removed_until_ms = removed_until_ms.max(entry.history.dropped_until_ms());
                    removed_through_seq = removed_through_seq.max(entry.history.last_dropped_seq());
                }
                keep
            });
            state.removed_until_ms = removed_until_ms;
            state.removed_through_seq = removed_through_seq;
            state.users.shrink_to(state.users.len() * 2);
            state.listeners = Vec::new();
            drop(guard);
            wakeups.wake_all();
            shard.subscriptions.fetch_sub(unregistered, Ordering::Relaxed);
            shard.metrics.subscriptions(-(unregistered as i64));
            shard.users.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    fn purge_expired(&self) {
        let Some(retention) = self.config.limits else { return };
        let now_ms = self.now_ms();
        for shard in self.shards.iter() {
            let mut state = lock(&shard.state);
            self.sweep(shard, &mut state, retention, now_ms);
        }
        if let Some(cutoff) = retention.cutoff_ms(now_ms) {
            let mut broadcast = lock(&self.broadcast);
            broadcast.drop_retained_until(cutoff);
            self.broadcast_retained.store(broadcast.len(), Ordering::Relaxed);
        }
    }
}

impl<C: Category> Shard<C> {
    fn record(&self, published: u64, counts: &Delivered) {
        if published > 0 {
            self.published.fetch_add(published, Ordering::Relaxed);
        }
        if counts.queued > 0 {
            self.delivered.fetch_add(counts.queued, Ordering::Relaxed);
        }
        if counts.lagged > 0 {
            self.lagged.fetch_add(counts.lagged, Ordering::Relaxed);
        }
        self.metrics.delivered(counts.queued);
        self.metrics.lagged(counts.lagged);
    }
}

impl<C: Category> MemoryHub<C> {
    /// A hub with the default settings: retention of 1000 events and one hour
    /// per audience, queues of 1024 events.
    pub fn new() -> Self {
        MemoryHubBuilder::default().build()
    }

    /// A builder to configure retention and queue capacity.
    pub fn builder() -> MemoryHubBuilder<C> {
        MemoryHubBuilder::default()
    }

    /// A snapshot of the hub's counters; reads atomics only, takes no lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssehub::{fixture::ExampleCategory, memory::MemoryHub, CategorySet, EventSource, UserId};
    ///
    /// let hub = MemoryHub::<ExampleCategory>::new();
    /// let user = UserId::from_uuid(uuid::Uuid::from_u128(7));
    /// let subscription = futures::executor::block_on(hub.subscribe(user, CategorySet::all())).unwrap();
    /// assert_eq!(hub.stats().open_subscriptions, 1);
    /// drop(subscription);
    /// assert_eq!(hub.stats().open_subscriptions, 0);
    /// assert_eq!(hub.stats().users, 0);
    /// ```
    pub fn stats(&self) -> HubStats {
        let mut stats = HubStats::default();
        for shard in self.shared.shards.iter() {
            stats.open_subscriptions += shard.subscriptions.load(Ordering::Relaxed);
            stats.users += shard.users.load(Ordering::Relaxed);
            stats.retained_events += shard.retained_events.load(Ordering::Relaxed);
            stats.published += shard.published.load(Ordering::Relaxed);
            stats.delivered += shard.delivered.load(Ordering::Relaxed);
            stats.lagged += shard.lagged.load(Ordering::Relaxed);
        }
        stats.retained_events += self.shared.broadcast_retained.load(Ordering::Relaxed);
        stats
    }

    /// Drops every expired event and the users left with nothing.
    ///
    /// The hub does this on its own as events are published; call it from a
    /// timer to release memory of a hub that has gone quiet.
    pub fn purge_expired(&self) {
        self.shared.purge_expired();
    }

    /// Shuts the hub down: every subscription yields what is queued for it
    /// and ends; later publishes and subscribes fail with [`Error::Closed`].
    /// Retained events stay readable through `missed_events`.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How much history each audience keeps (`None`: none).
    pub fn retention(&self) -> Option<Retention> {
        self.shared.config.retention
    }
}

impl<C: Category> Default for MemoryHub<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Category> Clone for MemoryHub<C> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<C: Category> Drop for MemoryHub<C> {
    /// Dropping the last handle closes the hub, as [`close`](MemoryHub::close)
    /// does: nothing could publish to its subscriptions any more.
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<C: Category> fmt::Debug for MemoryHub<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHub")
            .field("retention", &self.shared.config.retention)
            .field("queue_capacity", &self.shared.config.queue_capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<C: Category> EventSource<C> for MemoryHub<C> {
    type Subscription = Subscription<C>;

    /// Registers the subscription at once: it is live when this resolves.
    ///
    /// Fails with [`Error::Closed`] after [`close`](MemoryHub::close).
    async fn subscribe(&self, user: UserId, filter: CategorySet<C>) -> Result<Subscription<C>, Error> {
        self.shared.subscribe_now(user, filter)
    }

    /// Never fails; without retention the replay is
    /// [`RetentionDisabled`](crate::ReplayStatus::RetentionDisabled).
    async fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> Result<Replay<C>, Error> {
        let replay = async { Ok(self.shared.replay(user, last_event_id, filter)) };
        crate::metrics::observe_replay(crate::metrics::Backend::Memory, replay).await
    }

    /// Never fails; without retention each stream is
    /// [`RetentionDisabled`](crate::ReplayStatus::RetentionDisabled).
    ///
    /// Positions are `ms`-`seq` with `ms` the time the hub was made: a
    /// position of an earlier hub (the process restarted) gets every retained
    /// event of its stream, as [`Truncated`](crate::ReplayStatus::Truncated).
    async fn missed_since(
        &self,
        user: UserId,
        from: Positions,
        filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        let replay = async { Ok(self.shared.replay_since(user, from, filter)) };
        crate::metrics::observe_stream_replay(crate::metrics::Backend::Memory, from, replay).await
    }
}

impl<C: Category> Publisher<C> for MemoryHub<C> {
    /// Retains the event and queues it for every matching subscription before
    /// it resolves. Fails with [`Error::Closed`] after [`close`](MemoryHub::close).
    async fn publish(&self, event: Event<C>) -> Result<(), Error> {
        let audience = event.audience();
        let outcome = self.shared.publish_now(event);
        self.shared.shards[0].metrics.published(audience, &outcome);
        outcome
    }
}
