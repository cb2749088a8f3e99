//! The replay scenario: `missed_events` after the event K+1 from the end of L retained, beside the old design's linear scan.
//!
//! Baselines, the old design's algorithm written in Rust: for `memory`, the
//! same L events in a `Vec` scanned for the Last-Event-ID, then the rest
//! cloned; for `fred`, `XRANGE key - +` of the same stream the hub wrote,
//! then a scan of the entries for the id. `ratio` is baseline time over
//! ssehub time: how many times faster ssehub answers.

use std::hint::black_box;
use std::time::Instant;

use ssehub::{CategorySet, Event, EventId, Positions, ReplayStatus, UserId};

use crate::report::{Figures, Report, median, ratio};
use crate::workload::{self, C, Hub};
use crate::{Backend, Bench, BenchError, Result, positive};

/// The Python design's replay times on this machine kind, by retained history.
const PYTHON_REFERENCE_MS: [(usize, f64); 3] = [(1_000, 53.0), (10_000, 1_171.0), (100_000, 9_683.0)];

struct Plan {
    history: usize,
    tail: usize,
    /// Replay after a cursor's positions (what `resume` does with a cursor) instead of after an event id.
    via_cursor: bool,
    reps: usize,
}

impl Plan {
    /// The Last-Event-ID: the event `tail + 1` from the end.
    fn last_seen(&self, events: &[Event<C>]) -> EventId {
        events[self.history - self.tail - 1].id()
    }
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let history = positive(bench.cli.number("history", 10_000, 300)?, "history")?;
    let tail = bench.cli.number("tail", 10, 10)? as usize;
    let reps = positive(bench.cli.number("reps", 7, 3)?, "reps")?;
    let via_cursor = match bench.cli.text("via").as_deref() {
        None | Some("id") => false,
        Some("cursor") => true,
        Some(other) => return Err(BenchError::Usage(format!("--via takes id or cursor, not '{other}'"))),
    };
    bench.cli.finish()?;
    if tail >= history {
        return Err(BenchError::Usage(format!("--tail {tail} must be below --history {history}")));
    }
    let plan = Plan { history, tail, reps, via_cursor };
    report.put("via", if via_cursor { "cursor" } else { "id" });
    report.put("history", history as u64);
    report.put("tail", tail as u64);
    report.put("reps", reps as u64);
    let user = workload::users(1)[0];

    let (ssehub, baseline) = match bench.cli.backend {
        Backend::Memory => {
            let sides = bench.cli.sides;
            // The hub is filled first when it is measured: the baseline scans the same events.
            let hub = ssehub::memory::MemoryHub::<C>::builder()
                .retention(Some(ssehub::Retention::default().with_max_events(history as u64)))
                .build();
            let (events, fill_seconds) = if sides.ssehub() {
                bench.progress(format!("filling {history} events"));
                let (events, seconds) = bench.runtime.block_on(fill(&hub, user, history))?;
                (events, Some(seconds))
            } else {
                ((0..history as u64).map(|seq| workload::event(user, seq, None)).collect(), None)
            };
            let (mut ssehub, mut baseline) = (None, None);
            for run_baseline in if sides.baseline_first() { [true, false] } else { [false, true] } {
                if run_baseline && sides.baseline() {
                    bench.progress("baseline: linear scan of a Vec");
                    baseline = Some(scan_baseline(&plan, &events));
                } else if !run_baseline && sides.ssehub() {
                    bench.progress("ssehub");
                    let mut figures = bench.runtime.block_on(hub_side(&hub, user, &plan, &events))?;
                    figures.put("fill_seconds", fill_seconds);
                    figures.put("retained", hub.stats().retained_events as u64);
                    ssehub = Some(figures);
                }
            }
            (ssehub, baseline)
        }
        #[cfg(feature = "fred")]
        Backend::Fred => fred_side::run(bench, &plan, user)?,
        #[cfg(not(feature = "fred"))]
        Backend::Fred => unreachable!("rejected when parsing the command line"),
    };
    if let (Some(ssehub), Some(baseline)) = (&ssehub, &baseline) {
        report.put("ratio", ratio(baseline.get("median_ms"), ssehub.get("median_ms")));
        report.put("ratio_basis", "baseline_median_ms / median_ms");
    }
    report.put(
        "baseline",
        match bench.cli.backend {
            Backend::Memory => "the old design's algorithm in memory: linear scan of a Vec for the id",
            Backend::Fred => {
                "the old design's algorithm: XRANGE key - + of the same stream, linear scan for the id"
            }
        },
    );
    let reference = PYTHON_REFERENCE_MS.iter().find(|(len, _)| *len == history).map(|(_, ms)| *ms);
    report.put("python_reference_ms", reference);
    report.add_sides(ssehub, baseline);
    Ok(())
}

/// Publishes `history` events to `user` one after the other (so they are
/// retained in this order), each made just before it is published, as an
/// application does; returns them and the seconds taken.
async fn fill<H: Hub>(hub: &H, user: UserId, history: usize) -> Result<(Vec<Event<C>>, f64)> {
    let mut events = Vec::with_capacity(history);
    let started = Instant::now();
    for seq in 0..history as u64 {
        let event = workload::event(user, seq, None);
        hub.publish(event.clone()).await?;
        events.push(event);
    }
    Ok((events, started.elapsed().as_secs_f64()))
}

/// Puts the figures of `reps` timed replays that returned `returned` events each.
fn replay_figures(figures: &mut Figures, plan: &Plan, times_ms: &[f64], returned: &[usize], first_ms: f64) {
    let wrong = returned.iter().find(|&&n| n != plan.tail);
    figures.put("returned", returned.first().map(|&n| n as u64));
    figures.put("median_ms", median(times_ms));
    figures.put("min_ms", times_ms.iter().copied().reduce(f64::min));
    figures.put("max_ms", times_ms.iter().copied().reduce(f64::max));
    figures.put("first_ms", first_ms);
    figures.check(wrong.is_none(), || {
        format!("a replay returned {} events, not --tail {}", wrong.unwrap(), plan.tail)
    });
}

/// ssehub's side: one untimed replay, then `reps` timed ones.
async fn hub_side<H: Hub>(hub: &H, user: UserId, plan: &Plan, events: &[Event<C>]) -> Result<Figures> {
    let last_seen = plan.last_seen(events);
    let expected_ids: Vec<EventId> = events[events.len() - plan.tail..].iter().map(Event::id).collect();
    let mut figures = Figures::default();
    let (mut times_ms, mut returned) = (Vec::new(), Vec::new());
    let mut first_ms = 0.0;
    // A cursor's positions at the last event seen, read back once, untimed.
    let cursor = if plan.via_cursor {
        let before = events[plan.history - plan.tail - 2].id();
        let read = hub.missed_since(user, Positions::after_event(before), CategorySet::all()).await?;
        let own = read.events.first().and_then(Event::position);
        Some(Positions { own, broadcast: read.broadcast.end, ..Positions::NONE })
    } else {
        None
    };
    for rep in 0..=plan.reps {
        let started = Instant::now();
        let replay = match cursor {
            Some(ref positions) => {
                let read = hub.missed_since(user, positions.clone(), CategorySet::all()).await?;
                let status =
                    if read.own.status.is_complete() { read.broadcast.status } else { read.own.status };
                ssehub::Replay { events: read.events, status }
            }
            None => hub.missed_events(user, last_seen, CategorySet::all()).await?,
        };
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let ids: Vec<EventId> = replay.events.iter().map(Event::id).collect();
        figures.check(replay.status == ReplayStatus::Complete, || format!("replay status {}", replay.status));
        figures.check(ids == expected_ids || ids.len() != plan.tail, || {
            "the replay returned other events".into()
        });
        if rep == 0 {
            first_ms = ms;
        } else {
            times_ms.push(ms);
            returned.push(replay.events.len());
        }
    }
    figures.failures.dedup();
    replay_figures(&mut figures, plan, &times_ms, &returned, first_ms);
    Ok(figures)
}

/// The memory baseline: find the id by a linear scan, clone what follows.
fn scan_baseline(plan: &Plan, events: &[Event<C>]) -> Figures {
    let retained: Vec<Event<C>> = events.to_vec();
    let last_seen = plan.last_seen(events);
    let filter = CategorySet::<C>::all();
    let (mut times_ms, mut returned) = (Vec::new(), Vec::new());
    let mut first_ms = 0.0;
    for rep in 0..=plan.reps {
        let started = Instant::now();
        let retained = black_box(&retained);
        let start = retained.iter().position(|e| e.id() == black_box(last_seen)).map_or(0, |p| p + 1);
        let missed: Vec<Event<C>> =
            retained[start..].iter().filter(|e| filter.contains(e.category())).cloned().collect();
        let missed = black_box(missed);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if rep == 0 {
            first_ms = ms;
        } else {
            times_ms.push(ms);
            returned.push(missed.len());
        }
    }
    let mut figures = Figures::default();
    replay_figures(&mut figures, plan, &times_ms, &returned, first_ms);
    figures.put("retained", retained.len() as u64);
    figures
}

#[cfg(feature = "fred")]
mod fred_side {
    //! The replay scenario on Redis: the hub's replay, and XRANGE - + with a scan of the same stream.

    use super::*;
    use crate::redis::RedisTarget;
    use crate::report::Figures;
    use ssehub::fred::client::interfaces::StreamsInterface;
    use ssehub::fred::client::types::Value as RedisValue;

    pub fn run(bench: &Bench, plan: &Plan, user: UserId) -> Result<(Option<Figures>, Option<Figures>)> {
        let redis: &RedisTarget = bench.redis()?;
        bench.runtime.block_on(async {
            let hub = redis.hub_builder()?.retention(Some(redis.retention(plan.history))).connect().await?;
            bench.progress(format!("filling {} events", plan.history));
            let (events, fill_seconds) = fill(&hub, user, plan.history).await?;
            let events = &events[..];
            let stream = redis.user_stream(user);
            let retained = redis.stream_len(&stream)?;
            let sides = bench.cli.sides;
            let (mut ssehub, mut baseline) = (None, None);
            for run_baseline in if sides.baseline_first() { [true, false] } else { [false, true] } {
                if run_baseline && sides.baseline() {
                    bench.progress("baseline: XRANGE - + and a scan");
                    let mut figures = xrange_baseline(redis, &stream, plan, events).await?;
                    figures.put("retained", retained);
                    baseline = Some(figures);
                } else if !run_baseline && sides.ssehub() {
                    bench.progress("ssehub");
                    let mut figures = hub_side(&hub, user, plan, events).await?;
                    figures.put("fill_seconds", fill_seconds);
                    figures.put("retained", retained);
                    ssehub = Some(figures);
                }
            }
            Ok((ssehub, baseline))
        })
    }

    /// The old design: the whole stream, then a scan for the entry holding the id.
    async fn xrange_baseline(
        redis: &RedisTarget,
        stream: &str,
        plan: &Plan,
        events: &[Event<C>],
    ) -> Result<Figures> {
        let client = redis.raw_commands().await?;
        let needle = format!("\"event_id\":\"{}\"", plan.last_seen(events));
        let (mut times_ms, mut returned) = (Vec::new(), Vec::new());
        let mut first_ms = 0.0;
        for rep in 0..=plan.reps {
            let started = Instant::now();
            let entries: RedisValue = client
                .xrange(stream, "-", "+", None)
                .await
                .map_err(|e| crate::failed(format!("XRANGE: {e}")))?;
            let entries = entries.into_array();
            let start = entries
                .iter()
                .position(|entry| entry_contains(entry, needle.as_bytes()))
                .map_or(0, |p| p + 1);
            let missed = black_box(&entries[start..]).len();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            if rep == 0 {
                first_ms = ms;
            } else {
                times_ms.push(ms);
                returned.push(missed);
            }
        }
        let mut figures = Figures::default();
        replay_figures(&mut figures, plan, &times_ms, &returned, first_ms);
        Ok(figures)
    }

    /// Whether a stream entry `[id, [field, value, ...]]` has a value containing `needle`.
    fn entry_contains(entry: &RedisValue, needle: &[u8]) -> bool {
        let RedisValue::Array(parts) = entry else { return false };
        let Some(RedisValue::Array(fields)) = parts.get(1) else { return false };
        fields.iter().skip(1).step_by(2).any(|value| {
            value.as_bytes().is_some_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    }
}
