//! The ssehub benchmark harness: fanout, replay, idle, latency, capacity, http and groups scenarios, each beside its baseline, and the soak, one JSON line per run.
//!
//! ```text
//! cargo run --release --example bench -- <fanout|replay|idle|latency|capacity|http|groups> [options]
//! cargo run --release --example bench --features fred -- fanout --backend fred
//! cargo run --release --example bench --features fred -- soak --backend fred
//! cargo run --release --example bench --features fred -- fleet --backend fred --quick
//! ```
//!
//! Every run measures ssehub and then its baseline in the same process (the
//! default), or only one of them (`--no-baseline`, `--baseline`), and prints
//! one JSON line on stdout: the scenario's keys for ssehub, the same figures
//! of the baseline prefixed `baseline_`, and `ratio`. Progress goes to stderr.
//! The exit status is 1 when a check fails (`deliveries != expected`, a
//! replay returning the wrong number of events, a subscription that is not
//! live), 2 on bad options, 3 when a backend fails.
//!
//! `--quick` shrinks every scenario to a few seconds for CI: it checks the
//! counts, not the times.

mod alloc;
mod capacity;
mod fanout;
#[cfg(feature = "fred")]
mod fleet;
#[cfg(feature = "fred")]
mod fleet_check;
#[cfg(feature = "fred")]
mod fleet_client;
mod groups;
mod http;
mod http_server;
mod idle;
mod latency;
#[cfg(feature = "fred")]
mod redis;
mod replay;
mod report;
#[cfg(feature = "fred")]
mod soak;
mod tally;
mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use report::Report;

const USAGE: &str = "\
usage: bench <scenario> [options]

scenarios (defaults in brackets; --quick switches to the small sizes after the slash):
  fanout    --users U [100/10] --subs S [10/4] --events E [20000/600] --rounds N [15/1]
  replay    --history L [10000/300] --tail K [10/10] --reps N [7/3] --via id|cursor [id]
            (--via cursor: missed_since after a cursor's positions, what resume does with a cursor)
  idle      --users U [10000/100] --subs S [10/5] --rounds N [1/1]
  latency   --rate R [5000/500] --seconds T [10/1] --subs N [1000/20] --rounds N [1/1]
  capacity  --users U [10000/200] --events-per-user R [100/5] --rounds N [1/1]  (--backend fred:
            hub heap per subscription and channel, resubscribe time, Redis memory and CPU per event)
  http      --connections N [1000/50] --events E [100/20] --rate R [10/0] --rounds N [1/1]
            --server-threads N [cores] --max-buf-size B [hyper's default] --count-heap 0|1 [0/1]
            --gzip 0|1 [0] (needs --features gzip) --payload bench|demo [bench]
            --body stream|native [stream] (the server's body: SseStream wrapped in a StreamBody, or
            SseStream itself as an http_body::Body)
            --http2 0|1 [0] (h2c, prior knowledge, both sides) --streams-per-connection S [1]
            (with --http2 1: S streams share each connection; --connections counts streams)
            (the server is a second process: this binary as `bench http-server`)
  groups    --members M [10000/200] --events E [20/3] --rounds N [1/1]  (--backend fred: one event
            to a group of M members over 4 hubs, against M user events, beside broadcasts)
  soak      --seconds T [1200/4] --rate R [2000/400] --users U [100/5] --subs S [10/8]
            --resume-percent P [5/50] --offline-ms M [500/100] --sample-every T [10/1] --warmup T [120/1]
            (--backend fred only; no baseline: memory is read against its own samples after the warmup)
  fleet     --servers K [4/2] --connections C [20000/300] --client-processes P [4/2] --groups G [64/8]
            --user-rate R [500/200] --broadcast-rate R [1/5] --group-rate R [20/20] --warmup T [10/3]
            --between-chaos T [10/6]  (--backend fred only; no baseline: a private Redis Cluster of 3
            masters with a replica each, K server processes, C reconnecting SSE clients, publishers
            and a chaos script; every client checked for exactly-once delivery)

--rounds runs ssehub and its baseline N times, interleaved, and reports each side's median round.
fanout --backend fred --publisher raw feeds the hub's subscriptions with plain PUBLISHes of
envelopes instead of the hub's publish: its delivery side alone.
fanout --backend fred runs two baselines: raw PUBLISH only (baseline_*) and the same Redis work
as the hub, XADD MAXLEN ~ + EXPIRE + PUBLISH pipelined per event (same_work_*).
fanout --count-heap 1 reports the heap's peak (peak_heap_kib); --message-channel-capacity N sets
the fred hub's message channel capacity.

options of every scenario:
  --backend memory|fred   the hub measured [memory]; fred needs `--features fred`
  --redis-url URL         the Redis for --backend fred [a private redis-server started for the run]
  --cluster N             (fanout, --backend fred) a private Redis Cluster of N masters instead;
                          the baseline is then the hub publishing one script per event
  --quick                 small sizes, for CI: checks counts, not times
  --baseline              run only the baseline
  --no-baseline           run only ssehub
  --baseline-first        run the baseline before ssehub (default: ssehub first)
  --threads N             tokio worker threads [available parallelism]
  --in-flight N           publishes (fanout) or subscribes (idle) kept in flight [64]
  --queue-capacity N      per-subscriber queue bound, for the hub and the baseline channels [1024]
  --prometheus            record the hub's metrics into a Prometheus recorder (needs `--features metrics`)
  --no-presence           (--backend fred) the hub without presence counts, for the A/B against them
";

/// What went wrong, and so which exit status.
#[derive(Debug)]
pub enum BenchError {
    /// Bad command line: exit status 2.
    Usage(String),
    /// A backend or the machine failed: exit status 3.
    Failed(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(message) | BenchError::Failed(message) => f.write_str(message),
        }
    }
}

impl From<ssehub::Error> for BenchError {
    fn from(error: ssehub::Error) -> Self {
        BenchError::Failed(format!("hub error: {error}"))
    }
}

/// Results of the bench.
pub type Result<T> = std::result::Result<T, BenchError>;

/// A failure of the backend or the machine, with what was being done.
pub fn failed(what: impl fmt::Display) -> BenchError {
    BenchError::Failed(what.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    Fanout,
    Replay,
    Idle,
    Latency,
    Capacity,
    Http,
    Groups,
    Soak,
    Fleet,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Replay => "replay",
            Scenario::Idle => "idle",
            Scenario::Latency => "latency",
            Scenario::Capacity => "capacity",
            Scenario::Http => "http",
            Scenario::Groups => "groups",
            Scenario::Soak => "soak",
            Scenario::Fleet => "fleet",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Memory,
    Fred,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Fred => "fred",
        }
    }
}

/// Which sides of a comparison a run measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sides {
    Both { baseline_first: bool },
    SsehubOnly,
    BaselineOnly,
}

impl Sides {
    pub fn ssehub(self) -> bool {
        self != Sides::BaselineOnly
    }

    pub fn baseline(self) -> bool {
        self != Sides::SsehubOnly
    }

    pub fn baseline_first(self) -> bool {
        matches!(self, Sides::Both { baseline_first: true } | Sides::BaselineOnly)
    }
}

/// The parsed command line.
pub struct Cli {
    pub scenario: Scenario,
    pub backend: Backend,
    pub sides: Sides,
    pub quick: bool,
    /// Whether a Prometheus recorder receives the hub's metrics (`--prometheus`): their cost, measured.
    pub prometheus: bool,
    /// Whether the Redis hub writes presence counts (off with `--no-presence`): their cost, measured.
    pub presence: bool,
    pub threads: usize,
    pub in_flight: usize,
    pub queue_capacity: usize,
    pub redis_url: Option<String>,
    /// `--cluster N`: a private Redis Cluster of N masters instead of one server.
    pub cluster: Option<usize>,
    options: Options,
}

impl Cli {
    /// A numeric option of the scenario: its value, else the quick or the full default.
    pub fn number(&mut self, name: &'static str, full: u64, quick: u64) -> Result<u64> {
        let default = if self.quick { quick } else { full };
        self.options.number(name, default)
    }

    /// A text option of the scenario, if given.
    pub fn text(&mut self, name: &'static str) -> Option<String> {
        self.options.take(name)
    }

    /// Fails on options the scenario did not read.
    pub fn finish(&mut self) -> Result<()> {
        self.options.finish(self.scenario)
    }
}

/// `--name value` options not yet read by a scenario.
struct Options {
    values: BTreeMap<String, String>,
}

impl Options {
    fn take(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    fn number(&mut self, name: &str, default: u64) -> Result<u64> {
        match self.take(name) {
            None => Ok(default),
            Some(text) => text
                .replace('_', "")
                .parse()
                .map_err(|_| BenchError::Usage(format!("--{name} takes a whole number, not {text:?}"))),
        }
    }

    fn finish(&self, scenario: Scenario) -> Result<()> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(BenchError::Usage(format!(
                "--{name} is not an option of the {} scenario",
                scenario.name()
            ))),
        }
    }
}

fn parse_cli(args: Vec<String>) -> Result<Cli> {
    let mut args = args.into_iter();
    let scenario = match args.next().as_deref() {
        Some("fanout") => Scenario::Fanout,
        Some("replay") => Scenario::Replay,
        Some("idle") => Scenario::Idle,
        Some("latency") => Scenario::Latency,
        Some("capacity") => Scenario::Capacity,
        Some("http") => Scenario::Http,
        Some("groups") => Scenario::Groups,
        Some("soak") => Scenario::Soak,
        Some("fleet") => Scenario::Fleet,
        Some("-h" | "--help") => return Err(BenchError::Usage(String::new())),
        Some(other) => return Err(BenchError::Usage(format!("unknown scenario {other:?}"))),
        None => return Err(BenchError::Usage("which scenario?".into())),
    };
    let mut values = BTreeMap::new();
    let (mut quick, mut baseline_only, mut no_baseline, mut baseline_first) = (false, false, false, false);
    let mut prometheus = false;
    let mut presence = true;
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else {
            return Err(BenchError::Usage(format!("unexpected argument {arg:?}")));
        };
        match name {
            "quick" => quick = true,
            "prometheus" => prometheus = true,
            "no-presence" => presence = false,
            "baseline" => baseline_only = true,
            "no-baseline" => no_baseline = true,
            "baseline-first" => baseline_first = true,
            "help" => return Err(BenchError::Usage(String::new())),
            _ => {
                let (name, value) = match name.split_once('=') {
                    Some((name, value)) => (name.to_string(), value.to_string()),
                    None => {
                        let value = args
                            .next()
                            .ok_or_else(|| BenchError::Usage(format!("--{name} needs a value")))?;
                        (name.to_string(), value)
                    }
                };
                if values.insert(name.clone(), value).is_some() {
                    return Err(BenchError::Usage(format!("--{name} given twice")));
                }
            }
        }
    }
    let sides = match (baseline_only, no_baseline) {
        (true, true) => {
            return Err(BenchError::Usage("--baseline and --no-baseline exclude each other".into()));
        }
        (true, false) => Sides::BaselineOnly,
        (false, true) => Sides::SsehubOnly,
        (false, false) => Sides::Both { baseline_first },
    };
    let mut options = Options { values };
    let backend = match options.take("backend").as_deref() {
        None | Some("memory") => Backend::Memory,
        Some("fred") => Backend::Fred,
        Some(other) => {
            return Err(BenchError::Usage(format!("--backend is memory or fred, not {other:?}")));
        }
    };
    if backend == Backend::Fred && !cfg!(feature = "fred") {
        return Err(BenchError::Usage(
            "--backend fred needs the Redis backend: build with `--features fred`".into(),
        ));
    }
    if scenario == Scenario::Soak && backend != Backend::Fred {
        return Err(BenchError::Usage("soak runs on the Redis backend: --backend fred".into()));
    }
    if scenario == Scenario::Fleet && backend != Backend::Fred {
        return Err(BenchError::Usage("fleet runs on a Redis Cluster: --backend fred".into()));
    }
    let redis_url = options.take("redis-url");
    if redis_url.is_some() && backend != Backend::Fred {
        return Err(BenchError::Usage("--redis-url is for --backend fred".into()));
    }
    let cluster = match options.take("cluster") {
        None => None,
        Some(_) if backend != Backend::Fred => {
            return Err(BenchError::Usage("--cluster is for --backend fred".into()));
        }
        Some(_) if redis_url.is_some() => {
            return Err(BenchError::Usage("--cluster starts a private cluster: not with --redis-url".into()));
        }
        Some(_) if scenario != Scenario::Fanout => {
            return Err(BenchError::Usage("--cluster is an option of the fanout scenario".into()));
        }
        Some(text) => match text.parse::<usize>() {
            Ok(masters) if masters >= 3 => Some(masters),
            _ => {
                return Err(BenchError::Usage(format!(
                    "--cluster takes a number of masters, at least 3, not {text:?}"
                )));
            }
        },
    };
    if prometheus && !cfg!(feature = "metrics") {
        return Err(BenchError::Usage(
            "--prometheus needs the hub's metrics: build with `--features metrics`".into(),
        ));
    }
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = positive(options.number("threads", parallelism as u64)?, "threads")?;
    let in_flight = positive(options.number("in-flight", 64)?, "in-flight")?;
    let queue_capacity = positive(options.number("queue-capacity", 1024)?, "queue-capacity")?;
    Ok(Cli {
        scenario,
        backend,
        sides,
        quick,
        prometheus,
        presence,
        threads,
        in_flight,
        queue_capacity,
        redis_url,
        cluster,
        options,
    })
}

/// `value` as a `usize` of at least 1.
pub fn positive(value: u64, name: &str) -> Result<usize> {
    match usize::try_from(value) {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(BenchError::Usage(format!("--{name} must be at least 1 (and fit in memory)"))),
    }
}

/// Everything a scenario runs with: its options, a runtime, and the Redis of `--backend fred`.
pub struct Bench {
    pub cli: Cli,
    pub runtime: tokio::runtime::Runtime,
    #[cfg(feature = "fred")]
    pub redis: Option<redis::RedisTarget>,
}

impl Bench {
    #[cfg(feature = "fred")]
    pub fn redis(&self) -> Result<&redis::RedisTarget> {
        self.redis.as_ref().ok_or_else(|| failed("no Redis for --backend fred"))
    }

    /// Logs progress on stderr.
    pub fn progress(&self, message: impl fmt::Display) {
        eprintln!("[bench {} {}] {message}", self.cli.scenario.name(), self.cli.backend.name());
    }
}

fn run(args: Vec<String>) -> Result<Report> {
    let cli = parse_cli(args)?;
    #[cfg(feature = "metrics")]
    if cli.prometheus {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| failed(format!("cannot install the Prometheus recorder: {e}")))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the tokio runtime: {e}")))?;
    #[cfg(feature = "fred")]
    let redis = match cli.backend {
        // The fleet starts its own cluster, with replicas.
        Backend::Fred if cli.scenario == Scenario::Fleet => None,
        Backend::Fred => Some(
            match cli.cluster {
                Some(masters) => redis::RedisTarget::new_cluster(masters)?,
                None => redis::RedisTarget::new(cli.redis_url.clone())?,
            }
            .with_presence(cli.presence),
        ),
        Backend::Memory => None,
    };
    let mut bench = Bench {
        cli,
        runtime,
        #[cfg(feature = "fred")]
        redis,
    };
    let mut report = Report::new();
    report.put("scenario", bench.cli.scenario.name());
    report.put("backend", bench.cli.backend.name());
    report.put(
        "side",
        match bench.cli.sides {
            Sides::Both { .. } => "both",
            Sides::SsehubOnly => "ssehub",
            Sides::BaselineOnly => "baseline",
        },
    );
    report.put("quick", bench.cli.quick);
    report.put("prometheus", bench.cli.prometheus);
    if bench.cli.backend == Backend::Fred {
        report.put("presence", bench.cli.presence);
    }
    let load_before = report::load_average_1m();
    match bench.cli.scenario {
        Scenario::Fanout => fanout::run(&mut bench, &mut report)?,
        Scenario::Replay => replay::run(&mut bench, &mut report)?,
        Scenario::Idle => idle::run(&mut bench, &mut report)?,
        Scenario::Latency => latency::run(&mut bench, &mut report)?,
        Scenario::Capacity => capacity::run(&mut bench, &mut report)?,
        Scenario::Http => http::run(&mut bench, &mut report)?,
        Scenario::Groups => groups::run(&mut bench, &mut report)?,
        #[cfg(feature = "fred")]
        Scenario::Soak => soak::run(&mut bench, &mut report)?,
        #[cfg(feature = "fred")]
        Scenario::Fleet => fleet::run(&mut bench, &mut report)?,
        #[cfg(not(feature = "fred"))]
        Scenario::Soak | Scenario::Fleet => unreachable!("rejected when parsing the command line"),
    }
    report.put("threads", bench.cli.threads as u64);
    report.put("cores", report::online_cores());
    report.put("cpu_model", report::cpu_model());
    report.put("load_1m_before", load_before);
    report.put("load_1m_after", report::load_average_1m());
    let Bench { runtime, .. } = bench;
    // fred's tasks may still hold connections; do not wait on them forever.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(report)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The http scenario's server process: this binary, started again by the scenario.
    if args.first().is_some_and(|role| role == "http-server") {
        return http_server::main(&args[1..]);
    }
    // The fleet scenario's client processes.
    #[cfg(feature = "fred")]
    if args.first().is_some_and(|role| role == "fleet-client") {
        return fleet_client::main(&args[1..]);
    }
    match run(args) {
        Ok(report) => {
            println!("{}", report.to_json());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("bench: a check failed (see \"ok\" and \"failures\" in the JSON line)");
                ExitCode::from(1)
            }
        }
        Err(BenchError::Usage(message)) => {
            if !message.is_empty() {
                eprintln!("bench: {message}\n");
            }
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Err(BenchError::Failed(message)) => {
            eprintln!("bench: {message}");
            ExitCode::from(3)
        }
    }
}
