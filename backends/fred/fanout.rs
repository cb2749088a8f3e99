//! The local fan-out: each Redis channel's feed, the subscribers' queues behind it, and offering them deliveries.
//!
//! Mechanism only: which channels are held and live, where each feed is
//! (its cursor), and putting an event or a gap in every queue whose filter
//! passes it. When to recover and what to deliver after an outage is
//! decided in `recovery`.
//!
//! A subscription is owned by its user's feed; one that reads groups is a
//! member of each group's feed too (a handle on the same queue). A
//! subscribe call is answered once every channel it needs (its user's and
//! each of its groups') is live; a channel is released after its last local
//! subscriber goes.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};
use tokio::sync::oneshot;

use super::codec::{Decoded, StreamId};
use super::sequencer::{Confirmed, PubSubOp};
use super::stats::Counters;
use super::subscription::{Command, Delivery, Member, Recipient, Subscriber, Subscription, Unsubscriber};
use crate::backend::{Push, Registry, SubscriptionLimits, Wakeups};
use crate::{
    Audience, Category, CategorySet, Error, Event, EventId, GroupId, Groups, LimitScope, Reader, UserId,
};

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

/// A subscribe call waiting for its channels to be live.
struct PendingSubscribe<C: Category> {
    reply: SubscribeReply<C>,
    subscription: Subscription<C>,
    /// How many of its channels are not live yet.
    awaiting: usize,
}

/// A user channel held for local subscribers.
pub(crate) struct UserFeed<C: Category> {
    generation: u64,
    /// Whether the channel is confirmed live; subscribe calls wait until it is.
    pub(crate) live: bool,
    pub(crate) subscribers: Vec<Subscriber<C>>,
    /// The subscriber ids of subscribe calls waiting for this channel to be live.
    waiting: Vec<u64>,
    pub(crate) feed: Feed,
}

/// A group channel held for local subscriptions that read the group.
pub(crate) struct GroupFeed<C: Category> {
    generation: u64,
    /// Whether the channel is confirmed live.
    pub(crate) live: bool,
    /// The subscriptions that read the group (owned by their users' feeds).
    pub(crate) members: Vec<Member<C>>,
    /// The subscriber ids of subscribe calls waiting for this channel to be live.
    waiting: Vec<u64>,
    pub(crate) feed: Feed,
}

/// The local subscribers of every held channel, and the channel changes their comings and goings need.
pub(crate) struct Fanout<C: Category> {
    pub(crate) users: HashMap<UserId, UserFeed<C>>,
    pub(crate) groups: HashMap<GroupId, GroupFeed<C>>,
    pub(crate) broadcast: Feed,
    /// Subscribe calls waiting for their channels, by subscriber id.
    pending: HashMap<u64, PendingSubscribe<C>>,
    /// The groups of each subscription that reads some, by subscriber id.
    memberships: HashMap<u64, Groups>,
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
            groups: HashMap::new(),
            broadcast,
            pending: HashMap::new(),
            memberships: HashMap::new(),
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

    /// Whether the channel of `audience` (a user's or a group's) is held; the broadcasts' always is.
    pub(crate) fn holds(&self, audience: Audience) -> bool {
        match audience {
            Audience::User(user) => self.users.contains_key(&user),
            Audience::Group(group) => self.groups.contains_key(&group),
            Audience::Broadcast => true,
        }
    }

    pub(crate) fn subscribe(&mut self, reader: Reader, filter: CategorySet<C>, reply: SubscribeReply<C>) {
        let Reader { user, groups } = reader;
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
        let member = (!groups.is_empty()).then(|| queue.member(user));
        let mut awaiting = 0;
        match self.users.entry(user) {
            Entry::Occupied(mut entry) => {
                let feed = entry.get_mut();
                feed.subscribers.push(queue);
                if !feed.live {
                    feed.waiting.push(id);
                    awaiting += 1;
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
                    waiting: vec![id],
                    feed: Feed::default(),
                });
                awaiting += 1;
                Counters::add(&self.counters.redis_channels, 1);
                let _ = self.ops.send(PubSubOp::Subscribe { audience: Audience::User(user), generation });
            }
        }
        if let Some(member) = member {
            for group in &groups {
                let feed = match self.groups.entry(group) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let generation = self.next_generation;
                        self.next_generation += 1;
                        Counters::add(&self.counters.redis_channels, 1);
                        crate::metrics::open_groups(crate::metrics::Backend::Redis, 1);
                        let _ = self
                            .ops
                            .send(PubSubOp::Subscribe { audience: Audience::Group(group), generation });
                        entry.insert(GroupFeed {
                            generation,
                            live: false,
                            members: Vec::new(),
                            waiting: Vec::new(),
                            feed: Feed::default(),
                        })
                    }
                };
                feed.members.push(member.clone());
                if !feed.live {
                    feed.waiting.push(id);
                    awaiting += 1;
                }
            }
            self.memberships.insert(id, groups);
        }
        if awaiting == 0 {
            // A caller that gave up drops the subscription, which unsubscribes it.
            let _ = reply.send(Ok(subscription));
        } else {
            self.pending.insert(id, PendingSubscribe { reply, subscription, awaiting });
        }
    }

    pub(crate) fn unsubscribe(&mut self, user: UserId, subscriber: u64) {
        if let Some(feed) = self.users.get_mut(&user) {
            let before = feed.subscribers.len();
            feed.subscribers.retain(|s| s.id != subscriber);
            feed.waiting.retain(|waiting| *waiting != subscriber);
            Counters::sub(&self.counters.open_subscriptions, (before - feed.subscribers.len()) as u64);
        }
        // Ended (it lagged) before all its channels were live: its call is answered now, with
        // the subscription, which yields what it holds and then the reason it ended.
        if let Some(pending) = self.pending.remove(&subscriber) {
            let _ = pending.reply.send(Ok(pending.subscription));
        }
        self.leave_groups(subscriber);
        self.release_if_unused(user);
    }

    /// Takes subscriber `id` out of its groups' feeds, releasing those left unused.
    fn leave_groups(&mut self, id: u64) {
        let Some(groups) = self.memberships.remove(&id) else { return };
        for group in &groups {
            let Some(feed) = self.groups.get_mut(&group) else { continue };
            feed.members.retain(|member| member.id != id);
            feed.waiting.retain(|waiting| *waiting != id);
            self.release_group_if_unused(group);
        }
    }

    /// Drops the group's Redis channel once no local subscription reads it.
    fn release_group_if_unused(&mut self, group: GroupId) {
        let Some(feed) = self.groups.get(&group) else { return };
        if feed.members.is_empty() && feed.waiting.is_empty() {
            self.groups.remove(&group);
            crate::metrics::open_groups(crate::metrics::Backend::Redis, -1);
            Counters::sub(&self.counters.redis_channels, 1);
            let _ = self.ops.send(PubSubOp::Unsubscribe { audience: Audience::Group(group) });
        }
    }

    /// Ends every subscription of `user` here with [`Error::Revoked`] (a
    /// disconnect order), frees their places, and releases the user's channel.
    pub(crate) fn revoke(&mut self, user: UserId) {
        let Some(feed) = self.users.get_mut(&user) else { return };
        let mut wakeups = Wakeups::new();
        for subscriber in &feed.subscribers {
            subscriber.revoke(&mut wakeups);
        }
        let mut ids: Vec<u64> = feed.subscribers.iter().map(|s| s.id).collect();
        // Calls still waiting for their channels, whether or not their subscriber is still listed.
        ids.extend(self.pending.iter().filter(|(_, p)| p.subscription.user() == user).map(|(id, _)| *id));
        ids.sort_unstable();
        ids.dedup();
        feed.waiting.clear();
        let revoked = feed.subscribers.len() as u64;
        feed.subscribers.clear();
        Counters::sub(&self.counters.open_subscriptions, revoked);
        crate::metrics::disconnects(crate::metrics::Disconnect::Revoked, revoked);
        wakeups.wake_all();
        for id in ids {
            if let Some(pending) = self.pending.remove(&id) {
                let _ = pending.reply.send(Err(Error::Revoked));
            }
            self.leave_groups(id);
        }
        self.release_if_unused(user);
    }

    /// Drops the user's Redis channel once no local subscriber needs it.
    fn release_if_unused(&mut self, user: UserId) {
        let Some(feed) = self.users.get(&user) else { return };
        if feed.subscribers.is_empty() && feed.waiting.is_empty() {
            self.users.remove(&user);
            crate::metrics::online_users(crate::metrics::Backend::Redis, -1);
            Counters::sub(&self.counters.redis_channels, 1);
            let _ = self.ops.send(PubSubOp::Unsubscribe { audience: Audience::User(user) });
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
        let emptied: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, f)| f.members.is_empty() && f.waiting.is_empty())
            .map(|(g, _)| *g)
            .collect();
        for group in emptied {
            self.release_group_if_unused(group);
        }
    }

    pub(crate) fn on_confirmed(&mut self, confirmed: Confirmed) {
        let (feed_generation, live, waiting, cursor) = match confirmed.audience {
            Audience::User(user) => match self.users.get_mut(&user) {
                Some(feed) => (feed.generation, &mut feed.live, &mut feed.waiting, &mut feed.feed.cursor),
                None => return,
            },
            Audience::Group(group) => match self.groups.get_mut(&group) {
                Some(feed) => (feed.generation, &mut feed.live, &mut feed.waiting, &mut feed.feed.cursor),
                None => return,
            },
            Audience::Broadcast => return,
        };
        if feed_generation != confirmed.generation {
            return;
        }
        let waiting = std::mem::take(waiting);
        match confirmed.result {
            Ok(baseline) => {
                *live = true;
                if cursor.stream_id.is_none() && cursor.event_id.is_none() {
                    cursor.stream_id = baseline;
                }
                for id in waiting {
                    let Entry::Occupied(mut pending) = self.pending.entry(id) else { continue };
                    pending.get_mut().awaiting -= 1;
                    if pending.get().awaiting == 0 {
                        let PendingSubscribe { reply, subscription, .. } = pending.remove();
                        let _ = reply.send(Ok(subscription));
                    }
                }
                // Everyone it was subscribed for may have gone meanwhile.
                match confirmed.audience {
                    Audience::User(user) => self.release_if_unused(user),
                    Audience::Group(group) => self.release_group_if_unused(group),
                    Audience::Broadcast => {}
                }
            }
            Err(reason) => {
                tracing::warn!(audience = ?confirmed.audience, %reason, "subscribing to a channel failed");
                for id in waiting {
                    let Some(pending) = self.pending.remove(&id) else { continue };
                    let _ = pending.reply.send(Err(Error::backend(format!("subscribing failed: {reason}"))));
                    // Its subscription never started: out of every list it is in.
                    let user = pending.subscription.user();
                    if let Some(feed) = self.users.get_mut(&user) {
                        feed.waiting.retain(|w| *w != id);
                    }
                    self.unsubscribe(user, id);
                }
                self.release_emptied();
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
                // Before the channel is confirmed live its subscribe calls have not returned: what
                // arrives then was published before them (a replay reads it), and may be a message
                // of a released channel of the same name still in flight.
                let Some(feed) = self.users.get_mut(&user).filter(|feed| feed.live) else { return };
                if !feed.feed.admit(decoded) {
                    return;
                }
                if offer_all(&counters, &mut feed.subscribers, delivery, Some(&decoded.event)) {
                    self.release_if_unused(user);
                }
            }
            Audience::Group(group) => {
                let Some(feed) = self.groups.get_mut(&group).filter(|feed| feed.live) else { return };
                if !feed.feed.admit(decoded) {
                    return;
                }
                let gone = offer_members(&counters, &mut feed.members, delivery, Some(&decoded.event));
                self.drop_members(gone);
            }
        }
    }

    /// Unsubscribes members that lagged or went away while a group delivery was offered.
    pub(crate) fn drop_members(&mut self, gone: Vec<(UserId, u64)>) {
        for (user, id) in gone {
            self.unsubscribe(user, id);
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
        crate::metrics::open_groups(crate::metrics::Backend::Redis, -(self.groups.len() as i64));
        // Waiting subscribe calls see their reply dropped, which reads as Closed.
        self.pending.clear();
        self.memberships.clear();
        self.groups.clear();
        self.users.clear();
    }
}

/// Subscriptions woken together while a delivery is offered to many.
const WAKE_EVERY: usize = 16;

/// Offers a delivery to every member of a group whose filter passes `event` (all, for a gap),
/// dropping those that lagged or went away from the group's list. Returns them (user, subscriber
/// id), for their users' feeds to let go of them too.
pub(crate) fn offer_members<C: Category>(
    counters: &Counters,
    members: &mut Vec<Member<C>>,
    delivery: impl Fn() -> Delivery<C>,
    event: Option<&Event<C>>,
) -> Vec<(UserId, u64)> {
    let mut gone = Vec::new();
    offer_each(counters, members, delivery, event, "group members", |member| {
        gone.push((member.user, member.id))
    });
    gone
}

/// Offers a delivery to every subscriber whose filter passes `event` (all, for a gap), dropping
/// those that lagged or went away. Returns whether no subscriber is left.
pub(crate) fn offer_all<C: Category>(
    counters: &Counters,
    subscribers: &mut Vec<Subscriber<C>>,
    delivery: impl Fn() -> Delivery<C>,
    event: Option<&Event<C>>,
) -> bool {
    let before = subscribers.len();
    let removed = offer_each(counters, subscribers, delivery, event, "subscribers", |_| {});
    if removed > 0 {
        Counters::sub(&counters.open_subscriptions, removed);
    }
    before > 0 && subscribers.is_empty()
}

/// Offers a delivery to every reader in `readers` whose filter passes `event` (all, for a gap),
/// dropping those that lagged or went away, each shown to `dropped` first; counts the deliveries
/// and the lagged. Returns how many were dropped.
fn offer_each<C: Category, R: Recipient<C>>(
    counters: &Counters,
    readers: &mut Vec<R>,
    delivery: impl Fn() -> Delivery<C>,
    event: Option<&Event<C>>,
    what: &'static str,
    mut dropped: impl FnMut(&R),
) -> u64 {
    let before = readers.len();
    let mut delivered = 0u64;
    let mut lagged = 0u64;
    let mut wakeups = Wakeups::new();
    readers.retain(|reader| {
        if event.is_some_and(|e| !reader.filter().contains(e.category())) {
            return true;
        }
        // No lock is held here: the first subscriptions woken run on another
        // thread while the rest are filled, one waking per few deliveries.
        if wakeups.len() >= WAKE_EVERY {
            wakeups.wake_collected();
        }
        match reader.offer(delivery(), &mut wakeups) {
            Push::Queued => {
                delivered += u64::from(event.is_some());
                true
            }
            Push::Lagged => {
                lagged += 1;
                dropped(reader);
                false
            }
            Push::Ended => {
                dropped(reader);
                false
            }
        }
    });
    wakeups.wake_all();
    if lagged > 0 {
        Counters::add(&counters.lagged, lagged);
        tracing::debug!(lagged, readers = what, "readers fell behind and were dropped");
    }
    Counters::add(&counters.delivered, delivered);
    (before - readers.len()) as u64
}
