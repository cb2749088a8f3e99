//! `resume`: the gapless hand-off from a client's Last-Event-ID to live events, for every backend.
//!
//! A reconnecting client sends the id of the last event it saw. [`resume`]
//! subscribes first (so nothing published from then on can be missed), then
//! asks the backend for the events missed since that id, and returns one
//! stream: the missed events, then the live events that were not among them.
//! When the backend's history covers the gap, the client gets every event
//! exactly once, in publish order.
//!
//! When it does not, the stream says so before anything else: see [`Resumed`].

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use crate::{Category, CategorySet, Error, Event, EventId, EventSource, ReplayStatus, UserId};

/// Resumes `user`'s stream after `last_event_id`: the missed events, then live ones.
///
/// With `last_event_id` `None` (a first connection) the stream is just the
/// live subscription. Otherwise the subscription is made live first, then the
/// backend's [`missed_events`](EventSource::missed_events) are fetched; live
/// events already in the replay are skipped by id, so none is delivered twice.
///
/// # Errors
///
/// Whatever `subscribe` or `missed_events` fail with.
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
///     let user = UserId::from_uuid(uuid::Uuid::from_u128(42));
///     let mut sent = Vec::new();
///     for n in 0..3 {
///         let event = Event::new(Audience::User(user), "sync", C::DataSync, format!("{{\"n\":{n}}}")).unwrap();
///         hub.publish(event.clone()).await?;
///         sent.push(event);
///     }
///
///     // The client saw the first event, then reconnected.
///     let mut stream = resume(&hub, user, Some(sent[0].id()), CategorySet::all()).await?;
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
    user: UserId,
    last_event_id: Option<EventId>,
    filter: CategorySet<C>,
) -> Result<Resumed<C, S::Subscription>, Error>
where
    C: Category,
    S: EventSource<C>,
{
    let live = source.subscribe(user, filter).await?;
    let Some(last_event_id) = last_event_id else {
        return Ok(Resumed {
            live,
            replay: Vec::new().into_iter(),
            replayed_ids: HashSet::new(),
            newest_replayed: None,
            status: None,
            gap: None,
            last_delivered: None,
            finished: false,
        });
    };
    let replay = source.missed_events(user, last_event_id, filter).await?;
    // The Last-Event-ID itself is skipped too, should a backend's live
    // stream still carry it.
    let replayed_ids: HashSet<EventId> =
        replay.events.iter().map(Event::id).chain(Some(last_event_id)).collect();
    let newest_replayed = replay.events.last().map(Event::id);
    let gap = (!replay.status.is_complete()).then_some(Error::Gap { last_delivered: Some(last_event_id) });
    Ok(Resumed {
        live,
        replay: replay.events.into_iter(),
        replayed_ids,
        newest_replayed,
        status: Some(replay.status),
        gap,
        last_delivered: Some(last_event_id),
        finished: false,
    })
}

/// The stream returned by [`resume`]: replayed events, then live events.
///
/// It yields, in this order:
///
/// 1. **The gap signal**, only when history did not cover the gap (replay
///    status [`Truncated`](ReplayStatus::Truncated),
///    [`UnknownId`](ReplayStatus::UnknownId) or
///    [`RetentionDisabled`](ReplayStatus::RetentionDisabled)):
///    `Err(Error::Gap { last_delivered: Some(last_event_id) })`. This is THE
///    signal that events may have been lost; the stream goes on after it. A
///    server may pass it on (for instance as an event telling the client to
///    reload its state) or end the response.
/// 2. **The replayed events**, oldest first (what the backend still had).
/// 3. **The live events** that were not replayed.
///
/// Errors of the live subscription are passed on with `last_delivered` set to
/// the id of the last event *this* stream yielded (or the Last-Event-ID it
/// started from), so reconnecting with it loses nothing: after
/// [`Error::Lagged`] the stream ends.
#[must_use = "streams do nothing unless polled"]
pub struct Resumed<C, L> {
    live: L,
    replay: std::vec::IntoIter<Event<C>>,
    /// Ids of replayed events a live duplicate may still arrive for; emptied
    /// once the live stream has passed them.
    replayed_ids: HashSet<EventId>,
    /// The newest replayed id: once it arrives live, no later live event can be a duplicate.
    newest_replayed: Option<EventId>,
    status: Option<ReplayStatus>,
    gap: Option<Error>,
    last_delivered: Option<EventId>,
    finished: bool,
}

impl<C, L> Resumed<C, L> {
    /// How complete the replay was, or `None` if there was no Last-Event-ID to replay from.
    pub fn replay_status(&self) -> Option<ReplayStatus> {
        self.status
    }

    /// The id of the last event this stream yielded, or the Last-Event-ID it
    /// resumed from if it has yielded none yet: the id to reconnect with.
    pub fn last_delivered(&self) -> Option<EventId> {
        self.last_delivered
    }

    /// The replayed events not yet yielded.
    pub fn pending_replay(&self) -> usize {
        self.replay.len()
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
        if let Some(gap) = this.gap.take() {
            return Poll::Ready(Some(Err(gap)));
        }
        if let Some(event) = this.replay.next() {
            this.last_delivered = Some(event.id());
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
                    let id = event.id();
                    if !this.replayed_ids.is_empty() {
                        // Live events come in publish order, the same order
                        // as the replay: the ones also replayed (published
                        // between subscribing and replaying) come first. After
                        // the newest replayed one, or the first one not
                        // replayed, no duplicate can follow, and the ids are
                        // let go.
                        if this.replayed_ids.remove(&id) {
                            if this.newest_replayed == Some(id) {
                                this.replayed_ids = HashSet::new();
                            }
                            continue;
                        }
                        this.replayed_ids = HashSet::new();
                    }
                    this.last_delivered = Some(id);
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(Some(Err(error))) => {
                    let error = match error {
                        Error::Lagged { .. } => {
                            this.finished = true;
                            Error::Lagged { last_delivered: this.last_delivered }
                        }
                        Error::Gap { .. } => Error::Gap { last_delivered: this.last_delivered },
                        other => other,
                    };
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let pending = self.replay.len() + usize::from(self.gap.is_some());
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
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
