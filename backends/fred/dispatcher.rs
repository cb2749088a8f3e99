//! The dispatcher: one task that owns the local subscriptions, decodes each message once and fans it out.
//!
//! It also keeps the subscriber connection whole across outages: on a
//! reconnect (or when fred's internal message channel overflowed) it starts a
//! recovery (see `recovery`), and holds live messages back until it is done,
//! so what was missed is delivered first, in order. Channel changes go to the
//! sequencer task (see `sequencer`), which confirms new channels live.
//!
//! Live messages are handled as they arrive. Each stream's messages come
//! over one connection (its master's, on a cluster), in the order they were
//! published, so each stream's order is kept; streams are not ordered against
//! each other (a client's cursor holds a position per stream), so a slow
//! master delays its own streams only. Every delivered event carries its
//! position in its stream: its entry, where the message names it.
//!
//! The dispatcher does not know whether it runs on one server or a cluster:
//! the topology says which channels a reconnect touched.

use std::sync::Arc;

use ::fred::types::Message;
use ::fred::types::config::Server;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::oneshot;

use super::codec::{self, Decoded, Skip};
use super::fanout::Fanout;
use super::presence::{self, PresenceWriter};
use super::recovery::Recovery;
use super::sequencer::Confirmed;
use super::shared::Shared;
use super::slots::Scope;
use super::stats::Counters;
use super::subscription::Command;
use super::topology::Incoming;
use crate::{Category, Position};

/// Messages handled in a row before pending commands get a turn.
const MESSAGE_BURST: u32 = 256;

pub(crate) struct Dispatcher<C: Category> {
    shared: Arc<Shared<C>>,
    commands: UnboundedReceiver<Command<C>>,
    confirms: UnboundedReceiver<Confirmed>,
    messages: broadcast::Receiver<Message>,
    reconnects: broadcast::Receiver<Server>,
    fanout: Fanout<C>,
    recovery: Recovery,
    /// Writes this hub's presence counts, when presence is on.
    presence: Option<PresenceWriter>,
    /// Told once the dispatcher has wound down (`RedisHub::shutdown`).
    on_stopped: Option<oneshot::Sender<()>>,
}

impl<C: Category> Dispatcher<C> {
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        commands: UnboundedReceiver<Command<C>>,
        confirms: UnboundedReceiver<Confirmed>,
        incoming: Incoming,
        fanout: Fanout<C>,
    ) -> Self {
        let Incoming { messages, reconnects } = incoming;
        let presence = shared.presence_ttl.map(PresenceWriter::new);
        Self {
            shared,
            commands,
            confirms,
            messages,
            reconnects,
            fanout,
            recovery: Recovery::default(),
            presence,
            on_stopped: None,
        }
    }

    /// Runs until the hub is dropped or the client closes.
    pub(crate) async fn run(mut self) {
        let mut burst = 0u32;
        let mut presence_tick = tokio::time::interval(presence::FLUSH_EVERY);
        presence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let recovering = self.recovery.is_pending();
            let retry_at = self.recovery.retry_at().unwrap_or_else(tokio::time::Instant::now);
            if burst >= MESSAGE_BURST {
                // A flood of messages must not starve subscribes and unsubscribes.
                burst = 0;
                match self.commands.try_recv() {
                    Ok(command) => {
                        if self.on_command(command) {
                            break;
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
            }
            tokio::select! {
                biased;
                reconnect = self.reconnects.recv() => match reconnect {
                    Ok(server) => self.on_reconnect(Some(server)).await,
                    Err(RecvError::Lagged(_)) => self.on_reconnect(None).await,
                    Err(RecvError::Closed) => break,
                },
                Some(confirmed) = self.confirms.recv() => self.fanout.on_confirmed(confirmed),
                _ = tokio::time::sleep_until(retry_at), if recovering && self.recovery.retry_at().is_some() => {
                    self.recovery.attempt(&self.shared, &mut self.fanout).await;
                }
                message = self.messages.recv(), if !recovering => {
                    burst += 1;
                    match message {
                        Ok(message) => {
                            self.on_message(message);
                            burst = self.on_arrived_messages(burst).await;
                        }
                        Err(RecvError::Lagged(dropped)) => {
                            self.overflowed(dropped);
                            self.recovery.attempt(&self.shared, &mut self.fanout).await;
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
                _ = presence_tick.tick(), if self.presence.is_some() => {
                    let counts = self.fanout.open_per_user();
                    if let Some(writer) = self.presence.as_mut() {
                        writer.tick(&self.shared, counts);
                    }
                }
                command = self.commands.recv() => {
                    burst = 0;
                    match command {
                        Some(command) => if self.on_command(command) {
                            break;
                        },
                        None => break,
                    }
                }
            }
        }
        self.fanout.close_all();
        if let Some(ttl) = self.shared.presence_ttl {
            presence::leave(&self.shared, ttl).await;
        }
        self.shared.topology.quit().await;
        if let Some(stopped) = self.on_stopped.take() {
            let _ = stopped.send(());
        }
        tracing::debug!("Redis hub dispatcher stopped");
    }

    /// Handles `command`; returns whether the dispatcher must stop (the hub was closed).
    fn on_command(&mut self, command: Command<C>) -> bool {
        match command {
            Command::Subscribe { reader, filter, reply } => self.fanout.subscribe(reader, filter, reply),
            Command::Unsubscribe { user, subscriber } => self.fanout.unsubscribe(user, subscriber),
            Command::Revoke { user, reply } => {
                self.fanout.revoke(user);
                let _ = reply.send(());
            }
            Command::Resync(scope) => {
                self.recovery.note(scope, true, true);
                // The run loop's retry timer starts the recovery.
                self.recovery.retry_now();
            }
            Command::Close => return true,
            Command::CloseThen(stopped) => {
                self.on_stopped = Some(stopped);
                return true;
            }
        }
        false
    }

    /// The client's message channel dropped `dropped` messages: every channel is recovered from the streams.
    fn overflowed(&mut self, dropped: u64) {
        Counters::add(&self.shared.counters.message_channel_overflows, 1);
        tracing::warn!(dropped, "the Redis client's message channel overflowed; recovering from the streams");
        self.recovery.note(Scope::All, false, false);
    }

    /// Handles the messages already in the client's channel, in the same turn (no `select!` per
    /// message), up to the burst limit or until a reconnect waits; returns the burst count so far.
    async fn on_arrived_messages(&mut self, mut burst: u32) -> u32 {
        while burst < MESSAGE_BURST && self.reconnects.is_empty() {
            match self.messages.try_recv() {
                Ok(message) => {
                    burst += 1;
                    self.on_message(message);
                }
                Err(broadcast::error::TryRecvError::Lagged(dropped)) => {
                    self.overflowed(dropped);
                    self.recovery.attempt(&self.shared, &mut self.fanout).await;
                    break;
                }
                // Empty; or closed, which the run loop sees on its next receive.
                Err(_) => break,
            }
        }
        burst
    }

    /// Decodes one live message and hands it to the fan-out.
    fn on_message(&mut self, message: Message) {
        let shared = Arc::clone(&self.shared);
        let channel: &str = &message.channel;
        if *channel == *shared.control_channel {
            match message.value.as_bytes().and_then(codec::disconnect_of) {
                // This hub's own order: it ended its subscriptions before it sent it, and a
                // subscription made since must not end.
                Some((_, from)) if from == shared.hub_id => {}
                Some((user, _)) => self.fanout.revoke(user),
                None => shared.counters.skipped(channel, &Skip::BadControl),
            }
            return;
        }
        let Some(audience) = shared.layout.audience_of_channel(channel) else {
            shared.counters.skipped(channel, &Skip::UnknownChannel);
            return;
        };
        if !self.fanout.holds(audience) {
            // In flight when the channel was released.
            return;
        }
        let Some(bytes) = message.value.as_bytes() else {
            shared.counters.skipped(channel, &Skip::NotUtf8);
            return;
        };
        let Decoded { event, stream_id } = match shared.decoder.envelope(audience, bytes) {
            Ok(decoded) => decoded,
            Err(reason) => {
                shared.counters.skipped(channel, &reason);
                return;
            }
        };
        let event = match (stream_id, shared.retention) {
            (Some(entry), _) => {
                // Whatever this hub publishes next gets a later id, in every stream.
                shared.clock.observe(entry);
                event.with_position(entry.position())
            }
            // Published by another writer, which names no entry: a replay finds the event by its id.
            (None, Some(_)) => {
                let id = event.id();
                event.with_position(Position::AfterEvent(id))
            }
            // Nothing is retained: there is no place to resume from.
            (None, None) => event,
        };
        self.fanout.deliver(audience, &Decoded { event, stream_id });
    }

    /// A connection of the subscriber client (re)connected; `None` if which one is unknown.
    async fn on_reconnect(&mut self, server: Option<Server>) {
        Counters::add(&self.shared.counters.reconnects, 1);
        let scope = self.shared.topology.scope_of_reconnect(server);
        tracing::info!(
            channels = self.fanout.users.len() + self.fanout.groups.len() + 1,
            ?scope,
            "Redis subscriber connection re-established; resubscribing"
        );
        self.recovery.note(scope, true, true);
        self.recovery.attempt(&self.shared, &mut self.fanout).await;
    }
}
