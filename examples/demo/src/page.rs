//! The demo server on smol + hyper 1: the page, the SSE endpoint, publishing, dropping streams, an event generator.
//!
//! One group, the team ([`TEAM_NAME`], `GroupId::from_name("team:demo")`), has
//! a fixed membership: the demo users whose [`DemoUser::team`] is set (Alice
//! and Bob). The server decides it ([`reader_of`]): a member's `/events`
//! stream reads the team's events, a non-member's never does, whatever the
//! query string says. The generator sends the team an event now and then; the
//! page shows who is in the team and labels team events.
//!
//! Routes:
//!
//! | route | what it does |
//! |---|---|
//! | `GET /` | the page: live event log, user selector, category checkboxes, publish form, "drop connection" |
//! | `GET /config` | the demo users (with their team membership), the team, categories and event types, as JSON |
//! | `GET /events?user=<uuid>&categories=a,b&lastEventId=<id>` | the SSE stream (`user` defaults to the first demo user); a team member's reads the team too |
//! | `POST /publish` | publishes `{"user": "<uuid>" \| "broadcast": true \| "group": "team:demo", "event_type", "category", "data"}` |
//! | `POST /drop?user=<uuid>` | ends that user's open streams server-side; browsers reconnect with `Last-Event-ID` |
//! | `GET /debug/published?user=<uuid>&categories=..` | what this process published that the user's stream would carry, in order |
//! | `GET /debug/connections` | every `/events` request served: user, Last-Event-ID, replay status and size |
//! | `GET /metrics` | the hub's operator metrics in Prometheus text (see `ssehub::metrics`; needs the `metrics` feature) |
//!
//! The demo has no authentication: the user is whatever the query names (the
//! page's user picker is a demo convenience). A real application takes it
//! from a verified credential instead: see the axum example's signed token.
//!
//! [`RunningDemo::shutdown`] stops it gracefully (the `demo` binary does on
//! SIGTERM and Ctrl-C): no new connections, every open stream told to
//! reconnect soon and ended, then the open responses finished.
//!
//! [`start_tls`] serves the same routes over TLS with a self-signed
//! certificate ([`DemoTls`]): HTTP/2 for clients that
//! offer `h2` by ALPN (every browser), HTTP/1.1 for the others. A graceful
//! shutdown sends HTTP/2 connections a GOAWAY, so clients open no new stream
//! on them and reconnect elsewhere.
//!
//! Built to be started in-process ([`start`], [`start_tls`]) by tests on port 0 as well as by
//! the `demo` binary.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::{self, Read as _};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::Either;
use futures::{AsyncWrite, Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use smol::Async;
use smol::net::TcpListener;
use smol::{Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolExecutor, SmolTimer};
use ssehub::shutdown::Shutdown;
use ssehub::sse::{self, SseOptions};
use ssehub::{
    Audience, Category, CategorySet, DynHub, Event, GroupId, Groups, Publisher, Reader, UserId, resume,
};

use crate::tls::{ALPN_HTTP2, DemoTls};

/// The page, served at `/`.
const INDEX_HTML: &str = include_str!("../index.html");

/// The largest `POST /publish` body read.
const MAX_PUBLISH_BODY: usize = 64 * 1024;

/// How many published events `/debug/published` remembers.
const PUBLISHED_LOG_LEN: usize = 10_000;

/// How many served `/events` requests `/debug/connections` remembers.
const CONNECTION_LOG_LEN: usize = 1_000;

/// How long a graceful shutdown waits for open connections to finish their
/// responses (a client that stopped reading holds its connection) before it
/// drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the Prometheus recorder's upkeep runs (it bounds the memory histograms hold between scrapes).
#[cfg(feature = "metrics")]
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The Prometheus recorder behind `/metrics`, installed on first use, once per process; `None` if
/// another metrics recorder was installed first.
///
/// Install it before building the hub: the memory hub takes its metric handles when it is built, and
/// a recorder installed later sees none of its counts. [`start`] installs it too, for the Redis hub.
#[cfg(feature = "metrics")]
pub fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let replay = Matcher::Full(ssehub::metrics::REPLAY_DURATION.to_owned());
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(replay, ssehub::metrics::REPLAY_BUCKETS_SECONDS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    ssehub::metrics::describe();
                    Some(handle)
                }
                Err(error) => {
                    eprintln!("demo: /metrics is off: cannot install the Prometheus recorder: {error}");
                    None
                }
            }
        })
        .as_ref()
}

ssehub::categories! {
    /// What the demo's events are about: the categories a client filters by (`?categories=ai,security`).
    pub enum Topic {
        /// Synchronisation of account data.
        DataSync = "data_sync",
        /// Events from an external data provider.
        Provider = "provider",
        /// Results of AI analyses.
        Ai = "ai",
        /// Progress of imports.
        Import = "import",
        /// Portfolio changes.
        Portfolio = "portfolio",
        /// Security notices.
        Security = "security",
    }
}

/// A demo user: a name for the page, its id, and whether it is in the team.
#[derive(Clone, Copy, Debug)]
pub struct DemoUser {
    /// Shown in the user selector.
    pub name: &'static str,
    /// The user's id.
    pub id: UserId,
    /// Whether the user is a member of the team ([`team`]): the server's decision, fixed here.
    pub team: bool,
}

/// The demo users; the first is the default of `/events`. Alice and Bob are in the team, Carol is not.
pub const USERS: [DemoUser; 3] = [
    DemoUser {
        name: "Alice",
        id: UserId::from_uuid(uuid::Uuid::from_u128(0xa11ce000_0000_4000_8000_000000000001)),
        team: true,
    },
    DemoUser {
        name: "Bob",
        id: UserId::from_uuid(uuid::Uuid::from_u128(0xb0b00000_0000_4000_8000_000000000002)),
        team: true,
    },
    DemoUser {
        name: "Carol",
        id: UserId::from_uuid(uuid::Uuid::from_u128(0xca201000_0000_4000_8000_000000000003)),
        team: false,
    },
];

/// The name of the demo's one group, the team: its id is `GroupId::from_name(TEAM_NAME)`.
pub const TEAM_NAME: &str = "team:demo";

/// The team: the group the demo users with [`DemoUser::team`] set read.
pub fn team() -> GroupId {
    GroupId::from_name(TEAM_NAME)
}

/// Who `user`'s streams are for: the user, and the team if the user is a member.
///
/// Membership is decided here, by the server, from its own list; nothing in
/// the request adds a group. (A real application derives it from the verified
/// session: see the axum example's `groups` claim.)
pub fn reader_of(user: UserId) -> Reader {
    let member = USERS.iter().any(|u| u.id == user && u.team);
    let groups = if member { Groups::new([team()]).expect("one group") } else { Groups::NONE };
    Reader::new(user, groups)
}

/// The event type the generator (and the page's publish form) uses for each category.
pub fn event_type_of(category: Topic) -> &'static str {
    match category {
        Topic::DataSync => "data_sync.completed",
        Topic::Provider => "provider.status",
        Topic::Ai => "ai.insight",
        Topic::Import => "import.progress",
        Topic::Portfolio => "portfolio.updated",
        Topic::Security => "security.alert",
    }
}

/// How the demo runs.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    /// The pacing of `/events` streams (retry delay, heartbeat interval).
    pub sse: SseOptions,
    /// How often the generator publishes a demo event; `None`: no generator.
    pub generator_interval: Option<Duration>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            // A short retry so a dropped connection visibly comes back at once.
            sse: SseOptions::new().retry(Duration::from_secs(1)),
            generator_interval: Some(Duration::from_millis(700)),
        }
    }
}

/// The state of one demo server: the hub, and what it published and served.
pub struct Demo {
    hub: DynHub<Topic>,
    options: DemoOptions,
    published: Mutex<PublishedLog>,
    streams: Mutex<Streams>,
    /// Every `/events` stream is bound to it; triggered by [`RunningDemo::shutdown`].
    shutdown: Shutdown,
    /// Whether `/events` is gzip-compressed where the request accepts it: off unless asked.
    gzip: AtomicBool,
}

#[derive(Default)]
struct PublishedLog {
    next_seq: u64,
    records: VecDeque<Value>,
    /// Parallel to `records`: who each event is for and its category, for filtering.
    keys: VecDeque<(Audience, Topic)>,
}

#[derive(Default)]
struct Streams {
    next_connection: u64,
    /// Open `/events` streams: dropping the sender ends the stream.
    open: HashMap<u64, (UserId, oneshot::Sender<()>)>,
    served: VecDeque<Value>,
}

/// Locks `mutex`, ignoring poisoning: every update here is a single push or remove.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Demo {
    /// A demo serving `hub`.
    pub fn new(hub: DynHub<Topic>, options: DemoOptions) -> Arc<Self> {
        Arc::new(Self {
            hub,
            options,
            published: Mutex::new(PublishedLog::default()),
            streams: Mutex::new(Streams::default()),
            shutdown: Shutdown::new(),
            gzip: AtomicBool::new(false),
        })
    }

    /// Turns gzip-compressed `/events` streams on or off (needs the `gzip` feature to turn on).
    ///
    /// # Errors
    ///
    /// Turning it on in a build without the `gzip` feature.
    pub fn compress_streams(&self, on: bool) -> Result<(), &'static str> {
        if on && !cfg!(feature = "gzip") {
            return Err("compressed streams need the `gzip` feature");
        }
        self.gzip.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The hub events are published to and streamed from.
    pub fn hub(&self) -> &DynHub<Topic> {
        &self.hub
    }

    /// Publishes `event` and records it for `/debug/published`.
    pub async fn publish(&self, event: Event<Topic>) -> Result<(), ssehub::Error> {
        self.hub.publish(event.clone()).await?;
        let mut log = lock(&self.published);
        let seq = log.next_seq;
        log.next_seq += 1;
        log.records.push_back(json!({
            "seq": seq,
            "id": event.id().to_string(),
            "audience": audience_name(event.audience()),
            "category": event.category().name(),
            "event_type": event.event_type(),
            "data": event.data(),
        }));
        log.keys.push_back((event.audience(), event.category()));
        if log.records.len() > PUBLISHED_LOG_LEN {
            log.records.pop_front();
            log.keys.pop_front();
        }
        Ok(())
    }

    /// The recorded events `user`'s stream with `filter` carries, oldest first.
    pub fn published_for(&self, user: UserId, filter: CategorySet<Topic>) -> Vec<Value> {
        let reader = reader_of(user);
        let log = lock(&self.published);
        log.records
            .iter()
            .zip(&log.keys)
            .filter(|(_, (audience, category))| reader.reads(*audience) && filter.contains(*category))
            .map(|(record, _)| record.clone())
            .collect()
    }

    /// Every `/events` request served, oldest first.
    pub fn served_streams(&self) -> Vec<Value> {
        lock(&self.streams).served.iter().cloned().collect()
    }

    /// Ends every open stream of `user`; returns how many there were.
    pub fn drop_streams(&self, user: UserId) -> usize {
        let mut streams = lock(&self.streams);
        let before = streams.open.len();
        // Dropping a sender resolves the receiver each stream is cut by.
        streams.open.retain(|_, (owner, _)| *owner != user);
        before - streams.open.len()
    }

    /// How many `/events` streams are open.
    pub fn open_streams(&self) -> usize {
        lock(&self.streams).open.len()
    }

    fn open_stream(&self, user: UserId, record: Value) -> (u64, oneshot::Receiver<()>) {
        let (stop, stopped) = oneshot::channel();
        let mut streams = lock(&self.streams);
        let connection = streams.next_connection;
        streams.next_connection += 1;
        streams.open.insert(connection, (user, stop));
        let mut record = record;
        record["connection"] = json!(connection);
        streams.served.push_back(record);
        if streams.served.len() > CONNECTION_LOG_LEN {
            streams.served.pop_front();
        }
        (connection, stopped)
    }

    fn close_stream(&self, connection: u64) {
        lock(&self.streams).open.remove(&connection);
    }
}

fn audience_name(audience: Audience) -> String {
    match audience {
        Audience::User(user) => user.to_string(),
        Audience::Broadcast => "broadcast".to_owned(),
        Audience::Group(group) if group == team() => format!("group:{TEAM_NAME}"),
        Audience::Group(group) => format!("group:{group}"),
    }
}

/// A running demo server: stops (and closes every connection) when dropped.
pub struct RunningDemo {
    addr: SocketAddr,
    /// Whether it serves TLS (`https://`).
    tls: bool,
    demo: Arc<Demo>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningDemo {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ip:port`, or `https://ip:port` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Its state.
    pub fn demo(&self) -> &Arc<Demo> {
        &self.demo
    }

    /// Blocks until the server thread ends (it runs until the process is killed).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops gracefully: refuses new connections, ends every open `/events`
    /// stream with a short `retry:` hint (browsers reconnect, with
    /// `Last-Event-ID`, to another instance), lets the open responses finish
    /// for up to 10 s, then returns. Returns how many streams were open.
    pub fn shutdown(mut self) -> usize {
        let open = self.demo.open_streams();
        self.demo.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        open
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a demo server on `addr` (port 0 picks a free one) in a thread of its own.
///
/// # Errors
///
/// The address cannot be bound.
pub fn start(addr: SocketAddr, hub: DynHub<Topic>, options: DemoOptions) -> io::Result<RunningDemo> {
    start_serving(addr, hub, options, None)
}

/// Starts a demo server like [`start`], serving TLS with `tls`'s certificate: HTTP/2 or HTTP/1.1,
/// whichever the client and `tls` agree on by ALPN.
///
/// # Errors
///
/// The address cannot be bound.
pub fn start_tls(
    addr: SocketAddr,
    hub: DynHub<Topic>,
    options: DemoOptions,
    tls: DemoTls,
) -> io::Result<RunningDemo> {
    start_serving(addr, hub, options, Some(tls))
}

fn start_serving(
    addr: SocketAddr,
    hub: DynHub<Topic>,
    options: DemoOptions,
    tls: Option<DemoTls>,
) -> io::Result<RunningDemo> {
    let serves_tls = tls.is_some();
    let listener = StdTcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let listener = TcpListener::try_from(listener)?;
    let demo = Demo::new(hub, options);
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = {
        let demo = Arc::clone(&demo);
        std::thread::Builder::new().name(format!("demo-{addr}")).spawn(move || {
            let executor = Arc::new(Executor::new());
            smol::block_on(executor.run(async {
                if let Some(interval) = options.generator_interval {
                    executor.spawn(generate(Arc::clone(&demo), interval)).detach();
                }
                #[cfg(feature = "metrics")]
                if let Some(prometheus) = prometheus() {
                    executor
                        .spawn(async move {
                            loop {
                                Timer::after(METRICS_UPKEEP).await;
                                prometheus.run_upkeep();
                            }
                        })
                        .detach();
                }
                let serving = serve(listener, tls, Arc::clone(&demo), Arc::clone(&executor));
                futures::future::select(Box::pin(serving), stopped).await;
            }));
            // Dropping the executor here drops every connection task.
        })?
    };
    Ok(RunningDemo { addr, tls: serves_tls, demo, stop: Some(stop), thread: Some(thread) })
}

/// Serves connections until the demo's shutdown is triggered, then waits (up
/// to [`SHUTDOWN_GRACE`]) for the open ones to finish.
async fn serve(
    listener: TcpListener,
    tls: Option<DemoTls>,
    demo: Arc<Demo>,
    executor: Arc<Executor<'static>>,
) {
    let open_connections = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted =
            match futures::future::select(Box::pin(listener.accept()), demo.shutdown.triggered()).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(_) => break,
            };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait, don't spin.
                eprintln!("demo: accept failed: {error}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let open = OpenConnection::new(&open_connections);
        let connection = serve_connection(stream, tls.clone(), Arc::clone(&demo), Arc::clone(&executor));
        executor
            .spawn(async move {
                connection.await;
                drop(open);
            })
            .detach();
    }
    drop(listener); // new connections are refused from here on
    let grace = Timer::after(SHUTDOWN_GRACE);
    let drained = async {
        // Connections end within moments of the trigger; a short poll keeps this simple.
        while open_connections.load(Ordering::SeqCst) > 0 {
            Timer::after(Duration::from_millis(10)).await;
        }
    };
    futures::future::select(Box::pin(drained), grace).await;
}

/// Serves one accepted connection until it ends or the demo shuts down: HTTP/1.1 on plain TCP; over
/// TLS, HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
async fn serve_connection(
    stream: smol::net::TcpStream,
    tls: Option<DemoTls>,
    demo: Arc<Demo>,
    executor: Arc<Executor<'static>>,
) {
    let mut shutdown = std::pin::pin!(demo.shutdown.triggered());
    let service = service_fn(move |request| {
        let demo = Arc::clone(&demo);
        async move { Ok::<_, Infallible>(route(demo, request).await) }
    });
    let Some(tls) = tls else {
        let connection =
            http1::Builder::new().timer(SmolTimer::new()).serve_connection(ReadyIo::new(stream), service);
        return serve_until_shutdown(connection, shutdown, |connection| connection.graceful_shutdown()).await;
    };
    let stream = match futures::future::select(tls.acceptor().accept(stream), shutdown.as_mut()).await {
        Either::Left((Ok(stream), _)) => stream,
        // A failed handshake (a client that distrusts the certificate), or shutting down.
        Either::Left((Err(_), _)) | Either::Right(_) => return,
    };
    let http2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_HTTP2);
    let io = FuturesIo::new(stream);
    if http2 {
        let connection = http2::Builder::new(SmolExecutor::new(executor))
            .timer(SmolTimer::new())
            .serve_connection(io, service);
        // HTTP/2's graceful shutdown sends GOAWAY: the client opens no new stream here, and the
        // open ones (SSE bodies end on the shutdown by themselves) finish.
        serve_until_shutdown(connection, shutdown, |connection| connection.graceful_shutdown()).await;
    } else {
        let connection = http1::Builder::new().timer(SmolTimer::new()).serve_connection(io, service);
        serve_until_shutdown(connection, shutdown, |connection| connection.graceful_shutdown()).await;
    }
}

/// Drives `connection` until it ends; once `shutdown` completes first, asks it to finish gracefully
/// (`graceful_shutdown`: the response in flight completes, nothing new starts) and waits for that.
async fn serve_until_shutdown<C: Future>(
    connection: C,
    shutdown: impl Future,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) {
    let mut connection = std::pin::pin!(connection);
    let shutdown = std::pin::pin!(shutdown);
    // Errors here are clients going away mid-request: nothing to do.
    if let Either::Right(_) = futures::future::select(connection.as_mut(), shutdown).await {
        graceful_shutdown(connection.as_mut());
        let _ = connection.await;
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP connection as hyper's IO: reads only once the socket has reported data, into a small
/// buffer, then hands hyper what came.
///
/// While it streams a response, hyper polls the connection's read side at every wake-up to notice
/// a client that went away. smol-hyper's `FuturesIo` answers each poll with a `recv` system call
/// (nearly always "would block") after zeroing hyper's whole 8 KiB read buffer; for an SSE stream
/// that is one wasted system call and 8 KiB of writes per event sent. Here a poll costs nothing
/// until the reactor reports the socket readable. Writes go out as hyper's vectored writes (chunk
/// size, data and chunk end in one system call, no copy).
pub struct ReadyIo {
    stream: Arc<Async<std::net::TcpStream>>,
}

impl ReadyIo {
    /// Wraps an accepted connection.
    pub fn new(stream: smol::net::TcpStream) -> Self {
        Self { stream: stream.into() }
    }
}

impl hyper::rt::Read for ReadyIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match self.stream.poll_readable(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }
            let mut chunk = [0u8; 2048];
            let len = chunk.len().min(buf.remaining());
            match self.stream.get_ref().read(&mut chunk[..len]) {
                Ok(read) => {
                    buf.put_slice(&chunk[..read]);
                    return Poll::Ready(Ok(()));
                }
                // Reported readable, yet nothing to read: wait for the next report.
                Err(error)
                    if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl hyper::rt::Write for ReadyIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: every write went to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.stream).poll_close(cx)
    }
}

/// A response body: a whole one, or the SSE stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn route(demo: Arc<Demo>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, "/") => whole(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        (&Method::GET, "/config") => json_response(StatusCode::OK, &config()),
        (&Method::GET, "/events") => events(demo, &request).await,
        (&Method::POST, "/publish") => publish(demo, request).await,
        (&Method::POST, "/drop") => drop_connection(&demo, &request),
        (&Method::GET, "/debug/published") => debug_published(&demo, &request),
        (&Method::GET, "/debug/connections") => {
            json_response(StatusCode::OK, &json!({ "connections": demo.served_streams() }))
        }
        (&Method::GET, "/metrics") => metrics_text(),
        (
            _,
            "/" | "/config" | "/events" | "/publish" | "/drop" | "/debug/published" | "/debug/connections"
            | "/metrics",
        ) => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `GET /metrics`: the operator metrics in Prometheus text exposition format.
fn metrics_text() -> Response<Body> {
    #[cfg(feature = "metrics")]
    match prometheus() {
        Some(prometheus) => {
            whole(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", prometheus.render())
        }
        None => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder is installed in this process")
        }
    }
    #[cfg(not(feature = "metrics"))]
    plain(StatusCode::NOT_FOUND, "metrics are off: build with the `metrics` feature")
}

fn config() -> Value {
    let members: Vec<_> = USERS.iter().filter(|u| u.team).map(|u| u.id.to_string()).collect();
    json!({
        "users": USERS.iter().map(|u| json!({ "name": u.name, "id": u.id.to_string(), "team": u.team })).collect::<Vec<_>>(),
        "team": { "name": TEAM_NAME, "id": team().to_string(), "members": members },
        "categories": Topic::ALL.iter().map(|c| json!({ "name": c.name(), "event_type": event_type_of(*c) })).collect::<Vec<_>>(),
        "gap_event": sse::GAP_EVENT,
    })
}

/// `GET /events`: every input is checked (400 with the parser's message) before the stream starts.
async fn events(demo: Arc<Demo>, request: &Request<Incoming>) -> Response<Body> {
    let query = request.uri().query();
    let filter = match sse::categories::<Topic>(query) {
        Ok(filter) => filter,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let header = request.headers().get(sse::LAST_EVENT_ID_HEADER).map(HeaderValue::as_bytes);
    let last_event_id = match sse::last_event_id(header, query) {
        Ok(id) => id,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let user = match user_param(query) {
        Ok(user) => user,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };

    // The server decides the groups: the team for its members, whatever the query says.
    let reader = reader_of(user);
    let groups: Vec<_> = reader.groups.iter().map(|group| audience_name(Audience::Group(group))).collect();
    let resumed = match resume(demo.hub(), reader, last_event_id.clone(), filter).await {
        Ok(resumed) => resumed,
        // Another user's cursor: refused before anything was subscribed.
        Err(error @ ssehub::Error::InvalidCursor(_)) => {
            return plain(StatusCode::BAD_REQUEST, error.to_string());
        }
        // Over a cap: nothing was subscribed; the client may try again once a stream closed.
        Err(error @ ssehub::Error::TooManySubscriptions { .. }) => {
            let mut response = plain(StatusCode::TOO_MANY_REQUESTS, error.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            return response;
        }
        Err(error) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("cannot subscribe: {error}")),
    };
    let (connection, stopped) = demo.open_stream(
        user,
        json!({
            "user": user.to_string(),
            "groups": groups,
            "categories": filter.to_string(),
            "last_event_id": last_event_id.as_ref().map(|id| id.to_string()),
            "replay_status": resumed.replay_status().map(|status| status.to_string()),
            "replayed_events": resumed.pending_replay(),
            "http_version": format!("{:?}", request.version()),
        }),
    );
    let compressing = demo.gzip.load(Ordering::Relaxed);
    // Each frame's id is a cursor: the event's id, then a position in each of the user's streams.
    let body = resumed.into_sse(demo.options.sse).with_shutdown(&demo.shutdown).take_until(stopped);
    let body = OpenStream { body, demo, connection };

    #[cfg(feature = "gzip")]
    if compressing {
        let accept_encoding = request.headers().get(header::ACCEPT_ENCODING).map(HeaderValue::as_bytes);
        if ssehub::gzip::accepts_gzip(accept_encoding) {
            let mut response = sse_response(ssehub::gzip::GzipStream::new(body));
            let encoding = HeaderValue::from_static(ssehub::gzip::CONTENT_ENCODING);
            response.headers_mut().insert(header::CONTENT_ENCODING, encoding);
            response.headers_mut().insert(header::VARY, HeaderValue::from_static(ssehub::gzip::VARY));
            return response;
        }
    }
    let mut response = sse_response(body);
    if compressing {
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// How long a client over a subscription cap is asked to wait (`Retry-After`, seconds).
pub const RETRY_AFTER_SECS: u32 = 5;

/// The response carrying an SSE `body`, with the SSE headers.
fn sse_response(body: impl Stream<Item = Bytes> + Send + 'static) -> Response<Body> {
    let body = body.map(|chunk| Ok(Frame::data(chunk)));
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    for (name, value) in sse::RESPONSE_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An open `/events` body; forgets its stream when hyper drops it (client gone, or stream over).
struct OpenStream<S> {
    body: S,
    demo: Arc<Demo>,
    connection: u64,
}

impl<S: Stream + Unpin> Stream for OpenStream<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

impl<S> Drop for OpenStream<S> {
    fn drop(&mut self) {
        self.demo.close_stream(self.connection);
    }
}

/// The `user` query parameter; the first demo user when absent.
fn user_param(query: Option<&str>) -> Result<UserId, String> {
    match query_param(query, "user") {
        None => Ok(USERS[0].id),
        Some(value) if value.trim().is_empty() => Ok(USERS[0].id),
        Some(value) => value.parse().map_err(|_| {
            "invalid user: expected a hyphenated UUID such as a11ce000-0000-4000-8000-000000000001".to_owned()
        }),
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, v)| v.into_owned())
}

/// `POST /publish` with a JSON body.
async fn publish(demo: Arc<Demo>, request: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(request.into_body(), MAX_PUBLISH_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body unreadable or larger than {MAX_PUBLISH_BODY} bytes"),
            );
        }
    };
    let event = match event_from_json(&body) {
        Ok(event) => event,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    let id = event.id();
    match demo.publish(event).await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "id": id.to_string() })),
        Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("cannot publish: {error}")),
    }
}

/// Reads `{"user": "<uuid>" | "broadcast": true | "group": "<name>", "event_type": "..", "category": "..", "data": <any JSON>}`.
///
/// A group is named as [`GroupId::from_name`] takes it: `"group": "team:demo"` is the team.
fn event_from_json(body: &[u8]) -> Result<Event<Topic>, String> {
    let request: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(fields) = &request else {
        return Err("expected a JSON object".to_owned());
    };
    let not_broadcast = |broadcast: Option<&Value>| matches!(broadcast, None | Some(Value::Bool(false)));
    let audience = match (fields.get("user"), fields.get("broadcast"), fields.get("group")) {
        (Some(Value::String(user)), broadcast, None) if not_broadcast(broadcast) => {
            Audience::User(user.parse().map_err(|_| "invalid user: expected a hyphenated UUID".to_owned())?)
        }
        (None, Some(Value::Bool(true)), None) => Audience::Broadcast,
        (None, broadcast, Some(Value::String(group))) if not_broadcast(broadcast) && !group.is_empty() => {
            Audience::Group(GroupId::from_name(group))
        }
        _ => {
            return Err("give either \"user\": \"<uuid>\" or \"broadcast\": true, or \"group\": \"<name>\" (the team: \"team:demo\")".to_owned());
        }
    };
    let Some(Value::String(category)) = fields.get("category") else {
        return Err("missing \"category\" (a string)".to_owned());
    };
    let category = Topic::from_name(category).ok_or_else(|| {
        let valid: Vec<_> = Topic::ALL.iter().map(|c| c.name()).collect();
        format!("invalid category '{category}'; valid categories: {}", valid.join(", "))
    })?;
    let event_type = match fields.get("event_type") {
        None => event_type_of(category),
        Some(Value::String(event_type)) => event_type,
        Some(_) => return Err("\"event_type\" must be a string".to_owned()),
    };
    let data = fields.get("data").map_or_else(|| "{}".to_owned(), Value::to_string);
    Event::new(audience, event_type, category, data).map_err(|e| e.to_string())
}

/// `POST /drop?user=..`.
fn drop_connection(demo: &Demo, request: &Request<Incoming>) -> Response<Body> {
    let user = match user_param(request.uri().query()) {
        Ok(user) => user,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    let dropped = demo.drop_streams(user);
    json_response(StatusCode::OK, &json!({ "dropped": dropped }))
}

/// `GET /debug/published?user=..&categories=..`.
fn debug_published(demo: &Demo, request: &Request<Incoming>) -> Response<Body> {
    let query = request.uri().query();
    let filter = match sse::categories::<Topic>(query) {
        Ok(filter) => filter,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let user = match user_param(query) {
        Ok(user) => user,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    json_response(StatusCode::OK, &json!({ "events": demo.published_for(user, filter) }))
}

fn whole(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    whole(status, "text/plain; charset=utf-8", message.into())
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    whole(status, "application/json", value.to_string())
}

/// Publishes a demo event every `interval`: each category in turn, to each demo user, to everyone and to the team.
async fn generate(demo: Arc<Demo>, interval: Duration) {
    let mut timer = Timer::interval(interval);
    for n in 0u64.. {
        timer.next().await;
        let event = generated_event(n);
        if let Err(error) = demo.publish(event).await {
            eprintln!("demo: generator could not publish: {error}");
        }
    }
}

/// The `n`th generated event. Audiences take turns (each demo user, everyone, the team); each one's
/// categories rotate, so it sees them all. A team event's data says `"to": "team"`, which the page labels.
pub fn generated_event(n: u64) -> Event<Topic> {
    let audiences = USERS.len() as u64 + 2;
    let turn = n % audiences;
    let audience = match usize::try_from(turn).ok().and_then(|i| USERS.get(i)) {
        Some(user) => Audience::User(user.id),
        None if turn == audiences - 1 => Audience::Group(team()),
        None => Audience::Broadcast,
    };
    let to = match audience {
        Audience::User(user) => USERS.iter().find(|u| u.id == user).map_or("?", |u| u.name),
        Audience::Group(_) => "team",
        Audience::Broadcast => "everyone",
    };
    let round = n / audiences;
    let category = Topic::ALL[((round + turn) % Topic::ALL.len() as u64) as usize];
    let message = match category {
        Topic::DataSync => format!("Synced {} transactions from Checking", 3 + round % 17),
        Topic::Provider => {
            format!(
                "Bank feed {}: {}",
                ["Northwind", "Contoso"][(round % 2) as usize],
                ["ok", "slow"][(n % 2) as usize]
            )
        }
        Topic::Ai => format!(
            "Insight: groceries {} {}% this month",
            ["up", "down"][(round % 2) as usize],
            2 + round % 9
        ),
        Topic::Import => format!("Import #{}: {}% done", 1 + round / 6, (round * 7) % 101),
        Topic::Portfolio => {
            format!("Portfolio value {}{}.{}%", ["+", "-"][(n % 2) as usize], round % 3, round % 10)
        }
        Topic::Security => "New sign-in from Firefox on Linux".to_owned(),
    };
    let data = json!({ "n": n, "to": to, "message": message }).to_string();
    Event::new(audience, event_type_of(category), category, data).expect("the demo event types are valid")
}
