//! Counting deliveries: one task per subscriber stream, and the instant the last expected delivery arrived.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::workload::{Counter, within};

/// Shared by the counting tasks: how many are still counting, whether one
/// stopped short, and when the last one got all of its deliveries.
struct Completion {
    remaining: AtomicUsize,
    short: AtomicBool,
    finished_at: OnceLock<Instant>,
    done: async_channel::Sender<()>,
}

impl Completion {
    /// A stream has had all its expected deliveries.
    fn arrived(&self) {
        self.settled();
    }

    /// A stream ended (or failed) before its expected deliveries: no need to
    /// wait for the others to learn the run failed.
    fn stopped_short(&self) {
        self.short.store(true, Ordering::Release);
        self.settled();
    }

    fn settled(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.finished_at.set(Instant::now());
            let _ = self.done.try_send(());
        }
    }
}

/// The counting tasks of one run.
pub struct Tally {
    counters: Arc<[Counter]>,
    completion: Arc<Completion>,
    done: async_channel::Receiver<()>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
    expected: u64,
}

impl Tally {
    /// Room for `subscribers` streams.
    pub fn new(subscribers: usize) -> Self {
        let (done_tx, done) = async_channel::bounded(1);
        let counters: Arc<[Counter]> = (0..subscribers).map(|_| Counter::default()).collect();
        Self {
            counters,
            completion: Arc::new(Completion {
                remaining: AtomicUsize::new(subscribers),
                short: AtomicBool::new(false),
                finished_at: OnceLock::new(),
                done: done_tx,
            }),
            done,
            failures: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::with_capacity(subscribers),
            expected: 0,
        }
    }

    /// Deliveries expected across every stream.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Counts the items of `stream` on `runtime`, subscriber number `index`,
    /// which should see `expected` of them; `on_item` sees each first. An
    /// error item is recorded as a failure and ends the count.
    pub fn spawn<S, T, E>(
        &mut self,
        runtime: &Handle,
        index: usize,
        stream: S,
        expected: u64,
        mut on_item: impl FnMut(&T) + Send + 'static,
    ) where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Display + Send + 'static,
    {
        self.expected += expected;
        let counters = Arc::clone(&self.counters);
        let completion = Arc::clone(&self.completion);
        let failures = Arc::clone(&self.failures);
        if expected == 0 {
            completion.arrived();
        }
        self.tasks.push(runtime.spawn(async move {
            let counter = &counters[index].0;
            let mut stream = std::pin::pin!(stream);
            let mut count = 0;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(item) => {
                        on_item(&item);
                        count += 1;
                        counter.store(count, Ordering::Relaxed);
                        if count == expected {
                            completion.arrived();
                        }
                    }
                    Err(error) => {
                        let mut failures = failures.lock().unwrap();
                        if failures.len() < 5 {
                            failures.push(format!("subscriber {index}: {error}"));
                        }
                        break;
                    }
                }
            }
            if count < expected {
                completion.stopped_short();
            }
        }));
    }

    /// Waits until every stream has had its expected deliveries, at most
    /// `limit`; the instant the last one arrived, or `None` on timeout or when
    /// a stream ended short.
    pub async fn wait(&self, limit: Duration) -> Option<Instant> {
        within(limit, self.done.recv()).await?.ok()?;
        if self.completion.short.load(Ordering::Acquire) {
            return None;
        }
        self.completion.finished_at.get().copied()
    }

    /// Waits `settle` for stray extra deliveries, stops the tasks, and
    /// returns the deliveries counted and the failures seen.
    pub async fn finish(self, settle: Duration) -> (u64, Vec<String>) {
        crate::workload::sleep(settle).await;
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let deliveries = self.counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (deliveries, failures)
    }
}

/// A timeout for `expected` deliveries: generous, it only catches losses.
pub fn patience(expected: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_micros(expected.saturating_mul(100))
}
