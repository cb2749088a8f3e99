//! The Redis backend on `fred`: pub/sub for live delivery, Streams for replay and recovery, any executor.
//!
//! [`RedisHub`] is an [`EventSource`] and a [`Publisher`]. It holds one
//! subscriber connection for the whole process, however many subscriptions
//! are open, plus a command pool of at most two connections. A dispatcher
//! task decodes each message once and fans it out to the local subscribers'
//! bounded queues.
//!
//! # Runtimes
//!
//! fred is a tokio library. The hub runs it on the caller's tokio runtime if
//! there is one when it connects (or on the one given to
//! [`RedisHubBuilder::runtime`]), else on a small runtime of its own on
//! background threads. What it hands out (subscription streams, the futures
//! of its methods) works from any executor: smol, async-std,
//! `futures::executor`, tokio. The Redis client is re-exported as
//! [`client`], so its configuration types can be used without a version clash.
//!
//! # Redis layout
//!
//! Names are set by a [`KeyLayout`]; the default is the one of the existing
//! JSON-envelope publishers: channels `sse:user:{id}` and `sse:broadcast`,
//! streams `sse:stream:user:{id}` and `sse:stream:broadcast`. Messages are JSON
//! envelopes `{"event_id","event_type","user_id","category","data","occurred_at"}`
//! with `data` embedded as JSON; envelopes without `category` get one from
//! the event type ([`RedisHubBuilder::category_of_event_type`]). Stream
//! entries hold the envelope in one `event` field; entries written one field
//! per envelope key are read too (another publisher's `XADD *` numbers each
//! stream on its own, so its events of different audiences are ordered to
//! the millisecond only). Event data is JSON text (every
//! [`Event`](crate::Event) is checked for it when made); it is embedded as
//! is, without surrounding whitespace.
//!
//! [`KeyLayout::cluster`] names keys for Redis Cluster: each audience's
//! channel and stream share one hash tag, so the publish script touches one
//! slot, and live events use sharded pub/sub: see [Redis Cluster](#redis-cluster).
//! The layout runs on a single server as well.
//!
//! With [`Retention`] on (the default), a publish is one Lua script: `XADD`
//! with trimming by count and age, an expiry that slides with the publishes,
//! and `PUBLISH`, atomically. In the standalone layout with approximate
//! trimming (the default) a hub trims each stream by age and renews its
//! expiry at most once a second: an event may outlive `max_age` by that
//! second (approximate trimming drops whole stream nodes, so some outlive it
//! by more), and a stream's expiry is `max_age` plus that second, so it lives
//! at least `max_age` after its last event. With exact trimming, and in the
//! cluster layout, every publish trims by age and renews the expiry. In the standalone layout the script draws the
//! entry ids of every stream from one sequence (the layout's
//! [`order_key`](KeyLayout::order_key)), so entry ids order a user's events
//! and the broadcasts exactly as they were published, and the channel message
//! carries its entry id (`stream_id`), so the dispatcher knows each live
//! event's position. Publishes that overlap in time share one script call
//! (per master, on a cluster; a lone publish is a batch of one): Redis spends
//! more on a script call than on the commands in it, so batching multiplies
//! the events per second one Redis core can store. Without retention, a
//! publish is one `PUBLISH` and nothing can be replayed.
//!
//! Publishing with retention is idempotent by event id. Each event the script
//! stores leaves a marker holding its entry id ([`KeyLayout::publish_marker`]:
//! in the standalone layout a field of one hash per second of event ids, so a
//! batch reads and writes its markers with one command each), and an event
//! whose marker exists was stored by an earlier call: the script returns that
//! entry id and adds and publishes nothing. So a call whose reply was lost with
//! its connection, which fred sends again after reconnecting, stores and
//! delivers its events once, and a caller may publish an event again after any
//! error. This holds for
//! [`RedisHubBuilder::publish_dedupe_window`] (default 60 s) after the event
//! was stored, and costs Redis about 115 bytes per event held (200 where the
//! marker is a key of its own).
//!
//! # Replay
//!
//! The SSE id is a per-stream [`Cursor`](crate::Cursor): a position in the
//! user's stream and one in the broadcast stream, each a stream entry id.
//! Every event the hub delivers live or replays carries its position
//! ([`Event::position`](crate::Event::position)): its entry, taken from the
//! channel message (which the publish script gives the entry id, as
//! `stream_id`) or from the stream it was read from. A message another writer
//! published names no entry; its event is "after this event"
//! ([`Position::AfterEvent`](crate::Position::AfterEvent)) and is found by its
//! id when a client resumes from it.
//!
//! [`missed_since`](crate::EventSource::missed_since) reads each stream after
//! its own position, on its own: one script call reads the entries after the
//! position, whether the position's entry is still held, and the stream's
//! newest entry (how far the replay read it). On one server both streams go
//! into one call; on a cluster, where they live on different masters, each
//! master gets its own call, both sent at once: one round trip either way,
//! more only for a stream with more than a page (512) of events to replay. No
//! read depends on how much history is retained. A stream's part is complete
//! while the entry at its position is held (trimming removes the oldest
//! entries first); once it is gone (trimmed, expired, or a cursor from
//! another server) the part is truncated, with the retained events after the
//! position. Exactly-once delivery therefore holds by construction, stream by
//! stream, whatever order the streams' events arrived in.
//!
//! A plain event UUID as Last-Event-ID (a client from before cursors, or one
//! of the JSON-envelope publishers' clients) still resumes through the merge
//! by id: [`missed_events`](crate::EventSource::missed_events), and a position
//! "after this event", find the id in the user's stream or the broadcast
//! stream, then read both after it, merged in entry id order. On one server
//! the entry ids of both streams are one sequence, so this is exact; on a
//! cluster they come from a hybrid clock, so the stream that does not hold the
//! id is read from the id's entry id on: best effort. No command reads a
//! stream from its start: an event id is a UUIDv7, so its millisecond says
//! where to look (within [`RedisHubBuilder::clock_skew`] of it), and the work
//! depends on the events returned and the events published around that
//! millisecond, never on how many are retained. An id of another UUID version
//! carries no time; it is looked for among the newest
//! [`foreign_id_scan_limit`](RedisHubBuilder::foreign_id_scan_limit) entries
//! of each stream only, and reads as unknown beyond them. An id no longer
//! held where entries were trimmed reads as truncated (with the retained
//! events from its time on); otherwise as unknown (with every retained event).
//!
//! That locating and reading is one Lua script too, one round trip (on a
//! cluster one call per stream, both sent at once). Its work is bounded: it
//! scans at most 1,024 entries to find the id (past that, the hub locates it
//! step by step) and reads at most 512 entries per stream; a longer replay
//! reads the rest page by page, up to the cut the script took.
//!
//! # Outages
//!
//! The client reconnects forever with exponential backoff, and every command
//! has a timeout. After a reconnect the hub resubscribes every channel it
//! holds, waits for a round trip on the subscriber connection so they are
//! live, then delivers from the streams what was published meanwhile, after
//! the last event each channel delivered, in order and without duplicates,
//! before any newer live event. An overflow of the client's internal message
//! channel is recovered the same way. Where that is impossible, each affected
//! subscriber gets [`Error::Gap`] and then live events again: with retention
//! off; when the last delivered entry is no longer in its stream (trimmed,
//! expired, or lost because the server restarted without its data); or when a
//! channel's position is unknown.
//!
//! The same holds when Redis itself drops the subscriber connection because
//! its output buffer passed `client-output-buffer-limit pubsub`. At
//! `maxmemory` (with `noeviction`) a publish fails with Redis's `OOM` error
//! and stores and announces nothing, while live delivery goes on. While Redis
//! is paused (`CLIENT PAUSE`, a stopped process) calls fail after the command
//! timeout; one that timed out may still run when Redis resumes, after later
//! ones: publishing the same event again until it succeeds keeps the order,
//! as the retry finds it stored.
//!
//! # Redis Cluster
//!
//! With [`KeyLayout::cluster`] and a cluster URL
//! (`redis-cluster://host:port?node=host:port&...`):
//!
//! - **Connections grow with the masters, not the users.** The hub reads the
//!   slot map and keeps clients of its own for each master: one subscriber
//!   connection and a command pool of at most two connections. Each user
//!   channel is `SSUBSCRIBE`d on the master that owns its slot; a publish is
//!   a script on the master of the audience's slot (`XADD`, trimming,
//!   expiry, `SPUBLISH`), and no message goes to the other shards. Publishes
//!   that overlap in time share one script call per master, as on one server.
//!   `subscribe` returns once the master has confirmed the `SSUBSCRIBE`.
//!   (fred's own cluster client stops sending commands to every master while
//!   it reconnects to one; per-master clients keep an outage to its shard.)
//! - **Order.** Each audience's events (a user's own, the broadcasts) are
//!   delivered and replayed in publish order: one stream, one master. A
//!   user's events and the broadcasts live on two masters, and are not
//!   ordered against each other: live, each master's messages are delivered
//!   as they arrive, so a slow or paused master delays its own streams only,
//!   never another master's. A client's cursor holds a position per stream,
//!   so a resume is exact whatever order the streams came in. Entry ids come
//!   from a hybrid clock (there is no key every stream's publish could share
//!   for one sequence): the master's time kept above the highest entry id the
//!   publishing hub has given out or received. Events published one after
//!   another through one hub, or by hubs whose masters' clocks agree to
//!   within the time between the two publishes, get ids in publish order, and
//!   a replay merges the two streams by them; a plain event UUID as
//!   Last-Event-ID resumes through that merge, best effort across the two
//!   masters.
//! - **Failover.** When a master is lost, its shard's subscribers wait for a
//!   replica to take over (the cluster's node timeout plus the client's
//!   reconnect backoff: about 7 s with a 2 s node timeout), while the other
//!   shards go on undisturbed. Then the shard's channels are subscribed on the
//!   new master and what was published meanwhile is delivered from the
//!   streams. Redis replicates asynchronously, so a master can die with
//!   acknowledged writes its replica never got. Unless publishes wait for a
//!   replica ([`RedisHubBuilder::replica_acks`]), every subscriber of a shard
//!   whose master was replaced gets [`Error::Gap`], then what the new master
//!   holds. With replica acknowledgements the new master holds every event
//!   whose publish succeeded, and no gap is signalled unless a write whose
//!   publish failed is lost: the old master may have stored it and published
//!   it live before the failover, so the hub's feed of that stream moved past
//!   it. Every reader of that stream on the hub then gets the gap, including
//!   readers whose categories filtered that event out: after a lost entry the
//!   new master's entries cannot all be told apart from those already
//!   delivered. Publishes to the lost master fail meanwhile (after the command
//!   timeout) and are not retried by the client; publishing again stores
//!   nothing twice.
//!   Set `cluster-require-full-coverage no` on the servers: with the default,
//!   every master refuses commands from the moment the lost one is marked
//!   failed until its replica has taken over (about a second); the hub retries
//!   such commands for a few seconds, so publishes elsewhere are only delayed.
//! - **Resharding.** Redis ends the shard-channel subscriptions of a slot
//!   that moves to another master. The hub reads the slot map every
//!   [`topology_check_interval`](RedisHubBuilder::topology_check_interval)
//!   (default 1 s) and subscribes the channels of moved slots on their new
//!   master; events published meanwhile come from the streams, which moved
//!   with the slot: late by up to that interval, but without a gap. `MOVED`
//!   and `ASK` redirections of commands are followed by the client.
//!
//! # Examples
//!
//! ```no_run
//! use futures::StreamExt;
//! use ssehub::fixture::ExampleCategory;
//! use ssehub::fred::RedisHub;
//! use ssehub::{Audience, CategorySet, Event, EventSource, Publisher, UserId};
//!
//! futures::executor::block_on(async {
//!     let hub = RedisHub::<ExampleCategory>::connect("redis://127.0.0.1:6380").await?;
//!     let user: UserId = "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11".parse().unwrap();
//!     let mut events = hub.subscribe(user, CategorySet::all()).await?;
//!     let event = Event::new(Audience::User(user), "ai.done", ExampleCategory::Ai, r#"{"ok":true}"#).unwrap();
//!     hub.publish(event.clone()).await?;
//!     assert_eq!(events.next().await.unwrap()?, event);
//!     Ok::<_, ssehub::Error>(())
//! })
//! .unwrap();
//! ```
//!
//! [`EventSource`]: crate::EventSource
//! [`Publisher`]: crate::Publisher
//! [`Error::Gap`]: crate::Error::Gap

// The layers, each importing only those below it:
//   hub, builder                      the public handle and its construction
//   dispatcher                        the run loop: decode once, fan out, recover
//   recovery, fanout, sequencer       recovery policy; local subscribers; channel changes in order
//   replay_since, replay              reading what was missed after a cursor, after an event id
//   publish, batch, age_trims,        publishing one event or a batch; trimming streams by age;
//   presence                          this hub's presence counts, written in batches, and the fleet's read back
//   replay_reads                      a replay's reads after an event id in one script call per server
//   shared, subscription              what the tasks share; a subscriber's queue and requests
//   streams                           reading the streams
//   topology                          the seam: one server or a cluster, chosen at connect
//   cluster, owners, shards,          a cluster's masters, slot owners and slot map;
//   pubsub, redirects                 channel changes and redirected commands for either topology
//   codec, keys, order, slots, scripts, connection, stats, bridge
//                                     envelopes, names, entry id order, hash slots, Lua, client settings,
//                                     counters, the tokio bridge
//   fuzz_api                          the decoders, for the fuzz targets (hidden from the docs)
mod age_trims;
mod batch;
mod bridge;
mod builder;
mod cluster;
mod codec;
mod connection;
mod dispatcher;
mod fanout;
mod hub;
mod keys;
mod order;
mod owners;
mod presence;
mod publish;
mod pubsub;
mod recovery;
mod redirects;
mod replay;
mod replay_reads;
mod replay_since;
mod scripts;
mod sequencer;
mod shards;
mod shared;
mod slots;
mod stats;
mod streams;
mod subscription;
mod topology;

/// The Redis decoders for ssehub's fuzz targets and their seed tests: not part of the API.
#[doc(hidden)]
#[path = "fuzz_api.rs"]
pub mod __fuzz;

/// The `fred` Redis client, re-exported so its configuration types match the version ssehub uses.
pub use ::fred as client;

pub use crate::Retention;
pub use builder::RedisHubBuilder;
pub use hub::{HORIZON_SLACK, RedisHub};
pub use keys::{InvalidPrefix, KeyLayout, MAX_PREFIX_BYTES, PubSubKind, PublishMarker};
pub use stats::HubStats;
pub use subscription::Subscription;
