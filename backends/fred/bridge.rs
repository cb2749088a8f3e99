//! The tokio bridge: fred runs on the caller's tokio runtime or on a small one the hub owns.
//!
//! fred is a tokio library: connecting, timeouts and reconnect delays need a
//! tokio context. Callers may run smol, async-std or a plain
//! `futures::executor`, so every fred call is spawned onto a tokio runtime and
//! the caller awaits the `JoinHandle`, which works from any executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::Error;

/// Where the hub's tokio tasks run.
pub(crate) struct RuntimeHost {
    handle: Handle,
    /// The runtime the hub made for itself, when the caller had none.
    owned: Option<Runtime>,
}

impl RuntimeHost {
    /// `explicit`, else the current tokio runtime, else a new one on `worker_threads` background threads.
    pub(crate) fn new(explicit: Option<Handle>, worker_threads: usize) -> Result<Self, Error> {
        if let Some(handle) = explicit.or_else(|| Handle::try_current().ok()) {
            return Ok(Self { handle, owned: None });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .thread_name("ssehub-redis")
            .enable_all()
            .build()
            .map_err(Error::backend)?;
        tracing::debug!(worker_threads, "started a tokio runtime for the Redis client");
        Ok(Self { handle: runtime.handle().clone(), owned: Some(runtime) })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether the runtime is the hub's own.
    pub(crate) fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    /// Runs `future` on the runtime; the result can be awaited from any executor.
    pub(crate) fn spawn<F>(&self, future: F) -> Spawned<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Spawned(self.handle.spawn(future))
    }
}

impl Drop for RuntimeHost {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code: let it wind down on its own threads.
        if let Some(runtime) = self.owned.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task on the hub's runtime, awaited from any executor; dropping it cancels the task.
pub(crate) struct Spawned<T>(JoinHandle<T>);

impl<T> Future for Spawned<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.map_err(|e| if e.is_cancelled() { Error::Closed } else { Error::backend(e) })
        })
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
