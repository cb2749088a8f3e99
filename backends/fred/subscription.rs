//! `Subscription`: a subscriber's bounded queue, read as a runtime-neutral `Stream`, and the requests that open and close it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc::WeakUnboundedSender;
use tokio::sync::oneshot;

use super::slots::Scope;
use crate::{Category, CategorySet, Error, Event, EventId, UserId};

/// A request to the dispatcher from the hub or a subscription.
///
/// Defined beside `Subscription` because each holds the other: a subscribe
/// request carries the reply a subscription goes back in, and a subscription
/// sends its unsubscribe request when dropped.
pub(crate) enum Command<C: Category> {
    Subscribe {
        user: UserId,
        filter: CategorySet<C>,
        reply: oneshot::Sender<Result<Subscription<C>, Error>>,
    },
    Unsubscribe {
        user: UserId,
        subscriber: u64,
    },
    /// Channels whose hash slots moved to another cluster node: subscribe them again and recover.
    Resync(Scope),
}

/// What the dispatcher puts in a subscriber's queue.
pub(crate) enum Delivery<C> {
    Event(Event<C>),
    /// Events may have been lost here; the stream fills in the last id it delivered.
    Gap,
}

/// The dispatcher's end of a subscriber's queue.
pub(crate) struct SubscriberQueue<C> {
    pub(crate) id: u64,
    pub(crate) filter: CategorySet<C>,
    sender: async_channel::Sender<Delivery<C>>,
    /// The most deliveries that may wait in the queue.
    capacity: usize,
    lagged: Arc<AtomicBool>,
}

/// The result of offering a subscriber one delivery.
pub(crate) enum Offer {
    Queued,
    /// The queue was full: the subscriber is told it lagged and must be dropped.
    Lagged,
    /// The subscription was dropped.
    Gone,
}

impl<C: Category> SubscriberQueue<C> {
    pub(crate) fn offer(&self, delivery: Delivery<C>) -> Offer {
        // Only the dispatcher sends, so the length cannot grow between this check and the send.
        if self.sender.len() >= self.capacity && !self.sender.is_closed() {
            return self.lag();
        }
        match self.sender.try_send(delivery) {
            Ok(()) => Offer::Queued,
            Err(async_channel::TrySendError::Full(_)) => self.lag(),
            Err(async_channel::TrySendError::Closed(_)) => Offer::Gone,
        }
    }

    /// Ends a subscription that fell behind: it yields what is queued, then `Error::Lagged`.
    fn lag(&self) -> Offer {
        // The flag is read by the stream once it has drained the queue, so it must be set before closing.
        self.lagged.store(true, Ordering::Release);
        self.sender.close();
        Offer::Lagged
    }

    /// Ends the subscription: the stream yields what is queued, then `Error::Closed`.
    pub(crate) fn close(&self) {
        self.sender.close();
    }
}

/// A live subscription of a [`RedisHub`](super::RedisHub): the user's and broadcast events that pass its filter.
///
/// A runtime-neutral [`Stream`]: poll it from any executor. It yields events
/// in publish order; [`Error::Gap`] where events could not be recovered after
/// an outage (events follow), and ends after [`Error::Lagged`] (its queue
/// filled up) or [`Error::Closed`] (the hub was dropped). Dropping it
/// unsubscribes; the Redis channel is released when the user's last local
/// subscription goes.
pub struct Subscription<C: Category> {
    queue: Pin<Box<async_channel::Receiver<Delivery<C>>>>,
    lagged: Arc<AtomicBool>,
    last_delivered: Option<EventId>,
    finished: bool,
    user: UserId,
    id: u64,
    dispatcher: WeakUnboundedSender<Command<C>>,
}

impl<C: Category> Subscription<C> {
    pub(crate) fn new(
        user: UserId,
        id: u64,
        filter: CategorySet<C>,
        capacity: usize,
        dispatcher: WeakUnboundedSender<Command<C>>,
    ) -> (Self, SubscriberQueue<C>) {
        // The bound is enforced by `offer`, not by the channel: a bounded channel
        // allocates all its slots up front (16 KiB for 1,024), an unbounded one
        // only as deliveries wait, so an idle subscription stays small.
        let (sender, receiver) = async_channel::unbounded();
        let lagged = Arc::new(AtomicBool::new(false));
        let queue =
            SubscriberQueue { id, filter, sender, capacity: capacity.max(1), lagged: Arc::clone(&lagged) };
        let subscription = Self {
            queue: Box::pin(receiver),
            lagged,
            last_delivered: None,
            finished: false,
            user,
            id,
            dispatcher,
        };
        (subscription, queue)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The user this subscription is for.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The id of the last event this stream yielded, if any.
    pub fn last_delivered(&self) -> Option<EventId> {
        self.last_delivered
    }
}

impl<C: Category> Stream for Subscription<C> {
    type Item = Result<Event<C>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.queue.as_mut().poll_next(cx) {
            Poll::Ready(Some(Delivery::Event(event))) => {
                self.last_delivered = Some(event.id());
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Delivery::Gap)) => {
                Poll::Ready(Some(Err(Error::Gap { last_delivered: self.last_delivered })))
            }
            Poll::Ready(None) => {
                self.finished = true;
                let last_delivered = self.last_delivered;
                Poll::Ready(Some(Err(if self.lagged.load(Ordering::Acquire) {
                    Error::Lagged { last_delivered }
                } else {
                    Error::Closed
                })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C: Category> Drop for Subscription<C> {
    fn drop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.upgrade() {
            // Unbounded send: no runtime needed, fine from any thread or executor.
            let _ = dispatcher.send(Command::Unsubscribe { user: self.user, subscriber: self.id });
        }
    }
}

impl<C: Category> fmt::Debug for Subscription<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.user)
            .field("last_delivered", &self.last_delivered)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}
