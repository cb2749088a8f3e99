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
            .max_subscriptions_per_user(options.subscription_limits.max_per_user())
            .max_subscriptions(options.subscription_limits.max_per_process())
            .retention(
                options.retention.then(|| Retention::default().with_max_events(options.history_len as u64)),
            )
            .build()
    }

    async fn close(&self, hub: &Self::Hub) {
        hub.close();
    }

    async fn active_subscriptions(&self, hub: &Self::Hub) -> usize {
        hub.stats().open_subscriptions
    }
}

ssehub::conformance_tests!(MemoryFactory, |check| block_on(check));

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
