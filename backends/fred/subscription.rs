//! The dispatcher's end of each subscription (the shared subscriber queue of `ssehub::backend`), and the requests that open and close them.

use std::sync::Arc;

use tokio::sync::mpsc::WeakUnboundedSender;
use tokio::sync::oneshot;

use super::slots::Scope;
pub use crate::backend::Subscription;
use crate::backend::{Push, Registry, SubscriberQueue, Wakeups, subscriber_queue};
use crate::{Category, CategorySet, Error, Event, Reader, StreamKind, UserId};

/// A request to the dispatcher from the hub or a subscription.
///
/// Defined beside `Subscription` because each holds the other: a subscribe
/// request carries the reply a subscription goes back in, and a subscription
/// sends its unsubscribe request when dropped.
pub(crate) enum Command<C: Category> {
    Subscribe {
        reader: Reader,
        filter: CategorySet<C>,
        reply: oneshot::Sender<Result<Subscription<C>, Error>>,
    },
    Unsubscribe {
        user: UserId,
        subscriber: u64,
    },
    /// `disconnect(user)` on this hub: end the user's subscriptions here, then answer.
    Revoke {
        user: UserId,
        reply: oneshot::Sender<()>,
    },
    /// Channels whose hash slots moved to another cluster node: subscribe them again and recover.
    Resync(Scope),
    /// The hub was closed: end every subscription and stop.
    Close,
    /// As `Close`, and answer once the dispatcher has wound down (presence removed, client quit).
    CloseThen(oneshot::Sender<()>),
}

/// What the dispatcher puts in a subscriber's queue.
pub(crate) enum Delivery<C> {
    Event(Event<C>),
    /// Events may have been lost here (of this stream, or of every one: `None`);
    /// the stream fills in the last id it delivered.
    Gap(Option<StreamKind>),
}

/// The registry slot of a queue that holds its subscriber id.
const SUBSCRIBER_ID_SLOT: usize = 0;

/// Takes dropped subscriptions out of the dispatcher's lists: one per hub, shared by its subscriptions.
pub(crate) struct Unsubscriber<C: Category> {
    pub(crate) commands: WeakUnboundedSender<Command<C>>,
}

impl<C: Category> Registry<C> for Unsubscriber<C> {
    fn unregister(&self, queue: &Arc<SubscriberQueue<C>>) {
        if let Some(dispatcher) = self.commands.upgrade() {
            let subscriber = queue.slot(SUBSCRIBER_ID_SLOT) as u64;
            // Unbounded send: no runtime needed, fine from any thread or executor.
            let _ = dispatcher.send(Command::Unsubscribe { user: queue.user(), subscriber });
        }
    }
}

/// The dispatcher's end of one subscription. Dropping it closes the queue:
/// the subscription yields what is queued, then `Error::Closed`.
pub(crate) struct Subscriber<C: Category> {
    pub(crate) id: u64,
    pub(crate) filter: CategorySet<C>,
    queue: Arc<SubscriberQueue<C>>,
}

impl<C: Category> Subscriber<C> {
    /// A subscription of `user` and the dispatcher's end of it.
    pub(crate) fn open(
        user: UserId,
        id: u64,
        filter: CategorySet<C>,
        capacity: usize,
        registry: Arc<dyn Registry<C>>,
    ) -> (Self, Subscription<C>) {
        let (queue, subscription) = subscriber_queue(user, capacity, Some(registry));
        queue.set_slot(SUBSCRIBER_ID_SLOT, id as usize);
        (Self { id, filter, queue }, subscription)
    }

    /// Ends the subscription with [`Error::Revoked`](crate::Error::Revoked).
    pub(crate) fn revoke(&self, wakeups: &mut Wakeups) {
        self.queue.revoke(wakeups);
    }

    /// A handle on the same queue, for the feeds of the groups the subscription reads.
    pub(crate) fn member(&self, user: UserId) -> Member<C> {
        Member { user, id: self.id, filter: self.filter, queue: Arc::clone(&self.queue) }
    }
}

/// A subscription as a group's feed holds it: the queue is its user's feed's to close.
pub(crate) struct Member<C: Category> {
    pub(crate) user: UserId,
    pub(crate) id: u64,
    pub(crate) filter: CategorySet<C>,
    queue: Arc<SubscriberQueue<C>>,
}

impl<C: Category> Clone for Member<C> {
    fn clone(&self) -> Self {
        Self { user: self.user, id: self.id, filter: self.filter, queue: Arc::clone(&self.queue) }
    }
}

/// What a feed offers its deliveries to: a [`Subscriber`] (in its user's feed) or a [`Member`] (in
/// a group's).
pub(crate) trait Recipient<C: Category> {
    /// The categories it reads.
    fn filter(&self) -> CategorySet<C>;

    /// Queues `delivery`, collecting the wakeup in `wakeups`.
    fn offer(&self, delivery: Delivery<C>, wakeups: &mut Wakeups) -> Push;
}

impl<C: Category> Recipient<C> for Subscriber<C> {
    fn filter(&self) -> CategorySet<C> {
        self.filter
    }

    fn offer(&self, delivery: Delivery<C>, wakeups: &mut Wakeups) -> Push {
        offer(&self.queue, delivery, wakeups)
    }
}

impl<C: Category> Recipient<C> for Member<C> {
    fn filter(&self) -> CategorySet<C> {
        self.filter
    }

    fn offer(&self, delivery: Delivery<C>, wakeups: &mut Wakeups) -> Push {
        offer(&self.queue, delivery, wakeups)
    }
}

fn offer<C: Category>(queue: &SubscriberQueue<C>, delivery: Delivery<C>, wakeups: &mut Wakeups) -> Push {
    match delivery {
        Delivery::Event(event) => queue.push(&event, wakeups),
        Delivery::Gap(Some(stream)) => queue.push_stream_gap(stream, wakeups),
        Delivery::Gap(None) => queue.push_gap(wakeups),
    }
}

impl<C: Category> Drop for Subscriber<C> {
    fn drop(&mut self) {
        self.queue.close(&mut Wakeups::new());
    }
}
