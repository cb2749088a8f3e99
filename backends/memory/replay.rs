//! Replay from a hub's histories: after an event id (merged by publish order), and after a cursor's positions (stream by stream).

use std::sync::atomic::Ordering;

use super::Shared;
use super::history::RetentionLimits;
use super::history::{History, Retained};
use super::lock;
use super::shards::{Shard, ShardState};
use crate::backend::{self, ReplaySide, StreamSide};
use crate::{
    Category, CategorySet, EventId, Position, Positions, Reader, Replay, ReplayStatus, StreamKind,
    StreamReplay, UserId,
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

    /// The events of `reader`'s streams after their positions (or the horizon) in `from`.
    pub(super) fn replay_since(
        &self,
        reader: &Reader,
        from: &Positions,
        filter: CategorySet<C>,
    ) -> StreamReplay<C> {
        let Some(retention) = self.config.limits else {
            let mut replay = StreamReplay::retention_disabled();
            let read = replay.own;
            replay.groups = reader.groups.iter().map(|group| (group, read)).collect();
            return replay;
        };
        let user = reader.user;
        let shard = self.shard(user);
        let mut state = lock(&shard.state);
        let mut broadcast = lock(&self.broadcast);
        let state = &mut *state;
        self.expire_for_replay(shard, state, &mut broadcast, user, retention);
        let entry = state.users.get(&user);
        let no_history = History::new();
        let own = entry.as_ref().map_or(&no_history, |entry| &entry.history);
        // Read under every lock that numbers these streams' events: nothing numbered up to it is missing.
        let end = Some(self.position(self.next_seq.load(Ordering::Relaxed) - 1));
        let own_dropped_through = match entry {
            Some(_) => own.last_dropped_seq(),
            None => state.removed_through_seq,
        };
        let dropped_until_ms =
            own.dropped_until_ms().max(broadcast.dropped_until_ms()).max(state.removed_until_ms);
        let find = |id: EventId| own.find(id).or_else(|| broadcast.find(id)).map(|(_, seq)| seq);
        let [own_side, broadcast_side] = [
            (own, own_dropped_through, from.start_of(StreamKind::Own)),
            (&*broadcast, broadcast.last_dropped_seq(), from.start_of(StreamKind::Broadcast)),
        ]
        .map(|(history, dropped_through, start)| {
            let read = self.read_after(history, dropped_through, start, dropped_until_ms, find);
            self.side(history, read, end)
        });
        let mut replay = backend::stream_replay(own_side, broadcast_side, filter);
        for group in &reader.groups {
            let mut guard = lock(self.groups.shard(group));
            let group_shard = &mut *guard;
            let removed_through_seq = group_shard.removed_through_seq;
            let entry = group_shard.groups.get_mut(&group);
            let (history, dropped_through) = match entry {
                Some(entry) => {
                    if let Some(cutoff) = retention.cutoff_ms(self.now_ms()) {
                        let dropped = entry.history.drop_retained_until(cutoff);
                        self.groups.retained.fetch_sub(dropped, Ordering::Relaxed);
                    }
                    let dropped_through = entry.history.last_dropped_seq();
                    (&entry.history, dropped_through)
                }
                None => (&no_history, removed_through_seq),
            };
            let start = from.start_of(StreamKind::Group(group));
            let dropped_until_ms = dropped_until_ms.max(history.dropped_until_ms());
            let read = self.read_after(history, dropped_through, start, dropped_until_ms, |id| {
                find(id).or_else(|| history.find(id).map(|(_, seq)| seq))
            });
            // Read under the group's lock, which numbers its events: every event of it up to
            // this is in its history, and none after it (the shared `end` was read before
            // this lock, so a group event numbered since would be replayed past it, and
            // delivered live again).
            let group_end = Some(self.position(self.next_seq.load(Ordering::Relaxed) - 1));
            backend::add_group_stream(&mut replay, group, self.side(history, read, group_end), filter);
        }
        drop(broadcast);
        if entry.is_some_and(|entry| entry.is_unused()) {
            state.remove_user(shard, user);
        }
        replay
    }

    /// Where a replay of `history` after `start` begins, how complete it is,
    /// and the event id its events must come after (for an event id no longer held).
    fn read_after(
        &self,
        history: &History<C>,
        dropped_through: u64,
        start: Option<Position>,
        dropped_until_ms: u64,
        find: impl Fn(EventId) -> Option<u64>,
    ) -> (usize, ReplayStatus, Option<EventId>) {
        match start {
            None => (history.len(), ReplayStatus::Complete, None),
            Some(Position::Entry { ms, seq }) if ms == self.epoch_ms => {
                (history.first_after_seq(seq), truncated_if(dropped_through > seq), None)
            }
            Some(Position::Entry { ms, .. }) if ms < self.epoch_ms => (0, ReplayStatus::Truncated, None),
            Some(Position::Entry { .. }) => (0, ReplayStatus::UnknownId, None),
            Some(Position::AfterEvent(id)) => match find(id) {
                Some(seq) => (history.first_after_seq(seq), truncated_if(dropped_through > seq), None),
                None if id.timestamp_millis().is_some_and(|ms| ms <= dropped_until_ms) => {
                    (0, ReplayStatus::Truncated, Some(id))
                }
                None => (0, ReplayStatus::UnknownId, None),
            },
        }
    }

    /// One stream's part of a replay, from what [`read_after`](Self::read_after) found.
    fn side<'h>(
        &'h self,
        history: &'h History<C>,
        (start, status, after_id): (usize, ReplayStatus, Option<EventId>),
        end: Option<Position>,
    ) -> StreamSide<impl Iterator<Item = (Position, &'h crate::Event<C>)> + 'h> {
        StreamSide {
            events: history
                .starting_at(start)
                .filter(move |retained| after_id.is_none_or(|id| retained.event.id() > id))
                .map(|retained| (self.position(retained.seq), &retained.event)),
            status,
            end,
        }
    }
}

fn truncated_if(truncated: bool) -> ReplayStatus {
    if truncated { ReplayStatus::Truncated } else { ReplayStatus::Complete }
}
