//! Waiting in tests: for a future or a condition, with a bound that fails the test (naming what it waited for) instead of hanging it.
//!
//! Every wait is on an event or a condition; the bound is only there to turn
//! a hang into a failure, so it is generous ([`WAIT`]) and holds on a machine
//! with a CPU hog beside the tests. The timers are `async-io`'s, so the async
//! waits work on any executor (smol, async-std, tokio, `futures::executor`).

use std::future::Future;
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for any one thing before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// `future`'s output, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(WAIT, what, future).await
}

/// `future`'s output, or a panic naming `what` after `limit`.
///
/// The timer is polled first, so its own wake-up cannot rescue a future that
/// missed one.
pub async fn within_for<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    let timeout = async {
        async_io::Timer::after(limit).await;
        None
    };
    futures_lite::future::or(timeout, async { Some(future.await) })
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Returns once `condition` holds (polled every 10 ms); panics naming `what` after [`WAIT`].
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_for(WAIT, what, condition).await
}

/// Returns once `condition` holds (polled every 10 ms); panics naming `what` after `limit`.
pub async fn eventually_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    within_for(limit, what, async {
        while !condition() {
            async_io::Timer::after(POLL).await;
        }
    })
    .await
}

/// Blocks until `condition` holds (polled every 10 ms); panics naming `what` after `limit`.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        thread::sleep(POLL);
    }
}
