//! Replay after a cursor: each of a user's streams read after its own position, through the shared `stream_replay` step.
//!
//! A stream at an entry position is read after that entry by the cursor
//! script (`read_after.lua`): on one server one call for both streams (one
//! atomic step), on a cluster one call per stream on its own master, both
//! sent at once. Either way one round trip, more only where a stream has
//! more than a page of events to replay; no read depends on how much history
//! is retained. Each stream's part is complete while its position's entry is
//! held: trimming removes the oldest entries first, so then nothing after it
//! is gone. Once that entry is gone (trimmed, expired, or a cursor of another
//! server), what followed it may be too, and the part is truncated, with the
//! retained events after the position. A stream whose position is before
//! every entry (it was empty when the client read it) is truncated only if it
//! has dropped entries since.
//!
//! A stream whose position is "after this event" (a live event delivered
//! without its entry, or a plain event UUID as Last-Event-ID) is read as a
//! replay after that event id is (see `replay`), and that stream's part of it
//! is taken: exact on one server, by time on a cluster.

use super::codec::StreamId;
use super::replay::Side;
use super::replay_reads::{absent, script_trim_info};
use super::streams::{READ_PAGE, RawEntry, Start, Streams, TrimInfo, parse_entries};
use crate::backend::{StreamSide, stream_replay};
use crate::{
    Audience, Category, CategorySet, Error, Position, Positions, ReplayStatus, StreamReplay, UserId,
};

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
    /// The events of `user`'s streams after their positions in `from`, as
    /// [`EventSource::missed_since`](crate::EventSource::missed_since) says.
    #[tracing::instrument(level = "debug", name = "ssehub.replay_since", skip_all, fields(%user))]
    pub(crate) async fn missed_since(
        &self,
        user: UserId,
        from: Positions,
        filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        let audiences = [Audience::User(user), Audience::Broadcast];
        let positions = [from.own, from.broadcast];
        let [own, broadcast] = match positions {
            // A plain event id as Last-Event-ID: one replay after it gives both streams' parts.
            [Some(Position::AfterEvent(a)), Some(Position::AfterEvent(b))] if a == b => {
                self.missed_after_event(user, a, [true, true]).await?.into_sides(a)
            }
            _ => {
                // Entry positions (and none) in one cursor read; each "after this event" position on its own.
                let at_entries: Vec<(Audience, Option<StreamId>)> = audiences
                    .iter()
                    .zip(positions)
                    .filter_map(|(audience, position)| match position {
                        Some(Position::AfterEvent(_)) => None,
                        position => Some((*audience, position.and_then(StreamId::of_position))),
                    })
                    .collect();
                let after_events = positions.iter().enumerate().filter_map(|(i, position)| match position {
                    Some(Position::AfterEvent(id)) => Some(async move {
                        let wanted = [i == 0, i == 1];
                        let [own, broadcast] =
                            self.missed_after_event(user, *id, wanted).await?.into_sides(*id);
                        Ok::<_, Error>((i, if i == 0 { own } else { broadcast }))
                    }),
                    _ => None,
                });
                let (by_entry, by_event) = futures_util::future::try_join(
                    self.read_after(&at_entries),
                    futures_util::future::try_join_all(after_events),
                )
                .await?;
                let mut sides: [Option<Side<C>>; 2] = [None, None];
                for ((audience, _), side) in at_entries.iter().zip(by_entry) {
                    sides[usize::from(*audience == Audience::Broadcast)] = Some(side);
                }
                for (i, side) in by_event {
                    sides[i] = Some(side);
                }
                sides.map(|side| side.expect("every stream is read once"))
            }
        };
        let replay = stream_replay(own, broadcast, filter);
        tracing::debug!(
            %user,
            own = %replay.own.status,
            broadcast = %replay.broadcast.status,
            events = replay.events.len(),
            "replayed missed events after a cursor"
        );
        Ok(replay)
    }

    /// Each of `streams` read after its position (`None`: not read, its end only), in that order.
    async fn read_after(&self, streams: &[(Audience, Option<StreamId>)]) -> Result<Vec<Side<C>>, Error> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = streams.iter().map(|(audience, _)| self.layout.stream(*audience)).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let positions: Vec<Option<StreamId>> = streams.iter().map(|(_, position)| *position).collect();
        let reads = match self.topology.script_client(&key_refs)? {
            Some(client) => self.call_read_after(&client, &key_refs, &positions).await?,
            // The streams live on different masters: one call each, all sent at once.
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
            streams
                .iter()
                .zip(reads)
                .map(|((audience, position), read)| self.side_after(*audience, *position, read)),
        )
        .await
    }

    /// One stream's part from what the script read: the rest read up to the newest entry it saw.
    async fn side_after(
        &self,
        audience: Audience,
        position: Option<StreamId>,
        read: AfterRead,
    ) -> Result<Side<C>, Error> {
        let AfterRead { info, held, entries } = read;
        let newest = info.as_ref().and_then(|info| info.last).unwrap_or(StreamId::ZERO);
        let Some(position) = position else {
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
        let complete = if position == StreamId::ZERO {
            // The stream was empty when the client read it: something is lost only if entries were removed since.
            info.as_ref().is_none_or(|info| info.removed_any() == Some(false))
        } else {
            held
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
