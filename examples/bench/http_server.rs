//! The server process of the http scenario: hyper 1 on smol serving `/events` with ssehub (`resume` + `SseStream`) or the floor, driven over stdin.
//!
//! Started by the scenario as `bench http-server --mode ssehub|floor
//! --backend memory|fred [--redis-url URL] --threads N [--max-buf-size B] [--count-heap 1] [--gzip 1]
//! [--payload bench|demo] [--http2 1] [--port P]`. With `--http2 1` it speaks HTTP/2 without TLS (h2c, prior
//! knowledge), on hyper's `http2` server with a smol executor. It listens on
//! a free loopback port (or `--port P`, so the fleet scenario can restart it
//! where its clients look for it) and prints `listening <addr>` on stdout, then reads
//! commands on stdin, one a line:
//!
//! - `publish <events> <rate>`: publishes that many broadcasts, paced at
//!   `rate` a second (0: as fast as publishing goes), each carrying its
//!   publish instant (Unix nanoseconds) in its data; then prints
//!   `published <first_ns> <last_ns>`.
//! - `heap`: prints `heap <bytes> <allocations>`, the heap bytes allocated
//!   since the server started and still held, and the allocation calls made
//!   (the bench's counting allocator, on with `--count-heap 1`).
//! - end of input: the process exits.
//!
//! With `RUST_LOG` set (`RUST_LOG=ssehub=info`), the hub's log goes to
//! stderr: its recoveries, the gap signals it sends and why.
//!
//! SIGTERM shuts it down gracefully: every open stream is ended with a short
//! `retry:` ([`Shutdown`]), the process waits (5 s at most) until the
//! responses are written, then exits with status 0.
//!
//! A `redis-cluster://` URL gets the cluster key layout, and `--replica-acks N`
//! the hub's replica acks (every process publishing to a cluster must agree on them:
//! with them, a failover needs no gap signal). `/events` takes
//! `user=<n>` and, for the fleet scenario, `groups=<name>,<name>`: the groups
//! the connection reads, trusted as given because this is a bench (a real
//! server takes them from the session, never from the query).
//!
//! `ssehub` serves `/events` the way the README's quick start does: the
//! request's `Last-Event-ID` and categories, `resume`, and
//! `SseStream` as a hyper `StreamBody` (with `--gzip 1`, wrapped in
//! `GzipStream` where the request accepts gzip). `floor` is the least a
//! server can do: each connection gets one channel of pre-encoded frames,
//! and the publisher encodes each event once and sends the same `Bytes` to
//! every channel. Both serve connections through the demo's `ReadyIo`.

use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use smol::Executor;
use smol::net::TcpListener;
use smol_hyper::rt::{SmolExecutor, SmolTimer};
use ssehub::shutdown::Shutdown;
use ssehub::sse::{self, SseOptions};
use ssehub::{Audience, DynHub, Event, GroupId, Groups, Publisher, Reader, UserId, resume, wire};

use crate::workload::{C, EVENT_TYPE, category_of, data};

/// The demo server: its hyper IO (`ReadyIo`) and its generated events (`--payload demo`).
use ssehub_demo::page as demo_server;

/// The most streams an HTTP/2 connection may carry at once (the client opens no more than this on one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1_000;

/// The per-connection queue bound of the hub (the floor's channels are unbounded: see `route`).
const QUEUE_CAPACITY: usize = 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the server process serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Ssehub,
    Floor,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ssehub => "ssehub",
            Mode::Floor => "floor",
        }
    }
}

/// The server's command line, as the scenario writes it.
struct ServerArgs {
    mode: Mode,
    redis_url: Option<String>,
    threads: usize,
    max_buf_size: Option<usize>,
    count_heap: bool,
    gzip: bool,
    payload: Payload,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    http2: bool,
    /// The loopback port to listen on (0: any free one).
    port: u16,
    /// Replicas that must acknowledge each publish (a cluster only; 0: none).
    replica_acks: u32,
    /// `--body native`: `SseStream` as the response body itself (its `http_body::Body`), not
    /// wrapped in a `StreamBody` of `Frame::data` chunks.
    native_body: bool,
}

/// What the published events look like.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Payload {
    /// The bench's own: `bench.tick`, ~60 bytes of JSON.
    Bench,
    /// The demo's generated events (its event types and messages).
    Demo,
}

fn parse(args: &[String]) -> Result<ServerArgs, String> {
    let (mut mode, mut redis_url, mut threads, mut max_buf_size, mut count_heap) =
        (None, None, 2, None, false);
    let (mut gzip, mut payload, mut http2, mut port, mut replica_acks) = (false, Payload::Bench, false, 0, 0);
    let mut native_body = false;
    let mut args = args.iter();
    while let Some(name) = args.next() {
        let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        match name.as_str() {
            "--body" => {
                native_body = match value.as_str() {
                    "native" => true,
                    "stream" => false,
                    other => return Err(format!("--body is native or stream, not {other:?}")),
                }
            }
            "--mode" => {
                mode = Some(match value.as_str() {
                    "ssehub" => Mode::Ssehub,
                    "floor" => Mode::Floor,
                    other => return Err(format!("--mode is ssehub or floor, not {other:?}")),
                })
            }
            "--backend" => {}
            "--count-heap" => count_heap = value == "1",
            "--gzip" => gzip = value == "1",
            "--http2" => http2 = value == "1",
            "--port" => port = value.parse().map_err(|_| format!("--port {value:?}"))?,
            "--replica-acks" => {
                replica_acks = value.parse().map_err(|_| format!("--replica-acks {value:?}"))?
            }
            "--payload" => {
                payload = match value.as_str() {
                    "bench" => Payload::Bench,
                    "demo" => Payload::Demo,
                    other => return Err(format!("--payload is bench or demo, not {other:?}")),
                }
            }
            "--redis-url" => redis_url = Some(value.clone()),
            "--threads" => threads = value.parse().map_err(|_| format!("--threads {value:?}"))?,
            "--max-buf-size" => {
                max_buf_size = Some(value.parse().map_err(|_| format!("--max-buf-size {value:?}"))?)
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if gzip && !cfg!(feature = "gzip") {
        return Err("--gzip needs the gzip feature".into());
    }
    Ok(ServerArgs {
        mode: mode.ok_or("--mode is required")?,
        redis_url,
        threads,
        max_buf_size,
        count_heap,
        gzip,
        payload,
        http2,
        port,
        replica_acks,
        native_body,
    })
}

/// Nanoseconds since the Unix epoch: a clock both processes read alike.
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// What a request is answered with, shared by every connection.
enum App {
    /// The hub; `gzip`: bodies compressed where the request accepts it; every stream bound to
    /// `shutdown`, and counted in `open_streams` while its body lives.
    Ssehub {
        hub: DynHub<C>,
        gzip: bool,
        shutdown: Shutdown,
        open_streams: Arc<OpenStreams>,
        native_body: bool,
    },
    /// The senders of every open floor connection.
    Floor(Mutex<Vec<async_channel::Sender<Bytes>>>),
}

/// The server process's `main`: serves until stdin ends. Exit status 3 when it cannot start.
pub fn main(args: &[String]) -> std::process::ExitCode {
    // `RUST_LOG=ssehub=info`: the hub's recoveries, gap signals and warnings, on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match serve(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench http-server: {message}");
            std::process::ExitCode::from(3)
        }
    }
}

fn serve(args: &[String]) -> Result<(), String> {
    let args = parse(args)?;
    // Counting costs an atomic add per allocation: only when asked.
    let heap = args.count_heap.then(crate::alloc::HeapCounter::start);
    crate::http::raise_open_files_limit();
    // Blocked before any thread starts, so every thread inherits the mask and one waits for it.
    let sigterm = block_sigterm();
    let shutdown = Shutdown::with_reconnect_delay(Duration::from_millis(250), Duration::from_millis(500));
    let open_streams = Arc::new(OpenStreams::default());
    let app = Arc::new(match args.mode {
        Mode::Floor => App::Floor(Mutex::new(Vec::new())),
        Mode::Ssehub => App::Ssehub {
            hub: hub(args.redis_url.as_deref(), args.replica_acks)?,
            gzip: args.gzip,
            native_body: args.native_body,
            shutdown: shutdown.clone(),
            open_streams: Arc::clone(&open_streams),
        },
    });
    thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || shut_down_on_sigterm(sigterm, &shutdown, &open_streams))
        .map_err(|e| e.to_string())?;
    let listener =
        StdTcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::try_from(listener).map_err(|e| e.to_string())?;

    let executor = Arc::new(Executor::<'static>::new());
    for n in 0..args.threads.max(1) {
        let executor = Arc::clone(&executor);
        thread::Builder::new()
            .name(format!("server-{n}"))
            .spawn(move || smol::block_on(executor.run(futures::future::pending::<()>())))
            .map_err(|e| e.to_string())?;
    }
    let protocol =
        if args.http2 { Protocol::Http2 } else { Protocol::Http1 { max_buf_size: args.max_buf_size } };
    executor.spawn(accept(listener, Arc::clone(&app), Arc::clone(&executor), protocol)).detach();

    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {addr}").and_then(|()| stdout.flush()).map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["publish", events, rate] => {
                let events: u64 = events.parse().map_err(|_| format!("bad command {line:?}"))?;
                let rate: u64 = rate.parse().map_err(|_| format!("bad command {line:?}"))?;
                let (first, last) = smol::block_on(publish(&app, args.payload, events, rate))?;
                writeln!(stdout, "published {first} {last}")
                    .and_then(|()| stdout.flush())
                    .map_err(|e| e.to_string())?;
            }
            ["heap"] => {
                let bytes = heap.as_ref().ok_or("`heap` needs --count-heap")?.allocated();
                let calls = crate::alloc::HeapCounter::allocations();
                writeln!(stdout, "heap {bytes} {calls}")
                    .and_then(|()| stdout.flush())
                    .map_err(|e| e.to_string())?
            }
            _ => return Err(format!("unknown command {line:?}")),
        }
    }
    Ok(())
}

/// Blocks SIGTERM in this thread (and the threads it starts): [`shut_down_on_sigterm`] waits for it.
fn block_sigterm() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only changes this
    // thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for SIGTERM, then ends every stream (each with its short `retry:`), waits until their
/// bodies are gone (5 s at most) and exits with status 0.
fn shut_down_on_sigterm(set: libc::sigset_t, shutdown: &Shutdown, open_streams: &OpenStreams) {
    let mut signal = 0;
    // SAFETY: `set` holds SIGTERM, blocked in every thread; sigwait writes the signal number.
    while unsafe { libc::sigwait(&set, &mut signal) } != 0 {}
    let open = open_streams.count.lock().unwrap();
    eprintln!("bench http-server: SIGTERM, ending {} streams", *open);
    shutdown.trigger();
    let _ = open_streams.none_open.wait_timeout_while(open, Duration::from_secs(5), |open| *open > 0);
    std::process::exit(0);
}

/// The streams whose bodies live, and a signal when there are none.
#[derive(Default)]
struct OpenStreams {
    count: Mutex<usize>,
    none_open: Condvar,
}

/// Counts a stream in [`OpenStreams`] while its body lives.
struct OpenStream(Arc<OpenStreams>);

impl OpenStream {
    fn new(streams: &Arc<OpenStreams>) -> Self {
        *streams.count.lock().unwrap() += 1;
        Self(Arc::clone(streams))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap();
        *count -= 1;
        if *count == 0 {
            self.0.none_open.notify_all();
        }
    }
}

fn hub(redis_url: Option<&str>, replica_acks: u32) -> Result<DynHub<C>, String> {
    match redis_url {
        None => {
            Ok(DynHub::new(ssehub::memory::MemoryHub::<C>::builder().queue_capacity(QUEUE_CAPACITY).build()))
        }
        #[cfg(feature = "fred")]
        Some(url) => {
            // Outside tokio, as in the demo: the hub runs its Redis client on a small runtime of its own.
            let mut builder = ssehub::fred::RedisHub::<C>::builder(url).map_err(|e| e.to_string())?;
            if url.starts_with("redis-cluster://") {
                // A command to a failed master fails after this long instead of waiting for its return.
                builder = builder
                    .key_layout(ssehub::fred::KeyLayout::cluster())
                    .command_timeout(Duration::from_secs(2));
                if replica_acks > 0 {
                    builder = builder.replica_acks(replica_acks, Duration::from_secs(1));
                }
            }
            let hub = futures::executor::block_on(builder.queue_capacity(QUEUE_CAPACITY).connect())
                .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
            Ok(DynHub::new(hub))
        }
        #[cfg(not(feature = "fred"))]
        Some(_) => {
            let _ = replica_acks;
            Err("--redis-url needs the fred feature".into())
        }
    }
}

/// How connections are served.
#[derive(Clone, Copy)]
enum Protocol {
    /// HTTP/1.1, with hyper's read buffer bound if given.
    Http1 { max_buf_size: Option<usize> },
    /// HTTP/2 with prior knowledge (h2c): every stream of a connection on it.
    Http2,
}

async fn accept(listener: TcpListener, app: Arc<App>, executor: Arc<Executor<'static>>, protocol: Protocol) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("bench http-server: accept failed: {error}");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = Arc::clone(&app);
        let connection_executor = SmolExecutor::new(Arc::clone(&executor));
        executor
            .spawn(async move {
                let service = service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(route(&app, request).await) }
                });
                let io = demo_server::ReadyIo::new(stream);
                // Errors here are clients going away: nothing to do.
                match protocol {
                    Protocol::Http1 { max_buf_size } => {
                        let mut builder = http1::Builder::new();
                        builder.timer(SmolTimer::new());
                        if let Some(size) = max_buf_size {
                            builder.max_buf_size(size);
                        }
                        let _ = builder.serve_connection(io, service).await;
                    }
                    Protocol::Http2 => {
                        let mut builder = http2::Builder::new(connection_executor);
                        builder.timer(SmolTimer::new()).max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
                        let _ = builder.serve_connection(io, service).await;
                    }
                }
            })
            .detach();
    }
}

async fn route(app: &App, request: Request<Incoming>) -> Response<Body> {
    if request.uri().path() != "/events" {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let body = match app {
        App::Ssehub { hub, gzip, shutdown, open_streams, native_body } => {
            // As the README's quick start: inputs checked first (400), then resume, then the body.
            let query = request.uri().query();
            let filter = match sse::categories::<C>(query) {
                Ok(filter) => filter,
                Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
            };
            let header = request.headers().get(sse::LAST_EVENT_ID_HEADER).map(HeaderValue::as_bytes);
            let last_event_id = match sse::last_event_id(header, query) {
                Ok(id) => id,
                Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
            };
            let user = UserId::from_u64(user_number(query));
            let reader = match Groups::new(group_names(query).map(GroupId::from_name)) {
                Ok(groups) => Reader::new(user, groups),
                Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
            };
            let events = match resume(hub, reader, last_event_id, filter).await {
                Ok(events) => events,
                Err(error) => return text(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
            };
            let body = events.into_sse(SseOptions::new()).with_shutdown(shutdown);
            #[cfg(feature = "gzip")]
            if *gzip {
                let accept_encoding =
                    request.headers().get(hyper::header::ACCEPT_ENCODING).map(HeaderValue::as_bytes);
                if ssehub::gzip::accepts_gzip(accept_encoding) {
                    let body = ssehub::gzip::GzipStream::new(body).map(|chunk| Ok(Frame::data(chunk)));
                    let mut response = sse_response(StreamBody::new(body).boxed_unsync());
                    let encoding = HeaderValue::from_static(ssehub::gzip::CONTENT_ENCODING);
                    response.headers_mut().insert(hyper::header::CONTENT_ENCODING, encoding);
                    return response;
                }
            }
            #[cfg(not(feature = "gzip"))]
            let _ = gzip;
            let open = OpenStream::new(open_streams);
            if *native_body {
                return sse_response(
                    body.map_frame(move |frame| {
                        let _open = &open;
                        frame
                    })
                    .boxed_unsync(),
                );
            }
            StreamBody::new(body.map(move |chunk| {
                let _open = &open;
                Ok(Frame::data(chunk))
            }))
            .boxed_unsync()
        }
        App::Floor(senders) => {
            // Unbounded: it allocates nothing until a frame waits, where a bounded one holds its
            // whole slot array from the start (about 40 KiB at 1,024); the floor's publisher never
            // runs ahead of the hub's queue bound (it publishes no more events than that).
            let (sender, receiver) = async_channel::unbounded();
            senders.lock().unwrap().push(sender);
            let retry = futures::stream::once(async { Bytes::from_static(b"retry: 3000\n\n") });
            StreamBody::new(retry.chain(receiver).map(|chunk| Ok(Frame::data(chunk)))).boxed_unsync()
        }
    };
    sse_response(body)
}

fn sse_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    for (name, value) in sse::RESPONSE_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The demo's generated event `seq`, to everyone, its publish instant first in its data.
fn demo_event(seq: u64, sent_ns: u64) -> Result<Event<C>, ssehub::InvalidEvent> {
    use ssehub::Category;
    let demo = demo_server::generated_event(seq);
    let category = C::from_name(demo.category().name()).unwrap_or(C::DataSync);
    let data = format!("{{\"sent_ns\":{sent_ns},{}", demo.data().strip_prefix('{').unwrap_or("}"));
    Event::new(Audience::Broadcast, demo.event_type(), category, data)
}

/// The `user=<n>` query parameter; 0 when absent.
fn user_number(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("user="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The names in the `groups=<name>,<name>` query parameter (trusted: this is a bench).
fn group_names(query: Option<&str>) -> impl Iterator<Item = &str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("groups="))
        .flat_map(|names| names.split(','))
        .filter(|name| !name.is_empty())
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// Publishes `events` broadcasts at `rate` a second (0: unpaced); returns the first and last publish instants.
async fn publish(app: &App, payload: Payload, events: u64, rate: u64) -> Result<(u64, u64), String> {
    let started = Instant::now();
    let (mut first, mut last) = (0, 0);
    for seq in 0..events {
        // Rate 0: unpaced.
        if let Some(offset) = (seq * 1_000_000_000).checked_div(rate) {
            let due = started + Duration::from_nanos(offset);
            if due > Instant::now() {
                smol::Timer::at(due).await;
            }
        }
        let now = unix_ns();
        if seq == 0 {
            first = now;
        }
        last = now;
        let event = match payload {
            Payload::Bench => {
                Event::new(Audience::Broadcast, EVENT_TYPE, category_of(seq), data(seq, Some(now)))
            }
            Payload::Demo => demo_event(seq, now),
        }
        .map_err(|e| format!("an invalid event: {e}"))?;
        match app {
            App::Ssehub { hub, .. } => hub.publish(event).await.map_err(|e| format!("publish: {e}"))?,
            App::Floor(senders) => {
                let mut frame = String::new();
                wire::encode_event(&event, &mut frame);
                let frame = Bytes::from(frame);
                // A closed channel is a client gone; a full one is waited for, so the floor loses nothing.
                let full: Vec<_> = senders
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|sender| sender.try_send(frame.clone()).is_err() && !sender.is_closed())
                    .cloned()
                    .collect();
                for sender in full {
                    let _ = sender.send(frame.clone()).await;
                }
            }
        }
    }
    Ok((first, last))
}
