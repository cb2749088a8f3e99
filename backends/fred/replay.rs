//! Replay: the events a user missed after an event id, from the user's stream and the broadcast stream, merged.
//!
//! The id is located in either stream (see `streams`); both are then read
//! after it up to one consistent cut and merged in entry id order. An id in
//! neither stream reads as truncated where entries were trimmed from its
//! time on, else as unknown.

use super::codec::StreamId;
use super::order::{entry_ids_are_one_sequence, merge};
use super::streams::{Start, Streams};
use crate::{Audience, Category, CategorySet, Error, EventId, Replay, ReplayStatus, UserId};

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
        let (own_start, broadcast_start, status) = match (in_user, in_broadcast) {
            (Some(position), _) => (Start::After(position), Start::At(position), ReplayStatus::Complete),
            (None, Some(position)) => (Start::At(position), Start::After(position), ReplayStatus::Complete),
            (None, None) => {
                let (start, status) = self.unlocated_start(&user_key, &broadcast_key, last_event_id).await?;
                (start, start, status)
            }
        };
        let horizon = self.horizon().await?;
        let (own_events, broadcast_events) = futures_util::future::try_join(
            self.read_from(own, own_start, horizon),
            self.read_from(Audience::Broadcast, broadcast_start, horizon),
        )
        .await?;
        let one_sequence = entry_ids_are_one_sequence(&self.layout);
        let events = merge(own_events, broadcast_events, one_sequence)
            .filter(|e| filter.contains(e.category()))
            .collect();
        tracing::debug!(%user, %last_event_id, %status, "replayed missed events");
        Ok(Replay { events, status })
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
