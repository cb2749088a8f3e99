//! The Redis backend on smol, async-std, `futures::executor` and tokio: no caller ever makes a tokio runtime.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use fred_support::{builder, event, fresh_user, ids, next_event, within};
use redis_server::RedisServer;
use ssehub::fred::RedisHub;
use ssehub::{Audience, CategorySet, EventSource, Publisher, ReplayStatus};

/// Subscribes, publishes own and broadcast events, reads them live, replays, and drops the hub.
async fn subscribe_publish_replay(url: &str, prefix: &str, expect_own_runtime: bool) {
    let hub: RedisHub<fred_support::C> =
        within("connect", builder(url, prefix).connect()).await.expect("connect");
    assert_eq!(hub.owns_runtime(), expect_own_runtime, "whose runtime the client runs on");
    let user = fresh_user();
    let mut subscription =
        within("subscribe", hub.subscribe(user, CategorySet::all())).await.expect("subscribe");
    let published = vec![
        event(Audience::User(user), 0),
        event(Audience::Broadcast, 1),
        event(Audience::User(user), 2),
        event(Audience::User(user), 3),
    ];
    for e in &published {
        within("publish", hub.publish(e.clone())).await.expect("publish");
    }
    let mut received = Vec::new();
    for _ in &published {
        received.push(next_event(&mut subscription, "a published event").await);
    }
    assert_eq!(received, published, "events arrive whole and in publish order");

    let replay = within("missed_events", hub.missed_events(user, published[0].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    assert_eq!(replay.status, ReplayStatus::Complete);
    assert_eq!(ids(&replay.events), ids(&published[1..]));
    // Dropping the hub (and with it an owned runtime) from inside async code must not panic.
    drop(hub);
    let end = fred_support::next_item(&mut subscription, "the end of the subscription").await;
    assert!(
        matches!(end, Some(Err(ssehub::Error::Closed))),
        "a dropped hub closes subscriptions, got {end:?}"
    );
}

#[test]
fn works_on_smol_without_a_tokio_runtime() {
    let server = RedisServer::start();
    smol::block_on(async {
        assert!(tokio::runtime::Handle::try_current().is_err(), "the test must not be inside tokio");
        subscribe_publish_replay(&server.url(), "smol", true).await;
    });
}

#[test]
fn works_on_async_std_without_a_tokio_runtime() {
    let server = RedisServer::start();
    async_std::task::block_on(async {
        assert!(tokio::runtime::Handle::try_current().is_err(), "the test must not be inside tokio");
        subscribe_publish_replay(&server.url(), "asyncstd", true).await;
    });
}

#[test]
fn works_on_futures_executor_without_a_tokio_runtime() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        assert!(tokio::runtime::Handle::try_current().is_err(), "the test must not be inside tokio");
        subscribe_publish_replay(&server.url(), "futures", true).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_the_callers_multi_thread_tokio_runtime() {
    let server = RedisServer::start();
    subscribe_publish_replay(&server.url(), "tokiomt", false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn runs_on_the_callers_current_thread_tokio_runtime() {
    let server = RedisServer::start();
    subscribe_publish_replay(&server.url(), "tokioct", false).await;
}

#[test]
fn a_hub_made_on_one_executor_serves_another() {
    let server = RedisServer::start();
    let hub: RedisHub<fred_support::C> =
        futures::executor::block_on(builder(&server.url(), "shared").connect()).expect("connect");
    let user = fresh_user();
    let mut subscription = smol::block_on(hub.subscribe(user, CategorySet::all())).expect("subscribe");
    let published = event(Audience::User(user), 7);
    async_std::task::block_on(hub.publish(published.clone())).expect("publish");
    let received = smol::block_on(next_event(&mut subscription, "the event"));
    assert_eq!(received, published);
}
