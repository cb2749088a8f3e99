//! The dispatcher: one task that owns the local subscriptions, decodes each message once and fans it out.
//!
//! It also keeps the subscriber connection whole across outages: on a
//! reconnect it resubscribes every held channel, waits for the liveness
//! barrier, then reads from the streams what was published while it was down
//! (and, the same way, what fred's internal message channel dropped when it
//! overflowed), delivering it in order before any later live message. Where
//! that cannot be done, subscribers get [`Error::Gap`](crate::Error::Gap).
//!
//! A second task, the sequencer, sends `SUBSCRIBE`/`UNSUBSCRIBE` on the
//! subscriber connection in the order the dispatcher decided them, and
//! confirms each new channel with a round trip on that connection.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ::fred::prelude::{ClientLike, PubsubInterface, Value};
use ::fred::types::config::Server;
use ::fred::types::{InfoKind, Message};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, WeakUnboundedSender};
use tokio::sync::oneshot;

use super::Shared;
use super::cluster::{self, Scope};
use super::codec::{Decoded, Skip, StreamId};
use super::keys::PubSubKind;
use super::replay::{Start, merge};
use super::stats::Counters;
use super::subscription::{Delivery, Offer, SubscriberQueue, Subscription};
use crate::{Audience, Category, CategorySet, Error, Event, EventId, UserId};

/// How long to wait before retrying a failed resubscribe or recovery.
const RECOVERY_RETRY: Duration = Duration::from_millis(500);
/// Messages handled in a row before pending commands get a turn.
const MESSAGE_BURST: u32 = 256;
/// Channels per `SUBSCRIBE` when resubscribing many.
const RESUBSCRIBE_CHUNK: usize = 512;

/// A request to the dispatcher from the hub or a subscription.
pub(crate) enum Command<C: Category> {
    Subscribe { user: UserId, filter: CategorySet<C>, reply: oneshot::Sender<Result<Subscription<C>, Error>> },
    Unsubscribe { user: UserId, subscriber: u64 },
    // Channels whose hash slots moved to another cluster node: subscribe them again and recover.
    Resync(Scope),
}

/// A change of the subscriber connection's channels, in dispatcher order.
pub(crate) enum PubSubOp {
    Subscribe { user: UserId, generation: u64 },
    Unsubscribe { user: UserId },
    Resubscribe { channels: Vec<String>, done: oneshot::Sender<Result<(), Error>> },
}

/// A user channel confirmed live (with the stream position at that point), or failed.
pub(crate) struct Confirmed {
    user: UserId,
    generation: u64,
    result: Result<Option<StreamId>, String>,
}

/// The last event a feed delivered: its stream entry id where known, else its event id.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Cursor {
    pub(crate) stream_id: Option<StreamId>,
    pub(crate) event_id: Option<EventId>,
}

/// One Redis channel's delivery state: where it is, and what the last recovery delivered.
#[derive(Default)]
pub(crate) struct Feed {
    cursor: Cursor,
    /// Events the last recovery delivered, so their live copies still in flight are dropped.
    recovered: HashSet<EventId>,
}

impl Feed {
    pub(crate) fn at(stream_id: Option<StreamId>) -> Self {
        Self { cursor: Cursor { stream_id, event_id: None }, recovered: HashSet::new() }
    }

    /// Whether a live message is new, moving the cursor past it if so.
    fn admit<C: Category>(&mut self, decoded: &Decoded<C>) -> bool {
        let id = decoded.event.id();
        match decoded.stream_id {
            Some(position) => {
                if self.cursor.stream_id.is_some_and(|c| position <= c) {
                    return false;
                }
                self.cursor = Cursor { stream_id: Some(position), event_id: Some(id) };
            }
            None => {
                if self.recovered.contains(&id) {
                    return false;
                }
                // Published without retention by ssehub, or by another publisher: the position is found
                // from the event id if a recovery needs it.
                self.cursor = Cursor { stream_id: None, event_id: Some(id) };
            }
        }
        true
    }
}

/// Where a `subscribe` call waits for its subscription.
type SubscribeReply<C> = oneshot::Sender<Result<Subscription<C>, Error>>;

struct UserFeed<C: Category> {
    generation: u64,
    live: bool,
    subscribers: Vec<SubscriberQueue<C>>,
    waiting: Vec<(SubscribeReply<C>, Subscription<C>)>,
    feed: Feed,
}

/// What a recovery must do, accumulated until it succeeds.
#[derive(Clone, Default)]
struct PendingRecovery {
    resubscribe: bool,
    reconnected: bool,
    /// The channels to resubscribe and recover.
    scope: Scope,
}

/// The recovery of one feed, read before any state changes.
struct FeedRecovery<C> {
    gap: bool,
    events: Vec<(StreamId, Event<C>)>,
    cursor: Cursor,
}

pub(crate) struct Dispatcher<C: Category> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) commands: UnboundedReceiver<Command<C>>,
    pub(crate) commands_handle: WeakUnboundedSender<Command<C>>,
    pub(crate) confirms: UnboundedReceiver<Confirmed>,
    pub(crate) ops: UnboundedSender<PubSubOp>,
    pub(crate) messages: broadcast::Receiver<Message>,
    pub(crate) reconnects: broadcast::Receiver<Server>,
    pub(crate) broadcast: Feed,
    pub(crate) run_id: Option<String>,
    users: HashMap<UserId, UserFeed<C>>,
    next_subscriber: u64,
    next_generation: u64,
    pending: Option<PendingRecovery>,
    retry_at: Option<tokio::time::Instant>,
}

impl<C: Category> Dispatcher<C> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        commands: UnboundedReceiver<Command<C>>,
        commands_handle: WeakUnboundedSender<Command<C>>,
        confirms: UnboundedReceiver<Confirmed>,
        ops: UnboundedSender<PubSubOp>,
        messages: broadcast::Receiver<Message>,
        reconnects: broadcast::Receiver<Server>,
        broadcast: Feed,
        run_id: Option<String>,
    ) -> Self {
        Self {
            shared,
            commands,
            commands_handle,
            confirms,
            ops,
            messages,
            reconnects,
            broadcast,
            run_id,
            users: HashMap::new(),
            next_subscriber: 0,
            next_generation: 0,
            pending: None,
            retry_at: None,
        }
    }

    /// Runs until the hub is dropped or the client closes.
    pub(crate) async fn run(mut self) {
        let mut burst = 0u32;
        loop {
            let recovering = self.pending.is_some();
            let retry_at = self.retry_at.unwrap_or_else(tokio::time::Instant::now);
            if burst >= MESSAGE_BURST {
                // A flood of messages must not starve subscribes and unsubscribes.
                burst = 0;
                match self.commands.try_recv() {
                    Ok(command) => {
                        self.on_command(command);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
            }
            tokio::select! {
                biased;
                reconnect = self.reconnects.recv() => match reconnect {
                    Ok(server) => self.on_reconnect(Some(server)).await,
                    Err(RecvError::Lagged(_)) => self.on_reconnect(None).await,
                    Err(RecvError::Closed) => break,
                },
                Some(confirmed) = self.confirms.recv() => self.on_confirmed(confirmed),
                _ = tokio::time::sleep_until(retry_at), if recovering && self.retry_at.is_some() => {
                    self.try_recover().await;
                }
                message = self.messages.recv(), if !recovering => {
                    burst += 1;
                    match message {
                        Ok(message) if self.shared.layout.pubsub_kind() == PubSubKind::Sharded => {
                            self.on_shard_messages(message).await;
                        }
                        Ok(message) => self.on_message(message),
                        Err(RecvError::Lagged(dropped)) => {
                            Counters::add(&self.shared.counters.message_channel_overflows, 1);
                            tracing::warn!(dropped, "the Redis client's message channel overflowed; recovering from the streams");
                            self.note_recovery(Scope::All, false, false);
                            self.try_recover().await;
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
                command = self.commands.recv() => {
                    burst = 0;
                    match command {
                        Some(command) => self.on_command(command),
                        None => break,
                    }
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        for user in self.users.values() {
            for subscriber in &user.subscribers {
                subscriber.close();
            }
        }
        let open: u64 = self.users.values().map(|u| u.subscribers.len() as u64).sum();
        Counters::sub(&self.shared.counters.open_subscriptions, open);
        self.users.clear();
        // Waiting subscribe calls see their reply dropped, which reads as Closed.
        let _ = self.shared.subscriber.quit().await;
        let _ = self.shared.commands.quit().await;
        if let Some(shards) = self.shared.cluster.shards() {
            shards.quit().await;
        }
        tracing::debug!("Redis hub dispatcher stopped");
    }

    fn on_command(&mut self, command: Command<C>) {
        match command {
            Command::Subscribe { user, filter, reply } => self.subscribe(user, filter, reply),
            Command::Unsubscribe { user, subscriber } => self.unsubscribe(user, subscriber),
            Command::Resync(scope) => {
                self.note_recovery(scope, true, true);
                // The run loop's retry timer starts the recovery.
                self.retry_at = Some(tokio::time::Instant::now());
            }
        }
    }

    /// Adds to the pending recovery, or starts one.
    fn note_recovery(&mut self, scope: Scope, resubscribe: bool, reconnected: bool) {
        match self.pending.as_mut() {
            Some(pending) => {
                pending.scope.widen(scope);
                pending.resubscribe |= resubscribe;
                pending.reconnected |= reconnected;
            }
            None => self.pending = Some(PendingRecovery { resubscribe, reconnected, scope }),
        }
    }

    fn subscribe(
        &mut self,
        user: UserId,
        filter: CategorySet<C>,
        reply: oneshot::Sender<Result<Subscription<C>, Error>>,
    ) {
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        let capacity = self.shared.queue_capacity;
        let (subscription, queue) =
            Subscription::new(user, id, filter, capacity, self.commands_handle.clone());
        Counters::add(&self.shared.counters.open_subscriptions, 1);
        match self.users.entry(user) {
            Entry::Occupied(mut entry) => {
                let feed = entry.get_mut();
                feed.subscribers.push(queue);
                if feed.live {
                    // A caller that gave up drops the subscription, which unsubscribes it.
                    let _ = reply.send(Ok(subscription));
                } else {
                    feed.waiting.push((reply, subscription));
                }
            }
            Entry::Vacant(entry) => {
                let generation = self.next_generation;
                self.next_generation += 1;
                entry.insert(UserFeed {
                    generation,
                    live: false,
                    subscribers: vec![queue],
                    waiting: vec![(reply, subscription)],
                    feed: Feed::default(),
                });
                Counters::add(&self.shared.counters.redis_channels, 1);
                let _ = self.ops.send(PubSubOp::Subscribe { user, generation });
            }
        }
    }

    fn unsubscribe(&mut self, user: UserId, subscriber: u64) {
        let Some(feed) = self.users.get_mut(&user) else { return };
        let before = feed.subscribers.len();
        feed.subscribers.retain(|s| s.id != subscriber);
        Counters::sub(&self.shared.counters.open_subscriptions, (before - feed.subscribers.len()) as u64);
        self.release_if_unused(user);
    }

    /// Drops the user's Redis channel once no local subscriber needs it.
    fn release_if_unused(&mut self, user: UserId) {
        let Some(feed) = self.users.get(&user) else { return };
        if feed.subscribers.is_empty() && feed.waiting.is_empty() {
            self.users.remove(&user);
            Counters::sub(&self.shared.counters.redis_channels, 1);
            let _ = self.ops.send(PubSubOp::Unsubscribe { user });
        }
    }

    fn on_confirmed(&mut self, confirmed: Confirmed) {
        let Some(feed) = self.users.get_mut(&confirmed.user) else { return };
        if feed.generation != confirmed.generation {
            return;
        }
        match confirmed.result {
            Ok(baseline) => {
                feed.live = true;
                if feed.feed.cursor.stream_id.is_none() && feed.feed.cursor.event_id.is_none() {
                    feed.feed.cursor.stream_id = baseline;
                }
                for (reply, subscription) in feed.waiting.drain(..) {
                    let _ = reply.send(Ok(subscription));
                }
            }
            Err(reason) => {
                tracing::warn!(user = %confirmed.user, %reason, "subscribing to a user channel failed");
                let failed: HashSet<u64> = feed.waiting.iter().map(|(_, s)| s.id()).collect();
                feed.subscribers.retain(|s| !failed.contains(&s.id));
                Counters::sub(&self.shared.counters.open_subscriptions, failed.len() as u64);
                for (reply, _subscription) in feed.waiting.drain(..) {
                    let _ = reply.send(Err(Error::backend(format!("subscribing failed: {reason}"))));
                }
                self.release_if_unused(confirmed.user);
            }
        }
    }

    /// Messages of a cluster: a user's channel and the broadcast channel come
    /// over connections to two nodes, so their messages can arrive in either
    /// order. A round trip on every other connection that may still carry an
    /// earlier message brings those in; the batch is then handled in entry id order.
    async fn on_shard_messages(&mut self, first: Message) {
        let mut batch = vec![first];
        self.drain_messages(&mut batch);
        let servers = cluster::barrier_servers(&self.shared, &batch);
        if !servers.is_empty() {
            cluster::drain_connections(&self.shared, servers).await;
            self.drain_messages(&mut batch);
        }
        cluster::order_by_entry_id(&mut batch);
        for message in batch {
            self.on_message(message);
        }
    }

    /// Moves every message already in the client's channel into `batch`.
    fn drain_messages(&mut self, batch: &mut Vec<Message>) {
        loop {
            match self.messages.try_recv() {
                Ok(message) => batch.push(message),
                Err(broadcast::error::TryRecvError::Lagged(dropped)) => {
                    Counters::add(&self.shared.counters.message_channel_overflows, 1);
                    tracing::warn!(
                        dropped,
                        "the Redis client's message channel overflowed; recovering from the streams"
                    );
                    self.note_recovery(Scope::All, false, false);
                    self.retry_at = Some(tokio::time::Instant::now());
                    return;
                }
                // Closed: the run loop sees it on its next receive.
                Err(_) => return,
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        let shared = Arc::clone(&self.shared);
        let channel: &str = &message.channel;
        let Some(audience) = shared.layout.audience_of_channel(channel) else {
            shared.skipped(channel, &Skip::UnknownChannel);
            return;
        };
        if let Audience::User(user) = audience
            && !self.users.contains_key(&user)
        {
            // In flight when the channel was released.
            return;
        }
        let Some(bytes) = message.value.as_bytes() else {
            shared.skipped(channel, &Skip::NotUtf8);
            return;
        };
        let decoded = match shared.decoder.envelope(audience, bytes) {
            Ok(decoded) => decoded,
            Err(reason) => {
                shared.skipped(channel, &reason);
                return;
            }
        };
        if let Some(position) = decoded.stream_id {
            // Whatever this hub publishes next gets a later id, in every stream.
            shared.cluster.observe(position);
        }
        match audience {
            Audience::Broadcast => {
                if !self.broadcast.admit(&decoded) {
                    return;
                }
                let mut emptied = Vec::new();
                for (user, feed) in &mut self.users {
                    if offer_all(
                        &shared,
                        &mut feed.subscribers,
                        || Delivery::Event(decoded.event.clone()),
                        Some(&decoded.event),
                    ) {
                        emptied.push(*user);
                    }
                }
                for user in emptied {
                    self.release_if_unused(user);
                }
            }
            Audience::User(user) => {
                let Some(feed) = self.users.get_mut(&user) else { return };
                if !feed.feed.admit(&decoded) {
                    return;
                }
                if offer_all(
                    &shared,
                    &mut feed.subscribers,
                    || Delivery::Event(decoded.event.clone()),
                    Some(&decoded.event),
                ) {
                    self.release_if_unused(user);
                }
            }
        }
    }

    /// A connection of the subscriber client (re)connected; `None` if which one is unknown.
    async fn on_reconnect(&mut self, server: Option<Server>) {
        Counters::add(&self.shared.counters.reconnects, 1);
        // On a cluster only the channels of the slots that node serves were on the connection.
        let scope = match server {
            Some(server) if self.shared.layout.pubsub_kind() == PubSubKind::Sharded => {
                cluster::scope_of_server(&self.shared, &server)
            }
            _ => Scope::All,
        };
        tracing::info!(
            channels = self.users.len() + 1,
            ?scope,
            "Redis subscriber connection re-established; resubscribing"
        );
        self.note_recovery(scope, true, true);
        self.try_recover().await;
    }

    async fn try_recover(&mut self) {
        let Some(pending) = self.pending.clone() else { return };
        match self.recover(pending).await {
            Ok(()) => {
                self.pending = None;
                self.retry_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, "recovery after an outage failed; retrying");
                self.retry_at = Some(tokio::time::Instant::now() + RECOVERY_RETRY);
            }
        }
    }

    async fn recover(&mut self, pending: PendingRecovery) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let scope = &pending.scope;
        let broadcast_channel = shared.layout.channel(Audience::Broadcast);
        let broadcast_in_scope = scope.covers(&broadcast_channel);
        let user_in_scope = |user: &UserId| scope.covers(&shared.layout.channel(Audience::User(*user)));
        if pending.resubscribe {
            let mut channels: Vec<String> = Vec::new();
            channels.extend(broadcast_in_scope.then(|| broadcast_channel.clone()));
            channels.extend(
                self.users
                    .keys()
                    .filter(|u| user_in_scope(u))
                    .map(|u| shared.layout.channel(Audience::User(*u))),
            );
            let count = channels.len();
            let (done, finished) = oneshot::channel();
            self.ops.send(PubSubOp::Resubscribe { channels, done }).map_err(|_| Error::Closed)?;
            finished.await.map_err(|_| Error::Closed)??;
            if let Some(p) = self.pending.as_mut() {
                p.resubscribe = false;
            }
            tracing::info!(channels = count, "resubscribed and live again");
        }
        // On a cluster each slot has its own server: which of them are another process now?
        let on_cluster = shared.cluster.shards().is_some();
        let restarted =
            if pending.reconnected && !on_cluster { self.server_restarted().await? } else { false };
        let owners = if on_cluster { Some(cluster::owner_change(&shared, scope).await?) } else { None };
        let replaced = |channel: &str| owners.as_ref().is_some_and(|o| o.replaced(channel));
        // A replaced server may lack acknowledged writes, unless publishes waited for a replica.
        let lost_writes = |channel: &str| replaced(channel) && !shared.cluster.durable();
        let cause = if owners.as_ref().is_some_and(|o| o.replaced_slots() > 0) {
            "a cluster node was replaced"
        } else if restarted {
            "the Redis server restarted"
        } else {
            "history was trimmed"
        };
        if shared.retention.is_none() {
            // Nothing to recover from: whatever was published meanwhile is lost to these subscribers.
            let mut gapped = 0u64;
            for (user, feed) in &mut self.users {
                if broadcast_in_scope || user_in_scope(user) {
                    gapped += feed.subscribers.len() as u64;
                    offer_all(&shared, &mut feed.subscribers, || Delivery::Gap, None);
                }
            }
            self.gapped(gapped, "retention is off");
            self.release_emptied();
            if let Some(owners) = owners {
                shared.cluster.commit(owners);
            }
            return Ok(());
        }

        let broadcast_cursor = self.broadcast.cursor;
        let user_cursors: Vec<(UserId, Cursor)> = self
            .users
            .iter()
            .filter(|(u, f)| f.live && user_in_scope(u))
            .map(|(u, f)| (*u, f.feed.cursor))
            .collect();
        // Every feed is read up to one horizon, so the merge of any two is a consistent cut.
        let horizon = shared.horizon().await?;
        let broadcast_restarted = restarted || replaced(&broadcast_channel);
        let broadcast = async {
            if broadcast_in_scope {
                recover_feed(&shared, Audience::Broadcast, broadcast_cursor, broadcast_restarted, horizon)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let users = futures_util::future::try_join_all(user_cursors.iter().map(|(user, cursor)| {
            let audience = Audience::User(*user);
            let restarted = restarted || replaced(&shared.layout.channel(audience));
            recover_feed(&shared, audience, *cursor, restarted, horizon)
        }));
        let (broadcast, users) = tokio::try_join!(broadcast, users)?;

        let mut recovered = 0u64;
        let mut gapped = 0u64;
        let (broadcast_gap, broadcast_events) = match broadcast {
            Some(broadcast) => {
                recovered += broadcast.events.len() as u64;
                self.broadcast.cursor = broadcast.cursor;
                self.broadcast.recovered = broadcast.events.iter().map(|(_, e)| e.id()).collect();
                (broadcast.gap || lost_writes(&broadcast_channel), broadcast.events)
            }
            None => (false, Vec::new()),
        };
        let mut own_recoveries: HashMap<UserId, FeedRecovery<C>> =
            user_cursors.into_iter().map(|(user, _)| user).zip(users).collect();
        for (user, feed) in self.users.iter_mut().filter(|(_, f)| f.live) {
            let own = own_recoveries.remove(user);
            if own.is_none() && !broadcast_gap && broadcast_events.is_empty() {
                continue;
            }
            let mut gap = broadcast_gap;
            let own_events = match own {
                Some(own) => {
                    recovered += own.events.len() as u64;
                    feed.feed.cursor = own.cursor;
                    feed.feed.recovered = own.events.iter().map(|(_, e)| e.id()).collect();
                    gap |= own.gap || lost_writes(&shared.layout.channel(Audience::User(*user)));
                    own.events
                }
                None => Vec::new(),
            };
            if gap {
                gapped += feed.subscribers.len() as u64;
                offer_all(&shared, &mut feed.subscribers, || Delivery::Gap, None);
            }
            for event in merge(
                own_events,
                broadcast_events.clone(),
                cluster::entry_ids_are_one_sequence(&shared.layout),
            ) {
                offer_all(&shared, &mut feed.subscribers, || Delivery::Event(event.clone()), Some(&event));
            }
        }
        Counters::add(&shared.counters.recovered, recovered);
        if recovered > 0 {
            tracing::info!(recovered, "recovered events published during an outage from the streams");
        }
        self.gapped(gapped, cause);
        self.release_emptied();
        if let Some(owners) = owners {
            shared.cluster.commit(owners);
        }
        Ok(())
    }

    fn gapped(&self, subscribers: u64, cause: &str) {
        if subscribers > 0 {
            Counters::add(&self.shared.counters.gaps, subscribers);
            tracing::warn!(subscribers, cause, "events may have been lost; subscribers were told of a gap");
        }
    }

    fn release_emptied(&mut self) {
        let emptied: Vec<UserId> = self
            .users
            .iter()
            .filter(|(_, f)| f.subscribers.is_empty() && f.waiting.is_empty())
            .map(|(u, _)| *u)
            .collect();
        for user in emptied {
            self.release_if_unused(user);
        }
    }

    /// Whether the server is another process than before (its data may be gone), by its run id.
    async fn server_restarted(&mut self) -> Result<bool, Error> {
        let info: String = self
            .shared
            .commands
            .next_connected()
            .info(Some(InfoKind::Server))
            .await
            .map_err(Error::backend)?;
        let run_id = parse_run_id(&info);
        let restarted = run_id.is_none() || run_id != self.run_id;
        if restarted {
            tracing::warn!(before = ?self.run_id, now = ?run_id, "the Redis server restarted");
        }
        self.run_id = run_id;
        Ok(restarted)
    }
}

/// Offers a delivery to every subscriber whose filter passes `event` (all, for a gap), dropping
/// those that lagged or went away. Returns whether no subscriber is left.
fn offer_all<C: Category>(
    shared: &Shared<C>,
    subscribers: &mut Vec<SubscriberQueue<C>>,
    delivery: impl Fn() -> Delivery<C>,
    event: Option<&Event<C>>,
) -> bool {
    let before = subscribers.len();
    let mut delivered = 0u64;
    let mut lagged = 0u64;
    subscribers.retain(|subscriber| {
        if event.is_some_and(|e| !subscriber.filter.contains(e.category())) {
            return true;
        }
        match subscriber.offer(delivery()) {
            Offer::Queued => {
                delivered += u64::from(event.is_some());
                true
            }
            Offer::Lagged => {
                lagged += 1;
                false
            }
            Offer::Gone => false,
        }
    });
    let removed = (before - subscribers.len()) as u64;
    if removed > 0 {
        Counters::sub(&shared.counters.open_subscriptions, removed);
    }
    if lagged > 0 {
        Counters::add(&shared.counters.lagged, lagged);
        tracing::debug!(lagged, "subscribers fell behind and were dropped");
    }
    Counters::add(&shared.counters.delivered, delivered);
    before > 0 && subscribers.is_empty()
}

/// Reads what one feed missed after its cursor, and whether some of it is gone.
async fn recover_feed<C: Category>(
    shared: &Shared<C>,
    audience: Audience,
    cursor: Cursor,
    restarted: bool,
    horizon: StreamId,
) -> Result<FeedRecovery<C>, Error> {
    let key = shared.layout.stream(audience);
    let position = match (cursor.stream_id, cursor.event_id) {
        (Some(position), _) => Some(position),
        (None, Some(event_id)) => shared.locate(&key, event_id).await?,
        (None, None) => None,
    };
    let Some(position) = position else {
        // The position is unknown: what followed cannot be told apart from what came before.
        let end = shared.last_stream_id(&key).await?;
        return Ok(FeedRecovery {
            gap: true,
            events: Vec::new(),
            cursor: Cursor { stream_id: Some(end), event_id: None },
        });
    };
    let gap = if position == StreamId::ZERO {
        // The stream was empty when the feed started: something is lost only if entries were removed
        // since, or the server lost its data.
        restarted || shared.trim_info(&key).await?.is_some_and(|info| info.removed_any() != Some(false))
    } else {
        // Trimming removes the oldest entries: while the last delivered entry is held, so is all that
        // followed. Once it is gone (trimmed, expired, or lost in a restart) nothing proves that what
        // followed it survived, so the subscribers are told.
        !shared.entry_exists(&key, position).await?
    };
    let events = shared.read_from(audience, Start::After(position), horizon).await?;
    let cursor = match events.last() {
        Some((id, event)) => Cursor { stream_id: Some(*id), event_id: Some(event.id()) },
        None => Cursor { stream_id: Some(position), event_id: cursor.event_id },
    };
    Ok(FeedRecovery { gap, events, cursor })
}

fn parse_run_id(info: &str) -> Option<String> {
    info.lines().find_map(|line| line.strip_prefix("run_id:")).map(|id| id.trim().to_string())
}

/// Sends the dispatcher's channel changes in order and confirms new channels live.
pub(crate) async fn run_sequencer<C: Category>(
    shared: Arc<Shared<C>>,
    mut ops: UnboundedReceiver<PubSubOp>,
    confirms: UnboundedSender<Confirmed>,
) {
    while let Some(first) = ops.recv().await {
        let mut batch = vec![first];
        while batch.len() < RESUBSCRIBE_CHUNK {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut subscribes: Vec<String> = Vec::new();
        let mut unsubscribes: Vec<String> = Vec::new();
        let mut to_confirm: Vec<(UserId, u64)> = Vec::new();
        let mut resubscribed: Vec<oneshot::Sender<Result<(), Error>>> = Vec::new();
        let mut failure: Option<String> = None;
        for op in batch {
            match op {
                PubSubOp::Subscribe { user, generation } => {
                    flush(&shared, &mut unsubscribes, false, &mut failure).await;
                    subscribes.push(shared.layout.channel(Audience::User(user)));
                    to_confirm.push((user, generation));
                }
                PubSubOp::Unsubscribe { user } => {
                    flush(&shared, &mut subscribes, true, &mut failure).await;
                    unsubscribes.push(shared.layout.channel(Audience::User(user)));
                }
                PubSubOp::Resubscribe { mut channels, done } => {
                    flush(&shared, &mut unsubscribes, false, &mut failure).await;
                    flush(&shared, &mut subscribes, true, &mut failure).await;
                    flush(&shared, &mut channels, true, &mut failure).await;
                    resubscribed.push(done);
                }
            }
        }
        flush(&shared, &mut unsubscribes, false, &mut failure).await;
        flush(&shared, &mut subscribes, true, &mut failure).await;
        if failure.is_none()
            && (!to_confirm.is_empty() || !resubscribed.is_empty())
            && let Err(e) = liveness_barrier(&shared).await
        {
            failure = Some(e.to_string());
        }
        let baselines = match (&failure, shared.retention.is_some()) {
            (None, true) => {
                let reads =
                    to_confirm.iter().map(|(user, _)| shared.last_stream_id_of(Audience::User(*user)));
                match futures_util::future::try_join_all(reads).await {
                    Ok(ids) => ids.into_iter().map(Some).collect(),
                    Err(e) => {
                        failure = Some(e.to_string());
                        Vec::new()
                    }
                }
            }
            _ => vec![None; to_confirm.len()],
        };
        for (i, (user, generation)) in to_confirm.into_iter().enumerate() {
            let result = match &failure {
                Some(reason) => Err(reason.clone()),
                None => Ok(baselines[i]),
            };
            let _ = confirms.send(Confirmed { user, generation, result });
        }
        for done in resubscribed {
            let _ = done.send(match &failure {
                Some(reason) => Err(Error::backend(format!("resubscribing failed: {reason}"))),
                None => Ok(()),
            });
        }
    }
}

/// Sends one `SUBSCRIBE` (or `UNSUBSCRIBE`) for `channels`, keeping the first failure.
async fn flush<C: Category>(
    shared: &Shared<C>,
    channels: &mut Vec<String>,
    subscribe: bool,
    failure: &mut Option<String>,
) {
    if channels.is_empty() {
        return;
    }
    let batch = std::mem::take(channels);
    let client = &shared.subscriber;
    let result = match (shared.layout.pubsub_kind(), subscribe) {
        (PubSubKind::Plain, true) => {
            let mut result = Ok(());
            for chunk in batch.chunks(RESUBSCRIBE_CHUNK) {
                result = result.and(client.subscribe(chunk.to_vec()).await);
            }
            result
        }
        (PubSubKind::Plain, false) => client.unsubscribe(batch).await,
        // Sharded channels of different slots cannot share one command.
        (_, subscribe) => cluster::change_shard_channels(shared, batch, subscribe)
            .await
            .map_err(|e| ::fred::error::Error::new(::fred::error::ErrorKind::Unknown, e.to_string())),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, subscribe, "changing the subscriber connection's channels failed");
        if subscribe && failure.is_none() {
            *failure = Some(e.to_string());
        }
    }
}

/// A round trip on the subscriber connection: every `SUBSCRIBE` sent before it is in effect once it returns.
pub(crate) async fn liveness_barrier<C: Category>(shared: &Shared<C>) -> Result<(), Error> {
    if shared.layout.pubsub_kind() == PubSubKind::Sharded {
        // SSUBSCRIBE itself waits for the server's confirmation.
        return Ok(());
    }
    // In RESP2 subscribe mode PING answers ["pong", ""]: read it as a Value.
    let _: Value = shared.subscriber.ping(None).await.map_err(Error::backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_run_id;

    #[test]
    fn run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:7000\r\n";
        assert_eq!(parse_run_id(info).as_deref(), Some("abc123"));
        assert_eq!(parse_run_id("# Server\r\n"), None);
    }
}
