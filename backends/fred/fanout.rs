//! The local fan-out: each Redis channel's feed, the subscribers' queues behind it, and offering them deliveries.
//!
//! Mechanism only: which channels are held and live, where each feed is
//! (its cursor), and putting an event or a gap in every queue whose filter
//! passes it. When to recover and what to deliver after an outage is
//! decided in `recovery`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};
use tokio::sync::oneshot;

use super::codec::{Decoded, StreamId};
use super::sequencer::{Confirmed, PubSubOp};
use super::stats::Counters;
use super::subscription::{Command, Delivery, Subscriber, Subscription, Unsubscriber};
use crate::backend::{Push, Registry, SubscriptionLimits, Wakeups};
use crate::{Audience, Category, CategorySet, Error, Event, EventId, LimitScope, UserId};

/// The last event a feed delivered: its stream entry id where known, else its event id.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Cursor {
    pub(crate) stream_id: Option<StreamId>,
    pub(crate) event_id: Option<EventId>,
}

/// One Redis channel's delivery state: where it is, and what the last recovery delivered.
#[derive(Default)]
pub(crate) struct Feed {
    pub(crate) cursor: Cursor,
    /// Events the last recovery delivered, so their live copies still in flight are dropped.
    pub(crate) recovered: HashSet<EventId>,
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

/// A user channel held for local subscribers.
pub(crate) struct UserFeed<C: Category> {
    generation: u64,
    /// Whether the channel is confirmed live; subscribe calls wait until it is.
    pub(crate) live: bool,
    pub(crate) subscribers: Vec<Subscriber<C>>,
    /// Subscribe calls waiting for the channel to be live, with their subscriber ids.
    waiting: Vec<(SubscribeReply<C>, Subscription<C>, u64)>,
    pub(crate) feed: Feed,
}

/// The local subscribers of every held channel, and the channel changes their comings and goings need.
pub(crate) struct Fanout<C: Category> {
    pub(crate) users: HashMap<UserId, UserFeed<C>>,
    pub(crate) broadcast: Feed,
    counters: Arc<Counters>,
    queue_capacity: usize,
    limits: SubscriptionLimits,
    /// Channel changes, to the sequencer.
    ops: UnboundedSender<PubSubOp>,
    /// Where dropped subscriptions unsubscribe: the dispatcher's inbox.
    registry: Arc<dyn Registry<C>>,
    next_subscriber: u64,
    next_generation: u64,
}

impl<C: Category> Fanout<C> {
    pub(crate) fn new(
        counters: Arc<Counters>,
        queue_capacity: usize,
        limits: SubscriptionLimits,
        ops: UnboundedSender<PubSubOp>,
        commands: WeakUnboundedSender<Command<C>>,
        broadcast: Feed,
    ) -> Self {
        Self {
            users: HashMap::new(),
            broadcast,
            counters,
            queue_capacity,
            limits,
            ops,
            registry: Arc::new(Unsubscriber { commands }),
            next_subscriber: 0,
            next_generation: 0,
        }
    }

    /// Each user's open subscriptions here (users with none left out): the presence counts.
    pub(crate) fn open_per_user(&self) -> HashMap<UserId, usize> {
        self.users
            .iter()
            .filter(|(_, feed)| !feed.subscribers.is_empty())
            .map(|(user, feed)| (*user, feed.subscribers.len()))
            .collect()
    }

    /// Whether `user`'s channel is held.
    pub(crate) fn holds(&self, user: &UserId) -> bool {
        self.users.contains_key(user)
    }

    pub(crate) fn subscribe(&mut self, user: UserId, filter: CategorySet<C>, reply: SubscribeReply<C>) {
        // The counts are this task's own: exact, whatever other tasks do meanwhile.
        let open = usize::try_from(self.counters.open_subscriptions.get()).unwrap_or(usize::MAX);
        let refused = if open >= self.limits.max_per_process() {
            Err(Error::TooManySubscriptions {
                scope: LimitScope::Process,
                limit: self.limits.max_per_process(),
            })
        } else {
            self.limits.check_user(self.users.get(&user).map_or(0, |feed| feed.subscribers.len()))
        };
        if let Err(error) = refused {
            crate::metrics::disconnects(crate::metrics::Disconnect::Limit, 1);
            let _ = reply.send(Err(error));
            return;
        }
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        let (queue, subscription) =
            Subscriber::open(user, id, filter, self.queue_capacity, Arc::clone(&self.registry));
        Counters::add(&self.counters.open_subscriptions, 1);
        match self.users.entry(user) {
            Entry::Occupied(mut entry) => {
                let feed = entry.get_mut();
                feed.subscribers.push(queue);
                if feed.live {
                    // A caller that gave up drops the subscription, which unsubscribes it.
                    let _ = reply.send(Ok(subscription));
                } else {
                    feed.waiting.push((reply, subscription, id));
                }
            }
            Entry::Vacant(entry) => {
                let generation = self.next_generation;
                self.next_generation += 1;
                crate::metrics::online_users(crate::metrics::Backend::Redis, 1);
                entry.insert(UserFeed {
                    generation,
                    live: false,
                    subscribers: vec![queue],
                    waiting: vec![(reply, subscription, id)],
                    feed: Feed::default(),
                });
                Counters::add(&self.counters.redis_channels, 1);
                let _ = self.ops.send(PubSubOp::Subscribe { user, generation });
            }
        }
    }

    pub(crate) fn unsubscribe(&mut self, user: UserId, subscriber: u64) {
        let Some(feed) = self.users.get_mut(&user) else { return };
        let before = feed.subscribers.len();
        feed.subscribers.retain(|s| s.id != subscriber);
        Counters::sub(&self.counters.open_subscriptions, (before - feed.subscribers.len()) as u64);
        self.release_if_unused(user);
    }

    /// Ends every subscription of `user` here with [`Error::Revoked`] (a
    /// disconnect order), frees their places, and releases the user's channel.
    pub(crate) fn revoke(&mut self, user: UserId) {
        let Some(feed) = self.users.get_mut(&user) else { return };
        let mut wakeups = Wakeups::new();
        for subscriber in &feed.subscribers {
            subscriber.revoke(&mut wakeups);
        }
        for (reply, _subscription, _) in feed.waiting.drain(..) {
            let _ = reply.send(Err(Error::Revoked));
        }
        let revoked = feed.subscribers.len() as u64;
        feed.subscribers.clear();
        Counters::sub(&self.counters.open_subscriptions, revoked);
        crate::metrics::disconnects(crate::metrics::Disconnect::Revoked, revoked);
        wakeups.wake_all();
        self.release_if_unused(user);
    }

    /// Drops the user's Redis channel once no local subscriber needs it.
    fn release_if_unused(&mut self, user: UserId) {
        let Some(feed) = self.users.get(&user) else { return };
        if feed.subscribers.is_empty() && feed.waiting.is_empty() {
            self.users.remove(&user);
            crate::metrics::online_users(crate::metrics::Backend::Redis, -1);
            Counters::sub(&self.counters.redis_channels, 1);
            let _ = self.ops.send(PubSubOp::Unsubscribe { user });
        }
    }

    /// Releases every channel whose subscribers are all gone.
    pub(crate) fn release_emptied(&mut self) {
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

    pub(crate) fn on_confirmed(&mut self, confirmed: Confirmed) {
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
                for (reply, subscription, _) in feed.waiting.drain(..) {
                    let _ = reply.send(Ok(subscription));
                }
            }
            Err(reason) => {
                tracing::warn!(user = %confirmed.user, %reason, "subscribing to a user channel failed");
                let failed: HashSet<u64> = feed.waiting.iter().map(|(_, _, id)| *id).collect();
                feed.subscribers.retain(|s| !failed.contains(&s.id));
                Counters::sub(&self.counters.open_subscriptions, failed.len() as u64);
                for (reply, _subscription, _) in feed.waiting.drain(..) {
                    let _ = reply.send(Err(Error::backend(format!("subscribing failed: {reason}"))));
                }
                self.release_if_unused(confirmed.user);
            }
        }
    }

    /// Delivers a decoded live message of `audience` to the subscribers it is for, unless its feed has it.
    pub(crate) fn deliver(&mut self, audience: Audience, decoded: &Decoded<C>) {
        let counters = Arc::clone(&self.counters);
        let delivery = || Delivery::Event(decoded.event.clone());
        match audience {
            Audience::Broadcast => {
                if !self.broadcast.admit(decoded) {
                    return;
                }
                let mut emptied = Vec::new();
                for (user, feed) in &mut self.users {
                    if offer_all(&counters, &mut feed.subscribers, delivery, Some(&decoded.event)) {
                        emptied.push(*user);
                    }
                }
                for user in emptied {
                    self.release_if_unused(user);
                }
            }
            Audience::User(user) => {
                let Some(feed) = self.users.get_mut(&user) else { return };
                if !feed.feed.admit(decoded) {
                    return;
                }
                if offer_all(&counters, &mut feed.subscribers, delivery, Some(&decoded.event)) {
                    self.release_if_unused(user);
                }
            }
            Audience::Group(_) => {}
        }
    }

    /// Asks the sequencer to subscribe `channels` again; returns once they are live.
    pub(crate) async fn resubscribe(&self, channels: Vec<String>) -> Result<(), Error> {
        let (done, finished) = oneshot::channel();
        self.ops.send(PubSubOp::Resubscribe { channels, done }).map_err(|_| Error::Closed)?;
        finished.await.map_err(|_| Error::Closed)?
    }

    /// Counts and logs gap signals given to `subscribers` subscribers.
    pub(crate) fn gapped(&self, subscribers: u64, cause: &str) {
        if subscribers > 0 {
            Counters::add(&self.counters.gaps, subscribers);
            tracing::warn!(subscribers, cause, "events may have been lost; subscribers were told of a gap");
        }
    }

    /// Ends every subscription (dropping a `Subscriber` closes its queue: it yields what is queued, then `Error::Closed`).
    pub(crate) fn close_all(&mut self) {
        let open: u64 = self.users.values().map(|u| u.subscribers.len() as u64).sum();
        Counters::sub(&self.counters.open_subscriptions, open);
        crate::metrics::online_users(crate::metrics::Backend::Redis, -(self.users.len() as i64));
        // Waiting subscribe calls see their reply dropped, which reads as Closed.
        self.users.clear();
    }
}

/// Subscriptions woken together while a delivery is offered to many.
const WAKE_EVERY: usize = 16;

/// Offers a delivery to every subscriber whose filter passes `event` (all, for a gap), dropping
/// those that lagged or went away. Returns whether no subscriber is left.
pub(crate) fn offer_all<C: Category>(
    counters: &Counters,
    subscribers: &mut Vec<Subscriber<C>>,
    delivery: impl Fn() -> Delivery<C>,
    event: Option<&Event<C>>,
) -> bool {
    let before = subscribers.len();
    let mut delivered = 0u64;
    let mut lagged = 0u64;
    let mut wakeups = Wakeups::new();
    subscribers.retain(|subscriber| {
        if event.is_some_and(|e| !subscriber.filter.contains(e.category())) {
            return true;
        }
        // No lock is held here: the first subscriptions woken run on another
        // thread while the rest are filled, one waking per few deliveries.
        if wakeups.len() >= WAKE_EVERY {
            wakeups.wake_collected();
        }
        match subscriber.offer(delivery(), &mut wakeups) {
            Push::Queued => {
                delivered += u64::from(event.is_some());
                true
            }
            Push::Lagged => {
                lagged += 1;
                false
            }
            Push::Ended => false,
        }
    });
    wakeups.wake_all();
    let removed = (before - subscribers.len()) as u64;
    if removed > 0 {
        Counters::sub(&counters.open_subscriptions, removed);
    }
    if lagged > 0 {
        Counters::add(&counters.lagged, lagged);
        tracing::debug!(lagged, "subscribers fell behind and were dropped");
    }
    Counters::add(&counters.delivered, delivered);
    before > 0 && subscribers.is_empty()
}
