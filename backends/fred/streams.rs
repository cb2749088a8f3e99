//! Reading the streams: a position without a scan of the history, what followed it, what was trimmed.
//!
//! Every read is a ranged `XRANGE`/`XREVRANGE` with a `COUNT`, so the work
//! depends on how many events are returned (and, for an id, on how many
//! events share its few milliseconds), never on how many are retained.
//!
//! Locating an id: a UUIDv7 carries the millisecond it was made at, and the
//! stream entry was added at about that time on the Redis clock. The entry is
//! searched forward from that millisecond, then backward, within the
//! configured clock skew. An id of another UUID version carries no time: it is
//! searched among the newest entries only, up to a configured number.
//!
//! Commands go to the [`Topology`]'s client for each key; which servers
//! those are is none of this module's business.

use std::sync::Arc;

use ::fred::prelude::{Client, StreamsInterface, Value};
use ::fred::types::scripts::Script;

use super::codec::{Decoder, StreamId, entry_event_id};
use super::keys::KeyLayout;
use super::order;
use super::stats::Counters;
use super::topology::Topology;
use crate::{Audience, Category, Error, Event, EventId};

/// Entries read per command when locating an id.
const LOCATE_PAGE: u64 = 64;
/// Entries read per command when reading what followed a position.
pub(crate) const READ_PAGE: u64 = 512;

/// One stream entry as Redis returned it, fields undecoded.
pub(crate) struct RawEntry {
    pub(crate) id: StreamId,
    fields: Vec<(Value, Value)>,
}

impl RawEntry {
    pub(crate) fn fields(&self) -> Vec<(&[u8], &[u8])> {
        self.fields.iter().filter_map(|(k, v)| Some((k.as_bytes()?, v.as_bytes()?))).collect()
    }
}

pub(crate) fn parse_entries(reply: Value) -> Vec<RawEntry> {
    let Value::Array(entries) = reply else { return Vec::new() };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else { return None };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = parts.pop()?.as_str()?.parse().ok()?;
            let flat = match fields {
                Value::Array(flat) => flat,
                Value::Null => Vec::new(),
                _ => return None,
            };
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut iter = flat.into_iter();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                pairs.push((k, v));
            }
            Some(RawEntry { id, fields: pairs })
        })
        .collect()
}

fn backend(e: ::fred::error::Error) -> Error {
    Error::backend(e)
}

/// Reads the audiences' streams, decoding their entries.
pub(crate) struct Streams<C> {
    pub(crate) topology: Arc<Topology>,
    pub(crate) layout: KeyLayout,
    pub(crate) decoder: Decoder<C>,
    pub(crate) counters: Arc<Counters>,
    /// How far the clocks of publishers and Redis may differ, in milliseconds.
    pub(crate) clock_skew_ms: u64,
    /// How many of the newest entries are searched for an id that carries no time.
    pub(crate) foreign_id_scan_limit: u64,
    /// The script that reads the server's clock and the order key.
    pub(crate) clock_script: Script,
    /// The script that does a replay's reads in one round trip (see `replay_reads`).
    pub(crate) replay_script: Script,
    /// The script that does a replay's reads after a cursor in one round trip (see `replay_since`).
    pub(crate) read_after_script: Script,
}

impl<C: Category> Streams<C> {
    /// A command client for `key` (on a cluster, of the master serving its slot).
    fn client(&self, key: &str) -> Result<Client, Error> {
        self.topology.command_client(key)
    }

    async fn xrange(
        &self,
        key: &str,
        start: String,
        end: String,
        count: u64,
    ) -> Result<Vec<RawEntry>, Error> {
        let reply: Value = self.client(key)?.xrange(key, start, end, Some(count)).await.map_err(backend)?;
        Ok(parse_entries(reply))
    }

    async fn xrevrange(
        &self,
        key: &str,
        end: String,
        start: String,
        count: u64,
    ) -> Result<Vec<RawEntry>, Error> {
        let reply: Value =
            self.client(key)?.xrevrange(key, end, start, Some(count)).await.map_err(backend)?;
        Ok(parse_entries(reply))
    }

    /// The id of the newest entry of `key`, [`StreamId::ZERO`] for an empty or missing stream.
    pub(crate) async fn last_stream_id(&self, key: &str) -> Result<StreamId, Error> {
        let newest = self.xrevrange(key, "+".into(), "-".into(), 1).await?;
        Ok(newest.first().map_or(StreamId::ZERO, |e| e.id))
    }

    /// The id of the newest entry of `audience`'s stream.
    pub(crate) async fn last_stream_id_of(&self, audience: Audience) -> Result<StreamId, Error> {
        self.last_stream_id(&self.layout.stream(audience)).await
    }

    /// Whether the entry `id` is still in `key`.
    pub(crate) async fn entry_exists(&self, key: &str, id: StreamId) -> Result<bool, Error> {
        let found = self.xrange(key, id.to_string(), id.to_string(), 1).await?;
        Ok(found.first().is_some_and(|e| e.id == id))
    }

    /// The position of event `id` in stream `key`, searched as the module docs say.
    pub(crate) async fn locate(&self, key: &str, id: EventId) -> Result<Option<StreamId>, Error> {
        let matches = |entry: &RawEntry| entry_event_id(&entry.fields()) == Some(id);
        let Some(t) = id.timestamp_millis() else {
            let mut end = "+".to_string();
            let mut seen = 0u64;
            let mut page_size = LOCATE_PAGE;
            while seen < self.foreign_id_scan_limit {
                let count = page_size.min(self.foreign_id_scan_limit - seen);
                page_size = (page_size * 2).min(READ_PAGE);
                let page = self.xrevrange(key, end, "-".into(), count).await?;
                if let Some(hit) = page.iter().find(|e| matches(e)) {
                    return Ok(Some(hit.id));
                }
                seen += page.len() as u64;
                match page.last() {
                    Some(last) if page.len() as u64 == count => end = last.id.exclusive(),
                    _ => break,
                }
            }
            return Ok(None);
        };
        let skew = self.clock_skew_ms;
        // Forward from the id's millisecond: where the entry almost always is.
        let mut start = StreamId::at_ms(t).to_string();
        let latest = StreamId { ms: t.saturating_add(skew), seq: u64::MAX }.to_string();
        let mut count = LOCATE_PAGE;
        loop {
            let page = self.xrange(key, start, latest.clone(), count).await?;
            if let Some(hit) = page.iter().find(|e| matches(e)) {
                return Ok(Some(hit.id));
            }
            match page.last() {
                Some(last) if page.len() as u64 == count => start = last.id.exclusive(),
                _ => break,
            }
            // Pages grow, so a burst of events around the id costs few round trips.
            count = (count * 2).min(READ_PAGE);
        }
        // Backward: the Redis clock may lag the publisher's.
        if t == 0 || skew == 0 {
            return Ok(None);
        }
        let mut end = StreamId::at_ms(t).exclusive();
        let earliest = StreamId::at_ms(t.saturating_sub(skew)).to_string();
        let mut count = LOCATE_PAGE;
        loop {
            let page = self.xrevrange(key, end, earliest.clone(), count).await?;
            if let Some(hit) = page.iter().find(|e| matches(e)) {
                return Ok(Some(hit.id));
            }
            match page.last() {
                Some(last) if page.len() as u64 == count => end = last.id.exclusive(),
                _ => return Ok(None),
            }
            count = (count * 2).min(READ_PAGE);
        }
    }

    /// An entry id that no entry added from now on can be at or below: a consistent cut of all streams.
    ///
    /// Two streams are read with two commands. Reading both only up to one
    /// cut taken before them means an event of one stream is never included
    /// while an earlier one of the other is left out; whatever comes after
    /// the cut was added after it, so a subscription that was live before
    /// delivers it. Entry ids begin with the server's time in milliseconds
    /// (or, past it, the last id ssehub gave out), so the cut is the end of
    /// the current millisecond, taken once the server's clock has moved on.
    pub(crate) async fn horizon(&self) -> Result<StreamId, Error> {
        if let Some(cut) = order::horizon(&self.layout) {
            return Ok(cut);
        }
        let (last_given, now) = self.clock().await?;
        let cut = StreamId { ms: now, seq: u64::MAX }.max(last_given.unwrap_or(StreamId::ZERO));
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            if self.clock().await?.1 > now {
                return Ok(cut);
            }
        }
    }

    async fn clock(&self) -> Result<(Option<StreamId>, u64), Error> {
        let keys: Vec<String> = self.layout.order_key().into_iter().collect();
        let reply: Vec<Value> = self
            .clock_script
            .evalsha_with_reload(
                &self.client(keys.first().map_or("", String::as_str))?,
                keys,
                Vec::<String>::new(),
            )
            .await
            .map_err(backend)?;
        let last_given = reply.first().and_then(Value::as_str).and_then(|s| s.parse().ok());
        let now = reply.get(1).and_then(Value::as_str).and_then(|s| s.parse().ok());
        let now = now.ok_or_else(|| Error::backend("the server's clock could not be read"))?;
        Ok((last_given, now))
    }

    /// The decoded entries of `audience`'s stream from `start` on, up to `until` (included),
    /// oldest first, each event placed at its entry; bad entries skipped and counted.
    pub(crate) async fn read_from(
        &self,
        audience: Audience,
        start: Start,
        until: StreamId,
    ) -> Result<Vec<(StreamId, Event<C>)>, Error> {
        let key = self.layout.stream(audience);
        let end = until.to_string();
        let mut out = Vec::new();
        let mut next = match start {
            Start::After(id) => id.exclusive(),
            Start::At(id) => id.to_string(),
            Start::Oldest => "-".to_string(),
        };
        loop {
            let page = self.xrange(&key, next, end.clone(), READ_PAGE).await?;
            let full = page.len() as u64 == READ_PAGE;
            let last = page.last().map(|e| e.id);
            out.extend(self.decode(audience, page));
            match last {
                Some(last) if full => next = last.exclusive(),
                _ => return Ok(out),
            }
        }
    }

    /// The events of `audience`'s stream `entries`, each placed at its entry; bad entries skipped and counted.
    pub(crate) fn decode(
        &self,
        audience: Audience,
        entries: impl IntoIterator<Item = RawEntry>,
    ) -> Vec<(StreamId, Event<C>)> {
        let mut out = Vec::new();
        for entry in entries {
            match self.decoder.entry(audience, &entry.fields()) {
                // Every event read from a stream carries its place in it.
                Ok(event) => out.push((entry.id, event.with_position(entry.id.position()))),
                Err(reason) => self.counters.skipped(&self.layout.stream(audience), &reason),
            }
        }
        out
    }

    /// What `XINFO STREAM` says about removed entries, `None` for a missing stream.
    pub(crate) async fn trim_info(&self, key: &str) -> Result<Option<TrimInfo>, Error> {
        let reply: Value = match self.client(key)?.xinfo_stream(key, false, None).await {
            Ok(v) => v,
            Err(e) if e.details().contains("no such key") => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let pairs: Vec<(Value, Value)> = match reply {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            Value::Map(map) => map
                .inner()
                .into_iter()
                .map(|(k, v)| (k.as_str().map_or(Value::Null, Value::from), v))
                .collect(),
            _ => Vec::new(),
        };
        let mut info = TrimInfo::default();
        for (k, v) in pairs {
            match k.as_str().as_deref() {
                Some("length") => info.length = v.as_u64(),
                Some("entries-added") => info.entries_added = v.as_u64(),
                Some("last-generated-id") => info.last_generated = v.as_str().and_then(|s| s.parse().ok()),
                Some("first-entry") => {
                    info.first = parse_entries(Value::Array(vec![v])).first().map(|e| e.id);
                }
                Some("last-entry") => {
                    info.last = parse_entries(Value::Array(vec![v])).first().map(|e| e.id);
                }
                _ => {}
            }
        }
        Ok(Some(info))
    }
}

/// Where to start reading a stream.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    /// The entries after this one.
    After(StreamId),
    /// The entries from this id on.
    At(StreamId),
    /// Every entry.
    Oldest,
}

impl Start {
    /// Whether the entry `id` is read from here.
    pub(crate) fn admits(self, id: StreamId) -> bool {
        match self {
            Start::After(after) => id > after,
            Start::At(from) => id >= from,
            Start::Oldest => true,
        }
    }

    /// Whether reading from here reads every entry reading from `other` would.
    pub(crate) fn covers(self, other: Start) -> bool {
        match (self, other) {
            (Start::Oldest, _) => true,
            (_, Start::Oldest) => false,
            (Start::At(a) | Start::After(a), Start::After(b)) | (Start::At(a), Start::At(b)) => a <= b,
            (Start::After(a), Start::At(b)) => a < b,
        }
    }
}

/// What a stream records of the entries it no longer holds.
#[derive(Default, Debug)]
pub(crate) struct TrimInfo {
    /// Entries held now.
    pub(crate) length: Option<u64>,
    /// Entries ever added (Redis 7 and later).
    pub(crate) entries_added: Option<u64>,
    /// The oldest entry held.
    pub(crate) first: Option<StreamId>,
    /// The newest entry held.
    pub(crate) last: Option<StreamId>,
    /// The newest id ever given out.
    pub(crate) last_generated: Option<StreamId>,
}

impl TrimInfo {
    /// Whether entries were ever removed (trimmed or deleted); `None` before Redis 7, which does not say.
    pub(crate) fn removed_any(&self) -> Option<bool> {
        Some(self.entries_added? > self.length?)
    }

    /// Whether entries at or after `from` may have been removed.
    ///
    /// Trimming removes the oldest entries, so removed entries all precede
    /// the oldest one held (or, in an emptied stream, the last id given out).
    pub(crate) fn may_have_removed_from(&self, from: StreamId) -> bool {
        if self.removed_any() == Some(false) {
            return false;
        }
        match self.first {
            Some(first) => first > from,
            None => self.last_generated.is_none_or(|last| last >= from),
        }
    }
}
