//! The conformance checks of per-stream cursors: exactly once whatever the interleaving of streams, resuming after any frame, per-stream gaps, foreign cursors.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::StreamExt;
use futures_lite::future;

use super::{
    C, HubFactory, HubOptions, Lcg, OWN_ONLY, assert_each_stream, expect_subscriptions, fresh_user, lasts,
    make_event, next_item, parse_frames, publish, read_until, rng_for_client, within,
};
use crate::cursor::{Cursor, CursorErrorKind, LastEventId, Position, Positions, StreamKind};
use crate::sse::SseOptions;
use crate::{
    Audience, CategorySet, Error, Event, EventId, EventSource, Reader, ReplayStatus, StreamReplay, UserId,
    resume,
};

pub(super) const EXACTLY_ONCE: &str = "reconnecting with the cursor of the last frame received delivers every event \
                                       exactly once, each stream in publish order, while events are published";
const INTERLEAVED: &str = "exactly once holds whatever the interleaving of the streams a backend delivers: order is \
                           kept within a stream, never promised across streams";
const FRAME_CURSOR: &str = "every frame's id is a cursor whose head is the event's id, and a replay after it holds \
                            exactly each stream's events after that frame";
const STREAM_GAP: &str = "a position a stream's history no longer covers gives a gap for that stream only; the other \
                          streams replay exactly";
const FOREIGN_CURSOR: &str = "a cursor made for another user is refused before anything is subscribed, and a replay \
                              after any positions holds only the user's own stream and the broadcasts";

/// Disconnecting at arbitrary points and resuming with the cursor of the last
/// frame received, while events are published, yields every event exactly
/// once, each stream in publish order.
pub async fn resume_delivers_every_event_exactly_once_under_concurrent_publishing<F: HubFactory>(
    factory: &F,
) {
    exactly_once_across_reconnects(factory, None, EXACTLY_ONCE).await;
}

/// The same as
/// [`resume_delivers_every_event_exactly_once_under_concurrent_publishing`],
/// with the backend's live broadcasts held back behind the user's events by
/// pseudo-random amounts: a backend may deliver its streams in any
/// interleaving (on a Redis Cluster they come from different masters), and
/// cursors keep exactly once whatever it is.
pub async fn resume_is_exactly_once_whatever_the_interleaving_of_streams<F: HubFactory>(factory: &F) {
    exactly_once_across_reconnects(factory, Some(0x1a7e_5eed), INTERLEAVED).await;
}

async fn exactly_once_across_reconnects<F: HubFactory>(factory: &F, interleave: Option<u64>, rule: &str) {
    const EVENTS: usize = 300;
    let hub = factory.create(HubOptions::default().with_history_len(2 * EVENTS)).await;
    let (user, other) = (fresh_user(), fresh_user());
    let first = make_event(Audience::User(user), 0);
    publish(&hub, &first).await;

    // The plan is fixed before anything runs, so both sides know it.
    let mut rng = Lcg(0x5eed_cafe);
    let published: Vec<Event<C>> = (1..=EVENTS)
        .map(|n| {
            let audience = match rng.below(5) {
                0 | 1 => Audience::Broadcast,
                2 => Audience::User(other),
                _ => Audience::User(user),
            };
            make_event(audience, n)
        })
        .chain([make_event(Audience::User(user), EVENTS + 1), make_event(Audience::Broadcast, EVENTS + 2)])
        .collect();
    let expected: Vec<Event<C>> = published.iter().filter(|e| e.audience().includes(user)).cloned().collect();
    let ours: HashSet<EventId> = published.iter().chain([&first]).map(Event::id).collect();
    // The last event of each stream: once both came, every stream was delivered (each is in order).
    let lasts: HashSet<EventId> = published[published.len() - 2..].iter().map(Event::id).collect();

    let publisher = async {
        for event in &published {
            publish(&hub, event).await;
            future::yield_now().await;
        }
    };
    let client = async {
        let mut received: Vec<Event<C>> = Vec::new();
        let mut pending = lasts.clone();
        // The first connection comes back with a plain event id (a client of
        // before cursors); every later one with the cursor of its last frame.
        let mut last = LastEventId::Event(first.id());
        let mut reconnects = 0;
        'connection: loop {
            let source = Reordering {
                hub: &hub,
                yields: rng_for_client(reconnects).below(4) as usize,
                interleave: interleave.map(|seed| seed ^ reconnects),
            };
            let mut stream = within("resume", resume(&source, user, Some(last.clone()), CategorySet::all()))
                .await
                .unwrap_or_else(|e| panic!("rule: {rule}; resume failed: {e}"));
            assert_eq!(
                stream.replay_status(),
                Some(ReplayStatus::Complete),
                "rule: {rule}; history covers every gap here"
            );
            let stay_for = 1 + rng_for_client(reconnects).below(40);
            let mut taken = 0;
            loop {
                match next_item(&mut stream, &format!("the next event of a resumed stream (rule: {rule})"))
                    .await
                {
                    Some(Ok(event)) => {
                        if !ours.contains(&event.id()) {
                            assert_eq!(
                                event.audience(),
                                Audience::Broadcast,
                                "rule: {rule}; a foreign event: {event:?}"
                            );
                            continue;
                        }
                        assert!(
                            event.audience().includes(user),
                            "rule: {OWN_ONLY}; another user's event: {event:?}"
                        );
                        pending.remove(&event.id());
                        received.push(event);
                        if pending.is_empty() {
                            return (received, reconnects);
                        }
                        taken += 1;
                        if taken == stay_for {
                            last = LastEventId::Cursor(stream.cursor().expect("a cursor after an event"));
                            reconnects += 1;
                            continue 'connection;
                        }
                    }
                    Some(Err(Error::Lagged { .. })) => {
                        if let Some(cursor) = stream.cursor() {
                            last = LastEventId::Cursor(cursor);
                        }
                        reconnects += 1;
                        continue 'connection;
                    }
                    Some(Err(error)) => panic!("rule: {rule}; resumed stream failed: {error}"),
                    None => panic!("rule: {rule}; resumed stream ended"),
                }
            }
        }
    };
    let ((), (received, reconnects)) = future::zip(publisher, client).await;
    assert!(reconnects > 0, "the client reconnected");
    assert_each_stream(rule, &format!("after {reconnects} reconnects"), &received, &expected);
}

/// Every frame of the SSE body of a resumed stream carries a cursor whose
/// head is its event's id; a replay after any frame's cursor holds exactly the
/// events of each stream the client received after that frame.
pub async fn every_frames_cursor_resumes_exactly_after_that_frame<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (user, other) = (fresh_user(), fresh_user());
    let resumed = within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume");
    let mut body = resumed.into_sse(SseOptions::new().heartbeat(Duration::from_secs(3600)));
    let mut rng = Lcg(0x00f4_a3e5);
    let plan: Vec<Event<C>> = (0..16)
        .map(|n| {
            let audience = match rng.below(4) {
                0 => Audience::User(other),
                1 => Audience::Broadcast,
                _ => Audience::User(user),
            };
            make_event(audience, n)
        })
        .collect();
    for event in &plan {
        publish(&hub, event).await;
    }
    let expected: Vec<Event<C>> = plan.iter().filter(|e| e.audience().includes(user)).cloned().collect();
    let by_id: std::collections::HashMap<String, &Event<C>> =
        plan.iter().map(|e| (e.id().to_string(), e)).collect();

    // The frames of ours, in the order the body sent them, with their cursors.
    let mut frames: Vec<(Event<C>, Cursor)> = Vec::new();
    let mut text = String::new();
    while frames.len() < expected.len() {
        let chunk = within(&format!("the body's next chunk (rule: {FRAME_CURSOR})"), body.next())
            .await
            .unwrap_or_else(|| panic!("rule: {FRAME_CURSOR}; the body ended"));
        text.push_str(&String::from_utf8_lossy(&chunk));
        let Some(end) = text.rfind("\n\n") else { continue };
        let complete: String = text.drain(..end + 2).collect();
        for frame in parse_frames(&complete) {
            let Some(id) = frame.id else { continue };
            let cursor =
                Cursor::parse(&id).unwrap_or_else(|e| panic!("rule: {FRAME_CURSOR}; the id {id:?}: {e}"));
            let head = cursor.event_id().to_string();
            assert!(
                id.starts_with(&head),
                "rule: {FRAME_CURSOR}; the id {id:?} does not start with its event id"
            );
            let Some(event) = by_id.get(&head) else {
                // A foreign broadcast on a shared server.
                continue;
            };
            assert_eq!(
                frame.data.as_deref(),
                Some(event.data()),
                "rule: {FRAME_CURSOR}; the frame with id {id:?} carries another event's data"
            );
            frames.push(((*event).clone(), cursor));
        }
    }
    let received: Vec<Event<C>> = frames.iter().map(|(event, _)| event.clone()).collect();
    assert_each_stream(FRAME_CURSOR, "the frames of a first connection", &received, &expected);

    for (index, (event, cursor)) in frames.iter().enumerate() {
        let positions = cursor
            .positions_for(user)
            .unwrap_or_else(|e| panic!("rule: {FRAME_CURSOR}; the cursor of frame {index}: {e}"));
        let replay = missed_since(&hub, user, positions.clone()).await;
        for kind in StreamKind::ALL {
            assert_eq!(
                replay.stream(kind).status,
                ReplayStatus::Complete,
                "rule: {FRAME_CURSOR}; the {kind} stream after frame {index} ({})",
                event.id()
            );
        }
        let ours: Vec<Event<C>> =
            replay.events.into_iter().filter(|e| by_id.contains_key(&e.id().to_string())).collect();
        assert_each_stream(
            FRAME_CURSOR,
            &format!("the replay after frame {index} ({}, cursor {cursor})", event.id()),
            &ours,
            &received[index + 1..],
        );
    }
}

/// A cursor whose own-stream position was trimmed away while its broadcast
/// position is still retained: `resume` yields one gap, for the user's own
/// stream, then the retained own events and exactly the broadcasts after the
/// cursor's broadcast position.
pub async fn a_stale_position_in_one_stream_signals_a_gap_for_that_stream_only<F: HubFactory>(factory: &F) {
    const KEPT: usize = 5;
    let hub = factory.create(HubOptions::default().with_history_len(KEPT)).await;
    let user = fresh_user();
    let mut stream = within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume");
    let seen = [make_event(Audience::User(user), 0), make_event(Audience::Broadcast, 1)];
    for event in &seen {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = seen.iter().map(Event::id).collect();
    read_until(&mut stream, &lasts(&seen), &ours, "the first connection", STREAM_GAP).await;
    let cursor = stream.cursor().expect("a cursor after two events");
    drop(stream);

    let own: Vec<Event<C>> = (2..2 + 3 * KEPT).map(|n| make_event(Audience::User(user), n)).collect();
    let broadcasts: Vec<Event<C>> = (100..102).map(|n| make_event(Audience::Broadcast, n)).collect();
    for event in own.iter().chain(&broadcasts) {
        publish(&hub, event).await;
    }
    let mut resumed = within("resume", resume(&hub, user, Some(cursor.clone().into()), CategorySet::all()))
        .await
        .expect("resume");
    assert_eq!(
        resumed.replay_status(),
        Some(ReplayStatus::Truncated),
        "rule: {STREAM_GAP}; the replay status"
    );
    match next_item(&mut resumed, "the gap signal").await {
        Some(Err(Error::Gap { stream: Some(StreamKind::Own), last_delivered })) => assert_eq!(
            last_delivered,
            Some(cursor.event_id()),
            "rule: {STREAM_GAP}; the gap names the event of the client's cursor"
        ),
        other => panic!("rule: {STREAM_GAP}; the first item is {other:?}, expected a gap of the own stream"),
    }
    let ours: HashSet<EventId> = own.iter().chain(&broadcasts).map(Event::id).collect();
    let mut pending: HashSet<EventId> =
        own[own.len() - KEPT..].iter().chain(&broadcasts).map(Event::id).collect();
    let mut got = Vec::new();
    while !pending.is_empty() {
        match next_item(&mut resumed, &format!("the replayed events (rule: {STREAM_GAP})")).await {
            Some(Ok(event)) if ours.contains(&event.id()) => {
                pending.remove(&event.id());
                got.push(event);
            }
            Some(Ok(event)) if event.audience() == Audience::Broadcast => {}
            other => panic!("rule: {STREAM_GAP}; after the gap: {other:?}"),
        }
    }
    let expected: Vec<Event<C>> = own[own.len() - KEPT..].iter().chain(&broadcasts).cloned().collect();
    assert_each_stream(STREAM_GAP, "after the own stream's gap", &got, &expected);
}

/// `resume` refuses a cursor made for another user with
/// [`Error::InvalidCursor`] before it subscribes; and a replay after
/// positions taken from another user's stream holds nothing of that user.
pub async fn a_cursor_made_for_another_user_is_refused<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let mut stream = within("resume", resume(&hub, alice, None, CategorySet::all())).await.expect("resume");
    let secret = make_event(Audience::User(alice), 0);
    publish(&hub, &secret).await;
    read_until(&mut stream, &[secret.id()], &HashSet::from([secret.id()]), "alice", FOREIGN_CURSOR).await;
    let alices = stream.cursor().expect("a cursor after an event");
    expect_subscriptions(factory, &hub, 1, "alice connected").await;

    match within("resume", resume(&hub, bob, Some(alices.clone().into()), CategorySet::all())).await {
        Err(Error::InvalidCursor(error)) if error.kind() == CursorErrorKind::ForeignOwner => {}
        Err(error) => panic!("rule: {FOREIGN_CURSOR}; bob resuming with alice's cursor failed with {error}"),
        Ok(_) => panic!("rule: {FOREIGN_CURSOR}; bob resumed with alice's cursor"),
    }
    expect_subscriptions(factory, &hub, 1, "after bob's refused resume").await;

    // Bob forges a cursor of his own holding alice's positions, and positions before everything.
    let more = make_event(Audience::User(alice), 1);
    publish(&hub, &more).await;
    let alice_positions = alices.positions_for(alice).expect("alice's own cursor");
    for (what, positions) in [
        ("alice's positions", alice_positions.clone()),
        (
            "the start of every stream",
            Positions { own: Some(Position::START), broadcast: Some(Position::START), ..Positions::NONE },
        ),
        ("alice's event", Positions::after_event(secret.id())),
    ] {
        let replay = missed_since(&hub, bob, positions).await;
        if let Some(leak) = replay
            .events
            .iter()
            .find(|e| e.audience() != Audience::Broadcast && e.audience() != Audience::User(bob))
        {
            panic!("rule: {FOREIGN_CURSOR}; bob's replay after {what} holds another user's event {leak:?}");
        }
    }
    drop(stream);
}

async fn missed_since<H: EventSource<C>>(hub: &H, user: UserId, from: Positions) -> StreamReplay<C> {
    within("missed_since", hub.missed_since(user, from.clone(), CategorySet::all()))
        .await
        .unwrap_or_else(|error| panic!("missed_since {from:?} failed: {error}"))
}

/// A hub whose replay first lets other futures run a few turns, and whose
/// subscriptions (with `interleave`) hold broadcasts back behind the user's
/// events by pseudo-random amounts, as a backend reading its streams from
/// different servers may.
pub(super) struct Reordering<'a, H> {
    pub(super) hub: &'a H,
    pub(super) yields: usize,
    pub(super) interleave: Option<u64>,
}

impl<H: EventSource<C>> EventSource<C> for Reordering<'_, H> {
    type Subscription = Interleaved<H::Subscription>;

    async fn subscribe(
        &self,
        reader: impl Into<Reader> + Send,
        filter: CategorySet<C>,
    ) -> Result<Self::Subscription, Error> {
        let inner = self.hub.subscribe(reader, filter).await?;
        Ok(Interleaved { inner, rng: self.interleave.map(Lcg), held: VecDeque::new(), end: None })
    }

    async fn missed_events(
        &self,
        user: UserId,
        last: EventId,
        filter: CategorySet<C>,
    ) -> Result<crate::Replay<C>, Error> {
        for _ in 0..self.yields {
            future::yield_now().await;
        }
        self.hub.missed_events(user, last, filter).await
    }

    async fn missed_since(
        &self,
        reader: impl Into<Reader> + Send,
        from: Positions,
        filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        for _ in 0..self.yields {
            future::yield_now().await;
        }
        self.hub.missed_since(reader, from, filter).await
    }

    fn horizon(&self) -> Option<Position> {
        self.hub.horizon()
    }

    async fn disconnect(&self, user: UserId) -> Result<(), Error> {
        self.hub.disconnect(user).await
    }
}

/// The subscription of [`Reordering`].
pub(super) struct Interleaved<S> {
    inner: S,
    rng: Option<Lcg>,
    /// Broadcasts held back, in order, each with the turns it still waits: a
    /// turn is a user event let past it, or a poll that found nothing new.
    held: VecDeque<(Event<C>, u64)>,
    /// The inner stream's last item (an error, or its end), kept until the held events are out.
    end: Option<Option<Result<Event<C>, Error>>>,
}

impl<S> Interleaved<S> {
    /// Counts a turn for the oldest held broadcast; releases it once it has waited them all.
    fn turn(&mut self) -> Option<Event<C>> {
        let (_, wait) = self.held.front_mut()?;
        *wait = wait.saturating_sub(1);
        if *wait == 0 { self.held.pop_front().map(|(event, _)| event) } else { None }
    }
}

impl<S> futures_core::Stream for Interleaved<S>
where
    S: futures_core::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(rng) = this.rng.as_mut() else { return Pin::new(&mut this.inner).poll_next(cx) };
        let wait = 1 + rng.below(12);
        if this.end.is_some() {
            // The inner stream is done: what is held goes out first, then its last item.
            return match this.held.pop_front() {
                Some((event, _)) => Poll::Ready(Some(Ok(event))),
                None => Poll::Ready(this.end.take().flatten()),
            };
        }
        loop {
            if this.held.front().is_some_and(|(_, wait)| *wait == 0) {
                return Poll::Ready(this.held.pop_front().map(|(event, _)| Ok(event)));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) if event.audience() == Audience::Broadcast => {
                    this.held.push_back((event, wait));
                }
                Poll::Ready(Some(Ok(event))) => {
                    // A user event passes the held broadcasts.
                    if let Some((_, wait)) = this.held.front_mut() {
                        *wait = wait.saturating_sub(1);
                    }
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(Some(Err(error))) if this.held.is_empty() => {
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(end) => {
                    this.end = Some(end);
                    return Poll::Ready(this.held.pop_front().map(|(event, _)| Ok(event)));
                }
                Poll::Pending => {
                    if this.held.is_empty() {
                        return Poll::Pending;
                    }
                    if let Some(event) = this.turn() {
                        return Poll::Ready(Some(Ok(event)));
                    }
                    // Come back at once: the turns pass as the executor runs the others.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}
