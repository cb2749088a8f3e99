//! Sessions across hubs ("processes") sharing one Redis, on a server and on a cluster: disconnect, presence, deadlines.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fred_support::{C, event, fresh_user, next_event, next_item, within};
use redis_server::{RedisCluster, RedisServer};
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, CategorySet, Error, EventSource, Presence, Publisher, UserId};

/// The spec's bound for a disconnect to reach every process; the assertion allows a loaded machine
/// five times that, and the measured time is printed.
const WITHIN: Duration = Duration::from_secs(1);

async fn hubs(url: &str, layout: KeyLayout) -> Vec<RedisHub<C>> {
    let mut hubs = Vec::new();
    for _ in 0..3 {
        let hub = RedisHub::builder(url).unwrap().key_layout(layout.clone()).connect();
        hubs.push(within("connect", hub).await.expect("connect"));
    }
    hubs
}

/// Alice and Bob on each of three hubs; hub 0 disconnects Alice.
async fn disconnect_reaches_every_hub(url: String, layout: KeyLayout) {
    let hubs = hubs(&url, layout).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for hub in &hubs {
        alices.push(within("subscribe", hub.subscribe(alice, CategorySet::all())).await.expect("subscribe"));
        bobs.push(within("subscribe", hub.subscribe(bob, CategorySet::all())).await.expect("subscribe"));
    }
    let started = Instant::now();
    within("disconnect", hubs[0].disconnect(alice)).await.expect("disconnect");
    for (n, subscription) in alices.iter_mut().enumerate() {
        match next_item(subscription, "alice's stream to end").await {
            Some(Err(Error::Revoked)) => {}
            other => panic!("alice's stream on hub {n}: expected Err(Revoked), got {other:?}"),
        }
        assert!(next_item(subscription, "the end").await.is_none(), "alice's stream on hub {n} ends");
    }
    let all_ended = started.elapsed();
    println!("a disconnect ended the user's streams on 3 hubs in {all_ended:?}");
    assert!(all_ended < 5 * WITHIN, "the disconnect took {all_ended:?}");
    // Bob's streams carry on, on every hub.
    let to_bob = event(Audience::User(bob), 0);
    within("publish", hubs[2].publish(to_bob.clone())).await.expect("publish");
    for subscription in &mut bobs {
        assert_eq!(next_event(subscription, "bob's event").await.id(), to_bob.id());
    }
    for hub in &hubs {
        assert_eq!(hub.stats().open_subscriptions, 1, "only bob's left");
    }
}

#[test]
fn a_disconnect_ends_the_users_streams_on_every_hub_of_one_server_and_no_one_elses() {
    let server = RedisServer::start();
    futures::executor::block_on(disconnect_reaches_every_hub(
        server.url(),
        KeyLayout::standalone_with_prefix("sessions").unwrap(),
    ));
}

#[test]
fn a_disconnect_ends_the_users_streams_on_every_hub_of_a_cluster_and_no_one_elses() {
    let cluster = RedisCluster::start(3, 0);
    futures::executor::block_on(disconnect_reaches_every_hub(
        cluster.url(),
        KeyLayout::cluster_with_prefix("sessions").unwrap(),
    ));
}

/// Waits until `hub` reports `expected` open streams for each user and `online` users.
async fn presence_settles(hub: &RedisHub<C>, expected: &HashMap<UserId, usize>, online: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut wrong = Vec::new();
        for (user, count) in expected {
            let got = within("streams_of", hub.streams_of(*user)).await.expect("streams_of");
            if got != *count {
                wrong.push(format!("{user}: {got} (expected {count})"));
            }
        }
        let got_online = within("online_users", hub.online_users()).await.expect("online_users");
        if wrong.is_empty() && got_online == online {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: presence did not settle within 30 s: online {got_online} (expected {online}); {}",
            wrong.join(", ")
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// 1,000 subscriptions of 100 users over three hubs, then half of them dropped: every user's
/// count and the users online are exact, read from any hub; a hub that closes leaves at once.
async fn presence_counts_exactly_across_hubs(url: String, layout: KeyLayout) {
    let hubs = hubs(&url, layout).await;
    let users: Vec<UserId> = (0..100).map(|_| fresh_user()).collect();
    let mut open = Vec::new();
    for n in 0..1_000 {
        let (hub, user) = (n % 3, users[n % 100]);
        let subscription =
            within("subscribe", hubs[hub].subscribe(user, CategorySet::all())).await.expect("subscribe");
        open.push((hub, user, subscription));
    }
    let mut expected: HashMap<UserId, usize> = users.iter().map(|user| (*user, 10)).collect();
    presence_settles(&hubs[0], &expected, 100, "after 1,000 connects").await;

    // Drop every subscription of the first 20 users, and one more of each other user.
    let mut dropped_once = std::collections::HashSet::new();
    open.retain(|(_, user, _)| {
        let gone = users[..20].contains(user) || dropped_once.insert(*user);
        if gone {
            *expected.get_mut(user).unwrap() -= 1;
        }
        !gone
    });
    presence_settles(&hubs[1], &expected, 80, "after dropping 290").await;

    // A hub that closes removes its counts at once: the others' remain.
    let on_closed_hub = |user: &UserId| open.iter().filter(|(hub, u, _)| *hub == 2 && u == user).count();
    for user in &users {
        *expected.get_mut(user).unwrap() -= on_closed_hub(user);
    }
    open.retain(|(hub, _, _)| *hub != 2);
    hubs[2].close();
    let online = expected.values().filter(|count| **count > 0).count();
    presence_settles(&hubs[0], &expected, online, "after a hub closed").await;
}

#[test]
fn presence_counts_exactly_across_hubs_of_one_server() {
    let server = RedisServer::start();
    futures::executor::block_on(presence_counts_exactly_across_hubs(
        server.url(),
        KeyLayout::standalone_with_prefix("presence").unwrap(),
    ));
}

#[test]
fn presence_counts_exactly_across_hubs_of_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    futures::executor::block_on(presence_counts_exactly_across_hubs(
        cluster.url(),
        KeyLayout::cluster_with_prefix("presence").unwrap(),
    ));
}

/// `calls` of one command in `INFO commandstats`, 0 if it never ran.
fn command_calls(server: &RedisServer, command: &str) -> u64 {
    server
        .info_field("commandstats", &format!("cmdstat_{command}"))
        .and_then(|stats| stats.split(',').find_map(|field| field.strip_prefix("calls=")?.parse().ok()))
        .unwrap_or(0)
}

/// A storm of 10,000 subscriptions (1,000 users) on three hubs, then all of them dropped:
/// presence settles with a few script calls per hub, not one per connect or disconnect.
#[test]
fn a_storm_of_ten_thousand_connects_and_disconnects_is_a_few_presence_writes() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hubs = hubs(&server.url(), KeyLayout::standalone_with_prefix("storm").unwrap()).await;
        let users: Vec<UserId> = (0..1_000).map(|_| fresh_user()).collect();
        let scripts_before = command_calls(&server, "evalsha") + command_calls(&server, "eval");
        let started = Instant::now();
        let subscribing = (0..10_000).map(|n| hubs[n % 3].subscribe(users[n % 1_000], CategorySet::all()));
        let open: Vec<_> = within("10,000 subscribes", futures::future::join_all(subscribing)).await;
        let open: Vec<_> = open.into_iter().map(|s| s.expect("subscribe")).collect();
        let some_users: HashMap<UserId, usize> = users.iter().take(3).map(|user| (*user, 10)).collect();
        presence_settles(&hubs[0], &some_users, 1_000, "after the connect storm").await;
        let connected = started.elapsed();
        drop(open);
        presence_settles(&hubs[0], &HashMap::new(), 0, "after the disconnect storm").await;
        let settled = started.elapsed();
        // The queries above are script calls too: two per poll, counted out of the writes.
        let scripts = command_calls(&server, "evalsha") + command_calls(&server, "eval") - scripts_before;
        println!(
            "10,000 connects and 10,000 disconnects over 3 hubs: presence settled after {connected:?} and {settled:?}; \
             {scripts} script calls in all (presence writes and the test's own queries)"
        );
        // One write per hub per quarter second at most, whatever the storm; the queries poll every 50 ms.
        let bound = 3 * (settled.as_millis() as u64 / 250 + 2) + 2 * (settled.as_millis() as u64 / 50 + 2);
        assert!(scripts <= bound, "{scripts} script calls for the storm (bound {bound})");
    });
}

/// A stream given a deadline 500 ms ahead ends then; the reconnect with its last cursor gets
/// exactly what was published meanwhile.
async fn a_stream_ends_at_its_deadline_and_resumes_exactly(url: String, layout: KeyLayout) {
    use futures::StreamExt;
    use ssehub::sse::{EXPIRED_COMMENT, SseOptions};
    use ssehub::{LastEventId, resume};

    let hub = within("connect", RedisHub::<C>::builder(&url).unwrap().key_layout(layout).connect())
        .await
        .expect("connect");
    let user = fresh_user();
    let resumed = within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume");
    let deadline = std::time::SystemTime::now() + Duration::from_millis(500);
    let mut body = resumed.into_sse(SseOptions::new()).with_deadline(deadline).expect("a future deadline");
    assert_eq!(within("the retry frame", body.next()).await.unwrap(), "retry: 3000\n\n");
    within("publish", hub.publish(event(Audience::User(user), 1))).await.expect("publish");
    within("the first frame", body.next()).await.expect("a frame");
    let closing = within("the deadline", body.next()).await.expect("the closing chunk");
    let late = std::time::SystemTime::now().duration_since(deadline).expect("not before the deadline");
    assert_eq!(closing, format!("retry: 250\n\n: {EXPIRED_COMMENT}\n\n"));
    println!("the stream ended {late:?} after its deadline");
    assert!(within("the end", body.next()).await.is_none());
    let last: LastEventId = body.last_sent().expect("a frame went out");

    let missed = event(Audience::User(user), 2);
    within("publish", hub.publish(missed.clone())).await.expect("publish");
    let mut again =
        within("resume", resume(&hub, user, Some(last), CategorySet::all())).await.expect("resume");
    assert_eq!(next_event(&mut again, "the missed event").await.id(), missed.id());
}

#[test]
fn a_stream_ends_at_its_deadline_and_resumes_exactly_on_one_server() {
    let server = RedisServer::start();
    futures::executor::block_on(a_stream_ends_at_its_deadline_and_resumes_exactly(
        server.url(),
        KeyLayout::standalone_with_prefix("deadline").unwrap(),
    ));
}

#[test]
fn a_stream_ends_at_its_deadline_and_resumes_exactly_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    futures::executor::block_on(a_stream_ends_at_its_deadline_and_resumes_exactly(
        cluster.url(),
        KeyLayout::cluster_with_prefix("deadline").unwrap(),
    ));
}
