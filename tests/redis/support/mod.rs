//! Helpers for the Redis backend's tests: hubs on private servers, test events, waits for any executor, and the fault tests' delivery check.

pub mod delivery_check;

use futures::{Stream, StreamExt};
use ssehub::fixture::ExampleCategory;
use ssehub::fred::{KeyLayout, RedisHub, RedisHubBuilder};
use ssehub::{Audience, Category, Error, Event, EventId, UserId};
pub use ssehub_harness::wait::{eventually, within};

pub type C = ExampleCategory;

/// A user no other test uses.
pub fn fresh_user() -> UserId {
    UserId::from_uuid(*EventId::new().as_uuid())
}

/// The `n`th test event for `audience`; categories rotate over the six.
pub fn event(audience: Audience, n: usize) -> Event<C> {
    let category = C::ALL[n % C::ALL.len()];
    Event::new(audience, "test.event", category, format!("{{\"n\":{n}}}")).expect("a valid event type")
}

/// A builder for a hub on `url` with its own key prefix, so tests sharing a server stay apart.
pub fn builder(url: &str, prefix: &str) -> RedisHubBuilder<C> {
    RedisHub::builder(url)
        .expect("a valid URL")
        .key_layout(KeyLayout::standalone_with_prefix(prefix).expect("a valid prefix"))
}

/// The next item of `stream`, which must come within [`WAIT`].
pub async fn next_item<S>(stream: &mut S, what: &str) -> Option<Result<Event<C>, Error>>
where
    S: Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    within(what, stream.next()).await
}

/// The next item of `stream`, which must be an event.
pub async fn next_event<S>(stream: &mut S, what: &str) -> Event<C>
where
    S: Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    match next_item(stream, what).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event ({what}), got {other:?}"),
    }
}

pub fn ids(events: &[Event<C>]) -> Vec<EventId> {
    events.iter().map(Event::id).collect()
}

/// The stream entry ssehub writes for `event`, a user event of `user`: what tests write
/// straight into a stream to stand in for events the hub stored.
pub fn stream_entry_of(event: &Event<C>, user: UserId) -> String {
    format!(
        r#"{{"event_id":"{}","event_type":"{}","user_id":"{user}","category":"{}","data":{},"occurred_at":"{}"}}"#,
        event.id(),
        event.event_type(),
        Category::name(event.category()),
        event.data(),
        event.occurred_at().to_rfc3339(),
    )
}
