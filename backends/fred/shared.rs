//! `Shared`: what the hub's tasks share (settings, counters, the topology, the stream reader, the hybrid clock).

use std::sync::Arc;
use std::time::Duration;

use ::fred::types::scripts::Script;

use super::codec::Decoder;
use super::keys::KeyLayout;
use super::order::HybridClock;
use super::stats::Counters;
use super::streams::Streams;
use super::topology::Topology;
use crate::Retention;
use crate::backend::SubscriptionLimits;

/// What the hub's tasks share.
pub(crate) struct Shared<C> {
    pub(crate) layout: KeyLayout,
    /// The layout's control channel, compared with every message's channel.
    pub(crate) control_channel: String,
    /// This hub's own id in the control messages it sends and its presence counts (random, never 0).
    pub(crate) hub_id: u64,
    /// How long this hub's presence counts live unless refreshed; `None`: presence is off.
    pub(crate) presence_ttl: Option<Duration>,
    pub(crate) presence_script: Script,
    pub(crate) presence_query_script: Script,
    pub(crate) retention: Option<Retention>,
    pub(crate) decoder: Decoder<C>,
    pub(crate) queue_capacity: usize,
    pub(crate) subscription_limits: SubscriptionLimits,
    pub(crate) counters: Arc<Counters>,
    pub(crate) topology: Arc<Topology>,
    pub(crate) streams: Streams<C>,
    /// The one-event publish script (cluster layouts).
    pub(crate) publish_script: Script,
    pub(crate) replica_acks: ReplicaAcks,
    /// How long after storing an event a publish of the same event id stores nothing (how long its marker key lives).
    pub(crate) dedupe_window: Duration,
    /// The highest entry id this hub gave out or received: new entries get higher ids.
    pub(crate) clock: HybridClock,
}

/// How many replicas must hold an event before its publish succeeds (Redis `WAIT`); 0: none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplicaAcks {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}
