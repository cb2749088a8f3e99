//! `DynHub`: any backend behind one type, chosen at run time.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;

use super::{BoxFuture, EventSource, EventStream, Publisher, Replay, StreamReplay};
use crate::cursor::{Position, Positions};
use crate::{Category, CategorySet, Error, Event, EventId, Reader, UserId};

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
        reader: impl Into<Reader> + Send,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send {
        self.hub.subscribe_boxed(reader.into(), filter)
    }

    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send {
        self.hub.missed_events_boxed(user, last_event_id, filter)
    }

    fn missed_since(
        &self,
        reader: impl Into<Reader> + Send,
        from: Positions,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<StreamReplay<C>, Error>> + Send {
        self.hub.missed_since_boxed(reader.into(), from, filter)
    }

    fn horizon(&self) -> Option<Position> {
        self.hub.horizon_boxed()
    }

    fn disconnect(&self, user: UserId) -> impl Future<Output = Result<(), Error>> + Send {
        self.hub.disconnect_boxed(user)
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
        reader: Reader,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<EventStream<C>, Error>>;
    fn missed_events_boxed(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<Replay<C>, Error>>;
    fn missed_since_boxed(
        &self,
        reader: Reader,
        from: Positions,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<StreamReplay<C>, Error>>;
    fn horizon_boxed(&self) -> Option<Position>;
    fn publish_boxed(&self, event: Event<C>) -> BoxFuture<'_, Result<(), Error>>;
    fn disconnect_boxed(&self, user: UserId) -> BoxFuture<'_, Result<(), Error>>;
}

impl<C, H> ErasedHub<C> for H
where
    C: Category,
    H: EventSource<C> + Publisher<C>,
{
    fn subscribe_boxed(
        &self,
        reader: Reader,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<EventStream<C>, Error>> {
        Box::pin(async move {
            let subscription = self.subscribe(reader, filter).await?;
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

    fn missed_since_boxed(
        &self,
        reader: Reader,
        from: Positions,
        filter: CategorySet<C>,
    ) -> BoxFuture<'_, Result<StreamReplay<C>, Error>> {
        Box::pin(self.missed_since(reader, from, filter))
    }

    fn horizon_boxed(&self) -> Option<Position> {
        self.horizon()
    }

    fn publish_boxed(&self, event: Event<C>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.publish(event))
    }

    fn disconnect_boxed(&self, user: UserId) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.disconnect(user))
    }
}
