//! The Redis backend on a private Redis Cluster: conformance, per-shard traffic, failover.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::executor::block_on;
use redis_server::RedisCluster;
use ssehub::conformance::{self, HubFactory, HubOptions};
use ssehub::fixture::ExampleCategory;
use ssehub::fred::{KeyLayout, RedisHub, Retention};

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 1))
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
        RedisHub::builder(&cluster().url())
            .expect("a valid URL")
            .key_layout(KeyLayout::cluster_with_prefix(&prefix).expect("a valid prefix"))
            .retention(retention)
            .subscriber_queue_capacity(options.queue_capacity)
            .connect()
            .await
            .expect("connecting to the private cluster")
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions as usize
    }
}

#[test]
fn conformance_suite_passes_on_a_cluster() {
    block_on(conformance::run_all(&ClusterFactory));
}
