//! Per-stream cursors on the Redis backend, on one server and on a three-master cluster: exactly once per stream across many reconnects, a stale position gaps its own stream only, a paused master delays only its own streams.
//!
//! The tests take turns: the clusters and the publishers of one would make a
//! busy two-core machine slower for another, and the pause test stops a
//! master of a cluster of its own.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use fred_support::{C, event, eventually, fresh_user, next_item, within};
use futures::executor::block_on;
use redis_server::{RedisCluster, RedisServer};
use ssehub::fred::{KeyLayout, RedisHub, Retention, Subscription};
use ssehub::{
    Audience, Category, CategorySet, Error, Event, EventSource, LastEventId, Position, Positions, Publisher,
    ReplayStatus, Resumed, StreamKind, UserId, resume,
};

/// The event type of the last event of each stream: a client stops once it has its user's and the broadcast one.
const END: &str = "test.end";

/// Where the hubs of a test connect.
#[derive(Clone, Copy)]
enum Target {
    Standalone,
    Cluster,
}

fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0))
}

/// One test at a time.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Target {
    fn url(self) -> String {
        match self {
            Target::Standalone => server().url(),
            Target::Cluster => cluster().url(),
        }
    }

    fn layout(self, prefix: &str) -> KeyLayout {
        match self {
            Target::Standalone => KeyLayout::standalone_with_prefix(prefix).expect("a valid prefix"),
            Target::Cluster => KeyLayout::cluster_with_prefix(prefix).expect("a valid prefix"),
        }
    }
}

async fn connect(url: &str, layout: KeyLayout, retention: Retention) -> RedisHub<C> {
    within(
        "connect",
        RedisHub::builder(url)
            .expect("a valid URL")
            .key_layout(layout)
            .retention(Some(retention))
            // A publish to a paused master waits for it rather than failing.
            .command_timeout(Duration::from_secs(30))
            .connect(),
    )
    .await
    .expect("connect")
}

/// A small deterministic generator, so that a failure replays the same way.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The events one client received, in order.
type Log = Arc<Mutex<Vec<Event<C>>>>;

/// A client of `user` with `filter`: its first connection (made before anything is published), what it received.
struct Client {
    user: UserId,
    filter: CategorySet<C>,
    first: Option<Resumed<C, Subscription<C>>>,
    log: Log,
    /// When each event arrived.
    arrivals: Arc<Mutex<HashMap<ssehub::EventId, chrono::DateTime<chrono::Utc>>>>,
}

impl Client {
    async fn connect(hub: &RedisHub<C>, user: UserId, filter: CategorySet<C>) -> Self {
        let first = within("the first connection", resume(hub, user, None, filter)).await.expect("resume");
        Client { user, filter, first: Some(first), log: Log::default(), arrivals: Arc::default() }
    }

    fn received(&self) -> Vec<Event<C>> {
        self.log.lock().unwrap().clone()
    }

    fn has(&self, event: &Event<C>) -> bool {
        self.log.lock().unwrap().iter().any(|e| e.id() == event.id())
    }

    /// Reads until its user's and the broadcast end marker came. With `reconnects`, it drops its
    /// connection after a few events each time (none, sometimes) and resumes with the cursor it got
    /// to, which must replay completely; without, it stays on its first connection. Every item must
    /// be an event. Returns how often it reconnected.
    async fn run(&mut self, hub: &RedisHub<C>, mut reconnects: Option<Lcg>) -> usize {
        let who = format!("the client of {} with filter {:?}", self.user, self.filter);
        let mut stream = self.first.take().expect("run once");
        let (mut own_end, mut broadcast_end) = (false, false);
        let mut count = 0;
        loop {
            let stay = reconnects.as_mut().map_or(u64::MAX, |rng| rng.below(8));
            let mut taken = 0;
            while taken < stay || stream.cursor().is_none() {
                let event = match next_item(&mut stream, &who).await {
                    Some(Ok(event)) => event,
                    other => panic!("{who}: expected an event after {count} reconnects, got {other:?}"),
                };
                if event.event_type() == END {
                    match event.audience() {
                        Audience::User(_) => own_end = true,
                        Audience::Broadcast | Audience::Group(_) => broadcast_end = true,
                    }
                }
                self.arrivals.lock().unwrap().insert(event.id(), chrono::Utc::now());
                self.log.lock().unwrap().push(event);
                if own_end && broadcast_end {
                    return count;
                }
                taken += 1;
            }
            let cursor = stream.cursor().expect("a cursor after an event");
            drop(stream);
            count += 1;
            stream = within(
                "resume",
                resume(hub, self.user, Some(LastEventId::from(cursor.clone())), self.filter),
            )
            .await
            .unwrap_or_else(|e| panic!("{who}: resuming with {cursor} failed: {e}"));
            assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete), "{who}: resuming with {cursor}");
        }
    }
}

/// Panics unless `got` holds exactly `expected`'s events that pass `filter` and are `user`'s or
/// broadcasts, stream by stream, each in order: no loss, no duplicate.
fn assert_exact_per_stream(
    got: &[Event<C>],
    expected: &[Event<C>],
    user: UserId,
    filter: CategorySet<C>,
    who: &str,
) {
    for kind in StreamKind::ALL {
        let of_kind = |events: &[Event<C>]| -> Vec<String> {
            events
                .iter()
                .filter(|e| StreamKind::of(e.audience()) == kind && e.audience().includes(user))
                .filter(|e| filter.contains(e.category()))
                .map(|e| format!("{} {}", e.id(), e.data()))
                .collect()
        };
        let (got, expected) = (of_kind(got), of_kind(expected));
        if got == expected {
            continue;
        }
        let at = got.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
        let distinct: HashSet<&String> = got.iter().collect();
        panic!(
            "{who}, the {kind} stream: got {} events ({} distinct), expected {}; first difference at #{at}: \
             got {:?}, expected {:?}",
            got.len(),
            distinct.len(),
            expected.len(),
            got.get(at..(at + 3).min(got.len())),
            expected.get(at..(at + 3).min(expected.len())),
        );
    }
}

/// The end marker of `audience`'s stream; its category passes every filter of these tests.
fn end_marker(audience: Audience) -> Event<C> {
    Event::new(audience, END, C::ALL[0], "{}").expect("a valid event type")
}

/// Publishes `events` one after another (each stream's order is this order).
async fn publish_all(hub: &RedisHub<C>, events: &[Event<C>]) {
    for e in events {
        within("publish", hub.publish(e.clone())).await.expect("publish");
    }
}

/// Clients resume with the cursor of their last frame, many times, while three publishers (two
/// users' streams and the broadcasts) publish at once: each client gets every event of its user and
/// every broadcast passing its filter exactly once, each stream in publish order.
fn resuming_with_cursors_is_exactly_once_per_stream(target: Target, prefix: &str) {
    const PER_STREAM: usize = 150;
    let _turn = turn();
    block_on(async {
        let retention = Retention::new(10_000, Duration::from_secs(3600));
        let publisher = connect(&target.url(), target.layout(prefix), retention).await;
        let subscriber = connect(&target.url(), target.layout(prefix), retention).await;
        let (alice, bob) = (fresh_user(), fresh_user());
        let most: CategorySet<C> =
            C::ALL.iter().copied().filter(|c| *c != C::ALL[1] && *c != C::ALL[4]).collect();
        let mut clients = [
            Client::connect(&subscriber, alice, CategorySet::all()).await,
            Client::connect(&subscriber, alice, most).await,
            Client::connect(&subscriber, bob, CategorySet::all()).await,
        ];
        let stream_of = |audience: Audience, base: usize| -> Vec<Event<C>> {
            (0..PER_STREAM).map(|n| event(audience, base + n)).chain([end_marker(audience)]).collect()
        };
        let streams = [
            stream_of(Audience::User(alice), 0),
            stream_of(Audience::User(bob), 1_000),
            stream_of(Audience::Broadcast, 2_000),
        ];
        let publishers =
            futures::future::join_all(streams.iter().map(|events| publish_all(&publisher, events)));
        let readers = futures::future::join_all(
            clients
                .iter_mut()
                .enumerate()
                .map(|(i, client)| client.run(&subscriber, Some(Lcg(17 + i as u64)))),
        );
        let (_, reconnects) = futures::future::join(publishers, readers).await;
        let published: Vec<Event<C>> = streams.concat();
        for (client, reconnects) in clients.iter().zip(&reconnects) {
            assert!(*reconnects >= 20, "the client of {} reconnected {reconnects} times", client.user);
            let who = format!("the client of {} after {reconnects} reconnects", client.user);
            assert_exact_per_stream(&client.received(), &published, client.user, client.filter, &who);
        }
        println!("reconnects per client: {reconnects:?}; {:?}", subscriber.stats());
        assert_eq!(subscriber.stats().skipped, 0);
    });
}

#[test]
fn resuming_with_cursors_is_exactly_once_per_stream_over_many_reconnects_on_one_server() {
    resuming_with_cursors_is_exactly_once_per_stream(Target::Standalone, "exact");
}

#[test]
fn resuming_with_cursors_is_exactly_once_per_stream_over_many_reconnects_on_a_cluster() {
    resuming_with_cursors_is_exactly_once_per_stream(Target::Cluster, "exact");
}

/// A cursor whose position in `stale` was trimmed away (history of 5 events) while the other
/// stream's is retained: the replay says so for that stream only, and `resume` yields one gap,
/// naming that stream, then the retained events of both streams exactly, then live events.
fn a_trimmed_position_gaps_its_own_stream_only(target: Target, prefix: &str, stale: StreamKind) {
    const KEPT: usize = 5;
    let _turn = turn();
    block_on(async {
        let retention = Retention::new(KEPT as u64, Duration::from_secs(3600)).exact_trimming(true);
        let hub = connect(&target.url(), target.layout(prefix), retention).await;
        let user = fresh_user();
        let audience_of = |kind: StreamKind| match kind {
            StreamKind::Own => Audience::User(user),
            _ => Audience::Broadcast,
        };
        let (stale_audience, kept_audience) = match stale {
            StreamKind::Own => (audience_of(StreamKind::Own), Audience::Broadcast),
            _ => (Audience::Broadcast, audience_of(StreamKind::Own)),
        };
        let mut client = Client::connect(&hub, user, CategorySet::all()).await;
        let mut first = client.first.take().expect("the first connection");
        let seen = [event(stale_audience, 0), event(kept_audience, 1)];
        publish_all(&hub, &seen).await;
        for _ in 0..seen.len() {
            match next_item(&mut first, "the first connection").await {
                Some(Ok(e)) if seen.contains(&e) => {}
                other => panic!("expected one of the first two events, got {other:?}"),
            }
        }
        let cursor = first.cursor().expect("a cursor after two events");
        drop(first);

        let trimmed: Vec<Event<C>> = (2..2 + 3 * KEPT).map(|n| event(stale_audience, n)).collect();
        let kept: Vec<Event<C>> = (100..100 + KEPT - 2).map(|n| event(kept_audience, n)).collect();
        publish_all(&hub, &trimmed).await;
        publish_all(&hub, &kept).await;
        let positions = cursor.positions_for(user).expect("the user's own cursor");
        let replay = within("missed_since", hub.missed_since(user, positions.clone(), CategorySet::all()))
            .await
            .expect("missed_since");
        let other = if stale == StreamKind::Own { StreamKind::Broadcast } else { StreamKind::Own };
        assert_eq!(replay.stream(stale).status, ReplayStatus::Truncated, "the {stale} stream's status");
        assert_eq!(replay.stream(other).status, ReplayStatus::Complete, "the {other} stream's status");
        let retained: Vec<Event<C>> = trimmed[trimmed.len() - KEPT..].iter().chain(&kept).cloned().collect();
        assert_exact_per_stream(&replay.events, &retained, user, CategorySet::all(), "missed_since");
        assert!(replay.events.iter().all(|e| e.position().is_some_and(|p| p.as_entry().is_some())));

        let mut resumed =
            within("resume", resume(&hub, user, Some(cursor.clone().into()), CategorySet::all()))
                .await
                .expect("resume");
        assert_eq!(resumed.replay_status(), Some(ReplayStatus::Truncated));
        match next_item(&mut resumed, "the gap").await {
            Some(Err(Error::Gap { stream: Some(kind), last_delivered })) if kind == stale => {
                assert_eq!(last_delivered, Some(cursor.event_id()));
            }
            other => panic!("expected a gap of the {stale} stream first, got {other:?}"),
        }
        let live = [event(stale_audience, 200), event(kept_audience, 201)];
        publish_all(&hub, &live).await;
        let expected: Vec<Event<C>> = retained.iter().chain(&live).cloned().collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match next_item(&mut resumed, "the replayed and live events").await {
                Some(Ok(e)) => got.push(e),
                other => panic!("after the gap, expected events only, got {other:?} after {got:?}"),
            }
        }
        assert_exact_per_stream(&got, &expected, user, CategorySet::all(), "after the gap");
    });
}

#[test]
fn a_trimmed_own_position_gaps_the_own_stream_only_on_one_server() {
    a_trimmed_position_gaps_its_own_stream_only(Target::Standalone, "stale-own", StreamKind::Own);
}

#[test]
fn a_trimmed_broadcast_position_gaps_the_broadcast_stream_only_on_one_server() {
    a_trimmed_position_gaps_its_own_stream_only(Target::Standalone, "stale-broadcast", StreamKind::Broadcast);
}

#[test]
fn a_trimmed_own_position_gaps_the_own_stream_only_on_a_cluster() {
    a_trimmed_position_gaps_its_own_stream_only(Target::Cluster, "stale-own", StreamKind::Own);
}

#[test]
fn a_trimmed_broadcast_position_gaps_the_broadcast_stream_only_on_a_cluster() {
    a_trimmed_position_gaps_its_own_stream_only(Target::Cluster, "stale-broadcast", StreamKind::Broadcast);
}

/// A stopped process (`SIGSTOP`, by its pid), continued when this is dropped.
struct Stopped(u32);

fn signal(pid: u32, signal: &str) {
    let pid = pid.to_string();
    let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

impl Stopped {
    fn stop(server: &RedisServer) -> Self {
        let pid = server.pid().expect("a running server");
        signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// The master holding the broadcast stream is stopped for 3 s while users whose streams live on
/// the other masters get events: those reach the clients during the pause (before a broadcast
/// published once the pause began), and afterwards every client's log is exact, stream by stream.
#[test]
fn a_stopped_broadcast_master_delays_only_the_broadcasts_on_a_cluster() {
    const PAUSE: Duration = Duration::from_secs(3);
    const DURING: usize = 25;
    let _turn = turn();
    let cluster = RedisCluster::start(3, 0);
    // The other masters keep serving their slots while one is marked failed.
    for port in cluster.master_ports() {
        cluster.node(port).command(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]).expect_ok();
    }
    let layout = KeyLayout::cluster_with_prefix("pause").unwrap();
    let broadcast_master = cluster.master_for_key(&layout.stream(Audience::Broadcast));
    // One user on each of the other masters.
    let mut users: Vec<UserId> = Vec::new();
    while users.len() < 2 {
        let user = fresh_user();
        let master = cluster.master_for_key(&layout.stream(Audience::User(user)));
        let taken: Vec<u16> =
            users.iter().map(|u| cluster.master_for_key(&layout.stream(Audience::User(*u)))).collect();
        if master != broadcast_master && !taken.contains(&master) {
            users.push(user);
        }
    }
    block_on(async {
        let retention = Retention::new(10_000, Duration::from_secs(3600));
        let publisher = connect(&cluster.url(), layout.clone(), retention).await;
        let subscriber = connect(&cluster.url(), layout.clone(), retention).await;
        let mut clients = Vec::new();
        for user in &users {
            for _ in 0..2 {
                clients.push(Client::connect(&subscriber, *user, CategorySet::all()).await);
            }
        }
        let logs: Vec<(UserId, Log)> = clients.iter().map(|c| (c.user, Arc::clone(&c.log))).collect();
        let all_have = |event: &Event<C>| {
            logs.iter()
                .filter(|(user, _)| event.audience().includes(*user))
                .all(|(_, log)| log.lock().unwrap().iter().any(|e| e.id() == event.id()))
        };
        let mut published: Vec<Event<C>> = Vec::new();

        let driver = async {
            let mut n = 0;
            let mut next = |audience: Audience| {
                n += 1;
                event(audience, n)
            };
            let every_stream: Vec<Audience> =
                users.iter().map(|u| Audience::User(*u)).chain([Audience::Broadcast]).collect();
            let before: Vec<Event<C>> = every_stream.iter().map(|a| next(*a)).collect();
            publish_all(&publisher, &before).await;
            eventually("every client has the events of before the pause", || before.iter().all(all_have))
                .await;
            published.extend(before);
            // As many user events as during the pause, the same way: their latency is the usual one.
            // Each made just before it is published: its `occurred_at` is its publish instant.
            let mut calm: Vec<Event<C>> = Vec::new();
            for user in (0..DURING).flat_map(|_| users.clone()) {
                let e = next(Audience::User(user));
                publish_all(&publisher, std::slice::from_ref(&e)).await;
                eventually("a user event delivered with every master up", || all_have(&e)).await;
                calm.push(e);
            }
            published.extend(calm.iter().cloned());

            let paused_broadcast = next(Audience::Broadcast);
            let during_users: Vec<UserId> = (0..DURING).flat_map(|_| users.clone()).collect();
            let mut during: Vec<Event<C>> = Vec::new();
            let stopped = Stopped::stop(cluster.node(broadcast_master));
            // The fault lasts PAUSE; the thread ends it.
            let resume_later = std::thread::spawn(move || {
                std::thread::sleep(PAUSE);
                drop(stopped);
            });
            let broadcast_publish = publisher.publish(paused_broadcast.clone());
            let user_events = async {
                // One at a time, each waited for: a delivery held behind the stopped master would show.
                for user in &during_users {
                    let e = next(Audience::User(*user));
                    publish_all(&publisher, std::slice::from_ref(&e)).await;
                    eventually("a user event delivered while the broadcast master is stopped", || {
                        all_have(&e)
                    })
                    .await;
                    during.push(e);
                }
            };
            let (stored, ()) = futures::future::join(broadcast_publish, user_events).await;
            stored.expect("the broadcast published while its master was stopped");
            resume_later.join().expect("continue the master");
            eventually("every client has the broadcast of the pause", || all_have(&paused_broadcast)).await;
            published.push(paused_broadcast.clone());
            published.extend(during.iter().cloned());

            let after: Vec<Event<C>> = every_stream
                .iter()
                .map(|a| next(*a))
                .chain(every_stream.iter().map(|a| end_marker(*a)))
                .collect();
            publish_all(&publisher, &after).await;
            published.extend(after);
            (paused_broadcast, during, calm)
        };
        let readers =
            futures::future::join_all(clients.iter_mut().map(|client| client.run(&subscriber, None)));
        let ((paused_broadcast, during, calm), _) = futures::future::join(driver, readers).await;

        // Publish-to-client latency of the user events, every master up and with the broadcast
        // master stopped: printed for the record (the assertion is the order, below).
        let latencies = |events: &[Event<C>]| -> Vec<f64> {
            let mut micros: Vec<f64> = clients
                .iter()
                .flat_map(|client| {
                    let arrivals = client.arrivals.lock().unwrap().clone();
                    events
                        .iter()
                        .filter(|e| e.audience().includes(client.user))
                        .map(move |e| {
                            (arrivals[&e.id()] - e.occurred_at()).num_microseconds().unwrap() as f64
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            micros.sort_by(f64::total_cmp);
            micros
        };
        let quantile = |sorted: &[f64], q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let (calm, paused) = (latencies(&calm), latencies(&during));
        println!(
            "{{\"deliveries\":{},\"calm_p50_us\":{:.0},\"calm_p99_us\":{:.0},\"calm_max_us\":{:.0},\"paused_p50_us\":{:.0},\"paused_p99_us\":{:.0},\"paused_max_us\":{:.0}}}",
            paused.len(),
            quantile(&calm, 0.5),
            quantile(&calm, 0.99),
            calm[calm.len() - 1],
            quantile(&paused, 0.5),
            quantile(&paused, 0.99),
            paused[paused.len() - 1],
        );

        for client in &clients {
            let who = format!("the client of {}", client.user);
            let got = client.received();
            assert_exact_per_stream(&got, &published, client.user, CategorySet::all(), &who);
            // The events of the pause came before the broadcast published when it began: they did not
            // wait for the stopped master.
            let at = |event: &Event<C>| got.iter().position(|e| e.id() == event.id());
            let broadcast_at = at(&paused_broadcast).expect("the broadcast of the pause");
            for e in during.iter().filter(|e| e.audience().includes(client.user)) {
                assert!(
                    at(e).expect("every event of the pause") < broadcast_at,
                    "{who}: {} came after the broadcast published when the pause began: {:?}",
                    e.id(),
                    got.iter().map(|e| e.id()).collect::<Vec<_>>()
                );
            }
            assert!(client.has(&paused_broadcast));
        }
        let stats = subscriber.stats();
        println!("{stats:?}");
        assert_eq!((stats.skipped, stats.gaps), (0, 0), "nothing skipped, no gap");
    });
}

/// Positions "after this event": a plain event UUID's (both streams after it, found in the broadcast
/// stream) and one stream's alone; each stream replays what followed the event, and a stream without a
/// position replays nothing but says where it ends.
#[test]
fn a_position_after_an_event_resumes_after_that_event_on_one_server_and_a_cluster() {
    let _turn = turn();
    for target in [Target::Standalone, Target::Cluster] {
        block_on(async {
            let hub = connect(&target.url(), target.layout("after-event"), Retention::default()).await;
            let user = fresh_user();
            let events: Vec<Event<C>> =
                (0..6)
                    .map(|n| {
                        if n % 2 == 0 {
                            event(Audience::User(user), n)
                        } else {
                            event(Audience::Broadcast, n)
                        }
                    })
                    .collect();
            publish_all(&hub, &events).await;
            // After the second event (a broadcast) in both streams; after the third in the user's stream only.
            for (positions, from) in [
                (Positions::after_event(events[1].id()), 2),
                (Positions { own: Some(Position::AfterEvent(events[2].id())), ..Positions::NONE }, 3),
            ] {
                let replay =
                    within("missed_since", hub.missed_since(user, positions.clone(), CategorySet::all()))
                        .await
                        .expect("missed_since");
                let expected: Vec<Event<C>> = events[from..]
                    .iter()
                    .filter(|e| positions.get(StreamKind::of(e.audience())).is_some())
                    .cloned()
                    .collect();
                assert_exact_per_stream(
                    &replay.events,
                    &expected,
                    user,
                    CategorySet::all(),
                    "after an event",
                );
                assert_eq!(replay.own.status, ReplayStatus::Complete);
                assert_eq!(replay.broadcast.status, ReplayStatus::Complete);
                assert!(replay.broadcast.end.is_some_and(|end| end.as_entry().is_some()));
            }
        });
    }
}

/// Publishes `event` as another writer does: its envelope stored with `XADD *` and published
/// without an entry id, so subscribers get it without a position in its stream.
fn publish_as_another_writer(target: Target, layout: &KeyLayout, event: &Event<C>, user: UserId) {
    let (stream, channel) = (layout.stream(event.audience()), layout.channel(event.audience()));
    let envelope = fred_support::stream_entry_of(event, user);
    let (node, publish) = match target {
        Target::Standalone => (server(), "PUBLISH"),
        Target::Cluster => (cluster().node(cluster().master_for_key(&stream)), "SPUBLISH"),
    };
    let added = node.command(&["XADD", &stream, "*", "event", &envelope]);
    assert!(!added.is_error(), "{added}");
    let published = node.command(&[publish, &channel, &envelope]);
    assert!(!published.is_error(), "{published}");
}

/// A user's events published by another writer come live without an entry (a position "after this
/// event"); a client resuming with a cursor holding such a position gets the rest of that stream
/// exactly, found by the event's id, and the broadcasts after their entry.
fn events_of_another_writer_resume_by_their_id(target: Target) {
    let _turn = turn();
    block_on(async {
        let layout = target.layout("another-writer");
        let hub = connect(&target.url(), layout.clone(), Retention::default()).await;
        let user = fresh_user();
        let mut client = Client::connect(&hub, user, CategorySet::all()).await;
        let mut first = client.first.take().expect("the first connection");
        let own: Vec<Event<C>> = (0..6).map(|n| event(Audience::User(user), n)).collect();
        let broadcasts: Vec<Event<C>> = (10..14).map(|n| event(Audience::Broadcast, n)).collect();
        publish_as_another_writer(target, &layout, &own[0], user);
        publish_all(&hub, &broadcasts[..1]).await;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match next_item(&mut first, "the first connection").await {
                Some(Ok(e)) => seen.push(e),
                other => panic!("expected events, got {other:?}"),
            }
        }
        let mine = seen.iter().find(|e| e.id() == own[0].id()).expect("the other writer's event");
        assert_eq!(mine.position(), Some(Position::AfterEvent(own[0].id())));
        let theirs = seen.iter().find(|e| e.id() == broadcasts[0].id()).expect("the broadcast");
        assert!(theirs.position().is_some_and(|p| p.as_entry().is_some()), "{theirs:?}");
        let cursor = first.cursor().expect("a cursor");
        drop(first);

        for e in &own[1..4] {
            publish_as_another_writer(target, &layout, e, user);
        }
        publish_all(&hub, &broadcasts[1..3]).await;
        let mut resumed = within("resume", resume(&hub, user, Some(cursor.into()), CategorySet::all()))
            .await
            .expect("resume");
        assert_eq!(resumed.replay_status(), Some(ReplayStatus::Complete));
        for e in &own[4..] {
            publish_as_another_writer(target, &layout, e, user);
        }
        publish_all(&hub, &broadcasts[3..]).await;
        let expected: Vec<Event<C>> = own[1..].iter().chain(&broadcasts[1..]).cloned().collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match next_item(&mut resumed, "the replayed and live events").await {
                Some(Ok(e)) => got.push(e),
                other => panic!("expected events only, got {other:?} after {got:?}"),
            }
        }
        assert_exact_per_stream(&got, &expected, user, CategorySet::all(), "after another writer's event");
    });
}

#[test]
fn events_of_another_writer_resume_by_their_id_on_one_server() {
    events_of_another_writer_resume_by_their_id(Target::Standalone);
}

#[test]
fn events_of_another_writer_resume_by_their_id_on_a_cluster() {
    events_of_another_writer_resume_by_their_id(Target::Cluster);
}
