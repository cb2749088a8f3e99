//! The Redis backend on `fred`: pub/sub for live delivery, Streams for replay and recovery, any executor.
//!
//! [`RedisHub`] is an [`EventSource`] and a [`Publisher`]. It holds one
//! subscriber connection for the whole process, however many subscriptions
//! are open, plus a command pool of at most two connections. A dispatcher
//! task decodes each message once and fans it out to the local subscribers'
//! bounded queues.
//!
//! # Runtimes
//!
//! fred is a tokio library. The hub runs it on the caller's tokio runtime if
//! there is one when it connects (or on the one given to
//! [`RedisHubBuilder::runtime`]), else on a small runtime of its own on
//! background threads. What it hands out (subscription streams, the futures
//! of its methods) works from any executor: smol, async-std,
//! `futures::executor`, tokio. The Redis client is re-exported as
//! [`client`], so its configuration types can be used without a version clash.
//!
//! # Redis layout
//!
//! Names are set by a [`KeyLayout`]; the default is the one of the existing
//! JSON-envelope publishers: channels `sse:user:{id}` and `sse:broadcast`,
//! streams `sse:stream:user:{id}` and `sse:stream:broadcast`. Messages are JSON
//! envelopes `{"event_id","event_type","user_id","category","data","occurred_at"}`
//! with `data` embedded as JSON; envelopes without `category` get one from
//! the event type ([`RedisHubBuilder::category_of_event_type`]). Stream
//! entries hold the envelope in one `event` field; entries written one field
//! per envelope key are read too (another publisher's `XADD *` numbers each
//! stream on its own, so its events of different audiences are ordered to
//! the millisecond only). Event data must be JSON text to be
//! published ([`DataNotJson`] otherwise); it is embedded as is, without
//! surrounding whitespace.
//!
//! [`KeyLayout::cluster`] names keys for Redis Cluster: each audience's
//! channel and stream share one hash tag, so the publish script touches one
//! slot, and live events use sharded pub/sub: see [Redis Cluster](#redis-cluster).
//! The layout runs on a single server as well.
//!
//! With [`Retention`] on (the default), a publish is one Lua script: `XADD`
//! with trimming by count and age, an expiry that slides with every publish,
//! and `PUBLISH`, atomically. In the standalone layout the script draws the
//! entry ids of every stream from one sequence (the layout's
//! [`order_key`](KeyLayout::order_key)), so entry ids order a user's events
//! and the broadcasts exactly as they were published, and the channel message
//! carries its entry id (`stream_id`), so the dispatcher knows each live
//! event's position. Publishes that overlap in time share one script call in
//! the standalone layout (a lone publish is a batch of one): Redis spends
//! more on a script call than on the commands in it, so batching multiplies
//! the events per second one Redis core can store. Without retention, a
//! publish is one `PUBLISH` and nothing can be replayed.
//!
//! # Replay
//!
//! [`missed_events`](EventSource::missed_events) finds the last event id in
//! the user's stream or the broadcast stream, then reads both after it, up to
//! one consistent cut, merged in entry id order. No command reads a stream
//! from its start: an event id is a UUIDv7, so its millisecond says where to
//! look (within [`RedisHubBuilder::clock_skew`] of it), and the work depends
//! on the events returned and the events published around that millisecond,
//! never on how many are retained. An id of another UUID version carries no
//! time; it is looked for among the newest
//! [`foreign_id_scan_limit`](RedisHubBuilder::foreign_id_scan_limit) entries
//! of each stream only, and reads as unknown beyond them. An id no longer
//! held where entries were trimmed reads as truncated (with the retained
//! events from its time on); otherwise as unknown (with every retained event).
//!
//! # Outages
//!
//! The client reconnects forever with exponential backoff, and every command
//! has a timeout. After a reconnect the hub resubscribes every channel it
//! holds, waits for a round trip on the subscriber connection so they are
//! live, then delivers from the streams what was published meanwhile, after
//! the last event each channel delivered, in order and without duplicates,
//! before any newer live event. An overflow of the client's internal message
//! channel is recovered the same way. Where that is impossible, each affected
//! subscriber gets [`Error::Gap`] and then live events again: with retention
//! off; when the last delivered entry is no longer in its stream (trimmed,
//! expired, or lost because the server restarted without its data); or when a
//! channel's position is unknown.
//!
//! # Redis Cluster
//!
//! With [`KeyLayout::cluster`] and a cluster URL
//! (`redis-cluster://host:port?node=host:port&...`):
//!
//! - **Connections grow with the masters, not the users.** The hub reads the
//!   slot map and keeps clients of its own for each master: one subscriber
//!   connection and a command pool of at most two connections. Each user
//!   channel is `SSUBSCRIBE`d on the master that owns its slot; a publish is
//!   one script on the master of the audience's slot (`XADD`, trimming,
//!   expiry, `SPUBLISH`), and no message goes to the other shards.
//!   `subscribe` returns once the master has confirmed the `SSUBSCRIBE`.
//!   (fred's own cluster client stops sending commands to every master while
//!   it reconnects to one; per-master clients keep an outage to its shard.)
//! - **Order.** Each audience's events (a user's own, the broadcasts) are
//!   delivered and replayed in publish order: one stream, one master. A
//!   user's events and the broadcasts live on two masters, and no key can be
//!   shared by every stream's publish, so there is no cluster-wide sequence:
//!   entry ids come from a hybrid clock instead, the master's time kept above
//!   the highest entry id the publishing hub has given out or received.
//!   Events published one after another through one hub, or by hubs whose
//!   masters' clocks agree to within the time between the two publishes, get
//!   ids in publish order. Replay merges the two streams by entry id; live,
//!   before delivering a message the dispatcher makes a round trip on its
//!   connections to the other masters involved, which brings in any message
//!   published before it, and delivers in entry id order: live and replay
//!   agree. Events of different audiences published at the same time through
//!   different hubs may come in either order (each exactly once).
//! - **Failover.** When a master is lost, its shard's subscribers wait for a
//!   replica to take over (the cluster's node timeout plus the client's
//!   reconnect backoff: about 7 s with a 2 s node timeout), while the other
//!   shards go on undisturbed. Then the shard's channels are subscribed on the
//!   new master and what was published meanwhile is delivered from the
//!   streams. Redis replicates asynchronously, so a master can die with
//!   acknowledged writes its replica never got. Unless publishes wait for a
//!   replica ([`RedisHubBuilder::replica_acks`]), every subscriber of a shard
//!   whose master was replaced gets [`Error::Gap`], then what the new master
//!   holds. With replica acknowledgements the new master holds every event
//!   whose publish succeeded, and no gap is signalled (unless a subscriber
//!   already received an event whose publish then failed, which the new master
//!   may lack). Publishes to the lost master fail meanwhile (after the command
//!   timeout) and are never retried by the client, so none is stored twice.
//!   Set `cluster-require-full-coverage no` on the servers: with the default,
//!   every master refuses commands from the moment the lost one is marked
//!   failed until its replica has taken over (about a second); the hub retries
//!   such commands for a few seconds, so publishes elsewhere are only delayed.
//! - **Resharding.** Redis ends the shard-channel subscriptions of a slot
//!   that moves to another master. The hub reads the slot map every
//!   [`topology_check_interval`](RedisHubBuilder::topology_check_interval)
//!   (default 1 s) and subscribes the channels of moved slots on their new
//!   master; events published meanwhile come from the streams, which moved
//!   with the slot: late by up to that interval, but without a gap. `MOVED`
//!   and `ASK` redirections of commands are followed by the client.
//!
//! # Examples
//!
//! ```no_run
//! use futures::StreamExt;
//! use ssehub::fixture::ExampleCategory;
//! use ssehub::fred::RedisHub;
//! use ssehub::{Audience, CategorySet, Event, EventSource, Publisher, UserId};
//!
//! futures::executor::block_on(async {
//!     let hub = RedisHub::<ExampleCategory>::connect("redis://127.0.0.1:6380").await?;
//!     let user: UserId = "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11".parse().unwrap();
//!     let mut events = hub.subscribe(user, CategorySet::all()).await?;
//!     let event = Event::new(Audience::User(user), "ai.done", ExampleCategory::Ai, r#"{"ok":true}"#).unwrap();
//!     hub.publish(event.clone()).await?;
//!     assert_eq!(events.next().await.unwrap()?, event);
//!     Ok::<_, ssehub::Error>(())
//! })
//! .unwrap();
//! ```

mod batch;
mod bridge;
mod cluster;
mod codec;
mod dispatcher;
mod keys;
mod replay;
mod scripts;
mod shards;
mod stats;
mod subscription;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::fred::clients::{Client, Pool};
use ::fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use ::fred::types::config::{Config, ReconnectPolicy};
use ::fred::types::scripts::Script;
use ::fred::types::{Builder, InfoKind, Value};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::oneshot;

/// The `fred` Redis client, re-exported so its configuration types match the version ssehub uses.
pub use ::fred as client;

pub use codec::DataNotJson;
pub use keys::{InvalidPrefix, KeyLayout, MAX_PREFIX_BYTES, PubSubKind};
pub use stats::HubStats;
pub use subscription::Subscription;

use crate::{Audience, Category, CategorySet, Error, Event, EventId, EventSource, Publisher, Replay, UserId};
use batch::Batcher;
use bridge::RuntimeHost;
use codec::Decoder;
use dispatcher::{Command, Dispatcher, Feed};
use stats::Counters;

/// How much history is kept per audience, for replay and outage recovery.
///
/// Each user's stream and the broadcast stream keep at most `max_events`
/// entries and none older than `max_age`; a stream that sees no publish for
/// `max_age` expires whole. Trimming is approximate by default: Redis drops
/// whole blocks of entries, so somewhat more may remain, at less cost per
/// publish; [`exact_trimming`](Retention::exact_trimming) keeps exactly the limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Retention {
    max_events: u64,
    max_age: Duration,
    exact: bool,
}

impl Retention {
    /// At most `max_events` events (at least 1) per audience, none older than `max_age`
    /// (`Duration::ZERO`: no age limit and no expiry).
    pub fn new(max_events: u64, max_age: Duration) -> Self {
        Self { max_events: max_events.max(1), max_age, exact: false }
    }

    /// This retention with exact (`true`) or approximate (`false`, the default) trimming.
    #[must_use]
    pub fn exact_trimming(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    /// Whether trimming is exact.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The most events kept per audience.
    pub fn max_events(&self) -> u64 {
        self.max_events
    }

    /// The oldest an event may get before it is trimmed.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
}

impl Default for Retention {
    /// 1,000 events per audience, for at most an hour.
    fn default() -> Self {
        Self::new(1000, Duration::from_secs(3600))
    }
}

/// What the hub's tasks share.
pub(crate) struct Shared<C> {
    pub(crate) layout: KeyLayout,
    pub(crate) retention: Option<Retention>,
    pub(crate) decoder: Decoder<C>,
    pub(crate) queue_capacity: usize,
    pub(crate) clock_skew_ms: u64,
    pub(crate) foreign_id_scan_limit: u64,
    pub(crate) commands: Pool,
    pub(crate) subscriber: Client,
    pub(crate) script: Script,
    pub(crate) clock_script: Script,
    pub(crate) counters: Counters,
    pub(crate) cluster: cluster::ClusterState,
}

/// Configures and connects a [`RedisHub`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use ssehub::fixture::ExampleCategory;
/// use ssehub::fred::{KeyLayout, RedisHub, Retention};
///
/// let hub = futures::executor::block_on(
///     RedisHub::<ExampleCategory>::builder("redis://127.0.0.1:6380")?
///         .key_layout(KeyLayout::standalone_with_prefix("app").unwrap())
///         .retention(Some(Retention::new(10_000, Duration::from_secs(24 * 3600))))
///         .subscriber_queue_capacity(256)
///         .connect(),
/// )?;
/// # Ok::<_, ssehub::Error>(())
/// ```
pub struct RedisHubBuilder<C> {
    config: Config,
    layout: KeyLayout,
    retention: Option<Retention>,
    queue_capacity: usize,
    max_message_bytes: usize,
    category_of_event_type: fn(&str) -> Option<C>,
    command_timeout: Duration,
    connection_timeout: Duration,
    reconnect_policy: ReconnectPolicy,
    command_connections: usize,
    message_channel_capacity: usize,
    clock_skew: Duration,
    foreign_id_scan_limit: u64,
    runtime: Option<tokio::runtime::Handle>,
    runtime_threads: usize,
    cluster: cluster::ClusterSettings,
}

impl<C: Category> RedisHubBuilder<C> {
    fn new(config: Config) -> Self {
        Self {
            config,
            layout: KeyLayout::standalone(),
            retention: Some(Retention::default()),
            queue_capacity: 1024,
            max_message_bytes: 1 << 20,
            category_of_event_type: C::from_event_type,
            command_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            reconnect_policy: ReconnectPolicy::new_exponential(0, 50, 5_000, 2),
            command_connections: 2,
            message_channel_capacity: 1 << 16,
            clock_skew: Duration::from_secs(2),
            foreign_id_scan_limit: 1000,
            runtime: None,
            runtime_threads: 2,
            cluster: cluster::ClusterSettings::default(),
        }
    }

    /// The Redis names to use. Default: [`KeyLayout::standalone`].
    pub fn key_layout(mut self, layout: KeyLayout) -> Self {
        self.layout = layout;
        self
    }

    /// How much history to keep; `None` turns retention off (no replay, no recovery).
    /// Default: [`Retention::default`].
    pub fn retention(mut self, retention: Option<Retention>) -> Self {
        self.retention = retention;
        self
    }

    /// The events a subscriber may have queued before it is dropped with
    /// [`Error::Lagged`]. Default: 1024.
    pub fn subscriber_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The largest message or stream entry read, in bytes; larger ones are skipped. Default: 1 MiB.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The category of envelopes that carry none, from their event type; `None` skips the event.
    /// Default: [`Category::from_event_type`].
    pub fn category_of_event_type(mut self, hook: fn(&str) -> Option<C>) -> Self {
        self.category_of_event_type = hook;
        self
    }

    /// How long a Redis command may take before it fails. Default: 5 s.
    ///
    /// During an outage, publishes and subscribes fail after this long
    /// instead of waiting for the connection. A publish that timed out after
    /// it was sent may still have been applied.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long connecting may take. Default: 5 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How to reconnect after a connection is lost. Default: exponential
    /// backoff from 50 ms to 5 s, forever. A policy that gives up leaves the
    /// hub without Redis for good.
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect_policy = policy;
        self
    }

    /// Connections for publishing and reading streams: 1 or 2 (clamped). Default: 2.
    pub fn command_connections(mut self, connections: usize) -> Self {
        self.command_connections = connections.clamp(1, 2);
        self
    }

    /// Capacity of the Redis client's internal message channel. An overflow
    /// is recovered from the streams (or signalled as a gap), so this only
    /// bounds how far the dispatcher may fall behind before that happens. Default: 65,536.
    pub fn message_channel_capacity(mut self, capacity: usize) -> Self {
        self.message_channel_capacity = capacity.max(1);
        self
    }

    /// How far the clocks of publishers and Redis may differ, bounding the
    /// search for a UUIDv7 event id in a stream. Default: 2 s.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// How many of the newest entries of each stream are searched for an
    /// event id that is not a UUIDv7 (it carries no time to search by); an
    /// older one reads as unknown. Default: 1,000.
    pub fn foreign_id_scan_limit(mut self, entries: u64) -> Self {
        self.foreign_id_scan_limit = entries;
        self
    }

    /// The tokio runtime to run the Redis client on. Default: the current
    /// one when connecting, else one of the hub's own.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Worker threads of the hub's own runtime, when it needs one. Default: 2.
    pub fn runtime_threads(mut self, threads: usize) -> Self {
        self.runtime_threads = threads.max(1);
        self
    }

    /// Connects, subscribes to the broadcast channel, and starts the dispatcher.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached or the runtime cannot start.
    pub async fn connect(self) -> Result<RedisHub<C>, Error> {
        let runtime = RuntimeHost::new(self.runtime.clone(), self.runtime_threads)?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let handle = commands.downgrade();
        let shared = runtime.spawn(start(self, commands_rx, handle)).await??;
        let batcher = match (shared.retention, shared.layout.order_key()) {
            (Some(retention), Some(order_key)) => {
                Some(Batcher::start(runtime.handle(), Arc::clone(&shared), retention, order_key))
            }
            _ => None,
        };
        tracing::info!(owned_runtime = runtime.is_owned(), "Redis hub connected");
        Ok(RedisHub { inner: Arc::new(HubInner { commands, batcher, shared, runtime }) })
    }
}

impl<C> fmt::Debug for RedisHubBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHubBuilder")
            .field("layout", &self.layout)
            .field("retention", &self.retention)
            .field("queue_capacity", &self.queue_capacity)
            .field("command_connections", &self.command_connections)
            .finish_non_exhaustive()
    }
}

/// Runs on the tokio runtime: connects both clients and starts the hub's tasks.
async fn start<C: Category>(
    settings: RedisHubBuilder<C>,
    commands_rx: mpsc::UnboundedReceiver<Command<C>>,
    commands_handle: mpsc::WeakUnboundedSender<Command<C>>,
) -> Result<Arc<Shared<C>>, Error> {
    // With the cluster layout on a cluster every master gets clients of its own; the two below stay unconnected.
    let shards = shards::Shards::connect(&settings).await?;
    let mut builder = Builder::from_config(settings.config);
    builder
        .set_policy(settings.reconnect_policy)
        .with_performance_config(|perf| {
            perf.default_command_timeout = settings.command_timeout;
            perf.broadcast_channel_capacity = settings.message_channel_capacity;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = settings.connection_timeout;
            conn.internal_command_timeout = settings.connection_timeout;
        });
    let subscriber = builder.build().map_err(Error::backend)?;
    let commands = builder.build_pool(settings.command_connections).map_err(Error::backend)?;
    // Taken before connecting so no message and no reconnect is missed.
    let (messages, mut reconnects) = match &shards {
        Some(shards) => (shards.messages(), shards.reconnects()),
        None => (subscriber.message_rx(), subscriber.reconnect_rx()),
    };
    if shards.is_none() {
        subscriber.init().await.map_err(Error::backend)?;
        if let Err(e) = commands.init().await {
            let _ = subscriber.quit().await;
            return Err(Error::backend(e));
        }
    }
    let shared = Arc::new(Shared {
        layout: settings.layout,
        retention: settings.retention,
        decoder: Decoder {
            max_bytes: settings.max_message_bytes,
            category_of_event_type: settings.category_of_event_type,
        },
        queue_capacity: settings.queue_capacity,
        clock_skew_ms: u64::try_from(settings.clock_skew.as_millis()).unwrap_or(u64::MAX),
        foreign_id_scan_limit: settings.foreign_id_scan_limit,
        commands,
        subscriber,
        script: scripts::publish(),
        clock_script: scripts::horizon(),
        counters: Counters::default(),
        cluster: cluster::ClusterState::new(settings.cluster, shards),
    });
    let connected = match connect_broadcast(&shared).await {
        Ok(connected) => cluster::prepare(&shared).await.map(|()| connected),
        Err(e) => Err(e),
    };
    match connected {
        Ok((broadcast, run_id)) => {
            // The first connect also counts as a reconnect; it needs no recovery.
            while reconnects.try_recv().is_ok() {}
            let (confirms_tx, confirms_rx) = mpsc::unbounded_channel();
            let (ops_tx, ops_rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatcher::run_sequencer(Arc::clone(&shared), ops_rx, confirms_tx));
            if shared.subscriber.is_clustered() {
                tokio::spawn(cluster::watch_topology(Arc::clone(&shared), commands_handle.clone()));
            }
            let dispatcher = Dispatcher::new(
                Arc::clone(&shared),
                commands_rx,
                commands_handle,
                confirms_rx,
                ops_tx,
                messages,
                reconnects,
                broadcast,
                run_id,
            );
            tokio::spawn(dispatcher.run());
            Ok(shared)
        }
        Err(e) => {
            let _ = shared.subscriber.quit().await;
            let _ = shared.commands.quit().await;
            if let Some(shards) = shared.cluster.shards() {
                shards.quit().await;
            }
            Err(e)
        }
    }
}

/// Subscribes the broadcast channel, confirmed live, and reads the broadcast stream's position and the run id.
async fn connect_broadcast<C: Category>(shared: &Shared<C>) -> Result<(Feed, Option<String>), Error> {
    let channel = shared.layout.channel(Audience::Broadcast);
    match shared.layout.pubsub_kind() {
        PubSubKind::Plain => shared.subscriber.subscribe(channel).await.map_err(Error::backend),
        PubSubKind::Sharded => cluster::change_shard_channels(shared, vec![channel], true).await,
    }?;
    dispatcher::liveness_barrier(shared).await?;
    Counters::add(&shared.counters.redis_channels, 1);
    let position = match shared.retention {
        Some(_) => Some(shared.last_stream_id_of(Audience::Broadcast).await?),
        None => None,
    };
    let info: String = cluster::command_client(shared, &shared.layout.stream(Audience::Broadcast))?
        .info(Some(InfoKind::Server))
        .await
        .map_err(Error::backend)?;
    let run_id = info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_string());
    Ok((Feed::at(position), run_id))
}

/// A Redis-backed hub: an [`EventSource`] and a [`Publisher`]; cheap to clone.
///
/// Dropping the last clone stops the dispatcher and closes the connections;
/// open subscriptions then end with [`Error::Closed`].
pub struct RedisHub<C: Category> {
    inner: Arc<HubInner<C>>,
}

struct HubInner<C: Category> {
    // Dropped first: the dispatcher and the batching task stop when the last hub handle goes.
    commands: UnboundedSender<Command<C>>,
    /// Batches the publishes of standalone layouts with retention; the others publish one by one.
    batcher: Option<Batcher>,
    shared: Arc<Shared<C>>,
    // Dropped last: the hub's own runtime, if any, winds down in the background.
    runtime: RuntimeHost,
}

impl<C: Category> RedisHub<C> {
    /// Connects to the Redis server at `url` (`redis://[user:password@]host:port[/db]`) with the defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] for a URL that does not parse or a server that cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url)?.connect().await
    }

    /// A builder for a hub on the Redis server at `url`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] for a URL that does not parse.
    pub fn builder(url: &str) -> Result<RedisHubBuilder<C>, Error> {
        Ok(RedisHubBuilder::new(Config::from_url(url).map_err(Error::backend)?))
    }

    /// A builder from a fred [`Config`]: TLS, sentinel, cluster, credentials.
    pub fn builder_from_config(config: Config) -> RedisHubBuilder<C> {
        RedisHubBuilder::new(config)
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
        user: UserId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send {
        let commands = self.inner.commands.clone();
        async move {
            let (reply, response) = oneshot::channel();
            commands.send(Command::Subscribe { user, filter, reply }).map_err(|_| Error::Closed)?;
            response.await.map_err(|_| Error::Closed)?
        }
    }

    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send {
        let shared = Arc::clone(&self.inner.shared);
        let task =
            self.inner.runtime.spawn(async move { shared.missed_events(user, last_event_id, filter).await });
        async move { task.await? }
    }
}

impl<C: Category> Publisher<C> for RedisHub<C> {
    fn publish(&self, event: Event<C>) -> impl Future<Output = Result<(), Error>> + Send {
        let inner = Arc::clone(&self.inner);
        async move {
            if let Some(batcher) = &inner.batcher {
                let outcome = batcher.submit(&inner.shared, &event)?;
                return outcome.await.map_err(|_| Error::Closed)?;
            }
            let shared = Arc::clone(&inner.shared);
            inner.runtime.spawn(async move { shared.publish_one(event).await }).await?
        }
    }
}

impl<C: Category> Shared<C> {
    /// Publishes one event on its own: with the cluster layout, or without retention (one `PUBLISH`).
    ///
    /// Standalone layouts with retention publish through the [`Batcher`] instead.
    async fn publish_one(&self, event: Event<C>) -> Result<(), Error> {
        if self.layout.pubsub_kind() == PubSubKind::Sharded {
            return cluster::publish(self, event).await;
        }
        if self.retention.is_some() {
            return Err(Error::backend("a standalone layout with retention publishes in batches"));
        }
        let channel = self.layout.channel(event.audience());
        let envelope = codec::envelope(&event).map_err(Error::backend)?;
        let _: Value =
            self.commands.next_connected().publish(channel, envelope).await.map_err(Error::backend)?;
        Ok(())
    }
}
