//! The Redis backend through a master failover and a slot migration, on a private cluster of three masters with a replica each.
//!
//! The tests change the cluster, so they take turns on it. Each runs
//! publishers and subscribers as tasks on a tokio runtime (the hub runs fred
//! on it too) while a master is killed or a slot moved, then checks every
//! subscriber's stream against what was published. Nothing depends on timing:
//! the failover waits until the test allows it (`cluster-replica-no-failover`),
//! the outage lasts until the test has seen what it checks, and readers stop
//! at end markers published after every other event.

use crate::support as fred_support;
use crate::support::delivery_check;
use ssehub_harness::redis_server;
use ssehub_harness::wait::eventually_for;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use delivery_check::{Published, Received, Verdict, publish_recorded};
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
/// The longest the tests wait for one phase of a run (an outage's effects, delivery resuming).
const PHASE_WAIT: Duration = Duration::from_secs(60);

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

struct Run {
    users: Vec<UserId>,
    owner: HashMap<UserId, u16>,
    published: Arc<Mutex<Vec<Published>>>,
    received: HashMap<UserId, Arc<Mutex<Vec<Received>>>>,
    stop_publishing: Arc<AtomicBool>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
    readers: Vec<(UserId, tokio::task::JoinHandle<()>)>,
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
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Vec::new()));
    let mut received = HashMap::new();
    let mut readers = Vec::new();
    for (user, _) in &users {
        let subscription = hub.subscribe(*user, CategorySet::all()).await.expect("subscribe");
        let log = Arc::new(Mutex::new(Vec::new()));
        received.insert(*user, Arc::clone(&log));
        readers.push((
            *user,
            tokio::spawn(delivery_check::record_until_end_markers(subscription, Arc::clone(&log))),
        ));
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
    let mut publisher_tasks = Vec::new();
    for (k, (audiences, every)) in publishers.into_iter().enumerate() {
        let hub = hub.clone();
        let stop = Arc::clone(&stop_publishing);
        let published = Arc::clone(&published);
        publisher_tasks.push(tokio::spawn(async move {
            let mut n = k * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let audience = audiences[n % audiences.len()];
                publish_recorded(&hub, &published, event(audience, n)).await;
                n += 1;
                tokio::time::sleep(every).await;
            }
        }));
    }
    let owner = users.iter().copied().collect();
    Run {
        users: users.into_iter().map(|(u, _)| u).collect(),
        owner,
        published,
        received,
        stop_publishing,
        publishers: publisher_tasks,
        readers,
    }
}

impl Run {
    /// Stops publishing, publishes an end marker to every user and one broadcast, and waits until
    /// every reader has read up to its two markers: everything published before them has arrived.
    async fn finish(&mut self, hub: &RedisHub<C>) {
        self.stop_publishing.store(true, Ordering::Relaxed);
        for task in self.publishers.drain(..) {
            task.await.unwrap();
        }
        delivery_check::publish_end_markers(hub, &self.users).await;
        for (user, reader) in std::mem::take(&mut self.readers) {
            match tokio::time::timeout(Duration::from_secs(60), reader).await {
                Ok(joined) => joined.unwrap(),
                Err(_) => panic!("{user} did not receive its end markers within 60 s: {:?}", self.log(user)),
            }
        }
    }

    fn log(&self, user: UserId) -> Vec<Received> {
        self.received[&user].lock().unwrap().clone()
    }

    fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }

    /// Whether `user` received an event of its own that was published (successfully) after `after`.
    fn delivered_one_published_after(&self, user: UserId, after: Instant) -> bool {
        self.delivered_published_after(user, after) > 0
    }

    /// How many events of its own `user` received that were published (successfully) after `after`.
    fn delivered_published_after(&self, user: UserId, after: Instant) -> usize {
        let fresh: HashSet<EventId> = self
            .published()
            .iter()
            .filter(|p| p.ok && p.started >= after && p.audience == Audience::User(user))
            .map(|p| p.id)
            .collect();
        self.log(user).iter().filter(|r| matches!(r, Received::Event(id, _) if fresh.contains(id))).count()
    }

    /// How many publishes to `audiences` that started after `after` succeeded.
    fn successful_publishes_since(&self, audiences: &[Audience], after: Instant) -> usize {
        self.published()
            .iter()
            .filter(|p| p.ok && p.started >= after && audiences.contains(&p.audience))
            .count()
    }
}

/// Checks every subscriber of `run` by the strict rule (see [`delivery_check::verify`]).
fn verify(run: &Run) -> Verdict {
    delivery_check::verify(&run.users, &run.published(), |user| run.log(user))
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

/// Sets whether the replicas of `master` may take over from it.
fn allow_failover(cluster: &RedisCluster, master: u16, allowed: bool) {
    let value = if allowed { "no" } else { "yes" };
    for replica in cluster.replica_ports_of(master) {
        cluster.node(replica).command(&["CONFIG", "SET", "cluster-replica-no-failover", value]).expect_ok();
    }
}

/// The command timeout of the failover tests' hubs.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Kills a master mid-stream and checks, while no replica may take over yet, that a publish to it
/// fails within the command timeout and that the other masters go on (their publishes succeed and
/// reach their subscribers); then lets a replica take over and waits until the shard delivers again.
/// What a master failover did; `quiet_first`: the first item of a subscription whose user had no
/// event of its own before the kill (its stream empty), after one is published once it is over.
type QuietFirst = Option<Result<ssehub::Event<C>, Error>>;

fn master_failover(prefix: &str, replica_acks: bool) -> (Verdict, Run, u16, Instant, QuietFirst) {
    let cluster = cluster();
    let layout = KeyLayout::cluster_with_prefix(prefix).unwrap();
    let victim = victim(cluster, &layout);
    let masters = cluster.master_ports();
    runtime().block_on(async {
        let mut builder = hub_builder(cluster, prefix).command_timeout(COMMAND_TIMEOUT);
        if replica_acks {
            builder = builder.replica_acks(1, Duration::from_secs(1));
        }
        let hub = builder.connect().await.expect("connect");
        let users = users_on_masters(cluster, &layout, &masters, USERS_PER_MASTER);
        // A user of the victim's shard with nothing published to it before the kill.
        let (quiet, _) = users_on_masters(cluster, &layout, &[victim], 1)[0];
        let mut quiet_subscription = hub.subscribe(quiet, CategorySet::all()).await.expect("subscribe");
        let begun = Instant::now();
        let mut run = start(&hub, users).await;
        let (victims, others): (Vec<UserId>, Vec<UserId>) =
            run.users.iter().copied().partition(|u| run.owner[u] == victim);
        eventually_for(PHASE_WAIT, "every subscriber receiving an event before the kill", || {
            run.users.iter().all(|u| run.delivered_one_published_after(*u, begun))
        })
        .await;

        tokio::task::spawn_blocking(move || {
            allow_failover(cluster, victim, false);
            cluster.kill_master(victim);
        })
        .await
        .unwrap();
        let killed_at = Instant::now();
        let probe = event(Audience::User(victims[0]), usize::MAX);
        assert!(
            !publish_recorded(&hub, &run.published, probe).await,
            "a publish to master {victim} succeeded while it was down and no replica could take over"
        );
        let probe_took = killed_at.elapsed();
        assert!(
            probe_took < COMMAND_TIMEOUT + Duration::from_secs(5),
            "a publish to the dead master took {probe_took:?} to fail (command timeout {COMMAND_TIMEOUT:?})"
        );
        for port in masters.iter().filter(|p| **p != victim) {
            let audiences: Vec<Audience> =
                others.iter().filter(|u| run.owner[u] == *port).map(|u| Audience::User(*u)).collect();
            eventually_for(
                PHASE_WAIT,
                &format!("publishes to master {port} succeeding while {victim} is down"),
                || run.successful_publishes_since(&audiences, killed_at) >= 2 * USERS_PER_MASTER,
            )
            .await;
        }
        eventually_for(PHASE_WAIT, "a broadcast published while the master is down", || {
            run.successful_publishes_since(&[Audience::Broadcast], killed_at) >= 2
        })
        .await;
        eventually_for(
            PHASE_WAIT,
            "the subscribers of the other masters receiving events published during the outage",
            || others.iter().all(|u| run.delivered_one_published_after(*u, killed_at)),
        )
        .await;
        let outage = killed_at.elapsed();

        let allowed_at = Instant::now();
        let promoted = tokio::task::spawn_blocking(move || {
            allow_failover(cluster, victim, true);
            cluster.wait_for_failover(victim, Duration::from_secs(30))
        })
        .await
        .unwrap();
        let failover_time = allowed_at.elapsed();
        // The failed node comes back, as a replica of the new master: with replica acks,
        // publishes to that shard succeed again once it has caught up.
        tokio::task::spawn_blocking(move || cluster.node(victim).restart()).await.unwrap();
        let promoted_at = Instant::now();
        eventually_for(
            PHASE_WAIT,
            "every subscriber of the failed master receiving an event published after the failover",
            || victims.iter().all(|u| run.delivered_one_published_after(*u, promoted_at)),
        )
        .await;
        let resumed = promoted_at.elapsed();
        let to_quiet = event(Audience::User(quiet), 0);
        hub.publish(to_quiet).await.expect("a publish to the quiet user");
        let quiet_first = loop {
            match tokio::time::timeout(Duration::from_secs(30), quiet_subscription.next()).await {
                Ok(Some(Ok(e))) if e.audience() == Audience::Broadcast => continue,
                Ok(item) => break item,
                Err(_) => panic!("the quiet user's subscription yielded nothing within 30 s"),
            }
        };
        run.finish(&hub).await;
        let verdict = verify(&run);
        println!(
            "{prefix}: master {victim} killed; a publish to it failed after {probe_took:?}; outage held \
             {outage:?}; replica {promoted} promoted {failover_time:?} after the failover was allowed; its \
             subscribers delivering again {resumed:?} after that; stats {:?}",
            hub.stats()
        );
        (verdict, run, victim, killed_at, quiet_first)
    })
}

/// The other masters than `victim`: every publish to them succeeds, and their subscribers get no
/// gap. (That they received events published while the victim was down, before any replica could
/// take over, `master_failover` has checked.)
fn assert_other_shards_undisturbed(verdict: &Verdict, run: &Run, victim: u16, killed_at: Instant) {
    let others: Vec<UserId> = run.users.iter().copied().filter(|u| run.owner[u] != victim).collect();
    let elsewhere: Vec<Published> = run
        .published()
        .into_iter()
        .filter(|p| p.started >= killed_at)
        .filter(|p| match p.audience {
            Audience::User(user) => run.owner[&user] != victim,
            Audience::Broadcast | Audience::Group(_) => true,
        })
        .collect();
    let failed = elsewhere.iter().filter(|p| !p.ok).count();
    let slowest = elsewhere.iter().map(|p| p.finished - p.started).max().unwrap_or_default();
    println!(
        "publishes to the other masters after the kill: {} ({failed} failed), slowest {slowest:?}",
        elsewhere.len()
    );
    assert_eq!(failed, 0, "publishes to masters that kept running failed");
    for user in &others {
        assert_eq!(verdict.gaps_by_user[user], 0, "{user} on master {} got a gap signal", run.owner[user]);
    }
}

#[test]
fn a_master_failover_with_replica_acks_recovers_its_shard_without_loss_and_leaves_the_others_undisturbed() {
    let _turn = turn();
    let (verdict, run, victim, killed_at, quiet_first) = master_failover("failover-acked", true);
    println!("{verdict:?}");
    // The quiet user's stream was empty at the kill; the replica that took over holds every
    // acknowledged entry: its event comes, no gap signal before it.
    assert!(
        matches!(&quiet_first, Some(Ok(e)) if e.audience() != Audience::Broadcast),
        "the quiet user's first item after the failover: {quiet_first:?}"
    );
    assert_other_shards_undisturbed(&verdict, &run, victim, killed_at);
    // Every publish that succeeded was acknowledged by the replica that took over: none is lost.
    assert_eq!(verdict.covered_by_gap, 0, "with replica acks, no successful publish may be lost");
    assert_eq!(verdict.events_delivered, verdict.events_expected);
    assert!(verdict.failed_publishes > 0, "publishes to the dead master fail while it is down");
}

#[test]
fn a_master_failover_without_replica_acks_signals_a_gap_to_its_shard_only() {
    let _turn = turn();
    let (verdict, run, victim, killed_at, quiet_first) = master_failover("failover-unacked", false);
    // Without replica acks the replica may lack entries the quiet user's stream got: told so.
    assert!(
        matches!(&quiet_first, Some(Err(Error::Gap { .. }))),
        "the quiet user's first item after the failover: {quiet_first:?}"
    );
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
        eventually_for(PHASE_WAIT, "101 events published after the migration delivered", || {
            run.delivered_published_after(user, after) > 100
        })
        .await;
        run.finish(&hub).await;
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
        // The hub without retention gives each subscriber of the victim its gap once it has resubscribed
        // there and the channels are live again: from then on, what is published reaches them.
        let reconnected = Instant::now();
        while unretained.stats().gaps < 4 {
            assert!(
                reconnected.elapsed() < Duration::from_secs(30),
                "the hub without retention never resubscribed: {:?}",
                unretained.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
