//! The Redis backend through a master failover and a slot migration, on a private cluster of three masters with a replica each.
//!
//! The tests change the cluster, so they take turns on it. Each runs
//! publishers and subscribers as tasks on a tokio runtime (the hub runs fred
//! on it too) while a master is killed or a slot moved, then checks every
//! subscriber's stream against what was published.

#[path = "support/fred_support.rs"]
mod fred_support;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fred_support::{C, event, fresh_user};
use futures::StreamExt;
use redis_server::{RedisCluster, RespValue};
use ssehub::fred::{KeyLayout, RedisHub, RedisHubBuilder};
use ssehub::{Audience, CategorySet, Error, EventId, EventSource, Publisher, UserId};

/// Users subscribed on each master.
const USERS_PER_MASTER: usize = 12;
/// Pause between two publishes of one shard's publisher.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// Pause between two broadcasts.
const BROADCAST_EVERY: Duration = Duration::from_millis(250);
/// The longest a subscriber of the failed master may go without events.
const RESUME_WITHIN: Duration = Duration::from_secs(15);

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = RedisCluster::start(3, 1);
        // Masters that keep running serve their slots while another one is failing over.
        for node in cluster.nodes() {
            node.command(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]).expect_ok();
        }
        cluster
    })
}

/// The tests change the cluster: one at a time.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One publish: what, when, and whether it succeeded.
#[derive(Clone, Debug)]
struct Published {
    id: EventId,
    audience: Audience,
    started: Instant,
    finished: Instant,
    ok: bool,
}

/// What one subscription yielded, with arrival times.
#[derive(Clone, Debug)]
enum Received {
    Event(EventId, Audience, Instant),
    Gap(Instant),
    Ended(String),
}

struct Run {
    users: Vec<UserId>,
    owner: HashMap<UserId, u16>,
    published: Arc<Mutex<Vec<Published>>>,
    received: HashMap<UserId, Arc<Mutex<Vec<Received>>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `per_master` fresh users on each master of `masters`, by their channel's slot.
fn users_on_masters(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    masters: &[u16],
    per_master: usize,
) -> Vec<(UserId, u16)> {
    let mut count: HashMap<u16, usize> = HashMap::new();
    let mut users = Vec::new();
    while masters.iter().any(|m| count.get(m).copied().unwrap_or(0) < per_master) {
        let user = fresh_user();
        let port = cluster.master_for_key(&layout.channel(Audience::User(user)));
        let n = count.entry(port).or_default();
        if *n < per_master && masters.contains(&port) {
            *n += 1;
            users.push((user, port));
        }
    }
    users
}

/// Subscribes `users`, then starts a reader per subscription, a publisher per master
/// (its users in turn) and a broadcast publisher.
async fn start(hub: &RedisHub<C>, users: Vec<(UserId, u16)>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Vec::new()));
    let mut received = HashMap::new();
    let mut tasks = Vec::new();
    for (user, _) in &users {
        let mut subscription = hub.subscribe(*user, CategorySet::all()).await.expect("subscribe");
        let log = Arc::new(Mutex::new(Vec::new()));
        received.insert(*user, Arc::clone(&log));
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let item = match tokio::time::timeout(Duration::from_millis(100), subscription.next()).await {
                    Err(_) => continue,
                    Ok(item) => item,
                };
                let now = Instant::now();
                let entry = match item {
                    Some(Ok(event)) => Received::Event(event.id(), event.audience(), now),
                    Some(Err(Error::Gap { .. })) => Received::Gap(now),
                    Some(Err(error)) => Received::Ended(error.to_string()),
                    None => Received::Ended("end of stream".into()),
                };
                let ended = matches!(entry, Received::Ended(_));
                log.lock().unwrap().push(entry);
                if ended {
                    return;
                }
            }
        }));
    }
    let mut by_master: HashMap<u16, Vec<UserId>> = HashMap::new();
    for (user, port) in &users {
        by_master.entry(*port).or_default().push(*user);
    }
    let mut publishers: Vec<(Vec<Audience>, Duration)> = by_master
        .into_values()
        .map(|users| (users.into_iter().map(Audience::User).collect(), PUBLISH_EVERY))
        .collect();
    publishers.push((vec![Audience::Broadcast], BROADCAST_EVERY));
    for (k, (audiences, every)) in publishers.into_iter().enumerate() {
        let hub = hub.clone();
        let stop = Arc::clone(&stop);
        let published = Arc::clone(&published);
        tasks.push(tokio::spawn(async move {
            let mut n = k * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let audience = audiences[n % audiences.len()];
                let e = event(audience, n);
                n += 1;
                let started = Instant::now();
                let ok = hub.publish(e.clone()).await.is_ok();
                let finished = Instant::now();
                published.lock().unwrap().push(Published { id: e.id(), audience, started, finished, ok });
                tokio::time::sleep(every).await;
            }
        }));
    }
    let owner = users.iter().copied().collect();
    Run { users: users.into_iter().map(|(u, _)| u).collect(), owner, published, received, stop, tasks }
}

impl Run {
    /// Stops publishing, lets what is in flight arrive, stops reading.
    async fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    fn log(&self, user: UserId) -> Vec<Received> {
        self.received[&user].lock().unwrap().clone()
    }

    fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }

    /// When `user` received its first own event published (successfully) after `after`.
    fn delivered_one_published_after(&self, user: UserId, after: Instant) -> Option<Instant> {
        let fresh: HashSet<EventId> = self
            .published()
            .iter()
            .filter(|p| p.ok && p.started >= after && p.audience == Audience::User(user))
            .map(|p| p.id)
            .collect();
        self.log(user).iter().find_map(|r| match r {
            Received::Event(id, _, at) if fresh.contains(id) => Some(*at),
            _ => None,
        })
    }
}

/// What checking every subscriber found.
#[derive(Default, Debug)]
struct Verdict {
    events_expected: usize,
    events_delivered: usize,
    /// Successful publishes not delivered but covered by a later gap signal.
    covered_by_gap: usize,
    gaps_by_user: HashMap<UserId, usize>,
    failed_publishes: usize,
    /// The longest time from a successful publish returning to its delivery, per user.
    max_latency: HashMap<UserId, Duration>,
}

/// Checks every subscriber: nothing foreign, nothing twice, each audience in publish order, every
/// successful publish delivered or covered by a gap signal that came after it was published.
fn verify(run: &Run) -> Verdict {
    let published = run.published();
    let by_id: HashMap<EventId, &Published> = published.iter().map(|p| (p.id, p)).collect();
    let mut verdict =
        Verdict { failed_publishes: published.iter().filter(|p| !p.ok).count(), ..Verdict::default() };
    for user in &run.users {
        let log = run.log(*user);
        if let Some(Received::Ended(why)) = log.iter().find(|r| matches!(r, Received::Ended(_))) {
            panic!("the subscription of {user} ended: {why}");
        }
        let gaps: Vec<Instant> =
            log.iter().filter_map(|r| if let Received::Gap(at) = r { Some(*at) } else { None }).collect();
        verdict.gaps_by_user.insert(*user, gaps.len());
        let events: Vec<(EventId, Audience, Instant)> = log
            .iter()
            .filter_map(|r| if let Received::Event(id, a, at) = r { Some((*id, *a, *at)) } else { None })
            .collect();
        let mut seen = HashSet::new();
        for (id, audience, _) in &events {
            assert!(audience.includes(*user), "{user} received another user's event {id}");
            assert!(by_id.contains_key(id), "{user} received {id}, which was never published");
            assert!(seen.insert(*id), "{user} received {id} twice");
        }
        for audience in [Audience::User(*user), Audience::Broadcast] {
            let order: Vec<EventId> =
                published.iter().filter(|p| p.audience == audience).map(|p| p.id).collect();
            let position: HashMap<EventId, usize> =
                order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            let got: Vec<usize> =
                events.iter().filter(|(_, a, _)| *a == audience).map(|(id, _, _)| position[id]).collect();
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "{user}: events of {audience:?} out of publish order"
            );
        }
        let mut latency = Duration::ZERO;
        for p in published.iter().filter(|p| p.ok && p.audience.includes(*user)) {
            verdict.events_expected += 1;
            match events.iter().find(|(id, _, _)| *id == p.id) {
                Some((_, _, at)) => {
                    verdict.events_delivered += 1;
                    latency = latency.max(at.saturating_duration_since(p.finished));
                }
                None if gaps.iter().any(|g| *g > p.started) => verdict.covered_by_gap += 1,
                None => panic!(
                    "{user} never received {} (published successfully {:?} after the start of the run) \
                     and got no gap signal after it",
                    p.id,
                    p.started.duration_since(published[0].started)
                ),
            }
        }
        verdict.max_latency.insert(*user, latency);
    }
    verdict
}

/// A master that is neither the broadcast channel's nor without a replica.
fn victim(cluster: &RedisCluster, layout: &KeyLayout) -> u16 {
    let broadcast = cluster.master_for_key(&layout.channel(Audience::Broadcast));
    cluster
        .master_ports()
        .into_iter()
        .find(|p| *p != broadcast && !cluster.replica_ports_of(*p).is_empty())
        .expect("a master with a replica that does not hold the broadcast channel")
}

fn hub_builder(cluster: &RedisCluster, prefix: &str) -> RedisHubBuilder<C> {
    RedisHub::builder(&cluster.url()).unwrap().key_layout(KeyLayout::cluster_with_prefix(prefix).unwrap())
}

/// Kills a master mid-stream and checks its shard resumes while the others go on.
fn master_failover(prefix: &str, replica_acks: bool) -> (Verdict, Run, u16, Instant) {
    let cluster = cluster();
    let layout = KeyLayout::cluster_with_prefix(prefix).unwrap();
    let victim = victim(cluster, &layout);
    let masters = cluster.master_ports();
    runtime().block_on(async {
        let mut builder = hub_builder(cluster, prefix);
        if replica_acks {
            builder = builder.replica_acks(1, Duration::from_secs(1));
        }
        let hub = builder.connect().await.expect("connect");
        let users = users_on_masters(cluster, &layout, &masters, USERS_PER_MASTER);
        let mut run = start(&hub, users).await;
        tokio::time::sleep(Duration::from_secs(2)).await;

        let killed_at = Instant::now();
        tokio::task::spawn_blocking(move || cluster.kill_master(victim)).await.unwrap();
        let promoted =
            tokio::task::spawn_blocking(move || cluster.wait_for_failover(victim, Duration::from_secs(30)))
                .await
                .unwrap();
        let failover_time = killed_at.elapsed();
        // The failed node comes back, as a replica of the new master: with replica acks,
        // publishes to that shard succeed again once it has caught up.
        tokio::task::spawn_blocking(move || cluster.node(victim).restart()).await.unwrap();
        let victims: Vec<UserId> = run.users.iter().copied().filter(|u| run.owner[u] == victim).collect();
        // Wait until every subscriber of the failed master has an event published after the kill.
        let deadline = killed_at + RESUME_WITHIN + Duration::from_secs(5);
        let mut resumed = Duration::ZERO;
        loop {
            let at: Option<Vec<Instant>> =
                victims.iter().map(|u| run.delivered_one_published_after(*u, killed_at)).collect();
            if let Some(at) = at {
                resumed = at.iter().map(|t| t.duration_since(killed_at)).max().unwrap_or_default();
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            resumed > Duration::ZERO && resumed <= RESUME_WITHIN,
            "the subscribers of the failed master {victim} were not all delivering again within {RESUME_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        run.finish().await;
        let verdict = verify(&run);
        println!(
            "{prefix}: master {victim} killed, replica {promoted} promoted after {failover_time:?}; its \
             subscribers delivering again after {resumed:?}; stats {:?}",
            hub.stats()
        );
        (verdict, run, victim, killed_at)
    })
}

/// The other masters than `victim`: publishes to them go on succeeding quickly; their subscribers get
/// no gap, every event, and no long wait.
fn assert_other_shards_undisturbed(verdict: &Verdict, run: &Run, victim: u16, killed_at: Instant) {
    let others: Vec<UserId> = run.users.iter().copied().filter(|u| run.owner[u] != victim).collect();
    let elsewhere: Vec<Published> = run
        .published()
        .into_iter()
        .filter(|p| p.started >= killed_at)
        .filter(|p| match p.audience {
            Audience::User(user) => run.owner[&user] != victim,
            Audience::Broadcast => true,
        })
        .collect();
    let failed = elsewhere.iter().filter(|p| !p.ok).count();
    let slowest = elsewhere.iter().map(|p| p.finished - p.started).max().unwrap_or_default();
    println!(
        "publishes to the other masters after the kill: {} ({failed} failed), slowest {slowest:?}",
        elsewhere.len()
    );
    assert_eq!(failed, 0, "publishes to masters that kept running failed");
    assert!(slowest < Duration::from_secs(1), "a publish to a master that kept running took {slowest:?}");
    let worst = others.iter().map(|u| verdict.max_latency[u]).max().unwrap();
    for user in &others {
        assert_eq!(verdict.gaps_by_user[user], 0, "{user} on master {} got a gap signal", run.owner[user]);
    }
    println!("subscribers of the other masters: no gap, longest publish-to-delivery {worst:?}");
    assert!(worst < Duration::from_secs(1), "a subscriber of another master waited {worst:?} for an event");
}

#[test]
fn a_master_failover_with_replica_acks_recovers_its_shard_without_loss_and_leaves_the_others_undisturbed() {
    let _turn = turn();
    let (verdict, run, victim, killed_at) = master_failover("failover-acked", true);
    println!("{verdict:?}");
    assert_other_shards_undisturbed(&verdict, &run, victim, killed_at);
    // Every publish that succeeded was acknowledged by the replica that took over: none is lost.
    assert_eq!(verdict.covered_by_gap, 0, "with replica acks, no successful publish may be lost");
    assert_eq!(verdict.events_delivered, verdict.events_expected);
    assert!(verdict.failed_publishes > 0, "publishes to the dead master fail while it is down");
}

#[test]
fn a_master_failover_without_replica_acks_signals_a_gap_to_its_shard_only() {
    let _turn = turn();
    let (verdict, run, victim, killed_at) = master_failover("failover-unacked", false);
    println!("{verdict:?}");
    assert_other_shards_undisturbed(&verdict, &run, victim, killed_at);
    for user in run.users.iter().filter(|u| run.owner[u] == victim) {
        assert!(verdict.gaps_by_user[user] > 0, "{user} on the replaced master got no gap signal");
    }
}

/// Moves `slot` from master `from` to master `to` the way `redis-cli --cluster reshard` does.
fn migrate_slot(cluster: &RedisCluster, slot: u16, from: u16, to: u16) {
    let nodes = cluster.cluster_nodes();
    let id_of = |port: u16| nodes.iter().find(|n| n.port == port).unwrap().id.clone();
    let (from_id, to_id) = (id_of(from), id_of(to));
    let slot = slot.to_string();
    let (source, target) = (cluster.node(from), cluster.node(to));
    target.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).expect_ok();
    source.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).expect_ok();
    loop {
        let keys = source.command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
        let keys: Vec<String> = keys
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        if keys.is_empty() {
            break;
        }
        let port = to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        source.command(&args).expect_ok();
    }
    for port in [to, from] {
        cluster.node(port).command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).expect_ok();
    }
    for port in cluster.master_ports() {
        if port != to && port != from {
            cluster.node(port).command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).expect_ok();
        }
    }
}

fn shard_numsub(cluster: &RedisCluster, port: u16, channel: &str) -> i64 {
    let reply = cluster.node(port).command(&["PUBSUB", "SHARDNUMSUB", channel]);
    reply.as_array().and_then(|a| a.get(1)).and_then(RespValue::as_int).unwrap_or(-1)
}

#[test]
fn a_slot_migration_moves_the_subscription_to_the_new_owner_and_loses_nothing() {
    let _turn = turn();
    let cluster = cluster();
    let layout = KeyLayout::cluster_with_prefix("migration").unwrap();
    runtime().block_on(async {
        let hub = hub_builder(cluster, "migration").connect().await.expect("connect");
        let masters = cluster.master_ports();
        let users = users_on_masters(cluster, &layout, &masters[..1], 1);
        let (user, from) = users[0];
        let to = masters[1];
        let channel = layout.channel(Audience::User(user));
        let slot = RedisCluster::key_slot(&channel);
        let mut run = start(&hub, users).await;
        assert_eq!(shard_numsub(cluster, from, &channel), 1);
        tokio::time::sleep(Duration::from_secs(1)).await;

        let moved_at = Instant::now();
        tokio::task::spawn_blocking(move || migrate_slot(cluster, slot, from, to)).await.unwrap();
        let migration = moved_at.elapsed();
        let deadline = Instant::now() + Duration::from_secs(10);
        while shard_numsub(cluster, to, &channel) != 1 {
            assert!(Instant::now() < deadline, "the subscription did not follow slot {slot} to master {to}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resubscribed = moved_at.elapsed();
        assert_eq!(shard_numsub(cluster, from, &channel), 0, "the old owner keeps no subscription");
        let after = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(run.delivered_one_published_after(user, after).is_some(), "no event after the migration");
        run.finish().await;
        let verdict = verify(&run);
        println!(
            "slot {slot} moved {from} -> {to} in {migration:?}; subscription on the new owner after \
             {resubscribed:?}; {verdict:?}; stats {:?}",
            hub.stats()
        );
        assert_eq!(verdict.gaps_by_user[&user], 0, "the moved slot's data moved with it: no gap");
        assert_eq!(verdict.events_delivered, verdict.events_expected, "every successful publish delivered");
        assert!(verdict.events_expected > 100);
    });
}

/// Reads `subscription` until `until` arrives; returns the events before it (it included) and the gap signals seen.
async fn read_until(
    subscription: &mut ssehub::fred::Subscription<C>,
    until: EventId,
) -> (Vec<EventId>, usize) {
    let (mut events, mut gaps) = (Vec::new(), 0);
    loop {
        match tokio::time::timeout(Duration::from_secs(15), subscription.next()).await {
            Ok(Some(Ok(event))) => {
                events.push(event.id());
                if event.id() == until {
                    return (events, gaps);
                }
            }
            Ok(Some(Err(Error::Gap { .. }))) => gaps += 1,
            other => panic!("waiting for {until}: {other:?}"),
        }
    }
}

#[test]
fn a_lost_subscriber_connection_is_recovered_on_its_shard_only() {
    let _turn = turn();
    let cluster = cluster();
    runtime().block_on(async {
        let retained = hub_builder(cluster, "connkill").connect().await.expect("connect");
        let unretained =
            hub_builder(cluster, "connkill-off").retention(None).connect().await.expect("connect");
        let layout = KeyLayout::cluster_with_prefix("connkill").unwrap();
        let victim = victim(cluster, &layout);
        let masters = cluster.master_ports();
        let users = users_on_masters(cluster, &layout, &masters, 4);
        // Both layouts' prefixes hash the same way: the hash tag is the user id.
        let mut subscriptions = Vec::new();
        for (user, port) in &users {
            let kept = retained.subscribe(*user, CategorySet::all()).await.expect("subscribe");
            let lost = unretained.subscribe(*user, CategorySet::all()).await.expect("subscribe");
            subscriptions.push((*user, *port, kept, lost));
        }
        let killed = cluster.node(victim).command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_eq!(killed.as_int(), Some(2), "one subscriber connection per hub on master {victim}");
        let during: Vec<_> = users.iter().map(|(u, _)| event(Audience::User(*u), 0)).collect();
        for e in &during {
            retained.publish(e.clone()).await.expect("publish");
            unretained.publish(e.clone()).await.expect("publish");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<_> = users.iter().map(|(u, _)| event(Audience::User(*u), 1)).collect();
        for e in &after {
            retained.publish(e.clone()).await.expect("publish");
            unretained.publish(e.clone()).await.expect("publish");
        }
        for (i, (user, port, kept, lost)) in subscriptions.iter_mut().enumerate() {
            let (events, gaps) = read_until(kept, after[i].id()).await;
            assert_eq!(events, vec![during[i].id(), after[i].id()], "{user} with retention");
            assert_eq!(gaps, 0, "{user} with retention: the outage is recovered from the stream");
            let (events, gaps) = read_until(lost, after[i].id()).await;
            if *port == victim {
                assert_eq!(gaps, 1, "{user} without retention on the master that dropped the connection");
            } else {
                assert_eq!(events, vec![during[i].id(), after[i].id()], "{user} on another master");
                assert_eq!(gaps, 0, "{user} on another master: no gap");
            }
        }
        let stats = retained.stats();
        println!("with retention: {stats:?}\nwithout: {:?}", unretained.stats());
        assert!(stats.reconnects >= 1 && stats.gaps == 0);
        assert_eq!(
            unretained.stats().gaps,
            4,
            "a gap for each subscriber of the master that dropped the connection"
        );
    });
}
