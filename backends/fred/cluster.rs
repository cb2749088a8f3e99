//! The cluster side of the topology seam: per-master clients, slot owners, cross-master order, slot map watching.
//!
//! With the [cluster layout](super::KeyLayout::cluster) every audience's
//! channel and stream share one hash tag, so they live in one slot on one
//! master: a publish is one script on that master (`XADD` + `SPUBLISH`), and
//! each master's subscriber connection (see `shards`) `SSUBSCRIBE`s the
//! channels of that master's slots. The public account of the guarantees is
//! in the module docs of the backend, section "Redis Cluster".
//!
//! What differs from one server, and is kept here, below the seam:
//!
//! - **No order across masters.** Each master's messages come in the order it
//!   sent them, so each stream's order is kept; nothing waits for another
//!   master, so a slow one delays only its own streams.
//! - **Outages are per shard.** A reconnect to one master resubscribes and
//!   recovers only the channels of that master's slots.
//! - **Slots move.** A failover or a resharding gives slots a new owner.
//!   Redis ends shard-channel subscriptions of a slot that moves without a
//!   notice fred passes on, so the slot map is read on a timer and the
//!   channels of slots that moved are resubscribed and recovered.
//! - **A new owner may lack writes.** See `owners`: when a slot's owner was
//!   replaced, its subscribers get a gap signal, unless publishes wait for
//!   replica acknowledgements.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::fred::types::config::Server;
use tokio::sync::mpsc::WeakUnboundedSender;

use super::owners::{OwnerChange, SlotOwners, owner_change, read_slot_owners};
use super::shards::Shards;
use super::slots::{Scope, moved_slots};
use crate::Error;

/// A hub's view of a Redis Cluster: its per-master clients and whose data each slot holds.
pub(crate) struct ClusterTopology {
    pub(crate) shards: Arc<Shards>,
    /// Whose data each slot holds, as of the last recovery of that slot.
    owners: Mutex<Option<SlotOwners>>,
    /// Whether publishes wait for replicas, so a replaced master lost no acknowledged write.
    pub(crate) durable: bool,
    check_interval: Duration,
}

impl ClusterTopology {
    pub(crate) fn new(shards: Arc<Shards>, durable: bool, check_interval: Duration) -> Self {
        Self { shards, owners: Mutex::new(None), durable, check_interval }
    }

    /// Notes the owner of every slot, for later recoveries to compare with.
    pub(crate) async fn note_owners(&self) -> Result<(), Error> {
        let owners = read_slot_owners(&self.shards, &Scope::All).await?;
        *self.owners.lock().unwrap_or_else(PoisonError::into_inner) = Some(owners);
        Ok(())
    }

    /// Compares the owners of the slots in `scope` with those last noted.
    pub(crate) async fn owner_change(&self, scope: &Scope) -> Result<OwnerChange, Error> {
        let before = self.owners.lock().unwrap_or_else(PoisonError::into_inner).clone();
        owner_change(&self.shards, before, scope).await
    }

    /// Keeps `change`'s view of the slot owners as the one later recoveries compare with.
    pub(crate) fn commit(&self, change: OwnerChange) {
        *self.owners.lock().unwrap_or_else(PoisonError::into_inner) = Some(change.next);
    }

    /// The channels a reconnect of `server` affects: those of the slots it serves.
    pub(crate) fn scope_of(&self, server: &Server) -> Scope {
        Scope::Slots(self.shards.slots_of(server))
    }

    /// Starts reading the slot map every check interval; `listener` gets `resync(moved slots)` when slots
    /// moved to another master. Ends when the listener is gone.
    pub(crate) fn watch<T: Send + 'static>(&self, listener: WeakUnboundedSender<T>, resync: fn(Scope) -> T) {
        tokio::spawn(watch_slot_map(Arc::clone(&self.shards), self.check_interval, listener, resync));
    }
}

/// Reads the slot map every `interval` and tells `listener` of slots that moved, so their channels are
/// resubscribed and recovered. Ends with the listener.
async fn watch_slot_map<T>(
    shards: Arc<Shards>,
    interval: Duration,
    listener: WeakUnboundedSender<T>,
    resync: fn(Scope) -> T,
) {
    let mut known = shards.slot_map();
    loop {
        // A closed hub's shards (each master's clients and message channels) are let go at once,
        // not at the next check.
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shards.quitting() => return,
        }
        if listener.upgrade().is_none() {
            return;
        }
        // New masters are connected here; their subscribers report in as reconnects.
        if let Err(error) = shards.refresh(true).await {
            tracing::debug!(%error, "reading the cluster slot map failed");
            continue;
        }
        let now = shards.slot_map();
        let moved = moved_slots(&known, &now);
        known = now;
        if moved.is_empty() {
            continue;
        }
        tracing::info!(
            slots = moved.len(),
            "hash slots moved to another master; resubscribing their channels"
        );
        let Some(listener) = listener.upgrade() else { return };
        if listener.send(resync(Scope::Slots(moved))).is_err() {
            return;
        }
    }
}
