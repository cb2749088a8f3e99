//! A replay's reads in one round trip: the replay script (`replay.lua`) locates the id, reads what followed it and says what each stream dropped.
//!
//! On one server both streams go into one script call: one atomic step, so
//! what it reads is a consistent cut of both. On a cluster the user's stream
//! and the broadcast stream live on different masters (different hash tags)
//! and one script cannot touch both: each gets its own call, both sent at
//! once, so the wall time is still one round trip. Each call then knows only
//! its own stream, so a stream that does not hold the id is read from the
//! id's millisecond, where the other stream's copy of it almost always is;
//! `replay` reads it again from the right place where that guess fell short.
//!
//! The script's work is bounded whatever the streams retain: it scans at
//! most [`LOCATE_BUDGET`] entries per stream to find the id (past that it
//! answers undecided, and the caller locates step by step) and reads at most
//! [`READ_PAGE`] entries per stream.

use ::fred::prelude::Value;

use super::codec::StreamId;
use super::streams::{READ_PAGE, RawEntry, Start, Streams, TrimInfo, parse_entries};
use crate::{Category, Error, EventId};

/// Entries the script scans per stream when locating an id; it answers undecided past them.
///
/// Above the default [`foreign_id_scan_limit`](super::RedisHubBuilder::foreign_id_scan_limit),
/// so a foreign id is settled in the script too.
const LOCATE_BUDGET: u64 = 1024;

/// What the script found in one stream.
pub(crate) struct StreamRead {
    /// The entry holding the id, if this stream was searched and holds it.
    pub(crate) position: Option<StreamId>,
    /// Where the entries were read from; `None`: not read.
    pub(crate) start: Option<Start>,
    /// What the stream records of removed entries; `None` for a missing stream.
    pub(crate) info: Option<TrimInfo>,
    /// Up to [`READ_PAGE`] entries from `start` on, as the stream held them.
    pub(crate) entries: Vec<RawEntry>,
}

impl StreamRead {
    /// An entry id no entry added after the read can be at or below: the cut to read the rest up to.
    pub(crate) fn cut(&self) -> Option<StreamId> {
        let info = self.info.as_ref()?;
        Some(info.last_generated.unwrap_or(StreamId { ms: u64::MAX, seq: u64::MAX }))
    }

    /// Whether the entries may go on beyond those read.
    pub(crate) fn more(&self) -> bool {
        self.entries.len() as u64 == READ_PAGE
    }
}

impl<C: Category> Streams<C> {
    /// The script's reads of the user's and the broadcast stream (`keys`, in that order) around
    /// `id`; `None` when it could not locate the id within its budget.
    pub(crate) async fn read_around(
        &self,
        keys: [&str; 2],
        id: EventId,
    ) -> Result<Option<[StreamRead; 2]>, Error> {
        if let Some(client) = self.topology.script_client(&keys)? {
            let reads = self.call_replay_script(&client, &keys, id, true).await?;
            return Ok(reads.and_then(|r| <[StreamRead; 2]>::try_from(r).ok()));
        }
        let (user, broadcast) = futures_util::future::try_join(
            async {
                self.call_replay_script(&self.topology.command_client(keys[0])?, &keys[..1], id, false).await
            },
            async {
                self.call_replay_script(&self.topology.command_client(keys[1])?, &keys[1..], id, false).await
            },
        )
        .await?;
        Ok(match (user.and_then(|mut r| r.pop()), broadcast.and_then(|mut r| r.pop())) {
            (Some(user), Some(broadcast)) => Some([user, broadcast]),
            _ => None,
        })
    }

    /// One script call over `keys`. `together`: these are all the streams of the replay, so where
    /// none holds the id and it carries no time, every retained entry is what is wanted.
    async fn call_replay_script(
        &self,
        client: &::fred::prelude::Client,
        keys: &[&str],
        id: EventId,
        together: bool,
    ) -> Result<Option<Vec<StreamRead>>, Error> {
        let skew = self.clock_skew_ms;
        let mut args: Vec<String> = vec![id.to_string().to_ascii_lowercase()];
        match id.timestamp_millis() {
            Some(t) => {
                args.push("time".into());
                args.push(StreamId::at_ms(t).to_string());
                args.push(StreamId { ms: t.saturating_add(skew), seq: u64::MAX }.to_string());
                if t == 0 || skew == 0 {
                    args.extend([String::new(), String::new()]);
                } else {
                    args.push(StreamId::at_ms(t).exclusive());
                    args.push(StreamId::at_ms(t.saturating_sub(skew)).to_string());
                }
                args.push(StreamId::at_ms(t).to_string());
            }
            None => {
                args.push("newest".into());
                args.push(self.foreign_id_scan_limit.to_string());
                args.extend([String::new(), String::new(), String::new()]);
                args.push(if together { "-".into() } else { String::new() });
            }
        }
        args.push(LOCATE_BUDGET.to_string());
        args.push(READ_PAGE.to_string());
        let reply: Value = self
            .replay_script
            .evalsha_with_reload(client, keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), args)
            .await
            .map_err(Error::backend)?;
        decode_reply(reply, keys.len())
    }
}

/// The script's reply: `None` for undecided, else one read per key.
fn decode_reply(reply: Value, streams: usize) -> Result<Option<Vec<StreamRead>>, Error> {
    let malformed = || Error::backend("the replay script's reply could not be read");
    let Value::Array(mut parts) = reply else { return Err(malformed()) };
    if parts.is_empty() {
        return Err(malformed());
    }
    let reads: Vec<Value> = parts.split_off(1);
    match parts[0].as_str().as_deref() {
        Some("undecided") => return Ok(None),
        Some("ok") if reads.len() == streams => {}
        _ => return Err(malformed()),
    }
    reads.into_iter().map(|read| stream_read(read).ok_or_else(malformed)).collect::<Result<_, _>>().map(Some)
}

fn stream_read(read: Value) -> Option<StreamRead> {
    let Value::Array(parts) = read else { return None };
    let [position, start, info, entries] = <[Value; 4]>::try_from(parts).ok()?;
    let id = |v: &Value| v.as_str().and_then(|s| s.parse::<StreamId>().ok());
    let position = if absent(&position) { None } else { Some(id(&position)?) };
    let start = if absent(&start) { None } else { Some(parse_start(&start.as_str()?)?) };
    let info = script_trim_info(info)?;
    Some(StreamRead { position, start, info, entries: parse_entries(entries) })
}

/// What `trim_info.lua` says of a stream: `Some(None)` for a missing stream, `None` for a reply that
/// cannot be read.
pub(crate) fn script_trim_info(info: Value) -> Option<Option<TrimInfo>> {
    let id = |v: &Value| v.as_str().and_then(|s| s.parse::<StreamId>().ok());
    match info {
        ref v if absent(v) => Some(None),
        Value::Array(fields) => {
            let [length, entries_added, first, last_generated, last] = <[Value; 5]>::try_from(fields).ok()?;
            Some(Some(TrimInfo {
                length: if absent(&length) { None } else { length.as_u64() },
                entries_added: if absent(&entries_added) { None } else { entries_added.as_u64() },
                first: id(&first),
                last_generated: id(&last_generated),
                last: id(&last),
            }))
        }
        _ => None,
    }
}

/// Whether a script's reply is Lua's false: a null (RESP2) or false (RESP3).
pub(crate) fn absent(value: &Value) -> bool {
    matches!(value, Value::Null | Value::Boolean(false))
}

/// A start as the script gives it back: `(id` after an entry, `id` from it, `-` from the oldest.
fn parse_start(text: &str) -> Option<Start> {
    if text == "-" {
        return Some(Start::Oldest);
    }
    match text.strip_prefix('(') {
        Some(after) => Some(Start::After(after.parse().ok()?)),
        None => Some(Start::At(text.parse().ok()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_read_back_as_the_script_writes_them() {
        let id = StreamId { ms: 17, seq: 3 };
        assert!(matches!(parse_start("-"), Some(Start::Oldest)));
        assert!(matches!(parse_start("(17-3"), Some(Start::After(a)) if a == id));
        assert!(matches!(parse_start("17-3"), Some(Start::At(a)) if a == id));
        assert!(parse_start("(x").is_none());
    }

    #[test]
    fn an_undecided_reply_is_none_and_a_short_one_an_error() {
        let undecided = Value::Array(vec![Value::from("undecided")]);
        assert!(decode_reply(undecided, 2).unwrap().is_none());
        let short = Value::Array(vec![Value::from("ok"), Value::Array(vec![])]);
        assert!(decode_reply(short, 2).is_err());
    }
}
