//! `RedisHub`: the hub handle, an `EventSource` and a `Publisher` over the dispatcher, the batcher and the streams.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::batch::Batcher;
use super::bridge::RuntimeHost;
use super::keys::KeyLayout;
use super::publish::publish_one;
use super::shared::Shared;
use super::stats::HubStats;
use super::subscription::{Command, Subscription};
use crate::{
    Category, CategorySet, Error, Event, EventId, EventSource, Position, Positions, Presence, Publisher,
    Reader, Replay, Retention, StreamReplay, UserId,
};

/// How far before now a Redis hub's [horizon](EventSource::horizon) is: the
/// clock difference between the application's processes and the Redis
/// servers it tolerates.
pub const HORIZON_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// A Redis-backed hub: an [`EventSource`] and a [`Publisher`]; cheap to clone.
///
/// [`close`](Self::close), or dropping the last clone, stops the dispatcher
/// and closes the connections; open subscriptions yield what is queued for
/// them, then [`Error::Closed`], and end.
pub struct RedisHub<C: Category> {
    inner: Arc<HubInner<C>>,
}

/// What the hub's handles share.
struct HubInner<C: Category> {
    // Dropped first: the dispatcher and the batching task stop when the last hub handle goes.
    commands: UnboundedSender<Command<C>>,
    /// Batches the publishes of layouts with retention (unless turned off for a cluster); the others publish one by one.
    batcher: Option<Batcher>,
    closed: AtomicBool,
    shared: Arc<Shared<C>>,
    // Dropped last: the hub's own runtime, if any, winds down in the background.
    runtime: RuntimeHost,
}

impl<C: Category> RedisHub<C> {
    /// A hub over tasks already started: the dispatcher behind `commands`, the batcher if any.
    pub(crate) fn from_parts(
        commands: UnboundedSender<Command<C>>,
        batcher: Option<Batcher>,
        shared: Arc<Shared<C>>,
        runtime: RuntimeHost,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner { commands, batcher, closed: AtomicBool::new(false), shared, runtime }),
        }
    }

    /// Closes the hub for every handle: open subscriptions yield what is
    /// queued for them, then [`Error::Closed`], and end; later subscribes and
    /// publishes fail with [`Error::Closed`]. Publishes already accepted still
    /// complete. Dropping the last handle does the same.
    pub fn close(&self) {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            // The dispatcher may have stopped already (its client closed): nothing left to end then.
            let _ = self.inner.commands.send(Command::Close);
        }
    }

    /// Closes the hub as [`close`](Self::close) does, and resolves once it has
    /// wound down: its subscriptions ended, its presence counts removed from
    /// Redis, its connections closed. A process that stops awaits it before it
    /// exits, so that nothing of it outlives it in Redis. Resolves at once if
    /// the hub had stopped already. Works from any executor.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        // Nothing happens until the future is first polled.
        let hub = self.clone();
        async move {
            let (stopped, wound_down) = oneshot::channel();
            hub.inner.closed.store(true, Ordering::Release);
            if hub.inner.commands.send(Command::CloseThen(stopped)).is_ok() {
                let _ = wound_down.await;
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// A snapshot of the hub's counters. Cheap: a few atomic loads.
    pub fn stats(&self) -> HubStats {
        self.inner.shared.counters.snapshot()
    }

    /// The Redis names this hub uses.
    pub fn key_layout(&self) -> &KeyLayout {
        &self.inner.shared.layout
    }

    /// The history kept, if retention is on.
    pub fn retention(&self) -> Option<Retention> {
        self.inner.shared.retention
    }

    /// The tokio runtime the Redis client runs on.
    pub fn runtime_handle(&self) -> &tokio::runtime::Handle {
        self.inner.runtime.handle()
    }

    /// Whether the hub runs the client on a runtime of its own (the caller had no tokio runtime).
    pub fn owns_runtime(&self) -> bool {
        self.inner.runtime.is_owned()
    }
}

impl<C: Category> Clone for RedisHub<C> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<C: Category> fmt::Debug for RedisHub<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHub")
            .field("layout", &self.inner.shared.layout)
            .field("retention", &self.inner.shared.retention)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<C: Category> EventSource<C> for RedisHub<C> {
    type Subscription = Subscription<C>;

    fn subscribe(
        &self,
        reader: impl Into<Reader> + Send,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send {
        let reader = reader.into();
        let user = reader.user;
        let commands = self.inner.commands.clone();
        let closed = self.is_closed();
        let span = tracing::debug_span!("ssehub.subscribe", %user);
        in_span(span, async move {
            if closed {
                return Err(Error::Closed);
            }
            let (reply, response) = oneshot::channel();
            commands.send(Command::Subscribe { reader, filter, reply }).map_err(|_| Error::Closed)?;
            response.await.map_err(|_| Error::Closed)?
        })
    }

    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send {
        let shared = Arc::clone(&self.inner.shared);
        let task = self.inner.runtime.spawn(async move {
            if shared.retention.is_none() {
                return Ok(Replay::retention_disabled());
            }
            shared.streams.missed_events(user, last_event_id, filter).await
        });
        crate::metrics::observe_replay(crate::metrics::Backend::Redis, async move { task.await? })
    }

    fn missed_since(
        &self,
        reader: impl Into<Reader> + Send,
        from: Positions,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<StreamReplay<C>, Error>> + Send {
        let reader = reader.into();
        let observed = from.clone();
        let shared = Arc::clone(&self.inner.shared);
        let task = self.inner.runtime.spawn(async move {
            if shared.retention.is_none() {
                let mut replay = StreamReplay::retention_disabled();
                let read = replay.own;
                replay.groups = reader.groups.iter().map(|group| (group, read)).collect();
                return Ok(replay);
            }
            shared.streams.missed_since(&reader, from, filter).await
        });
        crate::metrics::observe_stream_replay(
            crate::metrics::Backend::Redis,
            observed,
            async move { task.await? },
        )
    }

    /// A time [`HORIZON_SLACK`] before now, by this process's clock, as an
    /// entry position: every stream's entry ids are at or above the Redis
    /// server's time when the entry was added, so an event published after
    /// this call is after it, as long as this process's clock runs less than
    /// the slack ahead of the servers'. A stream read after it may also give
    /// events published within the slack before the call. `None` without
    /// retention (nothing is replayed).
    fn horizon(&self) -> Option<Position> {
        self.inner.shared.retention?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        let now_ms = u64::try_from(now.as_millis()).ok()?;
        Some(Position::entry(now_ms.saturating_sub(HORIZON_SLACK.as_millis() as u64), 0))
    }

    /// Ends the user's subscriptions on this hub, then publishes the order on
    /// the layout's [`control_channel`](super::KeyLayout::control_channel):
    /// every other hub subscribed to it ends the user's subscriptions as it
    /// receives it (a pub/sub hop later). Fails if Redis does not take the
    /// message; this hub's subscriptions have ended either way.
    fn disconnect(&self, user: UserId) -> impl Future<Output = Result<(), Error>> + Send {
        let shared = Arc::clone(&self.inner.shared);
        let commands = self.inner.commands.clone();
        let closed = self.is_closed();
        let task = self.inner.runtime.spawn(async move {
            if closed {
                return Err(Error::Closed);
            }
            let (reply, done) = oneshot::channel();
            commands.send(Command::Revoke { user, reply }).map_err(|_| Error::Closed)?;
            done.await.map_err(|_| Error::Closed)?;
            let order = super::codec::disconnect_order(user, shared.hub_id);
            super::publish::publish_control(&shared, &order).await
        });
        async move { task.await? }
    }
}

impl<C: Category> Presence for RedisHub<C> {
    /// The user's open subscriptions on every hub sharing the key layout,
    /// as each last wrote them (a quarter of a second behind at most, a
    /// killed hub's until its counts expire). One script call.
    fn streams_of(&self, user: UserId) -> impl Future<Output = Result<usize, Error>> + Send {
        let shared = Arc::clone(&self.inner.shared);
        let task = self.inner.runtime.spawn(async move { super::presence::query(&shared, Some(user)).await });
        async move { task.await? }
    }

    /// The users with a subscription open on any hub sharing the key layout. One script call.
    fn online_users(&self) -> impl Future<Output = Result<usize, Error>> + Send {
        let shared = Arc::clone(&self.inner.shared);
        let task = self.inner.runtime.spawn(async move { super::presence::query(&shared, None).await });
        async move { task.await? }
    }
}

impl<C: Category> Publisher<C> for RedisHub<C> {
    fn publish(&self, event: Event<C>) -> impl Future<Output = Result<(), Error>> + Send {
        let inner = Arc::clone(&self.inner);
        let audience = event.audience();
        crate::metrics::observe_publish(crate::metrics::Backend::Redis, audience, async move {
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if let Some(batcher) = &inner.batcher {
                let outcome = batcher.submit(&inner.shared, &event)?;
                return outcome.await.map_err(|_| Error::Closed)?;
            }
            let shared = Arc::clone(&inner.shared);
            inner.runtime.spawn(async move { publish_one(&shared, event).await }).await?
        })
    }
}

/// `future`, run inside `span` (a trace of the hub's calls, for whichever `tracing` subscriber is installed).
fn in_span<F: Future>(span: tracing::Span, future: F) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(future, span)
}
