//! A subscription's registration in the lists that deliver to it (its user's, its shard's, its groups'), offering an event to a list of them, and when a list gives memory back.

use std::sync::Arc;

use crate::backend::{Push, SubscriberQueue, Wakeups};
use crate::{Category, Event, Groups};

/// A subscription as the lists that deliver to it hold it.
pub(super) struct Registration<C> {
    /// The subscription's filter, kept here so filtered-out events never touch its queue.
    pub(super) filter_bits: u64,
    pub(super) queue: Arc<SubscriberQueue<C>>,
    /// The groups it reads (in whose lists it is too).
    pub(super) groups: Groups,
}

impl<C> Clone for Registration<C> {
    fn clone(&self) -> Self {
        Self { filter_bits: self.filter_bits, queue: Arc::clone(&self.queue), groups: self.groups.clone() }
    }
}

/// Delivery counts of one publish in one shard.
#[derive(Default)]
pub(super) struct Delivered {
    pub(super) queued: u64,
    pub(super) lagged: u64,
}

/// Offers `event` to every registration that wants `category_bit`. The
/// queues that lagged (or had ended) go to `ended`, to be unregistered.
pub(super) fn deliver<C: Category>(
    registrations: &[Registration<C>],
    event: &Event<C>,
    category_bit: u64,
    counts: &mut Delivered,
    wakeups: &mut Wakeups,
    ended: &mut Vec<Arc<SubscriberQueue<C>>>,
) {
    for registration in registrations {
        if registration.filter_bits & category_bit == 0 {
            continue;
        }
        match registration.queue.push(event, wakeups) {
            Push::Queued => counts.queued += 1,
            Push::Lagged => {
                counts.lagged += 1;
                ended.push(Arc::clone(&registration.queue));
            }
            Push::Ended => ended.push(Arc::clone(&registration.queue)),
        }
    }
}

/// Whether a table or list should give memory back: when it is empty, or
/// below a quarter of a capacity past 64. It keeps twice its length, so
/// shrinking stays amortized.
pub(super) fn is_mostly_empty(len: usize, capacity: usize) -> bool {
    (len == 0 && capacity > 0) || (capacity > 64 && len < capacity / 4)
}

pub(super) fn shrink_when_mostly_empty<T>(list: &mut Vec<T>) {
    if is_mostly_empty(list.len(), list.capacity()) {
        list.shrink_to(list.len() * 2);
    }
}
