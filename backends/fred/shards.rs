//! Per-master clients on Redis Cluster: a subscriber connection and a small command pool per master, routed by hash slot.
//!
//! fred's cluster client runs all its connections from one task, and while
//! it reconnects to a lost master it sends no command to any other: during a
//! failover every publish and subscribe would wait (and time out), on every
//! shard. So the hub keeps a plain client per master instead, and routes by
//! its own copy of the slot map. A lost master then stalls only its own
//! clients; the others go on.
//!
//! Each master's subscriber client has a pump task that forwards its messages
//! and reconnects into one channel each, which the dispatcher reads as it
//! would a single client's: each master's messages in the order it sent
//! them, and no master waiting for another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ::fred::clients::{Client, Pool};
use ::fred::error::Error as FredError;
use ::fred::interfaces::{ClientLike, ClusterInterface, EventInterface};
use ::fred::types::cluster::ClusterRouting;
use ::fred::types::config::{Options, ReconnectPolicy, Server};
use ::fred::types::{Message, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use super::connection::ClientSettings;
use super::slots::{SlotMap, SlotSet, master_of, moved_slots};
use crate::Error;

/// How long reading the slot map from one master may take.
const SLOT_MAP_TIMEOUT: Duration = Duration::from_secs(2);

/// One master's clients.
pub(crate) struct Shard {
    subscriber: Client,
    commands: Pool,
}

#[derive(Default)]
struct State {
    map: SlotMap,
    shards: HashMap<Server, Arc<Shard>>,
}

/// A hub's clients on a Redis Cluster, one set per master.
pub(crate) struct Shards {
    clients: ClientSettings,
    seeds: Vec<Server>,
    state: RwLock<State>,
    refreshing: tokio::sync::Mutex<()>,
    messages: broadcast::Sender<Message>,
    reconnects: broadcast::Sender<Server>,
    /// Set once `quit` ran: tasks that hold the shards (the slot map watcher) let go of them at once.
    quit: tokio::sync::watch::Sender<bool>,
}

impl Shards {
    /// Per-master clients for the cluster whose seed nodes are `seeds`, made with `clients`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the slot map cannot be read or a master cannot be reached.
    pub(crate) async fn connect(clients: ClientSettings, seeds: Vec<Server>) -> Result<Arc<Shards>, Error> {
        let (messages, _) = broadcast::channel(clients.message_channel_capacity);
        let (reconnects, _) = broadcast::channel(1024);
        let shards = Arc::new(Shards {
            clients,
            seeds,
            state: RwLock::new(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
            messages,
            reconnects,
            quit: tokio::sync::watch::Sender::new(false),
        });
        if let Err(e) = shards.refresh(false).await {
            shards.quit().await;
            return Err(e);
        }
        Ok(shards)
    }

    /// Messages of every master's subscriber connection, each master's in the order it sent them.
    pub(crate) fn messages(&self) -> broadcast::Receiver<Message> {
        self.messages.subscribe()
    }

    /// The masters whose subscriber connection connected again, or lost messages.
    pub(crate) fn reconnects(&self) -> broadcast::Receiver<Server> {
        self.reconnects.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The master serving `slot`, by the last slot map read.
    pub(crate) fn server_of(&self, slot: u16) -> Option<Server> {
        master_of(&self.read().map, slot).cloned()
    }

    fn shard_of(&self, slot: u16) -> Result<Arc<Shard>, Error> {
        let state = self.read();
        master_of(&state.map, slot)
            .and_then(|server| state.shards.get(server))
            .cloned()
            .ok_or_else(|| Error::backend(format!("no cluster master is known to serve hash slot {slot}")))
    }

    /// A command client of the master serving `slot`.
    pub(crate) fn commands_for(&self, slot: u16) -> Result<Client, Error> {
        Ok(self.shard_of(slot)?.commands.next_connected().clone())
    }

    /// The subscriber client of the master serving `slot`.
    pub(crate) fn subscriber_for(&self, slot: u16) -> Result<Client, Error> {
        Ok(self.shard_of(slot)?.subscriber.clone())
    }

    /// A command client of each master, with its address.
    pub(crate) fn masters(&self) -> Vec<(Server, Client)> {
        self.read()
            .shards
            .iter()
            .map(|(server, shard)| (server.clone(), shard.commands.next_connected().clone()))
            .collect()
    }

    /// The slot map: ranges and their masters.
    pub(crate) fn slot_map(&self) -> SlotMap {
        self.read().map.clone()
    }

    /// The slots `server` serves.
    pub(crate) fn slots_of(&self, server: &Server) -> SlotSet {
        let mut slots = SlotSet::new();
        for (start, end, _) in self.read().map.iter().filter(|(_, _, s)| s == server) {
            for slot in *start..=*end {
                slots.insert(slot);
            }
        }
        slots
    }

    /// Reads the slot map again, connects to new masters and lets go of masters that serve no slot.
    /// Returns the slots whose master changed.
    ///
    /// `announce`: whether the first connection of a new master's subscriber is reported as a
    /// reconnect, so its channels get subscribed there.
    pub(crate) async fn refresh(&self, announce: bool) -> Result<SlotSet, Error> {
        let _one_at_a_time = self.refreshing.lock().await;
        let routing = self.read_slot_map().await?;
        let map: SlotMap = routing.slots().iter().map(|r| (r.start, r.end, r.primary.clone())).collect();
        let (old_map, known): (SlotMap, HashSet<Server>) = {
            let state = self.read();
            (state.map.clone(), state.shards.keys().cloned().collect())
        };
        let wanted: HashSet<Server> = map.iter().map(|(_, _, s)| s.clone()).collect();
        let mut opened = Vec::new();
        for server in wanted.difference(&known) {
            match self.open(server).await {
                Ok(parts) => opened.push((server.clone(), parts)),
                Err(e) => {
                    for (_, (shard, _)) in opened {
                        quit_in_background(&shard);
                    }
                    return Err(e);
                }
            }
        }
        let moved = moved_slots(&old_map, &map);
        let mut pumps = Vec::new();
        let dropped: Vec<Arc<Shard>> = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.map = map;
            for (server, (shard, pump)) in opened {
                state.shards.insert(server.clone(), Arc::clone(&shard));
                pumps.push((server, pump));
            }
            let gone: Vec<Server> = state.shards.keys().filter(|s| !wanted.contains(*s)).cloned().collect();
            gone.iter().filter_map(|s| state.shards.remove(s)).collect()
        };
        // Started once the map names the new masters, so their channels are found when they report in.
        for (server, pump) in pumps {
            tokio::spawn(pump.run(server, announce, self.messages.clone(), self.reconnects.clone()));
        }
        for shard in dropped {
            quit_in_background(&shard);
        }
        Ok(moved)
    }

    /// `CLUSTER SLOTS` from the first master (or seed node) that answers.
    async fn read_slot_map(&self) -> Result<ClusterRouting, Error> {
        let options = Options {
            timeout: Some(SLOT_MAP_TIMEOUT),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        let mut last_error = String::from("no cluster node is known");
        for (server, client) in self.masters() {
            match client.with_options(&options).cluster_slots::<Value>().await {
                Ok(slots) => match ClusterRouting::from_cluster_slots(slots, server.host.clone()) {
                    Ok(routing) if !routing.slots().is_empty() => return Ok(routing),
                    Ok(_) => last_error = format!("{server} serves no slots"),
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = format!("{server}: {e}"),
            }
        }
        for seed in &self.seeds {
            match self.read_slot_map_from_seed(seed).await {
                Ok(routing) => return Ok(routing),
                Err(e) => last_error = format!("{seed}: {e}"),
            }
        }
        Err(Error::backend(format!("cannot read the cluster's slot map: {last_error}")))
    }

    async fn read_slot_map_from_seed(&self, seed: &Server) -> Result<ClusterRouting, FredError> {
        let mut builder = self.clients.command_builder(Some(seed));
        builder.set_policy(ReconnectPolicy::default());
        let client = builder.build()?;
        client.init().await?;
        let slots = client.cluster_slots::<Value>().await;
        let _ = client.quit().await;
        let routing = ClusterRouting::from_cluster_slots(slots?, seed.host.clone())?;
        if routing.slots().is_empty() {
            return Err(FredError::new(::fred::error::ErrorKind::Cluster, "no slots served"));
        }
        Ok(routing)
    }

    /// Connects a master's clients; its pump is returned, to start once the slot map names the master.
    async fn open(&self, server: &Server) -> Result<(Arc<Shard>, Pump), Error> {
        let builder = self.clients.builder(Some(server));
        let subscriber = builder.build().map_err(Error::backend)?;
        let commands = self
            .clients
            .command_builder(Some(server))
            .build_pool(self.clients.command_connections)
            .map_err(Error::backend)?;
        // Taken before connecting so no message and no reconnect is missed.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        if let Err(e) = subscriber.init().await {
            return Err(Error::backend(format!("connecting to cluster master {server}: {e}")));
        }
        if let Err(e) = commands.init().await {
            let _ = subscriber.quit().await;
            return Err(Error::backend(format!("connecting to cluster master {server}: {e}")));
        }
        let shard = Arc::new(Shard { subscriber, commands });
        Ok((shard, Pump { messages, reconnects }))
    }

    /// Resolves once [`quit`](Self::quit) has been called.
    pub(crate) async fn quitting(&self) {
        let mut quit = self.quit.subscribe();
        let _ = quit.wait_for(|quit| *quit).await;
    }

    /// Closes every master's clients.
    pub(crate) async fn quit(&self) {
        self.quit.send_replace(true);
        let shards: Vec<Arc<Shard>> = self.read().shards.values().cloned().collect();
        let quits = shards.iter().map(|shard| async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), shard.subscriber.quit()).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), shard.commands.quit()).await;
        });
        futures_util::future::join_all(quits).await;
    }
}

fn quit_in_background(shard: &Arc<Shard>) {
    let shard = Arc::clone(shard);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), shard.subscriber.quit()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), shard.commands.quit()).await;
    });
}

/// Forwards one master's subscriber messages and reconnects.
struct Pump {
    messages: broadcast::Receiver<Message>,
    reconnects: broadcast::Receiver<Server>,
}

impl Pump {
    async fn run(
        mut self,
        server: Server,
        announce: bool,
        messages: broadcast::Sender<Message>,
        reconnects: broadcast::Sender<Server>,
    ) {
        // The first connect of a master present from the start needs no resubscribe.
        let mut skip_connect = !announce;
        loop {
            tokio::select! {
                biased;
                message = self.messages.recv() => match message {
                    Ok(message) => {
                        let _ = messages.send(message);
                    }
                    Err(RecvError::Lagged(dropped)) => self.lost(&server, dropped, &reconnects),
                    Err(RecvError::Closed) => return,
                },
                reconnect = self.reconnects.recv() => match reconnect {
                    Ok(_) if skip_connect => skip_connect = false,
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let _ = reconnects.send(server.clone());
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// Messages were lost on this master's channel: its channels are recovered as after a reconnect.
    fn lost(&self, server: &Server, dropped: u64, reconnects: &broadcast::Sender<Server>) {
        tracing::warn!(%server, dropped, "the Redis client's message channel overflowed; recovering from the streams");
        let _ = reconnects.send(server.clone());
    }
}
