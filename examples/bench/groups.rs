//! The groups scenario (`--backend fred`): one event to a group of M members over 4 hubs, against the same delivery as M user events, and beside broadcasts to the same subscribers.
//!
//! M members (default 10,000) are spread over 4 hubs sharing one Redis, one
//! subscription each. Three phases, each on fresh subscriptions, each
//! delivering E events (default 20) to every member:
//!
//! 1. **group**: E events to `Audience::Group(team)`; each subscription reads
//!    its user and the group.
//! 2. **users** (the baseline, how it is done without groups): each of the E
//!    events published as M user events, one per member, 64 publishes in
//!    flight (the hub batches them into script calls).
//! 3. **broadcast**: E broadcasts to the same subscribers, for the fan-out
//!    throughput a group delivery is held against.
//!
//! For each: `redis_cpu_us_per_delivery` (`INFO cpu` over the phase, divided
//! by the M × E deliveries), `publish_calls` (the hub's script calls, from
//! `INFO commandstats`; run with `--no-presence` to leave the presence
//! script's calls out), `redis_bytes_retained` (`MEMORY USAGE` of the streams
//! the phase wrote; the users', 200 sampled and scaled), `publish_to_last_delivery_ms` and
//! `deliveries_per_s`. `ratio` is the users phase's Redis CPU per delivery
//! over the group phase's; `group_vs_broadcast_throughput` the group phase's
//! deliveries per second over the broadcast phase's.
//!
//! Then, on one hub:
//!
//! 4. **replay with G groups** (default 8): the user's stream, the
//!    broadcasts and G group streams hold H events each (default 100,000);
//!    `missed_since` after the 11th newest entry of each (a cursor), `--reps`
//!    times: `replay_median_ms`, `replay_script_calls` per replay (one on one
//!    server) and the events it returned (10 per stream).
//! 5. **idle cost**: the heap a hub holds per idle subscription of M users,
//!    each reading the same G groups, against M reading none:
//!    `idle_bytes_per_subscription_with_groups`, `idle_bytes_per_subscription`.

#[cfg(feature = "fred")]
pub use fred_side::run;

#[cfg(not(feature = "fred"))]
pub fn run(_bench: &mut crate::Bench, _report: &mut crate::report::Report) -> crate::Result<()> {
    Err(crate::BenchError::Usage(
        "the groups scenario needs --backend fred (build with --features fred)".into(),
    ))
}

#[cfg(feature = "fred")]
mod fred_side {
    use std::time::{Duration, Instant};

    use futures::{StreamExt, TryStreamExt};
    use ssehub::fred::RedisHub;
    use ssehub::{Audience, CategorySet, Event, EventSource, GroupId, Groups, Publisher, Reader, UserId};

    use crate::alloc::HeapCounter;
    use crate::redis::RedisTarget;
    use crate::report::{Figures, Report, median, ratio};
    use crate::tally::{Tally, patience};
    use crate::workload::{self, C};
    use crate::{Backend, Bench, BenchError, Result, failed, positive};

    /// The hubs the members are spread over.
    const HUBS: usize = 4;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Phase {
        Group,
        Users,
        Broadcast,
    }

    impl Phase {
        fn name(self) -> &'static str {
            match self {
                Phase::Group => "group",
                Phase::Users => "users",
                Phase::Broadcast => "broadcast",
            }
        }
    }

    pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
        if bench.cli.backend != Backend::Fred {
            return Err(BenchError::Usage("the groups scenario is for --backend fred".into()));
        }
        let members = positive(bench.cli.number("members", 10_000, 200)?, "members")?;
        let events = positive(bench.cli.number("events", 20, 3)?, "events")?;
        let rounds = positive(bench.cli.number("rounds", 1, 1)?, "rounds")?;
        let replay_history = positive(bench.cli.number("replay-history", 100_000, 300)?, "replay-history")?;
        let replay_groups = bench.cli.number("replay-groups", 8, 8)? as usize;
        let reps = positive(bench.cli.number("reps", 7, 3)?, "reps")?;
        bench.cli.finish()?;
        if replay_history <= TAIL || replay_groups > ssehub::MAX_GROUPS {
            return Err(BenchError::Usage(format!(
                "--replay-history must be above {TAIL}, --replay-groups at most {}",
                ssehub::MAX_GROUPS
            )));
        }
        report.put("replay_history", replay_history as u64);
        report.put("replay_groups", replay_groups as u64);
        report.put("reps", reps as u64);
        report.put("members", members as u64);
        report.put("events", events as u64);
        report.put("hubs", HUBS as u64);
        report.put("in_flight", bench.cli.in_flight as u64);
        let mut runs: Vec<Vec<(Phase, Figures)>> = Vec::new();
        for round in 1..=rounds {
            bench.progress(format!("round {round} of {rounds}"));
            // A fresh Redis each round: its memory and counters hold this round's work only.
            let redis = RedisTarget::new(bench.cli.redis_url.clone())?;
            runs.push(bench.runtime.block_on(measure(bench, &redis, members, events))?);
        }
        let keys = [
            "redis_cpu_us_per_delivery",
            "publish_calls",
            "redis_bytes_retained",
            "publish_to_last_delivery_ms",
            "deliveries_per_s",
        ];
        for phase in [Phase::Group, Phase::Users, Phase::Broadcast] {
            for key in keys {
                let values: Vec<f64> = runs
                    .iter()
                    .flat_map(|run| run.iter().filter(|(p, _)| *p == phase))
                    .filter_map(|(_, figures)| figures.get(key))
                    .collect();
                report.put(&format!("{}_{key}", phase.name()), (!values.is_empty()).then(|| median(&values)));
            }
        }
        let figure = |phase: Phase, key: &str| -> Option<f64> {
            let values: Vec<f64> = runs
                .iter()
                .flat_map(|run| run.iter().filter(|(p, _)| *p == phase))
                .filter_map(|(_, figures)| figures.get(key))
                .collect();
            (!values.is_empty()).then(|| median(&values))
        };
        report.put(
            "ratio",
            ratio(
                figure(Phase::Users, "redis_cpu_us_per_delivery"),
                figure(Phase::Group, "redis_cpu_us_per_delivery"),
            ),
        );
        report.put(
            "group_vs_broadcast_throughput",
            ratio(figure(Phase::Group, "deliveries_per_s"), figure(Phase::Broadcast, "deliveries_per_s")),
        );
        report.put("rounds", rounds as u64);
        bench.progress(format!("replay: {replay_groups} groups, {replay_history} events per stream"));
        let redis = RedisTarget::new(bench.cli.redis_url.clone())?;
        let replay =
            bench.runtime.block_on(replay_with_groups(bench, &redis, replay_history, replay_groups, reps))?;
        bench.progress(format!("idle: {members} subscriptions with {replay_groups} groups, then without"));
        let redis = RedisTarget::new(bench.cli.redis_url.clone())?;
        let idle = bench.runtime.block_on(idle_cost(bench, &redis, members, replay_groups))?;
        for figures in [replay, idle] {
            for (key, value) in figures.fields {
                report.put(key, value);
            }
            for failure in figures.failures {
                report.add("", Figures { fields: Vec::new(), failures: vec![failure] });
            }
        }
        for run in runs {
            for (_, figures) in run {
                for failure in figures.failures {
                    report.add("", Figures { fields: Vec::new(), failures: vec![failure] });
                }
            }
        }
        Ok(())
    }

    async fn measure(
        bench: &Bench,
        redis: &RedisTarget,
        members: usize,
        events: usize,
    ) -> Result<Vec<(Phase, Figures)>> {
        let mut hubs = Vec::new();
        for _ in 0..HUBS {
            hubs.push(redis.hub_builder()?.connect().await?);
        }
        let users = workload::users(members);
        let team = GroupId::from_uuid(*ssehub::EventId::new().as_uuid());
        let mut phases = Vec::new();
        for phase in [Phase::Group, Phase::Users, Phase::Broadcast] {
            bench.progress(format!("{} phase: {members} members, {events} events each", phase.name()));
            phases.push((phase, run_phase(bench, redis, &hubs, &users, team, events, phase).await?));
        }
        for hub in &hubs {
            hub.close();
        }
        Ok(phases)
    }

    async fn run_phase(
        bench: &Bench,
        redis: &RedisTarget,
        hubs: &[RedisHub<C>],
        users: &[UserId],
        team: GroupId,
        events: usize,
        phase: Phase,
    ) -> Result<Figures> {
        let in_flight = bench.cli.in_flight;
        let groups = Groups::new([team]).map_err(failed)?;
        // Member n on hub n % HUBS; every phase subscribes afresh.
        let subscribe = users.iter().enumerate().map(|(n, &user)| {
            let reader = match phase {
                Phase::Group => Reader::new(user, groups.clone()),
                Phase::Users | Phase::Broadcast => Reader::from(user),
            };
            hubs[n % HUBS].subscribe(reader, CategorySet::all())
        });
        let subscriptions: Vec<_> = futures::stream::iter(subscribe)
            .buffered(in_flight)
            .try_collect()
            .await
            .map_err(|e| failed(format!("subscribe: {e}")))?;
        let mut tally = Tally::new(users.len());
        for (n, subscription) in subscriptions.into_iter().enumerate() {
            tally.spawn(bench.runtime.handle(), n, subscription, events as u64, |_| {});
        }
        let mut figures = Figures::default();
        redis.command(&["CONFIG", "RESETSTAT"])?;
        let cpu_before = redis.cpu_seconds()?;
        let started = Instant::now();
        let to_publish: Vec<Event<C>> = match phase {
            Phase::Group => (0..events).map(|n| group_event(team, n)).collect(),
            Phase::Broadcast => (0..events).map(broadcast_event).collect(),
            Phase::Users => (0..events)
                .flat_map(|round| {
                    users
                        .iter()
                        .enumerate()
                        .map(move |(n, &user)| workload::event(user, (round * users.len() + n) as u64, None))
                })
                .collect(),
        };
        // Publishes go out from every hub in turn, `in_flight` at a time.
        let publishes = to_publish.into_iter().enumerate().map(|(n, event)| hubs[n % HUBS].publish(event));
        futures::stream::iter(publishes)
            .buffered(in_flight)
            .try_for_each(|()| async { Ok(()) })
            .await
            .map_err(|e| failed(format!("publish: {e}")))?;
        let finished = tally.wait(patience(tally.expected())).await;
        let cpu = redis.cpu_seconds()? - cpu_before;
        let (script_calls, _) = redis.command_stats("evalsha")?;
        let retained = retained_bytes(redis, phase, users, team)?;
        let expected = tally.expected();
        let (deliveries, failures) = tally.finish(Duration::from_millis(100)).await;
        figures.failures.extend(failures);
        figures.check(finished.is_some() && deliveries == expected, || {
            format!("{} phase: deliveries {deliveries} != expected {expected}", phase.name())
        });
        let elapsed = finished.map(|at| at.duration_since(started).as_secs_f64());
        figures.put("redis_cpu_us_per_delivery", cpu * 1e6 / expected as f64);
        figures.put("publish_calls", script_calls);
        figures.put("redis_bytes_retained", retained);
        figures.put("publish_to_last_delivery_ms", elapsed.map(|s| s * 1e3));
        figures.put("deliveries_per_s", elapsed.map(|s| expected as f64 / s));
        Ok(figures)
    }

    /// Events replayed per stream: after the 11th newest entry.
    const TAIL: usize = 10;

    /// The replay after a cursor over the user's stream, the broadcasts and `groups` group streams of `history` events each.
    async fn replay_with_groups(
        bench: &Bench,
        redis: &RedisTarget,
        history: usize,
        groups: usize,
        reps: usize,
    ) -> Result<Figures> {
        let hub = redis.hub_builder()?.retention(Some(redis.retention(history))).connect().await?;
        let user = workload::users(1)[0];
        let group_ids: Vec<GroupId> =
            (0..groups).map(|_| GroupId::from_uuid(*ssehub::EventId::new().as_uuid())).collect();
        let audiences: Vec<Audience> = [Audience::User(user), Audience::Broadcast]
            .into_iter()
            .chain(group_ids.iter().map(|group| Audience::Group(*group)))
            .collect();
        let started = Instant::now();
        let events = audiences.iter().flat_map(|audience| {
            (0..history).map(move |n| {
                Event::new(
                    *audience,
                    "bench.replay",
                    workload::category_of(n as u64),
                    workload::data(n as u64, None),
                )
                .expect("a valid event")
            })
        });
        futures::stream::iter(events.map(|event| hub.publish(event)))
            .buffered(bench.cli.in_flight)
            .try_for_each(|()| async { Ok(()) })
            .await
            .map_err(|e| failed(format!("publish: {e}")))?;
        let fill_seconds = started.elapsed().as_secs_f64();
        // The cursor: each stream at its 11th newest entry.
        let mut positions = ssehub::Positions::NONE;
        for audience in &audiences {
            let key = redis.layout().stream(*audience);
            let count = (TAIL + 1).to_string();
            let reply = redis.command(&["XREVRANGE", &key, "+", "-", "COUNT", &count])?;
            let id = reply
                .as_array()
                .and_then(|entries| entries.last())
                .and_then(|entry| entry.as_array()?.first()?.as_str().map(str::to_owned))
                .ok_or_else(|| failed(format!("XREVRANGE {key} replied {reply}")))?;
            let bad = || failed(format!("entry id {id}"));
            let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
            let position =
                ssehub::Position::entry(ms.parse().map_err(|_| bad())?, seq.parse().map_err(|_| bad())?);
            positions.set(ssehub::StreamKind::of(*audience), Some(position));
        }
        let reader = Reader::new(user, Groups::new(group_ids.iter().copied()).map_err(failed)?);
        let mut figures = Figures::default();
        // One untimed replay, then the timed ones.
        hub.missed_since(&reader, positions.clone(), CategorySet::all()).await?;
        redis.command(&["CONFIG", "RESETSTAT"])?;
        let mut times = Vec::new();
        let expected = TAIL * audiences.len();
        for _ in 0..reps {
            let started = Instant::now();
            let replay = hub.missed_since(&reader, positions.clone(), CategorySet::all()).await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            figures.check(replay.events.len() == expected, || {
                format!(
                    "a replay with {groups} groups returned {} events, not {expected}",
                    replay.events.len()
                )
            });
            figures.check(replay.groups.iter().all(|(_, read)| read.status.is_complete()), || {
                "a group stream's replay was not complete".into()
            });
        }
        let (script_calls, _) = redis.command_stats("evalsha")?;
        figures.put("replay_fill_seconds", fill_seconds);
        figures.put("replay_median_ms", median(&times));
        figures.put("replay_max_ms", times.iter().copied().reduce(f64::max));
        figures.put("replay_script_calls", script_calls / reps as f64);
        figures.put("replay_returned", expected as u64);
        hub.close();
        Ok(figures)
    }

    /// The heap one hub holds per idle subscription of `members` users reading `groups` groups, and reading none.
    async fn idle_cost(bench: &Bench, redis: &RedisTarget, members: usize, groups: usize) -> Result<Figures> {
        let hub = redis.hub_builder()?.connect().await?;
        let users = workload::users(members);
        let group_ids =
            Groups::new((0..groups).map(|_| GroupId::from_uuid(*ssehub::EventId::new().as_uuid())))
                .map_err(failed)?;
        let mut figures = Figures::default();
        for (key, with_groups) in
            [("idle_bytes_per_subscription_with_groups", true), ("idle_bytes_per_subscription", false)]
        {
            let heap = HeapCounter::start();
            let subscribe = users.iter().map(|&user| {
                let reader =
                    if with_groups { Reader::new(user, group_ids.clone()) } else { Reader::from(user) };
                hub.subscribe(reader, CategorySet::all())
            });
            let subscriptions: Vec<_> = futures::stream::iter(subscribe)
                .buffered(bench.cli.in_flight)
                .try_collect()
                .await
                .map_err(|e| failed(format!("subscribe: {e}")))?;
            figures.put(key, heap.allocated() as f64 / members as f64);
            drop(heap);
            drop(subscriptions);
            // The channels are let go of before the next measure.
            let deadline = Instant::now() + Duration::from_secs(30);
            while hub.stats().open_subscriptions > 0 && Instant::now() < deadline {
                workload::sleep(Duration::from_millis(5)).await;
            }
        }
        hub.close();
        Ok(figures)
    }

    /// Bytes the phase's events hold in Redis: `MEMORY USAGE` of the streams it wrote (the
    /// users', up to 200 of them sampled evenly and scaled to all).
    fn retained_bytes(redis: &RedisTarget, phase: Phase, users: &[UserId], team: GroupId) -> Result<f64> {
        let usage = |key: &str| -> Result<f64> {
            let reply = redis.command(&["MEMORY", "USAGE", key, "SAMPLES", "0"])?;
            Ok(reply.as_int().unwrap_or(0) as f64)
        };
        let layout = redis.layout();
        match phase {
            Phase::Group => usage(&layout.stream(Audience::Group(team))),
            Phase::Broadcast => usage(&layout.stream(Audience::Broadcast)),
            Phase::Users => {
                let step = users.len().div_ceil(200);
                let sampled: Vec<&UserId> = users.iter().step_by(step).collect();
                let mut total = 0.0;
                for user in &sampled {
                    total += usage(&layout.stream(Audience::User(**user)))?;
                }
                Ok(total * users.len() as f64 / sampled.len() as f64)
            }
        }
    }

    fn group_event(team: GroupId, n: usize) -> Event<C> {
        Event::new(
            Audience::Group(team),
            "bench.group",
            workload::category_of(n as u64),
            workload::data(n as u64, None),
        )
        .expect("a valid event")
    }

    fn broadcast_event(n: usize) -> Event<C> {
        Event::new(
            Audience::Broadcast,
            "bench.broadcast",
            workload::category_of(n as u64),
            workload::data(n as u64, None),
        )
        .expect("a valid event")
    }
}
