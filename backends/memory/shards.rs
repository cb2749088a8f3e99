//! The hub's shards: users behind one lock each, their subscriptions' registrations, and delivery to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::groups::GroupTable;
use super::history::History;
use super::registrations::{Delivered, Registration, is_mostly_empty, shrink_when_mostly_empty};
use super::{Shared, lock};
use crate::backend::{NOT_REGISTERED, OpenSubscriptions, Registry, SubscriberQueue};
use crate::{Category, UserId};

/// One shard: its users behind one lock, and counters read without the lock.
#[repr(align(128))]
pub(super) struct Shard<C: Category> {
    pub(super) state: Mutex<ShardState<C>>,
    pub(super) subscriptions: AtomicUsize,
    /// Users of this shard with a subscription registered.
    pub(super) online: AtomicUsize,
    pub(super) users: AtomicUsize,
    pub(super) retained_events: AtomicUsize,
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) lagged: AtomicU64,
    /// The operator metrics' handles, the same in every shard.
    pub(super) metrics: crate::metrics::Handles,
    /// The hub's open subscriptions, all shards together: the per-process cap's count.
    pub(super) hub_open: Arc<OpenSubscriptions>,
    /// The hub's group streams: a subscription that reads groups is in their lists too.
    pub(super) groups: Arc<GroupTable<C>>,
}

impl<C: Category> Shard<C> {
    /// An empty shard of a hub whose open subscriptions `hub_open` counts.
    pub(super) fn new(hub_open: Arc<OpenSubscriptions>, groups: Arc<GroupTable<C>>) -> Self {
        Self {
            state: Mutex::new(ShardState {
                users: HashMap::new(),
                listeners: Vec::new(),
                removed_until_ms: 0,
                removed_through_seq: 0,
                last_sweep_ms: 0,
            }),
            subscriptions: AtomicUsize::new(0),
            online: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            retained_events: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            metrics: crate::metrics::Handles::new(crate::metrics::Backend::Memory),
            hub_open,
            groups,
        }
    }
}

pub(super) struct ShardState<C: Category> {
    pub(super) users: HashMap<UserId, UserEntry<C>>,
    /// Every registration in the shard, whatever its user: what a broadcast
    /// serves, so users that only have history cost a broadcast nothing.
    pub(super) listeners: Vec<Registration<C>>,
    /// The newest UUIDv7 timestamp of the events of users removed from this
    /// shard: a Last-Event-ID at or before it may have been dropped.
    pub(super) removed_until_ms: u64,
    /// The newest sequence number dropped from the history of a user no longer in `users`.
    pub(super) removed_through_seq: u64,
    pub(super) last_sweep_ms: u64,
}

pub(super) struct UserEntry<C: Category> {
    pub(super) subscribers: Vec<Registration<C>>,
    pub(super) history: History<C>,
}

impl<C: Category> UserEntry<C> {
    pub(super) const fn new() -> Self {
        Self { subscribers: Vec::new(), history: History::new() }
    }

    pub(super) fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.history.is_empty()
    }
}

/// The two lists a registration is in; each keeps its position in one registry slot of the queue.
#[derive(Clone, Copy, Debug)]
pub(super) enum List {
    /// The user's registrations: served by the user's events.
    User = 0,
    /// Every registration of the shard: served by broadcasts.
    Shard = 1,
}

impl<C: Category> Registry<C> for Shared<C> {
    fn unregister(&self, queue: &Arc<SubscriberQueue<C>>) {
        let shard = self.shard(queue.user());
        lock(&shard.state).unregister(shard, queue);
    }
}

/// Removes `queue` from `registrations` (one of its two lists), keeping the
/// slots of the others right. Returns its registration, if it was there.
pub(super) fn remove_from<C: Category>(
    registrations: &mut Vec<Registration<C>>,
    list: List,
    queue: &Arc<SubscriberQueue<C>>,
) -> Option<Registration<C>> {
    let slot = queue.slot(list as usize);
    let slot = if registrations.get(slot).is_some_and(|r| Arc::ptr_eq(&r.queue, queue)) {
        slot
    } else {
        // Slots are kept exact; this is a safety net, not a path taken.
        registrations.iter().position(|r| Arc::ptr_eq(&r.queue, queue))?
    };
    let removed = registrations.swap_remove(slot);
    removed.queue.set_slot(list as usize, NOT_REGISTERED);
    if let Some(moved) = registrations.get(slot) {
        moved.queue.set_slot(list as usize, slot);
    }
    Some(removed)
}

impl<C: Category> ShardState<C> {
    /// Takes `queue` out of both its lists, and its user out of the shard if
    /// nothing is left of it. Returns whether it was registered.
    pub(super) fn unregister(&mut self, shard: &Shard<C>, queue: &Arc<SubscriberQueue<C>>) -> bool {
        if queue.slot(List::User as usize) == NOT_REGISTERED {
            return false;
        }
        let user = queue.user();
        if let Some(entry) = self.users.get_mut(&user) {
            if let Some(removed) = remove_from(&mut entry.subscribers, List::User, queue)
                && !removed.groups.is_empty()
            {
                shard.groups.unregister(&removed.groups, queue);
            }
            if entry.subscribers.is_empty() {
                shard.online.fetch_sub(1, Ordering::Relaxed);
                crate::metrics::online_users(crate::metrics::Backend::Memory, -1);
            }
            if entry.is_unused() {
                self.remove_user(shard, user);
            }
        }
        queue.set_slot(List::User as usize, NOT_REGISTERED);
        remove_from(&mut self.listeners, List::Shard, queue);
        shrink_when_mostly_empty(&mut self.listeners);
        shard.subscriptions.fetch_sub(1, Ordering::Relaxed);
        shard.hub_open.release(1);
        shard.metrics.subscriptions(-1);
        true
    }

    /// Forgets `user`, remembering how far its dropped history reached.
    /// Runs `prepare` on every user's entry, then forgets each user left with
    /// nothing (no subscription, nothing retained), remembering how far its
    /// dropped history reached; returns how many users it forgot.
    pub(super) fn forget_unused_users(&mut self, mut prepare: impl FnMut(&mut UserEntry<C>)) -> usize {
        let mut removed = 0;
        let mut removed_until_ms = self.removed_until_ms;
        let mut removed_through_seq = self.removed_through_seq;
        self.users.retain(|_, entry| {
            prepare(entry);
            let keep = !entry.is_unused();
            if !keep {
                removed += 1;
                removed_until_ms = removed_until_ms.max(entry.history.dropped_until_ms());
                removed_through_seq = removed_through_seq.max(entry.history.last_dropped_seq());
            }
            keep
        });
        self.removed_until_ms = removed_until_ms;
        self.removed_through_seq = removed_through_seq;
        removed
    }

    pub(super) fn remove_user(&mut self, shard: &Shard<C>, user: UserId) {
        if let Some(removed) = self.users.remove(&user) {
            self.removed_until_ms = self.removed_until_ms.max(removed.history.dropped_until_ms());
            self.removed_through_seq = self.removed_through_seq.max(removed.history.last_dropped_seq());
            shard.users.fetch_sub(1, Ordering::Relaxed);
            if is_mostly_empty(self.users.len(), self.users.capacity()) {
                self.users.shrink_to(self.users.len() * 2);
            }
        }
    }
}

impl<C: Category> Shard<C> {
    pub(super) fn record(&self, published: u64, counts: &Delivered) {
        if published > 0 {
            self.published.fetch_add(published, Ordering::Relaxed);
        }
        if counts.queued > 0 {
            self.delivered.fetch_add(counts.queued, Ordering::Relaxed);
        }
        if counts.lagged > 0 {
            self.lagged.fetch_add(counts.lagged, Ordering::Relaxed);
        }
        self.metrics.delivered(counts.queued);
        self.metrics.lagged(counts.lagged);
    }
}
