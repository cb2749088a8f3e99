//! The Redis backend under the faults a server meets: lost replies, a restart, an output-buffer disconnect, `maxmemory`, a pause.
//!
//! Each test runs publishers and one reader per subscribed user on a tokio
//! runtime against a private `redis-server`, causes its fault, and checks
//! with `delivery_check::verify` that every publish that succeeded was
//! delivered exactly once, in order, or lies inside a gap signal, and reads
//! the streams back to check that nothing was stored twice. Nothing waits on
//! a clock for ordering: phases end when the test has seen what it checks,
//! and readers stop at end markers published after everything else.

use crate::support as fred_support;
use crate::support::delivery_check;
use ssehub_harness::redis_server;
use ssehub_harness::reply_cutter;
use ssehub_harness::wait::eventually_for;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delivery_check::{PublishLog, Published, ReceiveLog, Received, Verdict};
use fred_support::{C, builder, event, fresh_user};
use redis_server::{RedisCluster, RedisServer};
use reply_cutter::ReplyCutter;
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, Category, CategorySet, Event, EventId, EventSource, Publisher, UserId};

/// The longest a test waits for one phase (the fault's effect, delivery resuming).
const PHASE_WAIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The `n`th event for `audience` with `pad` bytes of padding in its data.
fn padded_event(audience: Audience, n: usize, pad: usize) -> Event<C> {
    let category = C::ALL[n % C::ALL.len()];
    let data = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(pad));
    Event::new(audience, "test.event", category, data).unwrap()
}

/// The audience of the `n`th event of a run over `users`: every fifth a broadcast.
fn audience_of(users: &[UserId], n: usize) -> Audience {
    if n % 5 == 4 { Audience::Broadcast } else { Audience::User(users[n % users.len()]) }
}

/// Subscribed users, their readers, and what was published and received.
struct Run {
    users: Vec<UserId>,
    published: PublishLog,
    received: HashMap<UserId, ReceiveLog>,
    readers: Vec<(UserId, tokio::task::JoinHandle<()>)>,
    stop_publishing: Arc<AtomicBool>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
}

impl Run {
    /// Subscribes `count` fresh users on `hub`, each with a reader recording what it yields.
    async fn subscribe(hub: &RedisHub<C>, count: usize) -> Self {
        let users: Vec<UserId> = (0..count).map(|_| fresh_user()).collect();
        let mut received = HashMap::new();
        let mut readers = Vec::new();
        for user in &users {
            let subscription = hub.subscribe(*user, CategorySet::all()).await.expect("subscribe");
            let log: ReceiveLog = Arc::default();
            received.insert(*user, Arc::clone(&log));
            readers.push((*user, tokio::spawn(delivery_check::record_until_end_markers(subscription, log))));
        }
        Run {
            users,
            published: Arc::default(),
            received,
            readers,
            stop_publishing: Arc::default(),
            publishers: Vec::new(),
        }
    }

    /// Starts a publisher that publishes one event after another (every fifth a broadcast), `every` apart.
    fn start_publisher(&mut self, hub: &RedisHub<C>, every: Duration) {
        let (hub, users) = (hub.clone(), self.users.clone());
        let (stop, published) = (Arc::clone(&self.stop_publishing), Arc::clone(&self.published));
        self.publishers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                delivery_check::publish_recorded(&hub, &published, event(audience_of(&users, n), n)).await;
                n += 1;
                tokio::time::sleep(every).await;
            }
        }));
    }

    /// Starts a publisher like [`start_publisher`](Run::start_publisher) that publishes each event
    /// again after a failure until it is accepted, recording every failed try in `failed`.
    fn start_retrying_publisher(&mut self, hub: &RedisHub<C>, every: Duration, failed: PublishLog) {
        let (hub, users) = (hub.clone(), self.users.clone());
        let (stop, published) = (Arc::clone(&self.stop_publishing), Arc::clone(&self.published));
        self.publishers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let e = event(audience_of(&users, n), n);
                while !delivery_check::publish_recorded(&hub, &failed, e.clone()).await {}
                // The accepted try is the publish that counts.
                let accepted = failed.lock().unwrap().pop().unwrap();
                published.lock().unwrap().push(accepted);
                n += 1;
                tokio::time::sleep(every).await;
            }
        }));
    }

    fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }

    fn log(&self, user: UserId) -> Vec<Received> {
        self.received[&user].lock().unwrap().clone()
    }

    /// Publishes that started at or after `since` and ended as `ok` says.
    fn publishes_since(&self, since: Instant, ok: bool) -> usize {
        self.published().iter().filter(|p| p.started >= since && p.ok == ok).count()
    }

    /// Whether every user received an event of its own published successfully after `since`.
    fn each_received_one_published_after(&self, since: Instant) -> bool {
        let published = self.published();
        self.users.iter().all(|user| {
            self.log(*user).iter().any(|r| {
                matches!(r, Received::Event(id, Audience::User(_))
                    if published.iter().any(|p| p.id == *id && p.ok && p.started >= since))
            })
        })
    }

    /// Stops the publishers, publishes the end markers, waits for every reader, and checks the strict rule.
    async fn finish(&mut self, hub: &RedisHub<C>) -> Verdict {
        self.stop_publishing.store(true, Ordering::SeqCst);
        for task in self.publishers.drain(..) {
            task.await.unwrap();
        }
        delivery_check::publish_end_markers(hub, &self.users).await;
        for (user, reader) in std::mem::take(&mut self.readers) {
            match tokio::time::timeout(PHASE_WAIT, reader).await {
                Ok(joined) => joined.unwrap(),
                Err(_) => panic!("{user} did not receive its end markers: {:?}", self.log(user)),
            }
        }
        delivery_check::verify(&self.users, &self.published(), |user| self.log(user))
    }

    /// Reads every audience's stream back: each event stored once, and every successful
    /// publish that started at or after `since` stored, but those in `unretained` (published
    /// without retention). Returns the refused publishes stored anyway.
    fn check_streams(
        &self,
        server: &RedisServer,
        layout: &KeyLayout,
        since: Instant,
        unretained: &HashSet<EventId>,
    ) -> usize {
        let published = self.published();
        let audiences = self.users.iter().map(|u| Audience::User(*u)).chain([Audience::Broadcast]);
        let mut refused_but_stored = 0;
        for audience in audiences {
            let stream = layout.stream(audience);
            let stored = delivery_check::stored_event_ids(&server.command(&["XRANGE", &stream, "-", "+"]));
            delivery_check::assert_stored_once(&stored, &stream);
            let checked = published.iter().filter(|p| p.audience == audience && !unretained.contains(&p.id));
            for p in checked.filter(|p| p.started >= since) {
                let is_stored = stored.contains(&p.id);
                assert!(!p.ok || is_stored, "{stream}: the accepted event {} is not stored", p.id);
                refused_but_stored += usize::from(!p.ok && is_stored);
            }
        }
        refused_but_stored
    }
}

/// Publishes `e` until a publish of it succeeds (at most 5 tries); returns how many tries failed.
async fn publish_until_accepted(hub: &RedisHub<C>, published: &Mutex<Vec<Published>>, e: Event<C>) -> usize {
    let started = Instant::now();
    for failures in 0..5 {
        if hub.publish(e.clone()).await.is_ok() {
            let finished = Instant::now();
            let record = Published { id: e.id(), audience: e.audience(), started, finished, ok: true };
            published.lock().unwrap().push(record);
            return failures;
        }
    }
    panic!("event {} was refused 5 times", e.id());
}

#[test]
fn a_publish_whose_reply_is_lost_is_stored_and_delivered_once() {
    const ONE_BY_ONE: usize = 100;
    const BURSTS: usize = 10;
    let server = RedisServer::start();
    let proxy = ReplyCutter::start(server.port());
    let layout = KeyLayout::standalone_with_prefix("lost").unwrap();
    runtime().block_on(async {
        let hub = builder(&proxy.url(), "lost").connect().await.expect("connect");
        let mut run = Run::subscribe(&hub, 4).await;
        let mut armed = 0;
        let mut caller_retries = 0;
        // One event per script: every tenth script's reply is lost.
        for n in 0..ONE_BY_ONE {
            if n % 10 == 3 {
                proxy.cut_next_script_replies(1);
                armed += 1;
            }
            let e = event(audience_of(&run.users, n), n);
            caller_retries += publish_until_accepted(&hub, &run.published, e).await;
        }
        // Bursts of one event per audience at once, batched into one script whose reply is lost.
        let audiences: Vec<Audience> =
            run.users.iter().map(|u| Audience::User(*u)).chain([Audience::Broadcast]).collect();
        for burst in 0..BURSTS {
            proxy.cut_next_script_replies(1);
            armed += 1;
            let publishes = audiences.iter().map(|a| {
                publish_until_accepted(&hub, &run.published, event(*a, ONE_BY_ONE + burst))
            });
            caller_retries += futures::future::join_all(publishes).await.iter().sum::<usize>();
        }
        assert_eq!(proxy.armed(), 0, "every armed cut met its script");
        assert_eq!(proxy.cuts(), armed, "every armed cut dropped a reply");
        let verdict = run.finish(&hub).await;
        println!(
            "{armed} script replies lost; the caller published again {caller_retries} times; {verdict:?}; {:?}",
            hub.stats()
        );
        assert_eq!(verdict.events_delivered, verdict.events_expected, "every event delivered");
        assert_eq!(verdict.covered_by_gap, 0);
        assert!(verdict.events_expected > ONE_BY_ONE);
        run.check_streams(&server, &layout, Instant::now() - Duration::from_secs(3600), &HashSet::new());
    });
}

#[test]
fn publishing_an_event_again_stores_and_delivers_it_once_on_both_layouts() {
    let server = RedisServer::start();
    let cluster = RedisCluster::start(3, 0);
    let hubs = [
        (server.url(), KeyLayout::standalone_with_prefix("again").unwrap()),
        (cluster.url(), KeyLayout::cluster_with_prefix("again").unwrap()),
    ];
    runtime().block_on(async {
        for (url, layout) in hubs {
            let hub: RedisHub<C> =
                RedisHub::builder(&url).unwrap().key_layout(layout.clone()).connect().await.expect("connect");
            let mut run = Run::subscribe(&hub, 2).await;
            for n in 0..20 {
                let mut e = event(audience_of(&run.users, n), n);
                if n % 2 == 1 {
                    // An id that is not a UUIDv7 (another publisher's kind): on the standalone layout its
                    // marker is a key of its own, where a UUIDv7's is a field of its second's hash.
                    let name = format!("{}-{n}", run.users[0]);
                    let id =
                        EventId::from_uuid(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()));
                    e = Event::from_parts(
                        id,
                        e.audience(),
                        e.event_type(),
                        e.category(),
                        e.data(),
                        e.occurred_at(),
                    )
                    .expect("a valid event");
                }
                // The same event, twice in a row and twice at once: each time stored and delivered once.
                delivery_check::publish_recorded(&hub, &run.published, e.clone()).await;
                hub.publish(e.clone()).await.expect("publishing an event again succeeds");
                let (a, b) = futures::join!(hub.publish(e.clone()), hub.publish(e.clone()));
                a.and(b).expect("publishing an event again succeeds");
            }
            let verdict = run.finish(&hub).await;
            println!("{layout:?}: {verdict:?}");
            assert_eq!(verdict.events_delivered, verdict.events_expected);
            // Per user: its 8 events and the 4 broadcasts.
            assert_eq!(verdict.events_expected, 2 * (8 + 4));
            let audiences = run.users.iter().map(|u| Audience::User(*u)).chain([Audience::Broadcast]);
            for audience in audiences {
                let stream = layout.stream(audience);
                let node = if layout.pubsub_kind() == ssehub::fred::PubSubKind::Sharded {
                    cluster.node(cluster.master_for_key(&stream))
                } else {
                    &server
                };
                let stored = delivery_check::stored_event_ids(&node.command(&["XRANGE", &stream, "-", "+"]));
                delivery_check::assert_stored_once(&stored, &stream);
                let expected: Vec<EventId> =
                    run.published().iter().filter(|p| p.audience == audience).map(|p| p.id).collect();
                // The end marker is stored last.
                assert_eq!(&stored[..stored.len() - 1], &expected[..], "{stream}");
            }
        }
    });
}

#[test]
fn a_restart_while_publishing_stores_each_accepted_event_and_signals_what_the_restart_lost() {
    let server = RedisServer::start();
    let layout = KeyLayout::standalone_with_prefix("restart").unwrap();
    runtime().block_on(async {
        let hub = builder(&server.url(), "restart")
            .command_timeout(Duration::from_millis(500))
            .connect()
            .await
            .expect("connect");
        let mut run = Run::subscribe(&hub, 4).await;
        let begun = Instant::now();
        run.start_publisher(&hub, Duration::from_millis(5));
        eventually_for(PHASE_WAIT, "delivery before the restart", || run.each_received_one_published_after(begun)).await;

        server.kill();
        let killed = Instant::now();
        eventually_for(PHASE_WAIT, "publishes refused while the server is down", || run.publishes_since(killed, false) >= 3).await;
        let restarted_from = Instant::now();
        server.restart();
        eventually_for(PHASE_WAIT, "publishes accepted after the restart", || run.publishes_since(restarted_from, true) >= 20).await;
        let restarted = Instant::now();
        eventually_for(PHASE_WAIT, "delivery after the restart", || run.each_received_one_published_after(restarted)).await;
        let verdict = run.finish(&hub).await;
        let refused_but_stored = run.check_streams(&server, &layout, killed, &HashSet::new());
        println!(
            "restart: {} publishes refused; {refused_but_stored} of them stored all the same; {verdict:?}; {:?}",
            verdict.failed_publishes,
            hub.stats()
        );
        assert!(verdict.failed_publishes >= 3);
        for user in &run.users {
            assert!(verdict.gaps_by_user[user] >= 1, "{user}: the restart lost data, so a gap is signalled");
        }
    });
}

#[test]
fn a_subscriber_connection_dropped_for_its_output_buffer_is_recovered_from_the_streams() {
    const BURSTS: usize = 12;
    const USERS: usize = 24;
    let server = RedisServer::start();
    // Redis drops a subscriber whose pending output passes 16 KiB beyond its 16 KiB reply buffer:
    // one script publishing a burst of 24 events of 3 KiB each does.
    server.command(&["CONFIG", "SET", "client-output-buffer-limit", "pubsub 16kb 0 0"]).expect_ok();
    let layout = KeyLayout::standalone_with_prefix("obuf").unwrap();
    runtime().block_on(async {
        let hub = builder(&server.url(), "obuf").connect().await.expect("connect");
        let mut run = Run::subscribe(&hub, USERS).await;
        // Slow subscribers on top: each of them takes a while over every event.
        let mut slow = Vec::new();
        for user in run.users.iter().take(4) {
            let mut subscription = hub.subscribe(*user, CategorySet::all()).await.expect("subscribe");
            slow.push(tokio::spawn(async move {
                use futures::StreamExt;
                let mut count = 0usize;
                while let Some(item) = subscription.next().await {
                    if matches!(&item, Ok(e) if e.event_type() == delivery_check::END_MARKER) {
                        break;
                    }
                    count += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                count
            }));
        }
        let audiences: Vec<Audience> = run.users.iter().map(|u| Audience::User(*u)).collect();
        // Redis 7.0 counts these disconnections nowhere but in its log.
        let disconnections = || server.log_tail().matches("overcoming of output buffer limits").count();
        let deadline = Instant::now() + PHASE_WAIT;
        let mut bursts = 0;
        // At least BURSTS bursts, and on until Redis has dropped the subscriber connection.
        while bursts < BURSTS || disconnections() == 0 {
            assert!(
                Instant::now() < deadline,
                "Redis never dropped the subscriber connection for its output buffer"
            );
            // One event per user at once: they queue together and go to Redis as one or a few scripts.
            let publishes = audiences.iter().map(|a| {
                delivery_check::publish_recorded(&hub, &run.published, padded_event(*a, bursts, 3 * 1024))
            });
            for ok in futures::future::join_all(publishes).await {
                assert!(ok, "publishing while the subscriber connection is dropped succeeds");
            }
            bursts += 1;
        }
        let disconnections = disconnections();
        let verdict = run.finish(&hub).await;
        for task in slow {
            let count = tokio::time::timeout(PHASE_WAIT, task).await.expect("a slow reader ends").unwrap();
            assert!(count >= BURSTS, "a slow subscriber got {count} events");
        }
        let stats = hub.stats();
        println!("{disconnections} output-buffer disconnections in {bursts} bursts; {verdict:?}; {stats:?}");
        assert!(stats.reconnects > 0 && stats.recovered > 0, "{stats:?}");
        assert_eq!(verdict.covered_by_gap, 0, "everything missed is recovered from the streams");
        assert_eq!(verdict.events_delivered, verdict.events_expected);
        run.check_streams(&server, &layout, Instant::now() - Duration::from_secs(3600), &HashSet::new());
    });
}

#[test]
fn at_maxmemory_publish_fails_clearly_stores_nothing_and_resumes_when_memory_frees() {
    let server = RedisServer::start();
    let layout = KeyLayout::standalone_with_prefix("oom").unwrap();
    runtime().block_on(async {
        let hub = builder(&server.url(), "oom").connect().await.expect("connect");
        // A hub without retention, on the same channels: its plain PUBLISH needs no memory.
        let live_only = builder(&server.url(), "oom").retention(None).connect().await.expect("connect");
        let mut run = Run::subscribe(&hub, 3).await;
        let record = |hub: &RedisHub<C>, e: Event<C>| {
            let published = Arc::clone(&run.published);
            let hub = hub.clone();
            async move { delivery_check::publish_recorded(&hub, &published, e).await }
        };
        for n in 0..10 {
            assert!(record(&hub, event(audience_of(&run.users, n), n)).await);
        }
        // A filler value, then a limit just below what Redis then uses: every write is refused until it goes.
        server.command(&["SET", "oom:filler", &"x".repeat(1024 * 1024)]).expect_ok();
        let used: u64 = server.info_field("memory", "used_memory").unwrap().parse().unwrap();
        server.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]).expect_ok();
        server.command(&["CONFIG", "SET", "maxmemory", &(used - 64 * 1024).to_string()]).expect_ok();
        let lengths = |run: &Run| -> Vec<i64> {
            run.users
                .iter()
                .map(|u| Audience::User(*u))
                .chain([Audience::Broadcast])
                .map(|a| server.command(&["XLEN", &layout.stream(a)]).as_int().unwrap())
                .collect()
        };
        let before = lengths(&run);

        // One at a time and all at once (a batch): each refused with Redis's reason, none stored or delivered.
        let one = event(Audience::User(run.users[0]), 100);
        let error = hub.publish(one.clone()).await.expect_err("a publish at maxmemory fails");
        println!("a publish at maxmemory: {error}");
        assert!(error.to_string().contains("OOM"), "the error says why: {error}");
        run.published.lock().unwrap().push(Published {
            id: one.id(),
            audience: one.audience(),
            started: Instant::now(),
            finished: Instant::now(),
            ok: false,
        });
        let burst = (0..10).map(|n| record(&hub, event(audience_of(&run.users, n), 200 + n)));
        assert!(
            futures::future::join_all(burst).await.iter().all(|ok| !ok),
            "every publish of a batch refused"
        );
        assert_eq!(lengths(&run), before, "nothing stored at maxmemory");

        // Live delivery goes on: events Redis can take without memory still arrive.
        let live_since = Instant::now();
        let mut unretained = HashSet::new();
        for n in 0..10 {
            let e = event(audience_of(&run.users, n), 300 + n);
            unretained.insert(e.id());
            assert!(record(&live_only, e).await);
        }
        eventually_for(PHASE_WAIT, "live events delivered at maxmemory", || {
            run.each_received_one_published_after(live_since)
        })
        .await;

        server.command(&["DEL", "oom:filler"]);
        let freed = Instant::now();
        for n in 0..10 {
            assert!(record(&hub, event(audience_of(&run.users, n), 400 + n)).await, "publishing resumes");
        }
        eventually_for(PHASE_WAIT, "delivery after memory freed", || {
            run.each_received_one_published_after(freed)
        })
        .await;
        let verdict = run.finish(&hub).await;
        println!("maxmemory: {verdict:?}; {:?}", hub.stats());
        assert_eq!(verdict.failed_publishes, 11);
        assert_eq!(verdict.failed_but_delivered, 0, "a refused event is not delivered");
        assert_eq!(verdict.events_delivered, verdict.events_expected);
        assert_eq!(verdict.covered_by_gap, 0);
        let all = Instant::now() - Duration::from_secs(3600);
        assert_eq!(run.check_streams(&server, &layout, all, &unretained), 0, "no refused event stored");
    });
}

/// How the server is paused.
#[derive(Clone, Copy, Debug)]
enum Pause {
    /// `CLIENT PAUSE <PAUSE> ALL`: Redis holds every client's commands for [`PAUSE`].
    ClientPause,
    /// `SIGSTOP`, then `SIGCONT` 5 s later: the process stops answering anything.
    Stopped,
}

const PAUSE: Duration = Duration::from_secs(8);
const PAUSE_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid().expect("a running server").to_string();
    let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Pauses the server for 5 s while publishing; every call ends within its timeout (with a margin
/// well under the pause), and delivery resumes after.
fn pause_while_publishing(pause: Pause) {
    let server = RedisServer::start();
    let prefix = format!("{pause:?}").to_lowercase();
    runtime().block_on(async {
        let hub = builder(&server.url(), &prefix)
            .command_timeout(PAUSE_COMMAND_TIMEOUT)
            .connect()
            .await
            .expect("connect");
        let mut run = Run::subscribe(&hub, 3).await;
        let begun = Instant::now();
        // A publish refused by its timeout may still be applied once Redis runs again, after later
        // ones: publishing the same event again until it is accepted keeps the order (the event is
        // stored once, by whichever try runs first).
        let failed: PublishLog = Arc::default();
        run.start_retrying_publisher(&hub, Duration::from_millis(10), Arc::clone(&failed));
        eventually_for(PHASE_WAIT, "delivery before the pause", || run.each_received_one_published_after(begun)).await;
        let paused = Instant::now();
        match pause {
            Pause::ClientPause => {
                server.command(&["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"]).expect_ok()
            }
            Pause::Stopped => {
                signal(&server, "-STOP");
                tokio::time::sleep(PAUSE).await;
                signal(&server, "-CONT");
            }
        }
        let resumed = paused + PAUSE;
        eventually_for(PHASE_WAIT, "publishes accepted after the pause", || run.publishes_since(resumed, true) >= 10).await;
        eventually_for(PHASE_WAIT, "delivery after the pause", || run.each_received_one_published_after(resumed)).await;
        let verdict = run.finish(&hub).await;
        let failed = failed.lock().unwrap().clone();
        let calls = run.published().into_iter().chain(failed.iter().cloned());
        let slowest = calls.map(|p| p.finished - p.started).max().unwrap();
        println!(
            "{pause:?}: {} publish calls failed and were made again; slowest call {slowest:?}; {verdict:?}; {:?}",
            failed.len(),
            hub.stats()
        );
        assert!(failed.iter().any(|p| p.started >= paused), "a publish made while the server was paused failed");
        // No call waits out the pause: each ends within the command timeout, with a margin for a loaded
        // machine (4 s) that still leaves a call made in the pause's first half that waits it out failing.
        assert!(slowest < PAUSE_COMMAND_TIMEOUT + Duration::from_secs(4), "a publish took {slowest:?}");
        assert_eq!(verdict.events_delivered, verdict.events_expected, "nothing accepted is lost");
        let layout = KeyLayout::standalone_with_prefix(&prefix).unwrap();
        run.check_streams(&server, &layout, begun, &HashSet::new());
    });
}

#[test]
fn a_client_pause_fails_publishes_within_the_timeout_and_delivery_resumes() {
    pause_while_publishing(Pause::ClientPause);
}

#[test]
fn a_stopped_server_fails_publishes_within_the_timeout_and_delivery_resumes() {
    pause_while_publishing(Pause::Stopped);
}
