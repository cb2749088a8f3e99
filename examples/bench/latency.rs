//! The latency scenario: events at a fixed rate, round-robin over N users with one subscriber each, publish-to-delivery time at every subscriber.
//!
//! A publisher thread paces the events; each carries the instant it was
//! handed to `publish` (in its data) and is published from a task spawned on
//! the runtime, as a request handler would. Every subscriber records now
//! minus that instant for each event it receives.
//!
//! Baselines: for `memory`, the same events as `Arc`s through one bounded
//! `async-channel` per subscriber; for `fred`, raw fred pub/sub: PUBLISH to
//! the users' channels, one subscriber connection, the instant read from the
//! raw message (no fan-out after it). `ratio` is the baseline's p99 over
//! ssehub's.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ssehub::CategorySet;

use crate::report::{Figures, Report, Rounds, ratio};
use crate::tally::{Tally, patience};
use crate::workload::{self, C, Hub, category_of, now_ns, sent_ns};
use crate::{Backend, Bench, Result, failed, positive};

struct Plan {
    rate: u64,
    seconds: u64,
    subs: usize,
}

impl Plan {
    fn events(&self) -> u64 {
        self.rate * self.seconds
    }

    /// Events to subscriber (user) number `sub`.
    fn events_to(&self, sub: usize) -> u64 {
        (sub as u64..self.events()).step_by(self.subs).count() as u64
    }
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let rate = bench.cli.number("rate", 5_000, 500)?;
    let seconds = bench.cli.number("seconds", 10, 1)?;
    let subs = positive(bench.cli.number("subs", 1_000, 20)?, "subs")?;
    let rounds = positive(bench.cli.number("rounds", 1, 1)?, "rounds")?;
    bench.cli.finish()?;
    positive(rate, "rate")?;
    positive(seconds, "seconds")?;
    let plan = Plan { rate, seconds, subs };
    report.put("rate", rate);
    report.put("seconds", seconds);
    report.put("subs", subs as u64);

    let bench: &Bench = bench;
    let rounds = Rounds::run(
        bench,
        rounds,
        "p99_us",
        || match bench.cli.backend {
            Backend::Memory => {
                let hub = ssehub::memory::MemoryHub::<C>::builder()
                    .queue_capacity(bench.cli.queue_capacity)
                    .build();
                hub_side(bench, hub, &plan)
            }
            #[cfg(feature = "fred")]
            Backend::Fred => {
                let hub = bench.runtime.block_on(async {
                    let builder = bench.redis()?.hub_builder()?;
                    Ok::<_, crate::BenchError>(
                        builder.queue_capacity(bench.cli.queue_capacity).connect().await?,
                    )
                })?;
                hub_side(bench, hub, &plan)
            }
            #[cfg(not(feature = "fred"))]
            Backend::Fred => unreachable!("rejected when parsing the command line"),
        },
        || match bench.cli.backend {
            Backend::Memory => channel_baseline(bench, &plan),
            #[cfg(feature = "fred")]
            Backend::Fred => fred_side::raw_pubsub_baseline(bench, &plan),
            #[cfg(not(feature = "fred"))]
            Backend::Fred => unreachable!("rejected when parsing the command line"),
        },
        |ssehub, baseline| ratio(baseline.get("p99_us"), ssehub.get("p99_us")),
    )?;
    let of_medians = match (&rounds.ssehub, &rounds.baseline) {
        (Some(s), Some(b)) => ratio(b.get("p99_us"), s.get("p99_us")),
        _ => None,
    };
    rounds.put_ratio(report, "baseline_p99_us / p99_us", of_medians);
    report.put(
        "baseline",
        match bench.cli.backend {
            Backend::Memory => "Arc<T> through one bounded async-channel per subscriber",
            Backend::Fred => "raw fred pub/sub: PUBLISH, one subscriber connection, no fan-out",
        },
    );
    report.add_sides(rounds.ssehub, rounds.baseline);
    Ok(())
}

/// Publish-to-delivery times of one subscriber, in nanoseconds.
type Samples = Arc<Mutex<Vec<u64>>>;

/// Records into `samples` the latency of a delivery whose data is `data`.
fn record(samples: &Samples, data: &[u8]) {
    if let Some(sent) = sent_ns(data) {
        samples.lock().unwrap().push(now_ns().saturating_sub(sent));
    }
}

/// Calls `publish(seq)` for every event, paced at `rate` per second from now; returns the seconds it took.
fn pace(plan: &Plan, mut publish: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    for seq in 0..plan.events() {
        let due = started + Duration::from_nanos(seq * 1_000_000_000 / plan.rate);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        publish(seq);
    }
    started.elapsed().as_secs_f64()
}

/// Puts the figures: deliveries against expected, and the latency percentiles.
fn latency_figures(
    figures: &mut Figures,
    plan: &Plan,
    published_in: f64,
    deliveries: u64,
    expected: u64,
    samples: &[Samples],
    failures: Vec<String>,
) {
    let mut all: Vec<u64> = samples.iter().flat_map(|s| s.lock().unwrap().clone()).collect();
    all.sort_unstable();
    let percentile = |p: f64| -> Option<f64> {
        let rank = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len().max(1));
        all.get(rank - 1).map(|&ns| ns as f64 / 1e3)
    };
    figures.put("deliveries", deliveries);
    figures.put("expected", expected);
    figures.put("achieved_rate", plan.events() as f64 / published_in);
    figures.put("p50_us", percentile(0.50));
    figures.put("p90_us", percentile(0.90));
    figures.put("p99_us", percentile(0.99));
    figures.put("p999_us", percentile(0.999));
    figures.put("max_us", all.last().map(|&ns| ns as f64 / 1e3));
    figures.check(deliveries == expected, || format!("deliveries {deliveries} != expected {expected}"));
    figures.failures.extend(failures);
}

/// ssehub's side on any backend.
fn hub_side<H: Hub>(bench: &Bench, hub: H, plan: &Plan) -> Result<Figures> {
    let users = workload::users(plan.subs);
    let mut tally = Tally::new(plan.subs);
    let mut samples = Vec::with_capacity(plan.subs);
    for (sub, &user) in users.iter().enumerate() {
        let subscription = bench.runtime.block_on(hub.subscribe(user, CategorySet::all()))?;
        let mine: Samples = Arc::new(Mutex::new(Vec::with_capacity(plan.events_to(sub) as usize)));
        samples.push(Arc::clone(&mine));
        tally.spawn(
            bench.runtime.handle(),
            sub,
            subscription,
            plan.events_to(sub),
            move |event: &ssehub::Event<C>| record(&mine, event.data().as_bytes()),
        );
    }
    let publish_failures = Arc::new(AtomicU64::new(0));
    let runtime = bench.runtime.handle().clone();
    let published_in = thread::scope(|scope| {
        scope
            .spawn(|| {
                pace(plan, |seq| {
                    let event = workload::event(users[seq as usize % plan.subs], seq, Some(now_ns()));
                    let hub = hub.clone();
                    let failures = Arc::clone(&publish_failures);
                    runtime.spawn(async move {
                        if hub.publish(event).await.is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                })
            })
            .join()
            .map_err(|_| failed("the publisher thread panicked"))
    })?;
    let (deliveries, expected, failures) = bench.runtime.block_on(async {
        tally.wait(patience(tally.expected())).await;
        let expected = tally.expected();
        let (deliveries, failures) = tally.finish(Duration::from_millis(100)).await;
        (deliveries, expected, failures)
    });
    let mut figures = Figures::default();
    latency_figures(&mut figures, plan, published_in, deliveries, expected, &samples, failures);
    let publish_failures = publish_failures.load(Ordering::Relaxed);
    figures.check(publish_failures == 0, || format!("{publish_failures} publishes failed"));
    drop(hub);
    Ok(figures)
}

/// One event of the memory baseline.
#[allow(dead_code)]
struct RawEvent {
    seq: u64,
    category: C,
    data: Box<str>,
}

/// The memory baseline: each event through its subscriber's bounded channel.
fn channel_baseline(bench: &Bench, plan: &Plan) -> Result<Figures> {
    let mut tally = Tally::new(plan.subs);
    let mut samples = Vec::with_capacity(plan.subs);
    let mut senders = Vec::with_capacity(plan.subs);
    for sub in 0..plan.subs {
        let (tx, rx) = async_channel::bounded::<Arc<RawEvent>>(bench.cli.queue_capacity);
        senders.push(tx);
        let mine: Samples = Arc::new(Mutex::new(Vec::with_capacity(plan.events_to(sub) as usize)));
        samples.push(Arc::clone(&mine));
        let stream = rx.map(Ok::<_, Infallible>);
        tally.spawn(
            bench.runtime.handle(),
            sub,
            stream,
            plan.events_to(sub),
            move |event: &Arc<RawEvent>| record(&mine, event.data.as_bytes()),
        );
    }
    let senders = Arc::new(senders);
    let publish_failures = Arc::new(AtomicU64::new(0));
    let runtime = bench.runtime.handle().clone();
    let published_in = thread::scope(|scope| {
        scope
            .spawn(|| {
                pace(plan, |seq| {
                    let event = Arc::new(RawEvent {
                        seq,
                        category: category_of(seq),
                        data: workload::data(seq, Some(now_ns())).into(),
                    });
                    let senders = Arc::clone(&senders);
                    let failures = Arc::clone(&publish_failures);
                    runtime.spawn(async move {
                        if senders[seq as usize % senders.len()].send(event).await.is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                })
            })
            .join()
            .map_err(|_| failed("the publisher thread panicked"))
    })?;
    let (deliveries, expected, failures) = bench.runtime.block_on(async {
        tally.wait(patience(tally.expected())).await;
        let expected = tally.expected();
        let (deliveries, failures) = tally.finish(Duration::from_millis(100)).await;
        (deliveries, expected, failures)
    });
    let mut figures = Figures::default();
    latency_figures(&mut figures, plan, published_in, deliveries, expected, &samples, failures);
    let publish_failures = publish_failures.load(Ordering::Relaxed);
    figures.check(publish_failures == 0, || format!("{publish_failures} publishes failed"));
    Ok(figures)
}

#[cfg(feature = "fred")]
mod fred_side {
    //! The latency scenario's raw fred pub/sub baseline.

    use super::*;
    use crate::redis::envelope;
    use ssehub::fred::client::interfaces::{ClientLike, EventInterface, PubsubInterface};
    use ssehub::fred::client::types::Value as RedisValue;

    pub fn raw_pubsub_baseline(bench: &Bench, plan: &Plan) -> Result<Figures> {
        let redis = bench.redis()?;
        let users = workload::users(plan.subs);
        let channels: Vec<String> = users.iter().map(|&user| redis.user_channel(user)).collect();
        let (subscriber, publisher) = bench.runtime.block_on(async {
            let subscriber = redis.raw_subscriber().await?;
            subscriber.subscribe(channels.clone()).await.map_err(|e| failed(format!("SUBSCRIBE: {e}")))?;
            subscriber.ping::<RedisValue>(None).await.map_err(|e| failed(format!("PING: {e}")))?;
            Ok::<_, crate::BenchError>((subscriber, redis.raw_commands().await?))
        })?;
        let mut rx = subscriber.message_rx();
        let (tx, messages) = async_channel::unbounded::<std::result::Result<(), String>>();
        let samples: Samples = Arc::new(Mutex::new(Vec::with_capacity(plan.events() as usize)));
        let forwarder = bench.runtime.spawn({
            let samples = Arc::clone(&samples);
            async move {
                loop {
                    match rx.recv().await {
                        Ok(message) => {
                            if let Some(bytes) = message.value.as_bytes() {
                                record(&samples, bytes);
                            }
                            if tx.send(Ok(())).await.is_err() {
                                break;
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Err(format!("subscriber channel: {error}"))).await;
                            break;
                        }
                    }
                }
            }
        });
        let mut tally = Tally::new(1);
        tally.spawn(bench.runtime.handle(), 0, messages, plan.events(), |_| {});
        let publish_failures = Arc::new(AtomicU64::new(0));
        let runtime = bench.runtime.handle().clone();
        let published_in = thread::scope(|scope| {
            scope
                .spawn(|| {
                    pace(plan, |seq| {
                        let user = users[seq as usize % plan.subs];
                        let payload = envelope(&workload::event(user, seq, Some(now_ns())));
                        let channel = channels[seq as usize % plan.subs].clone();
                        let publisher = publisher.clone();
                        let failures = Arc::clone(&publish_failures);
                        runtime.spawn(async move {
                            if publisher.next().publish::<i64, _, _>(channel, payload).await.is_err() {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    })
                })
                .join()
                .map_err(|_| failed("the publisher thread panicked"))
        })?;
        let (deliveries, expected, failures) = bench.runtime.block_on(async {
            tally.wait(patience(tally.expected())).await;
            let expected = tally.expected();
            let (deliveries, failures) = tally.finish(Duration::from_millis(200)).await;
            forwarder.abort();
            let _ = subscriber.quit().await;
            let _ = publisher.quit().await;
            (deliveries, expected, failures)
        });
        let mut figures = Figures::default();
        latency_figures(&mut figures, plan, published_in, deliveries, expected, &[samples], failures);
        let publish_failures = publish_failures.load(Ordering::Relaxed);
        figures.check(publish_failures == 0, || format!("{publish_failures} publishes failed"));
        Ok(figures)
    }
}
