//! The idle scenario: open U×S subscriptions, wait until all are live, and measure their memory and the subscribe rate.
//!
//! Memory is measured two ways: the process's resident set growth
//! (`/proc/self/status` `VmRSS`, what the OS charges, allocator overhead
//! included: `bytes_per_subscription`) and the net heap bytes allocated
//! meanwhile (a counting allocator: `heap_bytes_per_subscription`). The
//! subscription handles live in a vector reserved beforehand; its
//! `handle_bytes` each are reported apart. ssehub runs first by default so
//! that its resident set growth is not hidden by memory freed by the baseline.
//!
//! Baselines: for `memory`, one `async-channel` per subscription (unbounded,
//! which allocates no buffer until used); for `fred`, one raw fred subscriber
//! connection SUBSCRIBEd to the U user channels. `ratio` is the baseline's
//! bytes per subscription over ssehub's.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ssehub::{Audience, Event, UserId};

use crate::alloc::HeapCounter;
use crate::report::{Figures, Report, Rounds, peak_rss_kib, ratio, reset_peak_rss, rss_kib};
use crate::workload::{self, C, Hub, filter_of, within};
use crate::{Backend, Bench, Result, positive};

struct Plan {
    users: usize,
    subs: usize,
}

impl Plan {
    fn subscriptions(&self) -> usize {
        self.users * self.subs
    }
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let users = positive(bench.cli.number("users", 10_000, 100)?, "users")?;
    let subs = positive(bench.cli.number("subs", 10, 5)?, "subs")?;
    let rounds = positive(bench.cli.number("rounds", 1, 1)?, "rounds")?;
    bench.cli.finish()?;
    let plan = Plan { users, subs };
    report.put("users", users as u64);
    report.put("subs_per_user", subs as u64);
    report.put("in_flight", bench.cli.in_flight as u64);

    let bench: &Bench = bench;
    let basis = "baseline_bytes_per_subscription / bytes_per_subscription";
    let rounds = Rounds::run(
        bench,
        rounds,
        "bytes_per_subscription",
        || match bench.cli.backend {
            Backend::Memory => {
                let hub = ssehub::memory::MemoryHub::<C>::builder()
                    .queue_capacity(bench.cli.queue_capacity)
                    .build();
                bench.runtime.block_on(hub_side(bench, hub, &plan, || Ok(0)))
            }
            #[cfg(feature = "fred")]
            Backend::Fred => fred_side::hub(bench, &plan),
            #[cfg(not(feature = "fred"))]
            Backend::Fred => unreachable!("rejected when parsing the command line"),
        },
        || match bench.cli.backend {
            Backend::Memory => Ok(channel_baseline(&plan)),
            #[cfg(feature = "fred")]
            Backend::Fred => fred_side::raw_subscribe_baseline(bench, &plan),
            #[cfg(not(feature = "fred"))]
            Backend::Fred => unreachable!("rejected when parsing the command line"),
        },
        |ssehub, baseline| {
            ratio(baseline.get("bytes_per_subscription"), ssehub.get("bytes_per_subscription"))
        },
    )?;
    let of_medians = match (&rounds.ssehub, &rounds.baseline) {
        (Some(s), Some(b)) => ratio(b.get("bytes_per_subscription"), s.get("bytes_per_subscription")),
        _ => None,
    };
    rounds.put_ratio(report, basis, of_medians);
    report.put(
        "baseline",
        match bench.cli.backend {
            Backend::Memory => "one async-channel per subscription (unbounded: no buffer until used)",
            Backend::Fred => "one raw fred subscriber connection SUBSCRIBEd to the user channels",
        },
    );
    report.add_sides(rounds.ssehub, rounds.baseline);
    Ok(())
}

/// Memory and time figures of `count` subscriptions opened in `seconds`.
struct Footprint {
    rss_before_kib: Option<u64>,
    heap: HeapCounter,
    started: Instant,
}

impl Footprint {
    fn start() -> Self {
        let rss_before_kib = rss_kib();
        reset_peak_rss();
        Self { rss_before_kib, heap: HeapCounter::start(), started: Instant::now() }
    }

    /// Puts the figures, `count` subscriptions having been opened since `start`.
    fn put(&self, figures: &mut Figures, count: usize, seconds: f64) {
        let heap = self.heap.allocated();
        let rss_growth_kib =
            rss_kib().zip(self.rss_before_kib).map(|(after, before)| after.saturating_sub(before));
        figures.put("subscriptions", count as u64);
        figures.put("seconds", seconds);
        figures.put("subscribe_per_s", count as f64 / seconds);
        figures.put("rss_growth_kib", rss_growth_kib);
        figures.put("bytes_per_subscription", rss_growth_kib.map(|kib| kib as f64 * 1024.0 / count as f64));
        figures.put("heap_bytes_per_subscription", heap as f64 / count as f64);
        figures.put("peak_rss_kib", peak_rss_kib());
    }
}

/// ssehub's side on any backend.
async fn hub_side<H: Hub>(
    bench: &Bench,
    hub: H,
    plan: &Plan,
    connections: impl Fn() -> Result<u64>,
) -> Result<Figures> {
    let users = workload::users(plan.users);
    let wanted: Vec<(UserId, usize)> =
        users.iter().flat_map(|&user| (0..plan.subs).map(move |s| (user, s))).collect();
    let mut subscriptions = Vec::with_capacity(plan.subscriptions());
    let footprint = Footprint::start();
    let mut opening = futures::stream::iter(wanted)
        .map(|(user, s)| hub.subscribe(user, filter_of(s)))
        .buffer_unordered(bench.cli.in_flight);
    while let Some(subscription) = opening.next().await {
        subscriptions.push(subscription?);
    }
    drop(opening);
    let seconds = footprint.started.elapsed().as_secs_f64();
    let mut figures = Figures::default();
    footprint.put(&mut figures, subscriptions.len(), seconds);
    drop(footprint);
    figures.put("handle_bytes", std::mem::size_of::<H::Subscription>() as u64);
    figures.put("redis_connections", connections()?);

    // Live means a publish now reaches every one of them.
    let probe = Event::new(Audience::Broadcast, workload::EVENT_TYPE, C::DataSync, workload::data(0, None))
        .expect("the bench's event type is valid");
    hub.publish(probe.clone()).await?;
    let mut live = 0u64;
    for subscription in &mut subscriptions {
        if let Some(Some(Ok(event))) = within(Duration::from_secs(10), subscription.next()).await {
            live += u64::from(event.id() == probe.id());
        }
    }
    figures.put("live", live);
    let count = subscriptions.len() as u64;
    figures.check(live == count, || format!("{live} of {count} subscriptions received a broadcast"));
    figures.check(count == plan.subscriptions() as u64, || "not every subscription opened".into());
    drop(subscriptions);
    drop(hub);
    Ok(figures)
}

/// The memory baseline: one channel per subscription. Unbounded, because a
/// bounded `async-channel` allocates its whole capacity up front (16 KiB at
/// 1024 events: 1.6 GiB for 100,000); an unbounded one, like ssehub's
/// queues, allocates only once events wait in it.
fn channel_baseline(plan: &Plan) -> Figures {
    let mut channels = Vec::with_capacity(plan.subscriptions());
    let footprint = Footprint::start();
    for _ in 0..plan.subscriptions() {
        channels.push(async_channel::unbounded::<Event<C>>());
    }
    let seconds = footprint.started.elapsed().as_secs_f64();
    let mut figures = Figures::default();
    footprint.put(&mut figures, channels.len(), seconds);
    drop(footprint);
    figures.put(
        "handle_bytes",
        std::mem::size_of::<(async_channel::Sender<Event<C>>, async_channel::Receiver<Event<C>>)>() as u64,
    );
    figures.put("redis_connections", 0u64);
    let probe = workload::event(workload::users(1)[0], 0, None);
    let live = channels
        .iter()
        .filter(|(tx, rx)| tx.try_send(probe.clone()).is_ok() && rx.try_recv().is_ok())
        .count() as u64;
    figures.put("live", live);
    figures.check(live == channels.len() as u64, || {
        format!("{live} of {} channels carried an event", channels.len())
    });
    figures
}

#[cfg(feature = "fred")]
mod fred_side {
    //! The idle scenario on Redis: the hub, and one raw subscriber connection.

    use super::*;
    use crate::failed;
    use ssehub::fred::client::interfaces::{ClientLike, EventInterface, PubsubInterface};
    use ssehub::fred::client::types::Value as RedisValue;

    pub fn hub(bench: &Bench, plan: &Plan) -> Result<Figures> {
        let redis = bench.redis()?;
        bench.runtime.block_on(async {
            let before = redis.settled_client_count().await?;
            let hub = redis.hub_builder()?.queue_capacity(bench.cli.queue_capacity).connect().await?;
            hub_side(bench, hub, plan, || Ok(redis.client_count()?.saturating_sub(before))).await
        })
    }

    /// One raw subscriber connection, SUBSCRIBEd to the U user channels.
    pub fn raw_subscribe_baseline(bench: &Bench, plan: &Plan) -> Result<Figures> {
        let redis = bench.redis()?;
        bench.runtime.block_on(async {
            let before = redis.settled_client_count().await?;
            let subscriber = redis.raw_subscriber().await?;
            let channels: Vec<String> =
                workload::users(plan.users).into_iter().map(|u| redis.user_channel(u)).collect();
            let footprint = Footprint::start();
            let subscribing = futures::stream::iter(channels.clone())
                .map(|channel| {
                    let subscriber = &subscriber;
                    async move { subscriber.subscribe(channel).await }
                })
                .buffer_unordered(bench.cli.in_flight)
                .collect::<Vec<_>>()
                .await;
            if let Some(Err(e)) = subscribing.into_iter().find(|subscribed| subscribed.is_err()) {
                return Err(failed(format!("SUBSCRIBE: {e}")));
            }
            // A round trip on the subscriber connection: every SUBSCRIBE before it is live.
            subscriber.ping::<RedisValue>(None).await.map_err(|e| failed(format!("PING: {e}")))?;
            let seconds = footprint.started.elapsed().as_secs_f64();
            let mut figures = Figures::default();
            footprint.put(&mut figures, channels.len(), seconds);
            drop(footprint);
            figures.put("redis_connections", redis.client_count()?.saturating_sub(before));

            let mut rx = subscriber.message_rx();
            let publisher = redis.raw_commands().await?;
            for channel in &channels {
                publisher
                    .next()
                    .publish::<i64, _, _>(channel.as_str(), "live?")
                    .await
                    .map_err(|e| failed(format!("PUBLISH: {e}")))?;
            }
            let mut live = 0u64;
            while live < channels.len() as u64 {
                match within(Duration::from_secs(10), rx.recv()).await {
                    Some(Ok(_)) => live += 1,
                    _ => break,
                }
            }
            figures.put("live", live);
            figures.check(live == channels.len() as u64, || {
                format!("{live} of {} channels carried a message", channels.len())
            });
            let _ = subscriber.quit().await;
            let _ = publisher.quit().await;
            Ok(figures)
        })
    }
}
