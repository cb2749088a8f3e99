//! The fleet scenario's verdict: every client's log read against what was published to it (exactly once, per-stream order, gaps), and the figures the logs give.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use crate::fleet_client::takes_all_categories;
use crate::report::{Figures, Value};
use crate::workload::C;

/// Whom a published event was for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Target {
    /// Connection `index`'s user.
    User(usize),
    Broadcast,
    /// Group number `k` (`g<k>`).
    Group(usize),
}

/// One publish, as the publishers recorded it.
#[derive(Clone, Copy, Debug)]
pub struct Published {
    pub seq: u64,
    pub target: Target,
    pub category: C,
    /// Whether the hub said it was published.
    pub ok: bool,
    /// When the publish started, Unix nanoseconds.
    pub started_ns: u64,
}

/// One connection's log, read from its client process's file.
#[derive(Default)]
pub struct ConnectionLog {
    /// Sequence numbers received, in order, with their publish-to-client latency.
    pub events: Vec<(u64, u64)>,
    /// Gap signals: when, the stream named, and how many events the connection had received before.
    pub gaps: Vec<(u64, String, usize)>,
    pub lives: Vec<u64>,
    /// How many events the connection had received when each response started.
    pub events_at_live: Vec<usize>,
    pub downs: Vec<u64>,
    pub done: bool,
}

/// Reads the client processes' log files into one log per connection.
pub fn read_logs(paths: &[std::path::PathBuf], connections: usize) -> Result<Vec<ConnectionLog>, String> {
    let mut logs: Vec<ConnectionLog> = (0..connections).map(|_| ConnectionLog::default()).collect();
    for path in paths {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let words: Vec<&str> = line.split(' ').collect();
            let number = |n: usize| words.get(n).and_then(|w| w.parse::<u64>().ok());
            let Some(log) = number(1).and_then(|conn| logs.get_mut(conn as usize)) else {
                return Err(format!("{}: bad line {line:?}", path.display()));
            };
            match (words[0], number(2), number(3)) {
                ("e", Some(seq), Some(latency)) => log.events.push((seq, latency)),
                ("g", Some(ns), _) => {
                    let stream = words.get(3).unwrap_or(&"unknown").to_string();
                    log.gaps.push((ns, stream, log.events.len()))
                }
                ("l", Some(ns), _) => {
                    log.lives.push(ns);
                    log.events_at_live.push(log.events.len());
                }
                ("d", Some(ns), _) => log.downs.push(ns),
                ("x", _, _) => log.done = true,
                _ => return Err(format!("{}: bad line {line:?}", path.display())),
            }
        }
    }
    Ok(logs)
}

/// What the checks found, by kind of violation.
#[derive(Default, Debug)]
pub struct Verdict {
    pub expected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub missing: u64,
    pub missing_after_gap: u64,
    pub gaps: u64,
    /// Gap signals of the user's own stream on a response that had delivered none of the user's own
    /// events before it (a clue to their cause, not a verdict).
    pub own_gaps_before_any_own_event: u64,
    /// Gap signals on a stream where the connection had received an event whose publish failed:
    /// that write may be gone with a replaced master, so history was lost and the signal is due.
    pub gaps_after_lost_write: u64,
    /// Gap signals on a stream where a publish failed shortly before, of an event this connection
    /// does not read: its entry may have been written on a master that a failover replaced, and the
    /// hub's feed of the stream (shared by all its readers on that hub) had moved past it, so that
    /// stream's history was lost even though nothing this connection reads was.
    pub gaps_after_unread_lost_write: u64,
    pub unfinished: u64,
    /// Deliveries of events whose publish failed (allowed once each: the write may have landed).
    pub failed_publishes_delivered: u64,
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn exact(&self) -> bool {
        self.duplicates
            + self.out_of_order
            + self.foreign
            + self.missing
            + self.missing_after_gap
            + self.unexplained_gaps()
            + self.unfinished
            == 0
    }

    /// Gap signals where no history was lost.
    pub fn unexplained_gaps(&self) -> u64 {
        self.gaps - self.gaps_after_lost_write - self.gaps_after_unread_lost_write
    }

    fn violation(&mut self, text: impl FnOnce() -> String) {
        if self.examples.len() < 6 {
            self.examples.push(text());
        }
    }
}

/// How long before a gap signal a failed publish to its stream may have started to explain it: a
/// master stopped or failing over (the node timeout, 2 s, and the promotion), the publish's command
/// timeout (2 s), and the recovery that signals the gap, with room to spare; shorter than the
/// pause between two chaos steps.
const LOST_WRITE_LOOKBACK_NS: u64 = 10_000_000_000;

/// Whether connection `index` (reading group `index mod groups`) reads `event`.
fn reads(index: usize, groups: usize, event: &Published) -> bool {
    let audience = match event.target {
        Target::User(user) => user == index,
        Target::Broadcast => true,
        Target::Group(group) => group == index % groups.max(1),
    };
    audience && (takes_all_categories(index) || matches!(event.category, C::DataSync | C::Provider | C::Ai))
}

/// The stream an event is ordered in: 0 the user's, 1 the broadcasts, 2 the group's.
fn stream_of(target: Target) -> usize {
    match target {
        Target::User(_) => 0,
        Target::Broadcast => 1,
        Target::Group(_) => 2,
    }
}

/// Checks every connection's log against what was published to it.
pub fn verify(logs: &[ConnectionLog], published: &[Published], groups: usize) -> Verdict {
    let by_seq: HashMap<u64, &Published> = published.iter().map(|p| (p.seq, p)).collect();
    // The events each group and every connection must get, found once rather than per connection.
    let broadcasts: Vec<&Published> =
        published.iter().filter(|p| p.ok && p.target == Target::Broadcast).collect();
    let mut to_user: HashMap<usize, Vec<&Published>> = HashMap::new();
    let mut to_group: HashMap<usize, Vec<&Published>> = HashMap::new();
    for event in published.iter().filter(|p| p.ok) {
        match event.target {
            Target::User(user) => to_user.entry(user).or_default().push(event),
            Target::Group(group) => to_group.entry(group).or_default().push(event),
            Target::Broadcast => {}
        }
    }
    // Each stream's failed publishes: each may have been written on a master that then lost it.
    let mut failed_to: HashMap<Target, Vec<&Published>> = HashMap::new();
    for event in published.iter().filter(|p| !p.ok) {
        failed_to.entry(event.target).or_default().push(event);
    }
    let target_of = |index: usize, kind: usize| match kind {
        0 => Target::User(index),
        1 => Target::Broadcast,
        _ => Target::Group(index % groups.max(1)),
    };
    let mut verdict = Verdict::default();
    for (index, log) in logs.iter().enumerate() {
        // The streams in which this connection received an event whose publish failed.
        let mut unacknowledged_in_stream = [false; 3];
        for (seq, _) in &log.events {
            if let Some(event) = by_seq.get(seq).filter(|event| !event.ok) {
                unacknowledged_in_stream[stream_of(event.target)] = true;
            }
        }
        for (gap_ns, stream, received) in &log.gaps {
            verdict.gaps += 1;
            let response_start =
                log.events_at_live.iter().copied().filter(|at| at <= received).max().unwrap_or(0);
            let own_on_response = log.events[response_start..*received]
                .iter()
                .filter_map(|(seq, _)| by_seq.get(seq))
                .any(|event| matches!(event.target, Target::User(_)));
            if stream == "own" && !own_on_response {
                verdict.own_gaps_before_any_own_event += 1;
            }
            let kind = match stream.as_str() {
                "own" => 0,
                "broadcast" => 1,
                _ => 2,
            };
            if unacknowledged_in_stream[kind] {
                verdict.gaps_after_lost_write += 1;
            } else if failed_to.get(&target_of(index, kind)).is_some_and(|failed| {
                failed.iter().any(|event| {
                    !reads(index, groups, event)
                        && event.started_ns <= *gap_ns
                        && gap_ns - event.started_ns <= LOST_WRITE_LOOKBACK_NS
                })
            }) {
                // Not received here (its category is one this connection does not read), yet the
                // hub's feed of that stream moved past its entry, which a failover then lost.
                verdict.gaps_after_unread_lost_write += 1;
            } else {
                verdict.violation(|| {
                    format!("connection {index} got a gap signal ({stream}) where nothing was lost")
                });
            }
        }
        if !log.done {
            verdict.unfinished += 1;
            verdict.violation(|| format!("connection {index} did not get its end markers"));
        }
        let mut seen = HashSet::with_capacity(log.events.len());
        let mut last_in_stream = [None::<u64>; 3];
        for &(seq, _) in &log.events {
            let Some(event) = by_seq.get(&seq).filter(|event| reads(index, groups, event)) else {
                verdict.foreign += 1;
                verdict.violation(|| format!("connection {index} got event {seq}, not published to it"));
                continue;
            };
            if !seen.insert(seq) {
                verdict.duplicates += 1;
                verdict.violation(|| format!("connection {index} got event {seq} twice"));
                continue;
            }
            verdict.delivered += 1;
            if !event.ok {
                verdict.failed_publishes_delivered += 1;
                // Order is promised for acknowledged publishes. A failed one may still land later: its
                // command queued on a stopped master runs at SIGCONT, after the publisher, told it
                // failed, went on to the next event of that stream on the new master.
                continue;
            }
            let stream = stream_of(event.target);
            if last_in_stream[stream].is_some_and(|last| last > seq) {
                verdict.out_of_order += 1;
                verdict.violation(|| format!("connection {index} got event {seq} after a later one"));
            }
            last_in_stream[stream] = Some(seq);
        }
        let own = to_user.get(&index).map_or(&[][..], Vec::as_slice);
        let group = to_group.get(&(index % groups.max(1))).map_or(&[][..], Vec::as_slice);
        for event in own.iter().chain(&broadcasts).chain(group).filter(|event| reads(index, groups, event)) {
            verdict.expected += 1;
            if !seen.contains(&event.seq) {
                // With replica acks every acknowledged event survives a failover: none may be missing,
                // gap signal or not.
                if log.gaps.is_empty() {
                    verdict.missing += 1;
                } else {
                    verdict.missing_after_gap += 1;
                }
                verdict.violation(|| format!("connection {index} never got event {}", event.seq));
            }
        }
    }
    verdict
}

impl Verdict {
    /// The verdict's keys, and a failed check unless every connection is exact.
    pub fn put(&self, figures: &mut Figures) {
        figures.put("expected", self.expected);
        figures.put("delivered", self.delivered);
        figures.put("duplicates", self.duplicates);
        figures.put("out_of_order", self.out_of_order);
        figures.put("foreign", self.foreign);
        figures.put("missing", self.missing);
        figures.put("missing_after_gap", self.missing_after_gap);
        figures.put("gaps", self.gaps);
        figures.put("gaps_after_lost_write", self.gaps_after_lost_write);
        figures.put("gaps_after_unread_lost_write", self.gaps_after_unread_lost_write);
        figures.put("own_gaps_before_any_own_event", self.own_gaps_before_any_own_event);
        figures.put("unfinished_connections", self.unfinished);
        figures.put("failed_publishes_delivered", self.failed_publishes_delivered);
        figures.put("exact", self.exact());
        figures.check(self.exact(), || format!("not every client is exact: {}", self.examples.join(" | ")));
    }
}

/// A chaos event of the script, as logged.
pub struct ChaosEvent {
    pub name: String,
    pub detail: String,
    /// When it began and when the script was done with it, Unix nanoseconds.
    pub began_ns: u64,
    pub ended_ns: u64,
}

/// Per chaos event: when it happened, the connections it dropped, the reconnects in its window and
/// the time from its start until every dropped connection was live again.
pub fn chaos_figures(events: &[ChaosEvent], logs: &[ConnectionLog], start_ns: u64, end_ns: u64) -> Value {
    let mut list = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let window_end = events.get(n + 1).map_or(end_ns, |next| next.began_ns);
        let (mut dropped, mut reconnects, mut not_back) = (0u64, 0u64, 0u64);
        let mut gap_streams: std::collections::BTreeMap<&str, u64> = Default::default();
        let mut all_live_ns = event.began_ns;
        for log in logs {
            for (_, stream, _) in log.gaps.iter().filter(|(t, _, _)| *t >= event.began_ns && *t < window_end)
            {
                *gap_streams.entry(stream.as_str()).or_default() += 1;
            }
            reconnects += log.lives.iter().filter(|&&t| t >= event.began_ns && t < window_end).count() as u64;
            let Some(&down) = log.downs.iter().find(|&&t| t >= event.began_ns && t < window_end) else {
                continue;
            };
            dropped += 1;
            match log.lives.iter().find(|&&t| t >= down) {
                Some(&live) => all_live_ns = all_live_ns.max(live),
                None => not_back += 1,
            }
        }
        let seconds = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
        list.push(Value::Object(vec![
            ("event".into(), Value::Text(event.name.clone())),
            ("detail".into(), Value::Text(event.detail.clone())),
            ("at_s".into(), seconds(event.began_ns).into()),
            ("script_s".into(), ((event.ended_ns - event.began_ns) as f64 / 1e9).into()),
            ("connections_dropped".into(), dropped.into()),
            ("reconnects".into(), reconnects.into()),
            ("not_live_again".into(), not_back.into()),
            ("all_live_again_s".into(), ((all_live_ns - event.began_ns) as f64 / 1e9).into()),
            (
                "gap_signals".into(),
                Value::Object(
                    gap_streams.into_iter().map(|(stream, n)| (stream.to_string(), n.into())).collect(),
                ),
            ),
        ]));
    }
    Value::List(list)
}

/// Publish-to-client latency over the run, second by second of arrival: deliveries, p50, p99 and
/// max (milliseconds), from `start_ns`.
pub fn timeline(logs: &[ConnectionLog], published: &[Published], start_ns: u64) -> Value {
    let started: HashMap<u64, u64> = published.iter().map(|p| (p.seq, p.started_ns)).collect();
    let mut seconds: Vec<Vec<u64>> = Vec::new();
    // Latency 0: an end marker, which carries no publish instant.
    for (seq, latency_us) in logs.iter().flat_map(|log| log.events.iter()).filter(|(_, latency)| *latency > 0)
    {
        let Some(&began) = started.get(seq) else { continue };
        let second = ((began + latency_us * 1000).saturating_sub(start_ns) / 1_000_000_000) as usize;
        if seconds.len() <= second {
            seconds.resize_with(second + 1, Vec::new);
        }
        seconds[second].push(*latency_us);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Value::List(
        seconds
            .iter_mut()
            .enumerate()
            .map(|(second, latencies)| {
                latencies.sort_unstable();
                Value::Object(vec![
                    ("t_s".into(), (second as u64).into()),
                    ("deliveries".into(), (latencies.len() as u64).into()),
                    ("p50_ms".into(), ms(percentile(latencies, 0.5)).into()),
                    ("p99_ms".into(), ms(percentile(latencies, 0.99)).into()),
                    ("max_ms".into(), ms(latencies.last().copied().unwrap_or(0)).into()),
                ])
            })
            .collect(),
    )
}

/// The latency percentile `p` (0 to 1) of `sorted`.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The fate of the events published while the chaos script ran: delivered to every reader, to
/// some, to none; split by whether their publish succeeded.
pub fn chaos_publish_fate(
    logs: &[ConnectionLog],
    published: &[Published],
    groups: usize,
    from_ns: u64,
    to_ns: u64,
    figures: &mut Figures,
) {
    let during: Vec<&Published> =
        published.iter().filter(|p| p.started_ns >= from_ns && p.started_ns <= to_ns).collect();
    let wanted: HashSet<u64> = during.iter().map(|p| p.seq).collect();
    let mut deliveries: HashMap<u64, u64> = HashMap::new();
    for log in logs {
        for (seq, _) in &log.events {
            if wanted.contains(seq) {
                *deliveries.entry(*seq).or_default() += 1;
            }
        }
    }
    let readers = |event: &Published| -> u64 {
        match event.target {
            Target::User(user) => u64::from(reads(user, groups, event)),
            Target::Broadcast | Target::Group(_) => {
                (0..logs.len()).filter(|&index| reads(index, groups, event)).count() as u64
            }
        }
    };
    let (mut ok_all, mut ok_some, mut failed_none, mut failed_some) = (0u64, 0u64, 0u64, 0u64);
    for event in &during {
        let got = deliveries.get(&event.seq).copied().unwrap_or(0);
        match (event.ok, got) {
            (true, got) if got >= readers(event) => ok_all += 1,
            (true, _) => ok_some += 1,
            (false, 0) => failed_none += 1,
            (false, _) => failed_some += 1,
        }
    }
    figures.put("chaos_published", during.len() as u64);
    figures.put("chaos_published_ok_delivered_to_all", ok_all);
    figures.put("chaos_published_ok_not_delivered_to_all", ok_some);
    figures.put("chaos_publish_failed_delivered_nowhere", failed_none);
    figures.put("chaos_publish_failed_delivered", failed_some);
}
