//! Replay after a cursor: each of a user's streams read after its own position, through the shared `stream_replay` step.
//!
//! A stream at an entry position is read after that entry by the cursor
//! script (`read_after.lua`): on one server one call for both streams (one
//! atomic step), on a cluster one call per stream on its own master, both
//! sent at once. Either way one round trip, more only where a stream has
//! more than a page of events to replay; no read depends on how much history
//! is retained. Each stream's part is complete while its position's entry, or
//! an older one, is held: trimming removes the oldest entries first, so then
//! nothing after it is gone. Once every entry up to it is gone (trimmed,
//! expired, or a cursor of another server), what followed it may be too, and
//! the part is truncated, with the retained events after the position. A
//! stream whose position is before every entry (it was empty when the client
//! read it) is truncated only if it has dropped entries since.
//!
//! A stream without a position (a group joined since, a stream the client
//! has seen nothing of) is read after the cursor's horizon, a time (see
//! [`HORIZON_SLACK`](super::HORIZON_SLACK)), the same way. Group streams are
//! read in the same call as the user's and the broadcasts on one server; on
//! a cluster each stream is one call on its master, all sent at once.
//!
//! A stream whose position is "after this event" (a live event delivered
//! without its entry, or a plain event UUID as Last-Event-ID) is read as a
//! replay after that event id is (see `replay`), and that stream's part of it
//! is taken: exact on one server, by time on a cluster.

use super::codec::StreamId;
use super::replay::Side;
use super::replay_reads::{absent, script_trim_info};
use super::streams::{READ_PAGE, RawEntry, Start, Streams, TrimInfo, parse_entries};
use crate::backend::{StreamSide, add_group_stream, stream_replay};
use crate::{
    Audience, Category, CategorySet, Error, EventId, Position, Positions, Reader, ReplayStatus, StreamReplay,
};

/// Where one stream is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadFrom {
    /// Not read: its newest entry only.
    Nothing,
    /// After this entry, the stream's own position: complete while the entry is held.
    Entry(StreamId),
    /// After this id, a time (the horizon): complete unless trimming may have reached past it.
    Horizon(StreamId),
}

impl ReadFrom {
    /// After the time of event `id` (a UUIDv7's millisecond; every entry for another kind of id).
    fn horizon_of_event(id: EventId) -> Self {
        match id.timestamp_millis() {
            Some(ms) => ReadFrom::Horizon(StreamId { ms: ms.saturating_sub(1), seq: u64::MAX }),
            None => ReadFrom::Horizon(StreamId::ZERO),
        }
    }

    /// The id the script reads after; `None` for a stream not read.
    fn start(self) -> Option<StreamId> {
        match self {
            ReadFrom::Nothing => None,
            ReadFrom::Entry(id) | ReadFrom::Horizon(id) => Some(id),
        }
    }
}

/// What the cursor script found in one stream.
struct AfterRead {
    /// What the stream says of its entries; `None` for a missing stream.
    info: Option<TrimInfo>,
    /// Whether the position's entry is held (always, for [`StreamId::ZERO`] and no position).
    held: bool,
    /// Up to [`READ_PAGE`] entries after the position.
    entries: Vec<RawEntry>,
}

impl<C: Category> Streams<C> {
    /// The events of `reader`'s streams after their positions in `from` (or
    /// its horizon), as [`EventSource::missed_since`](crate::EventSource::missed_since) says.
    #[tracing::instrument(level = "debug", name = "ssehub.replay_since", skip_all, fields(user = %reader.user, groups = reader.groups.len()))]
    pub(crate) async fn missed_since(
        &self,
        reader: &Reader,
        from: Positions,
        filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        let user = reader.user;
        let audiences = [Audience::User(user), Audience::Broadcast];
        let positions = [from.own, from.broadcast];
        // A stream without a position of its own is read after the horizon, where there is one.
        let horizon = match from.horizon {
            Some(Position::Entry { ms, seq }) => ReadFrom::Horizon(StreamId { ms, seq }),
            Some(Position::AfterEvent(id)) => ReadFrom::horizon_of_event(id),
            None => ReadFrom::Nothing,
        };
        let read_from = |position: Option<Position>| match position {
            Some(Position::Entry { ms, seq }) => ReadFrom::Entry(StreamId { ms, seq }),
            Some(Position::AfterEvent(id)) => ReadFrom::horizon_of_event(id),
            None => horizon,
        };
        // Groups at an "after this event" position are located in their own stream first.
        let group_positions = &from.groups;
        let group_reads = futures_util::future::try_join_all(reader.groups.iter().map(|group| async move {
            let audience = Audience::Group(group);
            Ok::<_, Error>(match group_positions.get(group) {
                Some(Position::AfterEvent(id)) => {
                    match self.locate(&self.layout.stream(audience), id).await? {
                        Some(entry) => (audience, ReadFrom::Entry(entry), None),
                        None => (audience, ReadFrom::horizon_of_event(id), Some(id)),
                    }
                }
                position => (audience, read_from(position), None),
            })
        }))
        .await?;
        let after_events: Vec<(usize, EventId)> = match positions {
            // A plain event id as Last-Event-ID: one replay after it gives both fixed streams' parts.
            [Some(Position::AfterEvent(a)), Some(Position::AfterEvent(b))] if a == b => vec![(2, a)],
            _ => positions
                .iter()
                .enumerate()
                .filter_map(|(i, position)| match position {
                    Some(Position::AfterEvent(id)) => Some((i, *id)),
                    _ => None,
                })
                .collect(),
        };
        // Every stream at an entry, the horizon, or none, in one cursor read (one call per master).
        let mut by_entry: Vec<(Audience, ReadFrom)> = audiences
            .iter()
            .zip(positions)
            .filter(|(_, position)| !matches!(position, Some(Position::AfterEvent(_))))
            .map(|(audience, position)| (*audience, read_from(position)))
            .collect();
        let fixed_by_entry = by_entry.len();
        by_entry.extend(group_reads.iter().map(|(audience, read, _)| (*audience, *read)));
        let by_event = after_events.iter().map(|&(i, id)| async move {
            let wanted = [i != 1, i != 0];
            let sides = self.missed_after_event(user, id, wanted).await?.into_sides(id);
            Ok::<_, Error>((i, sides))
        });
        let (mut read, by_event) = futures_util::future::try_join(
            self.read_after(&by_entry),
            futures_util::future::try_join_all(by_event),
        )
        .await?;
        let group_sides = read.split_off(fixed_by_entry);
        let mut sides: [Option<Side<C>>; 2] = [None, None];
        for ((audience, _), side) in by_entry.iter().zip(read) {
            sides[usize::from(*audience == Audience::Broadcast)] = Some(side);
        }
        for (i, [own, broadcast]) in by_event {
            match i {
                0 => sides[0] = Some(own),
                1 => sides[1] = Some(broadcast),
                _ => sides = [Some(own), Some(broadcast)],
            }
        }
        let [own, broadcast] = sides.map(|side| side.expect("every stream is read once"));
        let mut replay = stream_replay(own, broadcast, filter);
        for ((audience, _, after_id), mut side) in group_reads.into_iter().zip(group_sides) {
            if let Some(id) = after_id {
                side.events.retain(|(_, event)| event.id() != id);
            }
            let Audience::Group(group) = audience else { continue };
            add_group_stream(&mut replay, group, side, filter);
        }
        tracing::debug!(
            %user,
            own = %replay.own.status,
            broadcast = %replay.broadcast.status,
            groups = replay.groups.len(),
            events = replay.events.len(),
            "replayed missed events after a cursor"
        );
        Ok(replay)
    }

    /// Each of `streams` read from where it says, in that order.
    async fn read_after(&self, streams: &[(Audience, ReadFrom)]) -> Result<Vec<Side<C>>, Error> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = streams.iter().map(|(audience, _)| self.layout.stream(*audience)).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let positions: Vec<Option<StreamId>> = streams.iter().map(|(_, read)| read.start()).collect();
        let reads = match self.topology.script_client(&key_refs)? {
            Some(client) => self.call_read_after(&client, &key_refs, &positions).await?,
            // The streams live in different slots: one call per stream on its master, all sent at
            // once (pipelined on each master's connection: one round trip per master).
            None => futures_util::future::try_join_all(key_refs.iter().zip(&positions).map(
                |(key, position)| async {
                    let client = self.topology.command_client(key)?;
                    self.call_read_after(&client, &[key], &[*position]).await
                },
            ))
            .await?
            .into_iter()
            .flatten()
            .collect(),
        };
        futures_util::future::try_join_all(
            streams.iter().zip(reads).map(|((audience, from), read)| self.side_after(*audience, *from, read)),
        )
        .await
    }

    /// One stream's part from what the script read: the rest read up to the newest entry it saw.
    async fn side_after(
        &self,
        audience: Audience,
        from: ReadFrom,
        read: AfterRead,
    ) -> Result<Side<C>, Error> {
        let AfterRead { info, held, entries } = read;
        let newest = info.as_ref().and_then(|info| info.last).unwrap_or(StreamId::ZERO);
        if from == ReadFrom::Nothing {
            return Ok(StreamSide {
                events: Vec::new(),
                status: ReplayStatus::Complete,
                end: Some(newest.position()),
            });
        };
        let more = entries.len() as u64 == READ_PAGE;
        let last_read = entries.last().map(|entry| entry.id);
        let mut events = self.decode(audience, entries);
        if let (true, Some(last_read)) = (more, last_read) {
            events.extend(self.read_from(audience, Start::After(last_read), newest).await?);
        }
        let complete = match from {
            // The stream was empty when the client read it: something is lost only if entries were removed since.
            ReadFrom::Entry(StreamId::ZERO) => {
                info.as_ref().is_none_or(|info| info.removed_any() == Some(false))
            }
            // Held, or gone while an older entry is held (trimming removes the oldest
            // first): nothing after it was removed. A position that is a time (the
            // horizon a stream without events kept) is read the same way.
            ReadFrom::Entry(position) => {
                held || info.as_ref().is_some_and(|info| !info.may_have_removed_from(position))
            }
            // A time, not an entry: complete unless trimming may have reached past it.
            ReadFrom::Horizon(horizon) => {
                info.as_ref().is_none_or(|info| !info.may_have_removed_from(horizon))
            }
            ReadFrom::Nothing => true,
        };
        let end = events.last().map_or(newest, |(last, _)| newest.max(*last));
        let status = if complete { ReplayStatus::Complete } else { ReplayStatus::Truncated };
        let events = events.into_iter().map(|(entry, event)| (entry.position(), event)).collect();
        Ok(StreamSide { events, status, end: Some(end.position()) })
    }

    /// One cursor script call over `keys` at `positions`.
    async fn call_read_after(
        &self,
        client: &::fred::prelude::Client,
        keys: &[&str],
        positions: &[Option<StreamId>],
    ) -> Result<Vec<AfterRead>, Error> {
        let mut args = vec![READ_PAGE.to_string()];
        args.extend(positions.iter().map(|position| position.map_or_else(String::new, |p| p.to_string())));
        let reply: ::fred::prelude::Value = self
            .read_after_script
            .evalsha_with_reload(client, keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), args)
            .await
            .map_err(Error::backend)?;
        decode_reply(reply, keys.len())
            .ok_or_else(|| Error::backend("the cursor replay script's reply could not be read"))
    }
}

/// The cursor script's reply: one read per key.
fn decode_reply(reply: ::fred::prelude::Value, streams: usize) -> Option<Vec<AfterRead>> {
    use ::fred::prelude::Value;
    let Value::Array(reads) = reply else { return None };
    if reads.len() != streams {
        return None;
    }
    reads
        .into_iter()
        .map(|read| {
            let Value::Array(parts) = read else { return None };
            let [info, held, entries] = <[Value; 3]>::try_from(parts).ok()?;
            let held = !absent(&held) && held.as_u64()? == 1;
            Some(AfterRead { info: script_trim_info(info)?, held, entries: parse_entries(entries) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ::fred::prelude::Value;

    use super::*;

    #[test]
    fn a_reply_reads_back_per_stream_and_a_short_one_is_refused() {
        let info = Value::Array(vec![
            Value::from(3),
            Value::from(5),
            Value::from("1-0"),
            Value::from("9-0"),
            Value::from("9-0"),
        ]);
        let entry = Value::Array(vec![
            Value::from("9-0"),
            Value::Array(vec![Value::from("event"), Value::from("{}")]),
        ]);
        let one = Value::Array(vec![info, Value::from(1), Value::Array(vec![entry])]);
        let missing = Value::Array(vec![Value::Null, Value::from(0), Value::Array(vec![])]);
        let reads = decode_reply(Value::Array(vec![one, missing]), 2).expect("a reply of two reads");
        let info = reads[0].info.as_ref().expect("a stream");
        assert_eq!((info.last, info.removed_any()), (Some(StreamId { ms: 9, seq: 0 }), Some(true)));
        assert!(reads[0].held);
        assert_eq!(reads[0].entries.len(), 1);
        assert!(reads[1].info.is_none() && !reads[1].held);
        assert!(decode_reply(Value::Array(vec![]), 1).is_none());
    }
}
