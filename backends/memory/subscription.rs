//! A subscriber's bounded queue, filled by publishers, and the `Subscription` stream that drains it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use super::{Shared, lock};
use crate::{Category, Error, Event, EventId, UserId};

/// Marks a queue that is in no user's registration list.
pub(super) const NOT_REGISTERED: usize = usize::MAX;

/// A queue that has grown past this many slots gives its memory back once drained,
/// so a burst does not leave an idle subscription holding a large buffer.
const SHRINK_ABOVE: usize = 64;

/// The most events a subscription takes from its queue under one lock.
///
/// Taking them one at a time made the queue's lock (and its cache line)
/// change threads twice per event between the publisher and the subscriber.
/// Taken events count as waiting until the subscription comes back for
/// more, so a subscription may lag up to `TAKE_AT_ONCE - 1` events early.
const TAKE_AT_ONCE: usize = 32;

/// The queue between publishers and one subscription.
///
/// Its capacity is a bound, not an allocation: the buffer starts empty and
/// grows only as events wait in it.
pub(super) struct SubscriberQueue<C> {
    state: Mutex<QueueState<C>>,
    pub(super) user: UserId,
    /// Positions in the user's registration list and in the shard's list of
    /// every registration, or [`NOT_REGISTERED`]. Only read and written
    /// under the lock of the user's shard.
    user_slot: AtomicUsize,
    shard_slot: AtomicUsize,
}

/// The two lists a registration is in.
#[derive(Clone, Copy, Debug)]
pub(super) enum List {
    /// The user's registrations: served by the user's events.
    User,
    /// Every registration of the shard: served by broadcasts.
    Shard,
}

struct QueueState<C> {
    events: VecDeque<Event<C>>,
    /// Events the subscription took with the last one it yielded, not yielded
    /// yet (as far as the queue knows): they still count against the capacity.
    taken: usize,
    /// The waker of a subscription waiting for an event.
    waker: Option<Waker>,
    /// Why no more events will come, once they won't.
    end: Option<End>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The queue overflowed: the subscriber fell behind.
    Lagged,
    /// The hub was closed.
    Closed,
}

/// What became of an event offered to a queue.
pub(super) enum Offer {
    Queued,
    /// The queue was full: the subscriber lags and must be unregistered.
    Lagged,
    /// The queue had ended before: it must be unregistered, if it still is.
    Ended,
}

impl<C> SubscriberQueue<C> {
    pub(super) fn new(user: UserId, user_slot: usize, shard_slot: usize) -> Self {
        Self {
            state: Mutex::new(QueueState { events: VecDeque::new(), taken: 0, waker: None, end: None }),
            user,
            user_slot: AtomicUsize::new(user_slot),
            shard_slot: AtomicUsize::new(shard_slot),
        }
    }

    pub(super) fn slot(&self, list: List) -> usize {
        // Only touched under the shard lock, which orders every access.
        match list {
            List::User => self.user_slot.load(Ordering::Relaxed),
            List::Shard => self.shard_slot.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_slot(&self, list: List, slot: usize) {
        match list {
            List::User => self.user_slot.store(slot, Ordering::Relaxed),
            List::Shard => self.shard_slot.store(slot, Ordering::Relaxed),
        }
    }

    /// Queues `event` unless `capacity` events already wait, in which case
    /// the queue ends as lagged. A waiting subscription's waker goes to `wakeups`.
    pub(super) fn offer(&self, event: &Event<C>, capacity: usize, wakeups: &mut Wakeups) -> Offer {
        let mut state = lock(&self.state);
        let offer = if state.end.is_some() {
            // Ended already: nothing may follow the gap a lag leaves.
            return Offer::Ended;
        } else if state.events.len() + state.taken >= capacity {
            state.end = Some(End::Lagged);
            Offer::Lagged
        } else {
            state.events.push_back(event.clone());
            Offer::Queued
        };
        let waker = state.waker.take();
        drop(state);
        wakeups.add(waker);
        offer
    }

    /// Ends the queue because the hub closed; queued events are still delivered.
    pub(super) fn close(&self, wakeups: &mut Wakeups) {
        let mut state = lock(&self.state);
        state.end.get_or_insert(End::Closed);
        let waker = state.waker.take();
        drop(state);
        wakeups.add(waker);
    }
}

/// Wakers collected while the hub's locks are held, woken once they are released.
///
/// Waking runs executor code, and some executors drop a task there (tokio
/// does when it is shutting down), which drops its subscription, which takes
/// a shard lock to unregister: waking under that lock could deadlock.
pub(super) struct Wakeups {
    wakers: Vec<Waker>,
}

thread_local! {
    /// A buffer reused across publishes, so collecting wakers allocates nothing.
    static SPARE_WAKERS: Cell<Vec<Waker>> = const { Cell::new(Vec::new()) };
}

/// A buffer grown past this is let go instead of kept for reuse.
const KEEP_WAKER_BUFFER_UP_TO: usize = 4096;

impl Wakeups {
    pub(super) fn new() -> Self {
        Self { wakers: SPARE_WAKERS.try_with(Cell::take).unwrap_or_default() }
    }

    fn add(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.wakers.push(waker);
        }
    }

    /// Wakes every collected waker. Call with no hub lock held.
    pub(super) fn wake_all(self) {
        drop(self);
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
        if self.wakers.capacity() <= KEEP_WAKER_BUFFER_UP_TO {
            let buffer = std::mem::take(&mut self.wakers);
            let _ = SPARE_WAKERS.try_with(|spare| spare.set(buffer));
        }
    }
}

/// A live subscription to a [`MemoryHub`](super::MemoryHub): a stream of the
/// user's own events and broadcasts that pass its filter, in publish order.
///
/// It yields `Ok(event)` for each event. If the subscriber falls more than the
/// hub's queue capacity behind, the events already queued are yielded, then
/// `Err(Error::Lagged { last_delivered })` with the id of the last event this
/// stream yielded, and then the stream ends: resume with that id to replay the
/// rest. After [`MemoryHub::close`](super::MemoryHub::close) the stream yields
/// what was queued and ends.
///
/// Dropping it unsubscribes at once.
pub struct Subscription<C: Category> {
    hub: Arc<Shared<C>>,
    queue: Arc<SubscriberQueue<C>>,
    /// Events taken from the queue, to yield before taking more.
    taken: VecDeque<Event<C>>,
    last_delivered: Option<EventId>,
    finished: bool,
}

impl<C: Category> Subscription<C> {
    pub(super) fn new(hub: Arc<Shared<C>>, queue: Arc<SubscriberQueue<C>>) -> Self {
        Self { hub, queue, taken: VecDeque::new(), last_delivered: None, finished: false }
    }

    /// The user this subscription belongs to.
    pub fn user(&self) -> UserId {
        self.queue.user
    }

    /// The id of the last event this stream yielded, if any.
    pub fn last_delivered(&self) -> Option<EventId> {
        self.last_delivered
    }
}

impl<C: Category> Stream for Subscription<C> {
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(event) = this.taken.pop_front() {
            this.last_delivered = Some(event.id());
            return Poll::Ready(Some(Ok(event)));
        }
        let mut state = lock(&this.queue.state);
        if let Some(event) = state.events.pop_front() {
            let more = state.events.len().min(TAKE_AT_ONCE - 1);
            this.taken.extend(state.events.drain(..more));
            state.taken = more;
            if state.events.is_empty() && state.events.capacity() > SHRINK_ABOVE {
                state.events = VecDeque::new();
            }
            drop(state);
            this.last_delivered = Some(event.id());
            return Poll::Ready(Some(Ok(event)));
        }
        state.taken = 0;
        match state.end {
            Some(End::Lagged) => {
                drop(state);
                this.finished = true;
                Poll::Ready(Some(Err(Error::Lagged { last_delivered: this.last_delivered })))
            }
            Some(End::Closed) => {
                drop(state);
                this.finished = true;
                Poll::Ready(None)
            }
            None => {
                match &state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<C: Category> FusedStream for Subscription<C> {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<C: Category> Drop for Subscription<C> {
    fn drop(&mut self) {
        self.hub.unregister(&self.queue);
    }
}

impl<C: Category> fmt::Debug for Subscription<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.queue.user)
            .field("last_delivered", &self.last_delivered)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
