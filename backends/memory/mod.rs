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

mod builder;
mod groups;
mod history;
mod publish;
mod registrations;
mod replay;
mod shards;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use crate::backend::Subscription;

use builder::Config;
pub use builder::MemoryHubBuilder;
use groups::GroupTable;
use history::History;
use registrations::Registration;
use shards::{List, Shard, UserEntry};

use crate::backend::{NOT_REGISTERED, OpenSubscriptions, Registry, Wakeups, subscriber_queue};

use crate::{
    Category, CategorySet, Error, Event, EventId, EventSource, Position, Positions, Presence, Publisher,
    Reader, Replay, Retention, StreamReplay, UserId,
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
    /// Groups with at least one subscription now.
    pub open_groups: usize,
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
    /// The open subscriptions, all shards together (each shard holds it too).
    open: Arc<OpenSubscriptions>,
    closed: AtomicBool,
    shards: Box<[Shard<C>]>,
    broadcast: Mutex<History<C>>,
    /// How many broadcasts are retained, readable without the broadcast lock.
    broadcast_retained: AtomicUsize,
    /// Every group's subscriptions and retained events.
    groups: Arc<GroupTable<C>>,
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
        reader: Reader,
        filter: CategorySet<C>,
    ) -> Result<Subscription<C>, Error> {
        let Reader { user, groups } = reader;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.open.reserve(&self.config.subscription_limits)?;
        let shard = self.shard(user);
        let mut guard = lock(&shard.state);
        // Checked again under the lock: `close` empties each shard under it.
        let refused = if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            let open_for_user = guard.users.get(&user).map_or(0, |entry| entry.subscribers.len());
            self.config.subscription_limits.check_user(open_for_user)
        };
        if let Err(error) = refused {
            drop(guard);
            self.open.release(1);
            if matches!(error, Error::TooManySubscriptions { .. }) {
                crate::metrics::disconnects(crate::metrics::Disconnect::Limit, 1);
            }
            return Err(error);
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
        let registration = Registration { filter_bits: filter.bits(), queue: Arc::clone(&queue), groups };
        let first = entry.subscribers.is_empty();
        entry.subscribers.push(registration.clone());
        // In its groups' lists before the user's shard lets go: live for them too when this returns.
        if !registration.groups.is_empty() {
            self.groups.register(&registration);
        }
        state.listeners.push(registration);
        shard.subscriptions.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        shard.metrics.subscriptions(1);
        if first {
            shard.online.fetch_add(1, Ordering::Relaxed);
            crate::metrics::online_users(crate::metrics::Backend::Memory, 1);
        }
        Ok(subscription)
    }

    /// Revokes and unregisters every subscription of `user`.
    fn disconnect_now(&self, user: UserId) {
        let shard = self.shard(user);
        let mut wakeups = Wakeups::new();
        let mut guard = lock(&shard.state);
        let queues: Vec<_> = guard
            .users
            .get(&user)
            .map(|entry| {
                entry.subscribers.iter().map(|registration| Arc::clone(&registration.queue)).collect()
            })
            .unwrap_or_default();
        for queue in &queues {
            queue.revoke(&mut wakeups);
            guard.unregister(shard, queue);
        }
        drop(guard);
        wakeups.wake_all();
        crate::metrics::disconnects(crate::metrics::Disconnect::Revoked, queues.len() as u64);
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
            let online = state.users.values().filter(|entry| !entry.subscribers.is_empty()).count();
            shard.online.fetch_sub(online, Ordering::Relaxed);
            crate::metrics::online_users(crate::metrics::Backend::Memory, -(online as i64));
            let removed = state.forget_unused_users(|entry| entry.subscribers.clear());
            state.users.shrink_to(state.users.len() * 2);
            state.listeners = Vec::new();
            drop(guard);
            wakeups.wake_all();
            shard.subscriptions.fetch_sub(unregistered, Ordering::Relaxed);
            self.open.release(unregistered);
            shard.metrics.subscriptions(-(unregistered as i64));
            shard.users.fetch_sub(removed, Ordering::Relaxed);
        }
        self.groups.clear_subscribers();
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
            drop(broadcast);
            self.groups.drop_expired(cutoff);
        }
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
        stats.retained_events += self.shared.groups.retained.load(Ordering::Relaxed);
        stats.open_groups = self.shared.groups.open_groups();
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
    async fn subscribe(
        &self,
        reader: impl Into<Reader> + Send,
        filter: CategorySet<C>,
    ) -> Result<Subscription<C>, Error> {
        self.shared.subscribe_now(reader.into(), filter)
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
        reader: impl Into<Reader> + Send,
        from: Positions,
        filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        let reader = reader.into();
        let replay = async { Ok(self.shared.replay_since(&reader, &from, filter)) };
        crate::metrics::observe_stream_replay(crate::metrics::Backend::Memory, from.clone(), replay).await
    }

    /// The hub's next publish number: every stream is numbered from one
    /// sequence, so this orders exactly against every stream.
    fn horizon(&self) -> Option<Position> {
        Some(self.shared.position(self.shared.next_seq.load(Ordering::Acquire) - 1))
    }

    /// Ends the user's subscriptions in this hub before it resolves (this
    /// process is the whole backend). Never fails.
    async fn disconnect(&self, user: UserId) -> Result<(), Error> {
        self.shared.disconnect_now(user);
        Ok(())
    }
}

impl<C: Category> Presence for MemoryHub<C> {
    /// The user's subscriptions open in this hub now. Never fails.
    async fn streams_of(&self, user: UserId) -> Result<usize, Error> {
        let shard = self.shared.shard(user);
        Ok(lock(&shard.state).users.get(&user).map_or(0, |entry| entry.subscribers.len()))
    }

    /// Users with a subscription open in this hub now. Never fails.
    async fn online_users(&self) -> Result<usize, Error> {
        Ok(self.shared.shards.iter().map(|shard| shard.online.load(Ordering::Relaxed)).sum())
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
