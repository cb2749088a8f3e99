//! Behaviour of the memory backend beyond the conformance suite: lag isolation under load, retention by count and age, cleanup, foreign ids, close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::executor::block_on;
use futures::stream::FusedStream;
use futures::{FutureExt, StreamExt};
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::MemoryHub;
use ssehub::{
    Audience, CategorySet, Error, Event, EventId, EventSource, Publisher, ReplayStatus, Retention, UserId,
};
use uuid::Uuid;

fn user(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(n))
}

fn event(audience: Audience, n: usize) -> Event<C> {
    Event::new(audience, "test", C::Ai, format!("{{\"n\":{n}}}")).unwrap()
}

fn ids(events: &[Event<C>]) -> Vec<EventId> {
    events.iter().map(Event::id).collect()
}

#[test]
fn one_stalled_subscriber_among_many_lags_while_the_others_receive_everything() {
    const CAPACITY: usize = 32;
    const EVENTS: usize = 40 * CAPACITY;
    const USERS: u128 = 10;
    const SUBS_PER_USER: usize = 5;
    let hub = MemoryHub::<C>::builder().queue_capacity(CAPACITY).build();
    let mut stalled = block_on(hub.subscribe(user(0), CategorySet::all())).unwrap();
    let plan: Vec<Event<C>> = (0..EVENTS)
        .map(|n| {
            let audience =
                if n % 3 == 0 { Audience::Broadcast } else { Audience::User(user(n as u128 % USERS)) };
            event(audience, n)
        })
        .collect();
    let expected_per_user: Vec<Vec<EventId>> = (0..USERS)
        .map(|u| plan.iter().filter(|e| e.audience().includes(user(u))).map(Event::id).collect())
        .collect();

    // Readers count what they receive, so the publisher can keep them within
    // half a queue of itself on a loaded machine: they never lag, and the
    // test shows the stalled one never holds anybody up.
    let received_by_readers = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for u in 0..USERS {
        for _ in 0..SUBS_PER_USER {
            let mut subscription = block_on(hub.subscribe(user(u), CategorySet::all())).unwrap();
            let expected = expected_per_user[u as usize].len();
            let received_by_readers = Arc::clone(&received_by_readers);
            readers.push(std::thread::spawn(move || {
                block_on(async {
                    let mut got = Vec::with_capacity(expected);
                    while got.len() < expected {
                        match subscription.next().await {
                            Some(Ok(event)) => got.push(event.id()),
                            other => panic!("a reading subscriber got {other:?} after {} events", got.len()),
                        }
                        received_by_readers.fetch_add(1, Ordering::Release);
                    }
                    (u, got)
                })
            }));
        }
    }
    let publisher_hub = hub.clone();
    let publisher = std::thread::spawn(move || {
        let mut deliveries_to_readers = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        for event in plan {
            deliveries_to_readers += match event.audience() {
                Audience::Broadcast | Audience::Group(_) => USERS as usize * SUBS_PER_USER,
                Audience::User(_) => SUBS_PER_USER,
            };
            block_on(publisher_hub.publish(event)).unwrap();
            while received_by_readers.load(Ordering::Acquire) + CAPACITY / 2 < deliveries_to_readers {
                assert!(Instant::now() < deadline, "the readers stopped receiving");
                std::thread::yield_now();
            }
        }
    });
    publisher.join().unwrap();
    for reader in readers {
        let (u, got) = reader.join().unwrap();
        assert_eq!(
            got, expected_per_user[u as usize],
            "a reading subscriber of user {u} got everything in order"
        );
    }

    let mut stalled_got = Vec::new();
    let lagged_at = loop {
        match block_on(stalled.next()) {
            Some(Ok(event)) => stalled_got.push(event.id()),
            Some(Err(Error::Lagged { last_delivered })) => break last_delivered,
            other => panic!("the stalled subscriber got {other:?} instead of Lagged"),
        }
    };
    assert_eq!(
        stalled_got,
        expected_per_user[0][..CAPACITY],
        "a stalled subscriber keeps its first {CAPACITY}"
    );
    assert_eq!(lagged_at, stalled_got.last().copied());
    assert!(block_on(stalled.next()).is_none(), "the lagged stream ends");
    let stats = hub.stats();
    assert_eq!(stats.lagged, 1, "exactly one subscription lagged");
    assert_eq!(stats.open_subscriptions, 0, "the lagged one was unregistered, the readers' were dropped");
    assert_eq!(stats.published, EVENTS as u64);
}

#[test]
fn a_subscriber_lags_on_the_event_past_its_queue_capacity() {
    let hub = MemoryHub::<C>::builder().queue_capacity(4).build();
    let mut subscription = block_on(hub.subscribe(user(1), CategorySet::all())).unwrap();
    let events: Vec<Event<C>> = (0..5).map(|n| event(Audience::User(user(1)), n)).collect();
    for e in &events[..4] {
        block_on(hub.publish(e.clone())).unwrap();
    }
    assert_eq!(hub.stats().lagged, 0, "four events fit a queue of four");
    block_on(hub.publish(events[4].clone())).unwrap();
    assert_eq!(hub.stats().lagged, 1);
    let got: Vec<Result<Event<C>, Error>> = block_on(subscription.by_ref().collect());
    assert_eq!(got.len(), 5);
    for (received, sent) in got.iter().zip(&events[..4]) {
        assert_eq!(received.as_ref().unwrap(), sent);
    }
    assert!(matches!(got[4], Err(Error::Lagged { last_delivered: Some(id) }) if id == events[3].id()));
}

#[test]
fn events_a_subscription_has_taken_but_not_yielded_count_against_its_capacity() {
    // Reading takes up to 32 queued events at once; until the subscription
    // comes back to the queue they count as waiting, so the queue never
    // holds more than its capacity and a lag may come up to 31 events early.
    const CAPACITY: usize = 64;
    let hub = MemoryHub::<C>::builder().queue_capacity(CAPACITY).build();
    let alice = user(1);
    let mut subscription = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    let mut sent = Vec::new();
    for n in 0..CAPACITY {
        let e = event(Audience::User(alice), n);
        block_on(hub.publish(e.clone())).unwrap();
        sent.push(e);
    }
    // Ten read: one taken with 31 more, nine of those yielded from the batch.
    for expected in &sent[..10] {
        assert_eq!(&block_on(subscription.next()).unwrap().unwrap(), expected);
    }
    let mut fitted = 0;
    while hub.stats().lagged == 0 {
        let e = event(Audience::User(alice), CAPACITY + fitted);
        block_on(hub.publish(e.clone())).unwrap();
        sent.push(e);
        fitted += 1;
    }
    // 54 really wait; the queue counts 63 (32 queued + 31 taken): one more fits, not ten.
    assert_eq!(fitted - 1, 1, "events that fitted before the lag");
    let rest: Vec<Result<Event<C>, Error>> = block_on(subscription.by_ref().collect());
    let received: Vec<EventId> = rest.iter().filter_map(|r| r.as_ref().ok()).map(Event::id).collect();
    assert_eq!(received, ids(&sent[10..sent.len() - 1]), "everything queued before the lag, in order");
    assert!(matches!(rest.last(), Some(Err(Error::Lagged { .. }))));
}

#[test]
fn retention_keeps_at_most_history_len_events_per_audience() {
    let hub = MemoryHub::<C>::builder().retention(Some(Retention::default().with_max_events(3))).build();
    let (alice, bob) = (user(1), user(2));
    let for_alice: Vec<Event<C>> = (0..5).map(|n| event(Audience::User(alice), n)).collect();
    let for_bob: Vec<Event<C>> = (0..2).map(|n| event(Audience::User(bob), n)).collect();
    let broadcasts: Vec<Event<C>> = (0..4).map(|n| event(Audience::Broadcast, n)).collect();
    for e in for_alice.iter().chain(&for_bob).chain(&broadcasts) {
        block_on(hub.publish(e.clone())).unwrap();
    }
    assert_eq!(hub.stats().retained_events, 3 + 2 + 3);
    // Bob's own history is whole, but the broadcasts lost one.
    let replay = block_on(hub.missed_events(bob, for_bob[0].id(), CategorySet::all())).unwrap();
    assert_eq!(replay.status, ReplayStatus::Truncated);
    let mut expected = vec![for_bob[1].id()];
    expected.extend(ids(&broadcasts[1..]));
    assert_eq!(ids(&replay.events), expected);
}

#[test]
fn replay_after_a_broadcast_reports_truncated_when_the_users_events_since_were_trimmed() {
    let hub = MemoryHub::<C>::builder().retention(Some(Retention::default().with_max_events(2))).build();
    let alice = user(1);
    let broadcast = event(Audience::Broadcast, 0);
    block_on(hub.publish(broadcast.clone())).unwrap();
    let own: Vec<Event<C>> = (0..3).map(|n| event(Audience::User(alice), n)).collect();
    for e in &own {
        block_on(hub.publish(e.clone())).unwrap();
    }
    let replay = block_on(hub.missed_events(alice, broadcast.id(), CategorySet::all())).unwrap();
    assert_eq!(replay.status, ReplayStatus::Truncated, "alice's first event after the broadcast was trimmed");
    assert_eq!(ids(&replay.events), ids(&own[1..]));
}

#[test]
fn events_expire_after_history_age_and_their_ids_then_replay_as_truncated() {
    let hub = MemoryHub::<C>::builder()
        .retention(Some(Retention::default().with_max_age(Duration::from_secs(1))))
        .build();
    let alice = user(1);
    let old = event(Audience::User(alice), 0);
    block_on(hub.publish(old.clone())).unwrap();
    // Past `old`'s age limit, and a whole second before `fresh` reaches its own.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = event(Audience::User(alice), 1);
    block_on(hub.publish(fresh.clone())).unwrap();
    let replay = block_on(hub.missed_events(alice, old.id(), CategorySet::all())).unwrap();
    assert_eq!(replay.status, ReplayStatus::Truncated);
    assert_eq!(ids(&replay.events), vec![fresh.id()]);
    assert_eq!(hub.stats().retained_events, 1);
}

#[test]
fn a_user_with_no_subscription_and_no_retained_event_leaves_nothing_behind() {
    let hub = MemoryHub::<C>::builder()
        .retention(Some(Retention::default().with_max_age(Duration::from_millis(30))))
        .build();
    let alice = user(1);
    let subscription = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    block_on(hub.publish(event(Audience::User(alice), 0))).unwrap();
    drop(subscription);
    assert_eq!(hub.stats().users, 1, "alice's retained event keeps her entry");
    std::thread::sleep(Duration::from_millis(60));
    hub.purge_expired();
    let stats = hub.stats();
    assert_eq!((stats.users, stats.open_subscriptions, stats.retained_events), (0, 0, 0));

    // Without retention, a dropped subscription is all there was.
    let hub = MemoryHub::<C>::builder().retention(None).build();
    let subscription = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    block_on(hub.publish(event(Audience::User(alice), 0))).unwrap();
    block_on(hub.publish(event(Audience::User(user(2)), 0))).unwrap();
    assert_eq!(hub.stats().users, 1);
    drop(subscription);
    assert_eq!(hub.stats().users, 0);
}

#[test]
fn ids_of_foreign_publishers_replay_correctly_in_any_order() {
    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    // Version 4 ids in no particular order, then UUIDv7s older than some of them.
    let mut published = Vec::new();
    for raw in [0x9u128 << 100, 0x3 << 100, 0xf << 100, 0x1 << 100, 0x7 << 100] {
        let id = EventId::from_uuid(Uuid::from_u128(raw | 0x4000_8000_0000_0000_0000));
        let audience = if raw % 2 == 0 { Audience::User(alice) } else { Audience::Broadcast };
        published.push(Event::from_parts(id, audience, "foreign", C::Import, "{}", Utc::now()).unwrap());
    }
    published.push(event(Audience::User(alice), 0));
    published.push(event(Audience::Broadcast, 1));
    for e in &published {
        block_on(hub.publish(e.clone())).unwrap();
    }
    for (position, after) in published.iter().enumerate() {
        let replay = block_on(hub.missed_events(alice, after.id(), CategorySet::all())).unwrap();
        assert_eq!(replay.status, ReplayStatus::Complete, "replay after #{position}");
        assert_eq!(ids(&replay.events), ids(&published[position + 1..]), "replay after #{position}");
    }
}

#[test]
fn a_republished_id_replays_from_its_latest_position() {
    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    let first = event(Audience::User(alice), 0);
    let second = event(Audience::User(alice), 1);
    for e in [&first, &second, &first] {
        block_on(hub.publish(e.clone())).unwrap();
    }
    let replay = block_on(hub.missed_events(alice, first.id(), CategorySet::all())).unwrap();
    assert_eq!(replay.status, ReplayStatus::Complete);
    assert!(replay.events.is_empty());
}

#[test]
fn closing_the_hub_ends_subscriptions_after_their_queued_events_and_refuses_new_work() {
    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    let mut subscription = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    let queued = event(Audience::User(alice), 0);
    block_on(hub.publish(queued.clone())).unwrap();
    hub.close();
    assert!(hub.is_closed());
    assert_eq!(block_on(subscription.next()).unwrap().unwrap(), queued);
    assert!(matches!(block_on(subscription.next()), Some(Err(Error::Closed))), "closing is said once");
    assert!(block_on(subscription.next()).is_none());
    assert!(subscription.is_terminated());
    assert!(matches!(block_on(hub.publish(event(Audience::User(alice), 1))), Err(Error::Closed)));
    assert!(matches!(block_on(hub.subscribe(alice, CategorySet::all())), Err(Error::Closed)));
    assert_eq!(hub.stats().open_subscriptions, 0);
    let replay = block_on(hub.missed_events(alice, queued.id(), CategorySet::all())).unwrap();
    assert_eq!(replay.status, ReplayStatus::Complete, "history stays readable after close");
}

#[test]
fn subscribing_and_dropping_from_many_threads_while_publishing_leaves_no_registration() {
    let hub = MemoryHub::<C>::builder().queue_capacity(8).build();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let hub = hub.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let audience =
                    if n % 4 == 0 { Audience::Broadcast } else { Audience::User(user(n as u128 % 8)) };
                block_on(hub.publish(event(audience, n))).unwrap();
                n += 1;
            }
        })
    };
    let churners: Vec<_> = (0..4u128)
        .map(|t| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for round in 0..500u128 {
                    let mut subscription =
                        block_on(hub.subscribe(user((t + round) % 8), CategorySet::all())).unwrap();
                    if round % 3 == 0 {
                        let _ = block_on(subscription.next());
                    }
                }
            })
        })
        .collect();
    for churner in churners {
        churner.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let stats = hub.stats();
    assert_eq!(stats.open_subscriptions, 0);
    // Users 1, 2, 3, 5, 6 and 7 were published to; 0 and 4 only subscribed.
    assert_eq!(stats.users, 6, "only users with retained events remain");
}

#[test]
fn filters_are_kept_per_subscription() {
    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    let mut ai = block_on(hub.subscribe(alice, CategorySet::only(C::Ai))).unwrap();
    let mut security = block_on(hub.subscribe(alice, CategorySet::only(C::Security))).unwrap();
    let a = Event::new(Audience::User(alice), "a", C::Ai, "{}").unwrap();
    let s = Event::new(Audience::Broadcast, "s", C::Security, "{}").unwrap();
    block_on(hub.publish(a.clone())).unwrap();
    block_on(hub.publish(s.clone())).unwrap();
    assert_eq!(block_on(ai.next()).unwrap().unwrap(), a);
    assert_eq!(block_on(security.next()).unwrap().unwrap(), s);
    assert_eq!(hub.stats().delivered, 2);
    // Publishing queued synchronously: anything else for either would be waiting already.
    assert!(ai.next().now_or_never().is_none(), "the Ai subscription got the Security event too");
    assert!(security.next().now_or_never().is_none(), "the Security subscription got the Ai event too");
}

#[test]
fn dropping_the_last_hub_handle_ends_its_subscriptions() {
    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    let mut subscription = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    let clone = hub.clone();
    drop(hub);
    let queued = event(Audience::User(alice), 0);
    block_on(clone.publish(queued.clone())).unwrap();
    drop(clone);
    assert_eq!(block_on(subscription.next()).unwrap().unwrap(), queued);
    assert!(matches!(block_on(subscription.next()), Some(Err(Error::Closed))), "closing is said once");
    assert!(block_on(subscription.next()).is_none(), "the stream ends with the last handle");
}

#[test]
fn a_subscription_dropped_by_its_waker_does_not_deadlock_the_publisher() {
    use std::sync::Mutex;
    use std::task::{Context, Poll, Wake, Waker};

    /// A waker that drops the subscription it wakes, as an executor shutting
    /// down drops the task holding it.
    struct DropOnWake(Mutex<Option<ssehub::memory::Subscription<C>>>);
    impl Wake for DropOnWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            drop(self.0.lock().unwrap().take());
        }
    }

    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    let subscription = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    let holder = Arc::new(DropOnWake(Mutex::new(Some(subscription))));
    let waker = Waker::from(Arc::clone(&holder));
    let polled = {
        let mut guard = holder.0.lock().unwrap();
        let subscription = guard.as_mut().unwrap();
        subscription.poll_next_unpin(&mut Context::from_waker(&waker))
    };
    assert!(matches!(polled, Poll::Pending));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let publisher_hub = hub.clone();
    std::thread::spawn(move || {
        block_on(publisher_hub.publish(event(Audience::User(alice), 0))).unwrap();
        block_on(publisher_hub.publish(event(Audience::Broadcast, 1))).unwrap();
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(Duration::from_secs(10)).expect("publishing finished: no deadlock");
    assert!(holder.0.lock().unwrap().is_none(), "the waker ran and dropped the subscription");
    assert_eq!(hub.stats().open_subscriptions, 0);
}

#[test]
fn a_subscriber_lagging_on_broadcasts_is_unregistered_from_its_user_too() {
    let hub = MemoryHub::<C>::builder().queue_capacity(2).retention(None).build();
    let alice = user(1);
    let mut lagging = block_on(hub.subscribe(alice, CategorySet::all())).unwrap();
    for n in 0..3 {
        block_on(hub.publish(event(Audience::Broadcast, n))).unwrap();
    }
    let stats = hub.stats();
    assert_eq!((stats.lagged, stats.open_subscriptions, stats.users), (1, 0, 0));
    block_on(hub.publish(event(Audience::User(alice), 3))).unwrap();
    assert_eq!(hub.stats().delivered, 2, "nothing reaches a lagged subscription any more");
    let items: Vec<Result<Event<C>, Error>> = block_on(lagging.by_ref().collect());
    assert_eq!(items.len(), 3);
    assert!(items[2].as_ref().is_err_and(Error::is_lagged));
}
