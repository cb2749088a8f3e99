//! The replay steps: merging a user's and the broadcast history after an event id, and putting streams together after a cursor's positions.

use std::borrow::Borrow;

use crate::{
    Category, CategorySet, Event, EventId, GroupId, Position, Replay, ReplayStatus, StreamRead, StreamReplay,
};

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
        groups: Vec::new(),
    }
}

/// Adds a group stream's part to a replay built by [`stream_replay`]: keeps
/// its events that pass `filter`, sets their positions, and merges them with
/// the other streams' by entry where both are entries.
///
/// # Examples
///
/// ```
/// use ssehub::backend::{add_group_stream, stream_replay, StreamSide};
/// use ssehub::{fixture::ExampleCategory as C, Audience, CategorySet, Event, GroupId, Position, ReplayStatus, StreamKind};
///
/// let team = GroupId::from_u64(3);
/// let event = Event::new(Audience::Group(team), "n", C::Ai, "1").unwrap();
/// let mut replayed = stream_replay::<C, Event<C>, _, _>(StreamSide::not_replayed(None), StreamSide::not_replayed(None), CategorySet::all());
/// let side = StreamSide { events: [(Position::entry(9, 0), event.clone())], status: ReplayStatus::Complete, end: Some(Position::entry(9, 0)) };
/// add_group_stream(&mut replayed, team, side, CategorySet::all());
/// assert_eq!(replayed.events, vec![event]);
/// assert_eq!(replayed.stream(StreamKind::Group(team)).end, Some(Position::entry(9, 0)));
/// ```
pub fn add_group_stream<C, E, G>(
    replay: &mut StreamReplay<C>,
    group: GroupId,
    side: StreamSide<G>,
    filter: CategorySet<C>,
) where
    C: Category,
    E: Borrow<Event<C>>,
    G: IntoIterator<Item = (Position, E)>,
{
    let mut theirs = side
        .events
        .into_iter()
        .filter(|(_, event)| filter.contains(event.borrow().category()))
        .map(|(position, event)| {
            let event = event.borrow();
            if event.position() == Some(position) {
                event.clone()
            } else {
                event.clone().with_position(position)
            }
        })
        .peekable();
    if theirs.peek().is_some() {
        let mut mine = std::mem::take(&mut replay.events).into_iter().peekable();
        let mut events = Vec::with_capacity(mine.len());
        loop {
            let later = |a: &Event<C>, b: &Event<C>| match (a.position(), b.position()) {
                (Some(a), Some(b)) => a.partial_cmp_entry(&b) == Some(std::cmp::Ordering::Greater),
                _ => false,
            };
            let next = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if later(a, b) => theirs.next(),
                (Some(_), _) => mine.next(),
                (None, Some(_)) => theirs.next(),
                (None, None) => break,
            };
            events.extend(next);
        }
        replay.events = events;
    }
    replay.groups.push((group, StreamRead { status: side.status, end: side.end }));
}
