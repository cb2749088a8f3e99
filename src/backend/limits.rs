//! Caps on open subscriptions, per user and per process, and the exact count a backend reserves against them.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, LimitScope};

/// Caps on the subscriptions a hub keeps open in this process: per user, and all users together.
///
/// Over a cap, `subscribe` fails with [`Error::TooManySubscriptions`] before
/// anything is registered; a dropped or ended subscription frees its place at
/// once. Both backends take them from their builders
/// (`max_subscriptions_per_user`, `max_subscriptions`).
///
/// # Examples
///
/// ```
/// use ssehub::backend::SubscriptionLimits;
///
/// let limits = SubscriptionLimits::new().per_user(8);
/// assert_eq!(limits.max_per_user(), 8);
/// assert_eq!(limits.max_per_process(), SubscriptionLimits::DEFAULT_PER_PROCESS);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionLimits {
    per_user: usize,
    per_process: usize,
}

impl SubscriptionLimits {
    /// The default cap per user: 64 streams, enough for every tab and device
    /// of one person, far below what a script with a stolen cookie would open.
    pub const DEFAULT_PER_USER: usize = 64;

    /// The default cap per process: 1,000,000 streams, above what one process
    /// serves (a stream holds a socket; a process is allowed far fewer files).
    pub const DEFAULT_PER_PROCESS: usize = 1_000_000;

    /// The defaults.
    pub const fn new() -> Self {
        Self { per_user: Self::DEFAULT_PER_USER, per_process: Self::DEFAULT_PER_PROCESS }
    }

    /// At most `max` open subscriptions per user (`0` is taken as `1`).
    #[must_use]
    pub const fn per_user(mut self, max: usize) -> Self {
        self.per_user = if max == 0 { 1 } else { max };
        self
    }

    /// At most `max` open subscriptions in all (`0` is taken as `1`).
    #[must_use]
    pub const fn per_process(mut self, max: usize) -> Self {
        self.per_process = if max == 0 { 1 } else { max };
        self
    }

    /// The cap per user.
    pub const fn max_per_user(&self) -> usize {
        self.per_user
    }

    /// The cap per process.
    pub const fn max_per_process(&self) -> usize {
        self.per_process
    }

    /// `Ok` if a user with `open` subscriptions may open one more.
    ///
    /// # Errors
    ///
    /// [`Error::TooManySubscriptions`] with [`LimitScope::User`] at the cap.
    pub fn check_user(&self, open: usize) -> Result<(), Error> {
        if open < self.per_user {
            Ok(())
        } else {
            Err(Error::TooManySubscriptions { scope: LimitScope::User, limit: self.per_user })
        }
    }
}

impl Default for SubscriptionLimits {
    fn default() -> Self {
        Self::new()
    }
}

/// The number of subscriptions a hub has open, counted exactly against the per-process cap.
///
/// A subscribe [`reserve`](Self::reserve)s a place before it registers
/// anything and [`release`](Self::release)s it if it fails after; the
/// backend releases it again when the subscription is unregistered.
#[derive(Debug, Default)]
pub struct OpenSubscriptions(AtomicUsize);

impl OpenSubscriptions {
    /// No subscription open.
    pub const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Takes one place, unless `limits`' per-process cap is reached.
    ///
    /// # Errors
    ///
    /// [`Error::TooManySubscriptions`] with [`LimitScope::Process`] at the cap.
    pub fn reserve(&self, limits: &SubscriptionLimits) -> Result<(), Error> {
        let max = limits.per_process;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1))
            .map(drop)
            .map_err(|_| Error::TooManySubscriptions { scope: LimitScope::Process, limit: max })
    }

    /// Gives `places` back.
    pub fn release(&self, places: usize) {
        self.0.fetch_sub(places, Ordering::AcqRel);
    }

    /// How many are open.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}
