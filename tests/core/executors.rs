//! One end-to-end scenario of the memory backend and `resume`, run on smol, async-std, tokio and `futures::executor`.
//!
//! The publisher runs on a plain thread, so every wake-up crosses threads; the
//! client disconnects and resumes along the way, and must get every event
//! exactly once, in publish order.

use ssehub_harness::wait::within;

use futures_lite::{StreamExt, future};
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::{MemoryHub, Subscription};
use ssehub::{
    Audience, Category, CategorySet, Error, Event, EventId, Publisher, Resumed, Retention, UserId, resume,
};

const EVENTS: usize = 2_000;
const RECONNECT_EVERY: usize = 300;

/// A client's first connection.
async fn connect(hub: &MemoryHub<C>, user: UserId, filter: CategorySet<C>) -> Client<'_> {
    let stream = resume(hub, user, None, filter).await.expect("first connection");
    Client { hub, user, filter, stream }
}

struct Client<'a> {
    hub: &'a MemoryHub<C>,
    user: UserId,
    filter: CategorySet<C>,
    stream: Resumed<C, Subscription<C>>,
}

/// Reads until `count` events arrived, resuming after every disconnect or
/// lag; returns the ids in arrival order.
async fn read_with_reconnects(client: Client<'_>, count: usize) -> Vec<EventId> {
    let Client { hub, user, filter, mut stream } = client;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        match within("the next event", stream.next()).await {
            Some(Ok(event)) => {
                received.push(event.id());
                if received.len() % RECONNECT_EVERY == 0 {
                    let last = stream.cursor().map(Into::into);
                    drop(stream);
                    stream = resume(hub, user, last, filter).await.expect("reconnection");
                }
            }
            Some(Err(Error::Lagged { last_delivered })) => {
                assert_eq!(stream.last_delivered(), last_delivered);
                let last = stream.cursor().map(Into::into);
                stream = resume(hub, user, last, filter).await.expect("reconnection after lagging");
            }
            other => panic!("unexpected item {other:?} after {} events", received.len()),
        }
    }
    received
}

async fn end_to_end() {
    let hub = MemoryHub::<C>::builder()
        .queue_capacity(256)
        .retention(Some(Retention::default().with_max_events(EVENTS as u64)))
        .build();
    let (user, other) =
        (UserId::from_uuid(*EventId::new().as_uuid()), UserId::from_uuid(*EventId::new().as_uuid()));
    let plan: Vec<Event<C>> = (0..EVENTS)
        .map(|n| {
            let audience = match n % 5 {
                0 => Audience::Broadcast,
                1 => Audience::User(other),
                _ => Audience::User(user),
            };
            Event::new(audience, "scenario", C::ALL[n % C::ALL.len()], format!("{{\"n\":{n}}}")).unwrap()
        })
        .collect();
    let filter = CategorySet::only(C::Ai).with(C::DataSync);
    let expected_all: Vec<EventId> =
        plan.iter().filter(|e| e.audience().includes(user)).map(Event::id).collect();
    let expected_filtered: Vec<EventId> = plan
        .iter()
        .filter(|e| e.audience().includes(user) && filter.contains(e.category()))
        .map(Event::id)
        .collect();

    // Both clients are connected before the first publish.
    let everything = connect(&hub, user, CategorySet::all()).await;
    let some = connect(&hub, user, filter).await;
    let reading = future::zip(
        read_with_reconnects(everything, expected_all.len()),
        read_with_reconnects(some, expected_filtered.len()),
    );
    let publisher_hub = hub.clone();
    let publisher = std::thread::spawn(move || {
        futures::executor::block_on(async {
            for (n, event) in plan.into_iter().enumerate() {
                publisher_hub.publish(event).await.expect("publish");
                if n % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    });
    let (all, filtered) = reading.await;
    publisher.join().expect("the publisher thread");
    assert_eq!(all, expected_all, "every event exactly once, in publish order");
    assert_eq!(filtered, expected_filtered, "every matching event exactly once, in publish order");
    assert_eq!(hub.stats().open_subscriptions, 0, "every subscription was unregistered");
}

#[test]
fn end_to_end_on_smol() {
    smol::block_on(smol::spawn(end_to_end()));
}

#[test]
fn end_to_end_on_async_std() {
    async_std::task::block_on(async_std::task::spawn(end_to_end()));
}

#[test]
fn end_to_end_on_tokio_current_thread() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(end_to_end());
}

#[test]
fn end_to_end_on_tokio_multi_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async { tokio::spawn(end_to_end()).await.unwrap() });
}

#[test]
fn end_to_end_on_futures_block_on() {
    futures::executor::block_on(end_to_end());
}
