//! Counters of a hub and their cheap snapshot, `HubStats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::codec::Skip;

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

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) open_subscriptions: AtomicU64,
    pub(crate) redis_channels: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) message_channel_overflows: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Counts and logs a message or stream entry that could not be decoded.
    pub(crate) fn skipped(&self, source: &str, reason: &Skip) {
        Self::add(&self.skipped, 1);
        tracing::warn!(source, %reason, "skipped a malformed event");
    }

    /// Counts and logs events read back from the streams by a recovery.
    pub(crate) fn recovered_events(&self, events: u64) {
        Self::add(&self.recovered, events);
        if events > 0 {
            tracing::info!(
                recovered = events,
                "recovered events published during an outage from the streams"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> HubStats {
        HubStats {
            open_subscriptions: usize::try_from(self.open_subscriptions.load(Relaxed)).unwrap_or(usize::MAX),
            redis_channels: self.redis_channels.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            lagged: self.lagged.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            recovered: self.recovered.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            message_channel_overflows: self.message_channel_overflows.load(Relaxed),
        }
    }
}
