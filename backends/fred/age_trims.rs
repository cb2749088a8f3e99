//! When a standalone batch trims a stream by age and renews its expiry: every batch with exact trimming, else at most once a second.
//!
//! Trimming by count rides on every `XADD` (`MAXLEN`). Trimming by age
//! (`XTRIM MINID`) and the sliding expiry (`PEXPIRE`) are two more commands
//! per stream; with events spread over many audiences that is two more per
//! event, about a quarter of Redis's work per publish. With approximate
//! trimming (the default) an audience's stream is trimmed by age at most
//! once per [`AGE_TRIM_INTERVAL`] per hub, which keeps events at most that
//! much longer than `max_age` (approximate trimming drops whole stream nodes
//! anyway, so some outlive it by more), and its expiry is set to `max_age`
//! plus the interval, so a stream still lives `max_age` after its last event.
//! With exact trimming every batch trims and renews each stream it touched.
//! (Cluster layouts publish through `publish.lua`, which trims on every publish.)

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Audience, Retention};

/// The longest an audience's stream goes untrimmed by age while events are published to it (approximate trimming).
pub(crate) const AGE_TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Which audiences' streams a batch trims by age and renews the expiry of.
pub(crate) struct AgeTrims {
    /// Exact trimming: every batch trims every stream it touches.
    every_batch: bool,
    expiry: Duration,
    window: Mutex<Window>,
}

/// The audiences trimmed since `started`; a new window starts every [`AGE_TRIM_INTERVAL`].
struct Window {
    started: Instant,
    trimmed: HashSet<Audience>,
}

impl AgeTrims {
    pub(crate) fn new(retention: Retention) -> Self {
        let every_batch = retention.is_exact();
        let expiry = match (every_batch, retention.max_age()) {
            (_, Duration::ZERO) | (true, _) => retention.max_age(),
            (false, max_age) => max_age + AGE_TRIM_INTERVAL,
        };
        Self {
            every_batch,
            expiry,
            window: Mutex::new(Window { started: Instant::now(), trimmed: HashSet::new() }),
        }
    }

    /// How long a stream lives after its expiry is renewed (`Duration::ZERO`: no age limit, no expiry).
    pub(crate) fn expiry(&self) -> Duration {
        self.expiry
    }

    /// The positions, in `audiences` (a batch's events in order), of the events whose stream the batch
    /// trims: the first event of each audience that is due. Those audiences count as trimmed from now on.
    pub(crate) fn due(&self, audiences: &[Audience]) -> Vec<usize> {
        let mut due = Vec::new();
        if self.expiry.is_zero() {
            // No age limit: nothing to trim by age, no expiry to renew.
            return due;
        }
        if self.every_batch {
            let mut seen = HashSet::with_capacity(audiences.len());
            due.extend((0..audiences.len()).filter(|&i| seen.insert(audiences[i])));
            return due;
        }
        let mut window = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if now.duration_since(window.started) >= AGE_TRIM_INTERVAL {
            // Keep the capacity the last window needed, not the largest any window ever needed.
            let needed = window.trimmed.len();
            window.trimmed.clear();
            window.trimmed.shrink_to(needed);
            window.started = now;
        }
        due.extend((0..audiences.len()).filter(|&i| window.trimmed.insert(audiences[i])));
        due
    }

    /// Forgets that these audiences were trimmed (their batch failed): the next publish to each trims.
    pub(crate) fn forget(&self, audiences: impl IntoIterator<Item = Audience>) {
        if self.every_batch {
            return;
        }
        let mut window = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for audience in audiences {
            window.trimmed.remove(&audience);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;

    fn user(n: u128) -> Audience {
        Audience::User(UserId::from(uuid::Uuid::from_u128(n)))
    }

    #[test]
    fn approximate_trimming_trims_each_audience_once_per_interval() {
        let trims = AgeTrims::new(Retention::new(100, Duration::from_secs(60)));
        assert_eq!(trims.due(&[user(1), user(2), user(1), Audience::Broadcast]), vec![0, 1, 3]);
        assert_eq!(trims.due(&[user(2), user(1), user(3)]), vec![2]);
        trims.forget([user(1)]);
        assert_eq!(trims.due(&[user(2), user(1)]), vec![1]);
        assert_eq!(trims.expiry(), Duration::from_secs(60) + AGE_TRIM_INTERVAL);
    }

    #[test]
    fn a_new_interval_trims_again() {
        let trims = AgeTrims::new(Retention::new(100, Duration::from_secs(60)));
        assert_eq!(trims.due(&[user(1)]), vec![0]);
        trims.window.lock().unwrap().started -= AGE_TRIM_INTERVAL;
        assert_eq!(trims.due(&[user(1), user(1)]), vec![0]);
    }

    #[test]
    fn exact_trimming_trims_every_stream_of_every_batch() {
        let trims = AgeTrims::new(Retention::new(100, Duration::from_secs(60)).exact_trimming(true));
        assert_eq!(trims.due(&[user(1), user(1), user(2)]), vec![0, 2]);
        assert_eq!(trims.due(&[user(1)]), vec![0]);
        assert_eq!(trims.expiry(), Duration::from_secs(60));
        let no_age_limit = AgeTrims::new(Retention::new(1, Duration::ZERO));
        assert_eq!(no_age_limit.expiry(), Duration::ZERO);
        assert!(no_age_limit.due(&[user(1), user(2)]).is_empty());
    }
}
