//! Outages of the Redis backend: killed subscriber connections, a server restarted empty, retention off, overflows.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::collections::HashSet;
use std::time::Duration;

use fred_support::{C, builder, event, eventually, fresh_user, next_item, within};
use redis_server::RedisServer;
use ssehub::fred::{RedisHub, Subscription};
use ssehub::{Audience, CategorySet, Error, Event, EventId, EventSource, Publisher, UserId};

/// Reads `subscription` until `last` arrives; every item must be an event (no gap, no error).
async fn read_events_until(subscription: &mut Subscription<C>, last: EventId, who: &str) -> Vec<EventId> {
    let mut got = Vec::new();
    loop {
        match next_item(subscription, who).await {
            Some(Ok(e)) => {
                got.push(e.id());
                if e.id() == last {
                    return got;
                }
            }
            other => panic!("{who}: expected events only, got {other:?} after {} events", got.len()),
        }
    }
}

/// Asserts `got == expected`, explaining the first difference.
fn assert_same_sequence(got: &[EventId], expected: &[EventId], who: &str) {
    if got == expected {
        return;
    }
    let at = got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
    let got_set: HashSet<_> = got.iter().collect();
    let expected_set: HashSet<_> = expected.iter().collect();
    panic!(
        "{who}: got {} events ({} distinct), expected {}; first difference at #{at}: got {:?}, expected {:?}; \
         missing {:?}; unexpected {:?}",
        got.len(),
        got_set.len(),
        expected.len(),
        got.get(at..(at + 3).min(got.len())),
        expected.get(at..(at + 3).min(expected.len())),
        expected_set.difference(&got_set).collect::<Vec<_>>(),
        got_set.difference(&expected_set).collect::<Vec<_>>(),
    );
}

/// A plan of events over `users` and broadcasts, fixed before anything runs.
fn plan(users: &[UserId], count: usize) -> Vec<Event<C>> {
    (0..count)
        .map(|n| {
            let audience =
                if n % 5 == 4 { Audience::Broadcast } else { Audience::User(users[n % users.len()]) };
            event(audience, n)
        })
        .collect()
}

fn expected_for(user: UserId, published: &[Event<C>]) -> Vec<EventId> {
    published.iter().filter(|e| e.audience().includes(user)).map(Event::id).collect()
}

#[test]
fn killing_the_subscriber_connection_mid_stream_loses_and_duplicates_nothing() {
    const EVENTS: usize = 400;
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "kill").connect()).await.expect("connect");
        let users: Vec<UserId> = (0..4).map(|_| fresh_user()).collect();
        let mut subscriptions = Vec::new();
        for user in &users {
            for _ in 0..2 {
                subscriptions
                    .push((*user, hub.subscribe(*user, CategorySet::all()).await.expect("subscribe")));
            }
        }
        let published = plan(&users, EVENTS);
        let mut kills = 0;
        for (n, e) in published.iter().enumerate() {
            if n == EVENTS / 4 || n == EVENTS * 3 / 4 {
                let reply = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                assert_eq!(reply.as_int(), Some(1), "one pubsub connection killed: {reply}");
                kills += 1;
            }
            within("publish", hub.publish(e.clone())).await.expect("publish");
            // Keep publishing while the subscriber connection is down and coming back.
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        // Every user's own last event comes last for that user: publish one more each.
        let mut finals = Vec::new();
        for (n, user) in users.iter().enumerate() {
            let e = event(Audience::User(*user), EVENTS + n);
            within("publish", hub.publish(e.clone())).await.expect("publish");
            finals.push(e);
        }
        let all: Vec<Event<C>> = published.iter().chain(&finals).cloned().collect();
        for (user, subscription) in &mut subscriptions {
            let last = finals.iter().find(|e| e.audience() == Audience::User(*user)).unwrap().id();
            let got = read_events_until(subscription, last, "a subscriber across two kills").await;
            let expected = expected_for(*user, &all);
            let distinct: HashSet<_> = got.iter().collect();
            assert_eq!(distinct.len(), got.len(), "no duplicates");
            assert_eq!(got, expected, "every event exactly once, in publish order");
        }
        let stats = hub.stats();
        println!("after {kills} kills of the subscriber connection: {stats:?}");
        assert!(stats.reconnects >= 2, "the hub saw both reconnects: {stats:?}");
        assert!(stats.recovered > 0, "events published while down came from the streams: {stats:?}");
        assert_eq!(stats.gaps, 0, "nothing was lost: {stats:?}");
    });
}

#[test]
fn a_server_restarted_empty_gives_every_subscriber_a_gap_then_live_events() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "restart").connect()).await.expect("connect");
        let users: Vec<UserId> = (0..3).map(|_| fresh_user()).collect();
        let mut subscriptions = Vec::new();
        for user in &users {
            for _ in 0..2 {
                subscriptions
                    .push((*user, hub.subscribe(*user, CategorySet::all()).await.expect("subscribe")));
            }
        }
        // One more user who got only broadcasts before the restart: its own stream never existed.
        let quiet = fresh_user();
        let mut quiet_subscription = hub.subscribe(quiet, CategorySet::all()).await.expect("subscribe");
        let before = plan(&users, 20);
        for e in &before {
            hub.publish(e.clone()).await.expect("publish");
        }
        for (user, subscription) in &mut subscriptions {
            let expected = expected_for(*user, &before);
            let got = read_events_until(subscription, *expected.last().unwrap(), "before the restart").await;
            assert_eq!(got, expected);
        }
        let quiet_expected = expected_for(quiet, &before);
        let quiet_last = *quiet_expected.last().unwrap();
        assert_eq!(
            read_events_until(&mut quiet_subscription, quiet_last, "the quiet subscriber").await,
            quiet_expected
        );

        server.restart();
        let subscriber_count = subscriptions.len() as u64 + 1;
        eventually("every subscriber told of the gap", || hub.stats().gaps >= subscriber_count).await;

        for (user, subscription) in &mut subscriptions {
            let last_before = *expected_for(*user, &before).last().unwrap();
            match next_item(subscription, "the gap signal").await {
                Some(Err(Error::Gap { last_delivered, .. })) => assert_eq!(last_delivered, Some(last_before)),
                other => panic!("expected Error::Gap after the restart, got {other:?}"),
            }
        }
        match next_item(&mut quiet_subscription, "the gap signal").await {
            Some(Err(Error::Gap { last_delivered, .. })) => assert_eq!(last_delivered, Some(quiet_last)),
            other => panic!("expected Error::Gap after the restart, got {other:?}"),
        }

        // Then live events again, on the restarted server.
        let after = plan(&users, 10);
        for e in &after {
            within("publish after the restart", hub.publish(e.clone())).await.expect("publish");
        }
        for (user, subscription) in &mut subscriptions {
            let expected = expected_for(*user, &after);
            let got = read_events_until(subscription, *expected.last().unwrap(), "after the restart").await;
            assert_eq!(got, expected, "live events after the gap");
        }
        let e = event(Audience::User(quiet), 99);
        hub.publish(e.clone()).await.expect("publish");
        let got = read_events_until(&mut quiet_subscription, e.id(), "the quiet subscriber").await;
        let broadcasts: Vec<EventId> =
            after.iter().filter(|e| e.audience() == Audience::Broadcast).map(Event::id).collect();
        assert_eq!(got, broadcasts.into_iter().chain([e.id()]).collect::<Vec<_>>());
        println!("after a restart with empty data: {:?}", hub.stats());
    });
}

#[test]
fn without_retention_an_outage_gives_a_gap_then_live_events() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> = within("connect", builder(&server.url(), "noret").retention(None).connect())
            .await
            .expect("connect");
        let user = fresh_user();
        let mut subscription = hub.subscribe(user, CategorySet::all()).await.expect("subscribe");
        let first = event(Audience::User(user), 0);
        hub.publish(first.clone()).await.expect("publish");
        assert_eq!(read_events_until(&mut subscription, first.id(), "before").await, vec![first.id()]);

        server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        match next_item(&mut subscription, "the gap signal").await {
            Some(Err(Error::Gap { last_delivered, .. })) => assert_eq!(last_delivered, Some(first.id())),
            other => panic!("expected Error::Gap, got {other:?}"),
        }
        let second = event(Audience::User(user), 1);
        within("publish", hub.publish(second.clone())).await.expect("publish");
        assert_eq!(read_events_until(&mut subscription, second.id(), "after").await, vec![second.id()]);
        assert_eq!(hub.stats().gaps, 1);
    });
}

#[test]
fn an_overflow_of_the_clients_message_channel_is_recovered_from_the_streams() {
    const EVENTS: usize = 600;
    let server = RedisServer::start();
    futures::executor::block_on(async {
        // A message channel of 2 overflows as soon as the dispatcher falls two messages behind.
        let hub: RedisHub<C> = within(
            "connect",
            builder(&server.url(), "overflow").message_channel_capacity(2).queue_capacity(4096).connect(),
        )
        .await
        .expect("connect");
        let users: Vec<UserId> = (0..5).map(|_| fresh_user()).collect();
        let mut subscriptions = Vec::new();
        for user in &users {
            // Many subscriptions make each fan-out slow enough to fall behind.
            for _ in 0..40 {
                subscriptions
                    .push((*user, hub.subscribe(*user, CategorySet::all()).await.expect("subscribe")));
            }
        }
        let mut starts = Vec::new();
        for (n, user) in users.iter().enumerate() {
            let e = event(Audience::User(*user), EVENTS * 2 + n);
            hub.publish(e.clone()).await.expect("publish");
            starts.push(e);
        }
        let published = plan(&users, EVENTS);
        let publishes = published.iter().map(|e| hub.publish(e.clone()));
        // Concurrent publishes, so messages arrive in bursts.
        for result in futures::future::join_all(publishes).await {
            result.expect("publish");
        }
        let mut finals = Vec::new();
        for (n, user) in users.iter().enumerate() {
            let e = event(Audience::User(*user), EVENTS + n);
            hub.publish(e.clone()).await.expect("publish");
            finals.push(e);
        }
        for (n, (user, subscription)) in subscriptions.iter_mut().enumerate() {
            let start = starts.iter().find(|e| e.audience() == Audience::User(*user)).unwrap().id();
            let last = finals.iter().find(|e| e.audience() == Audience::User(*user)).unwrap().id();
            let mut got = read_events_until(subscription, last, "a subscriber of a flooded hub").await;
            // Concurrent publishes: the order is the one Redis ran them in, which the streams record.
            let replay = hub.missed_events(*user, start, CategorySet::all()).await.expect("missed_events");
            let in_redis_order: Vec<EventId> = replay.events.iter().map(Event::id).collect();
            let expected: HashSet<EventId> = published
                .iter()
                .chain(&finals)
                .filter(|e| e.audience().includes(*user))
                .map(Event::id)
                .collect();
            assert_eq!(in_redis_order.iter().copied().collect::<HashSet<_>>(), expected, "replay holds all");
            // Broadcasts published before this user's start event arrive before it.
            if let Some(at) = got.iter().position(|id| *id == start) {
                got.drain(..=at);
            }
            assert_same_sequence(&got, &in_redis_order, &format!("subscription #{n}"));
        }
        let stats = hub.stats();
        println!("after a flood through a message channel of 2: {stats:?}");
        assert!(stats.message_channel_overflows > 0, "the channel overflowed: {stats:?}");
        assert_eq!(stats.gaps, 0, "every overflow was recovered: {stats:?}");
    });
}

#[test]
fn while_the_server_is_down_publish_and_subscribe_fail_within_the_command_timeout_then_work_again() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> = within(
            "connect",
            builder(&server.url(), "down").command_timeout(Duration::from_millis(500)).connect(),
        )
        .await
        .expect("connect");
        let user = fresh_user();
        let mut subscription = hub.subscribe(user, CategorySet::all()).await.expect("subscribe");
        server.kill();

        let started = std::time::Instant::now();
        let failed = within("a publish while down", hub.publish(event(Audience::User(user), 0))).await;
        assert!(failed.is_err(), "publishing to a stopped server fails");
        let other = fresh_user();
        let refused = within("a subscribe while down", hub.subscribe(other, CategorySet::all())).await;
        assert!(refused.is_err(), "subscribing while the server is down fails");
        println!("publish and subscribe failed after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10), "failures come from the timeout, not a hang");

        server.restart();
        let e = event(Audience::User(user), 1);
        // The client reconnects on its own; publishing works again once it has.
        within("a publish after the restart", async {
            while hub.publish(e.clone()).await.is_err() {
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        })
        .await;
        // The subscription lived through it: a gap (the server came back empty), then the event.
        match next_item(&mut subscription, "the gap").await {
            Some(Err(Error::Gap { .. })) => {}
            other => panic!("expected Error::Gap, got {other:?}"),
        }
        let got = read_events_until(&mut subscription, e.id(), "after the restart").await;
        assert_eq!(got, vec![e.id()]);
        let mut again =
            within("subscribe", hub.subscribe(other, CategorySet::all())).await.expect("subscribe");
        let f = event(Audience::User(other), 2);
        hub.publish(f.clone()).await.expect("publish");
        assert_eq!(read_events_until(&mut again, f.id(), "a new subscriber").await, vec![f.id()]);
    });
}
