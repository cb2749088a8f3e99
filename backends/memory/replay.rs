//! Replay from a hub's histories: after an event id (merged by publish order), and after a cursor's positions (stream by stream).

use std::sync::atomic::Ordering;

use super::Shared;
use super::builder::RetentionLimits;
use super::history::{History, Retained};
use super::lock;
use super::shards::{Shard, ShardState};
use crate::backend::{self, ReplaySide, StreamSide};
use crate::{
    Category, CategorySet, EventId, Position, Positions, Replay, ReplayStatus, StreamReplay, UserId,
};

impl<C: Category> Shared<C> {
    /// Drops what expired from the broadcasts and from `user`'s history, both
    /// locked by the caller, so that a replay reads only what is retained.
    fn expire_for_replay(
        &self,
        shard: &Shard<C>,
        state: &mut ShardState<C>,
        broadcast: &mut History<C>,
        user: UserId,
        retention: RetentionLimits,
    ) {
        let Some(cutoff) = retention.cutoff_ms(self.now_ms()) else { return };
        broadcast.drop_retained_until(cutoff);
        self.broadcast_retained.store(broadcast.len(), Ordering::Relaxed);
        if let Some(entry) = state.users.get_mut(&user) {
            let dropped = entry.history.drop_retained_until(cutoff);
            shard.retained_events.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    pub(super) fn replay(&self, user: UserId, last_event_id: EventId, filter: CategorySet<C>) -> Replay<C> {
        let Some(retention) = self.config.limits else { return Replay::retention_disabled() };
        let shard = self.shard(user);
        // The user's shard lock first, then the broadcast history: the order
        // broadcasts take them in. Holding both gives a snapshot consistent
        // with what this user's subscriptions have been delivered.
        let mut state = lock(&shard.state);
        let mut broadcast = lock(&self.broadcast);
        let state = &mut *state;
        self.expire_for_replay(shard, state, &mut broadcast, user, retention);
        let entry = state.users.get(&user);
        let no_history = History::new();
        let own = entry.as_ref().map_or(&no_history, |entry| &entry.history);

        let replay = if let Some((position, seq)) = own.find(last_event_id) {
            let broadcasts = broadcast.starting_at(broadcast.first_after_seq(seq));
            backend::replay(
                last_event_id,
                ReplaySide {
                    events: own.starting_at(position + 1).map(Retained::in_publish_order),
                    holds_id: true,
                    trimmed_after_id: false,
                },
                ReplaySide {
                    events: broadcasts.map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: broadcast.last_dropped_seq() > seq,
                },
                filter,
            )
        } else if let Some((position, seq)) = broadcast.find(last_event_id) {
            // A user whose entry is gone had nothing retained after this
            // broadcast: its events would be younger than it, so unexpired.
            backend::replay(
                last_event_id,
                ReplaySide {
                    events: own.starting_at(own.first_after_seq(seq)).map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: own.last_dropped_seq() > seq,
                },
                ReplaySide {
                    events: broadcast.starting_at(position + 1).map(Retained::in_publish_order),
                    holds_id: true,
                    trimmed_after_id: false,
                },
                filter,
            )
        } else {
            let dropped_until_ms =
                own.dropped_until_ms().max(broadcast.dropped_until_ms()).max(state.removed_until_ms);
            let truncated = last_event_id.timestamp_millis().is_some_and(|ms| ms <= dropped_until_ms);
            backend::replay(
                last_event_id,
                ReplaySide {
                    events: own.starting_at(0).map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: truncated,
                },
                ReplaySide {
                    events: broadcast.starting_at(0).map(Retained::in_publish_order),
                    holds_id: false,
                    trimmed_after_id: truncated,
                },
                filter,
            )
        };
        drop(broadcast);
        if entry.is_some_and(|entry| entry.is_unused()) {
            state.remove_user(shard, user);
        }
        replay
    }

    pub(super) fn replay_since(
        &self,
        user: UserId,
        from: Positions,
        filter: CategorySet<C>,
    ) -> StreamReplay<C> {
        let Some(retention) = self.config.limits else { return StreamReplay::retention_disabled() };
        let shard = self.shard(user);
        // The locks publishes of this user's streams take (shard, then
        // broadcasts): no event of either stream is numbered while they are held.
        let mut state = lock(&shard.state);
        let mut broadcast = lock(&self.broadcast);
        let state = &mut *state;
        self.expire_for_replay(shard, state, &mut broadcast, user, retention);
        let entry = state.users.get(&user);
        let no_history = History::new();
        let own = entry.as_ref().map_or(&no_history, |entry| &entry.history);
        // Every event of these streams numbered so far is at or before it.
        let end = Some(self.position(self.next_seq.load(Ordering::Relaxed) - 1));
        let own_dropped_through = match entry {
            Some(_) => own.last_dropped_seq(),
            // A user forgotten since: as far as any forgotten user's history was dropped.
            None => state.removed_through_seq,
        };
        let dropped_until_ms =
            own.dropped_until_ms().max(broadcast.dropped_until_ms()).max(state.removed_until_ms);
        let streams = [
            (own, own_dropped_through, from.own),
            (&*broadcast, broadcast.last_dropped_seq(), from.broadcast),
        ];
        let [own_side, broadcast_side] = streams.map(|(history, dropped_through, from)| {
            // Where to start, how complete, and (after an id gone from history) which ids come after it.
            let (start, status, after_id) = match from {
                None => (history.len(), ReplayStatus::Complete, None),
                Some(Position::Entry { ms, seq }) if ms == self.epoch_ms => {
                    (history.first_after_seq(seq), truncated_if(dropped_through > seq), None)
                }
                // Numbered by an earlier hub: what came after it here is all retained, but its own history is gone.
                Some(Position::Entry { ms, .. }) if ms < self.epoch_ms => (0, ReplayStatus::Truncated, None),
                // Not a position this hub, or one before it, gave out.
                Some(Position::Entry { .. }) => (0, ReplayStatus::UnknownId, None),
                Some(Position::AfterEvent(id)) => match own.find(id).or_else(|| broadcast.find(id)) {
                    Some((_, seq)) => {
                        (history.first_after_seq(seq), truncated_if(dropped_through > seq), None)
                    }
                    // Gone from history: what followed it is told by id order (ids made by
                    // `EventId::new` ascend in publish order).
                    None if id.timestamp_millis().is_some_and(|ms| ms <= dropped_until_ms) => {
                        (0, ReplayStatus::Truncated, Some(id))
                    }
                    None => (0, ReplayStatus::UnknownId, None),
                },
            };
            StreamSide {
                events: history
                    .starting_at(start)
                    .filter(move |retained| after_id.is_none_or(|id| retained.event.id() > id))
                    .map(|retained| (self.position(retained.seq), &retained.event)),
                status,
                end,
            }
        });
        let replay = backend::stream_replay(own_side, broadcast_side, filter);
        drop(broadcast);
        if entry.is_some_and(|entry| entry.is_unused()) {
            state.remove_user(shard, user);
        }
        replay
    }
}

fn truncated_if(truncated: bool) -> ReplayStatus {
    if truncated { ReplayStatus::Truncated } else { ReplayStatus::Complete }
}
