//! The soak scenario: minutes of mixed load on the Redis backend (paced publishes, many subscribers, a steady share of them reconnecting with Last-Event-ID through `ssehub::resume`), with the hub's RSS and Redis `used_memory` sampled as it runs.
//!
//! Events go round-robin over `--users` users at `--rate` per second, each
//! user's published in sequence (one publisher task per user); each
//! user has `--subs` subscribers (even ones take every category, odd ones
//! three). Every subscriber drops its stream once per reconnect period
//! (`100 / --resume-percent` seconds, staggered so that the reconnects are
//! spread evenly), stays away `--offline-ms`, and resumes from the id of the
//! last event it got, as a browser's EventSource does.
//!
//! The check is strict and event by event: every subscriber must receive
//! every event published for it (its user's, in its categories) exactly once
//! and in order, across all its reconnects. A gap signal, a missing, a
//! repeated or an out-of-order event is a failure; so is a failed publish.
//! A lagged subscriber is counted and resumes like the others (the resume is
//! what makes it lose nothing).
//!
//! Memory: the bench process's RSS (the hub lives in it; the subscribers'
//! bookkeeping is a few words each, constant over the run) and the Redis
//! server's `used_memory` are sampled every `--sample-every` seconds. Growth
//! is read against the first sample at or after `--warmup` seconds, once the
//! retained streams have filled up to their cap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ssehub::fred::RedisHub;
use ssehub::{Category, CategorySet, Error, Publisher, UserId, resume};

use crate::report::{Figures, Report, Value, rss_kib};
use crate::workload::{self, C, category_of, filter_of};
use crate::{Bench, Result, failed, positive};

/// Memory counts as flat after the warmup while no sample exceeds the first by this fraction or more.
const FLAT: f64 = 0.05;

/// At most this many failure descriptions are kept (the counts are exact).
const FAILURES_KEPT: usize = 20;

/// The run's shape, from the command line.
#[derive(Clone, Copy)]
struct Plan {
    seconds: u64,
    rate: u64,
    users: usize,
    subs_per_user: usize,
    resume_percent: u64,
    offline: Duration,
    sample_every: Duration,
    warmup: u64,
}

impl Plan {
    fn events(&self) -> u64 {
        self.rate * self.seconds
    }

    fn subscribers(&self) -> usize {
        self.users * self.subs_per_user
    }

    /// Each subscriber reconnects once per this period.
    fn reconnect_period(&self) -> Duration {
        Duration::from_secs_f64(100.0 / self.resume_percent as f64)
    }

    /// The first event at or after `seq` for user number `user` through `filter`, if any before the end.
    fn first_from(&self, mut seq: u64, user: usize, filter: CategorySet<C>) -> Option<u64> {
        let users = self.users as u64;
        seq += (user as u64 + users - seq % users) % users;
        // Categories repeat every six events of a user at most.
        for _ in 0..C::ALL.len() {
            if seq >= self.events() {
                return None;
            }
            if filter.contains(category_of(seq)) {
                return Some(seq);
            }
            seq += users;
        }
        None
    }
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let seconds = positive(bench.cli.number("seconds", 1200, 4)?, "seconds")? as u64;
    let rate = positive(bench.cli.number("rate", 2_000, 400)?, "rate")? as u64;
    let users = positive(bench.cli.number("users", 100, 5)?, "users")?;
    let subs_per_user = positive(bench.cli.number("subs", 10, 8)?, "subs")?;
    let resume_percent = bench.cli.number("resume-percent", 5, 50)?;
    let offline_ms = bench.cli.number("offline-ms", 500, 100)?;
    let sample_every = positive(bench.cli.number("sample-every", 10, 1)?, "sample-every")? as u64;
    let warmup = bench.cli.number("warmup", 120, 1)?;
    bench.cli.finish()?;
    if !(1..=100).contains(&resume_percent) {
        return Err(crate::BenchError::Usage("--resume-percent is between 1 and 100".into()));
    }
    let plan = Plan {
        seconds,
        rate,
        users,
        subs_per_user,
        resume_percent,
        offline: Duration::from_millis(offline_ms),
        sample_every: Duration::from_secs(sample_every),
        warmup,
    };
    for (key, value) in [
        ("rate", rate),
        ("users", users as u64),
        ("subs_per_user", subs_per_user as u64),
        ("subscribers", plan.subscribers() as u64),
        ("resume_percent", resume_percent),
        ("offline_ms", offline_ms),
        ("sample_every_s", sample_every),
        ("warmup_s", warmup),
    ] {
        report.put(key, value);
    }
    let hub = bench.runtime.block_on(async {
        let builder = bench.redis()?.hub_builder()?;
        Ok::<_, crate::BenchError>(builder.queue_capacity(bench.cli.queue_capacity).connect().await?)
    })?;
    report.put("side", "ssehub");
    report.put("retention_events", hub.retention().map(|r| r.max_events()));
    let figures = soak(bench, &hub, &plan)?;
    report.put("baseline", "none: the figures are read against the run's own samples after the warmup");
    report.add_sides(Some(figures), None);
    hub.close();
    Ok(())
}

/// What the subscriber tasks count, shared.
#[derive(Default)]
struct Counts {
    deliveries: AtomicU64,
    resumes: AtomicU64,
    /// Events the resumes replayed from the retained streams.
    replayed: AtomicU64,
    lagged: AtomicU64,
    /// Events missing, repeated or out of order, gap signals, failed resumes.
    violations: AtomicU64,
    gaps: AtomicU64,
    /// Subscribers whose first subscription is live.
    subscribed: AtomicU64,
    /// Subscribers that got their last expected event.
    finished: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Counts {
    fn violation(&self, what: impl FnOnce() -> String) {
        self.violations.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < FAILURES_KEPT {
            let what = what();
            eprintln!("[bench soak] violation: {what}");
            failures.push(what);
        }
    }
}

/// The sequence number in an event's data (see `workload::data`).
fn seq_of(data: &str) -> Option<u64> {
    let at = data.find("\"seq\":")? + "\"seq\":".len();
    let digits = data[at..].bytes().take_while(u8::is_ascii_digit).count();
    data[at..at + digits].parse().ok()
}

/// One subscriber for its whole life: subscribes, checks every event, reconnects on schedule with its
/// Last-Event-ID, and returns once it has had the last event published for it.
async fn subscriber(
    hub: RedisHub<C>,
    plan: Plan,
    index: usize,
    user: (usize, UserId),
    counts: Arc<Counts>,
    started: Arc<Mutex<Option<tokio::time::Instant>>>,
) {
    let (user_number, user_id) = user;
    let filter = filter_of(index % plan.subs_per_user);
    let Some(mut expected) = plan.first_from(0, user_number, filter) else {
        counts.subscribed.fetch_add(1, Ordering::Relaxed);
        counts.finished.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut stream = match resume(&hub, user_id, None, filter).await {
        Ok(stream) => {
            counts.subscribed.fetch_add(1, Ordering::Relaxed);
            stream
        }
        Err(error) => {
            counts.violation(|| format!("subscriber {index}: first subscribe failed: {error}"));
            return;
        }
    };
    // The publisher starts once every subscriber is live; the reconnect schedule counts from then.
    let period = plan.reconnect_period();
    let offset = period.mul_f64(index as f64 / plan.subscribers() as f64);
    let mut next_reconnect: Option<tokio::time::Instant> = None;
    let publish_end = |start: tokio::time::Instant| start + Duration::from_secs(plan.seconds);
    loop {
        if next_reconnect.is_none() {
            next_reconnect = started.lock().unwrap().map(|start| start + offset);
        }
        let reconnect_at =
            next_reconnect.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(50));
        let mut reconnect = false;
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    let Some(seq) = seq_of(event.data()) else {
                        counts.violation(|| format!("subscriber {index}: an event without a seq: {}", event.data()));
                        continue;
                    };
                    if seq == expected {
                        counts.deliveries.fetch_add(1, Ordering::Relaxed);
                        match plan.first_from(seq + 1, user_number, filter) {
                            Some(next) => expected = next,
                            None => {
                                counts.finished.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    } else if seq > expected {
                        counts.violation(|| format!("subscriber {index}: got event {seq}, expected {expected} first"));
                        expected = plan.first_from(seq + 1, user_number, filter).unwrap_or(u64::MAX);
                    } else {
                        counts.violation(|| format!("subscriber {index}: event {seq} again (or out of order; expected {expected})"));
                    }
                }
                Some(Err(Error::Lagged { .. })) => {
                    counts.lagged.fetch_add(1, Ordering::Relaxed);
                    reconnect = true;
                }
                Some(Err(Error::Gap { last_delivered, .. })) => {
                    counts.gaps.fetch_add(1, Ordering::Relaxed);
                    counts.violation(|| format!("subscriber {index}: gap signalled after {last_delivered:?}"));
                }
                Some(Err(error)) => {
                    counts.violation(|| format!("subscriber {index}: stream error: {error}"));
                    reconnect = true;
                }
                None => {
                    counts.violation(|| format!("subscriber {index}: stream ended"));
                    reconnect = true;
                }
            },
            () = tokio::time::sleep_until(reconnect_at) => {
                if let Some(at) = next_reconnect {
                    let start = started.lock().unwrap().expect("set before the reconnect schedule");
                    next_reconnect = Some(at + period);
                    // Reconnects stop with the publishing, so that the run ends.
                    reconnect = at < publish_end(start);
                }
            }
        }
        if reconnect {
            // The cursor of the last frame, as a browser sends it back.
            let last_event_id = stream.cursor().map(Into::into);
            drop(stream);
            tokio::time::sleep(plan.offline).await;
            stream = loop {
                match resume(&hub, user_id, last_event_id.clone(), filter).await {
                    Ok(stream) => break stream,
                    Err(error) => {
                        counts.violation(|| format!("subscriber {index}: resume failed: {error}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            counts.resumes.fetch_add(1, Ordering::Relaxed);
            counts.replayed.fetch_add(stream.pending_replay() as u64, Ordering::Relaxed);
        }
    }
}

/// Memory samples taken during the run.
#[derive(Default)]
struct Samples {
    at_s: Vec<u64>,
    rss_kib: Vec<u64>,
    redis_bytes: Vec<u64>,
}

/// `(growth of the last sample, growth of the largest)` over the first sample at or after `warmup`
/// seconds, as fractions; `None` when no sample is that late or the run ends there.
fn growth(at_s: &[u64], values: &[u64], warmup: u64) -> Option<(f64, f64)> {
    let first = at_s.iter().position(|&at| at >= warmup)?;
    let base = *values.get(first)? as f64;
    let after = values.get(first + 1..).filter(|rest| !rest.is_empty())?;
    let last = *after.last()? as f64;
    let max = *after.iter().max()? as f64;
    Some((last / base - 1.0, max / base - 1.0))
}

fn soak(bench: &Bench, hub: &RedisHub<C>, plan: &Plan) -> Result<Figures> {
    let hub_stats_before = hub.stats();
    let redis = bench.redis()?;
    let users = workload::users(plan.users);
    let counts = Arc::new(Counts::default());
    let started: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::default();
    bench.progress(format!(
        "{} subscribers on {} users, {} events/s for {} s",
        plan.subscribers(),
        plan.users,
        plan.rate,
        plan.seconds
    ));
    // Every subscriber live before the first publish: its first expected event is then surely its.
    let mut tasks = Vec::with_capacity(plan.subscribers());
    for index in 0..plan.subscribers() {
        let user_number = index / plan.subs_per_user;
        tasks.push(bench.runtime.spawn(subscriber(
            hub.clone(),
            *plan,
            index,
            (user_number, users[user_number]),
            Arc::clone(&counts),
            Arc::clone(&started),
        )));
    }
    bench.runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts.subscribed.load(Ordering::Relaxed) < plan.subscribers() as u64 {
            if Instant::now() > deadline || counts.violations.load(Ordering::Relaxed) > 0 {
                return Err(failed("the subscribers did not all subscribe within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })?;

    // One publisher task per user, as an application publishes a user's events: each after the
    // previous one returned, so the user's events are stored and delivered in sequence order and
    // the check can be strict about order. Different users' publishes run concurrently.
    let publish_failures = Arc::new(AtomicU64::new(0));
    let user_publishers: Vec<_> = (0..plan.users)
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (hub, failures) = (hub.clone(), Arc::clone(&publish_failures));
            bench.runtime.spawn(async move {
                while let Some(event) = rx.recv().await {
                    if hub.publish(event).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            tx
        })
        .collect();
    let publishing = AtomicBool::new(true);
    let mut samples = Samples::default();
    let begun = Instant::now();
    *started.lock().unwrap() = Some(tokio::time::Instant::from_std(begun));
    let published_in = thread::scope(|scope| {
        let sampler = scope.spawn(|| -> Result<Samples> {
            let mut samples = Samples::default();
            let mut tick = 0u64;
            loop {
                let due = begun + plan.sample_every * tick as u32;
                while Instant::now() < due {
                    if !publishing.load(Ordering::Acquire) {
                        return Ok(samples);
                    }
                    thread::sleep(Duration::from_millis(50).min(due - Instant::now()));
                }
                let rss = rss_kib().unwrap_or(0);
                let used = redis.used_memory()?;
                let at = begun.elapsed().as_secs();
                let stats = hub.stats();
                bench.progress(format!(
                    "t={at}s rss={rss} KiB redis used_memory={used} B deliveries={} resumes={} replayed={} \
                     lagged={} violations={} | hub: lagged={} gaps={} reconnects={} recovered={} overflows={}",
                    counts.deliveries.load(Ordering::Relaxed),
                    counts.resumes.load(Ordering::Relaxed),
                    counts.replayed.load(Ordering::Relaxed),
                    counts.lagged.load(Ordering::Relaxed),
                    counts.violations.load(Ordering::Relaxed),
                    stats.lagged,
                    stats.gaps,
                    stats.reconnects,
                    stats.recovered,
                    stats.message_channel_overflows,
                ));
                samples.at_s.push(at);
                samples.rss_kib.push(rss);
                samples.redis_bytes.push(used);
                tick += 1;
            }
        });
        let publisher = scope.spawn(|| {
            for seq in 0..plan.events() {
                let due = begun + Duration::from_nanos(seq * 1_000_000_000 / plan.rate);
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let user = seq as usize % plan.users;
                // A user's publisher task is gone only if the runtime is.
                let _ = user_publishers[user].send(workload::event(users[user], seq, None));
            }
            let seconds = begun.elapsed().as_secs_f64();
            publishing.store(false, Ordering::Release);
            seconds
        });
        let published_in = publisher.join().map_err(|_| failed("the publisher thread panicked"))?;
        samples = sampler.join().map_err(|_| failed("the sampler thread panicked"))??;
        Ok::<_, crate::BenchError>(published_in)
    })?;

    // Every subscriber ends once it has its last event; give the stragglers a minute.
    let unfinished = bench.runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while counts.finished.load(Ordering::Relaxed) < plan.subscribers() as u64 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let unfinished = plan.subscribers() as u64 - counts.finished.load(Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        unfinished
    });

    let expected: u64 = (0..plan.subscribers())
        .map(|index| {
            let (user, filter) = (index / plan.subs_per_user, filter_of(index % plan.subs_per_user));
            let mut seq = plan.first_from(0, user, filter);
            let mut count = 0;
            while let Some(at) = seq {
                count += 1;
                seq = plan.first_from(at + 1, user, filter);
            }
            count
        })
        .sum();
    let mut figures = Figures::default();
    let deliveries = counts.deliveries.load(Ordering::Relaxed);
    let violations = counts.violations.load(Ordering::Relaxed);
    let publish_failures = publish_failures.load(Ordering::Relaxed);
    let exactly_once = deliveries == expected && violations == 0 && unfinished == 0 && publish_failures == 0;
    figures.put("seconds", plan.seconds);
    figures.put("publish_seconds", published_in);
    figures.put("events", plan.events());
    figures.put("achieved_rate", plan.events() as f64 / published_in);
    figures.put("deliveries", deliveries);
    figures.put("expected", expected);
    figures.put("resumes", counts.resumes.load(Ordering::Relaxed));
    figures.put("replayed", counts.replayed.load(Ordering::Relaxed));
    figures.put("lagged", counts.lagged.load(Ordering::Relaxed));
    figures.put("gaps", counts.gaps.load(Ordering::Relaxed));
    figures.put("violations", violations);
    figures.put("publish_failures", publish_failures);
    figures.put("unfinished_subscribers", unfinished);
    figures.put("exactly_once", exactly_once);
    figures.put("sample_at_s", Value::from(samples.at_s.clone()));
    figures.put("rss_kib_samples", Value::from(samples.rss_kib.clone()));
    figures.put("redis_memory_samples", Value::from(samples.redis_bytes.clone()));
    let rss_growth = growth(&samples.at_s, &samples.rss_kib, plan.warmup);
    let redis_growth = growth(&samples.at_s, &samples.redis_bytes, plan.warmup);
    figures.put("rss_growth_after_warmup", rss_growth.map(|(last, _)| last));
    figures.put("rss_max_growth_after_warmup", rss_growth.map(|(_, max)| max));
    figures.put("redis_memory_growth_after_warmup", redis_growth.map(|(last, _)| last));
    figures.put("redis_memory_max_growth_after_warmup", redis_growth.map(|(_, max)| max));
    figures.put("redis_connections", redis.client_count()?);
    let hub_stats = hub.stats();
    figures.put("hub_lagged", hub_stats.lagged - hub_stats_before.lagged);
    figures.put("hub_gaps", hub_stats.gaps - hub_stats_before.gaps);
    figures.put("hub_reconnects", hub_stats.reconnects - hub_stats_before.reconnects);
    figures.put("hub_recovered", hub_stats.recovered - hub_stats_before.recovered);
    figures.put(
        "hub_message_channel_overflows",
        hub_stats.message_channel_overflows - hub_stats_before.message_channel_overflows,
    );
    let flat = match (rss_growth, redis_growth) {
        (Some((_, rss)), Some((_, redis))) => Some(rss < FLAT && redis < FLAT),
        _ => None,
    };
    figures.put("flat", flat);
    if !bench.cli.quick {
        figures.check(flat == Some(true), || {
            format!("memory not flat after the warmup (growth at most {FLAT}): rss {rss_growth:?}, redis {redis_growth:?}")
        });
    }
    figures.check(publish_failures == 0, || format!("{publish_failures} publishes failed"));
    figures.check(unfinished == 0, || format!("{unfinished} subscribers did not get their last event"));
    figures.check(deliveries == expected, || format!("deliveries {deliveries} != expected {expected}"));
    figures.check(violations == 0, || {
        format!("{violations} exactly-once violations: {}", counts.failures.lock().unwrap().join("; "))
    });
    Ok(figures)
}
