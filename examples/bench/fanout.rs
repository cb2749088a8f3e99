//! The fanout scenario: E events round-robin over U users with S filtered subscribers each, as fast as they publish, beside a raw fan-out.
//!
//! Baselines: for `memory`, the same events as `Arc`s through one bounded
//! `async-channel` per subscriber, every subscriber taking every event of its
//! user (no routing, no filtering); the ratio compares deliveries per second,
//! the work per delivery. For `fred`, raw fred pub/sub: one subscriber
//! connection on the users' channels, PUBLISH of envelopes of the same size,
//! messages counted without decoding; it delivers each event once to the
//! process, so the ratio compares events per second, end to end. A second
//! fred baseline (`same_work_*`, `ratio_same_work`) does the hub's own Redis
//! work per event with raw fred and no Lua: `XADD` with approximate `MAXLEN`,
//! `EXPIRE` and `PUBLISH`, pipelined, the same bytes, counted the same way.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use ssehub::{Event, UserId};

use crate::alloc::HeapCounter;
use crate::report::{Figures, Report, Rounds, peak_rss_kib, ratio, reset_peak_rss};
use crate::tally::{Tally, patience};
use crate::workload::{self, C, Hub, category_of, filter_of};
use crate::{Backend, Bench, Result, failed, positive};

/// What one run publishes, and to whom.
struct Plan {
    users: usize,
    subs: usize,
    events: usize,
    #[cfg_attr(not(feature = "fred"), allow(dead_code))]
    publisher: PublishVia,
    /// Whether the run counts heap bytes (`peak_heap_kib`): off by default, the count costs a little.
    count_heap: bool,
    /// The fred hub's message channel capacity, if not its default.
    #[cfg_attr(not(feature = "fred"), allow(dead_code))]
    message_channel_capacity: Option<usize>,
}

/// How the events of a fred run reach Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PublishVia {
    /// The hub's publish (retention script).
    Hub,
    /// Plain PUBLISH of the envelopes, beside the hub: isolates its delivery side.
    Raw,
}

impl Plan {
    /// Event `seq` goes to user `seq % users`.
    fn user_of(&self, seq: usize) -> usize {
        seq % self.users
    }

    /// The events user number `user` receives.
    fn seqs_of(&self, user: usize) -> impl Iterator<Item = u64> + '_ {
        (user..self.events).step_by(self.users).map(|seq| seq as u64)
    }

    fn events_for(&self, users: &[UserId]) -> Vec<Event<C>> {
        (0..self.events).map(|seq| workload::event(users[self.user_of(seq)], seq as u64, None)).collect()
    }
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let users = positive(bench.cli.number("users", 100, 10)?, "users")?;
    let subs = positive(bench.cli.number("subs", 10, 4)?, "subs")?;
    let events = positive(bench.cli.number("events", 20_000, 600)?, "events")?;
    let rounds = positive(bench.cli.number("rounds", 15, 1)?, "rounds")?;
    let publisher = match bench.cli.text("publisher").as_deref() {
        None | Some("hub") => PublishVia::Hub,
        Some("raw") if bench.cli.backend == Backend::Fred => PublishVia::Raw,
        Some(other) => {
            return Err(crate::BenchError::Usage(format!(
                "--publisher is hub, or raw with --backend fred; not {other:?}"
            )));
        }
    };
    let count_heap = bench.cli.number("count-heap", 0, 0)? != 0;
    let message_channel_capacity = match bench.cli.text("message-channel-capacity") {
        None => None,
        Some(_) if bench.cli.backend != Backend::Fred => {
            return Err(crate::BenchError::Usage("--message-channel-capacity is for --backend fred".into()));
        }
        Some(text) => Some(positive(
            text.replace('_', "").parse().map_err(|_| {
                crate::BenchError::Usage(format!(
                    "--message-channel-capacity takes a whole number, not {text:?}"
                ))
            })?,
            "message-channel-capacity",
        )?),
    };
    bench.cli.finish()?;
    let plan = Plan { users, subs, events, publisher, count_heap, message_channel_capacity };
    if publisher == PublishVia::Raw && bench.cli.cluster.is_some() {
        return Err(crate::BenchError::Usage("--publisher raw is not for --cluster".into()));
    }
    report.put("publisher", if publisher == PublishVia::Hub { "hub" } else { "raw PUBLISH" });
    if let Some(masters) = bench.cli.cluster {
        report.put("cluster_masters", masters as u64);
    }
    report.put("users", users as u64);
    report.put("subs_per_user", subs as u64);
    report.put("events", events as u64);
    report.put("in_flight", bench.cli.in_flight as u64);
    report.put("queue_capacity", bench.cli.queue_capacity as u64);
    if let Some(capacity) = message_channel_capacity {
        report.put("message_channel_capacity", capacity as u64);
    }

    let bench: &Bench = bench;
    let basis = match bench.cli.backend {
        Backend::Memory => "deliveries_per_s",
        Backend::Fred => "events_per_s",
    };
    // On a cluster the baseline is the hub publishing one script per event (see `--cluster`).
    let on_cluster = bench.cli.cluster.is_some();
    #[cfg(feature = "fred")]
    let same_work = (bench.cli.backend == Backend::Fred && !on_cluster)
        .then_some(|| fred_side::raw_baseline(bench, &plan, fred_side::RawWork::SameAsHub));
    #[cfg(not(feature = "fred"))]
    let same_work = None::<fn() -> Result<Figures>>;
    let rounds = Rounds::run_two(
        bench,
        rounds,
        "seconds",
        || match bench.cli.backend {
            Backend::Memory => {
                let hub = ssehub::memory::MemoryHub::<C>::builder()
                    .queue_capacity(bench.cli.queue_capacity)
                    .build();
                bench.runtime.block_on(hub_side(bench, hub, &plan, || Ok(0)))
            }
            #[cfg(feature = "fred")]
            Backend::Fred => fred_side::hub(bench, &plan, true),
            #[cfg(not(feature = "fred"))]
            Backend::Fred => unreachable!("rejected when parsing the command line"),
        },
        || match bench.cli.backend {
            Backend::Memory => channel_baseline(bench, &plan),
            #[cfg(feature = "fred")]
            Backend::Fred if on_cluster => fred_side::hub(bench, &plan, false),
            #[cfg(feature = "fred")]
            Backend::Fred => fred_side::raw_baseline(bench, &plan, fred_side::RawWork::PublishOnly),
            #[cfg(not(feature = "fred"))]
            Backend::Fred => unreachable!("rejected when parsing the command line"),
        },
        same_work,
        |ssehub, baseline| ratio(ssehub.get(basis), baseline.get(basis)),
    )?;
    let of_medians = match (&rounds.ssehub, &rounds.baseline) {
        (Some(s), Some(b)) => ratio(s.get(basis), b.get(basis)),
        _ => None,
    };
    rounds.put_ratio(report, basis, of_medians);
    report.put(
        "baseline",
        match bench.cli.backend {
            Backend::Memory => "Arc<T> through one bounded async-channel per subscriber, no routing or filtering",
            Backend::Fred if on_cluster => "the same hub on the same cluster, publishing one script per event (no batching)",
            Backend::Fred => "raw fred pub/sub: one subscriber connection, PUBLISH of same-size envelopes, messages counted undecoded",
        },
    );
    if let (Some(s), Some(b)) = (&rounds.ssehub, &rounds.second) {
        // The same-work baseline: the floor of the hub's own Redis work per event.
        let paired = &rounds.second_paired_ratios;
        report.put("ratio_same_work", (!paired.is_empty()).then(|| crate::report::median(paired)));
        report.put("ratio_same_work_of_medians", ratio(s.get(basis), b.get(basis)));
    }
    if let Some(second) = rounds.second {
        report.put(
            "same_work_baseline",
            "raw fred, pipelined per event: XADD MAXLEN ~ (the hub's retention) + EXPIRE + PUBLISH of same-size envelopes, no Lua; one subscriber connection, messages counted undecoded",
        );
        report.add("same_work_", second);
    }
    report.add_sides(rounds.ssehub, rounds.baseline);
    Ok(())
}

/// Puts the figures of a finished run.
fn delivery_figures(
    figures: &mut Figures,
    plan: &Plan,
    deliveries: u64,
    expected: u64,
    seconds: Option<f64>,
    failures: Vec<String>,
) {
    figures.put("deliveries", deliveries);
    figures.put("expected", expected);
    figures.put("seconds", seconds);
    figures.put("deliveries_per_s", seconds.map(|s| deliveries as f64 / s));
    figures.put("events_per_s", seconds.map(|s| plan.events as f64 / s));
    figures.check(deliveries == expected, || format!("deliveries {deliveries} != expected {expected}"));
    figures.check(seconds.is_some(), || "not every expected delivery arrived".into());
    figures.failures.extend(failures);
}

/// ssehub's side on any backend; `connections` counts the Redis connections the hub holds.
async fn hub_side<H: Hub>(
    bench: &Bench,
    hub: H,
    plan: &Plan,
    connections: impl Fn() -> Result<u64>,
) -> Result<Figures> {
    let peak_reset = reset_peak_rss();
    let heap = plan.count_heap.then(HeapCounter::start);
    let users = workload::users(plan.users);
    let events = plan.events_for(&users);
    let runtime = bench.runtime.handle();
    let mut tally = Tally::new(plan.users * plan.subs);
    for (u, &user) in users.iter().enumerate() {
        for s in 0..plan.subs {
            let filter = filter_of(s);
            let expected = plan.seqs_of(u).filter(|&seq| filter.contains(category_of(seq))).count();
            let subscription = hub.subscribe(user, filter).await?;
            tally.spawn(runtime, u * plan.subs + s, subscription, expected as u64, |_| {});
        }
    }
    let redis_connections = connections()?;
    let in_flight = bench.cli.in_flight;
    let publisher_hub = hub.clone();
    let started = Instant::now();
    let publisher = runtime.spawn(async move {
        futures::stream::iter(events)
            .map(|event| publisher_hub.publish(event))
            .buffered(in_flight)
            .try_for_each(|()| async { Ok(()) })
            .await?;
        Ok::<_, ssehub::Error>(Instant::now())
    });
    let finished = tally.wait(patience(tally.expected())).await;
    let seconds = finished.map(|at| at.duration_since(started).as_secs_f64());
    let published = publisher.await.map_err(|e| failed(format!("publisher task: {e}")))?;
    let expected = tally.expected();
    let (deliveries, failures) = tally.finish(std::time::Duration::from_millis(100)).await;
    let published_at = published?;
    let heap_figures = heap.map(|heap| (heap.peak(), heap.allocated()));
    drop(hub);
    let mut figures = Figures::default();
    if let Some((peak, after)) = heap_figures {
        // Heap bytes the run held at its peak and at its end (the events to publish included).
        figures.put("peak_heap_kib", (peak.max(0) / 1024) as u64);
        figures.put("heap_kib_at_end", (after.max(0) / 1024) as u64);
    }
    delivery_figures(&mut figures, plan, deliveries, expected, seconds, failures);
    figures.put("publish_seconds", published_at.duration_since(started).as_secs_f64());
    figures.put("redis_connections", redis_connections);
    figures.put("peak_rss_kib", peak_rss_kib());
    figures.put("peak_rss_reset", peak_reset);
    Ok(figures)
}

/// One event of the memory baseline: what an `Event` holds, without routing information.
#[allow(dead_code)]
struct RawEvent {
    seq: u64,
    category: C,
    data: Box<str>,
}

/// The memory baseline: every event of a user through one bounded channel per subscriber.
fn channel_baseline(bench: &Bench, plan: &Plan) -> Result<Figures> {
    bench.runtime.block_on(async {
        let peak_reset = reset_peak_rss();
        let events: Vec<Arc<RawEvent>> = (0..plan.events as u64)
            .map(|seq| {
                Arc::new(RawEvent { seq, category: category_of(seq), data: workload::data(seq, None).into() })
            })
            .collect();
        let runtime = bench.runtime.handle();
        let mut tally = Tally::new(plan.users * plan.subs);
        let mut senders = Vec::with_capacity(plan.users);
        for u in 0..plan.users {
            let expected = plan.seqs_of(u).count() as u64;
            let mut of_user = Vec::with_capacity(plan.subs);
            for s in 0..plan.subs {
                let (tx, rx) = async_channel::bounded::<Arc<RawEvent>>(bench.cli.queue_capacity);
                of_user.push(tx);
                tally.spawn(runtime, u * plan.subs + s, rx.map(Ok::<_, Infallible>), expected, |_| {});
            }
            senders.push(of_user);
        }
        let users = plan.users;
        let started = Instant::now();
        let publisher = runtime.spawn(async move {
            for (seq, event) in events.iter().enumerate() {
                for tx in &senders[seq % users] {
                    if let Err(async_channel::TrySendError::Full(event)) = tx.try_send(Arc::clone(event)) {
                        tx.send(event).await.map_err(|_| "a subscriber channel closed")?;
                    }
                }
            }
            Ok::<_, &'static str>((senders, Instant::now()))
        });
        let finished = tally.wait(patience(tally.expected())).await;
        let seconds = finished.map(|at| at.duration_since(started).as_secs_f64());
        let (senders, published_at) =
            publisher.await.map_err(|e| failed(format!("publisher task: {e}")))?.map_err(failed)?;
        let expected = tally.expected();
        let (deliveries, failures) = tally.finish(std::time::Duration::from_millis(100)).await;
        drop(senders);
        let mut figures = Figures::default();
        delivery_figures(&mut figures, plan, deliveries, expected, seconds, failures);
        figures.put("publish_seconds", published_at.duration_since(started).as_secs_f64());
        figures.put("redis_connections", 0u64);
        figures.put("peak_rss_kib", peak_rss_kib());
        figures.put("peak_rss_reset", peak_reset);
        Ok(figures)
    })
}

#[cfg(feature = "fred")]
mod fred_side {
    //! The fanout scenario on Redis: the hub, and raw fred pub/sub.

    use super::*;
    use crate::redis::{RedisTarget, envelope};
    use ssehub::fred::client::interfaces::{ClientLike, EventInterface, PubsubInterface};
    use ssehub::fred::client::types::Value as RedisValue;

    /// The hub's side; `batching`: whether a cluster hub batches its publishes per master (the default).
    pub fn hub(bench: &Bench, plan: &Plan, batching: bool) -> Result<Figures> {
        let redis = bench.redis()?;
        bench.runtime.block_on(async {
            let before = redis.settled_client_count().await?;
            let mut builder = redis
                .hub_builder()?
                .queue_capacity(bench.cli.queue_capacity)
                .cluster_publish_batching(batching);
            if let Some(capacity) = plan.message_channel_capacity {
                builder = builder.message_channel_capacity(capacity);
            }
            let hub = builder.connect().await?;
            let watched = hub.clone();
            let connections = || Ok(redis.client_count()?.saturating_sub(before));
            let mut figures = match plan.publisher {
                PublishVia::Hub => hub_side(bench, hub, plan, connections).await,
                PublishVia::Raw => {
                    let pool = redis.raw_commands().await?;
                    let raw = RawPublishing { hub, pool: pool.clone(), layout: redis.layout().clone() };
                    let figures = hub_side(bench, raw, plan, connections).await;
                    let _ = pool.quit().await;
                    figures
                }
            }?;
            // Overflows of fred's message channel are recovered from the streams: no loss, but work.
            let stats = watched.stats();
            figures.put("message_channel_overflows", stats.message_channel_overflows);
            figures.put("recovered", stats.recovered);
            figures.put("lagged", stats.lagged);
            drop(watched);
            Ok(figures)
        })
    }

    /// The hub's subscriptions, fed by plain PUBLISHes of envelopes (as another
    /// publisher without retention writes them) instead of the hub's publish:
    /// what the hub's delivery side sustains, apart from the cost of publishing.
    #[derive(Clone)]
    struct RawPublishing {
        hub: ssehub::fred::RedisHub<C>,
        pool: ssehub::fred::client::clients::Pool,
        layout: ssehub::fred::KeyLayout,
    }

    impl ssehub::EventSource<C> for RawPublishing {
        type Subscription = <ssehub::fred::RedisHub<C> as ssehub::EventSource<C>>::Subscription;

        async fn subscribe(
            &self,
            reader: impl Into<ssehub::Reader> + Send,
            filter: ssehub::CategorySet<C>,
        ) -> std::result::Result<Self::Subscription, ssehub::Error> {
            self.hub.subscribe(reader, filter).await
        }

        async fn missed_events(
            &self,
            user: UserId,
            last_event_id: ssehub::EventId,
            filter: ssehub::CategorySet<C>,
        ) -> std::result::Result<ssehub::Replay<C>, ssehub::Error> {
            self.hub.missed_events(user, last_event_id, filter).await
        }

        async fn missed_since(
            &self,
            reader: impl Into<ssehub::Reader> + Send,
            from: ssehub::Positions,
            filter: ssehub::CategorySet<C>,
        ) -> std::result::Result<ssehub::StreamReplay<C>, ssehub::Error> {
            self.hub.missed_since(reader, from, filter).await
        }

        fn horizon(&self) -> Option<ssehub::Position> {
            self.hub.horizon()
        }

        async fn disconnect(&self, user: UserId) -> std::result::Result<(), ssehub::Error> {
            self.hub.disconnect(user).await
        }
    }

    impl ssehub::Publisher<C> for RawPublishing {
        async fn publish(&self, event: Event<C>) -> std::result::Result<(), ssehub::Error> {
            let channel = self.layout.channel(event.audience());
            let message = crate::redis::foreign_envelope(&event);
            self.pool
                .next()
                .publish::<i64, _, _>(channel, message)
                .await
                .map(drop)
                .map_err(ssehub::Error::backend)
        }
    }

    /// What a raw baseline asks of Redis per event.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum RawWork {
        /// `PUBLISH` only: the delivery floor.
        PublishOnly,
        /// The hub's own Redis work, without its script: `XADD` with
        /// approximate `MAXLEN` (the hub's default retention), `EXPIRE`, and
        /// `PUBLISH`, pipelined per event.
        SameAsHub,
    }

    /// One event of a raw baseline: where it goes and its bytes.
    struct RawMessage {
        channel: String,
        stream: String,
        /// The stream entry: the envelope without a stream id, as the hub stores it.
        entry: String,
        /// The channel message: the envelope with a stream id, as the hub publishes it.
        message: String,
    }

    /// Runs one raw event's commands: `PUBLISH`, or the same-work pipeline.
    async fn raw_publish(
        client: &ssehub::fred::client::clients::Client,
        work: RawWork,
        retention: ssehub::Retention,
        raw: RawMessage,
    ) -> std::result::Result<(), ssehub::fred::client::error::Error> {
        use ssehub::fred::client::interfaces::{KeysInterface, StreamsInterface};
        match work {
            RawWork::PublishOnly => client.publish::<i64, _, _>(raw.channel, raw.message).await.map(drop),
            RawWork::SameAsHub => {
                let pipeline = client.pipeline();
                let cap = ("MAXLEN", "~", retention.max_events() as i64);
                let () = pipeline.xadd(raw.stream.as_str(), false, cap, "*", ("event", raw.entry)).await?;
                let () =
                    pipeline.expire(raw.stream.as_str(), retention.max_age().as_secs() as i64, None).await?;
                let () = pipeline.publish(raw.channel, raw.message).await?;
                pipeline.all::<Vec<RedisValue>>().await.map(drop)
            }
        }
    }

    pub fn raw_baseline(bench: &Bench, plan: &Plan, work: RawWork) -> Result<Figures> {
        let redis: &RedisTarget = bench.redis()?;
        bench.runtime.block_on(async {
            let peak_reset = reset_peak_rss();
            let before = redis.settled_client_count().await?;
            let users = workload::users(plan.users);
            let messages: Vec<RawMessage> = plan
                .events_for(&users)
                .iter()
                .map(|event| RawMessage {
                    channel: redis.user_channel(event_user(event)),
                    stream: redis.user_stream(event_user(event)),
                    entry: crate::redis::foreign_envelope(event),
                    message: envelope(event),
                })
                .collect();
            let retention = ssehub::Retention::default();
            let subscriber = redis.raw_subscriber().await?;
            let channels: Vec<String> = users.iter().map(|&user| redis.user_channel(user)).collect();
            let mut rx = subscriber.message_rx();
            subscriber.subscribe(channels).await.map_err(|e| failed(format!("SUBSCRIBE: {e}")))?;
            // A round trip on the subscriber connection: every SUBSCRIBE before it is live.
            subscriber.ping::<RedisValue>(None).await.map_err(|e| failed(format!("PING: {e}")))?;
            let publisher = redis.raw_commands().await?;
            let redis_connections = redis.client_count()?.saturating_sub(before);

            let mut tally = Tally::new(1);
            let (tx, raw_messages) = async_channel::unbounded::<std::result::Result<(), String>>();
            // fred hands messages over a broadcast channel; forward them as a stream to count.
            let forwarder = bench.runtime.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(_message) => {
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
            });
            tally.spawn(bench.runtime.handle(), 0, raw_messages, plan.events as u64, |_| {});
            let in_flight = bench.cli.in_flight;
            let started = Instant::now();
            let publishing = bench.runtime.spawn({
                let publisher = publisher.clone();
                async move {
                    futures::stream::iter(messages)
                        .map(|raw| {
                            let publisher = &publisher;
                            async move { raw_publish(publisher.next(), work, retention, raw).await }
                        })
                        .buffered(in_flight)
                        .try_for_each(|()| async { Ok(()) })
                        .await
                }
            });
            let finished = tally.wait(patience(tally.expected())).await;
            let seconds = finished.map(|at| at.duration_since(started).as_secs_f64());
            let published = publishing.await.map_err(|e| failed(format!("publisher task: {e}")))?;
            let expected = tally.expected();
            let (deliveries, failures) = tally.finish(std::time::Duration::from_millis(200)).await;
            published.map_err(|e| failed(format!("raw publish: {e}")))?;
            forwarder.abort();
            if work == RawWork::SameAsHub {
                clear_streams(&publisher, &users, redis).await?;
            }
            let _ = subscriber.quit().await;
            let _ = publisher.quit().await;
            let mut figures = Figures::default();
            delivery_figures(&mut figures, plan, deliveries, expected, seconds, failures);
            figures.put("redis_connections", redis_connections);
            figures.put("peak_rss_kib", peak_rss_kib());
            figures.put("peak_rss_reset", peak_reset);
            Ok(figures)
        })
    }

    /// Deletes the streams a same-work round wrote, so every round starts from empty streams as the hub's do.
    async fn clear_streams(
        publisher: &ssehub::fred::client::clients::Pool,
        users: &[UserId],
        redis: &RedisTarget,
    ) -> Result<()> {
        use ssehub::fred::client::interfaces::KeysInterface;
        let streams: Vec<String> = users.iter().map(|&user| redis.user_stream(user)).collect();
        publisher.next().del::<i64, _>(streams).await.map_err(|e| failed(format!("DEL: {e}")))?;
        Ok(())
    }

    fn event_user(event: &Event<C>) -> UserId {
        match event.audience() {
            ssehub::Audience::User(user) => user,
            ssehub::Audience::Broadcast | ssehub::Audience::Group(_) => {
                unreachable!("fanout publishes to users only")
            }
        }
    }
}
