//! Presence: this hub's open streams per user, written to Redis in batches under a key that expires, and the fleet's counts read back.
//!
//! The dispatcher calls [`PresenceWriter::tick`] a few times a second with
//! the counts it holds; only the users whose count changed since the last
//! write are sent, in one script call, however many connects and disconnects
//! happened meanwhile (a reconnect storm of 10,000 clients is a handful of
//! calls). The hash also gets its expiry pushed back at least every third of
//! its time to live, so a hub killed without a goodbye stops counting within
//! that time; a hub that closes deletes it ([`leave`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::fred::prelude::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::shared::Shared;
use crate::{Category, Error, UserId};

/// How often the dispatcher offers the counts.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Writes one hub's counts: what it wrote last, and the write in flight.
pub(crate) struct PresenceWriter {
    ttl: Duration,
    written: HashMap<UserId, usize>,
    last_write: Option<Instant>,
    in_flight: Option<JoinHandle<Result<(), Error>>>,
}

impl PresenceWriter {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, written: HashMap::new(), last_write: None, in_flight: None }
    }

    /// Sends what changed since the last write (and refreshes the expiry when due), unless a
    /// write is still in flight; a failed write is redone in full.
    pub(crate) fn tick<C: Category>(&mut self, shared: &Arc<Shared<C>>, counts: HashMap<UserId, usize>) {
        if self.in_flight.as_ref().is_some_and(|write| !write.is_finished()) {
            return;
        }
        if let Some(write) = self.in_flight.take() {
            // Finished, so its result is ready.
            let succeeded = matches!(futures_util::FutureExt::now_or_never(write), Some(Ok(Ok(()))));
            if !succeeded {
                self.written.clear();
                self.last_write = None;
            }
        }
        let mut changes: Vec<String> = Vec::new();
        for (user, count) in &counts {
            if self.written.get(user) != Some(count) {
                changes.push(user.to_string());
                changes.push(count.to_string());
            }
        }
        for user in self.written.keys().filter(|user| !counts.contains_key(user)) {
            changes.push(user.to_string());
            changes.push("0".to_owned());
        }
        let refresh_due = self.last_write.is_none_or(|at| at.elapsed() >= self.ttl / 3);
        if changes.is_empty() && !refresh_due {
            return;
        }
        self.written = counts;
        self.last_write = Some(Instant::now());
        let shared = Arc::clone(shared);
        let ttl = self.ttl;
        self.in_flight = Some(tokio::spawn(async move { write(&shared, "flush", ttl, changes).await }));
    }
}

/// Removes this hub's counts at once (the hub is closing).
pub(crate) async fn leave<C: Category>(shared: &Shared<C>, ttl: Duration) {
    if let Err(error) = write(shared, "leave", ttl, Vec::new()).await {
        tracing::warn!(%error, "could not remove this hub's presence counts; they expire on their own");
    }
}

async fn write<C: Category>(
    shared: &Shared<C>,
    action: &str,
    ttl: Duration,
    pairs: Vec<String>,
) -> Result<(), Error> {
    let layout = &shared.layout;
    let hub = hub_name(shared.hub_id);
    let keys = vec![layout.presence_hubs(), layout.presence_of_hub(&hub)];
    let mut args = vec![action.to_owned(), hub, ttl.as_millis().max(1).to_string()];
    args.extend(pairs);
    let client = shared.topology.command_client(&keys[0])?;
    let _: Value =
        shared.presence_script.evalsha_with_reload(&client, keys, args).await.map_err(Error::backend)?;
    Ok(())
}

/// A user's open streams on every hub (`Some(user)`), or the users online (`None`).
pub(crate) async fn query<C: Category>(shared: &Shared<C>, user: Option<UserId>) -> Result<usize, Error> {
    let layout = &shared.layout;
    let hubs = layout.presence_hubs();
    let client = shared.topology.command_client(&hubs)?;
    let args = vec![layout.presence_of_hub(""), user.map(|u| u.to_string()).unwrap_or_default()];
    let reply: Value = shared
        .presence_query_script
        .evalsha_with_reload(&client, vec![hubs], args)
        .await
        .map_err(Error::backend)?;
    reply
        .as_i64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::backend(format!("presence query replied {reply:?}")))
}

/// A hub's id as the member of the hubs' set and in its hash's name.
fn hub_name(hub_id: u64) -> String {
    format!("{hub_id:016x}")
}
