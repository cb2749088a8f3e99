//! `RedisHubBuilder`: the hub's settings, and connecting: the topology, the broadcast channel, the tasks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::fred::types::config::{Config, ReconnectPolicy};
use tokio::sync::mpsc;

use super::batch::Batcher;
use super::bridge::RuntimeHost;
use super::codec::Decoder;
use super::connection::ClientSettings;
use super::dispatcher::Dispatcher;
use super::fanout::{Fanout, Feed};
use super::hub::RedisHub;
use super::keys::{KeyLayout, PubSubKind};
use super::order::HybridClock;
use super::scripts;
use super::sequencer::run_sequencer;
use super::shared::{ReplicaAcks, Shared};
use super::stats::Counters;
use super::streams::Streams;
use super::subscription::Command;
use super::topology::{Incoming, Topology};
use crate::Retention;
use crate::backend::SubscriptionLimits;
use crate::{Audience, Category, Error};

/// How long publishing stays idempotent unless [`RedisHubBuilder::publish_dedupe_window`] says otherwise.
const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(60);

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
///         .queue_capacity(256)
///         .connect(),
/// )?;
/// # Ok::<_, ssehub::Error>(())
/// ```
pub struct RedisHubBuilder<C> {
    config: Config,
    layout: KeyLayout,
    retention: Option<Retention>,
    queue_capacity: usize,
    subscription_limits: SubscriptionLimits,
    presence_ttl: Option<Duration>,
    max_message_bytes: usize,
    category_of_event_type: fn(&str) -> Option<C>,
    command_timeout: Duration,
    connection_timeout: Duration,
    reconnect_policy: ReconnectPolicy,
    command_connections: usize,
    message_channel_capacity: usize,
    clock_skew: Duration,
    foreign_id_scan_limit: u64,
    dedupe_window: Duration,
    runtime: Option<tokio::runtime::Handle>,
    runtime_threads: usize,
    cluster: ClusterSettings,
}

impl<C: Category> RedisHubBuilder<C> {
    fn new(config: Config) -> Self {
        Self {
            config,
            layout: KeyLayout::standalone(),
            retention: Some(Retention::default()),
            queue_capacity: 1024,
            subscription_limits: SubscriptionLimits::new(),
            presence_ttl: Some(Duration::from_secs(30)),
            max_message_bytes: 1 << 20,
            category_of_event_type: C::from_event_type,
            command_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            reconnect_policy: ReconnectPolicy::new_exponential(0, 50, 5_000, 2),
            command_connections: 2,
            message_channel_capacity: 1 << 14,
            clock_skew: Duration::from_secs(2),
            foreign_id_scan_limit: 1000,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            runtime: None,
            runtime_threads: 2,
            cluster: ClusterSettings::default(),
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
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// At most `max` subscriptions open per user on this hub (this process;
    /// `0` is taken as `1`). Default: [`SubscriptionLimits::DEFAULT_PER_USER`] (64).
    ///
    /// One more fails with [`Error::TooManySubscriptions`] before anything is
    /// registered; a dropped or ended subscription frees its place at once.
    pub fn max_subscriptions_per_user(mut self, max: usize) -> Self {
        self.subscription_limits = self.subscription_limits.per_user(max);
        self
    }

    /// At most `max` subscriptions open on this hub, all users together (`0`
    /// is taken as `1`). Default: [`SubscriptionLimits::DEFAULT_PER_PROCESS`] (1,000,000).
    pub fn max_subscriptions(mut self, max: usize) -> Self {
        self.subscription_limits = self.subscription_limits.per_process(max);
        self
    }

    /// How long this hub's presence counts ([`Presence`](crate::Presence)) live
    /// in Redis unless refreshed; `None` turns presence off (the counts read
    /// then leave this hub out). Default: 30 s.
    ///
    /// The hub writes what changed a few times a second and pushes the expiry
    /// back every third of it, so a process killed without closing its hub
    /// stops counting within this time; a closed hub removes its counts at
    /// once. Presence costs nothing per published event.
    pub fn presence_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.presence_ttl = ttl.map(|ttl| ttl.max(Duration::from_millis(300)));
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

    /// How long publishing an event stays idempotent (with retention). Default: 60 s.
    ///
    /// Each stored event leaves a marker holding its entry id (see
    /// [`KeyLayout::publish_marker`]) that lives this long. Until then, a
    /// publish of the same event id (fred's own retry after a reply lost with
    /// its connection, or the caller publishing again after an error) stores
    /// and delivers nothing a second time and succeeds. In the standalone
    /// layout a marker is a field of its id's second's hash, about 115 bytes of
    /// Redis memory while it lives (a marker key of its own, on a cluster or for
    /// an id that is not a UUIDv7, about 200): at 1,000 events/s, about 7 MB
    /// with the default, level under a steady load.
    ///
    /// After an error, publishing the same event again until it succeeds
    /// keeps events in order: a publish that timed out may still run once
    /// Redis answers again, and the retry then finds it stored.
    pub fn publish_dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window.max(Duration::from_millis(1));
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
    /// bounds how far the dispatcher may fall behind before that happens. Default: 16,384.
    ///
    /// It costs memory up front: fred sizes each of the subscriber client's
    /// nine notification channels to it and fills them in when connecting
    /// (measured: about 0.6 KiB per unit of capacity in all, so some 9 MiB
    /// at the default, per cluster master on a cluster), and a full channel
    /// holds that many messages besides.
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
        let batch_cluster_publishes = self.cluster.batch_publishes;
        let shared = runtime.spawn(start(self, commands_rx, handle)).await??;
        let batcher = match (shared.retention, shared.layout.order_key()) {
            (Some(retention), Some(order_key)) => {
                Some(Batcher::start(runtime.handle(), Arc::clone(&shared), retention, order_key))
            }
            (Some(retention), None) if batch_cluster_publishes => {
                Some(Batcher::start_cluster(runtime.handle(), Arc::clone(&shared), retention))
            }
            _ => None,
        };
        tracing::info!(owned_runtime = runtime.is_owned(), "Redis hub connected");
        Ok(RedisHub::from_parts(commands, batcher, shared, runtime))
    }

    /// (Cluster layout.) Makes a publish return only once `replicas`
    /// replicas of the slot's master hold the event (Redis `WAIT`), or fail
    /// with [`Error::Backend`] if fewer did within `timeout` (the event is then
    /// on the master and may still be delivered). Default: 0, no waiting.
    ///
    /// Redis replicates asynchronously: a master that dies can take
    /// acknowledged writes with it. With replica acknowledgements, the replica
    /// that takes over holds every event whose publish succeeded, so after a
    /// failover the hub recovers the shard's subscribers from the streams
    /// without a gap signal. Without them, it cannot tell what the dead master
    /// took along, and gives every subscriber of that shard [`Error::Gap`]
    /// (after recovering what the new master has).
    ///
    /// With `replicas` above the replicas a master has, every publish to its
    /// slots fails: so too after a failover, until the new master has a replica
    /// again (the failed node back, say). [`connect`](RedisHubBuilder::connect)
    /// refuses this setting with the standalone layout.
    pub fn replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.cluster.replica_acks = replicas;
        self.cluster.replica_ack_timeout = timeout;
        self
    }

    /// (Cluster layout.) How often the hub reads the cluster's slot map, to
    /// find slots that moved to another master (resharding, failover): their
    /// channels are subscribed again on the new owner and what was missed is
    /// recovered from the streams. Default: 1 s.
    pub fn topology_check_interval(mut self, interval: Duration) -> Self {
        self.cluster.topology_check_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// (Cluster layout, with retention.) Whether publishes that wait together
    /// go to each master as one script call (the default), or each as a
    /// script of its own. For side-by-side measurements only.
    #[doc(hidden)]
    pub fn cluster_publish_batching(mut self, batch: bool) -> Self {
        self.cluster.batch_publishes = batch;
        self
    }
}

/// Settings of a hub on a cluster, set on the [`RedisHubBuilder`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClusterSettings {
    replica_acks: u32,
    replica_ack_timeout: Duration,
    topology_check_interval: Duration,
    batch_publishes: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            replica_acks: 0,
            replica_ack_timeout: Duration::from_millis(500),
            topology_check_interval: Duration::from_secs(1),
            batch_publishes: true,
        }
    }
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

    /// A builder from a fred [`Config`]: server or cluster, credentials, database, protocol settings.
    pub fn builder_from_config(config: Config) -> RedisHubBuilder<C> {
        RedisHubBuilder::new(config)
    }
}

impl<C> fmt::Debug for RedisHubBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHubBuilder")
            .field("layout", &self.layout)
            .field("retention", &self.retention)
            .field("queue_capacity", &self.queue_capacity)
            .field("subscription_limits", &self.subscription_limits)
            .field("presence_ttl", &self.presence_ttl)
            .field("command_connections", &self.command_connections)
            .finish_non_exhaustive()
    }
}

/// Runs on the tokio runtime: connects the topology, subscribes the broadcast channel and starts the hub's tasks.
async fn start<C: Category>(
    settings: RedisHubBuilder<C>,
    commands_rx: mpsc::UnboundedReceiver<Command<C>>,
    commands_handle: mpsc::WeakUnboundedSender<Command<C>>,
) -> Result<Arc<Shared<C>>, Error> {
    let clients = ClientSettings {
        config: settings.config,
        reconnect_policy: settings.reconnect_policy,
        command_timeout: settings.command_timeout,
        connection_timeout: settings.connection_timeout,
        message_channel_capacity: settings.message_channel_capacity,
        command_connections: settings.command_connections,
    };
    let cluster = settings.cluster;
    let durable = cluster.replica_acks > 0;
    let (topology, incoming) =
        Topology::connect(clients, settings.layout.pubsub_kind(), durable, cluster.topology_check_interval)
            .await?;
    let topology = Arc::new(topology);
    let counters = Arc::new(Counters::default());
    let decoder = Decoder {
        max_bytes: settings.max_message_bytes,
        category_of_event_type: settings.category_of_event_type,
    };
    let streams = Streams {
        topology: Arc::clone(&topology),
        layout: settings.layout.clone(),
        decoder,
        counters: Arc::clone(&counters),
        clock_skew_ms: u64::try_from(settings.clock_skew.as_millis()).unwrap_or(u64::MAX),
        foreign_id_scan_limit: settings.foreign_id_scan_limit,
        clock_script: scripts::horizon(),
        replay_script: scripts::replay(),
        read_after_script: scripts::read_after(),
    };
    let shared = Arc::new(Shared {
        control_channel: settings.layout.control_channel(),
        // The random bits of a UUIDv7: unique among the hubs of a fleet, for all purposes.
        hub_id: (crate::EventId::new().as_uuid().as_u64_pair().1).max(1),
        presence_ttl: settings.presence_ttl,
        presence_script: scripts::presence(),
        presence_query_script: scripts::presence_query(),
        layout: settings.layout,
        retention: settings.retention,
        decoder,
        queue_capacity: settings.queue_capacity,
        subscription_limits: settings.subscription_limits,
        counters,
        topology,
        streams,
        publish_script: scripts::publish(),
        replica_acks: ReplicaAcks { replicas: cluster.replica_acks, timeout: cluster.replica_ack_timeout },
        dedupe_window: settings.dedupe_window,
        clock: HybridClock::default(),
    });
    let connected = match connect_broadcast(&shared).await {
        Ok(broadcast) => note_identity(&shared, durable).await.map(|()| broadcast),
        Err(e) => Err(e),
    };
    match connected {
        Ok(broadcast) => {
            let Incoming { messages, mut reconnects } = incoming;
            // The first connect also counts as a reconnect; it needs no recovery.
            while reconnects.try_recv().is_ok() {}
            let (confirms_tx, confirms_rx) = mpsc::unbounded_channel();
            let (ops_tx, ops_rx) = mpsc::unbounded_channel();
            tokio::spawn(run_sequencer(Arc::clone(&shared), ops_rx, confirms_tx));
            shared.topology.watch(commands_handle.clone(), Command::Resync);
            let fanout = Fanout::new(
                Arc::clone(&shared.counters),
                shared.queue_capacity,
                shared.subscription_limits,
                ops_tx,
                commands_handle,
                broadcast,
            );
            let incoming = Incoming { messages, reconnects };
            let dispatcher = Dispatcher::new(Arc::clone(&shared), commands_rx, confirms_rx, incoming, fanout);
            tokio::spawn(dispatcher.run());
            Ok(shared)
        }
        Err(e) => {
            shared.topology.quit().await;
            Err(e)
        }
    }
}

/// Subscribes the broadcast channel, confirmed live, and reads the broadcast stream's position.
async fn connect_broadcast<C: Category>(shared: &Shared<C>) -> Result<Feed, Error> {
    shared.topology.subscribe_channel(shared.layout.channel(Audience::Broadcast)).await?;
    shared.topology.subscribe_channel(shared.control_channel.clone()).await?;
    shared.topology.confirm_live().await?;
    Counters::add(&shared.counters.redis_channels, 1);
    let position = match shared.retention {
        Some(_) => Some(shared.streams.last_stream_id_of(Audience::Broadcast).await?),
        None => None,
    };
    Ok(Feed::at(position))
}

/// Checks the settings against the layout, and notes who serves the data, for recoveries to compare with.
async fn note_identity<C: Category>(shared: &Shared<C>, durable: bool) -> Result<(), Error> {
    if shared.layout.pubsub_kind() != PubSubKind::Sharded && durable {
        return Err(Error::backend("replica acknowledgements need the cluster key layout"));
    }
    shared.topology.note_identity().await
}
