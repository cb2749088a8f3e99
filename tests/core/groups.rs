//! Groups beyond the conformance suite: the cap of 64 groups per reader, the memory hub's open groups gauge, resuming group streams while they are published to.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use futures::executor::block_on;
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::MemoryHub;
use ssehub::{
    Audience, CategorySet, Cursor, Event, EventId, EventSource, GroupId, Groups, MAX_GROUPS, Publisher,
    Reader, ReplayStatus, Retention, StreamKind, TooManyGroups, UserId, resume,
};

fn event(audience: Audience, n: usize) -> Event<C> {
    Event::new(audience, "test", C::Ai, format!("{{\"n\":{n}}}")).unwrap()
}

#[test]
fn groups_new_refuses_more_than_64_distinct_groups_with_a_clear_message() {
    assert_eq!(MAX_GROUPS, 64);
    let error = Groups::new((0..65).map(GroupId::from_u64)).unwrap_err();
    assert_eq!(error, TooManyGroups { given: 65 });
    assert_eq!(error.to_string(), "a subscription reads at most 64 groups, 65 were given");
    // Repeats count once: 65 names of 64 groups are fine.
    let groups = Groups::new((0..64).chain([0]).map(GroupId::from_u64)).unwrap();
    assert_eq!(groups.len(), 64);
}

#[test]
fn subscribe_and_resume_with_a_reader_of_64_groups_deliver_and_replay_every_group() {
    block_on(async {
        let hub = MemoryHub::<C>::new();
        let user = UserId::from_u64(1);
        let all: Vec<GroupId> = (1..=64).map(GroupId::from_u64).collect();
        let reader = Reader::new(user, Groups::new(all.iter().copied()).unwrap());
        let mut live = hub.subscribe(&reader, CategorySet::all()).await.unwrap();
        let mut stream = resume(&hub, &reader, None, CategorySet::all()).await.unwrap();

        let first: Vec<Event<C>> =
            all.iter().enumerate().map(|(n, g)| event(Audience::Group(*g), n)).collect();
        for event in &first {
            hub.publish(event.clone()).await.unwrap();
        }
        for expected in &first {
            assert_eq!(live.next().await.unwrap().unwrap(), *expected);
            assert_eq!(stream.next().await.unwrap().unwrap(), *expected);
        }
        // The cursor holds a position in each of the 64 groups and round-trips through its text.
        let cursor = stream.cursor().unwrap();
        assert_eq!(cursor.positions().groups.len(), 64);
        let text = cursor.to_string();
        let cursor: Cursor = text.parse().unwrap();
        drop(stream);

        let missed: Vec<Event<C>> =
            all.iter().rev().enumerate().map(|(n, g)| event(Audience::Group(*g), 100 + n)).collect();
        for event in &missed {
            hub.publish(event.clone()).await.unwrap();
        }
        let mut stream = resume(&hub, &reader, Some(cursor.into()), CategorySet::all()).await.unwrap();
        assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete));
        for expected in &missed {
            assert_eq!(stream.next().await.unwrap().unwrap(), *expected);
        }
        let last = event(Audience::Group(all[63]), 999);
        hub.publish(last.clone()).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), last);
    });
}

#[test]
fn open_groups_counts_groups_with_a_subscription_and_falls_back_to_zero() {
    block_on(async {
        let hub = MemoryHub::<C>::new();
        let (g1, g2, g3) = (GroupId::from_u64(1), GroupId::from_u64(2), GroupId::from_u64(3));
        let (ann, bob) = (UserId::from_u64(1), UserId::from_u64(2));
        assert_eq!(hub.stats().open_groups, 0);
        let a = hub
            .subscribe(Reader::new(ann, Groups::new([g1, g2]).unwrap()), CategorySet::all())
            .await
            .unwrap();
        assert_eq!(hub.stats().open_groups, 2);
        let b = hub
            .subscribe(Reader::new(bob, Groups::new([g2, g3]).unwrap()), CategorySet::all())
            .await
            .unwrap();
        assert_eq!(hub.stats().open_groups, 3);
        let a2 =
            hub.subscribe(Reader::new(ann, Groups::new([g1]).unwrap()), CategorySet::all()).await.unwrap();
        let plain = hub.subscribe(ann, CategorySet::all()).await.unwrap();
        assert_eq!(hub.stats().open_groups, 3);
        // A retained event does not hold a group open.
        hub.publish(event(Audience::Group(g3), 0)).await.unwrap();
        drop(b);
        assert_eq!(hub.stats().open_groups, 2, "g3 lost its only subscription");
        drop(a);
        assert_eq!(hub.stats().open_groups, 1, "g1 is still read by ann's second subscription");
        drop(plain);
        assert_eq!(hub.stats().open_groups, 1);
        drop(a2);
        assert_eq!(hub.stats().open_groups, 0);
        assert_eq!(hub.stats().open_subscriptions, 0);
    });
}

/// A client resuming over and over while a thread publishes to its group and
/// its own stream: every event exactly once, each stream in order. (A group's
/// replay must end where its own lock saw it, or an event published during the
/// replay comes both replayed and live.)
#[test]
fn resuming_group_streams_while_they_are_published_to_is_exactly_once() {
    const EVENTS: usize = 4000;
    let hub = MemoryHub::<C>::builder()
        .retention(Some(Retention::default().with_max_events(2 * EVENTS as u64)))
        .build();
    let user = UserId::from_u64(7);
    let group = GroupId::from_u64(7);
    let reader = Reader::new(user, Groups::new([group]).unwrap());
    let plan: Vec<Event<C>> = (0..EVENTS)
        .map(|n| event(if n % 3 == 0 { Audience::User(user) } else { Audience::Group(group) }, n))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    // Connected before anything is published: every event is owed.
    let mut stream = block_on(resume(&hub, &reader, None, CategorySet::all())).unwrap();
    let publisher = {
        let (hub, plan, done) = (hub.clone(), plan.clone(), done.clone());
        std::thread::spawn(move || {
            for event in plan {
                block_on(hub.publish(event)).unwrap();
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut received: Vec<Event<C>> = Vec::new();
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut reconnects = 0;
    while received.len() < EVENTS {
        for _ in 0..1 + reconnects % 7 {
            let event = block_on(stream.next()).unwrap().unwrap();
            assert!(
                seen.insert(event.id()),
                "{} delivered twice (after {reconnects} reconnects)",
                event.id()
            );
            received.push(event);
            if received.len() == EVENTS {
                break;
            }
        }
        let cursor = stream.cursor().unwrap();
        stream = block_on(resume(&hub, &reader, Some(cursor.into()), CategorySet::all())).unwrap();
        assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete));
        reconnects += 1;
    }
    publisher.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    for kind in [StreamKind::Own, StreamKind::Group(group)] {
        let got: Vec<EventId> =
            received.iter().filter(|e| StreamKind::of(e.audience()) == kind).map(Event::id).collect();
        let sent: Vec<EventId> =
            plan.iter().filter(|e| StreamKind::of(e.audience()) == kind).map(Event::id).collect();
        assert_eq!(got, sent, "the {kind} stream, after {reconnects} reconnects");
    }
}

/// The cursor of a reader of 64 groups that has seen an event of each comes back through the
/// request parser (as a browser's `Last-Event-ID`) and resumes exactly.
#[test]
fn a_cursor_of_64_groups_comes_back_through_the_last_event_id_parser() {
    futures::executor::block_on(async {
        let hub = MemoryHub::<C>::new();
        let user = UserId::from_u64(64);
        let groups: Vec<GroupId> = (0..MAX_GROUPS as u64).map(GroupId::from_u64).collect();
        let reader = Reader::new(user, Groups::new(groups.iter().copied()).unwrap());
        let mut stream = resume(&hub, reader.clone(), None, CategorySet::all()).await.unwrap();
        for (n, group) in groups.iter().enumerate() {
            let event = Event::new(Audience::Group(*group), "n", C::Ai, n.to_string()).unwrap();
            hub.publish(event).await.unwrap();
            stream.next().await.unwrap().unwrap();
        }
        let text = stream.cursor().unwrap().to_string();
        assert!(text.len() > 1_000, "a cursor of 64 group positions: {} bytes", text.len());
        let header = ssehub::parse::resume_point(&text).unwrap().expect("a cursor");
        drop(stream);
        let missed = Event::new(Audience::Group(groups[7]), "n", C::Ai, "\"missed\"").unwrap();
        hub.publish(missed.clone()).await.unwrap();
        let mut stream = resume(&hub, reader, Some(header), CategorySet::all()).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), missed);
        assert_eq!(stream.pending_replay(), 0, "only the missed event is replayed");
    });
}
