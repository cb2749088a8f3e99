//! Who holds each hash slot's data: the `run_id` of every slot's master, and which slots got a replaced owner.
//!
//! Replication is asynchronous: a master can die with acknowledged writes
//! its replica never got. The hub notes the identity of each slot's owner;
//! when a slot's owner was replaced (not merely moved to another live
//! master), what its channels delivered may be gone from the streams.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ::fred::interfaces::ClientLike;
use ::fred::types::InfoKind;
use ::fred::types::config::{Options, Server};

use super::connection::run_id;
use super::shards::Shards;
use super::slots::{SLOTS, Scope, SlotSet, slot_of};
use crate::Error;

/// How long a master may take to say who it is.
const OWNER_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The identity (`run_id`) of the master holding each slot's data.
#[derive(Clone)]
pub(crate) struct SlotOwners {
    /// Per slot, an index into `run_ids`; `u16::MAX` where unknown.
    owner: Box<[u16]>,
    run_ids: Vec<Arc<str>>,
    /// The run ids of the masters that answered.
    masters: HashSet<Arc<str>>,
}

impl SlotOwners {
    fn owner_of(&self, slot: u16) -> Option<&Arc<str>> {
        self.run_ids.get(usize::from(*self.owner.get(usize::from(slot))?))
    }
}

/// What a recovery learnt about the slots' owners.
pub(crate) struct OwnerChange {
    /// Slots whose owner is another process than before and not a live master that held them
    /// (a failover, or a restart): acknowledged writes may be gone.
    replaced: SlotSet,
    pub(crate) next: SlotOwners,
}

impl OwnerChange {
    /// Whether `channel`'s slot got a replaced owner.
    pub(crate) fn replaced(&self, channel: &str) -> bool {
        self.replaced.contains(slot_of(channel))
    }

    /// How many slots got a replaced owner.
    pub(crate) fn replaced_slots(&self) -> usize {
        self.replaced.len()
    }
}

/// Compares the owners of the slots in `scope` with those noted `before`.
pub(crate) async fn owner_change(
    shards: &Shards,
    before: Option<SlotOwners>,
    scope: &Scope,
) -> Result<OwnerChange, Error> {
    let now = read_slot_owners(shards, scope).await?;
    let Some(before) = before else { return Ok(OwnerChange { replaced: SlotSet::new(), next: now }) };
    let mut replaced = SlotSet::new();
    let mut run_ids: Vec<Arc<str>> = Vec::new();
    let mut index: HashMap<Arc<str>, u16> = HashMap::new();
    let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
    for slot in 0..SLOTS as u16 {
        let old = before.owner_of(slot);
        let new = now.owner_of(slot);
        let kept = if scope.covers_slot(slot) {
            if let (Some(old), Some(new)) = (old, new)
                && old != new
                && !now.masters.contains(old)
            {
                replaced.insert(slot);
            }
            new.or(old)
        } else {
            old.or(new)
        };
        if let Some(run_id) = kept {
            let next = u16::try_from(run_ids.len()).unwrap_or(u16::MAX);
            let i = *index.entry(Arc::clone(run_id)).or_insert_with(|| {
                run_ids.push(Arc::clone(run_id));
                next
            });
            owner[usize::from(slot)] = i;
        }
    }
    Ok(OwnerChange { replaced, next: SlotOwners { owner, run_ids, masters: now.masters } })
}

/// The owner of every slot by the hub's slot map, identified by `INFO server`.
///
/// A master that does not answer is left unknown, unless it serves a slot in
/// `scope`: then the read fails, to be retried.
pub(crate) async fn read_slot_owners(shards: &Shards, scope: &Scope) -> Result<SlotOwners, Error> {
    let masters = shards.masters();
    let options = Options { timeout: Some(OWNER_QUERY_TIMEOUT), fail_fast: true, ..Options::default() };
    let infos = futures_util::future::join_all(masters.iter().map(|(_, client)| {
        let options = options.clone();
        async move {
            let info: Result<String, _> = client.with_options(&options).info(Some(InfoKind::Server)).await;
            info.map(|info| run_id(&info).map(Arc::<str>::from))
        }
    }))
    .await;
    let mut run_id_of: HashMap<&Server, Arc<str>> = HashMap::new();
    let mut failed: Vec<(&Server, String)> = Vec::new();
    for ((server, _), info) in masters.iter().zip(infos) {
        match info {
            Ok(Some(run_id)) => {
                run_id_of.insert(server, run_id);
            }
            Ok(None) => failed.push((server, "no run_id in INFO".into())),
            Err(e) => failed.push((server, e.to_string())),
        }
    }
    let mut run_ids: Vec<Arc<str>> = Vec::new();
    let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
    for (start, end, server) in shards.slot_map() {
        let Some(run_id) = run_id_of.get(&server) else {
            if (start..=end).any(|slot| scope.covers_slot(slot)) {
                let reason = failed.iter().find(|(s, _)| **s == server).map_or("", |(_, r)| r.as_str());
                return Err(Error::backend(format!(
                    "cluster master {server} did not say who it is: {reason}"
                )));
            }
            continue;
        };
        let i = match run_ids.iter().position(|id| id == run_id) {
            Some(i) => i,
            None => {
                run_ids.push(Arc::clone(run_id));
                run_ids.len() - 1
            }
        };
        let i = u16::try_from(i).unwrap_or(u16::MAX);
        for slot in start..=end {
            if let Some(entry) = owner.get_mut(usize::from(slot)) {
                *entry = i;
            }
        }
    }
    let masters = run_id_of.into_values().collect();
    Ok(SlotOwners { owner, run_ids, masters })
}
