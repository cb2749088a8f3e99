//! The backend traits `EventSource` and `Publisher`, replay results, and the type-erased `DynHub`.
//!
//! # Implementing your own backend
//!
//! A backend is a type that implements both traits. This one keeps no history
//! and delivers nothing, which is enough to show every signature; the
//! `conformance` feature offers the checks a real backend must pass.
//!
//! ```
//! use std::future::Future;
//! use futures::stream::{self, Pending};
//! use ssehub::{Category, CategorySet, Error, Event, EventId, EventSource, Publisher, Replay, UserId};
//!
//! struct BlackHole;
//!
//! impl<C: Category> EventSource<C> for BlackHole {
//!     type Subscription = Pending<Result<Event<C>, Error>>;
//!
//!     async fn subscribe(&self, _user: UserId, _filter: CategorySet<C>) -> Result<Self::Subscription, Error> {
//!         // A real backend returns only once the subscription is live.
//!         Ok(stream::pending())
//!     }
//!
//!     async fn missed_events(
//!         &self,
//!         _user: UserId,
//!         _last_event_id: EventId,
//!         _filter: CategorySet<C>,
//!     ) -> Result<Replay<C>, Error> {
//!         Ok(Replay::retention_disabled())
//!     }
//! }
//!
//! impl<C: Category> Publisher<C> for BlackHole {
//!     async fn publish(&self, _event: Event<C>) -> Result<(), Error> {
//!         Ok(())
//!     }
//! }
//!
//! // Generic code takes any backend...
//! async fn replay_status<S: EventSource<ssehub::fixture::ExampleCategory>>(source: &S) -> ssehub::ReplayStatus {
//!     let user = UserId::from_uuid(uuid::Uuid::nil());
//!     source.missed_events(user, EventId::new(), CategorySet::all()).await.unwrap().status
//! }
//! // ...and a `DynHub` picks one at run time.
//! let hub = ssehub::DynHub::new(BlackHole);
//! let status = futures::executor::block_on(replay_status(&hub));
//! assert_eq!(status, ssehub::ReplayStatus::RetentionDisabled);
//! ```

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;

use futures_core::Stream;

use crate::{Category, CategorySet, Error, Event, EventId, UserId};

/// A boxed, `Send` future, as returned through [`DynHub`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed subscription stream, as returned through [`DynHub`].
pub type EventStream<C> = Pin<Box<dyn Stream<Item = Result<Event<C>, Error>> + Send + 'static>>;

/// Where subscribers get events from: live subscriptions and replay of missed events.
pub trait EventSource<C: Category>: Send + Sync {
    /// The stream of a live subscription.
    ///
    /// It yields the user's own events and broadcast events that pass the
    /// filter, in publish order. [`Error::Lagged`] ends it; [`Error::Gap`]
    /// marks a point where events may have been lost, and it goes on after.
    /// Dropping it unsubscribes.
    type Subscription: Stream<Item = Result<Event<C>, Error>> + Send + Unpin + 'static;

    /// Subscribes to `user`'s events and broadcasts that pass `filter`.
    ///
    /// Resolves only once the subscription is live: every event published
    /// after this returns is delivered to it.
    fn subscribe(
        &self,
        user: UserId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send;

    /// The retained events for `user` (own and broadcast) published after
    /// `last_event_id` that pass `filter`, oldest first, and whether that is
    /// all of them.
    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send;
}

/// Where events are published: to one user, or to everyone, by the event's audience.
pub trait Publisher<C: Category>: Send + Sync {
    /// Publishes `event` to its [`audience`](Event::audience); returns once
    /// the backend has accepted it (and retained it, where retention is on).
    fn publish(&self, event: Event<C>) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The events a client missed, and how complete they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay<C: Category> {
    /// The missed events, oldest first.
    pub events: Vec<Event<C>>,
    /// Whether `events` is everything that was missed.
    pub status: ReplayStatus,
}

impl<C: Category> Replay<C> {
    /// A complete replay of these events.
    pub fn complete(events: Vec<Event<C>>) -> Self {
        Self { events, status: ReplayStatus::Complete }
    }

    /// A truncated replay: history no longer reaches back to the id, and
    /// these are the retained events published after it.
    pub fn truncated(events: Vec<Event<C>>) -> Self {
        Self { events, status: ReplayStatus::Truncated }
    }

    /// A replay after an id this history never held: every retained event.
    pub fn unknown_id(events: Vec<Event<C>>) -> Self {
        Self { events, status: ReplayStatus::UnknownId }
    }

    /// An empty replay from a backend that keeps no history.
    pub fn retention_disabled() -> Self {
        Self { events: Vec::new(), status: ReplayStatus::RetentionDisabled }
    }
}

/// How complete a [`Replay`] is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ReplayStatus {
    /// Every event after the id is in the replay.
    Complete,
    /// History no longer reaches back to the id: older events were dropped, so
    /// the replay (the retained events) may miss some.
    Truncated,
    /// The id is not in this user's or the broadcast history: a foreign or
    /// expired id. The replay holds every retained event.
    UnknownId,
    /// The backend keeps no history; nothing can be replayed.
    RetentionDisabled,
}

impl ReplayStatus {
    /// Whether the replay covers everything that was missed.
    pub fn is_complete(self) -> bool {
        self == ReplayStatus::Complete
    }
}

impl fmt::Display for ReplayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayStatus::Complete => "complete",
            ReplayStatus::Truncated => "truncated",
            ReplayStatus::UnknownId => "unknown id",
            ReplayStatus::RetentionDisabled => "retention disabled",
        })
    }
}

/// A backend chosen at run time: any [`EventSource`] + [`Publisher`] behind one type.
///
/// Cheap to clone. Lets an application pick the memory or the Redis backend
/// from its configuration without generics spreading through its code.
pub struct DynHub<C: Category> {
    hub: Arc<dyn ErasedHub<C>>,
}

impl<C: Category> DynHub<C> {
    /// Erases the type of `hub`.
    pub fn new<H>(hub: H) -> Self
    where
        H: EventSource<C> + Publisher<C> + 'static,
    {
        Self { hub: Arc::new(hub) }
    }
}

impl<C: Category> Clone for DynHub<C> {
    fn clone(&self) -> Self {
        Self { hub: Arc::clone(&self.hub) }
    }
}

impl<C: Category> fmt::Debug for DynHub<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynHub").finish_non_exhaustive()
    }
}

impl<C: Category> EventSource<C> for DynHub<C> {
    type Subscription = EventStream<C>;

    fn subscribe(
        &self,
        user: UserId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send {
        self.hub.subscribe_boxed(user, filter)
    }

    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send {
        self.hub.missed_events_boxed(user, last_event_id, filter)
    }
}

impl<C: Category> Publisher<C> for DynHub<C> {
    fn publish(&self, event: Event<C>) -> impl Future<Output = Result<(), Error>> + Send {
        self.hub.publish_boxed(event)
    }
}

/// The object-safe twin of `EventSource + Publisher`, behind [`DynHub`].
trait ErasedHub<C: Category>: Send + Sync {
    fn subscribe_boxed(
        &self,
        user: UserId,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<EventStream<C>, Error>>;
    fn missed_events_boxed(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<Replay<C>, Error>>;
    fn publish_boxed(&self, event: Event<C>) -> BoxFuture<'_, Result<(), Error>>;
}

impl<C, H> ErasedHub<C> for H
where
    C: Category,
    H: EventSource<C> + Publisher<C>,
{
    fn subscribe_boxed(
        &self,
        user: UserId,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<EventStream<C>, Error>> {
        Box::pin(async move {
            let subscription = self.subscribe(user, filter).await?;
            Ok(Box::pin(subscription) as EventStream<C>)
        })
    }

    fn missed_events_boxed(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<Replay<C>, Error>> {
        Box::pin(self.missed_events(user, last_event_id, filter))
    }

    fn publish_boxed(&self, event: Event<C>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.publish(event))
    }
}
