//! Publish batching on a standalone server: overlapping publishes share script calls, keep every event, and fail one by one.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::collections::HashSet;

use fred_support::{C, builder, event, fresh_user, next_event, within};
use futures::future::join_all;
use redis_server::RedisServer;
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, CategorySet, Error, EventId, EventSource, Publisher};

/// The `EVALSHA` calls the server has run so far.
fn script_calls(server: &RedisServer) -> u64 {
    let stats = server.info("commandstats");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a call count"))
}

/// The entry ids of a stream, oldest first.
fn entry_ids(server: &RedisServer, stream: &str) -> Vec<String> {
    let reply = server.command(&["XRANGE", stream, "-", "+"]);
    let entries = reply.as_array().expect("XRANGE answers an array");
    entries
        .iter()
        .map(|entry| entry.as_array().expect("an entry")[0].as_str().expect("an entry id").to_string())
        .collect()
}

/// An entry id as (milliseconds, sequence), for ordering.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

#[test]
fn overlapping_publishes_share_script_calls_and_every_event_arrives_once_in_id_order() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "batch").connect()).await.expect("connect");
        let users: Vec<_> = (0..8).map(|_| fresh_user()).collect();
        let mut subscriptions = Vec::new();
        for &user in &users {
            let subscription =
                within("subscribe", hub.subscribe(user, CategorySet::all())).await.expect("subscribe");
            subscriptions.push(subscription);
        }
        let before = script_calls(&server);

        const EVENTS: usize = 2_000;
        let events: Vec<_> = (0..EVENTS)
            .map(|n| {
                let audience =
                    if n % 10 == 9 { Audience::Broadcast } else { Audience::User(users[n % users.len()]) };
                event(audience, n)
            })
            .collect();
        let outcomes =
            within("2,000 concurrent publishes", join_all(events.iter().map(|e| hub.publish(e.clone()))))
                .await;
        for outcome in &outcomes {
            outcome.as_ref().expect("every publish succeeds");
        }
        let calls = script_calls(&server) - before;
        assert!(
            calls < EVENTS as u64 / 4,
            "2,000 overlapping publishes took {calls} script calls: they were not batched"
        );

        // Each subscriber gets its user's events and the broadcasts, each once, in entry id order.
        let layout = KeyLayout::standalone_with_prefix("batch").expect("a valid prefix");
        let broadcast_ids = entry_ids(&server, &layout.stream(Audience::Broadcast));
        let mut reached: HashSet<EventId> = HashSet::new();
        for (index, &user) in users.iter().enumerate() {
            let user_ids = entry_ids(&server, &layout.stream(Audience::User(user)));
            let expected: Vec<EventId> = events
                .iter()
                .filter(|e| e.audience() == Audience::User(user) || e.audience() == Audience::Broadcast)
                .map(|e| e.id())
                .collect();
            assert_eq!(user_ids.len() + broadcast_ids.len(), expected.len(), "every event is stored once");
            let mut received = Vec::new();
            for _ in 0..expected.len() {
                let delivered = next_event(&mut subscriptions[index], "a batched event").await;
                received.push(delivered.id());
            }
            let mut sorted_received = received.clone();
            sorted_received.sort();
            let mut sorted_expected = expected.clone();
            sorted_expected.sort();
            assert_eq!(sorted_received, sorted_expected, "user {index} got each of its events exactly once");
            // Delivery order is entry id order, across the user's stream and the broadcast stream.
            let replay = within("replay", hub.missed_events(user, received[0], CategorySet::all()))
                .await
                .expect("replay");
            let replayed: Vec<EventId> = replay.events.iter().map(|e| e.id()).collect();
            assert_eq!(replayed, received[1..].to_vec(), "live order equals replay order");
            reached.extend(received.iter().copied());
        }
        assert_eq!(reached.len(), EVENTS, "every published event reached someone");

        // One sequence numbers every stream: no id is used twice.
        let mut all_ids = broadcast_ids.clone();
        for &user in &users {
            all_ids.extend(entry_ids(&server, &layout.stream(Audience::User(user))));
        }
        let mut ordered: Vec<_> = all_ids.iter().map(|id| entry_order(id)).collect();
        ordered.sort_unstable();
        ordered.dedup();
        assert_eq!(ordered.len(), EVENTS, "entry ids are unique across streams");
    });
}

#[test]
fn an_event_redis_refuses_fails_alone_and_its_batch_mates_are_delivered() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "refuse").connect()).await.expect("connect");
        let layout = KeyLayout::standalone_with_prefix("refuse").expect("a valid prefix");
        let (broken, healthy) = (fresh_user(), fresh_user());
        // Not a stream: XADD to it fails with WRONGTYPE.
        server.command(&["SET", &layout.stream(Audience::User(broken)), "not a stream"]).expect_ok();
        let mut subscription =
            within("subscribe", hub.subscribe(healthy, CategorySet::all())).await.expect("subscribe");

        let events: Vec<_> =
            (0..200).map(|n| event(Audience::User(if n % 2 == 0 { broken } else { healthy }), n)).collect();
        let outcomes =
            within("200 concurrent publishes", join_all(events.iter().map(|e| hub.publish(e.clone())))).await;
        for (n, outcome) in outcomes.iter().enumerate() {
            if n % 2 == 0 {
                match outcome {
                    Err(Error::Backend(error)) => {
                        assert!(error.to_string().contains("WRONGTYPE"), "the error says why: {error}")
                    }
                    other => panic!("a publish to a key that is not a stream must fail, got {other:?}"),
                }
            } else {
                outcome.as_ref().expect("a publish to a healthy stream succeeds");
            }
        }
        let mut received = Vec::new();
        for _ in 0..100 {
            received.push(next_event(&mut subscription, "the healthy user's events").await.id());
        }
        let mut expected: Vec<EventId> = events.iter().skip(1).step_by(2).map(|e| e.id()).collect();
        received.sort();
        expected.sort();
        assert_eq!(received, expected, "every healthy event is delivered once, none of the refused ones");
        assert_eq!(entry_ids(&server, &layout.stream(Audience::User(healthy))).len(), 100);
    });
}

#[test]
fn an_entry_above_the_order_key_from_another_publisher_is_stepped_over() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "above").connect()).await.expect("connect");
        let layout = KeyLayout::standalone_with_prefix("above").expect("a valid prefix");
        let user = fresh_user();
        let stream = layout.stream(Audience::User(user));
        // Another writer's entry an hour ahead of the server's clock.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let ahead = format!("{}-5", now_ms + 3_600_000);
        let reply = server.command(&["XADD", &stream, &ahead, "event", "{}"]);
        assert!(!reply.is_error(), "{reply}");

        let outcomes = join_all((0..20).map(|n| hub.publish(event(Audience::User(user), n)))).await;
        for outcome in &outcomes {
            outcome.as_ref().expect("publishing above a foreign entry succeeds");
        }
        let ids = entry_ids(&server, &stream);
        assert_eq!(ids.len(), 21);
        assert_eq!(ids[0], ahead);
        let orders: Vec<_> = ids.iter().map(|id| entry_order(id)).collect();
        assert!(orders.windows(2).all(|pair| pair[0] < pair[1]), "ids keep rising: {ids:?}");
    });
}
