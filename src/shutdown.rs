//! Graceful shutdown: one cloneable handle that ends every SSE stream bound to it, telling clients to reconnect soon.
//!
//! When a server stops (a deploy, a rolling restart), its open SSE responses
//! would otherwise be cut when the process exits, and browsers would wait
//! their usual reconnection delay, or fail, before trying again. A
//! [`Shutdown`] lets the server end them cleanly instead:
//!
//! 1. create one `Shutdown` at start-up and bind each response body to it
//!    with [`SseStream::with_shutdown`](crate::sse::SseStream::with_shutdown);
//! 2. on SIGTERM / Ctrl-C, call [`trigger`](Shutdown::trigger). Every bound
//!    stream sends one last chunk, a `retry:` field with a short delay
//!    (see [`with_reconnect_delay`](Shutdown::with_reconnect_delay)) and a
//!    comment saying why, then its body ends;
//! 3. stop accepting connections and let the server finish the responses:
//!    [`triggered`](Shutdown::triggered) is a future that completes at the
//!    trigger, made for that (axum's `with_graceful_shutdown`, an accept
//!    loop's `select`).
//!
//! The browser's `EventSource` then reconnects after that short delay, to
//! another instance behind the same load balancer, with `Last-Event-ID` set to
//! the last event it received; [`resume`](crate::resume()) there replays what
//! it missed. Events that were queued for a stream but not yet written when
//! the shutdown came are *not* written: the stream ends at once rather than
//! wait on a slow client, and those events are after the client's
//! `Last-Event-ID`, so a backend whose history outlives the process (Redis)
//! replays them on the reconnection.
//!
//! Everything here is runtime-neutral (an atomic flag and an
//! [`event_listener::Event`]): it works the same on smol, async-std and tokio.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use futures::{StreamExt, executor::block_on};
//! use ssehub::fixture::ExampleCategory as C;
//! use ssehub::shutdown::Shutdown;
//! use ssehub::{sse::SseStream, Event, Error};
//!
//! let shutdown = Shutdown::with_reconnect_delay(Duration::from_millis(250), Duration::ZERO);
//! // A stream that never ends by itself, as a live subscription.
//! let events = futures::stream::pending::<Result<Event<C>, Error>>();
//! let mut body = SseStream::new(events).with_shutdown(&shutdown);
//!
//! block_on(async {
//!     assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
//!     shutdown.trigger(); // from the signal handler
//!     assert_eq!(
//!         body.next().await.unwrap(),
//!         "retry: 250\n\n: closing: server shutting down; reconnect to resume\n\n"
//!     );
//!     assert_eq!(body.next().await, None); // the response ends
//!     shutdown.triggered().await; // what the server's accept loop waits for
//! });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use event_listener::{Event, EventListener};

use crate::wire;

/// The comment sent in a stream's last chunk when the server shuts down.
pub const SHUTDOWN_COMMENT: &str = "closing: server shutting down; reconnect to resume";

/// A cloneable shutdown signal: [`trigger`](Self::trigger) it once, and every
/// SSE stream bound to it (and every [`triggered`](Self::triggered) future) ends.
///
/// Clones share one signal. See the [module docs](self) for the whole sequence.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: AtomicBool,
    /// Wakes every stream and future waiting for the trigger.
    wake_all: Event,
    min_delay_ms: u32,
    spread_ms: u32,
    /// How many streams have ended so far: picks each one's place in the spread.
    streams_ended: AtomicU64,
}

impl Shutdown {
    /// The shortest reconnection delay sent by default: 250 ms.
    pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_millis(250);

    /// How far above the shortest delay reconnections are spread by default: 1 s.
    pub const DEFAULT_RECONNECT_SPREAD: Duration = Duration::from_secs(1);

    /// A signal not yet triggered, with the default reconnection delays (250 ms to 1.25 s).
    pub fn new() -> Self {
        Self::with_reconnect_delay(Self::DEFAULT_RECONNECT_DELAY, Self::DEFAULT_RECONNECT_SPREAD)
    }

    /// A signal whose streams tell clients to reconnect after `min` plus a share of `spread`.
    ///
    /// Streams ending together get delays spread evenly over
    /// `min..min + spread`, so thousands of clients do not reconnect to the
    /// remaining instances in the same millisecond. `Duration::ZERO` as
    /// `spread` sends `min` to all. Both are taken in whole milliseconds, up
    /// to `u32::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ssehub::shutdown::Shutdown;
    ///
    /// let shutdown = Shutdown::with_reconnect_delay(Duration::from_millis(100), Duration::from_millis(400));
    /// assert_eq!(shutdown.reconnect_delay(), (Duration::from_millis(100), Duration::from_millis(400)));
    /// ```
    pub fn with_reconnect_delay(min: Duration, spread: Duration) -> Self {
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Self {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                wake_all: Event::new(),
                min_delay_ms: millis(min),
                spread_ms: millis(spread),
                streams_ended: AtomicU64::new(0),
            }),
        }
    }

    /// The shortest reconnection delay and the spread above it, as set at creation.
    pub fn reconnect_delay(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.inner.min_delay_ms.into()),
            Duration::from_millis(self.inner.spread_ms.into()),
        )
    }

    /// Starts the shutdown: every bound stream sends its last chunk and ends,
    /// every [`triggered`](Self::triggered) future completes. Calling it again does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let shutdown = ssehub::shutdown::Shutdown::new();
    /// let for_the_signal_handler = shutdown.clone();
    /// assert!(!shutdown.is_triggered());
    /// for_the_signal_handler.trigger();
    /// assert!(shutdown.is_triggered());
    /// ```
    pub fn trigger(&self) {
        // The flag first: a woken waiter, or one that registers now, must see it.
        if !self.inner.triggered.swap(true, Ordering::SeqCst) {
            self.inner.wake_all.notify(usize::MAX);
        }
    }

    /// Whether [`trigger`](Self::trigger) was called on this signal or a clone.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// A future that completes once the signal is triggered (at once if it already was).
    ///
    /// It is `Send + Unpin + 'static`: hand it to axum's
    /// `with_graceful_shutdown`, or race an accept loop against it.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{FutureExt, executor::block_on};
    ///
    /// let shutdown = ssehub::shutdown::Shutdown::new();
    /// let mut triggered = shutdown.triggered();
    /// assert!((&mut triggered).now_or_never().is_none());
    /// shutdown.trigger();
    /// block_on(triggered);
    /// ```
    pub fn triggered(&self) -> Triggered {
        Triggered { shutdown: self.clone(), listener: None, registered_waker: None }
    }

    /// The last chunk of a stream ending because of the shutdown: the `retry:` field and the comment.
    fn closing_chunk(&self) -> Bytes {
        let place = self.inner.streams_ended.fetch_add(1, Ordering::Relaxed);
        let mut out = String::with_capacity(80);
        wire::write_retry(
            &mut out,
            self.inner.min_delay_ms.saturating_add(spread_share(place, self.inner.spread_ms)),
        );
        wire::write_comment(&mut out, SHUTDOWN_COMMENT);
        Bytes::from(out)
    }
}

/// The `place`th stream's share of `spread_ms`: the golden-ratio sequence, so
/// the streams that ended so far cover the spread evenly at every count.
fn spread_share(place: u64, spread_ms: u32) -> u32 {
    // frac(place * φ) as a 32-bit fraction.
    let fraction = (place.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    ((u64::from(fraction) * u64::from(spread_ms)) >> 32) as u32
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (min, spread) = self.reconnect_delay();
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("reconnect_delay", &min)
            .field("reconnect_spread", &spread)
            .finish()
    }
}

/// The future returned by [`Shutdown::triggered`]: completes when the signal is triggered.
#[must_use = "futures do nothing unless polled"]
pub struct Triggered {
    shutdown: Shutdown,
    /// Made on the first poll that has to wait, so a stream that is never idle never registers.
    listener: Option<EventListener>,
    /// The waker the listener holds: polled again with the same one, the
    /// listener is not touched (registering takes the signal's lock).
    registered_waker: Option<Waker>,
}

impl Triggered {
    /// `Ready` with the stream's last chunk once the shutdown is triggered; for `SseStream`.
    pub(crate) fn poll_closing_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        match Pin::new(&mut *self).poll(cx) {
            Poll::Ready(()) => Poll::Ready(self.shutdown.closing_chunk()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Future for Triggered {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if this.shutdown.is_triggered() {
                this.listener = None;
                this.registered_waker = None;
                return Poll::Ready(());
            }
            if this.registered_waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            match &mut this.listener {
                // Listen first, then look at the flag again (top of the loop):
                // a trigger in between is seen either way.
                None => this.listener = Some(this.shutdown.inner.wake_all.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    // Notified: the flag is set, the loop returns.
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => {
                        this.registered_waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

impl fmt::Debug for Triggered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Triggered").field("shutdown", &self.shutdown).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_shares_stay_inside_the_spread_and_cover_it_evenly() {
        let spread = 1000;
        let mut shares: Vec<u32> = (0..100).map(|place| spread_share(place, spread)).collect();
        assert!(shares.iter().all(|&share| share < spread));
        shares.sort_unstable();
        // 100 golden-ratio points on 0..1000 leave no gap wider than a few dozen ms.
        let widest_gap = shares.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap();
        assert!(widest_gap <= 30, "widest gap {widest_gap} ms in {shares:?}");
        assert_eq!(spread_share(7, 0), 0);
    }
}
