//! Counters of a hub and their cheap snapshot, `HubStats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::codec::Skip;
use crate::metrics;

/// A snapshot of a hub's counters, from [`RedisHub::stats`](super::RedisHub::stats).
///
/// Gauges (`open_subscriptions`, `redis_channels`) are current values; the
/// others count since the hub was connected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[non_exhaustive]
pub struct HubStats {
    /// Subscriptions open in this process.
    pub open_subscriptions: usize,
    /// Redis pub/sub channels held on the subscriber connection (the broadcast channel included).
    pub redis_channels: u64,
    /// Events put in subscribers' queues, live and recovered.
    pub delivered: u64,
    /// Subscriptions ended because their queue was full.
    pub lagged: u64,
    /// Messages and stream entries skipped as malformed, oversize, of an unknown category or of another user.
    pub skipped: u64,
    /// Events read back from the streams after a reconnect or an overflow of the client's message channel.
    pub recovered: u64,
    /// Gap signals given to subscribers, where events could not be recovered.
    pub gaps: u64,
    /// Reconnects of the subscriber connection.
    pub reconnects: u64,
    /// Overflows of the Redis client's internal message channel (each recovered from the streams).
    pub message_channel_overflows: u64,
}

/// What a counter of the hub also feeds among the operator metrics (`crate::metrics`).
#[derive(Clone, Copy)]
enum Metric {
    None,
    OpenSubscriptions,
    Delivered,
    Lagged,
    Gaps,
    Reconnects,
}

/// One counter of the hub: its value for [`HubStats`], and the operator metric it feeds.
pub(crate) struct Counter {
    value: AtomicU64,
    metric: Metric,
}

impl Counter {
    const fn feeding(metric: Metric) -> Self {
        Self { value: AtomicU64::new(0), metric }
    }

    fn load(&self) -> u64 {
        self.value.load(Relaxed)
    }

    /// Its value now.
    pub(crate) fn get(&self) -> u64 {
        self.load()
    }
}

pub(crate) struct Counters {
    pub(crate) open_subscriptions: Counter,
    pub(crate) redis_channels: Counter,
    pub(crate) delivered: Counter,
    pub(crate) lagged: Counter,
    pub(crate) skipped: Counter,
    pub(crate) recovered: Counter,
    pub(crate) gaps: Counter,
    pub(crate) reconnects: Counter,
    pub(crate) message_channel_overflows: Counter,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            open_subscriptions: Counter::feeding(Metric::OpenSubscriptions),
            redis_channels: Counter::feeding(Metric::None),
            delivered: Counter::feeding(Metric::Delivered),
            lagged: Counter::feeding(Metric::Lagged),
            skipped: Counter::feeding(Metric::None),
            // Fed by `recovered_events`, which also counts the recovery.
            recovered: Counter::feeding(Metric::None),
            gaps: Counter::feeding(Metric::Gaps),
            reconnects: Counter::feeding(Metric::Reconnects),
            message_channel_overflows: Counter::feeding(Metric::None),
        }
    }
}

impl Counters {
    pub(crate) fn add(counter: &Counter, n: u64) {
        counter.value.fetch_add(n, Relaxed);
        let backend = metrics::Backend::Redis;
        match counter.metric {
            Metric::None => {}
            Metric::OpenSubscriptions => metrics::subscriptions(backend, n as i64),
            Metric::Delivered => metrics::delivered(backend, n),
            Metric::Lagged => metrics::lagged(backend, n),
            Metric::Gaps => metrics::gaps(backend, metrics::GapAt::Live, n),
            Metric::Reconnects => metrics::redis_reconnects(n),
        }
    }

    /// Lowers a gauge (`open_subscriptions`, `redis_channels`).
    pub(crate) fn sub(counter: &Counter, n: u64) {
        counter.value.fetch_sub(n, Relaxed);
        if let Metric::OpenSubscriptions = counter.metric {
            metrics::subscriptions(metrics::Backend::Redis, -(n as i64));
        }
    }

    /// Counts and logs a message or stream entry that could not be decoded.
    pub(crate) fn skipped(&self, source: &str, reason: &Skip) {
        Self::add(&self.skipped, 1);
        tracing::warn!(source, %reason, "skipped a malformed event");
    }

    /// Counts and logs events read back from the streams by a recovery.
    pub(crate) fn recovered_events(&self, events: u64) {
        Self::add(&self.recovered, events);
        metrics::redis_recovery(events);
        if events > 0 {
            tracing::info!(
                recovered = events,
                "recovered events published during an outage from the streams"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> HubStats {
        HubStats {
            open_subscriptions: usize::try_from(self.open_subscriptions.load()).unwrap_or(usize::MAX),
            redis_channels: self.redis_channels.load(),
            delivered: self.delivered.load(),
            lagged: self.lagged.load(),
            skipped: self.skipped.load(),
            recovered: self.recovered.load(),
            gaps: self.gaps.load(),
            reconnects: self.reconnects.load(),
            message_channel_overflows: self.message_channel_overflows.load(),
        }
    }
}
