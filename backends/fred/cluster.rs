//! Redis Cluster: hash-slot scopes, shard-channel subscriptions, slot owners, the hybrid clock, the cluster publish.
//!
//! With the [cluster layout](super::KeyLayout::cluster) every audience's
//! channel and stream share one hash tag, so they live in one slot on one
//! master: a publish is one script on that master (`XADD` + `SPUBLISH`), and
//! each master's subscriber connection (see `shards`) `SSUBSCRIBE`s the
//! channels of that master's slots. The public account of the guarantees is
//! in the module docs of the backend, section "Redis Cluster".
//!
//! What differs from one server:
//!
//! - **Order across streams.** No key can share a slot with every stream, so
//!   there is no cluster-wide id sequence. Entry ids come from a hybrid clock
//!   instead: the Redis node's time, kept above the highest entry id the
//!   publishing hub has given out or received live. Live messages of two
//!   masters are put in that order after a round trip on the other masters'
//!   subscriber connections.
//! - **Outages are per shard.** A reconnect to one master resubscribes and
//!   recovers only the channels of that master's slots; the others' feeds
//!   are left alone.
//! - **Slots move.** A failover or a resharding gives slots a new owner.
//!   Redis ends shard-channel subscriptions of a slot that moves without a
//!   notice fred passes on, so the hub reads the slot map on a timer and
//!   resubscribes and recovers the channels of slots that moved.
//! - **A new owner may lack writes.** Replication is asynchronous: a master
//!   can die with acknowledged writes its replica never got. The hub notes the
//!   identity (`run_id`) of each slot's owner; when a slot's owner was
//!   replaced (not merely moved to another live master), the subscribers of
//!   its channels get a gap signal, unless publishes wait for replica
//!   acknowledgements ([`RedisHubBuilder::replica_acks`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::fred::clients::Client;
use ::fred::interfaces::{ClientLike, LuaInterface, PubsubInterface, ServerInterface};
use ::fred::types::config::{Options, Server};
use ::fred::types::{InfoKind, Message, Value};
use ::fred::util::redis_keyslot;
use tokio::sync::mpsc::WeakUnboundedSender;

use super::codec::{self, StreamId};
use super::dispatcher::Command;
use super::keys::{KeyLayout, PubSubKind};
use super::shards::{Shards, is_redirect};
use super::{RedisHubBuilder, Shared};
use crate::{Audience, Category, Error, Event};

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;
/// Most channels per `SUNSUBSCRIBE`.
const SUNSUBSCRIBE_CHUNK: usize = 512;
/// How often a command whose slot is moving (or whose cluster is down) is tried again.
const REDIRECT_RETRIES: u32 = 10;
/// The first pause before trying such a command again; it doubles, up to [`REDIRECT_PAUSE_MAX`].
/// (With `cluster-require-full-coverage yes`, the default, every master refuses commands from
/// the moment a lost master is marked failed until its replica has taken over.)
const REDIRECT_PAUSE: Duration = Duration::from_millis(25);
const REDIRECT_PAUSE_MAX: Duration = Duration::from_millis(400);
/// How long a master may take to say who it is.
const OWNER_QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for a `WAIT` reply to travel, on top of the time `WAIT` itself may take.
const WAIT_REPLY_MARGIN: Duration = Duration::from_secs(2);

/// Whether ssehub's entry ids order events across streams: through the
/// layout's order key on one server, or the hybrid clock on a cluster.
pub(crate) fn entry_ids_are_one_sequence(layout: &KeyLayout) -> bool {
    layout.order_key().is_some() || layout.pubsub_kind() == PubSubKind::Sharded
}

/// The cut to read streams up to, where the layout needs another than one server's clock.
///
/// On a cluster every master has its own clock, so no one node's time is a
/// cut of all streams: an entry of a node whose clock runs ahead would fall
/// beyond it, and be neither replayed nor (if added before the subscription)
/// delivered live. Streams are read to their end instead. Nothing is lost
/// that way; an event added to one stream while the other is being read may
/// come live after later events of the other audience.
pub(crate) fn horizon(layout: &KeyLayout) -> Option<StreamId> {
    (layout.pubsub_kind() == PubSubKind::Sharded).then_some(StreamId { ms: u64::MAX, seq: u64::MAX })
}

/// The hash slot of a key or shard channel.
pub(crate) fn slot_of(name: &str) -> u16 {
    redis_keyslot(name.as_bytes())
}

/// A set of hash slots, one bit each.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SlotSet(Box<[u64; SLOTS / 64]>);

impl SlotSet {
    pub(crate) fn new() -> Self {
        Self(Box::new([0; SLOTS / 64]))
    }

    pub(crate) fn insert(&mut self, slot: u16) {
        let slot = usize::from(slot) % SLOTS;
        self.0[slot / 64] |= 1 << (slot % 64);
    }

    pub(crate) fn contains(&self, slot: u16) -> bool {
        let slot = usize::from(slot) % SLOTS;
        self.0[slot / 64] & (1 << (slot % 64)) != 0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    fn union(&mut self, other: &SlotSet) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine |= theirs;
        }
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({} slots)", self.len())
    }
}

/// Which channels a recovery covers: all, or those of some hash slots.
#[derive(Clone, Debug, Default)]
pub(crate) enum Scope {
    /// Every channel: one server, or a loss that may have hit any channel.
    #[default]
    All,
    /// The channels whose slot is in the set.
    Slots(SlotSet),
}

impl Scope {
    /// Whether `channel` is covered.
    pub(crate) fn covers(&self, channel: &str) -> bool {
        self.covers_slot(slot_of(channel))
    }

    fn covers_slot(&self, slot: u16) -> bool {
        match self {
            Scope::All => true,
            Scope::Slots(slots) => slots.contains(slot),
        }
    }

    /// This scope grown to cover `other` too.
    pub(crate) fn widen(&mut self, other: Scope) {
        match (&mut *self, other) {
            (Scope::All, _) => {}
            (_, Scope::All) => *self = Scope::All,
            (Scope::Slots(mine), Scope::Slots(theirs)) => mine.union(&theirs),
        }
    }
}

/// The hash slots `server` serves, by the hub's slot map; every slot without one.
pub(crate) fn scope_of_server<C: Category>(shared: &Shared<C>, server: &Server) -> Scope {
    match shared.cluster.shards() {
        Some(shards) => Scope::Slots(shards.slots_of(server)),
        None => Scope::All,
    }
}

/// A command client for `key`: on a cluster, one of the master serving its slot.
pub(crate) fn command_client<C: Category>(shared: &Shared<C>, key: &str) -> Result<Client, Error> {
    match shared.cluster.shards() {
        Some(shards) => shards.commands_for(slot_of(key)),
        None => Ok(shared.commands.next_connected().clone()),
    }
}

/// Retries `attempt` while its slot is being moved (`MOVED`, `ASK`) or the cluster
/// is down (`CLUSTERDOWN`), reading the slot map again in between; at most [`REDIRECT_RETRIES`] times.
async fn follow_redirects<C, T, F, Fut>(shared: &Shared<C>, mut attempt: F) -> Result<T, Error>
where
    C: Category,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(AttemptError::Redis(e)) if is_redirect(&e) && tries < REDIRECT_RETRIES => {
                tries += 1;
                if let Some(shards) = shared.cluster.shards() {
                    // The dispatcher resubscribes moved channels on the topology check that follows.
                    if let Err(error) = shards.refresh(true).await {
                        tracing::debug!(%error, "reading the slot map after a redirection failed");
                    }
                }
                tokio::time::sleep((REDIRECT_PAUSE * 2u32.pow(tries - 1)).min(REDIRECT_PAUSE_MAX)).await;
            }
            Err(AttemptError::Redis(e)) => return Err(Error::backend(e)),
            Err(AttemptError::Hub(e)) => return Err(e),
        }
    }
}

/// Why one attempt of a routed command failed.
enum AttemptError {
    Redis(::fred::error::Error),
    Hub(Error),
}

impl From<::fred::error::Error> for AttemptError {
    fn from(e: ::fred::error::Error) -> Self {
        AttemptError::Redis(e)
    }
}

impl From<Error> for AttemptError {
    fn from(e: Error) -> Self {
        AttemptError::Hub(e)
    }
}

/// `SSUBSCRIBE`s `channels` (or `SUNSUBSCRIBE`s them), routed by slot to their masters.
///
/// Every channel gets its own `SSUBSCRIBE`. Redis answers a multi-channel
/// `SSUBSCRIBE` with one reply per channel, and fred takes the first as the
/// command's answer and any later one as the answer to the next command
/// written to that connection, which would then resolve before its own reply
/// (a subscription reported live too early). `SUNSUBSCRIBE` expects no
/// answer, so it goes in groups of one slot each (a command naming channels of
/// two slots fails with `CROSSSLOT`). Every command is tried; the first error is returned.
pub(crate) async fn change_shard_channels<C: Category>(
    shared: &Shared<C>,
    channels: Vec<String>,
    subscribe: bool,
) -> Result<(), Error> {
    let subscriber = |slot: u16| match shared.cluster.shards() {
        Some(shards) => shards.subscriber_for(slot),
        None => Ok(shared.subscriber.clone()),
    };
    let mut result = Ok(());
    if subscribe {
        for channel in channels {
            let slot = slot_of(&channel);
            let sent = follow_redirects(shared, || {
                let channel = channel.clone();
                async move { Ok(subscriber(slot)?.ssubscribe(channel).await?) }
            })
            .await;
            result = result.and(sent);
        }
        return result;
    }
    let mut by_slot: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for channel in channels {
        by_slot.entry(slot_of(&channel)).or_default().push(channel);
    }
    for (slot, group) in by_slot {
        for chunk in group.chunks(SUNSUBSCRIBE_CHUNK) {
            let sent = match subscriber(slot) {
                Ok(client) => client.sunsubscribe(chunk.to_vec()).await.map_err(Error::backend),
                Err(e) => Err(e),
            };
            result = result.and(sent);
        }
    }
    result
}

/// The masters whose subscriber connections may still carry messages that
/// were published before some message of `batch`, from the nodes the batch came from.
///
/// A subscriber sees its user's channel and the broadcast channel. Messages
/// of a user channel need the broadcast channel's node drained; broadcasts
/// need every other master's.
pub(crate) fn barrier_servers<C: Category>(shared: &Shared<C>, batch: &[Message]) -> Vec<Server> {
    let Some(shards) = shared.cluster.shards() else { return Vec::new() };
    let broadcast_channel = shared.layout.channel(Audience::Broadcast);
    let Some(broadcast_server) = shards.server_of(slot_of(&broadcast_channel)) else { return Vec::new() };
    let mut servers: HashSet<Server> = HashSet::new();
    for message in batch {
        if *message.channel == *broadcast_channel {
            // Earlier messages of user channels may be on any other master.
            servers.extend(shards.masters().into_iter().map(|(s, _)| s).filter(|s| *s != broadcast_server));
        } else if message.server != broadcast_server {
            servers.insert(broadcast_server.clone());
        }
    }
    servers.into_iter().collect()
}

/// A round trip on the subscriber connection to each of `servers`: once it is
/// back, every message that master sent before is in the hub's message channel.
/// A master that does not answer in time only costs the ordering.
pub(crate) async fn drain_connections<C: Category>(shared: &Shared<C>, servers: Vec<Server>) {
    if let Some(shards) = shared.cluster.shards() {
        shards.barrier(servers).await;
    }
}

/// Sorts `batch` by stream entry id when every message carries one (ssehub's
/// publish script adds it); otherwise leaves the arrival order.
///
/// Entry ids come from the hybrid clock, so this is publish order for
/// publishes made one after another; messages of one channel keep their order.
pub(crate) fn order_by_entry_id(batch: &mut [Message]) {
    if batch.len() < 2 {
        return;
    }
    let ids: Option<Vec<StreamId>> = batch.iter().map(entry_id_of).collect();
    let Some(ids) = ids else { return };
    if ids.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    let mut keyed: Vec<(StreamId, Message)> = ids.into_iter().zip(batch.iter().cloned()).collect();
    keyed.sort_by_key(|(id, _)| *id);
    for (slot, (_, message)) in batch.iter_mut().zip(keyed) {
        *slot = message;
    }
}

/// The `"stream_id"` the publish script appends to a channel message, read from its end.
fn entry_id_of(message: &Message) -> Option<StreamId> {
    const FIELD: &[u8] = b"\"stream_id\":\"";
    let bytes = message.value.as_bytes()?;
    let tail = &bytes[bytes.len().saturating_sub(FIELD.len() + 48)..];
    let start = tail.windows(FIELD.len()).rposition(|w| w == FIELD)? + FIELD.len();
    let rest = &tail[start..];
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Settings of a hub on a cluster, set on the [`RedisHubBuilder`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClusterSettings {
    replica_acks: u32,
    replica_ack_timeout: Duration,
    topology_check_interval: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            replica_acks: 0,
            replica_ack_timeout: Duration::from_millis(500),
            topology_check_interval: Duration::from_secs(1),
        }
    }
}

impl<C: Category> RedisHubBuilder<C> {
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
}

/// The cluster state a hub shares between its tasks.
pub(crate) struct ClusterState {
    settings: ClusterSettings,
    /// The per-master clients, on a cluster.
    shards: Option<Arc<Shards>>,
    /// The highest entry id this hub gave out or received: new entries get higher ids.
    clock: Mutex<StreamId>,
    /// Whose data each slot holds, as of the last recovery of that slot.
    owners: Mutex<Option<SlotOwners>>,
}

impl ClusterState {
    pub(crate) fn new(settings: ClusterSettings, shards: Option<Arc<Shards>>) -> Self {
        Self { settings, shards, clock: Mutex::new(StreamId::ZERO), owners: Mutex::new(None) }
    }

    /// The per-master clients, on a cluster.
    pub(crate) fn shards(&self) -> Option<&Arc<Shards>> {
        self.shards.as_ref()
    }

    /// Whether a publish that succeeded is known to be on a replica.
    pub(crate) fn durable(&self) -> bool {
        self.settings.replica_acks > 0
    }

    /// Moves the hybrid clock past `id`, an entry id given out or received.
    pub(crate) fn observe(&self, id: StreamId) {
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        if id > *clock {
            *clock = id;
        }
    }

    fn floor(&self) -> StreamId {
        *self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `change`'s view of the slot owners as the one later recoveries compare with.
    pub(crate) fn commit(&self, change: OwnerChange) {
        *self.owners.lock().unwrap_or_else(PoisonError::into_inner) = Some(change.next);
    }
}

/// Runs once connected: checks the settings against the layout and notes the owner of every slot.
pub(crate) async fn prepare<C: Category>(shared: &Shared<C>) -> Result<(), Error> {
    if shared.layout.pubsub_kind() != PubSubKind::Sharded {
        if shared.cluster.durable() {
            return Err(Error::backend("replica acknowledgements need the cluster key layout"));
        }
        return Ok(());
    }
    if shared.cluster.shards().is_none() {
        // The cluster layout on one server: sharded pub/sub works there too, and there are no slots to track.
        return Ok(());
    }
    let owners = read_slot_owners(shared, &Scope::All).await?;
    *shared.cluster.owners.lock().unwrap_or_else(PoisonError::into_inner) = Some(owners);
    Ok(())
}

/// Publishes with the cluster layout: the script with the hybrid clock's floor, then `WAIT` if configured.
pub(crate) async fn publish<C: Category>(shared: &Shared<C>, event: Event<C>) -> Result<(), Error> {
    let audience = event.audience();
    let channel = shared.layout.channel(audience);
    let stream = shared.layout.stream(audience);
    let Some(retention) = shared.retention else {
        let envelope = codec::envelope(&event).map_err(Error::backend)?;
        return follow_redirects(shared, || {
            let (channel, envelope, stream) = (channel.clone(), envelope.clone(), stream.clone());
            async move {
                let _: Value = command_client(shared, &stream)?.spublish(channel, envelope).await?;
                Ok(())
            }
        })
        .await;
    };
    let envelope = codec::envelope_prefix(&event).map_err(Error::backend)?;
    let args = vec![
        channel,
        envelope,
        retention.max_events().to_string(),
        retention.max_age().as_millis().to_string(),
        "SPUBLISH".to_string(),
        (if retention.is_exact() { "=" } else { "~" }).to_string(),
        shared.cluster.floor().to_string(),
    ];
    // One attempt only: a script whose reply was lost with its connection may
    // have run, and running it again would store the event twice. (A redirection
    // means it did not run.)
    let once = Options { max_attempts: Some(1), ..Options::default() };
    let sha = shared.script.sha1().clone();
    let (id, client) = follow_redirects(shared, || {
        let (sha, stream, args, once) = (sha.clone(), stream.clone(), args.clone(), once.clone());
        async move {
            let client = command_client(shared, &stream)?;
            let reply: Result<String, _> =
                client.with_options(&once).evalsha(sha.clone(), vec![stream.clone()], args.clone()).await;
            let id = match reply {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    shared.script.load(&client).await?;
                    client.with_options(&once).evalsha(sha, vec![stream], args).await?
                }
                other => other?,
            };
            Ok((id, client))
        }
    })
    .await?;
    if let Ok(id) = id.parse() {
        shared.cluster.observe(id);
    }
    let settings = shared.cluster.settings;
    if settings.replica_acks > 0 {
        // The same client of the same master, so the same connection as the script: WAIT covers its write.
        let wait = client.with_options(&Options {
            max_attempts: Some(1),
            timeout: Some(settings.replica_ack_timeout + WAIT_REPLY_MARGIN),
            ..Options::default()
        });
        let timeout_ms = i64::try_from(settings.replica_ack_timeout.as_millis()).unwrap_or(i64::MAX).max(1);
        let acked: i64 =
            wait.wait(i64::from(settings.replica_acks), timeout_ms).await.map_err(Error::backend)?;
        if acked < i64::from(settings.replica_acks) {
            return Err(Error::backend(format!(
                "event {} is stored on the master but only {acked} of {} replicas acknowledged it within {:?}",
                event.id(),
                settings.replica_acks,
                settings.replica_ack_timeout
            )));
        }
    }
    Ok(())
}

/// The identity (`run_id`) of the master holding each slot's data.
#[derive(Clone)]
pub(crate) struct SlotOwners {
    /// Per slot, an index into `run_ids`; `u16::MAX` where unknown.
    owner: Box<[u16]>,
    run_ids: Vec<Arc<str>>,
    /// The run ids of the masters that answered.
    masters: HashSet<Arc<str>>,
}

impl SlotOwners {
    fn owner_of(&self, slot: u16) -> Option<&Arc<str>> {
        self.run_ids.get(usize::from(*self.owner.get(usize::from(slot))?))
    }
}

/// What a recovery learnt about the slots' owners.
pub(crate) struct OwnerChange {
    /// Slots whose owner is another process than before and not a live master that held them
    /// (a failover, or a restart): acknowledged writes may be gone.
    replaced: SlotSet,
    next: SlotOwners,
}

impl OwnerChange {
    /// Whether `channel`'s slot got a replaced owner.
    pub(crate) fn replaced(&self, channel: &str) -> bool {
        self.replaced.contains(slot_of(channel))
    }

    /// How many slots got a replaced owner.
    pub(crate) fn replaced_slots(&self) -> usize {
        self.replaced.len()
    }
}

/// Compares the owners of the slots in `scope` with those last noted.
pub(crate) async fn owner_change<C: Category>(
    shared: &Shared<C>,
    scope: &Scope,
) -> Result<OwnerChange, Error> {
    let now = read_slot_owners(shared, scope).await?;
    let before = shared.cluster.owners.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let Some(before) = before else { return Ok(OwnerChange { replaced: SlotSet::new(), next: now }) };
    let mut replaced = SlotSet::new();
    let mut run_ids: Vec<Arc<str>> = Vec::new();
    let mut index: HashMap<Arc<str>, u16> = HashMap::new();
    let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
    for slot in 0..SLOTS as u16 {
        let old = before.owner_of(slot);
        let new = now.owner_of(slot);
        let kept = if scope.covers_slot(slot) {
            if let (Some(old), Some(new)) = (old, new)
                && old != new
                && !now.masters.contains(old)
            {
                replaced.insert(slot);
            }
            new.or(old)
        } else {
            old.or(new)
        };
        if let Some(run_id) = kept {
            let next = u16::try_from(run_ids.len()).unwrap_or(u16::MAX);
            let i = *index.entry(Arc::clone(run_id)).or_insert_with(|| {
                run_ids.push(Arc::clone(run_id));
                next
            });
            owner[usize::from(slot)] = i;
        }
    }
    Ok(OwnerChange { replaced, next: SlotOwners { owner, run_ids, masters: now.masters } })
}

/// The owner of every slot by the subscriber client's routing table, identified by `INFO server`.
///
/// A master that does not answer is left unknown, unless it serves a slot in
/// `scope`: then the read fails, to be retried.
async fn read_slot_owners<C: Category>(shared: &Shared<C>, scope: &Scope) -> Result<SlotOwners, Error> {
    let shards = shared.cluster.shards().ok_or_else(|| Error::backend("not on a cluster"))?;
    let masters = shards.masters();
    let options = Options { timeout: Some(OWNER_QUERY_TIMEOUT), fail_fast: true, ..Options::default() };
    let infos = futures_util::future::join_all(masters.iter().map(|(_, client)| {
        let options = options.clone();
        async move {
            let info: Result<String, _> = client.with_options(&options).info(Some(InfoKind::Server)).await;
            info.map(|info| {
                info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|id| Arc::<str>::from(id.trim()))
            })
        }
    }))
    .await;
    let mut run_id_of: HashMap<&Server, Arc<str>> = HashMap::new();
    let mut failed: Vec<(&Server, String)> = Vec::new();
    for ((server, _), info) in masters.iter().zip(infos) {
        match info {
            Ok(Some(run_id)) => {
                run_id_of.insert(server, run_id);
            }
            Ok(None) => failed.push((server, "no run_id in INFO".into())),
            Err(e) => failed.push((server, e.to_string())),
        }
    }
    let mut run_ids: Vec<Arc<str>> = Vec::new();
    let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
    for (start, end, server) in shards.slot_map() {
        let Some(run_id) = run_id_of.get(&server) else {
            if (start..=end).any(|slot| scope.covers_slot(slot)) {
                let reason = failed.iter().find(|(s, _)| **s == server).map_or("", |(_, r)| r.as_str());
                return Err(Error::backend(format!(
                    "cluster master {server} did not say who it is: {reason}"
                )));
            }
            continue;
        };
        let i = match run_ids.iter().position(|id| id == run_id) {
            Some(i) => i,
            None => {
                run_ids.push(Arc::clone(run_id));
                run_ids.len() - 1
            }
        };
        let i = u16::try_from(i).unwrap_or(u16::MAX);
        for slot in start..=end {
            if let Some(entry) = owner.get_mut(usize::from(slot)) {
                *entry = i;
            }
        }
    }
    let masters = run_id_of.into_values().collect();
    Ok(SlotOwners { owner, run_ids, masters })
}

/// Reads the slot map every `topology_check_interval` and asks the dispatcher
/// to resubscribe and recover the channels of slots that moved. Ends with the dispatcher.
pub(crate) async fn watch_topology<C: Category>(
    shared: Arc<Shared<C>>,
    dispatcher: WeakUnboundedSender<Command<C>>,
) {
    let Some(shards) = shared.cluster.shards().cloned() else { return };
    let interval = shared.cluster.settings.topology_check_interval;
    let mut known = shards.slot_map();
    loop {
        tokio::time::sleep(interval).await;
        if dispatcher.upgrade().is_none() {
            return;
        }
        // New masters are connected here; their subscribers report in as reconnects.
        if let Err(error) = shards.refresh(true).await {
            tracing::debug!(%error, "reading the cluster slot map failed");
            continue;
        }
        let now = shards.slot_map();
        let mut moved = SlotSet::new();
        for slot in 0..SLOTS as u16 {
            if master_of(&known, slot) != master_of(&now, slot) {
                moved.insert(slot);
            }
        }
        known = now;
        if moved.is_empty() {
            continue;
        }
        tracing::info!(
            slots = moved.len(),
            "hash slots moved to another master; resubscribing their channels"
        );
        let Some(dispatcher) = dispatcher.upgrade() else { return };
        if dispatcher.send(Command::Resync(Scope::Slots(moved))).is_err() {
            return;
        }
    }
}

fn master_of(map: &[(u16, u16, Server)], slot: u16) -> Option<&Server> {
    map.iter().find(|(start, end, _)| *start <= slot && slot <= *end).map(|(_, _, server)| server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_redis_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 0x31C3);
        assert_eq!(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
        assert_eq!(slot_of("sse:{broadcast}:live"), slot_of("sse:{broadcast}:stream"));
    }

    #[test]
    fn scopes_cover_their_slots_and_widen() {
        let mut slots = SlotSet::new();
        slots.insert(slot_of("a:{x}:live"));
        let mut scope = Scope::Slots(slots);
        assert!(scope.covers("a:{x}:stream"));
        let other = (0..).map(|n| format!("a:{{y{n}}}:live")).find(|c| !scope.covers(c)).unwrap();
        let mut more = SlotSet::new();
        more.insert(slot_of(&other));
        scope.widen(Scope::Slots(more));
        assert!(scope.covers(&other) && scope.covers("a:{x}:live"));
        scope.widen(Scope::All);
        assert!(matches!(scope, Scope::All));
        assert!(Scope::default().covers("anything"));
    }

    #[test]
    fn slot_sets_count_and_test_bits() {
        let mut set = SlotSet::new();
        assert!(set.is_empty());
        for slot in [0, 63, 64, 16383] {
            set.insert(slot);
        }
        assert_eq!(set.len(), 4);
        assert!(set.contains(16383) && set.contains(64) && !set.contains(65));
    }
}
