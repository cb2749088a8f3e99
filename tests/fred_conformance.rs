//! The backend conformance suite (`ssehub::conformance`) run against the Redis backend on a private server.
//!
//! Every hub gets its own key prefix, so the checks can share one server and
//! run side by side. They are driven by `futures::executor`, so the hubs run
//! fred on runtimes of their own.

#[path = "support/redis_server.rs"]
mod redis_server;

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

struct RedisFactory;

impl HubFactory for RedisFactory {
    type Hub = RedisHub<ExampleCategory>;

    async fn create(&self, options: HubOptions) -> Self::Hub {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let prefix = format!("conformance{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let retention = options.retention.then(|| {
            Retention::new(options.history_len as u64, Duration::from_secs(3600)).exact_trimming(true)
        });
        RedisHub::builder(&server().url())
            .expect("a valid URL")
            .key_layout(KeyLayout::standalone_with_prefix(&prefix).expect("a valid prefix"))
            .retention(retention)
            .queue_capacity(options.queue_capacity)
            .connect()
            .await
            .expect("connecting to the private redis-server")
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions as usize
    }
}

#[test]
fn subscription_is_live_when_subscribe_returns() {
    block_on(conformance::subscription_is_live_when_subscribe_returns(&RedisFactory));
}

#[test]
fn subscriber_receives_own_events_only() {
    block_on(conformance::subscriber_receives_own_events_only(&RedisFactory));
}

#[test]
fn broadcasts_reach_every_subscriber() {
    block_on(conformance::broadcasts_reach_every_subscriber(&RedisFactory));
}

#[test]
fn category_filter_applies_to_live_and_replayed_events() {
    block_on(conformance::category_filter_applies_to_live_and_replayed_events(&RedisFactory));
}

#[test]
fn replay_after_retained_id_is_complete() {
    block_on(conformance::replay_after_retained_id_is_complete(&RedisFactory));
}

#[test]
fn replay_merges_broadcasts_in_publish_order() {
    block_on(conformance::replay_merges_broadcasts_in_publish_order(&RedisFactory));
}

#[test]
fn replay_after_trimmed_id_reports_truncated() {
    block_on(conformance::replay_after_trimmed_id_reports_truncated(&RedisFactory));
}

#[test]
fn replay_after_unknown_id_reports_unknown_id() {
    block_on(conformance::replay_after_unknown_id_reports_unknown_id(&RedisFactory));
}

#[test]
fn replay_without_retention_reports_retention_disabled() {
    block_on(conformance::replay_without_retention_reports_retention_disabled(&RedisFactory));
}

#[test]
fn resume_without_last_event_id_is_live_only() {
    block_on(conformance::resume_without_last_event_id_is_live_only(&RedisFactory));
}

#[test]
fn resume_after_truncated_history_signals_gap_first() {
    block_on(conformance::resume_after_truncated_history_signals_gap_first(&RedisFactory));
}

#[test]
fn resume_delivers_every_event_exactly_once_under_concurrent_publishing() {
    block_on(conformance::resume_delivers_every_event_exactly_once_under_concurrent_publishing(
        &RedisFactory,
    ));
}

#[test]
fn lagged_subscriber_is_isolated_and_others_receive_everything() {
    block_on(conformance::lagged_subscriber_is_isolated_and_others_receive_everything(&RedisFactory));
}

#[test]
fn dropping_a_subscription_unregisters_it() {
    block_on(conformance::dropping_a_subscription_unregisters_it(&RedisFactory));
}

#[test]
fn run_all_passes() {
    block_on(conformance::run_all(&RedisFactory));
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
