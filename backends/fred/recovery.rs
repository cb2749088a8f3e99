//! Recovery policy: after a reconnect, a moved slot or a message channel overflow, what to resubscribe, redeliver, or signal as a gap.
//!
//! A recovery resubscribes the channels in its scope (once per recovery,
//! however often it is retried), asks the topology whether the data behind
//! them may be another server's than before, then reads each feed's stream
//! after its cursor up to one consistent cut and delivers what was missed, in
//! entry id order, before any newer live message. Where that cannot be done
//! (retention off, the last delivered entry gone, a position unknown, writes
//! lost with a replaced master) the subscribers get a gap signal.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::StreamId;
use super::fanout::{Cursor, Fanout, offer_all, offer_members};
use super::order::{entry_ids_are_one_sequence, merge};
use super::shared::Shared;
use super::slots::Scope;
use super::streams::{Start, Streams};
use super::subscription::Delivery;
use crate::{Audience, Category, Error, Event, GroupId, StreamKind, UserId};

/// How long to wait before retrying a failed resubscribe or recovery.
const RECOVERY_RETRY: Duration = Duration::from_millis(500);

/// What a recovery must do, accumulated until it succeeds.
#[derive(Clone, Default)]
struct PendingRecovery {
    resubscribe: bool,
    reconnected: bool,
    /// The channels to resubscribe and recover.
    scope: Scope,
}

/// The recovery of one feed, read before any state changes.
struct FeedRecovery<C> {
    gap: bool,
    events: Vec<(StreamId, Event<C>)>,
    cursor: Cursor,
}

/// The dispatcher's recovery to do, if any, and when to try it next.
#[derive(Default)]
pub(crate) struct Recovery {
    pending: Option<PendingRecovery>,
    retry_at: Option<Instant>,
}

impl Recovery {
    /// Whether a recovery waits to be done (live messages wait meanwhile).
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When to try the pending recovery again.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Has the run loop start the pending recovery at once.
    pub(crate) fn retry_now(&mut self) {
        self.retry_at = Some(Instant::now());
    }

    /// Adds to the pending recovery, or starts one.
    pub(crate) fn note(&mut self, scope: Scope, resubscribe: bool, reconnected: bool) {
        match self.pending.as_mut() {
            Some(pending) => {
                pending.scope.widen(scope);
                pending.resubscribe |= resubscribe;
                pending.reconnected |= reconnected;
            }
            None => self.pending = Some(PendingRecovery { resubscribe, reconnected, scope }),
        }
    }

    /// Tries the pending recovery; on failure, schedules a retry.
    pub(crate) async fn attempt<C: Category>(&mut self, shared: &Shared<C>, fanout: &mut Fanout<C>) {
        let Some(pending) = self.pending.clone() else { return };
        match self.recover(shared, fanout, pending).await {
            Ok(()) => {
                self.pending = None;
                self.retry_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, "recovery after an outage failed; retrying");
                self.retry_at = Some(Instant::now() + RECOVERY_RETRY);
            }
        }
    }

    #[tracing::instrument(level = "info", name = "ssehub.recovery", skip_all)]
    async fn recover<C: Category>(
        &mut self,
        shared: &Shared<C>,
        fanout: &mut Fanout<C>,
        pending: PendingRecovery,
    ) -> Result<(), Error> {
        let layout = &shared.layout;
        let scope = &pending.scope;
        let broadcast_channel = layout.channel(Audience::Broadcast);
        let broadcast_in_scope = scope.covers(&broadcast_channel);
        let user_in_scope = |user: &UserId| scope.covers(&layout.channel(Audience::User(*user)));
        let group_in_scope = |group: &GroupId| scope.covers(&layout.channel(Audience::Group(*group)));
        if pending.resubscribe {
            let mut channels: Vec<String> = Vec::new();
            channels.extend(broadcast_in_scope.then(|| broadcast_channel.clone()));
            channels.extend(scope.covers(&shared.control_channel).then(|| shared.control_channel.clone()));
            channels.extend(
                fanout.users.keys().filter(|u| user_in_scope(u)).map(|u| layout.channel(Audience::User(*u))),
            );
            channels.extend(
                fanout
                    .groups
                    .keys()
                    .filter(|g| group_in_scope(g))
                    .map(|g| layout.channel(Audience::Group(*g))),
            );
            let count = channels.len();
            fanout.resubscribe(channels).await?;
            // Done: a retry of what follows need not resubscribe again.
            if let Some(p) = self.pending.as_mut() {
                p.resubscribe = false;
            }
            tracing::info!(channels = count, "resubscribed and live again");
        }
        let continuity = shared.topology.check_continuity(scope, pending.reconnected).await?;
        if shared.retention.is_none() {
            // Nothing to recover from: whatever was published meanwhile is lost to these subscribers.
            let mut gapped = 0u64;
            for (user, feed) in &mut fanout.users {
                if broadcast_in_scope || user_in_scope(user) {
                    gapped += feed.subscribers.len() as u64;
                    offer_all(&shared.counters, &mut feed.subscribers, || Delivery::Gap(None), None);
                }
            }
            let mut gone = Vec::new();
            for (group, feed) in &mut fanout.groups {
                if group_in_scope(group) {
                    gapped += feed.members.len() as u64;
                    let gap = || Delivery::Gap(Some(StreamKind::Group(*group)));
                    gone.extend(offer_members(&shared.counters, &mut feed.members, gap, None));
                }
            }
            fanout.drop_members(gone);
            fanout.gapped(gapped, "retention is off");
            fanout.release_emptied();
            shared.topology.commit(continuity);
            return Ok(());
        }

        let streams = &shared.streams;
        let broadcast_cursor = fanout.broadcast.cursor;
        let user_cursors: Vec<(UserId, Cursor)> = fanout
            .users
            .iter()
            .filter(|(u, f)| f.live && user_in_scope(u))
            .map(|(u, f)| (*u, f.feed.cursor))
            .collect();
        // Every feed is read up to one horizon, so the merge of any two is a consistent cut.
        let horizon = streams.horizon().await?;
        let broadcast_lost = continuity.may_have_lost_entries(&broadcast_channel);
        let broadcast = async {
            if broadcast_in_scope {
                recover_feed(streams, Audience::Broadcast, broadcast_cursor, broadcast_lost, horizon)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let users = futures_util::future::try_join_all(user_cursors.iter().map(|(user, cursor)| {
            let audience = Audience::User(*user);
            let lost = continuity.may_have_lost_entries(&layout.channel(audience));
            recover_feed(streams, audience, *cursor, lost, horizon)
        }));
        let group_cursors: Vec<(GroupId, Cursor)> = fanout
            .groups
            .iter()
            .filter(|(g, f)| f.live && group_in_scope(g))
            .map(|(g, f)| (*g, f.feed.cursor))
            .collect();
        let groups = futures_util::future::try_join_all(group_cursors.iter().map(|(group, cursor)| {
            let audience = Audience::Group(*group);
            let lost = continuity.may_have_lost_entries(&layout.channel(audience));
            recover_feed(streams, audience, *cursor, lost, horizon)
        }));
        let (broadcast, users, groups) = tokio::try_join!(broadcast, users, groups)?;

        let mut recovered = 0u64;
        let mut gapped = 0u64;
        let (broadcast_gap, broadcast_events) = match broadcast {
            Some(broadcast) => {
                recovered += broadcast.events.len() as u64;
                fanout.broadcast.cursor = broadcast.cursor;
                fanout.broadcast.recovered = broadcast.events.iter().map(|(_, e)| e.id()).collect();
                (broadcast.gap || continuity.lost_writes(&broadcast_channel), broadcast.events)
            }
            None => (false, Vec::new()),
        };
        let mut own_recoveries: HashMap<UserId, FeedRecovery<C>> =
            user_cursors.into_iter().map(|(user, _)| user).zip(users).collect();
        let one_sequence = entry_ids_are_one_sequence(layout);
        for (user, feed) in fanout.users.iter_mut().filter(|(_, f)| f.live) {
            let own = own_recoveries.remove(user);
            if own.is_none() && !broadcast_gap && broadcast_events.is_empty() {
                continue;
            }
            let mut own_gap = false;
            let own_events = match own {
                Some(own) => {
                    recovered += own.events.len() as u64;
                    feed.feed.cursor = own.cursor;
                    feed.feed.recovered = own.events.iter().map(|(_, e)| e.id()).collect();
                    own_gap = own.gap || continuity.lost_writes(&layout.channel(Audience::User(*user)));
                    own.events
                }
                None => Vec::new(),
            };
            let gap = match (own_gap, broadcast_gap) {
                (false, false) => None,
                (true, false) => Some(Some(StreamKind::Own)),
                (false, true) => Some(Some(StreamKind::Broadcast)),
                (true, true) => Some(None),
            };
            if let Some(stream) = gap {
                gapped += feed.subscribers.len() as u64;
                offer_all(&shared.counters, &mut feed.subscribers, || Delivery::Gap(stream), None);
            }
            for event in merge(own_events, broadcast_events.clone(), one_sequence) {
                let delivery = || Delivery::Event(event.clone());
                offer_all(&shared.counters, &mut feed.subscribers, delivery, Some(&event));
            }
        }
        // Each group's missed events to its members, after a gap signal where some may be lost.
        let mut gone = Vec::new();
        for ((group, _), recovery) in group_cursors.into_iter().zip(groups) {
            let Some(feed) = fanout.groups.get_mut(&group) else { continue };
            recovered += recovery.events.len() as u64;
            feed.feed.cursor = recovery.cursor;
            feed.feed.recovered = recovery.events.iter().map(|(_, e)| e.id()).collect();
            if recovery.gap || continuity.lost_writes(&layout.channel(Audience::Group(group))) {
                gapped += feed.members.len() as u64;
                let gap = || Delivery::Gap(Some(StreamKind::Group(group)));
                gone.extend(offer_members(&shared.counters, &mut feed.members, gap, None));
            }
            for (_, event) in &recovery.events {
                let delivery = || Delivery::Event(event.clone());
                gone.extend(offer_members(&shared.counters, &mut feed.members, delivery, Some(event)));
            }
        }
        fanout.drop_members(gone);
        shared.counters.recovered_events(recovered);
        fanout.gapped(gapped, continuity.cause());
        fanout.release_emptied();
        shared.topology.commit(continuity);
        Ok(())
    }
}

/// Reads what one feed missed after its cursor, and whether some of it is gone.
async fn recover_feed<C: Category>(
    streams: &Streams<C>,
    audience: Audience,
    cursor: Cursor,
    entries_may_be_lost: bool,
    horizon: StreamId,
) -> Result<FeedRecovery<C>, Error> {
    let key = streams.layout.stream(audience);
    let position = match (cursor.stream_id, cursor.event_id) {
        (Some(position), _) => Some(position),
        (None, Some(event_id)) => streams.locate(&key, event_id).await?,
        (None, None) => None,
    };
    let Some(position) = position else {
        // The position is unknown: what followed cannot be told apart from what came before.
        let end = streams.last_stream_id(&key).await?;
        return Ok(FeedRecovery {
            gap: true,
            events: Vec::new(),
            cursor: Cursor { stream_id: Some(end), event_id: None },
        });
    };
    let gap = if position == StreamId::ZERO {
        // The stream was empty when the feed started: something is lost only if entries were removed
        // since, or the server lost its data (a restart; a failover without replica acks).
        entries_may_be_lost
            || streams.trim_info(&key).await?.is_some_and(|info| info.removed_any() != Some(false))
    } else {
        // Trimming removes the oldest entries: while the last delivered entry is held, so is all that
        // followed. Once it is gone (trimmed, expired, or lost in a restart) nothing proves that what
        // followed it survived, so the subscribers are told.
        !streams.entry_exists(&key, position).await?
    };
    let events = streams.read_from(audience, Start::After(position), horizon).await?;
    let cursor = match events.last() {
        Some((id, event)) => Cursor { stream_id: Some(*id), event_id: Some(event.id()) },
        None => Cursor { stream_id: Some(position), event_id: cursor.event_id },
    };
    Ok(FeedRecovery { gap, events, cursor })
}
