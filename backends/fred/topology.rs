//! The topology seam: one server, or a cluster's masters and slots, behind one set of methods chosen at connect.
//!
//! Everything above it (publishing, the dispatcher, recovery, replay) asks
//! the topology for what it needs: the command client for a key, a change of
//! the subscriber connection's channels, proof that they are live, which
//! channels a reconnect touched, and whether the data behind a channel may be
//! another server's than before. None of it asks which topology it has.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ::fred::clients::{Client, Pool};
use ::fred::error::{Error as FredError, ErrorKind};
use ::fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use ::fred::types::config::Server;
use ::fred::types::{InfoKind, Message};
use tokio::sync::broadcast;
use tokio::sync::mpsc::WeakUnboundedSender;

use super::cluster::ClusterTopology;
use super::connection::{ClientSettings, run_id};
use super::keys::PubSubKind;
use super::owners::OwnerChange;
use super::pubsub::{change_plain, change_sharded, round_trip};
use super::redirects::{AttemptError, follow_redirects};
use super::shards::Shards;
use super::slots::Scope;
use crate::Error;

/// Where the hub's connections go.
pub(crate) enum Topology {
    /// One server: one subscriber connection and one command pool.
    Single(SingleServer),
    /// A Redis Cluster: a subscriber connection and a command pool per master, routed by hash slot.
    Cluster(ClusterTopology),
}

/// One server's clients.
pub(crate) struct SingleServer {
    subscriber: Client,
    commands: Pool,
    pubsub: PubSubKind,
    /// The server process's identity when last checked: another one means its data may be gone.
    run_id: Mutex<Option<String>>,
}

/// The messages and reconnects of the subscriber connection(s), taken before connecting so none is missed.
pub(crate) struct Incoming {
    pub(crate) messages: broadcast::Receiver<Message>,
    pub(crate) reconnects: broadcast::Receiver<Server>,
}

/// What a recovery learnt about the servers behind its channels.
pub(crate) struct Continuity {
    /// The one server is another process than before.
    restarted: bool,
    /// On a cluster: which slots got a replaced owner.
    owners: Option<OwnerChange>,
    /// Whether publishes waited for replicas.
    durable: bool,
}

impl Continuity {
    /// Whether entries of `channel`'s stream may be gone without a trace: the server restarted, or its
    /// owner was replaced and publishes did not wait for a replica (with replica acks, the replica
    /// that took over holds every acknowledged entry).
    pub(crate) fn may_have_lost_entries(&self, channel: &str) -> bool {
        self.restarted || self.lost_writes(channel)
    }

    /// Whether acknowledged writes of `channel` may be lost: its owner was replaced and publishes did not
    /// wait for a replica.
    pub(crate) fn lost_writes(&self, channel: &str) -> bool {
        self.slot_replaced(channel) && !self.durable
    }

    fn slot_replaced(&self, channel: &str) -> bool {
        self.owners.as_ref().is_some_and(|o| o.replaced(channel))
    }

    /// Why events may be missing, for the log.
    pub(crate) fn cause(&self) -> &'static str {
        if self.owners.as_ref().is_some_and(|o| o.replaced_slots() > 0) {
            "a cluster node was replaced"
        } else if self.restarted {
            "the Redis server restarted"
        } else {
            "history was trimmed"
        }
    }
}

impl Topology {
    /// Connects: per-master clients on a cluster, else one server's; `pubsub` is the key layout's kind.
    pub(crate) async fn connect(
        clients: ClientSettings,
        pubsub: PubSubKind,
        durable: bool,
        check_interval: Duration,
    ) -> Result<(Self, Incoming), Error> {
        if let Some(seeds) = clients.cluster_seeds() {
            if pubsub != PubSubKind::Sharded {
                return Err(Error::backend(
                    "the standalone key layout cannot run on Redis Cluster (its publish touches keys of \
                     several hash slots): use KeyLayout::cluster()",
                ));
            }
            let shards = Shards::connect(clients.clone(), seeds.to_vec()).await?;
            let incoming = Incoming { messages: shards.messages(), reconnects: shards.reconnects() };
            return Ok((Topology::Cluster(ClusterTopology::new(shards, durable, check_interval)), incoming));
        }
        let builder = clients.builder(None);
        let subscriber = builder.build().map_err(Error::backend)?;
        let commands =
            clients.command_builder(None).build_pool(clients.command_connections).map_err(Error::backend)?;
        let incoming = Incoming { messages: subscriber.message_rx(), reconnects: subscriber.reconnect_rx() };
        subscriber.init().await.map_err(Error::backend)?;
        if let Err(e) = commands.init().await {
            let _ = subscriber.quit().await;
            return Err(Error::backend(e));
        }
        let single = SingleServer { subscriber, commands, pubsub, run_id: Mutex::new(None) };
        Ok((Topology::Single(single), incoming))
    }

    /// Notes who serves the data (the server's run id, or every slot's owner), for recoveries to compare with.
    pub(crate) async fn note_identity(&self) -> Result<(), Error> {
        match self {
            Topology::Single(single) => {
                let info: String = single
                    .commands
                    .next_connected()
                    .info(Some(InfoKind::Server))
                    .await
                    .map_err(Error::backend)?;
                *single.run_id.lock().unwrap_or_else(PoisonError::into_inner) =
                    run_id(&info).map(String::from);
                Ok(())
            }
            Topology::Cluster(cluster) => cluster.note_owners().await,
        }
    }

    /// A command client for `key`: on a cluster, one of the master serving its slot.
    pub(crate) fn command_client(&self, key: &str) -> Result<Client, Error> {
        match self {
            Topology::Single(single) => Ok(single.commands.next_connected().clone()),
            Topology::Cluster(cluster) => cluster.shards.commands_for(super::slots::slot_of(key)),
        }
    }

    /// The master serving `key`'s slot, on a cluster (by the last slot map read); `None` on one server.
    pub(crate) fn server_of_key(&self, key: &str) -> Option<Server> {
        match self {
            Topology::Single(_) => None,
            Topology::Cluster(cluster) => cluster.shards.server_of(super::slots::slot_of(key)),
        }
    }

    /// A command client that can run one script over all of `keys`, if there is one: on one server
    /// always; on a cluster only when they share a hash slot (Redis refuses a script across slots).
    pub(crate) fn script_client(&self, keys: &[&str]) -> Result<Option<Client>, Error> {
        let Some((first, rest)) = keys.split_first() else { return Ok(None) };
        match self {
            Topology::Single(_) => self.command_client(first).map(Some),
            Topology::Cluster(_) => {
                let slot = super::slots::slot_of(first);
                if rest.iter().all(|key| super::slots::slot_of(key) == slot) {
                    self.command_client(first).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Runs `attempt` again while its slot is moving or the cluster is down (see `redirects`).
    pub(crate) async fn follow_redirects<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        follow_redirects(self.shards(), attempt).await
    }

    fn shards(&self) -> Option<&Shards> {
        match self {
            Topology::Single(_) => None,
            Topology::Cluster(cluster) => Some(&cluster.shards),
        }
    }

    /// Subscribes one channel, confirmed sent (sharded: confirmed by the server).
    pub(crate) async fn subscribe_channel(&self, channel: String) -> Result<(), Error> {
        match self {
            Topology::Single(single) if single.pubsub == PubSubKind::Plain => {
                single.subscriber.subscribe(channel).await.map_err(Error::backend)
            }
            _ => self.change_sharded(vec![channel], true).await,
        }
    }

    /// Subscribes (or unsubscribes) `channels` on the subscriber connection(s).
    pub(crate) async fn change_channels(
        &self,
        channels: Vec<String>,
        subscribe: bool,
    ) -> Result<(), FredError> {
        match self {
            Topology::Single(single) if single.pubsub == PubSubKind::Plain => {
                change_plain(&single.subscriber, channels, subscribe).await
            }
            // Sharded channels of different slots cannot share one command.
            _ => self
                .change_sharded(channels, subscribe)
                .await
                .map_err(|e| FredError::new(ErrorKind::Unknown, e.to_string())),
        }
    }

    async fn change_sharded(&self, channels: Vec<String>, subscribe: bool) -> Result<(), Error> {
        match self {
            Topology::Single(single) => {
                change_sharded(|_| Ok(single.subscriber.clone()), None, channels, subscribe).await
            }
            Topology::Cluster(cluster) => {
                let shards = &cluster.shards;
                change_sharded(|slot| shards.subscriber_for(slot), Some(shards), channels, subscribe).await
            }
        }
    }

    /// Waits until every channel subscribed so far is live.
    pub(crate) async fn confirm_live(&self) -> Result<(), Error> {
        match self {
            Topology::Single(single) if single.pubsub == PubSubKind::Plain => {
                round_trip(&single.subscriber).await
            }
            // SSUBSCRIBE itself waits for the server's confirmation.
            _ => Ok(()),
        }
    }

    /// The channels a reconnect of `server` (`None`: unknown) may have lost.
    pub(crate) fn scope_of_reconnect(&self, server: Option<Server>) -> Scope {
        match (self, server) {
            // On a cluster only the channels of the slots that node serves were on the connection.
            (Topology::Cluster(cluster), Some(server)) => cluster.scope_of(&server),
            _ => Scope::All,
        }
    }

    /// Checks whether the data behind the channels in `scope` may be another server's than before;
    /// `reconnected`: whether a connection was lost (else only messages were).
    pub(crate) async fn check_continuity(
        &self,
        scope: &Scope,
        reconnected: bool,
    ) -> Result<Continuity, Error> {
        match self {
            Topology::Single(single) => {
                let restarted = reconnected && single.restarted().await?;
                Ok(Continuity { restarted, owners: None, durable: false })
            }
            // On a cluster each slot has its own server: which of them are another process now?
            Topology::Cluster(cluster) => Ok(Continuity {
                restarted: false,
                owners: Some(cluster.owner_change(scope).await?),
                durable: cluster.durable,
            }),
        }
    }

    /// Keeps what a successful recovery learnt, for the next one to compare with.
    pub(crate) fn commit(&self, continuity: Continuity) {
        if let (Topology::Cluster(cluster), Some(owners)) = (self, continuity.owners) {
            cluster.commit(owners);
        }
    }

    /// Starts watching for hash slots that move (on a cluster); `listener` gets `resync(moved)`.
    pub(crate) fn watch<T: Send + 'static>(&self, listener: WeakUnboundedSender<T>, resync: fn(Scope) -> T) {
        if let Topology::Cluster(cluster) = self {
            cluster.watch(listener, resync);
        }
    }

    /// Closes every connection.
    pub(crate) async fn quit(&self) {
        match self {
            Topology::Single(single) => {
                let _ = single.subscriber.quit().await;
                let _ = single.commands.quit().await;
            }
            Topology::Cluster(cluster) => cluster.shards.quit().await,
        }
    }
}

impl SingleServer {
    /// Whether the server is another process than before (its data may be gone), by its run id.
    async fn restarted(&self) -> Result<bool, Error> {
        let info: String =
            self.commands.next_connected().info(Some(InfoKind::Server)).await.map_err(Error::backend)?;
        let now = run_id(&info).map(String::from);
        let mut known = self.run_id.lock().unwrap_or_else(PoisonError::into_inner);
        let restarted = now.is_none() || now != *known;
        if restarted {
            tracing::warn!(before = ?*known, now = ?now, "the Redis server restarted");
        }
        *known = now;
        Ok(restarted)
    }
}
