//! Publish batching: publishes that wait together go to Redis as one script call (per master, on a cluster).
//!
//! Each publish with retention is a Lua script (`XADD`, trimming, expiry,
//! `PUBLISH`). Redis spends most of such a call on the call itself, not on
//! the commands in it, so one call per event caps a hub at what one Redis
//! core can run. Here publishes queue for one task, which sends whatever has
//! queued as one call of `publish_batch.lua`, with two calls in flight at
//! once (what has queued is shared out between them). A lone publish still
//! goes at once, in a batch of one; under load the batches grow and the cost
//! per event falls.
//!
//! Order is kept where it is promised: a publish completes only after its
//! batch has run, so events published one after another are in separate
//! batches, in order. Events whose publishes overlapped may be stored in
//! either order, as they could be before.
//!
//! With the cluster layout, what has queued is split by the master serving
//! each event's stream, and each master's share is one call of
//! `publish_cluster_batch.lua`, which runs `publish.lua`'s steps for each
//! event in turn (ids from the hybrid clock, each above the one before). A
//! publish completes once its call ran, the clock has seen its id and
//! replicas acknowledged it (if asked), as a single publish does. An event
//! whose slot its master no longer serves (a failover or a resharding in
//! between) was not stored, and is published on its own, following the
//! redirection.

use std::sync::Arc;

use ::fred::types::scripts::Script;
use tokio::runtime::Handle;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{Semaphore, oneshot};

use ::fred::clients::Client;
use ::fred::interfaces::{ClientLike, LuaInterface};
use ::fred::types::config::{Options, Server};

use super::age_trims::AgeTrims;
use super::codec;
use super::connection::is_redirect;
use super::keys::PublishMarker;
use super::publish::{publish_sharded_parts, wait_for_replicas};
use super::shared::Shared;
use crate::Retention;
use crate::{Audience, Category, Error, Event, EventId};

/// The most events in one script call.
const MAX_BATCH_EVENTS: usize = 128;

/// The most envelope bytes in one script call (a batch takes at least one event, however large).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Script calls in flight at once (standalone layout). Two keep Redis busy: one runs while the
/// next fills. More only split the same publishes into smaller batches, each paying the call's own
/// cost again (measured: 2 gave 1.12x the events/s of 4 in `bench fanout --backend fred`).
const BATCHES_IN_FLIGHT: usize = 2;

/// Script calls in flight at once on a cluster, over all masters.
const CLUSTER_BATCHES_IN_FLIGHT: usize = 4;

/// One publish waiting for its batch.
pub(crate) struct PendingPublish {
    /// The event's id: a retried publish of it stores nothing twice.
    event_id: EventId,
    /// Whose event it is: with the cluster layout, its publish markers live in its audience's slot.
    audience: Audience,
    stream: String,
    channel: String,
    /// The JSON envelope without its closing brace.
    envelope: String,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The publishers' end of the batching task's queue.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: UnboundedSender<PendingPublish>,
}

impl Batcher {
    /// Starts the batching task on `runtime`, for a standalone layout whose order key is `order_key`.
    pub(crate) fn start<C: Category>(
        runtime: &Handle,
        shared: Arc<Shared<C>>,
        retention: Retention,
        order_key: String,
    ) -> Self {
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        let age_trims = AgeTrims::new(retention);
        runtime.spawn(run(shared, Settings { retention, order_key, age_trims }, pending));
        Self { queue }
    }

    /// Starts the batching task on `runtime` for the cluster layout: one script call per master and batch.
    pub(crate) fn start_cluster<C: Category>(
        runtime: &Handle,
        shared: Arc<Shared<C>>,
        retention: Retention,
    ) -> Self {
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(run_cluster(shared, retention, pending));
        Self { queue }
    }

    /// Queues `event` for the next batch; the receiver tells how its batch went.
    ///
    /// Needs no runtime: callable from any executor or thread.
    pub(crate) fn submit<C: Category>(
        &self,
        shared: &Shared<C>,
        event: &Event<C>,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let audience = event.audience();
        let envelope = codec::envelope_prefix(event);
        let (done, outcome) = oneshot::channel();
        let pending = PendingPublish {
            event_id: event.id(),
            audience,
            stream: shared.layout.stream(audience),
            channel: shared.layout.channel(audience),
            envelope,
            done,
        };
        self.queue.send(pending).map_err(|_| Error::Closed)?;
        Ok(outcome)
    }
}

/// What every batch of a hub shares.
struct Settings {
    retention: Retention,
    order_key: String,
    age_trims: AgeTrims,
}

/// Takes what has queued, up to the limits, and runs it as one script call; ends when every `Batcher` is gone.
async fn run<C: Category>(
    shared: Arc<Shared<C>>,
    settings: Settings,
    mut pending: UnboundedReceiver<PendingPublish>,
) {
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let script = super::scripts::publish_batch();
    loop {
        // A slot first, then the batch: while every slot is busy, publishes pile up into the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let Some(first) = pending.recv().await else { return };
        // What has queued is shared out over the free slots, so that while Redis runs one batch the
        // next ones fill: one batch of everything would leave Redis idle while its publishers refill.
        let free_slots = slots.available_permits() + 1;
        let limit = (pending.len() + 1).div_ceil(free_slots).clamp(1, MAX_BATCH_EVENTS);
        let mut bytes = first.envelope.len();
        let mut batch = vec![first];
        while batch.len() < limit && bytes < MAX_BATCH_BYTES {
            match pending.try_recv() {
                Ok(next) => {
                    bytes += next.envelope.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (shared, settings, script) = (Arc::clone(&shared), Arc::clone(&settings), script.clone());
        tokio::spawn(async move {
            publish_batch(&shared, &script, &settings, batch).await;
            drop(slot);
        });
    }
}

/// Runs one batch and tells each of its publishers how its event went.
#[tracing::instrument(level = "debug", name = "ssehub.publish_batch", skip_all, fields(events = batch.len()))]
async fn publish_batch<C: Category>(
    shared: &Shared<C>,
    script: &Script,
    settings: &Settings,
    batch: Vec<PendingPublish>,
) {
    let retention = settings.retention;
    let mut keys = Vec::with_capacity(2 * batch.len() + 1);
    let mut markers = Vec::with_capacity(batch.len());
    let mut args = Vec::with_capacity(5 + 3 * batch.len());
    args.push(retention.max_events().to_string());
    args.push(retention.max_age().as_millis().to_string());
    args.push((if retention.is_exact() { "=" } else { "~" }).to_string());
    let mut waiting = Vec::with_capacity(batch.len());
    let audiences: Vec<Audience> = batch.iter().map(|publish| publish.audience).collect();
    for publish in batch {
        keys.push(publish.stream);
        args.push(publish.channel);
        args.push(publish.envelope);
        match shared.layout.publish_marker(publish.audience, publish.event_id) {
            PublishMarker::Key(key) => {
                markers.push(key);
                args.push(String::new());
            }
            PublishMarker::Field { hash, field } => {
                markers.push(hash);
                args.push(field);
            }
        }
        waiting.push(publish.done);
    }
    keys.append(&mut markers);
    keys.push(settings.order_key.clone());
    args.push(shared.dedupe_window.as_millis().to_string());
    args.push(settings.age_trims.expiry().as_millis().to_string());
    let due = settings.age_trims.due(&audiences);
    args.extend(due.iter().map(|i| (i + 1).to_string()));
    let reply: Result<Vec<String>, _> = match shared.topology.command_client(&settings.order_key) {
        Ok(client) => script.evalsha_with_reload(&client, keys, args).await,
        Err(error) => Err(::fred::error::Error::new(::fred::error::ErrorKind::Unknown, error.to_string())),
    };
    if !matches!(&reply, Ok(ids) if ids.len() == waiting.len()) {
        // The due streams may not have been trimmed: the next publish to each trims it.
        settings.age_trims.forget(due.iter().map(|&i| audiences[i]));
    }
    match reply {
        Ok(ids) if ids.len() == waiting.len() => {
            // A stream whose event was refused was not trimmed.
            settings
                .age_trims
                .forget(due.iter().filter(|&&i| ids[i].starts_with('!')).map(|&i| audiences[i]));
            for (done, id) in waiting.into_iter().zip(ids) {
                let outcome = match id.strip_prefix('!') {
                    Some(error) => Err(Error::backend(format!("Redis did not store the event: {error}"))),
                    None => Ok(()),
                };
                let _ = done.send(outcome);
            }
        }
        Ok(ids) => {
            let message =
                format!("the publish script answered {} ids for {} events", ids.len(), waiting.len());
            for done in waiting {
                let _ = done.send(Err(Error::backend(message.clone())));
            }
        }
        Err(error) => {
            let message = error.to_string();
            for done in waiting {
                let _ = done.send(Err(Error::backend(message.clone())));
            }
        }
    }
}

/// Takes what has queued, splits it by master, and runs each master's share as one script call (cluster
/// layout); ends when every `Batcher` is gone.
async fn run_cluster<C: Category>(
    shared: Arc<Shared<C>>,
    retention: Retention,
    mut pending: UnboundedReceiver<PendingPublish>,
) {
    let slots = Arc::new(Semaphore::new(CLUSTER_BATCHES_IN_FLIGHT));
    let script = super::scripts::publish_cluster_batch();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let Some(first) = pending.recv().await else { return };
        // Room for a full batch per master of a three-master cluster; each master's share is cut to the limits.
        let (mut count, mut bytes) = (1, first.envelope.len());
        let mut by_master: Vec<(Option<Server>, Vec<PendingPublish>)> = Vec::new();
        let mut add = |publish: PendingPublish| {
            let master = shared.topology.server_of_key(&publish.stream);
            match by_master.iter_mut().find(|(m, _)| *m == master) {
                Some((_, share)) => share.push(publish),
                None => by_master.push((master, vec![publish])),
            }
        };
        add(first);
        while count < 3 * MAX_BATCH_EVENTS && bytes < 3 * MAX_BATCH_BYTES {
            match pending.try_recv() {
                Ok(next) => {
                    count += 1;
                    bytes += next.envelope.len();
                    add(next);
                }
                Err(_) => break,
            }
        }
        let (shared, script) = (Arc::clone(&shared), script.clone());
        tokio::spawn(async move {
            let calls = by_master.into_iter().flat_map(|(_, share)| split_to_limits(share)).map(|batch| {
                let (shared, script) = (&shared, &script);
                async move { publish_cluster_batch(shared, script, retention, batch).await }
            });
            futures_util::future::join_all(calls).await;
            drop(slot);
        });
    }
}

/// `share` in order, cut into batches within [`MAX_BATCH_EVENTS`] and [`MAX_BATCH_BYTES`].
fn split_to_limits(share: Vec<PendingPublish>) -> Vec<Vec<PendingPublish>> {
    let mut batches: Vec<Vec<PendingPublish>> = Vec::new();
    let mut bytes = 0;
    for publish in share {
        match batches.last_mut() {
            Some(batch) if batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES => {
                bytes += publish.envelope.len();
                batch.push(publish);
            }
            _ => {
                bytes = publish.envelope.len();
                batches.push(vec![publish]);
            }
        }
    }
    batches
}

/// How a cluster batch's script call went for one of its events.
enum Stored {
    /// Stored under this entry id.
    At(String),
    /// Not stored, because its master does not serve its slot (any more): publish it on its own.
    Elsewhere,
    /// Not stored, for this reason.
    Failed(String),
}

/// Runs one master's batch (cluster layout) and tells each of its publishers how its event went.
async fn publish_cluster_batch<C: Category>(
    shared: &Shared<C>,
    script: &Script,
    retention: Retention,
    batch: Vec<PendingPublish>,
) {
    let outcomes = run_cluster_script(shared, script, retention, &batch).await;
    // An event whose master did not serve its slot was not stored: publish it on its own, in batch order.
    let mut ids = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    let mut replicas_of: Option<Client> = None;
    match outcomes {
        Ok((client, outcomes)) => {
            replicas_of = Some(client);
            for (publish, outcome) in batch.into_iter().zip(outcomes) {
                let result = match outcome {
                    Stored::At(id) => {
                        ids.push(id);
                        Ok(())
                    }
                    Stored::Elsewhere => publish_alone(shared, retention, &publish).await,
                    Stored::Failed(error) => Err(Error::backend(error)),
                };
                results.push((publish.done, result));
            }
        }
        Err(Stored::Elsewhere) => {
            for publish in batch {
                let result = publish_alone(shared, retention, &publish).await;
                results.push((publish.done, result));
            }
        }
        Err(Stored::Failed(error)) => {
            for publish in batch {
                results.push((publish.done, Err(Error::backend(error.clone()))));
            }
        }
        Err(Stored::At(_)) => unreachable!("a whole batch fails, or its events are reported one by one"),
    }
    for id in &ids {
        if let Ok(id) = id.parse() {
            shared.clock.observe(id);
        }
    }
    // The batch's stored events need their replicas, as a single publish does.
    let acked = match (&replicas_of, ids.is_empty()) {
        (Some(client), false) => {
            wait_for_replicas(shared, client, &format!("a batch of {} events", ids.len()))
                .await
                .map_err(|e| e.to_string())
        }
        _ => Ok(()),
    };
    for (done, result) in results {
        let _ = done.send(result.and_then(|()| acked.clone().map_err(Error::backend)));
    }
}

/// One script call for a master's batch: the client it ran on and each event's outcome, or why the
/// whole call failed (`Elsewhere` when Redis redirected it: it did not run).
async fn run_cluster_script<C: Category>(
    shared: &Shared<C>,
    script: &Script,
    retention: Retention,
    batch: &[PendingPublish],
) -> Result<(Client, Vec<Stored>), Stored> {
    let first_stream = batch[0].stream.clone();
    let mut args = Vec::with_capacity(5 + 4 * batch.len());
    args.push(retention.max_events().to_string());
    args.push(retention.max_age().as_millis().to_string());
    args.push((if retention.is_exact() { "=" } else { "~" }).to_string());
    args.push(shared.clock.floor().to_string());
    args.push(shared.dedupe_window.as_millis().to_string());
    for publish in batch {
        args.push(publish.stream.clone());
        args.push(shared.layout.publish_marker_key(publish.audience, publish.event_id));
        args.push(publish.channel.clone());
        args.push(publish.envelope.clone());
    }
    let client = shared.topology.command_client(&first_stream).map_err(|e| Stored::Failed(e.to_string()))?;
    // One attempt only: a call whose reply was lost with its connection may have run; the caller is
    // told so by an error rather than kept waiting on retries. Publishing again is safe: the publish
    // markers make a second call return the stored entry ids. (A redirection means it did not run.)
    let once = Options { max_attempts: Some(1), ..Options::default() };
    let keys = vec![first_stream];
    let reply: Result<Vec<String>, ::fred::error::Error> =
        match client.with_options(&once).evalsha(script.sha1().clone(), keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => match script.load(&client).await {
                Ok(()) => client.with_options(&once).evalsha(script.sha1().clone(), keys, args).await,
                Err(e) => Err(e),
            },
            other => other,
        };
    let ids = match reply {
        Ok(ids) => ids,
        Err(e) if is_redirect(&e) => return Err(Stored::Elsewhere),
        Err(e) => return Err(Stored::Failed(e.to_string())),
    };
    if ids.len() != batch.len() {
        let message = format!("the publish script answered {} ids for {} events", ids.len(), batch.len());
        return Err(Stored::Failed(message));
    }
    let outcomes = ids
        .into_iter()
        .map(|id| match id.strip_prefix('!') {
            None => Stored::At(id),
            // Redis's words for a key of a slot the node does not serve: nothing was written for it.
            Some(error) if error.contains("non local key") || is_redirect_text(error) => Stored::Elsewhere,
            Some(error) => Stored::Failed(format!("Redis did not store the event: {error}")),
        })
        .collect();
    Ok((client, outcomes))
}

/// Whether an error text is a redirection or a cluster that is down (as `is_redirect` reads fred's errors).
fn is_redirect_text(error: &str) -> bool {
    ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"].iter().any(|prefix| error.starts_with(prefix))
}

/// Publishes a batch's event on its own, following redirections (cluster layout).
async fn publish_alone<C: Category>(
    shared: &Shared<C>,
    retention: Retention,
    publish: &PendingPublish,
) -> Result<(), Error> {
    publish_sharded_parts(
        shared,
        retention,
        publish.stream.clone(),
        publish.channel.clone(),
        publish.envelope.clone(),
        publish.audience,
        publish.event_id,
    )
    .await
}
