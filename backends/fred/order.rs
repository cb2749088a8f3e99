//! How entry ids order events across streams: one sequence (the order key) or the hybrid clock; merging by them.
//!
//! Redis numbers each stream's entries on its own. ssehub's publish scripts
//! number them so that ids order a user's events and the broadcasts as they
//! were published: from the order key's one sequence on one server, or (the
//! cluster layout, where no key shares a slot with every stream) from a
//! hybrid clock, the server's time kept above the highest id the publishing
//! hub has given out or received. Replay and recovery merge two streams by
//! these ids; nothing depends on that order for exactly-once delivery, which
//! the per-stream positions of a cursor give.

use std::cmp::Ordering;
use std::sync::{Mutex, PoisonError};

use super::codec::StreamId;
use super::keys::{KeyLayout, PubSubKind};
use crate::{Category, Event};

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

/// The highest entry id this hub gave out or received: the cluster publish script gives new entries higher ids.
pub(crate) struct HybridClock(Mutex<StreamId>);

impl Default for HybridClock {
    fn default() -> Self {
        Self(Mutex::new(StreamId::ZERO))
    }
}

impl HybridClock {
    /// Moves the clock past `id`, an entry id given out or received.
    pub(crate) fn observe(&self, id: StreamId) {
        let mut clock = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if id > *clock {
            *clock = id;
        }
    }

    /// The id every new entry must be above.
    pub(crate) fn floor(&self) -> StreamId {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Two streams' entries in publish order.
///
/// With an order key entry ids are one sequence across streams, so their
/// order is publish order. Without one (the cluster layout) each stream
/// numbers its entries on its own: entries of the same millisecond are then
/// ordered by event id, which is creation order for UUIDv7 ids of one publisher.
pub(crate) fn merge<C: Category>(
    a: Vec<(StreamId, Event<C>)>,
    b: Vec<(StreamId, Event<C>)>,
    ids_are_one_sequence: bool,
) -> impl Iterator<Item = Event<C>> {
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    std::iter::from_fn(move || {
        let take_a = match (a.peek(), b.peek()) {
            (Some((x, ex)), Some((y, ey))) => {
                let order =
                    if ids_are_one_sequence || x.ms != y.ms { x.cmp(y) } else { ex.id().cmp(&ey.id()) };
                order != Ordering::Greater
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_a { a.next() } else { b.next() }.map(|(_, e)| e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::ExampleCategory as C;
    use crate::{Audience, EventId};

    fn entry(ms: u64, seq: u64, n: u128) -> (StreamId, Event<C>) {
        let id = EventId::from_uuid(uuid::Uuid::from_u128(n));
        let event =
            Event::from_parts(id, Audience::Broadcast, "t", C::Ai, "{}", chrono::DateTime::UNIX_EPOCH)
                .unwrap();
        (StreamId { ms, seq }, event)
    }

    fn merged(a: Vec<(StreamId, Event<C>)>, b: Vec<(StreamId, Event<C>)>, one_sequence: bool) -> Vec<u128> {
        merge(a, b, one_sequence).map(|e| e.id().as_uuid().as_u128()).collect()
    }

    #[test]
    fn one_sequence_merges_by_entry_id() {
        let a = vec![entry(1, 0, 10), entry(2, 3, 30)];
        let b = vec![entry(2, 1, 20), entry(2, 5, 40), entry(3, 0, 5)];
        assert_eq!(merged(a, b, true), vec![10, 20, 30, 40, 5]);
    }

    #[test]
    fn separate_sequences_break_same_millisecond_ties_by_event_id_and_keep_each_streams_order() {
        let a = vec![entry(7, 0, 2), entry(7, 1, 4), entry(8, 0, 1)];
        let b = vec![entry(7, 0, 3), entry(7, 1, 1)];
        // 1 in `b` cannot pass 3 before it; 1 in `a` is a later millisecond.
        assert_eq!(merged(a, b, false), vec![2, 3, 1, 4, 1]);
    }
}
