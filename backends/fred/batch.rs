//! Publish batching for the standalone layouts: publishes that wait together go to Redis as one script call.
//!
//! Each publish with retention is a Lua script (`XADD`, trimming, expiry,
//! `PUBLISH`). Redis spends most of such a call on the call itself, not on
//! the commands in it, so one call per event caps a hub at what one Redis
//! core can run. Here publishes queue for one task, which sends whatever has
//! queued as one call of `publish_batch.lua`, with a few calls in flight at
//! once. A lone publish still goes at once, in a batch of one; under load the
//! batches grow and the cost per event falls.
//!
//! Order is kept where it is promised: a publish completes only after its
//! batch has run, so events published one after another are in separate
//! batches, in order. Events whose publishes overlapped may be stored in
//! either order, as they could be before.

use std::sync::Arc;

use ::fred::types::scripts::Script;
use tokio::runtime::Handle;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{Semaphore, oneshot};

use super::codec;
use super::shared::Shared;
use crate::Retention;
use crate::{Category, Error, Event};

/// The most events in one script call.
const MAX_BATCH_EVENTS: usize = 128;

/// The most envelope bytes in one script call (a batch takes at least one event, however large).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Script calls in flight at once. More overlap the round trips; Redis runs
/// them one after another anyway, and fewer make bigger batches under load.
const BATCHES_IN_FLIGHT: usize = 4;

/// One publish waiting for its batch.
pub(crate) struct PendingPublish {
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
        runtime.spawn(run(shared, Settings { retention, order_key }, pending));
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
        let mut bytes = first.envelope.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
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
    let mut keys = Vec::with_capacity(batch.len() + 1);
    let mut args = Vec::with_capacity(3 + 2 * batch.len());
    args.push(retention.max_events().to_string());
    args.push(retention.max_age().as_millis().to_string());
    args.push((if retention.is_exact() { "=" } else { "~" }).to_string());
    let mut waiting = Vec::with_capacity(batch.len());
    for publish in batch {
        keys.push(publish.stream);
        args.push(publish.channel);
        args.push(publish.envelope);
        waiting.push(publish.done);
    }
    keys.push(settings.order_key.clone());
    let reply: Result<Vec<String>, _> = match shared.topology.command_client(&settings.order_key) {
        Ok(client) => script.evalsha_with_reload(&client, keys, args).await,
        Err(error) => Err(::fred::error::Error::new(::fred::error::ErrorKind::Unknown, error.to_string())),
    };
    match reply {
        Ok(ids) if ids.len() == waiting.len() => {
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
