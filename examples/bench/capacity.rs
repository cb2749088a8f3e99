//! The capacity scenario (`--backend fred`): the inputs of a capacity plan, each measured on its own Redis.
//!
//! With U users (default 10,000), each on a channel of its own:
//!
//! 1. **Hub memory**: the heap the hub holds for U subscriptions of U users
//!    (a channel and a subscription each), then for U more on the same
//!    users (a subscription each): `hub_bytes_per_subscription`, and the
//!    difference, `hub_bytes_per_channel`. Heap bytes (the counting
//!    allocator), not RSS: what the allocator keeps besides is not per user.
//! 2. **Resubscribe**: `CLIENT KILL TYPE pubsub` drops the hub's subscriber
//!    connection; time until Redis again holds all U + 2 channels on it (the
//!    users', the broadcast channel and the control channel)
//!    (fred's first reconnect delay included): `resubscribe_ms`.
//! 3. **Redis memory and CPU**: one event to each user (`used_memory` grows
//!    by a stream key and an entry each), then R − 1 more to each (entries
//!    only), published 64 at a time as the fanout scenario does and
//!    delivered to one subscription per user: `redis_bytes_per_event`,
//!    `redis_bytes_per_stream_key`, and from `INFO cpu` and
//!    `INFO commandstats` over the second part, `redis_cpu_us_per_event`
//!    and `events_per_script_call`.
//!
//! There is no baseline: these are absolute inputs for arithmetic on paper,
//! each the median of `--rounds` (default 1) runs on a fresh Redis.

#[cfg(feature = "fred")]
pub use fred_side::run;

#[cfg(not(feature = "fred"))]
pub fn run(_bench: &mut crate::Bench, _report: &mut crate::report::Report) -> crate::Result<()> {
    Err(crate::BenchError::Usage(
        "the capacity scenario needs --backend fred (build with --features fred)".into(),
    ))
}

#[cfg(feature = "fred")]
mod fred_side {
    use std::time::{Duration, Instant};

    use futures::{StreamExt, TryStreamExt};
    use ssehub::{CategorySet, EventSource, Publisher, UserId};

    use crate::alloc::HeapCounter;
    use crate::redis::RedisTarget;
    use crate::report::{Figures, Report, median};
    use crate::tally::{Tally, patience};
    use crate::workload::{self, C};
    use crate::{Backend, Bench, BenchError, Result, failed, positive};

    pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
        if bench.cli.backend != Backend::Fred {
            return Err(BenchError::Usage("the capacity scenario is for --backend fred".into()));
        }
        let users = positive(bench.cli.number("users", 10_000, 200)?, "users")?;
        let per_user = positive(bench.cli.number("events-per-user", 100, 5)?, "events-per-user")?;
        if per_user < 2 {
            return Err(BenchError::Usage("--events-per-user must be at least 2".into()));
        }
        let rounds = positive(bench.cli.number("rounds", 1, 1)?, "rounds")?;
        bench.cli.finish()?;
        report.put("users", users as u64);
        report.put("events_per_user", per_user as u64);
        report.put("in_flight", bench.cli.in_flight as u64);
        let mut runs = Vec::new();
        for round in 1..=rounds {
            bench.progress(format!("round {round} of {rounds}"));
            // A fresh Redis each round, so its memory holds this round's keys only.
            let redis = RedisTarget::new(bench.cli.redis_url.clone())?;
            runs.push(bench.runtime.block_on(measure(bench, &redis, users, per_user))?);
        }
        let keys = [
            "hub_bytes_per_subscription",
            "hub_bytes_per_channel",
            "resubscribe_ms",
            "resubscribe_ms_per_10k_channels",
            "redis_bytes_per_event",
            "redis_bytes_per_stream_key",
            "redis_cpu_us_per_event",
            "redis_script_us_per_event",
            "events_per_script_call",
            "events_per_s",
        ];
        for key in keys {
            let values: Vec<f64> = runs.iter().filter_map(|run| run.get(key)).collect();
            report.put(key, (!values.is_empty()).then(|| median(&values)));
        }
        report.put("rounds", rounds as u64);
        for run in runs {
            for failure in run.failures {
                report.add("", failure_only(failure));
            }
        }
        Ok(())
    }

    fn failure_only(failure: String) -> Figures {
        Figures { fields: Vec::new(), failures: vec![failure] }
    }

    /// Channels held by the pubsub clients of the server (the hub's subscriber connection).
    fn pubsub_channels(redis: &RedisTarget) -> Result<u64> {
        let list = redis.command(&["CLIENT", "LIST", "TYPE", "pubsub"])?;
        let text = list.as_str().ok_or_else(|| failed(format!("CLIENT LIST replied {list}")))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                line.split(' ').find_map(|f| f.strip_prefix("sub=")).and_then(|n| n.parse::<u64>().ok())
            })
            .sum())
    }

    async fn subscribe_all(
        hub: &ssehub::fred::RedisHub<C>,
        users: &[UserId],
        in_flight: usize,
    ) -> Result<Vec<ssehub::fred::Subscription<C>>> {
        futures::stream::iter(users.iter().map(|&user| hub.subscribe(user, CategorySet::all())))
            .buffered(in_flight)
            .try_collect()
            .await
            .map_err(|e| failed(format!("subscribe: {e}")))
    }

    async fn publish_round(
        hub: &ssehub::fred::RedisHub<C>,
        users: &[UserId],
        rounds: std::ops::Range<usize>,
        in_flight: usize,
    ) -> Result<()> {
        let events = rounds.flat_map(|round| {
            users
                .iter()
                .enumerate()
                .map(move |(n, &user)| workload::event(user, (round * users.len() + n) as u64, None))
        });
        futures::stream::iter(events)
            .map(|event| hub.publish(event))
            .buffered(in_flight)
            .try_for_each(|()| async { Ok(()) })
            .await
            .map_err(|e| failed(format!("publish: {e}")))
    }

    async fn measure(bench: &Bench, redis: &RedisTarget, users: usize, per_user: usize) -> Result<Figures> {
        let in_flight = bench.cli.in_flight;
        let mut figures = Figures::default();
        let hub = redis.hub_builder()?.connect().await?;
        let ids = workload::users(users);

        // 1. Hub memory: a channel and a subscription per user, then a second subscription per user.
        let heap = HeapCounter::start();
        let first = subscribe_all(&hub, &ids, in_flight).await?;
        let with_channels = heap.allocated();
        let second = subscribe_all(&hub, &ids, in_flight).await?;
        let with_second = heap.allocated();
        drop(heap);
        let per_subscription = (with_second - with_channels) as f64 / users as f64;
        figures.put("hub_bytes_per_subscription", per_subscription);
        figures.put("hub_bytes_per_channel", with_channels as f64 / users as f64 - per_subscription);
        drop(second);

        // 2. Resubscribe after the subscriber connection is dropped.
        // The users' channels, the broadcast channel and the control channel.
        let wanted = users as u64 + 2;
        let settled = Instant::now() + Duration::from_secs(10);
        while pubsub_channels(redis)? != wanted && Instant::now() < settled {
            workload::sleep(Duration::from_millis(5)).await;
        }
        let killed_at = Instant::now();
        redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
        let deadline = killed_at + Duration::from_secs(60);
        let mut seen_drop = false;
        let resubscribed = loop {
            let held = pubsub_channels(redis)?;
            seen_drop |= held < wanted;
            if seen_drop && held == wanted {
                break Some(killed_at.elapsed());
            }
            if Instant::now() >= deadline {
                break None;
            }
            workload::sleep(Duration::from_millis(2)).await;
        };
        figures.check(resubscribed.is_some(), || {
            format!("the hub did not hold its {wanted} channels again within 60 s")
        });
        let resubscribe_ms = resubscribed.map(|d| d.as_secs_f64() * 1000.0);
        figures.put("resubscribe_ms", resubscribe_ms);
        figures
            .put("resubscribe_ms_per_10k_channels", resubscribe_ms.map(|ms| ms * 10_000.0 / wanted as f64));

        // 3. Redis memory per stream key and per entry, and CPU per publish, delivering to one subscription per user.
        let mut tally = Tally::new(users);
        for (n, subscription) in first.into_iter().enumerate() {
            tally.spawn(bench.runtime.handle(), n, subscription, per_user as u64, |_| {});
        }
        let before = redis.info_number("memory", "used_memory")?;
        publish_round(&hub, &ids, 0..1, in_flight).await?;
        let with_keys = redis.info_number("memory", "used_memory")?;
        redis.command(&["CONFIG", "RESETSTAT"])?;
        let cpu_before = redis.cpu_seconds()?;
        let started = Instant::now();
        publish_round(&hub, &ids, 1..per_user, in_flight).await?;
        let published = Instant::now();
        let cpu = redis.cpu_seconds()? - cpu_before;
        let (script_calls, script_usec) = redis.command_stats("evalsha")?;
        let finished = tally.wait(patience(tally.expected())).await;
        let expected = tally.expected();
        let (deliveries, failures) = tally.finish(Duration::from_millis(100)).await;
        figures.failures.extend(failures);
        figures.check(finished.is_some() && deliveries == expected, || {
            format!("deliveries {deliveries} != expected {expected}")
        });
        let after = redis.info_number("memory", "used_memory")?;
        let later_events = (users * (per_user - 1)) as f64;
        let per_event = (after - with_keys) / later_events;
        figures.put("redis_bytes_per_event", per_event);
        figures.put("redis_bytes_per_stream_key", (with_keys - before) / users as f64 - per_event);
        figures.put("redis_cpu_us_per_event", cpu * 1e6 / later_events);
        figures.put("redis_script_us_per_event", script_usec / later_events);
        figures.put("events_per_script_call", (script_calls > 0.0).then(|| later_events / script_calls));
        figures.put("events_per_s", later_events / published.duration_since(started).as_secs_f64());
        hub.close();
        Ok(figures)
    }
}
