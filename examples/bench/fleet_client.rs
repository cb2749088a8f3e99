//! A client process of the fleet scenario: SSE connections that reconnect like a browser (`retry:`, Last-Event-ID, jitter) and log every event each one received.
//!
//! Started by the scenario as `bench fleet-client --servers ADDR,ADDR --first N
//! --count C --groups G --threads T --log PATH`. Connection `i` (from `N` to
//! `N + C - 1`) is user `i + 1`, reads group `g<i mod G>`, takes every
//! category when `i` is even and `data_sync,provider,ai` when odd, and
//! starts on server `i mod S`. When a response ends or a connection fails it
//! waits the last `retry:` it was told (3 s until told) times a random factor
//! between 1 and 1.5, as a browser's `EventSource` does plus a jitter so that
//! a fleet does not come back at once, then connects to the next server with
//! the last `id:` it received as `Last-Event-ID`.
//!
//! A connection is done once it has the three end markers (`bench.end`: one
//! to its user, one broadcast, one to its group), published after every
//! other event. The process prints `live` once every connection has been
//! live once, and `done` once every connection is done and the log is
//! written; `finish` on stdin writes the log as it stands and prints `done`;
//! the end of stdin (the scenario is gone) ends the process.
//!
//! The log, one record a line, times in Unix nanoseconds:
//! `e <conn> <seq> <latency_us>` an event; `g <conn> <ns> <stream>` a gap signal;
//! `l <conn> <ns>` a response started; `d <conn> <ns>` a live response ended;
//! `x <conn>` the connection got its end markers.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use smol::Executor;

use crate::http::{Chunked, FrameReader, response_head};
use crate::http_server::unix_ns;
use crate::workload::sent_ns;

/// The event type of the end markers.
pub const END_EVENT_TYPE: &str = "bench.end";

/// The `retry:` a connection waits before it is told one (the SSE default of browsers is about this).
const DEFAULT_RETRY_MS: u64 = 3_000;

/// The group connection `index` reads, of `groups`.
pub fn group_name(index: usize, groups: usize) -> String {
    format!("g{}", index % groups.max(1))
}

/// Whether connection `index` takes every category (else `data_sync,provider,ai`, as `filter_of`).
pub fn takes_all_categories(index: usize) -> bool {
    index.is_multiple_of(2)
}

/// The user number of connection `index` (the server's `user=` parameter; 0 is its default).
pub fn user_number(index: usize) -> u64 {
    index as u64 + 1
}

struct ClientArgs {
    servers: Vec<SocketAddr>,
    first: usize,
    count: usize,
    groups: usize,
    threads: usize,
    log: String,
}

fn parse(args: &[String]) -> Result<ClientArgs, String> {
    let (mut servers, mut first, mut count, mut groups, mut threads, mut log) =
        (Vec::new(), 0, 0, 1, 1, None);
    let mut args = args.iter();
    while let Some(name) = args.next() {
        let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{name} {value:?}"));
        match name.as_str() {
            "--servers" => {
                servers = value
                    .split(',')
                    .map(|addr| addr.parse().map_err(|_| format!("--servers {addr:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--first" => first = number()?,
            "--count" => count = number()?,
            "--groups" => groups = number()?,
            "--threads" => threads = number()?,
            "--log" => log = Some(value.clone()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if servers.is_empty() {
        return Err("--servers is required".into());
    }
    Ok(ClientArgs { servers, first, count, groups, threads, log: log.ok_or("--log is required")? })
}

/// What one connection saw, in the log's records.
#[derive(Default)]
struct ConnectionLog {
    records: Vec<Record>,
    done: bool,
}

enum Record {
    Event {
        seq: u64,
        latency_us: u64,
    },
    /// A gap signal: when, and the stream it names (`own`, `broadcast`, a group, or `unknown`).
    Gap(u64, String),
    Live(u64),
    Down(u64),
}

struct Shared {
    logs: Vec<Mutex<ConnectionLog>>,
    first: usize,
    path: String,
    live_once: AtomicUsize,
    done: AtomicUsize,
    written: AtomicBool,
}

impl Shared {
    /// Writes the log once, prints `done` and ends the process.
    fn write_and_exit(&self) -> ! {
        if !self.written.swap(true, Ordering::SeqCst) {
            let result = self.write();
            let mut stdout = std::io::stdout().lock();
            match result {
                Ok(()) => {
                    let _ = writeln!(stdout, "done");
                }
                Err(error) => {
                    let _ = writeln!(stdout, "failed {error}");
                }
            }
            let _ = stdout.flush();
            std::process::exit(0);
        }
        // Another thread is writing and will exit.
        loop {
            thread::park();
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&self.path)?);
        for (n, log) in self.logs.iter().enumerate() {
            let conn = self.first + n;
            let log = log.lock().unwrap();
            for record in &log.records {
                match record {
                    Record::Event { seq, latency_us } => writeln!(out, "e {conn} {seq} {latency_us}")?,
                    Record::Gap(ns, stream) => writeln!(out, "g {conn} {ns} {stream}")?,
                    Record::Live(ns) => writeln!(out, "l {conn} {ns}")?,
                    Record::Down(ns) => writeln!(out, "d {conn} {ns}")?,
                }
            }
            if log.done {
                writeln!(out, "x {conn}")?;
            }
        }
        out.flush()
    }
}

/// The client process's `main`. Exit status 3 when it cannot start.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let args = match parse(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench fleet-client: {message}");
            return std::process::ExitCode::from(3);
        }
    };
    crate::http::raise_open_files_limit();
    let shared = Arc::new(Shared {
        logs: (0..args.count).map(|_| Mutex::default()).collect(),
        first: args.first,
        path: args.log.clone(),
        live_once: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        written: AtomicBool::new(false),
    });
    let executor = Arc::new(Executor::<'static>::new());
    for n in 0..args.threads.max(1) {
        let executor = Arc::clone(&executor);
        let spawned = thread::Builder::new()
            .name(format!("client-{n}"))
            .spawn(move || smol::block_on(executor.run(futures::future::pending::<()>())));
        if let Err(error) = spawned {
            eprintln!("bench fleet-client: {error}");
            return std::process::ExitCode::from(3);
        }
    }
    let servers: Arc<[SocketAddr]> = args.servers.into();
    for n in 0..args.count {
        let connection = Connection {
            index: args.first + n,
            slot: n,
            groups: args.groups,
            servers: Arc::clone(&servers),
            shared: Arc::clone(&shared),
        };
        executor.spawn(connection.run()).detach();
    }
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("finish") => shared.write_and_exit(),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The scenario is gone: nothing to report to.
    std::process::ExitCode::from(1)
}

/// One browser-like SSE client.
struct Connection {
    index: usize,
    /// Its place in this process's logs.
    slot: usize,
    groups: usize,
    servers: Arc<[SocketAddr]>,
    shared: Arc<Shared>,
}

/// What a connection carries from one response to the next.
struct Resumption {
    last_event_id: Option<String>,
    retry_ms: u64,
    ever_live: bool,
    end_markers: [bool; 3],
}

impl Connection {
    async fn run(self) {
        let mut state = Resumption {
            last_event_id: None,
            retry_ms: DEFAULT_RETRY_MS,
            ever_live: false,
            end_markers: [false; 3],
        };
        let mut random = (self.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ unix_ns();
        let mut attempt = self.index;
        loop {
            let server = self.servers[attempt % self.servers.len()];
            attempt += 1;
            let live = self.read_response(server, &mut state).await;
            if live {
                self.record(Record::Down(unix_ns()));
            }
            if state.end_markers.iter().all(|seen| *seen) {
                break;
            }
            // xorshift: a jitter of 0 to 50 % on top of the retry the server asked for.
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let wait = state.retry_ms + (random % 1_000) * state.retry_ms / 2_000;
            smol::Timer::after(Duration::from_millis(wait)).await;
        }
        self.shared.logs[self.slot].lock().unwrap().done = true;
        if self.shared.done.fetch_add(1, Ordering::SeqCst) + 1 == self.shared.logs.len() {
            self.shared.write_and_exit();
        }
    }

    fn record(&self, record: Record) {
        self.shared.logs[self.slot].lock().unwrap().records.push(record);
    }

    /// One response, read until it ends or fails; true if it started (200).
    async fn read_response(&self, server: SocketAddr, state: &mut Resumption) -> bool {
        let Ok(mut stream) = smol::net::TcpStream::connect(server).await else { return false };
        let mut query =
            format!("user={}&groups={}", user_number(self.index), group_name(self.index, self.groups));
        if !takes_all_categories(self.index) {
            query.push_str("&categories=data_sync,provider,ai");
        }
        let last_event_id =
            state.last_event_id.as_deref().map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
        let request = format!(
            "GET /events?{query} HTTP/1.1\r\nhost: {server}\r\naccept: text/event-stream\r\n{last_event_id}\r\n"
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut buffer = vec![0u8; 8192];
        let mut head = Vec::new();
        let mut body = Chunked::default();
        let mut frames = FrameReader::default();
        let mut decoded = Vec::new();
        let mut live = false;
        loop {
            let read = match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return live,
                Ok(read) => read,
            };
            let mut bytes = &buffer[..read];
            let after_head;
            if !body.started {
                let Some((text, body_start)) = response_head(&mut head, bytes) else { continue };
                if !text.starts_with("http/1.1 200") {
                    return false;
                }
                body.started = true;
                live = true;
                self.record(Record::Live(unix_ns()));
                if !state.ever_live {
                    state.ever_live = true;
                    if self.shared.live_once.fetch_add(1, Ordering::SeqCst) + 1 == self.shared.logs.len() {
                        let mut stdout = std::io::stdout().lock();
                        let _ = writeln!(stdout, "live").and_then(|()| stdout.flush());
                    }
                }
                after_head = body_start;
                bytes = &after_head;
            }
            decoded.clear();
            let ended = match body.feed(bytes, |data| decoded.extend_from_slice(data)) {
                Ok(ended) => ended,
                Err(_) => return live,
            };
            let now = unix_ns();
            frames.feed(&decoded, |frame| self.take_frame(frame, now, state));
            if ended || state.end_markers.iter().all(|seen| *seen) {
                return live;
            }
        }
    }

    /// Reads one frame: its `id:`, `retry:`, and the event it carries.
    fn take_frame(&self, frame: &[u8], now_ns: u64, state: &mut Resumption) {
        let (mut id, mut event_type, mut data) = (None, None, None);
        for line in frame.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else { continue };
            if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value);
            } else if let Some(value) = line.strip_prefix("event: ") {
                event_type = Some(value);
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(value);
            } else if let Some(value) = line.strip_prefix("retry: ")
                && let Ok(ms) = value.trim().parse()
            {
                state.retry_ms = ms;
            }
        }
        if let Some(id) = id {
            state.last_event_id = Some(id.to_string());
        }
        let data = data.unwrap_or("");
        match event_type {
            Some(crate::workload::EVENT_TYPE) => {
                let seq = number_after(data, "\"seq\":").unwrap_or(u64::MAX);
                let latency_us =
                    sent_ns(data.as_bytes()).map_or(0, |sent| now_ns.saturating_sub(sent) / 1_000);
                self.record(Record::Event { seq, latency_us });
            }
            Some(END_EVENT_TYPE) => {
                let seq = number_after(data, "\"seq\":").unwrap_or(u64::MAX);
                self.record(Record::Event { seq, latency_us: 0 });
                let kind = ["\"end\":\"user\"", "\"end\":\"broadcast\"", "\"end\":\"group\""]
                    .iter()
                    .position(|marker| data.contains(marker));
                if let Some(kind) = kind {
                    state.end_markers[kind] = true;
                }
            }
            Some(ssehub::sse::GAP_EVENT) => {
                let stream = data
                    .split("\"stream\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("unknown");
                self.record(Record::Gap(now_ns, stream.to_string()))
            }
            _ => {}
        }
    }
}

/// The whole number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}
