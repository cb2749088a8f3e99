//! `Retention`: how much history a backend keeps per audience, for replay and recovery; one type for every backend.

use core::time::Duration;

/// How much history a backend keeps per audience (each user, and the broadcasts).
///
/// Each audience keeps at most `max_events` events and none older than
/// `max_age`. Backends that trim approximately (Redis, by default) may keep
/// somewhat more, at less cost per publish; [`exact_trimming`](Self::exact_trimming)
/// asks for exactly the limit. The memory backend always trims exactly.
/// Builders take an `Option<Retention>`: `None` keeps no history, and replays
/// then answer [`RetentionDisabled`](crate::ReplayStatus::RetentionDisabled).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ssehub::Retention;
///
/// let retention = Retention::default().with_max_events(500).with_max_age(Duration::from_secs(15 * 60));
/// assert_eq!(retention.max_events(), 500);
/// assert_eq!(retention, Retention::new(500, Duration::from_secs(900)));
/// ```
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

    /// This retention with at most `max_events` events (at least 1) per audience.
    #[must_use]
    pub fn with_max_events(mut self, max_events: u64) -> Self {
        self.max_events = max_events.max(1);
        self
    }

    /// This retention with no event older than `max_age` (`Duration::ZERO`: no age limit).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
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

    /// The oldest an event may get before it is dropped (`Duration::ZERO`: no limit).
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
