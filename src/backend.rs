//! Building blocks every backend needs: the bounded subscriber queue with its `Subscription` stream, and the replay step.
//!
//! Both of this crate's backends are built on these, and a third-party
//! backend can be too: the rules the [conformance suite](crate::EventSource) checks
//! about lagging, closing, gaps, unsubscribing on drop, the order of a replay
//! and its status are kept here once.
//!
//! - [`subscriber_queue`] makes the queue between a backend and one
//!   subscription: the backend [`push`](SubscriberQueue::push)es events into
//!   it, the [`Subscription`] is the stream the application reads (and can be
//!   a backend's [`EventSource::Subscription`](crate::EventSource::Subscription)
//!   type as is). A queue holding `capacity` items that is offered one more
//!   ends as lagged; [`close`](SubscriberQueue::close) ends it as closed;
//!   dropping the subscription tells the backend's [`Registry`].
//! - [`replay`] merges the retained events of a user and of the broadcasts in
//!   publish order, keeps those passing the filter, and classifies the replay
//!   as complete, truncated or unknown from what the backend found.
//!
//! See the crate's [`EventSource`](crate::EventSource) docs for the rules, and a whole backend built on these.

mod limits;
mod queue;
mod replay;
mod wakeups;

pub use limits::{OpenSubscriptions, SubscriptionLimits};
pub(crate) use queue::NOT_REGISTERED;
pub use queue::{Push, Registry, SubscriberQueue, Subscription, subscriber_queue};
pub use replay::{ReplaySide, StreamSide, add_group_stream, replay, stream_replay};
pub use wakeups::Wakeups;
