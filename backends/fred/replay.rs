//! Replay: the events a user missed after an event id, from the user's stream and the broadcast stream, through the shared replay step.
//!
//! The id is located in either stream (see `streams`); both are then read
//! after it up to one consistent cut, and `ssehub::backend::replay` merges
//! them in publish order, filters and classifies. Where the id is found, the
//! other stream counts as trimmed past it when it dropped entries and holds
//! none from before the id (Redis does not say which entries trimming
//! removed, so this is the cautious answer). An id in neither stream reads as
//! truncated where entries were trimmed from its time on, else as unknown.

use std::cmp::Ordering;

use super::codec::StreamId;
use super::order::entry_ids_are_one_sequence;
use super::streams::{Start, Streams};
use crate::backend::{self, ReplaySide};
use crate::{Audience, Category, CategorySet, Error, Event, EventId, Replay, ReplayStatus, UserId};

impl<C: Category> Streams<C> {
    /// The events `user` missed after `last_event_id`, as [`EventSource::missed_events`](crate::EventSource) says.
    pub(crate) async fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> Result<Replay<C>, Error> {
        let own = Audience::User(user);
        let (user_key, broadcast_key) = (self.layout.stream(own), self.layout.stream(Audience::Broadcast));
        let (in_user, in_broadcast) = futures_util::future::try_join(
            self.locate(&user_key, last_event_id),
            self.locate(&broadcast_key, last_event_id),
        )
        .await?;
        // Ids ssehub gives out are unique across streams, but another publisher's `XADD *` can give an
        // entry of the other stream the very same id: it may have come after, so it is included.
        let (own_start, broadcast_start, found) = match (in_user, in_broadcast) {
            (Some(position), _) => (Start::After(position), Start::At(position), Found::In(own, position)),
            (None, Some(position)) => {
                (Start::At(position), Start::After(position), Found::In(Audience::Broadcast, position))
            }
            (None, None) => {
                let (start, status) = self.unlocated_start(&user_key, &broadcast_key, last_event_id).await?;
                (start, start, Found::Neither(status))
            }
        };
        let horizon = self.horizon().await?;
        let other_trimmed = async {
            let Found::In(holder, position) = found else { return Ok(false) };
            let other = if holder == own { &broadcast_key } else { &user_key };
            Ok(self.trim_info(other).await?.is_some_and(|info| info.may_have_removed_from(position)))
        };
        let (own_events, broadcast_events, other_trimmed) = futures_util::future::try_join3(
            self.read_from(own, own_start, horizon),
            self.read_from(Audience::Broadcast, broadcast_start, horizon),
            other_trimmed,
        )
        .await?;
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

    /// Where a replay starts when the id is in neither stream: after trimming, from its time; else everything.
    async fn unlocated_start(
        &self,
        user_key: &str,
        broadcast_key: &str,
        id: EventId,
    ) -> Result<(Start, ReplayStatus), Error> {
        let Some(t) = id.timestamp_millis() else { return Ok((Start::Oldest, ReplayStatus::UnknownId)) };
        let (user_info, broadcast_info) =
            futures_util::future::try_join(self.trim_info(user_key), self.trim_info(broadcast_key)).await?;
        // The entry was added no earlier than `t - skew`: if nothing from then on was trimmed, it never existed.
        let earliest = StreamId::at_ms(t.saturating_sub(self.clock_skew_ms));
        let trimmed =
            [user_info, broadcast_info].iter().flatten().any(|info| info.may_have_removed_from(earliest));
        Ok(if trimmed {
            (Start::At(StreamId::at_ms(t)), ReplayStatus::Truncated)
        } else {
            (Start::Oldest, ReplayStatus::UnknownId)
        })
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
