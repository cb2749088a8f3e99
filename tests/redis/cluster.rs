//! The Redis backend on private Redis Clusters: the conformance suite, and 1,000 users spread over three masters.
//!
//! Two clusters of three masters: one shared by the conformance checks (each
//! hub has its own key prefix), one for the spread test alone, whose per-node
//! command counts must not see anyone else's traffic. The tests take turns:
//! the conformance checks time subscribers against a publisher, and a test
//! loading the machine beside them would make a fast subscriber look slow.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fred_support::{C, event, fresh_user, next_event, within};
use futures::executor::block_on;
use redis_server::{RedisCluster, RedisServer};
use ssehub::conformance::{self, HubFactory, HubOptions};
use ssehub::fixture::ExampleCategory;
use ssehub::fred::{KeyLayout, RedisHub, Retention};
use ssehub::{Audience, CategorySet, EventSource, Publisher, UserId};

fn conformance_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0))
}

/// One test at a time.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct ClusterFactory;

impl HubFactory for ClusterFactory {
    type Hub = RedisHub<ExampleCategory>;

    async fn create(&self, options: HubOptions) -> Self::Hub {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let prefix = format!("conformance{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let retention = options.retention.then(|| {
            Retention::new(options.history_len as u64, Duration::from_secs(3600)).exact_trimming(true)
        });
        RedisHub::builder(&conformance_cluster().url())
            .expect("a valid URL")
            .key_layout(KeyLayout::cluster_with_prefix(&prefix).expect("a valid prefix"))
            .retention(retention)
            .queue_capacity(options.queue_capacity)
            .max_subscriptions_per_user(options.subscription_limits.max_per_user())
            .max_subscriptions(options.subscription_limits.max_per_process())
            .connect()
            .await
            .expect("connecting to the private cluster")
    }

    async fn close(&self, hub: &Self::Hub) {
        hub.close();
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions
    }
}

/// One test per check, so a failure names its rule; they take turns with the other tests.
mod checks {
    use super::{ClusterFactory, block_on, turn};

    ssehub::conformance_tests!(ClusterFactory, |check| {
        let _turn = turn();
        block_on(check)
    });
}

#[test]
fn conformance_suite_passes_on_a_cluster() {
    let _turn = turn();
    block_on(conformance::run_all(&ClusterFactory));
}

#[test]
fn conformance_suite_passes_on_a_cluster_as_a_task_on_a_multi_thread_tokio_runtime() {
    let _turn = turn();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::spawn(async { conformance::run_all(&ClusterFactory).await }).await.unwrap()
    });
}

/// `calls` of one command in `INFO commandstats`, 0 if it never ran.
fn calls(node: &RedisServer, command: &str) -> u64 {
    node.info_field("commandstats", &format!("cmdstat_{command}"))
        .and_then(|stats| {
            stats.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The clients of `node` other than replicas and the connection asking, with their `ssub` counts.
fn hub_clients(node: &RedisServer) -> Vec<u64> {
    node.clients_excluding_self()
        .iter()
        .filter(|line| !line.split(' ').any(|f| f.starts_with("flags=") && f.contains('S')))
        .map(|line| {
            line.split(' ').find_map(|f| f.strip_prefix("ssub=")).and_then(|n| n.parse().ok()).unwrap_or(0)
        })
        .collect()
}

/// `PUBSUB SHARDCHANNELS pattern` on one node.
fn shard_channels(node: &RedisServer, pattern: &str) -> BTreeSet<String> {
    let reply = node.command(&["PUBSUB", "SHARDCHANNELS", pattern]);
    reply.as_array().unwrap_or_default().iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

#[test]
fn a_thousand_users_spread_over_three_masters_each_master_carries_only_its_own_users() {
    const USERS: usize = 1000;
    const BROADCASTS: usize = 3;
    let _turn = turn();
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    let masters = cluster.master_ports();
    let layout = KeyLayout::cluster_with_prefix("spread").unwrap();
    block_on(async {
        let hub: RedisHub<C> = within(
            "connect",
            RedisHub::builder(&cluster.url()).unwrap().key_layout(layout.clone()).connect(),
        )
        .await
        .expect("connect");
        let connections_idle: Vec<usize> =
            masters.iter().map(|p| hub_clients(cluster.node(*p)).len()).collect();
        for port in &masters {
            cluster.node(*port).command(&["CONFIG", "RESETSTAT"]).expect_ok();
        }

        let users: Vec<UserId> = (0..USERS).map(|_| fresh_user()).collect();
        let subscribing = Instant::now();
        let subscriptions = within(
            "1,000 subscriptions",
            futures::future::join_all(users.iter().map(|u| hub.subscribe(*u, CategorySet::all()))),
        )
        .await;
        let mut subscriptions: Vec<_> = subscriptions.into_iter().map(|s| s.expect("subscribe")).collect();
        let subscribe_time = subscribing.elapsed();

        let owner: HashMap<UserId, u16> =
            users.iter().map(|u| (*u, cluster.master_for_key(&layout.channel(Audience::User(*u))))).collect();
        let broadcast_owner = cluster.master_for_key(&layout.channel(Audience::Broadcast));
        // Every hub also listens on the control channel (disconnect orders).
        let control_owner = cluster.master_for_key(&layout.control_channel());
        let users_on = |port: u16| owner.values().filter(|p| **p == port).count();
        for port in &masters {
            assert!(users_on(*port) >= 250, "master {port} holds {} of {USERS} users", users_on(*port));
        }

        // Connections depend on the masters, not the users: the same as with none, and one subscriber
        // connection per master holding exactly that master's channels.
        for (i, port) in masters.iter().enumerate() {
            let node = cluster.node(*port);
            let clients = hub_clients(node);
            assert_eq!(clients.len(), connections_idle[i], "connections of master {port}: {clients:?}");
            let subscribers: Vec<u64> = clients.iter().copied().filter(|n| *n > 0).collect();
            let expected =
                users_on(*port) + usize::from(*port == broadcast_owner) + usize::from(*port == control_owner);
            assert_eq!(subscribers, vec![expected as u64], "shard subscriptions on master {port}");
            let mut wanted: BTreeSet<String> = users
                .iter()
                .filter(|u| owner[u] == *port)
                .map(|u| layout.channel(Audience::User(*u)))
                .collect();
            if *port == broadcast_owner {
                wanted.insert(layout.channel(Audience::Broadcast));
            }
            if *port == control_owner {
                wanted.insert(layout.control_channel());
            }
            assert_eq!(shard_channels(node, "spread:*"), wanted, "the shard channels of master {port}");
        }

        let publishing = Instant::now();
        let events: Vec<_> = users.iter().enumerate().map(|(n, u)| event(Audience::User(*u), n)).collect();
        for chunk in events.chunks(100) {
            let sent = futures::future::join_all(chunk.iter().map(|e| hub.publish(e.clone())));
            for result in within("publishing", sent).await {
                result.expect("publish");
            }
        }
        let broadcasts: Vec<_> = (0..BROADCASTS).map(|n| event(Audience::Broadcast, USERS + n)).collect();
        for b in &broadcasts {
            hub.publish(b.clone()).await.expect("publish a broadcast");
        }
        let publish_time = publishing.elapsed();
        for (i, subscription) in subscriptions.iter_mut().enumerate() {
            // Each stream in order; the user's event and the broadcasts come from different masters,
            // in either order.
            let mut got = Vec::new();
            for _ in 0..=BROADCASTS {
                got.push(next_event(subscription, "the user's event and the broadcasts").await);
            }
            let (own, broadcast): (Vec<_>, Vec<_>) =
                got.into_iter().partition(|e| e.audience() != Audience::Broadcast);
            assert_eq!(own, [events[i].clone()]);
            assert_eq!(broadcast, broadcasts);
        }
        assert_eq!(hub.stats().skipped, 0);

        // Each master ran the SSUBSCRIBE and SPUBLISH of its own users only, and no cluster-wide PUBLISH.
        let mut report = Vec::new();
        for port in &masters {
            let node = cluster.node(*port);
            let own = users_on(*port) as u64;
            let broadcast = if *port == broadcast_owner { BROADCASTS as u64 } else { 0 };
            assert_eq!(calls(node, "ssubscribe"), own, "SSUBSCRIBE calls on master {port}");
            assert_eq!(calls(node, "spublish"), own + broadcast, "SPUBLISH calls on master {port}");
            assert_eq!(calls(node, "publish"), 0, "PUBLISH calls on master {port}");
            assert_eq!(calls(node, "subscribe"), 0, "SUBSCRIBE calls on master {port}");
            report.push(format!("{port}: {own} users, {} SPUBLISH", own + broadcast));
        }
        // Publishes that overlapped (100 at a time) shared script calls, per master.
        let scripts: u64 = masters.iter().map(|port| calls(cluster.node(*port), "evalsha")).sum();
        let published = (USERS + BROADCASTS) as u64;
        assert!(scripts <= published / 2, "{scripts} script calls for {published} events");
        report.push(format!("{scripts} script calls"));
        println!(
            "{USERS} users: {}; connections per master {connections_idle:?}; \
             subscribe {subscribe_time:?}, publish {publish_time:?}, total {:?}",
            report.join("; "),
            started.elapsed()
        );
    });
}

#[test]
fn the_standalone_layout_is_refused_on_a_cluster_and_replica_acks_without_the_cluster_layout() {
    let _turn = turn();
    block_on(async {
        let on_cluster = RedisHub::<C>::builder(&conformance_cluster().url())
            .unwrap()
            .key_layout(KeyLayout::standalone())
            .connect()
            .await;
        let error = on_cluster.expect_err("the standalone layout on a cluster").to_string();
        assert!(error.contains("KeyLayout::cluster()"), "{error}");

        let server = RedisServer::start();
        let acks_standalone = RedisHub::<C>::builder(&server.url())
            .unwrap()
            .replica_acks(1, Duration::from_millis(100))
            .connect()
            .await;
        let error = acks_standalone.expect_err("replica acks with the standalone layout").to_string();
        assert!(error.contains("replica acknowledgements need the cluster key layout"), "{error}");
    });
}
