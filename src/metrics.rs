//! Operator metrics: what the hubs record through the [`metrics`](https://docs.rs/metrics) crate facade, under which names and labels.
//!
//! With the `metrics` feature the backends record the figures below through
//! the `metrics` facade, so any exporter installed in the process (Prometheus,
//! StatsD, OpenTelemetry, ...) receives them; without the feature nothing is
//! recorded and nothing is compiled in. No metric carries a user id, a group id or an
//! event id: every label takes a handful of values.
//!
//! | name | type | labels | what it counts |
//! |---|---|---|---|
//! | `ssehub_events_published_total` | counter | `backend`, `audience` | events accepted by `publish` (stored and sent) |
//! | `ssehub_publish_refused_total` | counter | `backend`, `reason` | `publish` calls that failed: the event was refused |
//! | `ssehub_events_delivered_total` | counter | `backend` | events put in subscribers' queues (one per subscriber), live and recovered |
//! | `ssehub_subscribers_lagged_total` | counter | `backend` | subscriptions ended with `Error::Lagged` (queue full) |
//! | `ssehub_gaps_signalled_total` | counter | `backend`, `at` | gaps: `at="live"`, gap signals given to open subscriptions; `at="replay"`, replays that could not cover what was missed (each a gap signal through `resume`) |
//! | `ssehub_subscriptions_open` | gauge | `backend` | subscriptions open in this process |
//! | `ssehub_online_users` | gauge | `backend` | users with at least one subscription open in this process |
//! | `ssehub_group_streams_open` | gauge | `backend` | groups with at least one subscription in this process (on Redis, its subscribed group channels) |
//! | `ssehub_disconnects_total` | counter | `reason` | streams ended or refused, by why (see below) |
//! | `ssehub_replay_duration_seconds` | histogram | `backend`, `status` | time taken by `missed_events`, by outcome |
//! | `ssehub_redis_reconnects_total` | counter | | reconnects of the Redis subscriber connection |
//! | `ssehub_redis_recoveries_total` | counter | | recoveries from the streams after a reconnect or a message-channel overflow |
//! | `ssehub_redis_recovered_events_total` | counter | | events those recoveries read back |
//!
//! Label values:
//!
//! - `backend`: `memory` or `redis`;
//! - `audience`: `user`, `broadcast` or `group`;
//! - `reason`: `closed` (the hub was shut down) or `backend` (Redis refused
//!   or failed: timeout, `maxmemory`, connection lost);
//! - `status`: `complete`, `truncated`, `unknown_id`, `retention_disabled`,
//!   or `error` when the replay itself failed;
//! - `reason` of a disconnect: `lag` (the queue filled), `revoked`
//!   ([`disconnect`](crate::EventSource::disconnect)), `limit` (a subscribe
//!   refused by a cap), counted by the backends for every subscription; and,
//!   for streams served through [`SseStream`](crate::sse::SseStream),
//!   `expired` (its deadline passed), `shutdown` (its `Shutdown` triggered, or
//!   the hub closed) and `closed` (the client went away: the body was dropped
//!   before it ended).
//!
//! Install the recorder before building the hubs: the memory hub takes its
//! metric handles when it is built, so that counting costs an atomic add.
//!
//! The histogram is recorded in seconds; exporters that need buckets (the
//! Prometheus one renders summaries otherwise) can take
//! [`REPLAY_BUCKETS_SECONDS`]. [`describe`] registers each metric's help text
//! and unit with the installed recorder.
//!
//! # Example
//!
//! Exposing the metrics in Prometheus text, here with
//! `metrics-exporter-prometheus` rendering into a route of your own:
//!
//! ```
//! # #[cfg(all(feature = "metrics", feature = "memory"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use ssehub::fixture::ExampleCategory as C;
//! use ssehub::{Audience, Event, Publisher, memory::MemoryHub};
//!
//! let prometheus = PrometheusBuilder::new()
//!     .set_buckets_for_metric(
//!         Matcher::Full(ssehub::metrics::REPLAY_DURATION.into()),
//!         ssehub::metrics::REPLAY_BUCKETS_SECONDS,
//!     )?
//!     .install_recorder()?;
//! ssehub::metrics::describe();
//!
//! let hub = MemoryHub::<C>::new();
//! let event = Event::new(Audience::Broadcast, "notice", C::Security, "{}")?;
//! futures::executor::block_on(hub.publish(event))?;
//!
//! // In the `/metrics` handler:
//! let body: String = prometheus.render();
//! assert!(body.contains(r#"ssehub_events_published_total{backend="memory",audience="broadcast"}"#));
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "metrics", feature = "memory")))]
//! # fn main() {}
//! ```
//!
//! The demo (`examples/demo`) serves them this way at `/metrics`.

// The recording hooks below are called by the backends compiled in; with fewer than all of them
// (or without the `metrics` feature, where the replay hook records no gap) some go unused.
#![cfg_attr(not(all(feature = "memory", feature = "fred", feature = "metrics")), allow(dead_code))]

/// Events accepted by `publish`; labels `backend`, `audience`.
pub const EVENTS_PUBLISHED: &str = "ssehub_events_published_total";
/// `publish` calls that failed; labels `backend`, `reason`.
pub const PUBLISH_REFUSED: &str = "ssehub_publish_refused_total";
/// Events put in subscribers' queues; label `backend`.
pub const EVENTS_DELIVERED: &str = "ssehub_events_delivered_total";
/// Subscriptions ended because their queue was full; label `backend`.
pub const SUBSCRIBERS_LAGGED: &str = "ssehub_subscribers_lagged_total";
/// Gap signals; labels `backend`, `at` (`live` or `replay`).
pub const GAPS_SIGNALLED: &str = "ssehub_gaps_signalled_total";
/// Subscriptions open now (a gauge); label `backend`.
pub const SUBSCRIPTIONS_OPEN: &str = "ssehub_subscriptions_open";
/// Time taken by `missed_events`, in seconds (a histogram); labels `backend`, `status`.
pub const REPLAY_DURATION: &str = "ssehub_replay_duration_seconds";
/// Reconnects of the Redis subscriber connection.
pub const REDIS_RECONNECTS: &str = "ssehub_redis_reconnects_total";
/// Recoveries from the Redis streams.
pub const REDIS_RECOVERIES: &str = "ssehub_redis_recoveries_total";
/// Events read back by recoveries from the Redis streams.
pub const REDIS_RECOVERED_EVENTS: &str = "ssehub_redis_recovered_events_total";
/// Users with at least one subscription open in this process (a gauge); label `backend`.
pub const ONLINE_USERS: &str = "ssehub_online_users";
/// Gauge: groups with at least one subscription in this process.
pub const GROUP_STREAMS_OPEN: &str = "ssehub_group_streams_open";
/// Streams ended or subscribes refused, by why; label `reason`.
pub const DISCONNECTS: &str = "ssehub_disconnects_total";

/// Bucket bounds for [`REPLAY_DURATION`], in seconds: 100 µs to 10 s.
pub const REPLAY_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Registers the help text and unit of every metric above with the installed recorder.
///
/// Optional: exporters print the help lines only for described metrics. Call it
/// after installing the recorder.
#[cfg(feature = "metrics")]
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_PUBLISHED, Unit::Count, "Events accepted by publish.");
    describe_counter!(PUBLISH_REFUSED, Unit::Count, "Publish calls that failed; the event was refused.");
    describe_counter!(
        EVENTS_DELIVERED,
        Unit::Count,
        "Events put in subscribers' queues, live and recovered."
    );
    describe_counter!(SUBSCRIBERS_LAGGED, Unit::Count, "Subscriptions ended because their queue was full.");
    describe_counter!(GAPS_SIGNALLED, Unit::Count, "Gap signals: events may have been lost.");
    describe_gauge!(SUBSCRIPTIONS_OPEN, Unit::Count, "Subscriptions open in this process.");
    describe_histogram!(REPLAY_DURATION, Unit::Seconds, "Time taken by missed_events.");
    describe_counter!(REDIS_RECONNECTS, Unit::Count, "Reconnects of the Redis subscriber connection.");
    describe_counter!(REDIS_RECOVERIES, Unit::Count, "Recoveries from the Redis streams.");
    describe_counter!(REDIS_RECOVERED_EVENTS, Unit::Count, "Events read back by recoveries.");
    describe_gauge!(ONLINE_USERS, Unit::Count, "Users with a subscription open in this process.");
    describe_gauge!(GROUP_STREAMS_OPEN, Unit::Count, "Groups with a subscription open in this process.");
    describe_counter!(DISCONNECTS, Unit::Count, "Streams ended or refused, by reason.");
}

/// Why a stream ended or a subscribe was refused: the `reason` label of [`DISCONNECTS`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Disconnect {
    Lag,
    Revoked,
    Limit,
    Expired,
    Shutdown,
    Closed,
}

/// Records `n` disconnects for `reason`.
#[inline]
pub(crate) fn disconnects(reason: Disconnect, n: u64) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        let reason = match reason {
            Disconnect::Lag => "lag",
            Disconnect::Revoked => "revoked",
            Disconnect::Limit => "limit",
            Disconnect::Expired => "expired",
            Disconnect::Shutdown => "shutdown",
            Disconnect::Closed => "closed",
        };
        ::metrics::counter!(DISCONNECTS, "reason" => reason).increment(n);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, n);
}

/// Records `delta` users coming online (positive) or going offline (negative) in this process.
#[inline]
pub(crate) fn online_users(backend: Backend, delta: i64) {
    #[cfg(feature = "metrics")]
    if delta != 0 {
        ::metrics::gauge!(ONLINE_USERS, "backend" => backend.label()).increment(delta as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, delta);
}

/// Records `delta` groups gaining their first subscription in this process (positive) or losing their last (negative).
#[inline]
pub(crate) fn open_groups(backend: Backend, delta: i64) {
    #[cfg(feature = "metrics")]
    if delta != 0 {
        ::metrics::gauge!(GROUP_STREAMS_OPEN, "backend" => backend.label()).increment(delta as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, delta);
}

/// The `backend` label.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Backend {
    Memory,
    Redis,
}

#[cfg(feature = "metrics")]
impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

/// Where a gap was signalled: the `at` label.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum GapAt {
    Live,
    Replay,
}

/// Records a `publish` outcome of `event`.
#[inline]
pub(crate) fn published(
    backend: Backend,
    event_audience: crate::Audience,
    outcome: &Result<(), crate::Error>,
) {
    #[cfg(feature = "metrics")]
    match outcome {
        Ok(()) => {
            let audience = match event_audience {
                crate::Audience::User(_) => "user",
                crate::Audience::Broadcast => "broadcast",
                crate::Audience::Group(_) => "group",
            };
            ::metrics::counter!(EVENTS_PUBLISHED, "backend" => backend.label(), "audience" => audience)
                .increment(1);
        }
        Err(error) => {
            let reason = match error {
                crate::Error::Closed => "closed",
                _ => "backend",
            };
            ::metrics::counter!(PUBLISH_REFUSED, "backend" => backend.label(), "reason" => reason)
                .increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, event_audience, outcome);
}

/// Wraps a `publish` future so that its outcome is recorded.
#[cfg(feature = "metrics")]
pub(crate) async fn observe_publish<F>(backend: Backend, audience: crate::Audience, publish: F) -> F::Output
where
    F: core::future::Future<Output = Result<(), crate::Error>>,
{
    let outcome = publish.await;
    published(backend, audience, &outcome);
    outcome
}

/// Without the `metrics` feature: `publish` itself.
#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn observe_publish<F>(_backend: Backend, _audience: crate::Audience, publish: F) -> F {
    publish
}

/// Wraps a `missed_events` future so that its duration and outcome are recorded.
#[cfg(feature = "metrics")]
pub(crate) async fn observe_replay<C: crate::Category, F>(backend: Backend, replay: F) -> F::Output
where
    F: core::future::Future<Output = Result<crate::Replay<C>, crate::Error>>,
{
    let started = std::time::Instant::now();
    let outcome = replay.await;
    replayed(backend, started, outcome.as_ref().map(|replay| replay.status));
    outcome
}

/// Without the `metrics` feature: `missed_events` itself.
#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn observe_replay<F>(_backend: Backend, replay: F) -> F {
    replay
}

/// Runs a backend's `missed_since` future, recording its duration and
/// outcome as a replay: the first stream with a position whose status is not
/// complete gives it, else complete. A first connection (no position at all)
/// only reads where each stream is: it is not a replay, and is not recorded.
#[cfg(feature = "metrics")]
pub(crate) async fn observe_stream_replay<C: crate::Category, F>(
    backend: Backend,
    from: crate::Positions,
    replay: F,
) -> F::Output
where
    F: core::future::Future<Output = Result<crate::StreamReplay<C>, crate::Error>>,
{
    if from == crate::Positions::NONE {
        return replay.await;
    }
    let started = std::time::Instant::now();
    let outcome = replay.await;
    let status = outcome.as_ref().map(|replay| {
        let fixed = crate::StreamKind::ALL.into_iter().filter(|kind| from.start_of(*kind).is_some());
        fixed
            .map(|kind| replay.stream(kind).status)
            .chain(replay.groups.iter().map(|(_, read)| read.status))
            .find(|status| !status.is_complete())
            .unwrap_or(crate::ReplayStatus::Complete)
    });
    replayed(backend, started, status);
    outcome
}

/// Without the `metrics` feature: `missed_since` itself.
#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn observe_stream_replay<F>(_backend: Backend, _from: crate::Positions, replay: F) -> F {
    replay
}

/// Records a replay that began at `started` and ended with `status` (or an error).
#[cfg(feature = "metrics")]
pub(crate) fn replayed<E>(
    backend: Backend,
    started: std::time::Instant,
    status: Result<crate::ReplayStatus, E>,
) {
    use crate::ReplayStatus;
    let status = match status {
        Ok(ReplayStatus::Complete) => "complete",
        Ok(ReplayStatus::Truncated) => "truncated",
        Ok(ReplayStatus::UnknownId) => "unknown_id",
        Ok(ReplayStatus::RetentionDisabled) => "retention_disabled",
        Err(_) => "error",
    };
    ::metrics::histogram!(REPLAY_DURATION, "backend" => backend.label(), "status" => status)
        .record(started.elapsed().as_secs_f64());
    if status != "complete" && status != "error" {
        gaps(backend, GapAt::Replay, 1);
    }
}

/// Metric handles taken once, when a hub is built, so that recording is an atomic add instead of a
/// registry lookup per call (the memory hub publishes millions of events a second).
#[cfg(feature = "metrics")]
#[derive(Clone)]
pub(crate) struct Handles {
    published_user: ::metrics::Counter,
    published_broadcast: ::metrics::Counter,
    published_group: ::metrics::Counter,
    delivered: ::metrics::Counter,
    lagged: ::metrics::Counter,
    subscriptions: ::metrics::Gauge,
    backend: Backend,
}

#[cfg(feature = "metrics")]
impl Handles {
    /// Registers the handles with the recorder installed now (a later recorder sees nothing of them).
    pub(crate) fn new(backend: Backend) -> Self {
        let label = backend.label();
        Self {
            published_user: ::metrics::counter!(EVENTS_PUBLISHED, "backend" => label, "audience" => "user"),
            published_broadcast: ::metrics::counter!(EVENTS_PUBLISHED, "backend" => label, "audience" => "broadcast"),
            published_group: ::metrics::counter!(EVENTS_PUBLISHED, "backend" => label, "audience" => "group"),
            delivered: ::metrics::counter!(EVENTS_DELIVERED, "backend" => label),
            lagged: ::metrics::counter!(SUBSCRIBERS_LAGGED, "backend" => label),
            subscriptions: ::metrics::gauge!(SUBSCRIPTIONS_OPEN, "backend" => label),
            backend,
        }
    }

    /// Records a `publish` outcome (a refusal, rare, through the registry).
    #[inline]
    pub(crate) fn published(&self, audience: crate::Audience, outcome: &Result<(), crate::Error>) {
        match (outcome, audience) {
            (Ok(()), crate::Audience::User(_)) => self.published_user.increment(1),
            (Ok(()), crate::Audience::Broadcast) => self.published_broadcast.increment(1),
            (Ok(()), crate::Audience::Group(_)) => self.published_group.increment(1),
            (Err(_), _) => published(self.backend, audience, outcome),
        }
    }

    /// Records `n` events put in subscribers' queues.
    #[inline]
    pub(crate) fn delivered(&self, n: u64) {
        if n > 0 {
            self.delivered.increment(n);
        }
    }

    /// Records `n` subscriptions ended for lagging.
    #[inline]
    pub(crate) fn lagged(&self, n: u64) {
        if n > 0 {
            self.lagged.increment(n);
            disconnects(Disconnect::Lag, n);
        }
    }

    /// Records `delta` subscriptions opened (positive) or closed (negative).
    #[inline]
    pub(crate) fn subscriptions(&self, delta: i64) {
        if delta != 0 {
            self.subscriptions.increment(delta as f64);
        }
    }
}

/// Without the `metrics` feature: nothing held, nothing recorded.
#[cfg(not(feature = "metrics"))]
#[derive(Clone)]
pub(crate) struct Handles;

#[cfg(not(feature = "metrics"))]
impl Handles {
    pub(crate) fn new(_backend: Backend) -> Self {
        Handles
    }

    #[inline]
    pub(crate) fn published(&self, _audience: crate::Audience, _outcome: &Result<(), crate::Error>) {}

    #[inline]
    pub(crate) fn delivered(&self, _n: u64) {}

    #[inline]
    pub(crate) fn lagged(&self, _n: u64) {}

    #[inline]
    pub(crate) fn subscriptions(&self, _delta: i64) {}
}

/// Records `n` events put in subscribers' queues.
#[inline]
pub(crate) fn delivered(backend: Backend, n: u64) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        ::metrics::counter!(EVENTS_DELIVERED, "backend" => backend.label()).increment(n);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, n);
}

/// Records `n` subscriptions ended for lagging.
#[inline]
pub(crate) fn lagged(backend: Backend, n: u64) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        ::metrics::counter!(SUBSCRIBERS_LAGGED, "backend" => backend.label()).increment(n);
        disconnects(Disconnect::Lag, n);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, n);
}

/// Records `n` gap signals.
#[inline]
pub(crate) fn gaps(backend: Backend, at: GapAt, n: u64) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        let at = match at {
            GapAt::Live => "live",
            GapAt::Replay => "replay",
        };
        ::metrics::counter!(GAPS_SIGNALLED, "backend" => backend.label(), "at" => at).increment(n);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, at, n);
}

/// Records `delta` subscriptions opened (positive) or closed (negative).
#[inline]
pub(crate) fn subscriptions(backend: Backend, delta: i64) {
    #[cfg(feature = "metrics")]
    if delta != 0 {
        ::metrics::gauge!(SUBSCRIPTIONS_OPEN, "backend" => backend.label()).increment(delta as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, delta);
}

/// Records `n` reconnects of the Redis subscriber connection.
#[inline]
pub(crate) fn redis_reconnects(n: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REDIS_RECONNECTS).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = n;
}

/// Records one recovery from the Redis streams, which read back `events`.
#[inline]
pub(crate) fn redis_recovery(events: u64) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::counter!(REDIS_RECOVERIES).increment(1);
        ::metrics::counter!(REDIS_RECOVERED_EVENTS).increment(events);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = events;
}
