//! Changing a subscriber connection's channels: plain `SUBSCRIBE` in chunks, sharded `SSUBSCRIBE` one by one by slot.
//!
//! Also the round trip that proves plain subscriptions live: fred answers
//! `subscribe` once the command is queued, before it reaches the server.

use std::collections::BTreeMap;

use ::fred::clients::Client;
use ::fred::error::Error as FredError;
use ::fred::interfaces::{ClientLike, PubsubInterface};
use ::fred::types::Value;

use super::redirects::follow_redirects;
use super::shards::Shards;
use super::slots::slot_of;
use crate::Error;

/// Channels per `SUBSCRIBE` (and per `SUNSUBSCRIBE`) when changing many.
pub(crate) const CHANNELS_PER_COMMAND: usize = 512;

/// `SUBSCRIBE`s `channels` in chunks, or `UNSUBSCRIBE`s them in one command.
pub(crate) async fn change_plain(
    client: &Client,
    channels: Vec<String>,
    subscribe: bool,
) -> Result<(), FredError> {
    if !subscribe {
        return client.unsubscribe(channels).await;
    }
    let mut result = Ok(());
    for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
        result = result.and(client.subscribe(chunk.to_vec()).await);
    }
    result
}

/// `SSUBSCRIBE`s `channels` (or `SUNSUBSCRIBE`s them) on the subscriber client serving each one's slot.
///
/// Every channel gets its own `SSUBSCRIBE`. Redis answers a multi-channel
/// `SSUBSCRIBE` with one reply per channel, and fred takes the first as the
/// command's answer and any later one as the answer to the next command
/// written to that connection, which would then resolve before its own reply
/// (a subscription reported live too early). `SUNSUBSCRIBE` expects no
/// answer, so it goes in groups of one slot each (a command naming channels of
/// two slots fails with `CROSSSLOT`). Every command is tried; the first error is returned.
/// `shards`: the cluster's clients, whose slot map is read again after a redirection.
pub(crate) async fn change_sharded(
    subscriber_for: impl Fn(u16) -> Result<Client, Error>,
    shards: Option<&Shards>,
    channels: Vec<String>,
    subscribe: bool,
) -> Result<(), Error> {
    let mut result = Ok(());
    if subscribe {
        for channel in channels {
            let slot = slot_of(&channel);
            let sent = follow_redirects(shards, || {
                let (channel, subscriber) = (channel.clone(), subscriber_for(slot));
                async move { Ok(subscriber?.ssubscribe(channel).await?) }
            })
            .await;
            result = result.and(sent);
        }
        return result;
    }
    let mut by_slot: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for channel in channels {
        by_slot.entry(slot_of(&channel)).or_default().push(channel);
    }
    for (slot, group) in by_slot {
        for chunk in group.chunks(CHANNELS_PER_COMMAND) {
            let sent = match subscriber_for(slot) {
                Ok(client) => client.sunsubscribe(chunk.to_vec()).await.map_err(Error::backend),
                Err(e) => Err(e),
            };
            result = result.and(sent);
        }
    }
    result
}

/// A round trip on a subscriber connection: every `SUBSCRIBE` sent before it is in effect once it returns.
pub(crate) async fn round_trip(client: &Client) -> Result<(), Error> {
    // In RESP2 subscribe mode PING answers ["pong", ""]: read it as a Value.
    let _: Value = client.ping(None).await.map_err(Error::backend)?;
    Ok(())
}
