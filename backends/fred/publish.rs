//! Publishing one event by itself: the cluster layout's script (then `WAIT` for replicas), or one `PUBLISH`.
//!
//! Layouts with retention publish in batches instead (see `batch`): the
//! standalone ones always, the cluster layout unless batching is turned off;
//! whatever else is published goes through here, and so do the events of a
//! cluster batch whose master no longer served their slot.

use ::fred::clients::Client;
use ::fred::interfaces::{ClientLike, LuaInterface, PubsubInterface, ServerInterface};
use ::fred::types::Value;
use ::fred::types::config::Options;
use std::time::Duration;

use super::codec;
use super::keys::PubSubKind;
use super::shared::Shared;
use crate::{Audience, Category, Error, Event, EventId, Retention};

/// Time for a `WAIT` reply to travel, on top of the time `WAIT` itself may take.
const WAIT_REPLY_MARGIN: Duration = Duration::from_secs(2);

/// Publishes one event on its own: with the cluster layout, or without retention (one `PUBLISH`).
///
/// Standalone layouts with retention publish through the batcher instead.
pub(crate) async fn publish_one<C: Category>(shared: &Shared<C>, event: Event<C>) -> Result<(), Error> {
    if shared.layout.pubsub_kind() == PubSubKind::Sharded {
        return publish_sharded(shared, event).await;
    }
    if shared.retention.is_some() {
        return Err(Error::backend("a standalone layout with retention publishes in batches"));
    }
    let channel = shared.layout.channel(event.audience());
    let envelope = codec::envelope(&event);
    let client = shared.topology.command_client(&channel)?;
    let _: Value = client.publish(channel, envelope).await.map_err(Error::backend)?;
    Ok(())
}

/// Publishes a control message on the layout's control channel (sharded on a cluster).
pub(crate) async fn publish_control<C: Category>(shared: &Shared<C>, message: &str) -> Result<(), Error> {
    let topology = &shared.topology;
    let channel = shared.layout.control_channel();
    match shared.layout.pubsub_kind() {
        PubSubKind::Plain => {
            let client = topology.command_client(&channel)?;
            let _: Value = client.publish(&channel, message).await.map_err(Error::backend)?;
            Ok(())
        }
        PubSubKind::Sharded => {
            topology
                .follow_redirects(|| {
                    let channel = channel.clone();
                    async move {
                        let _: Value = topology.command_client(&channel)?.spublish(&channel, message).await?;
                        Ok(())
                    }
                })
                .await
        }
    }
}

/// Publishes with the cluster layout: the script with the hybrid clock's floor, then `WAIT` if configured.
async fn publish_sharded<C: Category>(shared: &Shared<C>, event: Event<C>) -> Result<(), Error> {
    let topology = &shared.topology;
    let audience = event.audience();
    let channel = shared.layout.channel(audience);
    let stream = shared.layout.stream(audience);
    let Some(retention) = shared.retention else {
        let envelope = codec::envelope(&event);
        return topology
            .follow_redirects(|| {
                let (channel, envelope, stream) = (channel.clone(), envelope.clone(), stream.clone());
                async move {
                    let _: Value = topology.command_client(&stream)?.spublish(channel, envelope).await?;
                    Ok(())
                }
            })
            .await;
    };
    let envelope = codec::envelope_prefix(&event);
    publish_sharded_parts(shared, retention, stream, channel, envelope, audience, event.id()).await
}

/// The script of one event with the cluster layout, from its parts (see `publish_sharded`): also what
/// a cluster batch falls back to for an event its master did not serve.
pub(crate) async fn publish_sharded_parts<C: Category>(
    shared: &Shared<C>,
    retention: Retention,
    stream: String,
    channel: String,
    envelope: String,
    audience: Audience,
    event_id: EventId,
) -> Result<(), Error> {
    let topology = &shared.topology;
    let keys = vec![stream.clone(), shared.layout.publish_marker_key(audience, event_id)];
    let args = vec![
        channel,
        envelope,
        retention.max_events().to_string(),
        retention.max_age().as_millis().to_string(),
        "SPUBLISH".to_string(),
        (if retention.is_exact() { "=" } else { "~" }).to_string(),
        shared.clock.floor().to_string(),
        shared.dedupe_window.as_millis().to_string(),
    ];
    // One attempt per call: a script whose reply was lost with its connection may
    // have run, and the caller is told so by an error rather than kept waiting on
    // retries. Publishing again is safe: the script's publish markers make it
    // return the stored entry id without storing the event twice.
    // (A redirection means it did not run.)
    let once = Options { max_attempts: Some(1), ..Options::default() };
    let script = &shared.publish_script;
    let sha = script.sha1().clone();
    let (id, client) = topology
        .follow_redirects(|| {
            let (sha, stream, keys, args, once) =
                (sha.clone(), stream.clone(), keys.clone(), args.clone(), once.clone());
            async move {
                let client = topology.command_client(&stream)?;
                let reply: Result<String, _> =
                    client.with_options(&once).evalsha(sha.clone(), keys.clone(), args.clone()).await;
                let id = match reply {
                    Err(e) if e.details().starts_with("NOSCRIPT") => {
                        script.load(&client).await?;
                        client.with_options(&once).evalsha(sha, keys, args).await?
                    }
                    other => other?,
                };
                Ok((id, client))
            }
        })
        .await?;
    if let Ok(id) = id.parse() {
        shared.clock.observe(id);
    }
    wait_for_replicas(shared, &client, &format!("event {event_id}")).await
}

/// With replica acknowledgements on, waits (`WAIT`) until enough replicas hold what `client` wrote;
/// `what` names it in the error.
///
/// `client` must be the one that ran the write: the same client of the same master, so the same
/// connection, and `WAIT` covers its writes.
pub(crate) async fn wait_for_replicas<C>(
    shared: &Shared<C>,
    client: &Client,
    what: &str,
) -> Result<(), Error> {
    let acks = shared.replica_acks;
    if acks.replicas > 0 {
        let wait = client.with_options(&Options {
            max_attempts: Some(1),
            timeout: Some(acks.timeout + WAIT_REPLY_MARGIN),
            ..Options::default()
        });
        let timeout_ms = i64::try_from(acks.timeout.as_millis()).unwrap_or(i64::MAX).max(1);
        let acked: i64 = wait.wait(i64::from(acks.replicas), timeout_ms).await.map_err(Error::backend)?;
        if acked < i64::from(acks.replicas) {
            return Err(Error::backend(format!(
                "{what} is stored on the master but only {acked} of {} replicas acknowledged it within {:?}",
                acks.replicas, acks.timeout
            )));
        }
    }
    Ok(())
}
