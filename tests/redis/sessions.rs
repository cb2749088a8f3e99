//! Disconnecting a user across hubs ("processes") sharing one Redis, on a server and on a cluster: every stream of the user ends, nobody else's.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::time::{Duration, Instant};

use fred_support::{C, event, fresh_user, next_event, next_item, within};
use redis_server::{RedisCluster, RedisServer};
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, CategorySet, Error, EventSource, Publisher};

/// The spec's bound for a disconnect to reach every process; the assertion allows a loaded machine
/// five times that, and the measured time is printed.
const WITHIN: Duration = Duration::from_secs(1);

async fn hubs(url: &str, layout: KeyLayout) -> Vec<RedisHub<C>> {
    let mut hubs = Vec::new();
    for _ in 0..3 {
        let hub = RedisHub::builder(url).unwrap().key_layout(layout.clone()).connect();
        hubs.push(within("connect", hub).await.expect("connect"));
    }
    hubs
}

/// Alice and Bob on each of three hubs; hub 0 disconnects Alice.
async fn disconnect_reaches_every_hub(url: String, layout: KeyLayout) {
    let hubs = hubs(&url, layout).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for hub in &hubs {
        alices.push(within("subscribe", hub.subscribe(alice, CategorySet::all())).await.expect("subscribe"));
        bobs.push(within("subscribe", hub.subscribe(bob, CategorySet::all())).await.expect("subscribe"));
    }
    let started = Instant::now();
    within("disconnect", hubs[0].disconnect(alice)).await.expect("disconnect");
    for (n, subscription) in alices.iter_mut().enumerate() {
        match next_item(subscription, "alice's stream to end").await {
            Some(Err(Error::Revoked)) => {}
            other => panic!("alice's stream on hub {n}: expected Err(Revoked), got {other:?}"),
        }
        assert!(next_item(subscription, "the end").await.is_none(), "alice's stream on hub {n} ends");
    }
    let all_ended = started.elapsed();
    println!("a disconnect ended the user's streams on 3 hubs in {all_ended:?}");
    assert!(all_ended < 5 * WITHIN, "the disconnect took {all_ended:?}");
    // Bob's streams carry on, on every hub.
    let to_bob = event(Audience::User(bob), 0);
    within("publish", hubs[2].publish(to_bob.clone())).await.expect("publish");
    for subscription in &mut bobs {
        assert_eq!(next_event(subscription, "bob's event").await.id(), to_bob.id());
    }
    for hub in &hubs {
        assert_eq!(hub.stats().open_subscriptions, 1, "only bob's left");
    }
}

#[test]
fn a_disconnect_ends_the_users_streams_on_every_hub_of_one_server_and_no_one_elses() {
    let server = RedisServer::start();
    futures::executor::block_on(disconnect_reaches_every_hub(
        server.url(),
        KeyLayout::standalone_with_prefix("sessions").unwrap(),
    ));
}

#[test]
fn a_disconnect_ends_the_users_streams_on_every_hub_of_a_cluster_and_no_one_elses() {
    let cluster = RedisCluster::start(3, 0);
    futures::executor::block_on(disconnect_reaches_every_hub(
        cluster.url(),
        KeyLayout::cluster_with_prefix("sessions").unwrap(),
    ));
}
