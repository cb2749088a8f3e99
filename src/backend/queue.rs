//! The bounded queue between a backend and one subscription, and the `Subscription` stream that reads it: the lag, close, gap and unsubscribe rules.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use super::Wakeups;
use crate::{Category, Error, Event, EventId, StreamKind, UserId};

/// What a registry slot of a queue holds while it is in no list of this crate's backends.
pub(crate) const NOT_REGISTERED: usize = usize::MAX;

/// A queue that has grown past this many slots gives its memory back once drained,
/// so a burst does not leave an idle subscription holding a large buffer.
const SHRINK_ABOVE: usize = 64;

/// The most items a subscription takes from its queue under one lock.
///
/// Taking them one at a time made the queue's lock (and its cache line)
/// change threads twice per event between the publisher and the subscriber.
/// Taken items count as waiting until the subscription comes back for
/// more, so a subscription that is reading may lag up to `TAKE_AT_ONCE - 1`
/// items early; one that reads nothing lags exactly at its capacity.
const TAKE_AT_ONCE: usize = 32;

/// Where a backend keeps its subscriptions: told when one is dropped.
///
/// Implement it on the backend's shared state and hand it to
/// [`subscriber_queue`] as an `Arc<dyn Registry<C>>` (a clone of an `Arc`
/// the backend already holds: nothing is allocated per subscription).
pub trait Registry<C>: Send + Sync + 'static {
    /// `queue`'s subscription was dropped: take the queue out of every list
    /// it is in. Called once, from the subscription's `Drop`, on whatever
    /// thread drops it; the queue already refuses new items.
    fn unregister(&self, queue: &Arc<SubscriberQueue<C>>);
}

/// Makes the queue of one subscription of `user`: the backend's end, and the stream.
///
/// At most `capacity` items (events and gap signals) wait in it (at least
/// one); the bound is not allocated up front, so an idle subscription holds no
/// buffer. `registry` is told when the subscription is dropped.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use ssehub::backend::{subscriber_queue, Push, Wakeups};
/// use ssehub::{fixture::ExampleCategory as C, Audience, Error, Event, UserId};
///
/// let user = UserId::from_uuid(uuid::Uuid::from_u128(7));
/// let (queue, mut subscription) = subscriber_queue::<C>(user, 2, None);
/// let events: Vec<_> =
///     (0..3).map(|n| Event::new(Audience::User(user), "n", C::Ai, n.to_string()).unwrap()).collect();
/// let mut wakeups = Wakeups::new();
/// assert!(matches!(queue.push(&events[0], &mut wakeups), Push::Queued));
/// assert!(matches!(queue.push(&events[1], &mut wakeups), Push::Queued));
/// // A third while two wait: the subscriber lags.
/// assert!(matches!(queue.push(&events[2], &mut wakeups), Push::Lagged));
/// wakeups.wake_all();
///
/// futures::executor::block_on(async {
///     assert_eq!(subscription.next().await.unwrap().unwrap(), events[0]);
///     assert_eq!(subscription.next().await.unwrap().unwrap(), events[1]);
///     let lagged = subscription.next().await.unwrap().unwrap_err();
///     assert!(matches!(lagged, Error::Lagged { last_delivered: Some(id) } if id == events[1].id()));
///     assert!(subscription.next().await.is_none());
/// });
/// ```
pub fn subscriber_queue<C: Category>(
    user: UserId,
    capacity: usize,
    registry: Option<Arc<dyn Registry<C>>>,
) -> (Arc<SubscriberQueue<C>>, Subscription<C>) {
    let queue = Arc::new(SubscriberQueue {
        state: Mutex::new(QueueState {
            items: VecDeque::new(),
            taken: 0,
            // Kept beside `taken` under the lock: an idle subscription's queue stays one word smaller.
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            waker: None,
            end: None,
            gap_streams: VecDeque::new(),
        }),
        user,
        slots: [AtomicUsize::new(NOT_REGISTERED), AtomicUsize::new(NOT_REGISTERED)],
        revoked: AtomicBool::new(false),
    });
    let subscription = Subscription {
        queue: Arc::clone(&queue),
        registry,
        taken: VecDeque::new(),
        last_delivered: None,
        state: StreamState::Open,
    };
    (queue, subscription)
}

/// The backend's end of a subscription's queue, made by [`subscriber_queue`].
pub struct SubscriberQueue<C> {
    state: Mutex<QueueState<C>>,
    user: UserId,
    /// Two words the backend's registry may use to find this queue in its
    /// lists (positions, an id); [`NOT_REGISTERED`] until it sets them.
    slots: [AtomicUsize; 2],
    /// Set by [`revoke`](Self::revoke): read without the lock before each item,
    /// so items the subscription took already are not yielded either.
    revoked: AtomicBool,
}

struct QueueState<C> {
    items: VecDeque<Item<C>>,
    /// Items the subscription took with the last one it yielded, not yielded
    /// yet (as far as the queue knows): they still count against the capacity.
    /// At most `TAKE_AT_ONCE - 1`.
    taken: u32,
    /// The most items that may wait.
    capacity: u32,
    /// The waker of a subscription waiting for an item.
    waker: Option<Waker>,
    /// Why no more items will come, once they won't.
    end: Option<End>,
    /// The stream of each gap signal queued (`None`: every stream), oldest
    /// first: beside the items, so that an item stays one pointer wide.
    gap_streams: VecDeque<Option<StreamKind>>,
}

/// One pointer wide (the gap needs no word of its own), so that taking items
/// from the queue moves as little as it can.
enum Item<C> {
    Event(Event<C>),
    /// Events may have been lost here; which stream's is in `gap_streams`.
    Gap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The queue overflowed: the subscriber fell behind.
    Lagged,
    /// The backend closed it (the hub was closed or dropped).
    Closed,
    /// The subscription was dropped.
    Dropped,
    /// The user was disconnected: what was queued is dropped.
    Revoked,
}

/// What became of an item offered to a [`SubscriberQueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// It waits for the subscription.
    Queued,
    /// The queue was full: this item was refused and the subscription lags.
    /// It yields what was queued, then [`Error::Lagged`], then ends:
    /// unregister the queue.
    Lagged,
    /// The queue had ended before (lagged, closed, or its subscription dropped):
    /// unregister it, if it still is.
    Ended,
}

/// Locks `mutex`; a panic elsewhere leaves nothing half-updated here, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Category> SubscriberQueue<C> {
    /// The user whose subscription this is.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The most items that may wait in the queue.
    pub fn capacity(&self) -> usize {
        lock(&self.state).capacity as usize
    }

    /// Registry slot `index` (0 or 1): whatever this crate's backend stored
    /// with [`set_slot`](Self::set_slot) (the memory backend's list positions,
    /// the Redis backend's subscriber id), or [`NOT_REGISTERED`]. Crate-private:
    /// a third-party backend keeps its own bookkeeping.
    ///
    /// # Panics
    ///
    /// If `index` is above 1.
    pub(crate) fn slot(&self, index: usize) -> usize {
        // The backend orders every access with its own lock.
        self.slots[index].load(Ordering::Relaxed)
    }

    /// Stores `value` in registry slot `index` (0 or 1).
    ///
    /// # Panics
    ///
    /// If `index` is above 1.
    pub(crate) fn set_slot(&self, index: usize, value: usize) {
        self.slots[index].store(value, Ordering::Relaxed);
    }

    /// Queues `event` unless `capacity` items already wait, in which case the
    /// queue ends as lagged. The waker of a waiting subscription goes to
    /// `wakeups`: wake them once the backend's own locks are released.
    pub fn push(&self, event: &Event<C>, wakeups: &mut Wakeups) -> Push {
        self.offer(Item::Event(event.clone()), None, wakeups)
    }

    /// Queues a gap signal: the subscription yields [`Error::Gap`] with the
    /// last event it delivered, then goes on. It counts against the capacity
    /// like an event.
    pub fn push_gap(&self, wakeups: &mut Wakeups) -> Push {
        self.offer_gap(None, wakeups)
    }

    /// Queues a gap signal for one stream: as [`push_gap`](Self::push_gap),
    /// the [`Error::Gap`] naming the stream that may have lost events.
    pub fn push_stream_gap(&self, stream: StreamKind, wakeups: &mut Wakeups) -> Push {
        self.offer_gap(Some(stream), wakeups)
    }

    fn offer_gap(&self, stream: Option<StreamKind>, wakeups: &mut Wakeups) -> Push {
        self.offer(Item::Gap, stream, wakeups)
    }

    /// Queues `item` (with `gap_stream`, the stream of a gap item).
    fn offer(&self, item: Item<C>, gap_stream: Option<StreamKind>, wakeups: &mut Wakeups) -> Push {
        let mut state = lock(&self.state);
        let push = if state.end.is_some() {
            // Ended already: nothing may follow the gap a lag leaves.
            return Push::Ended;
        } else if state.items.len() + state.taken as usize >= state.capacity as usize {
            state.end = Some(End::Lagged);
            Push::Lagged
        } else {
            if matches!(item, Item::Gap) {
                state.gap_streams.push_back(gap_stream);
            }
            state.items.push_back(item);
            Push::Queued
        };
        let waker = state.waker.take();
        drop(state);
        wakeups.add(waker);
        push
    }

    /// Ends the queue because the hub closed: the subscription yields what is
    /// queued, then [`Error::Closed`], then ends. No effect on a queue that
    /// has ended already.
    pub fn close(&self, wakeups: &mut Wakeups) {
        let mut state = lock(&self.state);
        state.end.get_or_insert(End::Closed);
        let waker = state.waker.take();
        drop(state);
        wakeups.add(waker);
    }

    /// Ends the queue because its user was disconnected: the subscription
    /// yields [`Error::Revoked`] next, whatever was queued or taken (dropped),
    /// then ends. No effect on a queue that has ended already, except that
    /// nothing more is yielded from it. Unregister it afterwards.
    pub fn revoke(&self, wakeups: &mut Wakeups) {
        let mut state = lock(&self.state);
        if state.end.is_none() {
            state.end = Some(End::Revoked);
            self.revoked.store(true, Ordering::Release);
        }
        state.items.clear();
        state.gap_streams.clear();
        let waker = state.waker.take();
        drop(state);
        wakeups.add(waker);
    }

    /// Whether the queue takes no more items (lagged, closed, or dropped).
    pub fn is_ended(&self) -> bool {
        lock(&self.state).end.is_some()
    }

    /// How many items wait in the queue (taken but not yet yielded ones included).
    pub fn len(&self) -> usize {
        let state = lock(&self.state);
        state.items.len() + state.taken as usize
    }

    /// Whether no item waits in the queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C> fmt::Debug for SubscriberQueue<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberQueue")
            .field("user", &self.user)
            .field("capacity", &lock(&self.state).capacity)
            .finish_non_exhaustive()
    }
}

/// A live subscription: a stream of the user's own events and the broadcasts
/// that pass its filter, in publish order, read from a [`SubscriberQueue`].
///
/// It yields `Ok(event)` for each event, and [`Error::Gap`] (with the id of
/// the last event it yielded) where the backend signalled that events may have
/// been lost; events follow a gap. If the subscriber falls the queue's
/// capacity behind, it yields the events already queued, then
/// [`Error::Lagged`] with the id of the last event it yielded, and ends:
/// resume with that id to replay the rest. When the hub is closed or dropped,
/// it yields what was queued, then [`Error::Closed`], and ends. Once ended it
/// yields `None` for ever ([`FusedStream`]).
///
/// Dropping it unsubscribes at once. It is `Unpin`, `Send` and `Sync`, and
/// can be polled from any executor.
pub struct Subscription<C: Category> {
    queue: Arc<SubscriberQueue<C>>,
    registry: Option<Arc<dyn Registry<C>>>,
    /// Items taken from the queue, to yield before taking more.
    taken: VecDeque<Item<C>>,
    last_delivered: Option<EventId>,
    state: StreamState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    Open,
    /// It yielded its last item (`Lagged` or `Closed`): `None` from now on.
    Finished,
}

impl<C: Category> Subscription<C> {
    /// The user this subscription belongs to.
    pub fn user(&self) -> UserId {
        self.queue.user
    }

    /// The id of the last event this stream yielded, if any.
    pub fn last_delivered(&self) -> Option<EventId> {
        self.last_delivered
    }

    #[inline]
    fn deliver(&mut self, item: Item<C>) -> Poll<Option<Result<Event<C>, Error>>> {
        Poll::Ready(Some(match item {
            Item::Event(event) => {
                self.last_delivered = Some(event.id());
                Ok(event)
            }
            Item::Gap => Err(self.gap()),
        }))
    }

    /// The gap signal to yield: its stream waits beside the items, in the same order.
    #[cold]
    fn gap(&self) -> Error {
        let stream = lock(&self.queue.state).gap_streams.pop_front().flatten();
        Error::Gap { last_delivered: self.last_delivered, stream }
    }
}

impl<C: Category> Stream for Subscription<C> {
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.state == StreamState::Finished {
            return Poll::Ready(None);
        }
        if this.queue.revoked.load(Ordering::Acquire) {
            this.taken.clear();
            this.state = StreamState::Finished;
            return Poll::Ready(Some(Err(Error::Revoked)));
        }
        if let Some(item) = this.taken.pop_front() {
            return this.deliver(item);
        }
        let mut state = lock(&this.queue.state);
        if let Some(item) = state.items.pop_front() {
            let more = state.items.len().min(TAKE_AT_ONCE - 1);
            this.taken.extend(state.items.drain(..more));
            // At most TAKE_AT_ONCE - 1.
            state.taken = more as u32;
            if state.items.is_empty() && state.items.capacity() > SHRINK_ABOVE {
                state.items = VecDeque::new();
            }
            drop(state);
            return this.deliver(item);
        }
        state.taken = 0;
        let last_delivered = this.last_delivered;
        let last = match state.end {
            Some(End::Lagged) => Error::Lagged { last_delivered },
            Some(End::Closed | End::Dropped) => Error::Closed,
            Some(End::Revoked) => Error::Revoked,
            None => {
                match &state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        };
        drop(state);
        this.state = StreamState::Finished;
        Poll::Ready(Some(Err(last)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.taken.len(), None)
    }
}

impl<C: Category> FusedStream for Subscription<C> {
    fn is_terminated(&self) -> bool {
        self.state == StreamState::Finished
    }
}

impl<C: Category> Drop for Subscription<C> {
    fn drop(&mut self) {
        lock(&self.queue.state).end.get_or_insert(End::Dropped);
        if let Some(registry) = &self.registry {
            registry.unregister(&self.queue);
        }
    }
}

impl<C: Category> fmt::Debug for Subscription<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.queue.user)
            .field("last_delivered", &self.last_delivered)
            .field("finished", &(self.state == StreamState::Finished))
            .finish_non_exhaustive()
    }
}
