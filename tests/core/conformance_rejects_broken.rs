//! Broken toy backends the conformance suite must reject, each by the check that names its rule.
//!
//! Each toy wraps a `MemoryHub` and breaks one rule. A check that passes a
//! broken backend is a check that does not test its rule.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use futures::executor::block_on;
use ssehub::conformance::{self, HubFactory, HubOptions};
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::{MemoryHub, Subscription};
use ssehub::{
    Audience, CategorySet, Error, Event, EventId, EventSource, GroupId, Groups, LimitScope, Position,
    Positions, Publisher, Reader, Replay, ReplayStatus, StreamKind, StreamReplay, UserId,
};

/// The one rule a toy backend breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Replay after a retained own event reports `Complete` although broadcasts after it were trimmed.
    CompleteDespiteTrimmedBroadcasts,
    /// A truncated replay also holds the Last-Event-ID's own event.
    ReplaysTheLastEventId,
    /// Changes one digit of every event's data, keeping its id.
    CorruptsData,
    /// Silently leaves out the third event of every subscription.
    DropsOneLiveEvent,
    /// Yields the third event of every subscription twice.
    RepeatsOneLiveEvent,
    /// Ends a subscription with `None` on close, without `Err(Closed)`.
    EndsWithoutClosed,
    /// Replays both streams after the later of the two positions: one order
    /// for every stream, as if the streams were delivered in publish order.
    ReplaysByOneOrder,
    /// Replays each stream from just before its position: the event at the
    /// position comes again.
    ReplaysThePosition,
    /// Reports every stream truncated when one is.
    GapsEveryStream,
    /// Adds other users' events to a replay after positions.
    ReplaysOtherUsers,
    /// `close` refuses new work but leaves open subscriptions open (until the last handle goes).
    CloseLeavesSubscriptionsOpen,
    /// `disconnect` answers `Ok` and ends nothing.
    DisconnectEndsNothing,
    /// A subscribe over the per-user cap succeeds (on a hub of its own).
    IgnoresTheUserCap,
    /// A subscription also reads every group any earlier subscription read: group events reach non-members.
    DeliversGroupEventsToNonMembers,
}

#[derive(Clone)]
struct Broken {
    hub: MemoryHub<C>,
    fault: Fault,
    history_len: usize,
    published: Arc<Mutex<Vec<Event<C>>>>,
    closed: Arc<AtomicBool>,
    /// Every group a subscription read so far.
    groups_read: Arc<Mutex<Vec<GroupId>>>,
}

fn corrupt(event: Event<C>) -> Event<C> {
    let mut data = event.data().to_string();
    match data.bytes().position(|b| b.is_ascii_digit()) {
        Some(at) => {
            let digit = data.as_bytes()[at];
            let other = if digit == b'9' { '0' } else { char::from(digit + 1) };
            data.replace_range(at..=at, &other.to_string());
            Event::from_parts(
                event.id(),
                event.audience(),
                event.event_type(),
                event.category(),
                data,
                event.occurred_at(),
            )
            .expect("still valid")
        }
        None => Event::from_parts(
            event.id(),
            event.audience(),
            &format!("{}x", event.event_type()),
            event.category(),
            data,
            event.occurred_at(),
        )
        .expect("still valid"),
    }
}

impl EventSource<C> for Broken {
    type Subscription = BrokenStream;

    async fn subscribe(
        &self,
        reader: impl Into<Reader> + Send,
        filter: CategorySet<C>,
    ) -> Result<BrokenStream, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut reader = reader.into();
        if self.fault == Fault::DeliversGroupEventsToNonMembers {
            let mut known = self.groups_read.lock().unwrap();
            known.extend(reader.groups.iter());
            reader.groups = Groups::new(known.iter().copied()).unwrap();
        }
        let inner = match self.hub.subscribe(&reader, filter).await {
            Err(Error::TooManySubscriptions { scope: LimitScope::User, .. })
                if self.fault == Fault::IgnoresTheUserCap =>
            {
                MemoryHub::new().subscribe(reader, filter).await?
            }
            subscribed => subscribed?,
        };
        Ok(BrokenStream { inner, fault: self.fault, seen: 0, repeat: None, ended: false })
    }

    async fn disconnect(&self, user: UserId) -> Result<(), Error> {
        match self.fault {
            Fault::DisconnectEndsNothing => Ok(()),
            _ => self.hub.disconnect(user).await,
        }
    }

    async fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> Result<Replay<C>, Error> {
        let mut replay = self.hub.missed_events(user, last_event_id, filter).await?;
        let published = self.published.lock().unwrap().clone();
        let position = published.iter().position(|e| e.id() == last_event_id);
        match self.fault {
            Fault::CompleteDespiteTrimmedBroadcasts if replay.status == ReplayStatus::Truncated => {
                // The id is an own event still retained: the truncation can only come from the broadcasts.
                if let Some(position) = position.filter(|p| published[*p].audience() == Audience::User(user))
                {
                    let newer_own = published[position + 1..]
                        .iter()
                        .filter(|e| e.audience() == Audience::User(user))
                        .count();
                    if newer_own < self.history_len {
                        replay.status = ReplayStatus::Complete;
                    }
                }
            }
            Fault::ReplaysTheLastEventId if replay.status == ReplayStatus::Truncated => {
                if let Some(position) = position {
                    replay.events.insert(0, published[position].clone());
                }
            }
            Fault::CorruptsData => replay.events = replay.events.into_iter().map(corrupt).collect(),
            _ => {}
        }
        Ok(replay)
    }

    fn horizon(&self) -> Option<Position> {
        self.hub.horizon()
    }

    async fn missed_since(
        &self,
        reader: impl Into<Reader> + Send,
        mut from: Positions,
        filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        let reader = reader.into();
        let user = reader.user;
        match self.fault {
            Fault::ReplaysByOneOrder => {
                if let (Some(own), Some(broadcast)) = (from.own, from.broadcast)
                    && let (Some(a), Some(b)) = (own.as_entry(), broadcast.as_entry())
                {
                    let later = Position::entry(a.0.max(b.0), a.1.max(b.1));
                    from = Positions { own: Some(later), broadcast: Some(later), ..from };
                }
            }
            Fault::ReplaysThePosition => {
                for kind in StreamKind::ALL {
                    if let Some(Position::Entry { ms, seq }) = from.get(kind) {
                        from.set(kind, Some(Position::entry(ms, seq.saturating_sub(1))));
                    }
                }
            }
            _ => {}
        }
        let mut replay = self.hub.missed_since(&reader, from, filter).await?;
        match self.fault {
            Fault::GapsEveryStream
                if !replay.own.status.is_complete() || !replay.broadcast.status.is_complete() =>
            {
                replay.own.status = ReplayStatus::Truncated;
                replay.broadcast.status = ReplayStatus::Truncated;
            }
            Fault::ReplaysOtherUsers => {
                let published = self.published.lock().unwrap().clone();
                replay.events.extend(
                    published
                        .into_iter()
                        .filter(|e| e.audience() != Audience::Broadcast && !e.audience().includes(user)),
                );
            }
            Fault::CorruptsData => replay.events = replay.events.into_iter().map(corrupt).collect(),
            _ => {}
        }
        Ok(replay)
    }
}

impl Publisher<C> for Broken {
    async fn publish(&self, event: Event<C>) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.hub.publish(event.clone()).await?;
        self.published.lock().unwrap().push(event);
        Ok(())
    }
}

struct BrokenStream {
    inner: Subscription<C>,
    fault: Fault,
    seen: usize,
    repeat: Option<Event<C>>,
    ended: bool,
}

impl Stream for BrokenStream {
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(event) = this.repeat.take() {
            return Poll::Ready(Some(Ok(event)));
        }
        loop {
            return match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    this.seen += 1;
                    match this.fault {
                        Fault::CorruptsData => Poll::Ready(Some(Ok(corrupt(event)))),
                        Fault::DropsOneLiveEvent if this.seen == 3 => continue,
                        Fault::RepeatsOneLiveEvent if this.seen == 3 => {
                            this.repeat = Some(event.clone());
                            Poll::Ready(Some(Ok(event)))
                        }
                        _ => Poll::Ready(Some(Ok(event))),
                    }
                }
                // Both the memory backend today and this toy end a closed subscription with `None`;
                // the toy also swallows the `Err(Closed)` a fixed backend yields.
                Poll::Ready(Some(Err(Error::Closed))) | Poll::Ready(None)
                    if this.fault == Fault::EndsWithoutClosed =>
                {
                    this.ended = true;
                    Poll::Ready(None)
                }
                other => other,
            };
        }
    }
}

struct BrokenFactory(Fault);

impl HubFactory for BrokenFactory {
    type Hub = Broken;

    async fn create(&self, options: HubOptions) -> Broken {
        let hub = MemoryHub::builder()
            .queue_capacity(options.queue_capacity)
            .max_subscriptions_per_user(options.subscription_limits.max_per_user())
            .max_subscriptions(options.subscription_limits.max_per_process())
            .retention(
                options
                    .retention
                    .then(|| ssehub::Retention::default().with_max_events(options.history_len as u64)),
            )
            .build();
        Broken {
            hub,
            fault: self.0,
            history_len: options.history_len,
            published: Arc::default(),
            closed: Arc::default(),
            groups_read: Arc::default(),
        }
    }

    async fn close(&self, hub: &Broken) {
        hub.closed.store(true, Ordering::Release);
        if self.0 != Fault::CloseLeavesSubscriptionsOpen {
            hub.hub.close();
        }
    }

    async fn active_subscriptions(&self, hub: &Broken) -> usize {
        hub.hub.stats().open_subscriptions
    }
}

/// Runs `check` against the toy with `fault`; returns its panic message, or fails the test if it passed.
fn rejection<Fut: Future<Output = ()>>(
    fault: Fault,
    check: impl FnOnce(&'static BrokenFactory) -> Fut,
) -> String {
    let factory: &'static BrokenFactory = Box::leak(Box::new(BrokenFactory(fault)));
    let outcome = catch_unwind(AssertUnwindSafe(|| block_on(check(factory))));
    let payload = match outcome {
        Ok(()) => panic!("the suite passed a backend with fault {fault:?}"),
        Err(payload) => payload,
    };
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn assert_names(message: &str, wanted: &[&str]) {
    for part in wanted {
        assert!(message.contains(part), "the rejection does not say {part:?}: {message}");
    }
}

#[test]
fn complete_although_broadcasts_were_trimmed_is_rejected_by_the_truncation_check() {
    let message = rejection(
        Fault::CompleteDespiteTrimmedBroadcasts,
        conformance::replay_after_trimmed_id_reports_truncated,
    );
    assert_names(
        &message,
        &[
            "rule: replay after an id history no longer covers is truncated",
            "with broadcasts trimmed past it: the replay is complete, expected truncated",
        ],
    );
}

#[test]
fn events_at_or_before_the_last_event_id_in_a_truncated_replay_are_rejected_by_the_truncation_check() {
    let message =
        rejection(Fault::ReplaysTheLastEventId, conformance::replay_after_trimmed_id_reports_truncated);
    assert_names(
        &message,
        &[
            "rule: replay after an id history no longer covers is truncated and holds exactly the retained events published after the id",
            "replay after a trimmed own event",
            "unexpected [",
        ],
    );
}

#[test]
fn events_at_or_before_the_last_event_id_are_rejected_by_the_generated_workloads() {
    let message =
        rejection(Fault::ReplaysTheLastEventId, conformance::generated_workloads_deliver_and_replay_exactly);
    assert_names(&message, &["rule: a replay never holds an event published at or before the Last-Event-ID"]);
}

#[test]
fn corrupted_data_is_rejected_by_the_own_events_check_and_the_data_check() {
    let message = rejection(Fault::CorruptsData, conformance::subscriber_receives_own_events_only);
    assert_names(&message, &["rule: a subscription yields its user's events", "data differs from byte"]);
    let message = rejection(
        Fault::CorruptsData,
        conformance::event_data_of_every_json_kind_is_delivered_and_replayed_unchanged,
    );
    assert_names(
        &message,
        &[
            "rule: event data is JSON text of any kind and is delivered live and replayed unchanged",
            "data differs from byte",
        ],
    );
}

#[test]
fn a_silently_dropped_live_event_is_rejected_by_the_own_events_check_and_the_generated_workloads() {
    let message = rejection(Fault::DropsOneLiveEvent, conformance::subscriber_receives_own_events_only);
    assert_names(&message, &["rule: a subscription yields its user's events", "missing [0"]);
    let message =
        rejection(Fault::DropsOneLiveEvent, conformance::generated_workloads_deliver_and_replay_exactly);
    assert_names(
        &message,
        &[
            "rule: a subscription yields exactly its user's events and the broadcasts passing its filter",
            "missing [0",
        ],
    );
}

#[test]
fn a_repeated_live_event_is_rejected_by_the_own_events_check_and_the_generated_workloads() {
    let message = rejection(Fault::RepeatsOneLiveEvent, conformance::subscriber_receives_own_events_only);
    assert_names(&message, &["rule: a subscription yields its user's events", "repeated [0"]);
    let message =
        rejection(Fault::RepeatsOneLiveEvent, conformance::generated_workloads_deliver_and_replay_exactly);
    assert_names(&message, &["rule: a subscription yields exactly its user's events", "repeated [0"]);
}

#[test]
fn ending_without_closed_is_rejected_by_both_close_checks() {
    for check in [
        rejection(Fault::EndsWithoutClosed, conformance::closing_a_hub_ends_every_subscription_with_closed),
        rejection(
            Fault::EndsWithoutClosed,
            conformance::dropping_every_hub_handle_ends_every_subscription_with_closed,
        ),
    ] {
        assert_names(&check, &["rule: when a hub closes", "ended without Err(Error::Closed)"]);
    }
}

#[test]
fn replaying_every_stream_after_one_position_is_rejected_by_the_interleaving_check_only() {
    let message = rejection(
        Fault::ReplaysByOneOrder,
        conformance::resume_is_exactly_once_whatever_the_interleaving_of_streams,
    );
    assert_names(
        &message,
        &["rule: exactly once holds whatever the interleaving of the streams", "missing ["],
    );
    // Delivered in publish order, the old design's replay loses nothing: only the interleaving shows it.
    block_on(conformance::resume_delivers_every_event_exactly_once_under_concurrent_publishing(
        &BrokenFactory(Fault::ReplaysByOneOrder),
    ));
}

#[test]
fn replaying_the_event_at_the_position_is_rejected_by_the_frame_cursor_check() {
    let message = rejection(
        Fault::ReplaysThePosition,
        conformance::every_frames_cursor_resumes_exactly_after_that_frame,
    );
    assert_names(&message, &["rule: every frame's id is a cursor", "unexpected ["]);
}

#[test]
fn a_gap_for_every_stream_when_one_is_stale_is_rejected_by_the_stream_gap_check() {
    let message = rejection(
        Fault::GapsEveryStream,
        conformance::a_stale_position_in_one_stream_signals_a_gap_for_that_stream_only,
    );
    assert_names(
        &message,
        &["rule: a position a stream's history no longer covers gives a gap for that stream only"],
    );
}

#[test]
fn other_users_events_in_a_replay_are_rejected_by_the_foreign_cursor_check() {
    let message = rejection(Fault::ReplaysOtherUsers, conformance::a_cursor_made_for_another_user_is_refused);
    assert_names(&message, &["rule: a cursor made for another user is refused", "another user's event"]);
}

#[test]
fn a_close_that_leaves_subscriptions_open_is_rejected_by_the_explicit_close_check() {
    let message = rejection(
        Fault::CloseLeavesSubscriptionsOpen,
        conformance::closing_a_hub_ends_every_subscription_with_closed,
    );
    assert_names(&message, &["timed out"]);
    // Dropping the last handle still closes it: only the explicit close is broken.
    block_on(conformance::dropping_every_hub_handle_ends_every_subscription_with_closed(&BrokenFactory(
        Fault::CloseLeavesSubscriptionsOpen,
    )));
}

#[test]
fn a_disconnect_that_ends_nothing_is_rejected_by_the_disconnect_check() {
    let message = rejection(
        Fault::DisconnectEndsNothing,
        conformance::disconnect_ends_every_stream_of_the_user_and_no_other,
    );
    assert_names(
        &message,
        &["rule: disconnect(user) ends each of the user's open subscriptions", "expected Err(Revoked) next"],
    );
}

#[test]
fn a_subscribe_over_the_user_cap_is_rejected_by_the_caps_check() {
    let message = rejection(
        Fault::IgnoresTheUserCap,
        conformance::open_subscriptions_are_capped_per_user_and_per_process_exactly,
    );
    assert_names(
        &message,
        &["rule: subscribe fails with Error::TooManySubscriptions", "the subscribe succeeded"],
    );
}

#[test]
fn group_events_delivered_to_non_members_are_rejected_by_the_group_checks() {
    let message = rejection(
        Fault::DeliversGroupEventsToNonMembers,
        conformance::group_events_reach_exactly_the_subscriptions_that_read_the_group,
    );
    assert_names(
        &message,
        &["rule: a subscription yields a group's events exactly when its reader has the group", "an event"],
    );
    let message = rejection(
        Fault::DeliversGroupEventsToNonMembers,
        conformance::generated_group_workloads_deliver_and_resume_exactly,
    );
    assert_names(&message, &["rule: across reconnects with changing groups", "must not receive"]);
}

#[test]
fn the_toys_pass_checks_their_fault_does_not_touch() {
    // A rejection must come from the fault, not from a toy that breaks everything.
    for fault in
        [Fault::CompleteDespiteTrimmedBroadcasts, Fault::ReplaysTheLastEventId, Fault::EndsWithoutClosed]
    {
        block_on(conformance::subscriber_receives_own_events_only(&BrokenFactory(fault)));
    }
    for fault in [Fault::DropsOneLiveEvent, Fault::RepeatsOneLiveEvent] {
        block_on(conformance::replay_after_retained_id_is_complete(&BrokenFactory(fault)));
    }
    for fault in [
        Fault::ReplaysThePosition,
        Fault::GapsEveryStream,
        Fault::ReplaysOtherUsers,
        Fault::CloseLeavesSubscriptionsOpen,
        Fault::DisconnectEndsNothing,
        Fault::IgnoresTheUserCap,
        Fault::DeliversGroupEventsToNonMembers,
    ] {
        block_on(conformance::subscriber_receives_own_events_only(&BrokenFactory(fault)));
        block_on(conformance::resume_after_truncated_history_signals_gap_first(&BrokenFactory(fault)));
    }
}
