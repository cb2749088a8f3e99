//! Replay after an event id: the events a user missed after it, from the user's stream and the broadcast stream, through the shared replay step.
//!
//! The id is located in either stream; both are then read after it up to one
//! consistent cut, and `ssehub::backend::replay` merges them in publish
//! order, filters and classifies. The reads are one script call per server
//! (see `replay_reads`): one round trip, more only where a replay returns
//! more than a page of a stream, where a cluster's per-stream call could not
//! guess where to read a stream that does not hold the id, or where the id is
//! unknown. Where the script cannot locate the id within its budget, the
//! reads are made step by step (see `streams`). Where the id is found, the
//! other stream counts as trimmed past it when it dropped entries and holds
//! none from before the id (Redis does not say which entries trimming
//! removed, so this is the cautious answer). An id in neither stream reads as
//! truncated where entries were trimmed from its time on, else as unknown.
//!
//! A replay after a cursor (`replay_since`) uses the same reads for a stream
//! whose position is "after this event": [`Missed::into_sides`] splits them
//! into each stream's part.

use std::cmp::Ordering;

use super::codec::StreamId;
use super::order::entry_ids_are_one_sequence;
use super::replay_reads::StreamRead;
use super::streams::{Start, Streams, TrimInfo};
use crate::backend::{self, ReplaySide, StreamSide};
use crate::{Audience, Category, CategorySet, Error, Event, EventId, Position, Replay, ReplayStatus, UserId};

/// One stream's part of a replay after a cursor, as `backend::stream_replay` takes it.
pub(crate) type Side<C> = StreamSide<Vec<(Position, Event<C>)>>;

impl<C: Category> Streams<C> {
    /// The events `user` missed after `last_event_id`, as [`EventSource::missed_events`](crate::EventSource) says.
    #[tracing::instrument(level = "debug", name = "ssehub.replay", skip_all, fields(%user, %last_event_id))]
    pub(crate) async fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> Result<Replay<C>, Error> {
        let own = Audience::User(user);
        let missed = self.missed_after_event(user, last_event_id, [true, true]).await?;
        let Missed { own_events, broadcast_events, found, other_trimmed, .. } = missed;
        let one_sequence = entry_ids_are_one_sequence(&self.layout);
        let in_order = |(entry, event): (StreamId, Event<C>)| {
            (PublishOrder { entry, event: event.id(), one_sequence }, event)
        };
        let side = |audience: Audience| match found {
            Found::In(holder, _) if holder == audience => (true, false),
            Found::In(..) => (false, other_trimmed),
            Found::Neither(status) => (false, status == ReplayStatus::Truncated),
        };
        let ((own_holds, own_trimmed), (broadcast_holds, broadcast_trimmed)) =
            (side(own), side(Audience::Broadcast));
        let replay = backend::replay(
            last_event_id,
            ReplaySide {
                events: own_events.into_iter().map(in_order),
                holds_id: own_holds,
                trimmed_after_id: own_trimmed,
            },
            ReplaySide {
                events: broadcast_events.into_iter().map(in_order),
                holds_id: broadcast_holds,
                trimmed_after_id: broadcast_trimmed,
            },
            filter,
        );
        tracing::debug!(%user, %last_event_id, status = %replay.status, "replayed missed events");
        Ok(replay)
    }

    /// What `user`'s streams hold after the event `id`, located in either of them. Only the streams
    /// `wanted` (`[own, broadcast]`) are read on beyond what the first script call returns; the others'
    /// events are left out.
    pub(crate) async fn missed_after_event(
        &self,
        user: UserId,
        id: EventId,
        wanted: [bool; 2],
    ) -> Result<Missed<C>, Error> {
        let own = Audience::User(user);
        let (user_key, broadcast_key) = (self.layout.stream(own), self.layout.stream(Audience::Broadcast));
        match self.read_around([&user_key, &broadcast_key], id).await? {
            Some([user_read, broadcast_read]) => {
                self.missed_from_reads(own, user_read, broadcast_read, id, wanted).await
            }
            None => {
                tracing::debug!(%id, "more entries around the id than the replay script scans: locating step by step");
                self.missed_in_steps(own, &user_key, &broadcast_key, id, wanted).await
            }
        }
    }

    /// What was missed, from the replay script's reads; a stream the script read from too late
    /// (or not at all), or beyond one page, is read on up to its cut.
    async fn missed_from_reads(
        &self,
        own: Audience,
        user: StreamRead,
        broadcast: StreamRead,
        id: EventId,
        wanted: [bool; 2],
    ) -> Result<Missed<C>, Error> {
        let (own_start, broadcast_start, found) = match located(own, user.position, broadcast.position) {
            Some(located) => located,
            None => {
                let (start, status) = self.unlocated_start([user.info.as_ref(), broadcast.info.as_ref()], id);
                (start, start, Found::Neither(status))
            }
        };
        let other_trimmed = match found {
            Found::In(holder, position) => {
                let other = if holder == own { &broadcast } else { &user };
                other.info.as_ref().is_some_and(|info| info.may_have_removed_from(position))
            }
            Found::Neither(_) => false,
        };
        let newest_of =
            |read: &StreamRead| read.info.as_ref().and_then(|info| info.last).unwrap_or(StreamId::ZERO);
        let newest = [newest_of(&user), newest_of(&broadcast)];
        let (own_events, broadcast_events) = futures_util::future::try_join(
            self.events_from_if(wanted[0], own, user, own_start),
            self.events_from_if(wanted[1], Audience::Broadcast, broadcast, broadcast_start),
        )
        .await?;
        Ok(Missed { own_events, broadcast_events, found, other_trimmed, newest })
    }

    /// [`events_from`](Self::events_from) if the stream is `wanted`, else nothing.
    async fn events_from_if(
        &self,
        wanted: bool,
        audience: Audience,
        read: StreamRead,
        start: Start,
    ) -> Result<Vec<(StreamId, Event<C>)>, Error> {
        if wanted { self.events_from(audience, read, start).await } else { Ok(Vec::new()) }
    }

    /// `audience`'s events from `start` on, up to the cut of `read`: what the script read, and the rest.
    async fn events_from(
        &self,
        audience: Audience,
        read: StreamRead,
        start: Start,
    ) -> Result<Vec<(StreamId, Event<C>)>, Error> {
        // A stream missing when the script ran holds nothing before the cut.
        let Some(cut) = read.cut() else { return Ok(Vec::new()) };
        match read.start {
            Some(read_from) if read_from.covers(start) => {
                let more = read.more();
                let last = read.entries.last().map(|entry| entry.id);
                let mut events =
                    self.decode(audience, read.entries.into_iter().filter(|entry| start.admits(entry.id)));
                if let (true, Some(last)) = (more, last) {
                    events.extend(self.read_from(audience, Start::After(last), cut).await?);
                }
                Ok(events)
            }
            _ => self.read_from(audience, start, cut).await,
        }
    }

    /// What was missed, read step by step: each stream located, then read up to the horizon.
    async fn missed_in_steps(
        &self,
        own: Audience,
        user_key: &str,
        broadcast_key: &str,
        last_event_id: EventId,
        wanted: [bool; 2],
    ) -> Result<Missed<C>, Error> {
        // The newest entries before any read: everything up to them is read (they are below the horizon).
        let newest_if = |wanted: bool, key| async move {
            if wanted { self.last_stream_id(key).await } else { Ok(StreamId::ZERO) }
        };
        let (in_user, in_broadcast, own_newest, broadcast_newest) = futures_util::future::try_join4(
            self.locate(user_key, last_event_id),
            self.locate(broadcast_key, last_event_id),
            newest_if(wanted[0], user_key),
            newest_if(wanted[1], broadcast_key),
        )
        .await?;
        let (own_start, broadcast_start, found) = match located(own, in_user, in_broadcast) {
            Some(located) => located,
            None => {
                let (start, status) = match last_event_id.timestamp_millis() {
                    None => (Start::Oldest, ReplayStatus::UnknownId),
                    Some(_) => {
                        let (user_info, broadcast_info) = futures_util::future::try_join(
                            self.trim_info(user_key),
                            self.trim_info(broadcast_key),
                        )
                        .await?;
                        self.unlocated_start([user_info.as_ref(), broadcast_info.as_ref()], last_event_id)
                    }
                };
                (start, start, Found::Neither(status))
            }
        };
        let horizon = self.horizon().await?;
        let other_trimmed = async {
            let Found::In(holder, position) = found else { return Ok(false) };
            let other = if holder == own { broadcast_key } else { user_key };
            Ok(self.trim_info(other).await?.is_some_and(|info| info.may_have_removed_from(position)))
        };
        let read_if = |wanted: bool, audience: Audience, start: Start| async move {
            if wanted { self.read_from(audience, start, horizon).await } else { Ok(Vec::new()) }
        };
        let (own_events, broadcast_events, other_trimmed) = futures_util::future::try_join3(
            read_if(wanted[0], own, own_start),
            read_if(wanted[1], Audience::Broadcast, broadcast_start),
            other_trimmed,
        )
        .await?;
        Ok(Missed {
            own_events,
            broadcast_events,
            found,
            other_trimmed,
            newest: [own_newest, broadcast_newest],
        })
    }

    /// Where a replay starts when the id is in neither stream (whose trim records are `infos`):
    /// after trimming, from its time; else everything.
    fn unlocated_start(&self, infos: [Option<&TrimInfo>; 2], id: EventId) -> (Start, ReplayStatus) {
        let Some(t) = id.timestamp_millis() else { return (Start::Oldest, ReplayStatus::UnknownId) };
        // The entry was added no earlier than `t - skew`: if nothing from then on was trimmed, it never existed.
        let earliest = StreamId::at_ms(t.saturating_sub(self.clock_skew_ms));
        let trimmed = infos.iter().flatten().any(|info| info.may_have_removed_from(earliest));
        if trimmed {
            (Start::At(StreamId::at_ms(t)), ReplayStatus::Truncated)
        } else {
            (Start::Oldest, ReplayStatus::UnknownId)
        }
    }
}

/// Where each stream is read from, and where the id was found, when a stream holds it.
///
/// Ids ssehub gives out are unique across streams, but another publisher's
/// `XADD *` can give an entry of the other stream the very same id: it may
/// have come after, so it is included. The user's stream is asked first.
fn located(
    own: Audience,
    in_user: Option<StreamId>,
    in_broadcast: Option<StreamId>,
) -> Option<(Start, Start, Found)> {
    match (in_user, in_broadcast) {
        (Some(position), _) => Some((Start::After(position), Start::At(position), Found::In(own, position))),
        (None, Some(position)) => {
            Some((Start::At(position), Start::After(position), Found::In(Audience::Broadcast, position)))
        }
        (None, None) => None,
    }
}

/// What the streams say was missed after an event id, before the replay step.
pub(crate) struct Missed<C> {
    own_events: Vec<(StreamId, Event<C>)>,
    broadcast_events: Vec<(StreamId, Event<C>)>,
    found: Found,
    /// Whether the stream not holding the id may have been trimmed past it.
    other_trimmed: bool,
    /// Each stream's newest entry before it was read (`[own, broadcast]`; [`StreamId::ZERO`] for none),
    /// for the streams read.
    newest: [StreamId; 2],
}

impl<C: Category> Missed<C> {
    /// Each stream's part (`[own, broadcast]`) of a replay after event `id` in that stream.
    ///
    /// The stream holding the id is complete after it; the other is read from
    /// the id's entry on (publish order on one server, the hybrid clock's order
    /// on a cluster) and truncated where it may have dropped entries from there
    /// on. An id in neither stream leaves both truncated (read from its time
    /// on) or unknown (every retained event), as the merge by id says; events
    /// the merge by id leaves out are left out here too. A stream's end is its
    /// newest entry when it was read, or the last event read from it if later.
    pub(crate) fn into_sides(self, id: EventId) -> [Side<C>; 2] {
        let Missed { own_events, broadcast_events, found, other_trimmed, newest } = self;
        let cut_by_id = matches!(found, Found::Neither(ReplayStatus::Truncated));
        let status = |broadcast: bool| match found {
            Found::In(holder, _) if (holder == Audience::Broadcast) == broadcast => ReplayStatus::Complete,
            Found::In(..) if other_trimmed => ReplayStatus::Truncated,
            Found::In(..) => ReplayStatus::Complete,
            Found::Neither(status) => status,
        };
        let side = |events: Vec<(StreamId, Event<C>)>, broadcast: bool, newest: StreamId| {
            let end = events.last().map_or(newest, |(last, _)| newest.max(*last));
            let events = events
                .into_iter()
                .filter(|(_, event)| event.id() != id && (!cut_by_id || event.id() > id))
                .map(|(entry, event)| (entry.position(), event))
                .collect();
            StreamSide { events, status: status(broadcast), end: Some(end.position()) }
        };
        [side(own_events, false, newest[0]), side(broadcast_events, true, newest[1])]
    }
}

/// Where a Last-Event-ID was found.
#[derive(Clone, Copy)]
enum Found {
    /// In this audience's stream, at this entry.
    In(Audience, StreamId),
    /// In neither stream: truncated or unknown, by what was trimmed from its time on.
    Neither(ReplayStatus),
}

/// An entry's place in publish order, compared as `order::merge` compares entries.
///
/// With an order key, entry ids are one sequence across streams; without one
/// (the cluster layout), entries of the same millisecond are ordered by event id.
#[derive(Clone, Copy, Debug)]
struct PublishOrder {
    entry: StreamId,
    event: EventId,
    one_sequence: bool,
}

impl Ord for PublishOrder {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.one_sequence || self.entry.ms != other.entry.ms {
            self.entry.cmp(&other.entry)
        } else {
            self.event.cmp(&other.event)
        }
    }
}

impl PartialOrd for PublishOrder {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PublishOrder {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PublishOrder {}
