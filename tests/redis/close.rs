//! Closing a Redis hub: every task it started ends, so nothing (its clients and their buffers included) outlives it.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::time::{Duration, Instant};

use fred_support::{event, fresh_user};
use redis_server::{RedisCluster, RedisServer};
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, CategorySet, EventSource, Publisher, UserId};

/// How long a closed hub's tasks may take to end: its clients' `QUIT`s are given 1 s each (per master,
/// all masters at once), and the command timeout is not waited for. The hub's command timeout is set
/// to twice this, so a close that waits it out fails with a margin a busy machine cannot eat.
const ENDS_WITHIN: Duration = Duration::from_secs(15);

/// The command timeout of the hubs closed here: well above [`ENDS_WITHIN`].
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a hub on its own runtime with subscriptions on many channels, then drops the subscriptions
/// and the hub at once, so that their unsubscribes are still in flight when the hub's clients quit;
/// then waits for the runtime to hold no task.
fn close_with_unsubscribes_in_flight(url: &str, layout: KeyLayout) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let hub: RedisHub<fred_support::C> = RedisHub::builder(url)
            .unwrap()
            .key_layout(layout.clone())
            .cluster_publish_batching(false)
            .command_timeout(COMMAND_TIMEOUT)
            .connect()
            .await
            .expect("connect");
        let users: Vec<UserId> = (0..100).map(|_| fresh_user()).collect();
        let mut subscriptions = Vec::new();
        for &user in &users {
            for _ in 0..3 {
                subscriptions.push(hub.subscribe(user, CategorySet::all()).await.expect("subscribe"));
            }
        }
        for (n, &user) in users.iter().enumerate() {
            hub.publish(event(Audience::User(user), n)).await.expect("publish");
        }
        drop(subscriptions);
        drop(hub);
        let metrics = tokio::runtime::Handle::current().metrics();
        let started = Instant::now();
        while metrics.num_alive_tasks() > 0 {
            assert!(
                started.elapsed() < ENDS_WITHIN,
                "{layout:?}: {} tasks still alive {ENDS_WITHIN:?} after the hub was dropped",
                metrics.num_alive_tasks()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn a_dropped_hub_leaves_no_task_behind_on_one_server() {
    let server = RedisServer::start();
    for _ in 0..3 {
        close_with_unsubscribes_in_flight(&server.url(), KeyLayout::standalone_with_prefix("close").unwrap());
    }
}

#[test]
fn a_dropped_hub_leaves_no_task_behind_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    for _ in 0..3 {
        close_with_unsubscribes_in_flight(&cluster.url(), KeyLayout::cluster_with_prefix("close").unwrap());
    }
}
