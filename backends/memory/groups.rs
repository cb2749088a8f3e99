//! Group streams: each group's subscriptions and retained events, in shards of their own.
//!
//! A subscription that reads groups is registered in its user's shard (as
//! every subscription is) and in the list of each of its groups. Locks are
//! taken in one order: a user's shard, then the broadcasts, then group
//! shards; a group publish takes its group's shard alone, and unregisters
//! the subscriptions it ended only after letting go of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::history::History;
use super::lock;
use super::registrations::{Delivered, Registration, deliver, is_mostly_empty, shrink_when_mostly_empty};
use crate::backend::{SubscriberQueue, Wakeups};
use crate::{Category, Event, GroupId};

/// Groups are spread over this many independently locked shards.
const GROUP_SHARD_COUNT: usize = 16;

/// Every group's subscriptions and history.
pub(super) struct GroupTable<C: Category> {
    shards: Box<[Mutex<GroupShard<C>>]>,
    /// Group streams with at least one subscription here: the open group channels gauge.
    open: AtomicUsize,
    /// Events retained in group streams, all groups together.
    pub(super) retained: AtomicUsize,
}

pub(super) struct GroupShard<C: Category> {
    pub(super) groups: HashMap<GroupId, GroupEntry<C>>,
    /// The newest sequence number a removed group had dropped: a position at
    /// or before it in a group no longer held may have lost events.
    pub(super) removed_through_seq: u64,
}

pub(super) struct GroupEntry<C: Category> {
    pub(super) subscribers: Vec<Registration<C>>,
    pub(super) history: History<C>,
}

impl<C: Category> GroupEntry<C> {
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.history.is_empty()
    }
}

impl<C: Category> GroupTable<C> {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..GROUP_SHARD_COUNT)
                .map(|_| Mutex::new(GroupShard { groups: HashMap::new(), removed_through_seq: 0 }))
                .collect(),
            open: AtomicUsize::new(0),
            retained: AtomicUsize::new(0),
        }
    }

    pub(super) fn shard(&self, group: GroupId) -> &Mutex<GroupShard<C>> {
        let bits = group.as_uuid().as_u128();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        &self.shards[(folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % GROUP_SHARD_COUNT]
    }

    /// Adds `registration` to the list of each of its groups.
    pub(super) fn register(&self, registration: &Registration<C>) {
        for group in &registration.groups {
            let mut shard = lock(self.shard(group));
            let entry = shard
                .groups
                .entry(group)
                .or_insert_with(|| GroupEntry { subscribers: Vec::new(), history: History::new() });
            if entry.subscribers.is_empty() {
                self.opened(1);
            }
            entry.subscribers.push(registration.clone());
        }
    }

    /// Removes `queue` from the lists of `groups`.
    pub(super) fn unregister(&self, groups: &crate::Groups, queue: &Arc<SubscriberQueue<C>>) {
        for group in groups {
            let mut guard = lock(self.shard(group));
            let shard = &mut *guard;
            let Some(entry) = shard.groups.get_mut(&group) else { continue };
            if let Some(at) = entry.subscribers.iter().position(|r| Arc::ptr_eq(&r.queue, queue)) {
                entry.subscribers.swap_remove(at);
                shrink_when_mostly_empty(&mut entry.subscribers);
                if entry.subscribers.is_empty() {
                    self.opened(-1);
                }
            }
            if entry.is_unused() {
                shard.remove(group);
            }
        }
    }

    /// Publishes a group event numbered `seq` (taken under its shard's lock
    /// by `number`): retained, and queued for the group's subscriptions.
    /// Returns the subscriptions that ended (lagged or dropped), for the
    /// caller to unregister once the lock is let go of.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &self,
        group: GroupId,
        event: &mut Event<C>,
        number: impl FnOnce(&mut Event<C>) -> u64,
        retention: Option<super::history::RetentionLimits>,
        now_ms: u64,
        counts: &mut Delivered,
        wakeups: &mut Wakeups,
        ended: &mut Vec<Arc<SubscriberQueue<C>>>,
    ) {
        let category_bit = crate::CategorySet::only(event.category()).bits();
        let mut guard = lock(self.shard(group));
        let shard = &mut *guard;
        let seq = number(event);
        match retention {
            Some(retention) => {
                let entry = shard
                    .groups
                    .entry(group)
                    .or_insert_with(|| GroupEntry { subscribers: Vec::new(), history: History::new() });
                let mut dropped = 0;
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    dropped += entry.history.drop_retained_until(cutoff);
                }
                dropped += entry.history.push(seq, now_ms, event, retention.max_len);
                self.retained.fetch_add(1, Ordering::Relaxed);
                self.retained.fetch_sub(dropped, Ordering::Relaxed);
                deliver(&entry.subscribers, event, category_bit, counts, wakeups, ended);
            }
            None => {
                if let Some(entry) = shard.groups.get(&group) {
                    deliver(&entry.subscribers, event, category_bit, counts, wakeups, ended);
                }
            }
        }
    }

    /// Drops expired group events, and the groups left with nothing.
    pub(super) fn drop_expired(&self, cutoff_ms: u64) {
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let shard = &mut *guard;
            let mut dropped = 0;
            let mut removed_through_seq = shard.removed_through_seq;
            shard.groups.retain(|_, entry| {
                dropped += entry.history.drop_retained_until(cutoff_ms);
                let keep = !entry.is_unused();
                if !keep {
                    removed_through_seq = removed_through_seq.max(entry.history.last_dropped_seq());
                }
                keep
            });
            shard.removed_through_seq = removed_through_seq;
            if is_mostly_empty(shard.groups.len(), shard.groups.capacity()) {
                shard.groups.shrink_to(shard.groups.len() * 2);
            }
            self.retained.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    /// Forgets every subscription (the hub closed; their queues are closed by their users' shards).
    pub(super) fn clear_subscribers(&self) {
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let shard = &mut *guard;
            for entry in shard.groups.values_mut() {
                if !entry.subscribers.is_empty() {
                    self.opened(-1);
                }
                entry.subscribers = Vec::new();
            }
            let mut removed_through_seq = shard.removed_through_seq;
            shard.groups.retain(|_, entry| {
                let keep = !entry.is_unused();
                if !keep {
                    removed_through_seq = removed_through_seq.max(entry.history.last_dropped_seq());
                }
                keep
            });
            shard.removed_through_seq = removed_through_seq;
        }
    }

    /// Group streams with a subscription here.
    pub(super) fn open_groups(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn opened(&self, delta: i64) {
        if delta > 0 {
            self.open.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.open.fetch_sub(delta.unsigned_abs() as usize, Ordering::Relaxed);
        }
        crate::metrics::open_groups(crate::metrics::Backend::Memory, delta);
    }
}

impl<C: Category> GroupShard<C> {
    fn remove(&mut self, group: GroupId) {
        if let Some(removed) = self.groups.remove(&group) {
            self.removed_through_seq = self.removed_through_seq.max(removed.history.last_dropped_seq());
            if is_mostly_empty(self.groups.len(), self.groups.capacity()) {
                self.groups.shrink_to(self.groups.len() * 2);
            }
        }
    }
}
