//! The http scenario: N SSE connections over loopback to a server process (ssehub, or the floor), every byte read, frames counted, publish-to-socket time.
//!
//! This process is the load client; the server is this same binary started
//! again as `bench http-server` ([`crate::http_server`]), so client and
//! server each have a process (and 20,000 open files) of their own. A round:
//!
//! 1. start the server, read its resident memory;
//! 2. open `--connections` connections (`GET /events?user=<n>`, HTTP/1.1,
//!    chunked), each read to the end of its `retry:` frame: every stream is
//!    live; read the server's memory again (idle cost per connection);
//! 3. tell the server to publish `--events` broadcasts at `--rate` a second
//!    (0: as fast as it can), each carrying its publish instant;
//! 4. every connection reads until it has them all; each frame's
//!    publish-to-socket time is its arrival minus that instant (one clock,
//!    `CLOCK_REALTIME`, read by both processes);
//! 5. `seconds` runs from the first publish to the last frame read;
//!    `server_cpu_s` is the server's user + system time over steps 3-4.
//!
//! With `--http2 1` both sides speak HTTP/2 without TLS (h2c, prior
//! knowledge): the client is hyper's HTTP/2 client, `--streams-per-connection`
//! streams share each TCP connection (`--connections` then counts streams),
//! and `wire_bytes_per_frame` counts every byte read from the sockets (HTTP/2
//! framing, headers and settings included).
//!
//! `frames` must equal `expected` (connections × events). `ratio` is
//! ssehub's `frames_per_s` over the floor's (the baseline, a bare hyper
//! server writing pre-encoded frames from one channel per connection).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use smol::Executor;
use smol_hyper::rt::FuturesIo;

use crate::http_server::{Mode, unix_ns};
use crate::report::{Figures, Report, Rounds, ratio};
use crate::workload::sent_ns;
use crate::{Backend, Bench, Result, failed, positive};

/// Connections opened at once while connecting: below the listen backlog (128),
/// past which the kernel drops SYNs and the client waits a second to retry.
const CONNECT_BATCH: usize = 100;

/// What a round does.
struct Plan {
    connections: usize,
    events: u64,
    rate: u64,
    server_threads: usize,
    max_buf_size: Option<u64>,
    count_heap: bool,
    gzip: bool,
    payload: String,
    /// HTTP/2 (h2c) with this many streams per connection; `None`: HTTP/1.1, a connection per stream.
    http2_streams_per_connection: Option<usize>,
    /// How the server hands `SseStream` to hyper: `native` (its `http_body::Body`) or `stream`.
    body: String,
}

impl Plan {
    fn expected(&self) -> u64 {
        self.connections as u64 * self.events
    }
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let cores = crate::report::online_cores().unwrap_or(2);
    let connections = positive(bench.cli.number("connections", 1_000, 50)?, "connections")?;
    let events = bench.cli.number("events", 100, 20)?;
    let rate = bench.cli.number("rate", 10, 0)?;
    let rounds = positive(bench.cli.number("rounds", 1, 1)?, "rounds")?;
    let server_threads = positive(bench.cli.number("server-threads", cores, cores)?, "server-threads")?;
    let max_buf_size = bench.cli.number("max-buf-size", 0, 0)?;
    let count_heap = bench.cli.number("count-heap", 0, 1)? == 1;
    let gzip = bench.cli.number("gzip", 0, 0)? == 1;
    if gzip && !cfg!(feature = "gzip") {
        return Err(crate::BenchError::Usage("--gzip 1 needs `--features gzip`".into()));
    }
    let payload = bench.cli.text("payload").unwrap_or_else(|| "bench".into());
    if payload != "bench" && payload != "demo" {
        return Err(crate::BenchError::Usage(format!("--payload is bench or demo, not {payload:?}")));
    }
    let body = bench.cli.text("body").unwrap_or_else(|| "stream".into());
    if body != "native" && body != "stream" {
        return Err(crate::BenchError::Usage(format!("--body is native or stream, not {body:?}")));
    }
    let http2 = bench.cli.number("http2", 0, 0)? == 1;
    let streams_per_connection =
        positive(bench.cli.number("streams-per-connection", 1, 1)?, "streams-per-connection")?;
    if http2 && gzip {
        return Err(crate::BenchError::Usage("--gzip 1 is for HTTP/1.1 only".into()));
    }
    if streams_per_connection > 1 && !http2 {
        return Err(crate::BenchError::Usage("--streams-per-connection needs --http2 1".into()));
    }
    if streams_per_connection > crate::http_server::MAX_STREAMS_PER_CONNECTION as usize {
        return Err(crate::BenchError::Usage(format!(
            "--streams-per-connection is at most {}",
            crate::http_server::MAX_STREAMS_PER_CONNECTION
        )));
    }
    bench.cli.finish()?;
    positive(events, "events")?;
    let plan = Plan {
        connections,
        events,
        rate,
        server_threads,
        max_buf_size: (max_buf_size > 0).then_some(max_buf_size),
        count_heap,
        gzip,
        payload,
        http2_streams_per_connection: http2.then_some(streams_per_connection),
        body,
    };
    raise_open_files_limit();
    report.put("connections", connections as u64);
    report.put("events", events);
    report.put("rate", rate);
    report.put("server_threads", server_threads as u64);
    report.put("max_buf_size", plan.max_buf_size);
    report.put("gzip", plan.gzip);
    report.put("payload", plan.payload.as_str());
    report.put("body", plan.body.as_str());
    report.put("protocol", if http2 { "h2c" } else { "http/1.1" });
    report.put("streams_per_connection", streams_per_connection as u64);
    report.put("open_files_limit", open_files_limit());

    // Paced runs are about latency; unpaced ones about throughput.
    let rank_key = if rate > 0 { "p99_us" } else { "seconds" };
    let bench: &Bench = bench;
    let rounds = Rounds::run(
        bench,
        rounds,
        rank_key,
        || round(bench, Mode::Ssehub, &plan),
        || round(bench, Mode::Floor, &plan),
        |ssehub, floor| ratio(ssehub.get("frames_per_s"), floor.get("frames_per_s")),
    )?;
    let of_medians = match (&rounds.ssehub, &rounds.baseline) {
        (Some(s), Some(b)) => ratio(s.get("frames_per_s"), b.get("frames_per_s")),
        _ => None,
    };
    rounds.put_ratio(report, "frames_per_s / baseline_frames_per_s", of_medians);
    report.put(
        "baseline",
        "the floor: bare hyper 1 on smol writing pre-encoded frames from one unbounded channel per connection",
    );
    report.add_sides(rounds.ssehub, rounds.baseline);
    Ok(())
}

/// One side's round: a fresh server process, its connections, its events.
fn round(bench: &Bench, mode: Mode, plan: &Plan) -> Result<Figures> {
    let mut server = Server::start(bench, mode, plan)?;
    let result = measure(bench, &mut server, plan);
    server.stop();
    result
}

fn measure(bench: &Bench, server: &mut Server, plan: &Plan) -> Result<Figures> {
    let mut figures = Figures::default();
    // Let the server finish starting (threads, hub) before the baseline reading.
    thread::sleep(Duration::from_millis(300));
    let rss_before = server.rss_kib().ok_or_else(|| failed("cannot read the server's memory"))?;
    let heap_before = if plan.count_heap { Some(server.heap()?) } else { None };

    let client = Client::new(bench.cli.threads);
    let shared = Arc::new(Shared::default());
    let connect_started = Instant::now();
    let patience = Duration::from_secs(60) + Duration::from_millis(plan.connections as u64 * 5);
    // Whole connections per batch: HTTP/2 opens a connection's streams together.
    let per_connection = plan.http2_streams_per_connection.unwrap_or(1);
    let batch = per_connection * (CONNECT_BATCH / per_connection).max(1);
    for batch_start in (0..plan.connections).step_by(batch) {
        let batch_end = (batch_start + batch).min(plan.connections);
        for first_user in (batch_start..batch_end).step_by(per_connection) {
            let shared = Arc::clone(&shared);
            let (addr, expected) = (server.addr, plan.events);
            let gzip = plan.gzip;
            match plan.http2_streams_per_connection {
                None => client.executor.spawn(connection(addr, first_user, expected, gzip, shared)).detach(),
                Some(_) => {
                    let users = first_user..(first_user + per_connection).min(batch_end);
                    let executor = Arc::clone(&client.executor);
                    client.executor.spawn(http2_connection(addr, users, expected, executor, shared)).detach()
                }
            }
        }
        let live = wait_until(connect_started + patience, || {
            shared.live.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst) >= batch_end
        });
        if !live || shared.failed.load(Ordering::SeqCst) > 0 {
            return Err(failed(format!(
                "{} of {} connections live after {:.1} s: {}",
                shared.live.load(Ordering::SeqCst),
                plan.connections,
                connect_started.elapsed().as_secs_f64(),
                shared.errors.lock().unwrap().join("; ")
            )));
        }
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    // Idle: let allocations made while connecting settle before reading the memory.
    thread::sleep(Duration::from_secs(1));
    let rss_idle = server.rss_kib().ok_or_else(|| failed("cannot read the server's memory"))?;
    let heap_idle = if plan.count_heap { Some(server.heap()?) } else { None };
    let cpu_before = server.cpu_seconds().ok_or_else(|| failed("cannot read the server's CPU time"))?;
    let allocations_before = heap_idle.map(|(_, calls)| calls);

    let (first_ns, last_publish_ns) = server.publish(plan.events, plan.rate)?;
    let publishing = Duration::from_nanos(last_publish_ns.saturating_sub(first_ns));
    let deadline = Instant::now() + Duration::from_secs(30) + Duration::from_micros(plan.expected() * 20);
    let complete = wait_until(deadline, || shared.done.load(Ordering::SeqCst) >= plan.connections)
        || shared.done.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst) >= plan.connections;
    let cpu_after = server.cpu_seconds().ok_or_else(|| failed("cannot read the server's CPU time"))?;
    let allocations_after = if plan.count_heap { Some(server.heap()?.1) } else { None };
    let rss_after = server.rss_kib();
    client.stop();

    let frames = shared.frames.load(Ordering::SeqCst);
    let last_ns = shared.last_frame_ns.load(Ordering::SeqCst);
    let seconds = last_ns.saturating_sub(first_ns) as f64 / 1e9;
    let mut latencies = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let percentile = |p: f64| -> Option<u64> {
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map(|&us| u64::from(us))
    };
    figures.put("server", server.mode.name());
    figures.put("frames", frames);
    figures.put("expected", plan.expected());
    figures.put("seconds", seconds);
    figures.put("frames_per_s", frames as f64 / seconds);
    figures.put("publish_seconds", publishing.as_secs_f64());
    figures.put("connect_seconds", connect_seconds);
    figures.put("server_rss_kib_before", rss_before);
    figures.put("server_rss_kib_idle", rss_idle);
    figures.put("server_rss_kib_after", rss_after);
    figures.put(
        "server_bytes_per_connection",
        (rss_idle.saturating_sub(rss_before) * 1024) as f64 / plan.connections as f64,
    );
    // The same figure under the name that says what it divides by when streams share connections.
    figures.put(
        "server_bytes_per_stream",
        (rss_idle.saturating_sub(rss_before) * 1024) as f64 / plan.connections as f64,
    );
    figures.put("tcp_connections", plan.connections.div_ceil(per_connection) as u64);
    figures.put(
        "server_heap_bytes_per_connection",
        heap_before
            .zip(heap_idle)
            .map(|((before, _), (idle, _))| (idle - before) as f64 / plan.connections as f64),
    );
    figures.put("p50_us", percentile(0.50));
    figures.put("p99_us", percentile(0.99));
    figures.put("max_us", latencies.last().map(|&us| u64::from(us)));
    figures.put("server_cpu_s", cpu_after.total() - cpu_before.total());
    figures.put("server_cpu_user_s", cpu_after.user - cpu_before.user);
    figures.put("server_cpu_system_s", cpu_after.system - cpu_before.system);
    figures.put(
        "server_cpu_us_per_frame",
        (cpu_after.total() - cpu_before.total()) * 1e6 / frames.max(1) as f64,
    );
    figures.put(
        "server_allocations_per_frame",
        allocations_before
            .zip(allocations_after)
            .map(|(before, after)| (after - before) as f64 / frames.max(1) as f64),
    );
    let body_bytes = shared.body_bytes.load(Ordering::SeqCst);
    figures.put("wire_bytes_per_frame", body_bytes as f64 / frames.max(1) as f64);
    let sse_bytes = shared.sse_bytes.load(Ordering::SeqCst);
    figures.put("sse_bytes_per_frame", sse_bytes as f64 / frames.max(1) as f64);
    figures.put("gzip_streams", shared.gzip_streams.load(Ordering::SeqCst) as u64);
    figures.put("heartbeats", shared.comments.load(Ordering::SeqCst));
    let errors = shared.errors.lock().unwrap().clone();
    figures.check(frames == plan.expected() && complete && errors.is_empty(), || {
        format!(
            "{} server: frames {frames} != expected {}{}",
            server.mode.name(),
            plan.expected(),
            if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
        )
    });
    Ok(figures)
}

/// Polls `condition` every 20 ms until it holds (true) or `deadline` passes (false).
fn wait_until(deadline: Instant, condition: impl Fn() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The server process of a round.
struct Server {
    mode: Mode,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Server {
    fn start(bench: &Bench, mode: Mode, plan: &Plan) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find this binary: {e}")))?;
        let mut command = Command::new(exe);
        command.arg("http-server").args(["--mode", mode.name()]);
        command.args(["--threads", &plan.server_threads.to_string()]);
        if plan.count_heap {
            command.args(["--count-heap", "1"]);
        }
        if plan.gzip && mode == Mode::Ssehub {
            command.args(["--gzip", "1"]);
        }
        if plan.http2_streams_per_connection.is_some() {
            command.args(["--http2", "1"]);
        }
        command.args(["--payload", &plan.payload]);
        if mode == Mode::Ssehub {
            command.args(["--body", &plan.body]);
        }
        if let Some(size) = plan.max_buf_size {
            command.args(["--max-buf-size", &size.to_string()]);
        }
        match bench.cli.backend {
            Backend::Memory => {}
            #[cfg(feature = "fred")]
            Backend::Fred if mode == Mode::Ssehub => {
                command.args(["--redis-url", bench.redis()?.url()]);
            }
            Backend::Fred => {}
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot start the server process: {e}")))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| failed(format!("server: {e}")))?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.trim().parse().ok())
            .ok_or_else(|| failed(format!("the server process said {line:?}, not `listening <addr>`")))?;
        Ok(Self { mode, child, stdin, stdout, addr })
    }

    /// Asks for `events` broadcasts at `rate`; returns the first and last publish instants (Unix ns).
    fn publish(&mut self, events: u64, rate: u64) -> Result<(u64, u64)> {
        let stdin = self.stdin.as_mut().ok_or_else(|| failed("the server's stdin is closed"))?;
        writeln!(stdin, "publish {events} {rate}")
            .and_then(|()| stdin.flush())
            .map_err(|e| failed(format!("server: {e}")))?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| failed(format!("server: {e}")))?;
        let numbers: Vec<u64> = line
            .strip_prefix("published ")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        match numbers.as_slice() {
            [first, last] => Ok((*first, *last)),
            _ => Err(failed(format!("the server process said {line:?}, not `published <first> <last>`"))),
        }
    }

    /// The heap bytes the server holds and the allocations it made (counted with `--count-heap 1`).
    fn heap(&mut self) -> Result<(i64, u64)> {
        let stdin = self.stdin.as_mut().ok_or_else(|| failed("the server's stdin is closed"))?;
        writeln!(stdin, "heap").and_then(|()| stdin.flush()).map_err(|e| failed(format!("server: {e}")))?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| failed(format!("server: {e}")))?;
        let mut words = line.strip_prefix("heap ").unwrap_or("").split_whitespace();
        match (words.next().and_then(|n| n.parse().ok()), words.next().and_then(|n| n.parse().ok())) {
            (Some(bytes), Some(calls)) => Ok((bytes, calls)),
            _ => Err(failed(format!("the server process said {line:?}, not `heap <bytes> <allocations>`"))),
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        process_rss_kib(self.child.id())
    }

    /// User and system CPU time of the server process so far.
    fn cpu_seconds(&self) -> Option<CpuTime> {
        process_cpu_time(self.child.id())
    }

    /// Ends the server: closing its stdin makes it exit; killed if it does not within 5 s.
    fn stop(&mut self) {
        end_child(&mut self.child, &mut self.stdin, Duration::from_secs(5));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The resident memory of process `pid` (`VmRSS`), KiB; `None` once it is gone.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Waits (`limit` at most) for `child` to exit; true if it did.
pub fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Ends a child process that exits when its stdin closes: closes `stdin`, waits `grace`, then kills it.
pub fn end_child(child: &mut Child, stdin: &mut Option<ChildStdin>, grace: Duration) {
    drop(stdin.take());
    if !wait_exit(child, grace) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// User and system CPU time of process `pid` so far (`/proc/<pid>/stat`); `None` once it is gone.
pub fn process_cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (user, system): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (per_second > 0.0).then(|| CpuTime { user: user as f64 / per_second, system: system as f64 / per_second })
}

/// A process's CPU time, in seconds.
#[derive(Clone, Copy)]
pub struct CpuTime {
    user: f64,
    system: f64,
}

impl CpuTime {
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// The load client's executor and its threads.
struct Client {
    executor: Arc<Executor<'static>>,
    stop: async_channel::Sender<()>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Client {
    fn new(threads: usize) -> Self {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = (0..threads)
            .map(|n| {
                let (executor, stopped) = (Arc::clone(&executor), stopped.clone());
                thread::Builder::new()
                    .name(format!("client-{n}"))
                    .spawn(move || {
                        let _ = smol::block_on(executor.run(stopped.recv()));
                    })
                    .expect("a client thread")
            })
            .collect();
        Self { executor, stop, threads }
    }

    /// Stops the threads; the connections close when the executor drops their tasks.
    fn stop(self) {
        self.stop.close();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// What the connections report.
#[derive(Default)]
struct Shared {
    /// Connections that have read their `retry:` frame.
    live: AtomicUsize,
    /// Connections that have read every expected frame.
    done: AtomicUsize,
    failed: AtomicUsize,
    frames: AtomicU64,
    comments: AtomicU64,
    /// Body bytes read, chunk framing included.
    body_bytes: AtomicU64,
    /// The text/event-stream bytes they carried (decompressed).
    sse_bytes: AtomicU64,
    /// Responses that came `Content-Encoding: gzip`.
    gzip_streams: AtomicUsize,
    /// When the last frame of a finished connection was read (Unix ns; the latest).
    last_frame_ns: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    errors: Mutex<Vec<String>>,
}

async fn connection(addr: SocketAddr, user: usize, expected: u64, gzip: bool, shared: Arc<Shared>) {
    if let Err(error) = read_stream(addr, user, expected, gzip, &shared).await {
        shared.record_failure(format!("connection {user}: {error}"));
    }
}

impl Shared {
    /// Counts a stream that failed; keeps the first few reasons.
    fn record_failure(&self, error: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 5 {
            errors.push(error);
        }
    }
}

/// Reads one SSE response to its `expected`th event frame.
async fn read_stream(
    addr: SocketAddr,
    user: usize,
    expected: u64,
    gzip: bool,
    shared: &Shared,
) -> std::io::Result<()> {
    let broken = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut stream = smol::net::TcpStream::connect(addr).await?;
    let accept_encoding = if gzip { "accept-encoding: gzip, deflate, br, zstd\r\n" } else { "" };
    let request = format!(
        "GET /events?user={user} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\ncache-control: no-cache\r\n{accept_encoding}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;

    let mut buffer = vec![0u8; 4096];
    let mut head = Vec::new();
    let mut body = Chunked::default();
    let mut tally = StreamTally::new(expected);
    let mut decoded = Vec::new();
    #[cfg(feature = "gzip")]
    let mut gunzip: Option<flate2::write::GzDecoder<Vec<u8>>> = None;
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(broken(format!(
                "the server closed the connection after {} of {expected} frames",
                tally.got
            )));
        }
        let now_ns = unix_ns();
        let mut bytes = &buffer[..read];
        let after_head;
        if !body.started {
            let Some((text, body_start)) = response_head(&mut head, bytes) else { continue };
            if !text.starts_with("http/1.1 200") || !text.contains("transfer-encoding: chunked") {
                return Err(broken(format!("unexpected response head: {text:?}")));
            }
            body.started = true;
            if text.contains("content-encoding: gzip") {
                #[cfg(feature = "gzip")]
                {
                    gunzip = Some(flate2::write::GzDecoder::new(Vec::new()));
                }
                shared.gzip_streams.fetch_add(1, Ordering::Relaxed);
            }
            after_head = body_start;
            bytes = &after_head;
        }
        shared.body_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        decoded.clear();
        let ended = body.feed(bytes, |data| decoded.extend_from_slice(data)).map_err(broken)?;
        #[cfg(feature = "gzip")]
        if let Some(gunzip) = gunzip.as_mut() {
            gunzip.write_all(&decoded)?;
            gunzip.flush()?;
            decoded.clear();
            decoded.append(gunzip.get_mut());
        }
        if tally.take(&decoded, now_ns, shared)? {
            return Ok(());
        }
        if ended {
            return Err(broken(format!("the body ended after {} of {expected} frames", tally.got)));
        }
    }
}

/// One stream's reading: its frames counted and timed, reported to [`Shared`] as it goes live and
/// once it has every frame expected.
struct StreamTally {
    frames: FrameReader,
    latencies: Vec<u32>,
    expected: u64,
    got: u64,
    live: bool,
}

impl StreamTally {
    fn new(expected: u64) -> Self {
        Self {
            frames: FrameReader::default(),
            latencies: Vec::with_capacity(expected as usize),
            expected,
            got: 0,
            live: false,
        }
    }

    /// Takes text/event-stream bytes read at `now_ns`; true once every expected frame is in.
    fn take(&mut self, sse: &[u8], now_ns: u64, shared: &Shared) -> std::io::Result<bool> {
        shared.sse_bytes.fetch_add(sse.len() as u64, Ordering::Relaxed);
        let (mut live, mut bad_frame) = (false, false);
        let (got, latencies) = (&mut self.got, &mut self.latencies);
        self.frames.feed(sse, |frame| {
            if frame.starts_with(b"retry:") {
                live = true;
            } else if frame.starts_with(b":") {
                shared.comments.fetch_add(1, Ordering::Relaxed);
            } else {
                *got += 1;
                match sent_ns(frame) {
                    Some(sent) => {
                        latencies.push(u32::try_from(now_ns.saturating_sub(sent) / 1_000).unwrap_or(u32::MAX))
                    }
                    None => bad_frame = true,
                }
            }
        });
        if bad_frame {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an event frame without its publish instant",
            ));
        }
        if live && !self.live {
            self.live = true;
            shared.live.fetch_add(1, Ordering::SeqCst);
        }
        if self.got >= self.expected {
            shared.frames.fetch_add(self.got, Ordering::SeqCst);
            shared.latencies_us.lock().unwrap().extend_from_slice(&self.latencies);
            shared.last_frame_ns.fetch_max(now_ns, Ordering::SeqCst);
            shared.done.fetch_add(1, Ordering::SeqCst);
            return Ok(true);
        }
        Ok(false)
    }
}

/// One HTTP/2 connection (h2c, prior knowledge) carrying a stream for each of `users`.
async fn http2_connection(
    addr: SocketAddr,
    users: std::ops::Range<usize>,
    expected: u64,
    executor: Arc<Executor<'static>>,
    shared: Arc<Shared>,
) {
    let sender = async {
        let tcp = smol::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let io = CountedReads { inner: tcp, shared: Arc::clone(&shared) };
        let mut builder = hyper::client::conn::http2::Builder::new(WeakExecutor(Arc::downgrade(&executor)));
        // A connection window for all its streams, so none waits on another's reading.
        builder.initial_connection_window_size(16 << 20);
        let (sender, connection) = builder.handshake(FuturesIo::new(io)).await.map_err(|e| e.to_string())?;
        executor.spawn(connection).detach();
        Ok::<_, String>(sender)
    };
    let sender = match sender.await {
        Ok(sender) => sender,
        Err(error) => {
            for user in users {
                shared.record_failure(format!("stream {user}: {error}"));
            }
            return;
        }
    };
    for user in users {
        let (sender, shared) = (sender.clone(), Arc::clone(&shared));
        executor
            .spawn(async move {
                if let Err(error) = read_http2_stream(sender, addr, user, expected, &shared).await {
                    shared.record_failure(format!("stream {user}: {error}"));
                }
            })
            .detach();
    }
}

/// Spawns hyper's HTTP/2 client tasks on the client's executor without keeping it alive: the tasks
/// it runs hold this, and a strong reference would keep the executor, its tasks and their sockets
/// alive after [`Client::stop`] (the next round would run out of open files).
#[derive(Clone)]
struct WeakExecutor(std::sync::Weak<Executor<'static>>);

impl<F> hyper::rt::Executor<F> for WeakExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        if let Some(executor) = self.0.upgrade() {
            executor.spawn(future).detach();
        }
    }
}

/// Reads one HTTP/2 SSE response to its `expected`th event frame.
async fn read_http2_stream(
    mut sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    addr: SocketAddr,
    user: usize,
    expected: u64,
    shared: &Shared,
) -> std::io::Result<()> {
    use http_body_util::BodyExt;
    let broken = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let request = hyper::Request::get(format!("http://{addr}/events?user={user}"))
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .map_err(|e| broken(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| broken(e.to_string()))?;
    if response.status() != 200 {
        return Err(broken(format!("status {}", response.status())));
    }
    let mut body = response.into_body();
    let mut tally = StreamTally::new(expected);
    loop {
        let frame = match body.frame().await {
            None => return Err(broken(format!("the body ended after {} of {expected} frames", tally.got))),
            Some(frame) => frame.map_err(|e| broken(e.to_string()))?,
        };
        let now_ns = unix_ns();
        if let Ok(data) = frame.into_data()
            && tally.take(&data, now_ns, shared)?
        {
            return Ok(());
        }
    }
}

/// A client socket that adds every byte read from it to [`Shared::body_bytes`] (HTTP/2: the wire bytes).
struct CountedReads {
    inner: smol::net::TcpStream,
    shared: Arc<Shared>,
}

impl futures::AsyncRead for CountedReads {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(read)) = poll {
            self.shared.body_bytes.fetch_add(read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl futures::AsyncWrite for CountedReads {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Gathers a response head from what was read: once `head` holds all of it, its text (lowercased)
/// and the bytes after it, the body's first.
pub fn response_head(head: &mut Vec<u8>, read: &[u8]) -> Option<(String, Vec<u8>)> {
    head.extend_from_slice(read);
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let body = head.split_off(end + 4);
    Some((text, body))
}

/// A decoder of HTTP/1.1 chunked transfer coding.
#[derive(Default)]
pub struct Chunked {
    /// Past the response head.
    pub started: bool,
    state: ChunkState,
    size: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum ChunkState {
    /// Reading a chunk's hex size.
    #[default]
    Size,
    /// Past a `;` after the size: skipped to the line end.
    Extension,
    SizeLf,
    /// This many data bytes still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// The last (empty) chunk was read.
    End,
}

impl Chunked {
    /// Feeds body bytes; calls `data` with the decoded bytes; true once the last chunk is read.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> std::result::Result<bool, String> {
        use ChunkState::*;
        while let Some(&byte) = bytes.first() {
            if let Data(left) = self.state {
                let take = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                data(&bytes[..take]);
                bytes = &bytes[take..];
                self.state = if take as u64 == left { DataCr } else { Data(left - take as u64) };
                continue;
            }
            bytes = &bytes[1..];
            self.state = match (self.state, byte) {
                (Size, b'\r') => SizeLf,
                (Size, b';') => Extension,
                (Size, _) => {
                    let digit = char::from(byte)
                        .to_digit(16)
                        .ok_or_else(|| format!("byte {byte:#x} in a chunk size"))?;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(digit)))
                        .ok_or("a chunk size overflows")?;
                    Size
                }
                (Extension, b'\r') => SizeLf,
                (Extension, _) => Extension,
                (SizeLf, b'\n') => {
                    let size = std::mem::take(&mut self.size);
                    if size == 0 { End } else { Data(size) }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (End, _) => End,
                (state, byte) => return Err(format!("byte {byte:#x} in chunk state {state:?}")),
            };
        }
        Ok(self.state == End)
    }
}

/// Splits a text/event-stream into frames (each ends with an empty line).
#[derive(Default)]
pub struct FrameReader {
    frame: Vec<u8>,
}

impl FrameReader {
    /// Feeds stream bytes; calls `frame` with each whole frame (its lines, without the blank one).
    pub fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(&[u8])) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            let at_line_start = self.frame.is_empty() || self.frame.ends_with(b"\n");
            if at == 0 && at_line_start {
                if !self.frame.is_empty() {
                    frame(&self.frame);
                }
                self.frame.clear();
            } else {
                self.frame.extend_from_slice(&bytes[..=at]);
            }
            bytes = &bytes[at + 1..];
        }
        self.frame.extend_from_slice(bytes);
    }
}

/// Raises this process's soft limit on open files to its hard limit (a connection is a file).
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// This process's soft limit on open files.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct given, nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}
