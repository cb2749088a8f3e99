//! The backend conformance suite (`ssehub::conformance`) run against the memory backend, one test per check.

use futures::executor::block_on;
use ssehub::Retention;
use ssehub::conformance::{self, HubFactory, HubOptions};
use ssehub::fixture::ExampleCategory;
use ssehub::memory::MemoryHub;

struct MemoryFactory;

impl HubFactory for MemoryFactory {
    type Hub = MemoryHub<ExampleCategory>;

    async fn create(&self, options: HubOptions) -> Self::Hub {
        MemoryHub::builder()
            .queue_capacity(options.queue_capacity)
            .retention(
                options.retention.then(|| Retention::default().with_max_events(options.history_len as u64)),
            )
            .build()
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions
    }
}

#[test]
fn subscription_is_live_when_subscribe_returns() {
    block_on(conformance::subscription_is_live_when_subscribe_returns(&MemoryFactory));
}

#[test]
fn subscriber_receives_own_events_only() {
    block_on(conformance::subscriber_receives_own_events_only(&MemoryFactory));
}

#[test]
fn broadcasts_reach_every_subscriber() {
    block_on(conformance::broadcasts_reach_every_subscriber(&MemoryFactory));
}

#[test]
fn category_filter_applies_to_live_and_replayed_events() {
    block_on(conformance::category_filter_applies_to_live_and_replayed_events(&MemoryFactory));
}

#[test]
fn replay_after_retained_id_is_complete() {
    block_on(conformance::replay_after_retained_id_is_complete(&MemoryFactory));
}

#[test]
fn replay_merges_broadcasts_in_publish_order() {
    block_on(conformance::replay_merges_broadcasts_in_publish_order(&MemoryFactory));
}

#[test]
fn replay_after_trimmed_id_reports_truncated() {
    block_on(conformance::replay_after_trimmed_id_reports_truncated(&MemoryFactory));
}

#[test]
fn replay_after_unknown_id_reports_unknown_id() {
    block_on(conformance::replay_after_unknown_id_reports_unknown_id(&MemoryFactory));
}

#[test]
fn replay_without_retention_reports_retention_disabled() {
    block_on(conformance::replay_without_retention_reports_retention_disabled(&MemoryFactory));
}

#[test]
fn resume_without_last_event_id_is_live_only() {
    block_on(conformance::resume_without_last_event_id_is_live_only(&MemoryFactory));
}

#[test]
fn resume_after_truncated_history_signals_gap_first() {
    block_on(conformance::resume_after_truncated_history_signals_gap_first(&MemoryFactory));
}

#[test]
fn resume_delivers_every_event_exactly_once_under_concurrent_publishing() {
    block_on(conformance::resume_delivers_every_event_exactly_once_under_concurrent_publishing(
        &MemoryFactory,
    ));
}

#[test]
fn lagged_subscriber_is_isolated_and_others_receive_everything() {
    block_on(conformance::lagged_subscriber_is_isolated_and_others_receive_everything(&MemoryFactory));
}

#[test]
fn dropping_a_subscription_unregisters_it() {
    block_on(conformance::dropping_a_subscription_unregisters_it(&MemoryFactory));
}

#[test]
fn run_all_passes() {
    block_on(conformance::run_all(&MemoryFactory));
}

#[test]
fn run_all_passes_as_a_task_on_a_multi_thread_tokio_runtime() {
    // Spawning needs the suite's futures to be `Send`.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        tokio::spawn(async { conformance::run_all(&MemoryFactory).await }).await.unwrap()
    });
}

#[test]
fn run_all_passes_on_smol() {
    smol::block_on(smol::spawn(async { conformance::run_all(&MemoryFactory).await }));
}
