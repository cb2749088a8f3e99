//! One audience's retained events: a ring bounded by count and age, searchable by id without a scan.

use std::collections::VecDeque;
use std::collections::hash_map::HashMap;

use crate::{Category, Event, EventId};

/// A retained event with its place in the hub-wide publish order.
pub(super) struct Retained<C> {
    /// The hub-wide publish sequence number: replay merges audiences by it.
    pub(super) seq: u64,
    /// When it was retained, in milliseconds since the hub was built.
    pub(super) at_ms: u64,
    pub(super) event: Event<C>,
}

impl<C> Retained<C> {
    /// The event with its place in the hub-wide publish order, as the replay step takes it.
    pub(super) fn in_publish_order(&self) -> (u64, &Event<C>) {
        (self.seq, &self.event)
    }
}

/// The retained events of one audience (one user, or the broadcasts), oldest first.
///
/// Ids made by [`EventId::new`] ascend in publish order, so the id of a
/// Last-Event-ID is found by binary search. Once an id arrives out of order
/// (a foreign publisher's UUID, or two publishers racing), the history keeps a
/// hash index from id to position instead, until it empties.
pub(super) struct History<C> {
    entries: VecDeque<Retained<C>>,
    /// The absolute position of `entries[0]`: positions never repeat, so the
    /// index survives trimming at the front.
    front_position: u64,
    /// Id to absolute position; present once ids stopped ascending.
    index: Option<HashMap<EventId, u64>>,
    /// The sequence number of the newest event dropped from the front (0: none yet).
    last_dropped_seq: u64,
    /// The newest UUIDv7 timestamp among dropped events (0: none).
    dropped_until_ms: u64,
}

impl<C: Category> History<C> {
    pub(super) const fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            front_position: 0,
            index: None,
            last_dropped_seq: 0,
            dropped_until_ms: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn last_dropped_seq(&self) -> u64 {
        self.last_dropped_seq
    }

    pub(super) fn dropped_until_ms(&self) -> u64 {
        self.dropped_until_ms
    }

    /// Appends `event`, then drops the oldest events beyond `max_len`.
    /// Returns how many events were dropped.
    pub(super) fn push(&mut self, seq: u64, at_ms: u64, event: &Event<C>, max_len: usize) -> usize {
        let id = event.id();
        let position = self.front_position + self.entries.len() as u64;
        match &mut self.index {
            Some(index) => {
                index.insert(id, position);
            }
            None => {
                if self.entries.back().is_some_and(|last| last.event.id() >= id) {
                    self.build_index();
                    if let Some(index) = &mut self.index {
                        index.insert(id, position);
                    }
                }
            }
        }
        self.entries.push_back(Retained { seq, at_ms, event: event.clone() });
        let mut dropped = 0;
        while self.entries.len() > max_len {
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }

    /// Drops the events retained at or before `cutoff_ms`. Returns how many.
    pub(super) fn drop_retained_until(&mut self, cutoff_ms: u64) -> usize {
        let mut dropped = 0;
        while self.entries.front().is_some_and(|oldest| oldest.at_ms <= cutoff_ms) {
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }

    /// Drops the oldest event, remembering how far back history now reaches.
    fn drop_oldest(&mut self) {
        let Some(oldest) = self.entries.pop_front() else { return };
        let id = oldest.event.id();
        if let Some(index) = &mut self.index {
            // A republished id points at its newest position; keep that one.
            if index.get(&id) == Some(&self.front_position) {
                index.remove(&id);
            }
        }
        self.front_position += 1;
        self.last_dropped_seq = oldest.seq;
        if let Some(ms) = id.timestamp_millis() {
            self.dropped_until_ms = self.dropped_until_ms.max(ms);
        }
        if self.entries.is_empty() {
            // Ids ascend again trivially: binary search is back.
            self.index = None;
        }
    }

    fn build_index(&mut self) {
        let mut index = HashMap::with_capacity(self.entries.len() + 1);
        for (offset, retained) in self.entries.iter().enumerate() {
            index.insert(retained.event.id(), self.front_position + offset as u64);
        }
        self.index = Some(index);
    }

    /// Where the event with this id is retained, if it is.
    pub(super) fn find(&self, id: EventId) -> Option<(usize, u64)> {
        let offset = match &self.index {
            Some(index) => usize::try_from(index.get(&id)?.checked_sub(self.front_position)?).ok()?,
            None => self.entries.binary_search_by(|retained| retained.event.id().cmp(&id)).ok()?,
        };
        Some((offset, self.entries[offset].seq))
    }

    /// The position of the first event published after sequence number `seq`.
    pub(super) fn first_after_seq(&self, seq: u64) -> usize {
        self.entries.partition_point(|retained| retained.seq <= seq)
    }

    /// The retained events from position `start` on.
    pub(super) fn starting_at(&self, start: usize) -> std::collections::vec_deque::Iter<'_, Retained<C>> {
        self.entries.range(start.min(self.entries.len())..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::ExampleCategory;
    use crate::{Audience, UserId};
    use chrono::Utc;
    use uuid::Uuid;

    fn event_with_id(id: u128) -> Event<ExampleCategory> {
        let user = UserId::from_uuid(Uuid::from_u128(1));
        Event::from_parts(
            EventId::from_uuid(Uuid::from_u128(id)),
            Audience::User(user),
            "t",
            ExampleCategory::Ai,
            "{}",
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn ascending_ids_are_found_by_binary_search_without_an_index() {
        let mut history = History::new();
        for n in 1..=100u128 {
            history.push(n as u64, 0, &event_with_id(n * 10), 1000);
        }
        assert!(history.index.is_none());
        assert_eq!(history.find(EventId::from_uuid(Uuid::from_u128(500))), Some((49, 50)));
        assert_eq!(history.find(EventId::from_uuid(Uuid::from_u128(505))), None);
    }

    #[test]
    fn out_of_order_ids_are_found_through_the_index_across_trimming() {
        let mut history = History::new();
        for (seq, id) in [(1, 50u128), (2, 40), (3, 60), (4, 10), (5, 70)] {
            history.push(seq, 0, &event_with_id(id), 3);
        }
        assert!(history.index.is_some());
        assert_eq!(history.find(EventId::from_uuid(Uuid::from_u128(50))), None);
        assert_eq!(history.find(EventId::from_uuid(Uuid::from_u128(60))), Some((0, 3)));
        assert_eq!(history.find(EventId::from_uuid(Uuid::from_u128(10))), Some((1, 4)));
        assert_eq!(history.find(EventId::from_uuid(Uuid::from_u128(70))), Some((2, 5)));
        assert_eq!(history.last_dropped_seq(), 2);
    }

    #[test]
    fn trimming_by_age_drops_only_the_old_events() {
        let mut history = History::new();
        for n in 1..=5u64 {
            history.push(n, n * 100, &event_with_id(n as u128), 1000);
        }
        assert_eq!(history.drop_retained_until(300), 3);
        assert_eq!(history.len(), 2);
        assert_eq!(history.first_after_seq(0), 0);
        assert_eq!(history.first_after_seq(4), 1);
        assert_eq!(history.last_dropped_seq(), 3);
    }
}

/// A [`Retention`](crate::Retention) in the units the histories count in.
#[derive(Clone, Copy, Debug)]
pub(super) struct RetentionLimits {
    pub(super) max_len: usize,
    /// 0: no age limit.
    pub(super) max_age_ms: u64,
}

impl RetentionLimits {
    /// Events retained at or before this instant have expired (`None`: none has).
    pub(super) fn cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        if self.max_age_ms == 0 {
            return None;
        }
        now_ms.checked_sub(self.max_age_ms)
    }

    /// How often a shard is swept of expired users, in milliseconds.
    pub(super) fn sweep_interval_ms(&self) -> u64 {
        (self.max_age_ms / 4).clamp(100, 60_000)
    }
}
