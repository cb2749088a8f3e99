//! Groups across hubs ("processes") sharing one Redis, on a server and on a cluster: one publish, every member's subscriptions, once; channels held while needed; recovery after a killed subscriber connection.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::collections::HashSet;
use std::time::Duration;

use fred_support::{C, event, fresh_user, next_event, within};
use redis_server::{RedisCluster, RedisServer};
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, CategorySet, EventId, EventSource, GroupId, Groups, Publisher, Reader, UserId};

fn fresh_group() -> GroupId {
    GroupId::from_uuid(*EventId::new().as_uuid())
}

async fn hubs(url: &str, layout: &KeyLayout, count: usize) -> Vec<RedisHub<C>> {
    let mut hubs = Vec::new();
    for _ in 0..count {
        let hub = RedisHub::builder(url).unwrap().key_layout(layout.clone()).connect();
        hubs.push(within("connect", hub).await.expect("connect"));
    }
    hubs
}

/// Three hubs; four members of one group with subscriptions on every hub (two on hub 0), a
/// non-member on each; group events published from two hubs.
async fn one_publish_reaches_every_member_once(url: String, layout: KeyLayout, server: impl Fn(&str) -> i64) {
    const EVENTS: usize = 50;
    let hubs = hubs(&url, &layout, 3).await;
    let team = fresh_group();
    let members: Vec<UserId> = (0..4).map(|_| fresh_user()).collect();
    let outsider = fresh_user();
    let groups = Groups::new([team]).unwrap();
    let channels_before: Vec<u64> = hubs.iter().map(|hub| hub.stats().redis_channels).collect();
    let mut subscriptions = Vec::new();
    for (n, hub) in hubs.iter().enumerate() {
        for member in &members {
            let copies = if n == 0 { 2 } else { 1 };
            for _ in 0..copies {
                let reader = Reader::new(*member, groups.clone());
                let subscription = within("subscribe", hub.subscribe(reader, CategorySet::all())).await;
                subscriptions.push((n, *member, subscription.expect("subscribe")));
            }
        }
    }
    let mut outsiders = Vec::new();
    for hub in &hubs {
        outsiders.push(within("subscribe", hub.subscribe(outsider, CategorySet::all())).await.unwrap());
    }
    for (n, hub) in hubs.iter().enumerate() {
        // The user channels of five users and one group channel, each held once per hub.
        assert_eq!(hub.stats().redis_channels, channels_before[n] + 6, "hub {n}'s channels");
    }
    let published: Vec<_> = (0..EVENTS).map(|n| event(Audience::Group(team), n)).collect();
    for (n, e) in published.iter().enumerate() {
        within("publish", hubs[if n % 2 == 0 { 0 } else { 2 }].publish(e.clone())).await.expect("publish");
    }
    let end = event(Audience::Broadcast, EVENTS);
    within("publish", hubs[1].publish(end.clone())).await.expect("publish");
    let expected: Vec<EventId> = published.iter().map(|e| e.id()).collect();
    for (n, member, subscription) in &mut subscriptions {
        // The group's events, in its stream's order; the broadcast may come anywhere among them.
        let mut got = Vec::new();
        let mut broadcasts = 0;
        while got.len() < EVENTS || broadcasts == 0 {
            let e = next_event(subscription, "a member's events").await;
            match e.audience() {
                Audience::Broadcast if e.id() == end.id() => broadcasts += 1,
                Audience::Broadcast => {}
                _ => got.push(e.id()),
            }
        }
        assert_eq!(got, expected, "{member} on hub {n}: every group event once, in publish order");
    }
    for outsider in &mut outsiders {
        assert_eq!(next_event(outsider, "the outsider's broadcast").await.id(), end.id(), "no group event");
    }
    // Published once: one stream entry per event, whatever the number of members and hubs.
    assert_eq!(server(&layout.stream(Audience::Group(team))), EVENTS as i64, "entries in the group's stream");
    drop(subscriptions);
    for (n, hub) in hubs.iter().enumerate() {
        fred_support::eventually(&format!("hub {n} releases the members' channels"), || {
            hub.stats().redis_channels == channels_before[n] + 1
        })
        .await;
    }
}

#[test]
fn one_group_publish_reaches_every_members_subscriptions_on_every_hub_of_one_server_once() {
    let server = RedisServer::start();
    let xlen = |key: &str| server.command(&["XLEN", key]).as_int().expect("XLEN");
    futures::executor::block_on(one_publish_reaches_every_member_once(
        server.url(),
        KeyLayout::standalone_with_prefix("groups").unwrap(),
        xlen,
    ));
}

#[test]
fn one_group_publish_reaches_every_members_subscriptions_on_every_hub_of_a_cluster_once() {
    let cluster = RedisCluster::start(3, 0);
    let xlen = |key: &str| {
        let node = cluster.node(cluster.master_for_key(key));
        node.command(&["XLEN", key]).as_int().expect("XLEN")
    };
    futures::executor::block_on(one_publish_reaches_every_member_once(
        cluster.url(),
        KeyLayout::cluster_with_prefix("groups").unwrap(),
        xlen,
    ));
}

#[test]
fn a_group_stream_and_its_channel_share_a_slot_of_their_own_in_the_cluster_layout() {
    let layout = KeyLayout::cluster_with_prefix("sse").unwrap();
    let team = GroupId::from_u64(7);
    let user = UserId::from_u64(7);
    let stream = layout.stream(Audience::Group(team));
    assert_eq!(stream, "sse:{g:00000000-0000-0000-0000-000000000007}:stream");
    let slot = redis_server::key_slot(&stream);
    assert_eq!(redis_server::key_slot(&layout.channel(Audience::Group(team))), slot);
    assert_ne!(
        redis_server::key_slot(&layout.stream(Audience::User(user))),
        slot,
        "not the same-number user's"
    );
    assert_eq!(
        layout.audience_of_channel(&layout.channel(Audience::Group(team))),
        Some(Audience::Group(team))
    );
    let standalone = KeyLayout::standalone();
    assert_eq!(standalone.channel(Audience::Group(team)), "sse:group:00000000-0000-0000-0000-000000000007");
    assert_eq!(
        standalone.stream(Audience::Group(team)),
        "sse:stream:group:00000000-0000-0000-0000-000000000007"
    );
    assert_eq!(
        standalone.audience_of_channel("sse:group:00000000-0000-0000-0000-000000000007"),
        Some(Audience::Group(team))
    );
    assert_eq!(standalone.audience_of_channel("sse:group:00000000-0000-0000-0000-00000000000G"), None);
}

/// Killing the subscriber connection twice while group events flow: every member gets every
/// group event once, in order, the missed ones from the group's stream.
#[test]
fn killing_the_subscriber_connection_loses_and_duplicates_no_group_event() {
    const EVENTS: usize = 300;
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let layout = KeyLayout::standalone_with_prefix("groupkill").unwrap();
        let hub = hubs(&server.url(), &layout, 1).await.remove(0);
        let (red, blue) = (fresh_group(), fresh_group());
        let users: Vec<UserId> = (0..3).map(|_| fresh_user()).collect();
        // User 0 reads red, user 1 blue, user 2 both.
        let readers = [vec![red], vec![blue], vec![red, blue]];
        let mut subscriptions = Vec::new();
        for (user, groups) in users.iter().zip(&readers) {
            let reader = Reader::new(*user, Groups::new(groups.clone()).unwrap());
            subscriptions
                .push((reader.clone(), hub.subscribe(reader, CategorySet::all()).await.expect("subscribe")));
        }
        let published: Vec<_> =
            (0..EVENTS).map(|n| event(Audience::Group(if n % 3 == 0 { blue } else { red }), n)).collect();
        for (n, e) in published.iter().enumerate() {
            if n == EVENTS / 4 || n == EVENTS * 3 / 4 {
                let reply = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                assert_eq!(reply.as_int(), Some(1), "one pubsub connection killed: {reply}");
            }
            within("publish", hub.publish(e.clone())).await.expect("publish");
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        let end = event(Audience::Broadcast, EVENTS);
        within("publish", hub.publish(end.clone())).await.expect("publish");
        for (reader, subscription) in &mut subscriptions {
            let mut got = Vec::new();
            let mut ended = false;
            while got.len() < published.iter().filter(|e| reader.reads(e.audience())).count() || !ended {
                let e = next_event(subscription, "a member across two kills").await;
                if e.id() == end.id() {
                    ended = true;
                } else {
                    got.push(e);
                }
            }
            let distinct: HashSet<_> = got.iter().map(|e| e.id()).collect();
            assert_eq!(distinct.len(), got.len(), "no duplicates");
            // Each group's events in its order (the streams are not ordered against each other).
            for group in &reader.groups {
                let of = |events: &[ssehub::Event<C>]| -> Vec<EventId> {
                    events.iter().filter(|e| e.audience() == Audience::Group(group)).map(|e| e.id()).collect()
                };
                let (got, expected) = (of(&got), of(&published));
                assert!(
                    got == expected,
                    "group {group}: {} events, {} expected, in publish order",
                    got.len(),
                    expected.len()
                );
            }
        }
        let stats = hub.stats();
        assert!(stats.reconnects >= 2, "the hub saw both reconnects: {stats:?}");
        assert_eq!(stats.gaps, 0, "nothing was lost: {stats:?}");
    });
}

/// A group's stream keeps as many events as retention says, and a publish retried (the same
/// event again) stores nothing twice, as for a user's stream.
#[test]
fn a_groups_stream_is_trimmed_to_its_retention_and_a_retried_publish_stores_nothing_twice() {
    const KEPT: u64 = 20;
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let layout = KeyLayout::standalone_with_prefix("groupkeep").unwrap();
        let retention = ssehub::Retention::new(KEPT, Duration::from_secs(3600)).exact_trimming(true);
        let hub: RedisHub<C> = within(
            "connect",
            RedisHub::builder(&server.url())
                .unwrap()
                .key_layout(layout.clone())
                .retention(Some(retention))
                .connect(),
        )
        .await
        .expect("connect");
        let team = fresh_group();
        let published: Vec<_> = (0..50).map(|n| event(Audience::Group(team), n)).collect();
        for e in &published {
            within("publish", hub.publish(e.clone())).await.expect("publish");
        }
        // The last one again, as a retry after a lost reply sends it.
        within("publish", hub.publish(published[49].clone())).await.expect("publish");
        let key = layout.stream(Audience::Group(team));
        assert_eq!(server.command(&["XLEN", &key]).as_int(), Some(KEPT as i64), "entries kept");
        // What is kept is the newest, each once: a replay from the horizon of the start reads them all.
        let reader = Reader::new(fresh_user(), Groups::new([team]).unwrap());
        let from = ssehub::Positions { horizon: Some(ssehub::Position::START), ..ssehub::Positions::NONE };
        let replay =
            within("missed_since", hub.missed_since(reader, from, CategorySet::all())).await.unwrap();
        let replayed: Vec<EventId> = replay.events.iter().map(|e| e.id()).collect();
        let newest: Vec<EventId> = published[50 - KEPT as usize..].iter().map(|e| e.id()).collect();
        assert_eq!(replayed, newest, "the newest {KEPT}, each once");
        hub.close();
    });
}
