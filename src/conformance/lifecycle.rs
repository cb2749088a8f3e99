//! Conformance rules of a subscription's life: lagging (exactly when the queue overflows), unsubscribing on drop, closing the hub.

use super::*;

/// A subscriber that stops reading gets `Error::Lagged` with the last id it
/// received and its stream ends; the others and the publisher do not wait
/// for it; resuming from that id recovers the rest.
pub async fn lagged_subscriber_is_isolated_and_others_receive_everything<F: HubFactory>(factory: &F) {
    const CAPACITY: usize = 8;
    const EVENTS: usize = 10 * CAPACITY;
    let hub = factory.create(HubOptions::default().with_queue_capacity(CAPACITY)).await;
    let baseline = factory.active_subscriptions(&hub).await;
    let (user, other) = (fresh_user(), fresh_user());
    // Both of the user's through `resume`, so the stalled one has a cursor to come back with.
    let connect =
        || async { within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume") };
    let mut stalled = connect().await;
    let mut fast_same_user = connect().await;
    let mut fast_other_user = subscribe(&hub, other, CategorySet::all()).await;

    // The stalled subscriber reads one event before it stalls, so Lagged has
    // an id to name and the resume below always runs.
    let prelude = make_event(Audience::User(user), EVENTS);
    publish(&hub, &prelude).await;
    let prelude_ours = HashSet::from([prelude.id()]);
    for (subscription, who) in
        [(&mut stalled, "the subscriber about to stall"), (&mut fast_same_user, "a fast subscriber")]
    {
        let got = read_until(subscription, &[prelude.id()], &prelude_ours, who, LAGGED).await;
        assert_events(LAGGED, who, &got, std::slice::from_ref(&prelude));
    }

    let published: Vec<Event<C>> = (0..EVENTS)
        .map(|n| {
            make_event(
                if n % (CAPACITY / 2) == CAPACITY / 2 - 1 {
                    Audience::Broadcast
                } else {
                    Audience::User(user)
                },
                n,
            )
        })
        .collect();
    let ours: HashSet<EventId> = published.iter().chain([&prelude]).map(Event::id).collect();
    let for_other: Vec<Event<C>> =
        published.iter().filter(|e| e.audience() == Audience::Broadcast).cloned().collect();

    // The fast subscribers read along in steps of half their queue (each step ends with a
    // broadcast), so they keep up however the machine schedules them, while the stalled one falls
    // behind; the publisher never waits for it.
    let (mut same_user_got, mut other_user_got) = (Vec::new(), Vec::new());
    for step in published.chunks(CAPACITY / 2) {
        for event in step {
            publish(&hub, event).await;
        }
        let step_last = step[step.len() - 1].id();
        let (same, other) = future::zip(
            read_until(&mut fast_same_user, &lasts(step), &ours, "a fast subscriber", LAGGED),
            read_until(
                &mut fast_other_user,
                &[step_last],
                &ours,
                "a fast subscriber of another user",
                LAGGED,
            ),
        )
        .await;
        same_user_got.extend(same);
        other_user_got.extend(other);
    }
    assert_each_stream(LAGGED, "a fast subscriber beside a stalled one", &same_user_got, &published);
    assert_events(LAGGED, "a fast subscriber of another user", &other_user_got, &for_other);

    let (mut stalled_got, mut stalled_last) = (Vec::new(), Some(prelude.id()));
    let lagged_at = loop {
        match next_item(&mut stalled, "the stalled subscriber's events and Lagged").await {
            Some(Ok(event)) => {
                stalled_last = Some(event.id());
                if ours.contains(&event.id()) {
                    stalled_got.push(event);
                }
            }
            Some(Err(Error::Lagged { last_delivered })) => break last_delivered,
            Some(Err(error)) => {
                panic!("rule: {LAGGED}; the stalled subscriber got {error} instead of Error::Lagged")
            }
            None => panic!("rule: {LAGGED}; the stalled subscriber's stream ended without Error::Lagged"),
        }
    };
    assert!(
        stalled_got.len() < EVENTS,
        "rule: {LAGGED}; a subscriber {EVENTS} events behind with a queue of {CAPACITY} lags"
    );
    // What it got is, stream by stream, the first of what was published.
    let of_kind = |events: &[Event<C>], kind: StreamKind| -> Vec<Event<C>> {
        events.iter().filter(|e| StreamKind::of(e.audience()) == kind).cloned().collect()
    };
    let mut rest_expected = Vec::new();
    for kind in StreamKind::ALL {
        let (got, all) = (of_kind(&stalled_got, kind), of_kind(&published, kind));
        let context = format!("what the stalled subscriber got, the {kind} stream");
        assert_events(LAGGED, &context, &got, &all[..got.len().min(all.len())]);
        rest_expected.extend(all[got.len().min(all.len())..].iter().cloned());
    }
    assert_eq!(lagged_at, stalled_last, "rule: {LAGGED}; Lagged names the last event received");
    assert!(
        next_item(&mut stalled, "the end of a lagged stream").await.is_none(),
        "rule: {LAGGED}; a lagged stream ends after Error::Lagged"
    );

    // The lagged client reconnects with the cursor of the last event it got and loses nothing.
    let cursor = stalled.cursor().expect("a cursor: the stalled subscriber read the prelude");
    assert_eq!(Some(cursor.event_id()), lagged_at, "rule: {LAGGED}; the cursor is at the event Lagged named");
    drop(stalled);
    let mut resumed = within("resume", resume(&hub, user, Some(cursor.into()), CategorySet::all()))
        .await
        .expect("resume after lagging");
    assert_eq!(
        resumed.replay_status(),
        Some(ReplayStatus::Complete),
        "rule: {LAGGED}; history covers what the lagged subscriber missed"
    );
    let rest =
        read_until(&mut resumed, &lasts(&rest_expected), &ours, "the resumed lagged subscriber", LAGGED)
            .await;
    assert_each_stream(LAGGED, "resuming after Lagged", &rest, &rest_expected);
    drop(resumed);
    drop(fast_same_user);
    drop(fast_other_user);
    expect_subscriptions(factory, &hub, baseline, "after the lagged and the fast subscriptions are gone")
        .await;
}

/// Dropping a subscription unregisters it; the hub goes back to holding none.
pub async fn dropping_a_subscription_unregisters_it<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let baseline = factory.active_subscriptions(&hub).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let first = subscribe(&hub, alice, CategorySet::all()).await;
    let second = subscribe(&hub, alice, CategorySet::only(C::Ai)).await;
    let mut third = subscribe(&hub, bob, CategorySet::all()).await;
    expect_subscriptions(factory, &hub, baseline + 3, "with three subscriptions").await;

    drop(first);
    expect_subscriptions(factory, &hub, baseline + 2, "after dropping one of three").await;
    drop(second);
    expect_subscriptions(factory, &hub, baseline + 1, "after dropping two of three").await;

    // The remaining one still works, and publishing to a user with no
    // subscription left is fine.
    for audience in [Audience::User(alice), Audience::Broadcast] {
        publish(&hub, &make_event(audience, 0)).await;
    }
    let event = make_event(Audience::User(bob), 1);
    publish(&hub, &event).await;
    let ours = HashSet::from([event.id()]);
    let rule = "dropping a subscription leaves the others working";
    let got = read_until(&mut third, &[event.id()], &ours, "the remaining subscriber", rule).await;
    assert_events(rule, "the remaining subscriber", &got, &[event]);

    drop(third);
    expect_subscriptions(factory, &hub, baseline, "after dropping all").await;
}

pub(super) const CLOSE: &str = "when a hub closes (explicitly, or when its last handle is dropped), every open subscription \
                     yields the events already queued, then Err(Error::Closed) exactly once, then ends for good";
pub(super) const CLOSED_REFUSES: &str = "a closed hub refuses subscribe and publish with Err(Error::Closed)";

/// How a close check ends the hub.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum CloseBy {
    Explicit,
    DroppingEveryHandle,
}

/// Close rule, explicit close: after [`HubFactory::close`], every open
/// subscription yields the events already queued for it, then
/// `Err(Error::Closed)` exactly once, then `None`, and `None` again if polled
/// on. A closed hub's `subscribe` and `publish` fail with `Error::Closed`.
pub async fn closing_a_hub_ends_every_subscription_with_closed<F: HubFactory>(factory: &F) {
    check_close_rule(factory, CloseBy::Explicit).await;
}

/// Close rule, last handle dropped: when every handle of a hub is dropped,
/// every open subscription yields the events already queued for it, then
/// `Err(Error::Closed)` exactly once, then `None`, and `None` again if polled on.
pub async fn dropping_every_hub_handle_ends_every_subscription_with_closed<F: HubFactory>(factory: &F) {
    check_close_rule(factory, CloseBy::DroppingEveryHandle).await;
}

pub(super) async fn check_close_rule<F: HubFactory>(factory: &F, by: CloseBy) {
    let hub = factory.create(HubOptions::default()).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    // A reader per user reads everything, so the events are known to be queued
    // for the unread subscriptions of its user before the hub closes.
    let mut alice_reader = subscribe(&hub, alice, CategorySet::all()).await;
    let mut bob_reader = subscribe(&hub, bob, CategorySet::all()).await;
    let mut unread = [
        (alice, CategorySet::all(), subscribe(&hub, alice, CategorySet::all()).await),
        (alice, CategorySet::only(C::Ai), subscribe(&hub, alice, CategorySet::only(C::Ai)).await),
        (bob, CategorySet::all(), subscribe(&hub, bob, CategorySet::all()).await),
        // Nothing will be queued for this one: it passes only Security, and no event is.
        (bob, CategorySet::only(C::Security), subscribe(&hub, bob, CategorySet::only(C::Security)).await),
    ];
    let plan = [
        make_event_in(Audience::User(alice), 0, C::Ai),
        make_event_in(Audience::Broadcast, 1, C::Import),
        make_event_in(Audience::User(bob), 2, C::Ai),
        make_event_in(Audience::User(alice), 3, C::DataSync),
        make_event_in(Audience::Broadcast, 4, C::Ai),
        make_event_in(Audience::User(alice), 5, C::Ai),
        make_event_in(Audience::User(bob), 6, C::Portfolio),
    ];
    for event in &plan {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = plan.iter().map(Event::id).collect();
    for (reader, user, who) in
        [(&mut alice_reader, alice, "alice's reader"), (&mut bob_reader, bob, "bob's reader")]
    {
        let expected: Vec<Event<C>> = plan.iter().filter(|e| e.audience().includes(user)).cloned().collect();
        let got = read_until(reader, &lasts(&expected), &ours, who, CLOSE).await;
        assert_each_stream(CLOSE, &format!("{who} before the close"), &got, &expected);
    }

    let hub_handle = match by {
        CloseBy::Explicit => {
            within("close", factory.close(&hub)).await;
            let late = make_event(Audience::User(alice), 7);
            match within("publish after close", hub.publish(late)).await {
                Err(Error::Closed) => {}
                Ok(()) => panic!("rule: {CLOSED_REFUSES}; publish succeeded after the hub was closed"),
                Err(error) => panic!("rule: {CLOSED_REFUSES}; publish after close failed with {error}"),
            }
            match within("subscribe after close", hub.subscribe(alice, CategorySet::all())).await {
                Err(Error::Closed) => {}
                Ok(_) => panic!("rule: {CLOSED_REFUSES}; subscribe succeeded after the hub was closed"),
                Err(error) => panic!("rule: {CLOSED_REFUSES}; subscribe after close failed with {error}"),
            }
            Some(hub)
        }
        CloseBy::DroppingEveryHandle => {
            drop(hub);
            None
        }
    };

    let how = match by {
        CloseBy::Explicit => "after close",
        CloseBy::DroppingEveryHandle => "after the last hub handle was dropped",
    };
    expect_closed_end(&mut alice_reader, &[], &ours, &format!("alice's reader {how}")).await;
    expect_closed_end(&mut bob_reader, &[], &ours, &format!("bob's reader {how}")).await;
    for (index, (user, filter, subscription)) in unread.iter_mut().enumerate() {
        let queued: Vec<Event<C>> = plan
            .iter()
            .filter(|e| e.audience().includes(*user) && filter.contains(e.category()))
            .cloned()
            .collect();
        expect_closed_end(subscription, &queued, &ours, &format!("unread subscription #{index} {how}")).await;
    }
    // Closed explicitly, the hub was still held up to here: `close` alone must end the subscriptions.
    drop(hub_handle);
}

/// Reads a closed hub's subscription to its end: `queued`, `Err(Closed)` once, then `None` twice.
pub(super) async fn expect_closed_end<S>(
    stream: &mut S,
    queued: &[Event<C>],
    ours: &HashSet<EventId>,
    who: &str,
) where
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    let mut got = Vec::new();
    loop {
        match next_item(stream, &format!("the end of {who} (rule: {CLOSE})")).await {
            Some(Ok(event)) if !ours.contains(&event.id()) && event.audience() == Audience::Broadcast => {}
            Some(Ok(event)) => got.push(event),
            Some(Err(Error::Closed)) => break,
            Some(Err(error)) => panic!("rule: {CLOSE}; {who} yielded {error} instead of Err(Error::Closed)"),
            None => {
                assert_each_stream(CLOSE, &format!("{who}: the queued events"), &got, queued);
                panic!("rule: {CLOSE}; {who} ended without Err(Error::Closed)");
            }
        }
    }
    assert_each_stream(CLOSE, &format!("{who}: the queued events before Err(Error::Closed)"), &got, queued);
    for attempt in ["once", "twice"] {
        match next_item(stream, &format!("the end of {who} after Err(Error::Closed)")).await {
            None => {}
            Some(item) => panic!(
                "rule: {CLOSE}; {who} yielded {item:?} after Err(Error::Closed), polled {attempt} more: it must have ended"
            ),
        }
    }
}

pub(super) const LAG_POINT: &str = "with queue capacity N, a subscription that reads nothing while N+k events arrive yields \
                         exactly the first N, then Err(Error::Lagged) naming the N-th, then ends";
pub(super) const NO_LAG: &str = "a subscription that reads as fast as events come never lags";

/// Lag point: with queue capacity N, a subscription that reads nothing while
/// N+k events arrive (k ≥ 1) yields exactly the first N events, then
/// `Err(Error::Lagged { last_delivered: Some(id of the N-th) })`, then ends.
/// A subscription that reads each event as it comes never lags, however many
/// events pass through a small queue.
pub async fn lag_happens_exactly_when_the_queue_overflows<F: HubFactory>(factory: &F) {
    const CAPACITY: usize = 4;
    let hub = factory.create(HubOptions::default().with_queue_capacity(CAPACITY)).await;
    for overflow in [1, 3] {
        let user = fresh_user();
        let mut stalled = subscribe(&hub, user, CategorySet::all()).await;
        // Reading along, it knows when an event has been queued for the stalled one too.
        let mut reader = subscribe(&hub, user, CategorySet::all()).await;
        let published: Vec<Event<C>> =
            (0..CAPACITY + overflow).map(|n| make_event(Audience::User(user), n)).collect();
        let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
        for event in &published {
            publish(&hub, event).await;
            let got =
                read_until(&mut reader, &[event.id()], &ours, "a subscriber reading along", NO_LAG).await;
            assert_events(NO_LAG, "a subscriber reading along", &got, std::slice::from_ref(event));
        }
        let context = format!("capacity {CAPACITY}, {} events unread", CAPACITY + overflow);
        let mut got = Vec::new();
        let lagged = loop {
            match next_item(&mut stalled, &format!("the stalled subscription's items (rule: {LAG_POINT})"))
                .await
            {
                Some(Ok(event)) => got.push(event),
                Some(Err(Error::Lagged { last_delivered })) => break last_delivered,
                Some(Err(error)) => panic!("rule: {LAG_POINT}; {context}: the stream yielded {error}"),
                None => {
                    panic!(
                        "rule: {LAG_POINT}; {context}: the stream ended without Err(Error::Lagged) after {}",
                        id_list(&got)
                    )
                }
            }
        };
        assert_events(
            LAG_POINT,
            &format!("{context}: the events before Lagged"),
            &got,
            &published[..CAPACITY],
        );
        assert_eq!(
            lagged,
            Some(published[CAPACITY - 1].id()),
            "rule: {LAG_POINT}; {context}: Lagged must name the N-th event"
        );
        if let Some(item) = next_item(&mut stalled, "the end of a lagged stream").await {
            panic!("rule: {LAG_POINT}; {context}: the stream yielded {item:?} after Err(Error::Lagged)");
        }
    }

    // Through a queue of 2, many events, each read as soon as it is published.
    let hub = factory.create(HubOptions::default().with_queue_capacity(2)).await;
    let (user, other) = (fresh_user(), fresh_user());
    let mut keeping_up = subscribe(&hub, user, CategorySet::all()).await;
    let mut published = Vec::new();
    let mut ours = HashSet::new();
    for n in 0..100 {
        let audience = match n % 5 {
            0 => Audience::Broadcast,
            1 => Audience::User(other),
            _ => Audience::User(user),
        };
        let event = make_event(audience, n);
        ours.insert(event.id());
        publish(&hub, &event).await;
        if audience.includes(user) {
            let got =
                read_until(&mut keeping_up, &[event.id()], &ours, "a subscriber keeping up", NO_LAG).await;
            assert_events(NO_LAG, &format!("event #{n}"), &got, std::slice::from_ref(&event));
            published.push(event);
        }
    }
}
