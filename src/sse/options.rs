//! How an `SseStream` is paced: the reconnection delay it announces and the heartbeat interval.

use std::time::Duration;

/// How an [`SseStream`](super::SseStream) paces the connection: the `retry:` delay and the heartbeat interval.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use ssehub::sse::SseOptions;
///
/// let options = SseOptions::new().heartbeat(Duration::from_secs(30));
/// assert_eq!(options.heartbeat_interval(), Duration::from_secs(30));
/// assert_eq!(options.retry_delay(), SseOptions::DEFAULT_RETRY);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseOptions {
    pub(super) retry: Duration,
    pub(super) heartbeat: Duration,
}

impl SseOptions {
    /// The default `retry:` delay: 3 s, the usual browser default, said explicitly.
    pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

    /// The default heartbeat interval: 15 s, below the idle timeouts of common proxies (30–60 s).
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

    /// The shortest heartbeat interval; shorter ones are raised to it.
    pub const MIN_HEARTBEAT: Duration = Duration::from_millis(1);

    /// The defaults: [`DEFAULT_RETRY`](Self::DEFAULT_RETRY) and [`DEFAULT_HEARTBEAT`](Self::DEFAULT_HEARTBEAT).
    pub const fn new() -> Self {
        Self { retry: Self::DEFAULT_RETRY, heartbeat: Self::DEFAULT_HEARTBEAT }
    }

    /// Sets the reconnection delay sent in the first frame, in whole milliseconds
    /// (at most `u32::MAX`).
    #[must_use]
    pub const fn retry(mut self, delay: Duration) -> Self {
        self.retry = delay;
        self
    }

    /// Sets how long the stream may stay silent before a heartbeat comment is sent
    /// (at least [`MIN_HEARTBEAT`](Self::MIN_HEARTBEAT)).
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(Self::MIN_HEARTBEAT);
        self
    }

    /// The reconnection delay.
    pub const fn retry_delay(&self) -> Duration {
        self.retry
    }

    /// The heartbeat interval.
    pub const fn heartbeat_interval(&self) -> Duration {
        self.heartbeat
    }

    pub(super) fn retry_millis(&self) -> u32 {
        u32::try_from(self.retry.as_millis()).unwrap_or(u32::MAX)
    }
}

impl Default for SseOptions {
    fn default() -> Self {
        Self::new()
    }
}
