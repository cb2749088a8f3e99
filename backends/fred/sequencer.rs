//! The sequencer: one task that changes the subscriber connection's channels in the order the dispatcher decided.
//!
//! It confirms each new user or group channel live (with the stream position at that
//! point, from which the channel's feed starts) and tells a recovery when its
//! resubscribe is in effect. Changes that queue while one is sent go out
//! together: subscribes and unsubscribes are grouped into as few commands as
//! their order allows.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::codec::StreamId;
use super::pubsub::CHANNELS_PER_COMMAND;
use super::shared::Shared;
use crate::{Audience, Category, Error};

/// A change of the subscriber connection's channels, in dispatcher order.
pub(crate) enum PubSubOp {
    Subscribe { audience: Audience, generation: u64 },
    Unsubscribe { audience: Audience },
    Resubscribe { channels: Vec<String>, done: oneshot::Sender<Result<(), Error>> },
}

/// A user's or a group's channel confirmed live (with the stream position at that point), or failed.
pub(crate) struct Confirmed {
    pub(crate) audience: Audience,
    pub(crate) generation: u64,
    pub(crate) result: Result<Option<StreamId>, String>,
}

/// Sends the dispatcher's channel changes in order and confirms new channels live; ends with the
/// dispatcher.
///
/// The dispatcher's end (the hub closed) is watched on its own: the hub's clients quit then, and a
/// command sent on a client that quit never completes, so an `UNSUBSCRIBE` still in flight would
/// otherwise keep this task, and through `shared` every client of the hub, alive for good.
pub(crate) async fn run_sequencer<C: Category>(
    shared: Arc<Shared<C>>,
    ops: UnboundedReceiver<PubSubOp>,
    confirms: UnboundedSender<Confirmed>,
) {
    tokio::select! {
        biased;
        () = confirms.closed() => tracing::debug!("the dispatcher stopped; the sequencer stops too"),
        () = sequence(&shared, ops, &confirms) => {}
    }
}

/// The sequencer's work: every change in order, until the dispatcher drops its end of `ops`.
async fn sequence<C: Category>(
    shared: &Shared<C>,
    mut ops: UnboundedReceiver<PubSubOp>,
    confirms: &UnboundedSender<Confirmed>,
) {
    while let Some(first) = ops.recv().await {
        let mut batch = vec![first];
        while batch.len() < CHANNELS_PER_COMMAND {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut subscribes: Vec<String> = Vec::new();
        let mut unsubscribes: Vec<String> = Vec::new();
        let mut to_confirm: Vec<(Audience, u64)> = Vec::new();
        let mut resubscribed: Vec<oneshot::Sender<Result<(), Error>>> = Vec::new();
        let mut failure: Option<String> = None;
        for op in batch {
            match op {
                PubSubOp::Subscribe { audience, generation } => {
                    flush(shared, &mut unsubscribes, false, &mut failure).await;
                    subscribes.push(shared.layout.channel(audience));
                    to_confirm.push((audience, generation));
                }
                PubSubOp::Unsubscribe { audience } => {
                    flush(shared, &mut subscribes, true, &mut failure).await;
                    unsubscribes.push(shared.layout.channel(audience));
                }
                PubSubOp::Resubscribe { mut channels, done } => {
                    flush(shared, &mut unsubscribes, false, &mut failure).await;
                    flush(shared, &mut subscribes, true, &mut failure).await;
                    flush(shared, &mut channels, true, &mut failure).await;
                    resubscribed.push(done);
                }
            }
        }
        flush(shared, &mut unsubscribes, false, &mut failure).await;
        flush(shared, &mut subscribes, true, &mut failure).await;
        if failure.is_none()
            && (!to_confirm.is_empty() || !resubscribed.is_empty())
            && let Err(e) = shared.topology.confirm_live().await
        {
            failure = Some(e.to_string());
        }
        let baselines = match (&failure, shared.retention.is_some()) {
            (None, true) => {
                let reads =
                    to_confirm.iter().map(|(audience, _)| shared.streams.last_stream_id_of(*audience));
                match futures_util::future::try_join_all(reads).await {
                    Ok(ids) => ids.into_iter().map(Some).collect(),
                    Err(e) => {
                        failure = Some(e.to_string());
                        Vec::new()
                    }
                }
            }
            _ => vec![None; to_confirm.len()],
        };
        for (i, (audience, generation)) in to_confirm.into_iter().enumerate() {
            let result = match &failure {
                Some(reason) => Err(reason.clone()),
                None => Ok(baselines[i]),
            };
            let _ = confirms.send(Confirmed { audience, generation, result });
        }
        for done in resubscribed {
            let _ = done.send(match &failure {
                Some(reason) => Err(Error::backend(format!("resubscribing failed: {reason}"))),
                None => Ok(()),
            });
        }
    }
}

/// Sends `channels`' `SUBSCRIBE` (or `UNSUBSCRIBE`), keeping the first failure to subscribe.
async fn flush<C: Category>(
    shared: &Shared<C>,
    channels: &mut Vec<String>,
    subscribe: bool,
    failure: &mut Option<String>,
) {
    if channels.is_empty() {
        return;
    }
    let batch = std::mem::take(channels);
    if let Err(e) = shared.topology.change_channels(batch, subscribe).await {
        tracing::warn!(error = %e, subscribe, "changing the subscriber connection's channels failed");
        if subscribe && failure.is_none() {
            *failure = Some(e.to_string());
        }
    }
}
