//! Wakers collected under a backend's locks and woken once they are released.

use std::cell::Cell;
use std::fmt;
use std::task::Waker;

/// Wakers collected while a backend's locks are held, woken once they are released.
///
/// Waking runs executor code, and some executors drop a task there (tokio
/// does when it is shutting down), which drops its subscription, which calls
/// the backend's [`Registry`](super::Registry): waking under the backend's lock could deadlock.
/// Dropping a `Wakeups` wakes what it holds. Its buffer is reused across
/// publishes on a thread, so collecting wakers allocates nothing.
pub struct Wakeups {
    wakers: Vec<Waker>,
}

thread_local! {
    /// A buffer reused across publishes, so collecting wakers allocates nothing.
    static SPARE_WAKERS: Cell<Vec<Waker>> = const { Cell::new(Vec::new()) };
}

/// A buffer grown past this is let go instead of kept for reuse.
const KEEP_WAKER_BUFFER_UP_TO: usize = 4096;

impl Wakeups {
    /// An empty collection.
    pub fn new() -> Self {
        Self { wakers: SPARE_WAKERS.try_with(Cell::take).unwrap_or_default() }
    }

    pub(super) fn add(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.wakers.push(waker);
        }
    }

    /// Wakes every collected waker. Call with no lock of the backend held.
    pub fn wake_all(self) {
        drop(self);
    }

    /// How many wakers are collected.
    pub fn len(&self) -> usize {
        self.wakers.len()
    }

    /// Whether no waker is collected.
    pub fn is_empty(&self) -> bool {
        self.wakers.is_empty()
    }

    /// Wakes the wakers collected so far and goes on collecting: a backend
    /// that fills many queues with no lock held lets the first subscriptions
    /// run on other threads while it fills the rest.
    pub fn wake_collected(&mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
    }
}

impl Default for Wakeups {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.wake_collected();
        if self.wakers.capacity() <= KEEP_WAKER_BUFFER_UP_TO {
            let buffer = std::mem::take(&mut self.wakers);
            let _ = SPARE_WAKERS.try_with(|spare| spare.set(buffer));
        }
    }
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeups").field("collected", &self.wakers.len()).finish()
    }
}
