//! `resume`: the gapless hand-off from a client's Last-Event-ID to live events, for every backend.
//!
//! A reconnecting client sends the [`Cursor`] of the last frame it saw: a
//! position in each stream it reads. [`resume`] subscribes first (so nothing
//! published from then on can be missed), then asks the backend for each
//! stream's events after its own position, and returns one stream: the missed
//! events, then the live events that were not among them. A live event is
//! known to be covered by the replay by its position in its own stream, so
//! the client gets every event exactly once, in each stream's order, however
//! the backend interleaves the streams: by construction, not by timing.
//!
//! When it does not, the stream says so before anything else: see [`Resumed`].

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use crate::cursor::{Cursor, LastEventId, Position, Positions, StreamKind};
use crate::{Category, CategorySet, Error, Event, EventId, EventSource, Reader, ReplayStatus, UserId};

/// Resumes `reader`'s streams after `last_event_id`: the missed events, then live ones.
///
/// `reader` is a [`UserId`] (its own events and the broadcasts) or a
/// [`Reader`] with the groups the application lets it read.
///
/// With `last_event_id` `None` (a first connection) the stream is the live
/// subscription, starting from where each stream is when it is live. With a
/// [`Cursor`], each stream resumes after its own position, and a stream the
/// cursor holds no position for (a group joined since, a stream the client
/// has seen nothing of) after the cursor's horizon, where the backend gives
/// [horizons](EventSource::horizon); with a plain event id (a client from
/// before cursors), after that event as a merge by event id orders events
/// ([`Positions::after_event`]). Live events that the replay covered are
/// skipped by their position, so none is delivered twice.
///
/// # Errors
///
/// [`Error::InvalidCursor`] for a cursor made for another user (before
/// anything is subscribed); whatever `subscribe` or
/// [`missed_since`](EventSource::missed_since) fail with.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use ssehub::fixture::ExampleCategory as C;
/// use ssehub::{Audience, CategorySet, Event, Publisher, ReplayStatus, UserId, resume};
///
/// # #[cfg(feature = "memory")]
/// # fn main() {
/// use ssehub::memory::MemoryHub;
///
/// futures::executor::block_on(async {
///     let hub = MemoryHub::<C>::new();
///     let user = UserId::from_u64(42);
///     let mut stream = resume(&hub, user, None, CategorySet::all()).await?;
///     let mut sent = Vec::new();
///     for n in 0..3 {
///         let event = Event::new(Audience::User(user), "sync", C::DataSync, format!("{{\"n\":{n}}}")).unwrap();
///         hub.publish(event.clone()).await?;
///         sent.push(event);
///     }
///     assert_eq!(stream.next().await.unwrap()?, sent[0]);
///     // The `id:` of that frame: the client's Last-Event-ID when it comes back.
///     let cursor = stream.cursor().unwrap();
///     drop(stream);
///
///     let mut stream = resume(&hub, user, Some(cursor.into()), CategorySet::all()).await?;
///     assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete));
///     assert_eq!(stream.next().await.unwrap()?, sent[1]);
///     assert_eq!(stream.next().await.unwrap()?, sent[2]);
///
///     // Live events follow the replayed ones.
///     let live = Event::new(Audience::Broadcast, "notice", C::Security, "{}").unwrap();
///     hub.publish(live.clone()).await?;
///     assert_eq!(stream.next().await.unwrap()?, live);
///     Ok::<(), ssehub::Error>(())
/// })
/// .unwrap();
/// # }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
pub async fn resume<C, S>(
    source: &S,
    reader: impl Into<Reader>,
    last_event_id: Option<LastEventId>,
    filter: CategorySet<C>,
) -> Result<Resumed<C, S::Subscription>, Error>
where
    C: Category,
    S: EventSource<C>,
{
    let reader = reader.into();
    let mut from = match &last_event_id {
        None => Positions::NONE,
        Some(last) => last.positions_for(reader.user).map_err(Error::InvalidCursor)?,
    };
    // Positions of groups the reader no longer reads are dropped.
    let fingerprints: Vec<u64> = reader.groups.iter().map(|group| group.fingerprint()).collect();
    from.groups.retain(|fingerprint| fingerprints.contains(&fingerprint));
    // Taken before the subscription is live: what is published after it is delivered, or replayed next time.
    let horizon = source.horizon();
    let live = source.subscribe(&reader, filter).await?;
    let replay = source.missed_since(&reader, from.clone(), filter).await?;
    let last_event = last_event_id.as_ref().map(LastEventId::event_id);
    let kinds = StreamKind::ALL.into_iter().chain(reader.groups.iter().map(StreamKind::Group));
    let mut streams = Vec::with_capacity(2 + reader.groups.len());
    let mut gaps = Vec::new();
    let mut status = ReplayStatus::Complete;
    for kind in kinds {
        let mut state = StreamState::default();
        let read = replay.stream(kind);
        let own_position = from.get(kind);
        // Read after its own position, or after the horizon where the backend gives horizons.
        let was_read = own_position.is_some() || (horizon.is_some() && from.horizon.is_some());
        let replayed = replay.events.iter().filter(|e| StreamKind::of(e.audience()) == kind);
        state.replayed_ids = replayed.clone().map(Event::id).chain(last_event).collect();
        state.replayed_any = replayed.clone().next().is_some();
        state.covered_through = read.end.filter(|end| was_read && end.as_entry().is_some());
        // Until an event of the stream is yielded, the cursor holds where the
        // replay read up to (everything there passing the filter was replayed),
        // else where it started. A stream never read holds nothing: the
        // horizon covers it. A stream read after the cursor's horizon that
        // replayed events holds that horizon until one of them is yielded: the
        // next cursor's horizon is this connection's, after them. Without
        // horizons, the user's and the broadcast stream hold where the read
        // found them.
        state.position = match (own_position, kind) {
            (Some(_), _) if state.replayed_any => own_position,
            (Some(_), _) => read.end.or(own_position),
            (None, _) if was_read && state.replayed_any => from.horizon,
            (None, StreamKind::Own | StreamKind::Broadcast) if horizon.is_none() => read.end,
            (None, _) => None,
        };
        if was_read && !read.status.is_complete() {
            gaps.push(Error::Gap { last_delivered: last_event, stream: Some(kind) });
            if status.is_complete() {
                status = read.status;
            }
        }
        streams.push(state);
    }
    if gaps.len() > 1 && gaps.len() == streams.len() {
        // Every stream: one signal, naming none.
        gaps = vec![Error::Gap { last_delivered: last_event, stream: None }];
    }
    Ok(Resumed {
        live,
        reader,
        replay: replay.events.into_iter(),
        streams,
        horizon,
        status: last_event_id.is_some().then_some(status),
        gaps: gaps.into_iter(),
        last_delivered: last_event,
        finished: false,
    })
}

/// What [`Resumed`] knows of one stream.
#[derive(Debug, Default)]
struct StreamState {
    /// The position reached: the last yielded event's, or where the stream was resumed from.
    position: Option<Position>,
    /// Live events at or before this entry were covered by the replay.
    covered_through: Option<Position>,
    /// Ids of replayed events (and the Last-Event-ID's) a live event without
    /// an entry position may repeat; let go at the first live event not among them.
    replayed_ids: HashSet<EventId>,
    replayed_any: bool,
}

impl StreamState {
    /// Whether a live event at `position` with `id` was covered by the replay.
    fn covers(&mut self, position: Option<Position>, id: EventId) -> bool {
        if let (Some(position), Some(end)) = (position, self.covered_through)
            && let Some(order) = position.partial_cmp_entry(&end)
        {
            return order.is_le();
        }
        if self.replayed_ids.is_empty() {
            return false;
        }
        if self.replayed_ids.contains(&id) {
            return true;
        }
        // Live events of a stream come in its order, the covered ones first.
        self.replayed_ids = HashSet::new();
        false
    }
}

/// The stream returned by [`resume`]: replayed events, then live events.
///
/// It yields, in this order:
///
/// 1. **The gap signals**, one per stream whose history did not cover its
///    position (replay status [`Truncated`](ReplayStatus::Truncated),
///    [`UnknownId`](ReplayStatus::UnknownId) or
///    [`RetentionDisabled`](ReplayStatus::RetentionDisabled)):
///    `Err(Error::Gap { last_delivered, stream: Some(kind) })`, or a single
///    one with `stream: None` when that is every stream. This is THE signal
///    that events of that stream may have been lost; the other streams replay
///    exactly, and the stream goes on after it.
/// 2. **The replayed events**, each stream's in its order.
/// 3. **The live events** that were not replayed.
///
/// After each event, [`cursor`](Resumed::cursor) is the `id:` of its frame.
/// Errors of the live subscription are passed on with `last_delivered` set to
/// the id of the last event *this* stream yielded (or the Last-Event-ID it
/// started from); after [`Error::Lagged`] the stream ends.
#[must_use = "streams do nothing unless polled"]
pub struct Resumed<C, L> {
    live: L,
    reader: Reader,
    replay: std::vec::IntoIter<Event<C>>,
    /// Per stream: [`StreamKind::ALL`], then the reader's groups in order.
    streams: Vec<StreamState>,
    /// The backend's horizon taken before the subscription went live.
    horizon: Option<crate::Position>,
    status: Option<ReplayStatus>,
    gaps: std::vec::IntoIter<Error>,
    last_delivered: Option<EventId>,
    finished: bool,
}

/// Where stream `kind`'s state is in [`Resumed::streams`]; `None` for a group the reader does not read.
fn index_of(reader: &Reader, kind: StreamKind) -> Option<usize> {
    match kind {
        StreamKind::Own => Some(0),
        StreamKind::Broadcast => Some(1),
        StreamKind::Group(group) => reader.groups.as_slice().binary_search(&group).ok().map(|at| 2 + at),
    }
}

impl<C, L> Resumed<C, L> {
    /// How complete the replay was (the first stream's status that was not
    /// complete, if any), or `None` if there was no Last-Event-ID to replay from.
    pub fn replay_status(&self) -> Option<ReplayStatus> {
        self.status
    }

    /// The id of the last event this stream yielded, or the Last-Event-ID it
    /// resumed from if it has yielded none yet.
    pub fn last_delivered(&self) -> Option<EventId> {
        self.last_delivered
    }

    /// The position reached in each stream so far, and the horizon.
    pub fn positions(&self) -> Positions {
        let mut positions = Positions::NONE;
        let kinds = StreamKind::ALL.into_iter().chain(self.reader.groups.iter().map(StreamKind::Group));
        for (kind, state) in kinds.zip(&self.streams) {
            positions.set(kind, state.position);
        }
        positions.horizon = self.horizon;
        positions
    }

    /// The cursor to reconnect with: the last yielded event's id and the
    /// positions reached. `None` before any event was yielded on a first
    /// connection (there is nothing to resume after).
    pub fn cursor(&self) -> Option<Cursor> {
        Some(Cursor::new(self.last_delivered?, self.reader.user, self.positions()))
    }

    /// The user whose streams these are.
    pub fn user(&self) -> UserId {
        self.reader.user
    }

    /// The user and the groups whose streams these are.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The replayed events not yet yielded.
    pub fn pending_replay(&self) -> usize {
        self.replay.len()
    }
}

impl<C: Category, L> Resumed<C, L> {
    fn advance(&mut self, event: &Event<C>) {
        self.last_delivered = Some(event.id());
        if let (Some(position), Some(index)) =
            (event.position(), index_of(&self.reader, StreamKind::of(event.audience())))
        {
            self.streams[index].position = Some(position);
        }
    }
}

impl<C, L> Stream for Resumed<C, L>
where
    C: Category,
    L: Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(gap) = this.gaps.next() {
            return Poll::Ready(Some(Err(gap)));
        }
        if let Some(event) = this.replay.next() {
            this.advance(&event);
            return Poll::Ready(Some(Ok(event)));
        }
        loop {
            match Pin::new(&mut this.live).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(event))) => {
                    let index = index_of(&this.reader, StreamKind::of(event.audience()));
                    if let Some(stream) = index.map(|index| &mut this.streams[index])
                        && stream.covers(event.position(), event.id())
                    {
                        continue;
                    }
                    this.advance(&event);
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(Some(Err(error))) => {
                    let error = match error {
                        Error::Lagged { .. } => {
                            this.finished = true;
                            Error::Lagged { last_delivered: this.last_delivered }
                        }
                        Error::Gap { stream, .. } => {
                            Error::Gap { last_delivered: this.last_delivered, stream }
                        }
                        other => other,
                    };
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let pending = self.replay.len() + self.gaps.len();
        (pending, if self.finished { Some(0) } else { None })
    }
}

impl<C, L> FusedStream for Resumed<C, L>
where
    C: Category,
    L: Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<C, L> core::fmt::Debug for Resumed<C, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Resumed")
            .field("replay_status", &self.status)
            .field("pending_replay", &self.replay.len())
            .field("last_delivered", &self.last_delivered)
            .field("positions", &self.positions())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
