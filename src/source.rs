//! The backend traits `EventSource` and `Publisher`, replay results, and the type-erased `DynHub`.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;

use futures_core::Stream;

use crate::cursor::{Position, Positions, StreamKind};
use crate::{Category, CategorySet, Error, Event, EventId, GroupId, Reader, UserId};

/// A boxed, `Send` future, as returned through [`DynHub`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed subscription stream, as returned through [`DynHub`].
pub type EventStream<C> = Pin<Box<dyn Stream<Item = Result<Event<C>, Error>> + Send + 'static>>;

/// Where subscribers get events from: live subscriptions and replay of missed events.
///
/// # The contract
///
/// Every backend keeps these rules; the `conformance` feature's suite checks
/// each of them (one check per rule), for this crate's backends and yours.
///
/// - **Live.** [`subscribe`](EventSource::subscribe) resolves once the
///   subscription is live: every event published after it returns is
///   delivered to it. Before those, it may yield events published just
///   before it subscribed that were still on their way (of each audience, the
///   newest of those it would receive, in publish order), never older ones.
/// - **What and in which order.** A subscription yields its user's own events,
///   the broadcasts and the events of the groups its [`Reader`] names that
///   pass its filter, each audience in publish order, none twice, never
///   another user's or another group's; events arrive whole and unchanged
///   (data byte for byte, event type, category, `occurred_at` to the
///   microsecond at least).
/// - **Data.** Event data is JSON text, checked when an [`Event`] is made, so
///   a backend accepts every event there is.
/// - **Lag.** With a queue capacity of N, a subscription that reads nothing
///   while N + 1 events arrive yields exactly the first N, then
///   [`Error::Lagged`] naming the N-th, then ends. One that keeps up never lags.
/// - **Gap.** [`Error::Gap`] (naming the last event yielded) marks a point
///   where events may have been lost; the stream goes on after it.
/// - **Close.** When the hub is closed, or its last handle dropped, each
///   subscription yields what was queued for it, then [`Error::Closed`] once,
///   then ends (`None` for ever); later `subscribe` and `publish` calls fail
///   with [`Error::Closed`]. Dropping a subscription unsubscribes it.
/// - **Positions.** Every event a subscription yields and every replayed event
///   carries its [`position`](Event::position) in its own stream (the user's,
///   the broadcasts, or a group's): strictly increasing within the stream, in publish
///   order, never reused (a restarted backend's positions are above its old
///   ones, or refused as unknown). Without retention a backend may give none.
///   Nothing orders streams against each other: a backend may deliver them
///   in any interleaving.
/// - **Replay after positions.** [`missed_since`](EventSource::missed_since)
///   reads each stream strictly after its own position, as [`StreamReplay`]
///   states; `resume` builds the SSE id (a [`Cursor`](crate::Cursor)) from
///   these positions, so a client gets every event exactly once whatever the
///   interleaving, and a stream whose history no longer covers its position
///   gets a gap of its own. A stream without a position of its own is read
///   after [`Positions::horizon`] by a backend that gives horizons
///   ([`horizon`](EventSource::horizon)): everything published to it after
///   the horizon, complete unless history dropped some of that.
/// - **Replay after an event id.** [`missed_events`](EventSource::missed_events) returns the
///   retained events (the user's and the broadcasts, merged in publish order,
///   passing the filter) published after the id, never the id itself or an
///   earlier event, with a [`ReplayStatus`]:
///   [`Complete`](ReplayStatus::Complete) when the id is retained and neither
///   audience dropped an event published after it;
///   [`Truncated`](ReplayStatus::Truncated) when one may have (the other
///   audience was trimmed past the id, or the id itself is no longer
///   retained); [`UnknownId`](ReplayStatus::UnknownId) when the id was never
///   published here (then every retained event);
///   [`RetentionDisabled`](ReplayStatus::RetentionDisabled) without history.
///   A backend that cannot tell which events trimming removed may answer
///   truncated where an audience dropped events and retains none from before
///   the id; never complete where an event after the id was dropped.
///
/// # Implementing your own backend
///
/// A backend implements both traits. The pieces every backend needs are in
/// [`backend`](crate::backend): the subscriber queue (lag, close and
/// unsubscribe rules included) and the replay step. This one keeps everything
/// in a `Mutex`; it delivers and replays for real.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use futures::StreamExt;
/// use ssehub::backend::{self, Registry, ReplaySide, StreamSide, SubscriberQueue, Subscription, Wakeups};
/// use ssehub::{Audience, Category, CategorySet, Error, Event, EventId, EventSource, Publisher, Reader, Replay, UserId};
/// use ssehub::{GroupId, Groups, Position, Positions, ReplayStatus, StreamKind, StreamReplay};
///
/// struct Inner<C> {
///     /// Live subscriptions: whose, and their filters.
///     subscribers: Vec<(Arc<SubscriberQueue<C>>, Reader, CategorySet<C>)>,
///     /// Every event, with its place in publish order (from 1).
///     history: Vec<(u64, Event<C>)>,
/// }
///
/// /// Subscriptions unregister here when they are dropped.
/// struct Shared<C>(Mutex<Inner<C>>);
///
/// impl<C: Category> Registry<C> for Shared<C> {
///     fn unregister(&self, queue: &Arc<SubscriberQueue<C>>) {
///         self.0.lock().unwrap().subscribers.retain(|(q, _, _)| !Arc::ptr_eq(q, queue));
///     }
/// }
///
/// #[derive(Clone)]
/// struct VecHub<C>(Arc<Shared<C>>);
///
/// impl<C: Category> EventSource<C> for VecHub<C> {
///     type Subscription = Subscription<C>;
///
///     async fn subscribe(&self, reader: impl Into<Reader> + Send, filter: CategorySet<C>) -> Result<Subscription<C>, Error> {
///         let reader = reader.into();
///         let registry: Arc<dyn Registry<C>> = self.0.clone();
///         let (queue, subscription) = backend::subscriber_queue(reader.user, 1024, Some(registry));
///         // Registered under the lock publishes take: live when this returns.
///         self.0 .0.lock().unwrap().subscribers.push((queue, reader, filter));
///         Ok(subscription)
///     }
///
///     async fn missed_events(&self, user: UserId, last: EventId, filter: CategorySet<C>) -> Result<Replay<C>, Error> {
///         let inner = self.0 .0.lock().unwrap();
///         let position = inner.history.iter().position(|(_, e)| e.id() == last);
///         let after = position.map_or(0, |p| p + 1);
///         // The user's own events, or the broadcasts, after the id.
///         let side = |broadcasts: bool| {
///             let ours = move |a: Audience| if broadcasts { a == Audience::Broadcast } else { a == Audience::User(user) };
///             ReplaySide {
///                 events: inner.history[after..].iter().filter(move |(_, e)| ours(e.audience())).cloned(),
///                 holds_id: position.is_some_and(|p| ours(inner.history[p].1.audience())),
///                 trimmed_after_id: false, // nothing is ever dropped here
///             }
///         };
///         let (own, broadcasts) = (side(false), side(true));
///         Ok(backend::replay(last, own, broadcasts, filter))
///     }
///
///     async fn missed_since(&self, reader: impl Into<Reader> + Send, from: Positions, filter: CategorySet<C>) -> Result<StreamReplay<C>, Error> {
///         let reader = reader.into();
///         let inner = self.0 .0.lock().unwrap();
///         // An event's position in its stream is (0, its place in publish order): one numbering
///         // serves every stream here. Everything up to `end` is read; nothing is ever dropped.
///         let end = Some(Position::entry(0, inner.history.len() as u64));
///         // Stream `kind` after its own position, or after the horizon.
///         let side = |kind: StreamKind| {
///             let (after, status) = match from.start_of(kind) {
///                 None => (inner.history.len() as u64, ReplayStatus::Complete),
///                 Some(Position::Entry { seq, .. }) => (seq, ReplayStatus::Complete),
///                 // A plain event id as Last-Event-ID: after that event, or everything if unknown.
///                 Some(Position::AfterEvent(id)) => match inner.history.iter().find(|(_, e)| e.id() == id) {
///                     Some((place, _)) => (*place, ReplayStatus::Complete),
///                     None => (0, ReplayStatus::UnknownId),
///                 },
///             };
///             let events = inner.history.iter().filter(move |(place, e)| *place > after && StreamKind::of(e.audience()) == kind);
///             StreamSide { events: events.map(|(place, e)| (Position::entry(0, *place), e)), status, end }
///         };
///         let mut replay = backend::stream_replay(side(StreamKind::Own), side(StreamKind::Broadcast), filter);
///         for group in &reader.groups {
///             backend::add_group_stream(&mut replay, group, side(StreamKind::Group(group)), filter);
///         }
///         // `StreamKind::Own` above is the reader's own stream: no other user's events are read.
///         replay.events.retain(|e| reader.reads(e.audience()));
///         Ok(replay)
///     }
///
///     /// The next place in publish order: every stream orders against it.
///     fn horizon(&self) -> Option<Position> {
///         Some(Position::entry(0, self.0 .0.lock().unwrap().history.len() as u64))
///     }
///
///     async fn disconnect(&self, user: UserId) -> Result<(), Error> {
///         let mut wakeups = Wakeups::new();
///         // Ended and unregistered at once: the user's places are free again.
///         self.0 .0.lock().unwrap().subscribers.retain(|(queue, _, _)| {
///             let theirs = queue.user() == user;
///             if theirs {
///                 queue.revoke(&mut wakeups);
///             }
///             !theirs
///         });
///         wakeups.wake_all();
///         Ok(())
///     }
/// }
///
/// impl<C: Category> Publisher<C> for VecHub<C> {
///     async fn publish(&self, event: Event<C>) -> Result<(), Error> {
///         let mut wakeups = Wakeups::new();
///         let mut inner = self.0 .0.lock().unwrap();
///         let place = inner.history.len() as u64 + 1;
///         // Live events carry their position, as replayed ones do.
///         let event = event.with_position(Position::entry(0, place));
///         inner.history.push((place, event.clone()));
///         inner.subscribers.retain(|(queue, reader, filter)| {
///             if !reader.reads(event.audience()) || !filter.contains(event.category()) {
///                 return true;
///             }
///             // A queue that lagged or ended is dropped from the list.
///             matches!(queue.push(&event, &mut wakeups), backend::Push::Queued)
///         });
///         drop(inner);
///         wakeups.wake_all(); // with no lock held
///         Ok(())
///     }
/// }
///
/// use ssehub::fixture::ExampleCategory as C;
/// let hub = VecHub::<C>(Arc::new(Shared(Mutex::new(Inner { subscribers: Vec::new(), history: Vec::new() }))));
/// let alice = UserId::from_u64(1);
/// let team = GroupId::from_name("team:7");
/// futures::executor::block_on(async {
///     let mut live = hub.subscribe(Reader::new(alice, Groups::new([team]).unwrap()), CategorySet::all()).await?;
///     let first = Event::new(Audience::User(alice), "hello", C::Ai, "1").unwrap();
///     let second = Event::new(Audience::Broadcast, "news", C::Security, "2").unwrap();
///     let third = Event::new(Audience::Group(team), "team", C::Ai, "3").unwrap();
///     hub.publish(first.clone()).await?;
///     hub.publish(second.clone()).await?;
///     hub.publish(third.clone()).await?;
///     assert_eq!(live.next().await.unwrap()?, first);
///     assert_eq!(live.next().await.unwrap()?, second);
///     assert_eq!(live.next().await.unwrap()?, third);
///     let replay = hub.missed_events(alice, first.id(), CategorySet::all()).await?;
///     assert_eq!(replay, Replay::complete(vec![second.clone()]));
///     // `resume` reads each stream after the position a client's cursor holds.
///     let own_at_first = Positions { own: Some(Position::entry(0, 1)), broadcast: Some(Position::START), ..Positions::NONE };
///     let since = hub.missed_since(alice, own_at_first, CategorySet::all()).await?;
///     assert_eq!(since.events, vec![second]);
///     assert_eq!(since.broadcast.status, ReplayStatus::Complete);
///     // ...and a `DynHub` picks a backend at run time.
///     let dynamic = ssehub::DynHub::new(hub.clone());
///     assert!(dynamic.subscribe(alice, CategorySet::all()).await.is_ok());
///     Ok::<(), Error>(())
/// })
/// .unwrap();
/// ```
pub trait EventSource<C: Category>: Send + Sync {
    /// The stream of a live subscription.
    ///
    /// It yields the user's own events and broadcast events that pass the
    /// filter, in publish order. [`Error::Lagged`] ends it; [`Error::Gap`]
    /// marks a point where events may have been lost, and it goes on after;
    /// [`Error::Closed`] ends it when the hub closes. Dropping it
    /// unsubscribes. See [the contract](EventSource#the-contract).
    ///
    /// [`backend::Subscription`](crate::backend::Subscription) is such a
    /// stream, with the lag and close rules built in. A stream that is not
    /// `Unpin` (an `async_channel::Receiver`, say) fits once boxed:
    /// `Pin<Box<...>>`.
    type Subscription: Stream<Item = Result<Event<C>, Error>> + Send + Unpin + 'static;

    /// Subscribes to the events of `reader` (a [`UserId`], or a [`Reader`]
    /// with groups): the user's own events, the broadcasts and its groups'
    /// events, those that pass `filter`.
    ///
    /// Resolves only once the subscription is live: every event published
    /// after this returns is delivered to it.
    fn subscribe(
        &self,
        reader: impl Into<Reader> + Send,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send;

    /// The retained events for `user` (own and broadcast) published after
    /// `last_event_id` that pass `filter`, oldest first, and whether that is
    /// all of them.
    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send;

    /// The retained events of each of `reader`'s streams (its own, the
    /// broadcasts, each of its groups) published after its position in
    /// `from` that pass `filter`, each stream read on its own; a stream
    /// without a position after `from.horizon`, where the backend gives
    /// horizons.
    ///
    /// Called by [`resume`](crate::resume()) once the subscription is live. See
    /// [`StreamReplay`] for what each stream's part must hold, and
    /// [`backend::stream_replay`](crate::backend::stream_replay) for the step
    /// that builds it from what a backend read.
    fn missed_since(
        &self,
        reader: impl Into<Reader> + Send,
        from: Positions,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<StreamReplay<C>, Error>> + Send;

    /// A position every stream of this backend orders against, taken now:
    /// reading any stream after it yields every event published to it after
    /// this call. [`resume`](crate::resume()) takes one before it subscribes
    /// and writes it into the cursor as the [horizon](Positions::horizon), so
    /// that a stream the client has seen nothing of (a group it joined since,
    /// a quiet user stream) still replays what was published to it while the
    /// client was away.
    ///
    /// `None` (the default) for a backend without one: then a stream without
    /// a position of its own is not replayed, and `resume` keeps the user's
    /// and the broadcast stream's positions at where its replay read up to.
    fn horizon(&self) -> Option<Position> {
        None
    }

    /// Ends every open subscription of `user`, on every process sharing this
    /// backend's data, with [`Error::Revoked`] (what was queued for them is
    /// dropped), and frees their places under the caps at once; other users'
    /// subscriptions carry on untouched. Returns once the order is given:
    /// this process's subscriptions have ended, other processes' end as they
    /// receive it. A user's later subscribe is not refused: who may
    /// subscribe is the application's decision (its authentication).
    ///
    /// [`SubscriberQueue::revoke`](crate::backend::SubscriberQueue::revoke)
    /// ends one subscription this way.
    fn disconnect(&self, user: UserId) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Who is connected: open streams per user and users online, on every process sharing the backend.
///
/// The memory backend answers for its process, at once. The Redis backend
/// answers for every hub sharing its key layout: each hub writes its own
/// counts to Redis in batches (a few times a second, one script call however
/// many connects and disconnects), under a key that expires unless the hub
/// refreshes it, so a process killed without a goodbye stops counting within
/// the expiry ([`presence_ttl`](crate::fred::RedisHubBuilder::presence_ttl),
/// 30 s by default); a hub that closes removes its counts at once.
pub trait Presence: Send + Sync {
    /// How many subscriptions `user` has open.
    fn streams_of(&self, user: UserId) -> impl Future<Output = Result<usize, Error>> + Send;

    /// How many users have at least one subscription open.
    fn online_users(&self) -> impl Future<Output = Result<usize, Error>> + Send;
}

/// Where events are published: to one user, or to everyone, by the event's audience.
pub trait Publisher<C: Category>: Send + Sync {
    /// Publishes `event` to its [`audience`](Event::audience); returns once
    /// the backend has accepted it (and retained it, where retention is on).
    fn publish(&self, event: Event<C>) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The events a client missed, and how complete they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay<C: Category> {
    /// The missed events, oldest first.
    pub events: Vec<Event<C>>,
    /// Whether `events` is everything that was missed.
    pub status: ReplayStatus,
}

impl<C: Category> Replay<C> {
    /// A complete replay of these events.
    pub fn complete(events: Vec<Event<C>>) -> Self {
        Self { events, status: ReplayStatus::Complete }
    }

    /// A truncated replay: history no longer reaches back to the id, and
    /// these are the retained events published after it.
    pub fn truncated(events: Vec<Event<C>>) -> Self {
        Self { events, status: ReplayStatus::Truncated }
    }

    /// A replay after an id this history never held: every retained event.
    pub fn unknown_id(events: Vec<Event<C>>) -> Self {
        Self { events, status: ReplayStatus::UnknownId }
    }

    /// An empty replay from a backend that keeps no history.
    pub fn retention_disabled() -> Self {
        Self { events: Vec::new(), status: ReplayStatus::RetentionDisabled }
    }
}

/// What a replay after a [`Positions`] found: events and, per stream, how complete they are and where it read up to.
///
/// Each stream is read on its own, strictly after its own position:
/// - `events`: the stream's retained events after its position that pass the
///   filter, in the stream's order, each with its
///   [`position`](Event::position) set. Events of different streams may be
///   interleaved in any way: nothing orders streams against each other.
/// - [`StreamRead::status`]: [`Complete`](ReplayStatus::Complete) when no
///   event of the stream after the position can have been dropped;
///   [`Truncated`](ReplayStatus::Truncated) when one may have (then the
///   retained events after the position); [`UnknownId`](ReplayStatus::UnknownId)
///   for an [`AfterEvent`](Position::AfterEvent) position whose event this
///   history never held, or an entry from another history (then every
///   retained event of the stream); [`RetentionDisabled`](ReplayStatus::RetentionDisabled)
///   without history. A stream with no position (`None`) is `Complete` with no events.
/// - [`StreamRead::end`]: how far the stream was read, an entry position at
///   or after the last event replayed from it: the stream's newest entry when
///   it was read (its position when no entry, [`Position::START`] for an empty
///   stream), so that a live event at or before it is known to be covered.
///   `None` without history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReplay<C: Category> {
    /// The missed events, each stream's in its order.
    pub events: Vec<Event<C>>,
    /// The user's own stream.
    pub own: StreamRead,
    /// The broadcast stream.
    pub broadcast: StreamRead,
    /// Each group stream of the reader; a group not listed was not read
    /// (`Complete`, no events, no end).
    pub groups: Vec<(GroupId, StreamRead)>,
}

impl<C: Category> StreamReplay<C> {
    /// The part of stream `kind`.
    pub fn stream(&self, kind: StreamKind) -> StreamRead {
        match kind {
            StreamKind::Own => self.own,
            StreamKind::Broadcast => self.broadcast,
            StreamKind::Group(group) => self
                .groups
                .iter()
                .find(|(listed, _)| *listed == group)
                .map_or(StreamRead { status: ReplayStatus::Complete, end: None }, |(_, read)| *read),
        }
    }

    /// An empty replay from a backend that keeps no history.
    pub fn retention_disabled() -> Self {
        let read = StreamRead { status: ReplayStatus::RetentionDisabled, end: None };
        Self { events: Vec::new(), own: read, broadcast: read, groups: Vec::new() }
    }
}

/// How one stream's part of a [`StreamReplay`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRead {
    /// Whether the stream's part is everything that was missed.
    pub status: ReplayStatus,
    /// How far the stream was read: see [`StreamReplay`].
    pub end: Option<Position>,
}

/// How complete a [`Replay`] is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ReplayStatus {
    /// Every event after the id is in the replay.
    Complete,
    /// History no longer reaches back to the id: older events were dropped, so
    /// the replay (the retained events) may miss some.
    Truncated,
    /// The id is not in this user's or the broadcast history: a foreign or
    /// expired id. The replay holds every retained event.
    UnknownId,
    /// The backend keeps no history; nothing can be replayed.
    RetentionDisabled,
}

impl ReplayStatus {
    /// Whether the replay covers everything that was missed.
    pub fn is_complete(self) -> bool {
        self == ReplayStatus::Complete
    }
}

impl fmt::Display for ReplayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayStatus::Complete => "complete",
            ReplayStatus::Truncated => "truncated",
            ReplayStatus::UnknownId => "unknown id",
            ReplayStatus::RetentionDisabled => "retention disabled",
        })
    }
}

mod dyn_hub;
pub use dyn_hub::DynHub;
