//! Publishing into a hub: numbering each event, retaining it, and delivering it to the shards' subscriptions.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use super::history::RetentionLimits;
use super::registrations::{Delivered, deliver, is_mostly_empty};
use super::shards::{Shard, ShardState, UserEntry};
use super::{Shared, lock};
use crate::backend::Wakeups;
use crate::{Audience, Category, CategorySet, Error, Event, Position, UserId};

impl<C: Category> Shared<C> {
    pub(super) fn publish_now(&self, mut event: Event<C>) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        // A handle of its own, so that placing it under the lock copies nothing.
        event.make_unique();
        match event.audience() {
            Audience::User(user) => self.publish_to_user(user, event),
            Audience::Broadcast => self.publish_to_everyone(event),
            Audience::Group(group) => self.publish_to_group(group, event),
        }
        Ok(())
    }

    /// The position of the event numbered `seq`.
    pub(super) fn position(&self, seq: u64) -> Position {
        Position::entry(self.epoch_ms, seq)
    }

    pub(super) fn publish_to_user(&self, user: UserId, mut event: Event<C>) {
        let retention = self.config.limits;
        let category_bit = CategorySet::only(event.category()).bits();
        let shard = self.shard(user);
        let mut counts = Delivered::default();
        let mut wakeups = Wakeups::new();
        let mut ended = Vec::new();
        let mut guard = lock(&shard.state);
        let state = &mut *guard;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        event.place(self.position(seq));
        let event = &event;
        match retention {
            Some(retention) => {
                let now_ms = self.now_ms();
                let entry = state.users.entry(user).or_insert_with(|| {
                    shard.users.fetch_add(1, Ordering::Relaxed);
                    UserEntry::new()
                });
                let mut dropped = 0;
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    dropped += entry.history.drop_retained_until(cutoff);
                }
                dropped += entry.history.push(seq, now_ms, event, retention.max_len);
                deliver(&entry.subscribers, event, category_bit, &mut counts, &mut wakeups, &mut ended);
                shard.retained_events.fetch_add(1, Ordering::Relaxed);
                shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
                if now_ms >= state.last_sweep_ms.saturating_add(retention.sweep_interval_ms()) {
                    self.sweep(shard, state, retention, now_ms);
                }
            }
            None => {
                if let Some(entry) = state.users.get(&user) {
                    deliver(&entry.subscribers, event, category_bit, &mut counts, &mut wakeups, &mut ended);
                }
            }
        }
        for queue in &ended {
            state.unregister(shard, queue);
        }
        drop(guard);
        wakeups.wake_all();
        shard.record(1, &counts);
    }

    /// A group event: numbered, retained and queued under its group's lock alone.
    pub(super) fn publish_to_group(&self, group: crate::GroupId, mut event: Event<C>) {
        let mut counts = Delivered::default();
        let mut wakeups = Wakeups::new();
        let mut ended = Vec::new();
        let number = |event: &mut Event<C>| {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            event.place(self.position(seq));
            seq
        };
        let now_ms = self.now_ms();
        self.groups.publish(
            group,
            &mut event,
            number,
            self.config.limits,
            now_ms,
            &mut counts,
            &mut wakeups,
            &mut ended,
        );
        wakeups.wake_all();
        // Ended subscriptions leave every list, the group's lock let go of.
        for queue in &ended {
            crate::backend::Registry::unregister(self, queue);
        }
        self.shards[0].record(1, &counts);
    }

    pub(super) fn publish_to_everyone(&self, mut event: Event<C>) {
        let category_bit = CategorySet::only(event.category()).bits();
        let mut wakeups = Wakeups::new();
        let mut ended = Vec::new();
        // Every shard is locked before the sequence number is taken and
        // released as soon as it has been served: each subscriber then sees
        // broadcasts and its user's events in sequence order, which is the
        // order replay merges them in.
        let mut guards: Vec<MutexGuard<'_, ShardState<C>>> =
            self.shards.iter().map(|s| lock(&s.state)).collect();
        {
            let mut broadcast = lock(&self.broadcast);
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            event.place(self.position(seq));
            if let Some(retention) = self.config.limits {
                let now_ms = self.now_ms();
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    broadcast.drop_retained_until(cutoff);
                }
                broadcast.push(seq, now_ms, &event, retention.max_len);
                self.broadcast_retained.store(broadcast.len(), Ordering::Relaxed);
            }
        }
        for (index, mut state) in guards.drain(..).enumerate() {
            let shard = &self.shards[index];
            let mut counts = Delivered::default();
            deliver(&state.listeners, &event, category_bit, &mut counts, &mut wakeups, &mut ended);
            for queue in ended.drain(..) {
                state.unregister(shard, &queue);
            }
            drop(state);
            shard.record(u64::from(index == 0), &counts);
        }
        // Only now is every shard unlocked.
        wakeups.wake_all();
    }

    /// Drops expired events of every user in the shard, and the users left with nothing.
    pub(super) fn sweep(
        &self,
        shard: &Shard<C>,
        state: &mut ShardState<C>,
        retention: RetentionLimits,
        now_ms: u64,
    ) {
        state.last_sweep_ms = now_ms;
        let Some(cutoff) = retention.cutoff_ms(now_ms) else { return };
        let mut dropped = 0;
        let removed = state.forget_unused_users(|entry| dropped += entry.history.drop_retained_until(cutoff));
        if is_mostly_empty(state.users.len(), state.users.capacity()) {
            state.users.shrink_to(state.users.len() * 2);
        }
        shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
        shard.users.fetch_sub(removed, Ordering::Relaxed);
    }
}
