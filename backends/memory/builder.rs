//! Building a hub: the builder, and the configuration its hub keeps.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::groups::GroupTable;
use super::history::{History, RetentionLimits};
use super::shards::Shard;
use super::{DEFAULT_QUEUE_CAPACITY, MemoryHub, SHARD_COUNT, Shared};
use crate::backend::{OpenSubscriptions, SubscriptionLimits};
use crate::{Category, Retention};

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
    subscription_limits: SubscriptionLimits,
    _category: PhantomData<fn() -> C>,
}

impl<C: Category> Default for MemoryHubBuilder<C> {
    fn default() -> Self {
        Self {
            retention: Some(Retention::default()),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            subscription_limits: SubscriptionLimits::new(),
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
            .field("subscription_limits", &self.subscription_limits)
            .finish()
    }
}

impl<C: Category> MemoryHubBuilder<C> {
    /// How much history each audience (each user, and the broadcasts) keeps
    /// for replay; `None` keeps none. Default: [`Retention::default`] (1000
    /// events, one hour). Trimming is always exact here.
    ///
    /// Without retention, [`missed_events`](crate::EventSource::missed_events)
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

    /// At most `max` subscriptions open per user (`0` is taken as `1`).
    /// Default: [`SubscriptionLimits::DEFAULT_PER_USER`] (64).
    ///
    /// One more fails with [`Error::TooManySubscriptions`](crate::Error::TooManySubscriptions)
    /// before anything is registered; a dropped or ended subscription frees its place at once.
    pub fn max_subscriptions_per_user(mut self, max: usize) -> Self {
        self.subscription_limits = self.subscription_limits.per_user(max);
        self
    }

    /// At most `max` subscriptions open on the hub, all users together (`0` is
    /// taken as `1`). Default: [`SubscriptionLimits::DEFAULT_PER_PROCESS`] (1,000,000).
    pub fn max_subscriptions(mut self, max: usize) -> Self {
        self.subscription_limits = self.subscription_limits.per_process(max);
        self
    }

    /// Builds the hub.
    pub fn build(self) -> MemoryHub<C> {
        let limits = self.retention.map(|retention| RetentionLimits {
            max_len: usize::try_from(retention.max_events()).unwrap_or(usize::MAX),
            max_age_ms: u64::try_from(retention.max_age().as_millis()).unwrap_or(u64::MAX),
        });
        let config = Config {
            retention: self.retention,
            limits,
            queue_capacity: self.queue_capacity.max(1),
            subscription_limits: self.subscription_limits,
        };
        let open = Arc::new(OpenSubscriptions::new());
        let groups = Arc::new(GroupTable::new());
        MemoryHub {
            shared: Arc::new(Shared {
                config,
                epoch: Instant::now(),
                epoch_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX).max(1)),
                next_seq: AtomicU64::new(1),
                handles: AtomicUsize::new(1),
                open: Arc::clone(&open),
                closed: AtomicBool::new(false),
                shards: (0..SHARD_COUNT)
                    .map(|_| Shard::new(Arc::clone(&open), Arc::clone(&groups)))
                    .collect(),
                broadcast: Mutex::new(History::new()),
                broadcast_retained: AtomicUsize::new(0),
                groups,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Config {
    /// As configured, for [`MemoryHub::retention`].
    pub(super) retention: Option<Retention>,
    pub(super) limits: Option<RetentionLimits>,
    pub(super) queue_capacity: usize,
    pub(super) subscription_limits: SubscriptionLimits,
}
