//! Key layouts of the Redis backend: custom prefixes, and the cluster layout's sharded pub/sub on one server.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use fred_support::{C, event, eventually, fresh_user, ids, next_event, next_item, within};
use redis_server::RedisServer;
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, CategorySet, EventSource, Publisher, ReplayStatus};

#[test]
fn the_cluster_layout_uses_hash_tagged_keys_and_sharded_pub_sub() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> = within(
            "connect",
            RedisHub::builder(&server.url())
                .unwrap()
                .key_layout(KeyLayout::cluster_with_prefix("app").unwrap())
                .connect(),
        )
        .await
        .expect("connect");
        let user = fresh_user();
        let mut subscription = hub.subscribe(user, CategorySet::all()).await.expect("subscribe");
        let shard_channel = format!("app:{{{user}}}:live");
        let numsub = server.command(&["PUBSUB", "SHARDNUMSUB", &shard_channel]);
        assert_eq!(numsub.as_array().and_then(|a| a.get(1)).and_then(|v| v.as_int()), Some(1), "{numsub}");

        let published = vec![
            event(Audience::User(user), 0),
            event(Audience::Broadcast, 1),
            event(Audience::User(user), 2),
        ];
        for e in &published {
            hub.publish(e.clone()).await.expect("publish");
        }
        for e in &published {
            assert_eq!(&next_event(&mut subscription, "an event").await, e);
        }
        assert_eq!(server.command(&["XLEN", &format!("app:{{{user}}}:stream")]).as_int(), Some(2));
        assert_eq!(server.command(&["XLEN", "app:{broadcast}:stream"]).as_int(), Some(1));
        let replay =
            hub.missed_events(user, published[0].id(), CategorySet::all()).await.expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(ids(&replay.events), ids(&published[1..]));

        // Outage recovery works on sharded channels too.
        server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        let during = event(Audience::User(user), 3);
        within("publish", hub.publish(during.clone())).await.expect("publish");
        let got = next_item(&mut subscription, "the event published during the outage").await;
        assert!(matches!(&got, Some(Ok(e)) if *e == during), "got {got:?}");

        drop(subscription);
        eventually("the shard channel released", || {
            let numsub = server.command(&["PUBSUB", "SHARDNUMSUB", &shard_channel]);
            numsub.as_array().and_then(|a| a.get(1)).and_then(|v| v.as_int()) == Some(0)
        })
        .await;
    });
}

#[test]
fn hubs_with_different_prefixes_on_one_server_do_not_see_each_other() {
    let server = RedisServer::start();
    let url = server.url();
    futures::executor::block_on(async {
        let connect = |prefix: &'static str| {
            let url = url.clone();
            async move {
                within(
                    "connect",
                    RedisHub::<C>::builder(&url)
                        .unwrap()
                        .key_layout(KeyLayout::standalone_with_prefix(prefix).unwrap())
                        .connect(),
                )
                .await
                .expect("connect")
            }
        };
        let (a, b) = (connect("tenant-a").await, connect("tenant-b").await);
        let user = fresh_user();
        let mut on_a = a.subscribe(user, CategorySet::all()).await.expect("subscribe");
        let mut on_b = b.subscribe(user, CategorySet::all()).await.expect("subscribe");
        let for_b = event(Audience::Broadcast, 0);
        b.publish(for_b.clone()).await.expect("publish");
        let for_a = event(Audience::User(user), 1);
        a.publish(for_a.clone()).await.expect("publish");
        assert_eq!(next_event(&mut on_a, "a's event").await, for_a, "a never sees b's broadcast");
        assert_eq!(next_event(&mut on_b, "b's broadcast").await, for_b);
        let replay = a.missed_events(user, for_a.id(), CategorySet::all()).await.expect("missed_events");
        assert!(replay.events.is_empty());
        assert_eq!(server.command(&["EXISTS", "tenant-a:stream:broadcast"]).as_int(), Some(0));
        assert_eq!(server.command(&["EXISTS", "tenant-b:stream:broadcast"]).as_int(), Some(1));
    });
}
