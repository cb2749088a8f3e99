//! The backend conformance suite (`ssehub::conformance`) run against the Redis backend on a private server.
//!
//! Every hub gets its own key prefix, so the checks can share one server and
//! run side by side. They are driven by `futures::executor`, so the hubs run
//! fred on runtimes of their own.

use ssehub_harness::redis_server;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::executor::block_on;
use redis_server::RedisServer;
use ssehub::conformance::{self, HubFactory, HubOptions};
use ssehub::fixture::ExampleCategory;
use ssehub::fred::{KeyLayout, RedisHub, Retention};

fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// Hubs on the private server, trimming their streams exactly (the suite's history bounds hold
/// to the entry).
struct RedisFactory;

/// A server whose streams hold one entry per node: Redis's approximate trimming (`MAXLEN ~`),
/// which drops whole nodes, then trims to the entry, as the suite's history checks count.
fn one_entry_per_node() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start_with_args(&["--stream-node-max-entries", "1"]))
}

/// Hubs with the default retention trimming, `MAXLEN ~`, on [`one_entry_per_node`]: every rule
/// of the suite holds on the scripts users run by default, not only on the exact-trimming ones.
/// (With Redis's default node size a stream may hold up to a node more than the bound.)
struct ApproximateTrimming;

/// A hub on the private server with its own key prefix.
async fn hub(options: HubOptions, exact_trimming: bool) -> RedisHub<ExampleCategory> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("conformance{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let retention = options.retention.then(|| {
        Retention::new(options.history_len as u64, Duration::from_secs(3600)).exact_trimming(exact_trimming)
    });
    let server = if exact_trimming { server() } else { one_entry_per_node() };
    RedisHub::builder(&server.url())
        .expect("a valid URL")
        .key_layout(KeyLayout::standalone_with_prefix(&prefix).expect("a valid prefix"))
        .retention(retention)
        .queue_capacity(options.queue_capacity)
        .max_subscriptions_per_user(options.subscription_limits.max_per_user())
        .max_subscriptions(options.subscription_limits.max_per_process())
        .connect()
        .await
        .expect("connecting to the private redis-server")
}

impl HubFactory for ApproximateTrimming {
    type Hub = RedisHub<ExampleCategory>;

    async fn create(&self, options: HubOptions) -> Self::Hub {
        hub(options, false).await
    }

    async fn close(&self, hub: &Self::Hub) {
        hub.close();
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions
    }
}

impl HubFactory for RedisFactory {
    type Hub = RedisHub<ExampleCategory>;

    async fn create(&self, options: HubOptions) -> Self::Hub {
        hub(options, true).await
    }

    async fn close(&self, hub: &Self::Hub) {
        hub.close();
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions
    }
}

ssehub::conformance_tests!(RedisFactory, |check| block_on(check));

#[test]
fn run_all_passes() {
    block_on(conformance::run_all(&RedisFactory));
}

#[test]
fn run_all_passes_with_the_default_approximate_trimming() {
    block_on(conformance::run_all(&ApproximateTrimming));
}

#[test]
fn run_all_passes_as_a_task_on_a_multi_thread_tokio_runtime() {
    // The hubs run on the caller's runtime here; spawning needs the suite's futures to be `Send`.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime
        .block_on(async { tokio::spawn(async { conformance::run_all(&RedisFactory).await }).await.unwrap() });
}

#[test]
fn run_all_passes_on_smol() {
    smol::block_on(smol::spawn(async { conformance::run_all(&RedisFactory).await }));
}
