//! `Retention`: how much history each audience's stream keeps, for replay and outage recovery.

use std::time::Duration;

/// How much history is kept per audience, for replay and outage recovery.
///
/// Each user's stream and the broadcast stream keep at most `max_events`
/// entries and none older than `max_age`; a stream that sees no publish for
/// `max_age` expires whole. Trimming is approximate by default: Redis drops
/// whole blocks of entries, so somewhat more may remain, at less cost per
/// publish; [`exact_trimming`](Retention::exact_trimming) keeps exactly the limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Retention {
    max_events: u64,
    max_age: Duration,
    exact: bool,
}

impl Retention {
    /// At most `max_events` events (at least 1) per audience, none older than `max_age`
    /// (`Duration::ZERO`: no age limit and no expiry).
    pub fn new(max_events: u64, max_age: Duration) -> Self {
        Self { max_events: max_events.max(1), max_age, exact: false }
    }

    /// This retention with exact (`true`) or approximate (`false`, the default) trimming.
    #[must_use]
    pub fn exact_trimming(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    /// Whether trimming is exact.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The most events kept per audience.
    pub fn max_events(&self) -> u64 {
        self.max_events
    }

    /// The oldest an event may get before it is trimmed.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
}

impl Default for Retention {
    /// 1,000 events per audience, for at most an hour.
    fn default() -> Self {
        Self::new(1000, Duration::from_secs(3600))
    }
}
