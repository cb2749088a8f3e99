//! Connection use of the Redis backend: one subscriber connection however many subscriptions, channels released.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use fred_support::{builder, event, eventually, fresh_user, next_event, within};
use redis_server::RedisServer;
use ssehub::fred::RedisHub;
use ssehub::{Audience, CategorySet, EventSource, Publisher};

const USERS: usize = 100;
const PER_USER: usize = 10;

#[test]
fn thousand_subscriptions_of_a_hundred_users_use_at_most_three_connections_and_release_every_channel() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<fred_support::C> =
            within("connect", builder(&server.url(), "conn").connect()).await.expect("connect");
        let users: Vec<_> = (0..USERS).map(|_| fresh_user()).collect();
        let mut subscriptions = Vec::new();
        for user in &users {
            for _ in 0..PER_USER {
                let s =
                    within("subscribe", hub.subscribe(*user, CategorySet::all())).await.expect("subscribe");
                subscriptions.push((*user, s));
            }
        }

        let clients = server.clients_excluding_self();
        println!(
            "connections with {} subscriptions of {USERS} users: {}",
            subscriptions.len(),
            clients.len()
        );
        for client in &clients {
            println!("  {client}");
        }
        assert!(clients.len() <= 3, "{} connections for 1000 subscriptions: {clients:#?}", clients.len());
        let subscriber_connections: Vec<_> = clients.iter().filter(|c| !c.contains(" sub=0 ")).collect();
        assert_eq!(subscriber_connections.len(), 1, "exactly one connection holds subscriptions");
        assert!(
            subscriber_connections[0].contains(&format!(" sub={} ", USERS + 2)),
            "the subscriber connection holds each user's channel once, plus the broadcast and the control channel: {}",
            subscriber_connections[0]
        );
        for user in &users {
            let channel = hub.key_layout().channel(Audience::User(*user));
            assert_eq!(server.pubsub_numsub(&channel), 1, "{channel} subscribed once");
        }
        let stats = hub.stats();
        assert_eq!(stats.open_subscriptions, USERS * PER_USER);
        assert_eq!(stats.redis_channels, (USERS + 1) as u64);

        // One broadcast reaches all thousand subscriptions through that one connection.
        let broadcast = event(Audience::Broadcast, 0);
        within("publish", hub.publish(broadcast.clone())).await.expect("publish");
        for (_, subscription) in &mut subscriptions {
            assert_eq!(next_event(subscription, "the broadcast").await.id(), broadcast.id());
        }

        drop(subscriptions);
        eventually("every subscription released", || {
            let s = hub.stats();
            s.open_subscriptions == 0 && s.redis_channels == 1
        })
        .await;
        eventually("every user channel unsubscribed", || {
            users.iter().all(|u| server.pubsub_numsub(&hub.key_layout().channel(Audience::User(*u))) == 0)
        })
        .await;
        for user in &users {
            assert_eq!(server.pubsub_numsub(&hub.key_layout().channel(Audience::User(*user))), 0);
        }
        assert_eq!(
            server.pubsub_numsub(&hub.key_layout().channel(Audience::Broadcast)),
            1,
            "broadcast stays"
        );
        assert!(server.connected_clients_excluding_self() <= 3);
    });
}

#[test]
fn resubscribing_a_released_user_channel_works() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<fred_support::C> =
            within("connect", builder(&server.url(), "again").connect()).await.expect("connect");
        let user = fresh_user();
        let channel = hub.key_layout().channel(Audience::User(user));
        for round in 0..5 {
            let mut subscription =
                within("subscribe", hub.subscribe(user, CategorySet::all())).await.expect("subscribe");
            assert_eq!(server.pubsub_numsub(&channel), 1);
            let e = event(Audience::User(user), round);
            within("publish", hub.publish(e.clone())).await.expect("publish");
            assert_eq!(next_event(&mut subscription, "the event").await.id(), e.id());
            drop(subscription);
            eventually("the channel released", || server.pubsub_numsub(&channel) == 0).await;
        }
    });
}
