//! Building blocks every backend needs: the bounded subscriber queue with its `Subscription` stream, and the replay step.
//!
//! Both of this crate's backends are built on these, and a third-party
//! backend can be too: the rules the [conformance suite](crate::EventSource) checks
//! about lagging, closing, gaps, unsubscribing on drop, the order of a replay
//! and its status are kept here once.
//!
//! - [`subscriber_queue`] makes the queue between a backend and one
//!   subscription: the backend [`push`](SubscriberQueue::push)es events into
//!   it, the [`Subscription`] is the stream the application reads (and can be
//!   a backend's [`EventSource::Subscription`](crate::EventSource::Subscription)
//!   type as is). A queue holding `capacity` items that is offered one more
//!   ends as lagged; [`close`](SubscriberQueue::close) ends it as closed;
//!   dropping the subscription tells the backend's [`Registry`].
//! - [`replay`] merges the retained events of a user and of the broadcasts in
//!   publish order, keeps those passing the filter, and classifies the replay
//!   as complete, truncated or unknown from what the backend found.
//!
//! See the crate's [`EventSource`](crate::EventSource) docs for the rules, and a whole backend built on these.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use crate::{
    Category, CategorySet, Error, Event, EventId, Position, Replay, ReplayStatus, StreamKind, StreamRead,
    StreamReplay, UserId,
};

/// What a registry slot of a queue holds while it is in no list of the backend's.
pub const NOT_REGISTERED: usize = usize::MAX;

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

    /// Registry slot `index` (0 or 1): whatever the backend stored with
    /// [`set_slot`](Self::set_slot), or [`NOT_REGISTERED`].
    ///
    /// # Panics
    ///
    /// If `index` is above 1.
    pub fn slot(&self, index: usize) -> usize {
        // The backend orders every access with its own lock.
        self.slots[index].load(Ordering::Relaxed)
    }

    /// Stores `value` in registry slot `index` (0 or 1).
    ///
    /// # Panics
    ///
    /// If `index` is above 1.
    pub fn set_slot(&self, index: usize, value: usize) {
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

/// Wakers collected while a backend's locks are held, woken once they are released.
///
/// Waking runs executor code, and some executors drop a task there (tokio
/// does when it is shutting down), which drops its subscription, which calls
/// the backend's [`Registry`]: waking under the backend's lock could deadlock.
/// Dropping a `Wakeups` wakes what it holds. Its buffer is reused across
/// publishes on a thread, so collecting wakers allocates nothing.
pub struct Wakeups {
    wakers: Vec<Waker>,
}

thread_local! {
    /// A buffer reused across publishes, so collecting wakers allocates nothing.
    static SPARE_WAKERS: Cell<Vec<Waker>> = const { Cell::new(Vec::new()) };
}

/// A buffer grown past this is let go instead of kept for reuse.
const KEEP_WAKER_BUFFER_UP_TO: usize = 4096;

impl Wakeups {
    /// An empty collection.
    pub fn new() -> Self {
        Self { wakers: SPARE_WAKERS.try_with(Cell::take).unwrap_or_default() }
    }

    fn add(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.wakers.push(waker);
        }
    }

    /// Wakes every collected waker. Call with no lock of the backend held.
    pub fn wake_all(self) {
        drop(self);
    }

    /// How many wakers are collected.
    pub fn len(&self) -> usize {
        self.wakers.len()
    }

    /// Whether no waker is collected.
    pub fn is_empty(&self) -> bool {
        self.wakers.is_empty()
    }

    /// Wakes the wakers collected so far and goes on collecting: a backend
    /// that fills many queues with no lock held lets the first subscriptions
    /// run on other threads while it fills the rest.
    pub fn wake_collected(&mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
    }
}

impl Default for Wakeups {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.wake_collected();
        if self.wakers.capacity() <= KEEP_WAKER_BUFFER_UP_TO {
            let buffer = std::mem::take(&mut self.wakers);
            let _ = SPARE_WAKERS.try_with(|spare| spare.set(buffer));
        }
    }
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeups").field("collected", &self.wakers.len()).finish()
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

/// One audience's part of a replay (the user's own events, or the broadcasts), as a backend found it.
#[derive(Clone, Debug)]
pub struct ReplaySide<I> {
    /// This audience's retained events published after the Last-Event-ID
    /// (owned, or borrowed from the backend's history), oldest first, each
    /// with its place in publish order: any key that
    /// orders the two audiences' events together (a hub-wide sequence number,
    /// a stream entry id). When the id was found in neither audience and no
    /// event may have been dropped after it, every retained event.
    pub events: I,
    /// Whether the Last-Event-ID is an event of this audience's history.
    pub holds_id: bool,
    /// Whether an event of this audience published after the Last-Event-ID
    /// may have been dropped from its history (trimmed or expired), or, when
    /// the id is in neither history, whether the id is no newer than events
    /// this history dropped.
    pub trimmed_after_id: bool,
}

/// The replay step: merges the user's and the broadcast side by publish order,
/// keeps the events that pass `filter`, and classifies the result.
///
/// The status, as every backend must report it:
/// - [`Truncated`](ReplayStatus::Truncated) if either side may have dropped
///   events published after the id;
/// - else [`Complete`](ReplayStatus::Complete) if either side holds the id;
/// - else [`UnknownId`](ReplayStatus::UnknownId) (the events are every
///   retained one).
///
/// The Last-Event-ID itself is never part of a replay, even where a side
/// passes it; after an id neither side holds any more (truncated), only
/// events with greater ids are kept, so a side may pass every event from
/// the id's millisecond on.
///
/// # Examples
///
/// ```
/// use ssehub::backend::{replay, ReplaySide};
/// use ssehub::{fixture::ExampleCategory as C, Audience, CategorySet, Event, ReplayStatus, UserId};
///
/// let user = UserId::from_uuid(uuid::Uuid::from_u128(7));
/// let seen = Event::new(Audience::User(user), "n", C::Ai, "1").unwrap();
/// let own = Event::new(Audience::User(user), "n", C::Ai, "2").unwrap();
/// let broadcast = Event::new(Audience::Broadcast, "n", C::Import, "3").unwrap();
/// // Sequence numbers: `seen` was 1, `broadcast` 2, `own` 3.
/// let replayed = replay(
///     seen.id(),
///     ReplaySide { events: [(3, own.clone())], holds_id: true, trimmed_after_id: false },
///     ReplaySide { events: [(2, broadcast.clone())], holds_id: false, trimmed_after_id: false },
///     CategorySet::all(),
/// );
/// assert_eq!(replayed.status, ReplayStatus::Complete);
/// assert_eq!(replayed.events, vec![broadcast, own]);
/// ```
pub fn replay<C, K, E, U, B>(
    last_event_id: EventId,
    user: ReplaySide<U>,
    broadcast: ReplaySide<B>,
    filter: CategorySet<C>,
) -> Replay<C>
where
    C: Category,
    K: Ord,
    E: Borrow<Event<C>>,
    U: IntoIterator<Item = (K, E)>,
    B: IntoIterator<Item = (K, E)>,
{
    let status = if user.trimmed_after_id || broadcast.trimmed_after_id {
        ReplayStatus::Truncated
    } else if user.holds_id || broadcast.holds_id {
        ReplayStatus::Complete
    } else {
        ReplayStatus::UnknownId
    };
    // An id no longer held has no place in either history: what was published
    // after it is told by id order (ids made by `EventId::new` ascend in
    // publish order), so nothing from before it comes back.
    let cut_by_id = status == ReplayStatus::Truncated && !user.holds_id && !broadcast.holds_id;
    let wanted = |(_, event): &(K, E)| {
        let event = event.borrow();
        filter.contains(event.category())
            && event.id() != last_event_id
            && (!cut_by_id || event.id() > last_event_id)
    };
    let mut own = user.events.into_iter().filter(wanted).peekable();
    let mut broadcasts = broadcast.events.into_iter().filter(wanted).peekable();
    let mut events = Vec::new();
    loop {
        let next = match (own.peek(), broadcasts.peek()) {
            (Some(a), Some(b)) if a.0 <= b.0 => own.next(),
            (Some(_), Some(_)) => broadcasts.next(),
            (Some(_), None) => own.next(),
            (None, Some(_)) => broadcasts.next(),
            (None, None) => break,
        };
        // Only the events kept are cloned (one reference count each).
        events.extend(next.map(|(_, event)| event.borrow().clone()));
    }
    Replay { events, status }
}

/// One stream's part of a replay after a cursor, as a backend read it.
#[derive(Clone, Debug)]
pub struct StreamSide<I> {
    /// The stream's retained events after the position replayed from, in the
    /// stream's order, each with its position in the stream (owned, or
    /// borrowed from the backend's history). Filtering is left to
    /// [`stream_replay`].
    pub events: I,
    /// How complete they are: see [`StreamReplay`].
    pub status: ReplayStatus,
    /// How far the stream was read: see [`StreamReplay`].
    pub end: Option<Position>,
}

impl<E> StreamSide<std::iter::Empty<(Position, E)>> {
    /// A stream the replay had no position for: nothing replayed, read up to `end`
    /// (the stream's newest entry, [`Position::START`] when it has none).
    pub fn not_replayed(end: Option<Position>) -> Self {
        StreamSide { events: std::iter::empty(), status: ReplayStatus::Complete, end }
    }
}

/// The replay step after a cursor: keeps each stream's events that pass
/// `filter`, sets their positions, and puts the streams together.
///
/// Streams are not ordered against each other; where both streams' positions
/// are entries they are merged by entry (on one Redis server or in the memory
/// backend, publish order), else the user's stream comes first.
///
/// # Examples
///
/// ```
/// use ssehub::backend::{stream_replay, StreamSide};
/// use ssehub::{fixture::ExampleCategory as C, Audience, CategorySet, Event, Position, ReplayStatus, UserId};
///
/// let user = UserId::from_u64(7);
/// let own = Event::new(Audience::User(user), "n", C::Ai, "1").unwrap();
/// let broadcast = Event::new(Audience::Broadcast, "n", C::Import, "2").unwrap();
/// let replayed = stream_replay(
///     StreamSide { events: [(Position::entry(5, 0), own.clone())], status: ReplayStatus::Complete, end: Some(Position::entry(5, 0)) },
///     StreamSide { events: [(Position::entry(3, 0), broadcast.clone())], status: ReplayStatus::Truncated, end: Some(Position::entry(4, 0)) },
///     CategorySet::all(),
/// );
/// assert_eq!(replayed.events, vec![broadcast, own]);
/// assert_eq!(replayed.events[1].position(), Some(Position::entry(5, 0)));
/// assert_eq!(replayed.broadcast.status, ReplayStatus::Truncated);
/// ```
pub fn stream_replay<C, E, U, B>(
    own: StreamSide<U>,
    broadcast: StreamSide<B>,
    filter: CategorySet<C>,
) -> StreamReplay<C>
where
    C: Category,
    E: Borrow<Event<C>>,
    U: IntoIterator<Item = (Position, E)>,
    B: IntoIterator<Item = (Position, E)>,
{
    let wanted = |(_, event): &(Position, E)| filter.contains(event.borrow().category());
    let mut mine = own.events.into_iter().filter(wanted).peekable();
    let mut theirs = broadcast.events.into_iter().filter(wanted).peekable();
    let mut events = Vec::new();
    loop {
        let next = match (mine.peek(), theirs.peek()) {
            (Some(a), Some(b)) if a.0.partial_cmp_entry(&b.0) == Some(std::cmp::Ordering::Greater) => {
                theirs.next()
            }
            (Some(_), _) => mine.next(),
            (None, Some(_)) => theirs.next(),
            (None, None) => break,
        };
        events.extend(next.map(|(position, event)| {
            let event = event.borrow();
            // Only the events kept are cloned; one a backend keeps placed already costs a reference count.
            if event.position() == Some(position) {
                event.clone()
            } else {
                event.clone().with_position(position)
            }
        }));
    }
    StreamReplay {
        events,
        own: StreamRead { status: own.status, end: own.end },
        broadcast: StreamRead { status: broadcast.status, end: broadcast.end },
    }
}
