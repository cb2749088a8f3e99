//! Graceful shutdown of the demo binary: SIGTERM/SIGINT end open streams with a retry hint and exit 0; a rolling restart of two processes on one Redis loses nothing.

use ssehub_harness::demo_process;
use ssehub_harness::http_client;
use ssehub_harness::redis_server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use demo_process::DemoProcess;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http_body_util::{BodyStream, Empty};
use http_client::Client;
use hyper::Request;
use redis_server::RedisServer;
use smol_hyper::rt::FuturesIo;
use ssehub::fixture::ExampleCategory as C;
use ssehub::fred::RedisHub;
use ssehub::shutdown::SHUTDOWN_COMMENT;
use ssehub::{Audience, Category, CategorySet, Event, Publisher, UserId};

const CLIENTS: usize = 200;
const USERS: usize = 20;
/// The event type of the marker published last: a client that has it has everything.
const END_MARKER: &str = "test.end";
/// How long the test waits for any one condition before it fails.
const WAIT: Duration = Duration::from_secs(60);

/// Polls `condition` until it holds; panics naming `what` after [`WAIT`].
fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    ssehub_harness::wait::wait_until(WAIT, what, condition);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The last chunk a stream ending on a shutdown sends: `retry: <ms>` then the comment.
fn shutdown_retry_millis(tail: &str) -> Option<u64> {
    let before = tail.strip_suffix(&format!("\n\n: {SHUTDOWN_COMMENT}\n\n"))?;
    before.rsplit_once("retry: ")?.1.parse().ok()
}

#[test]
fn demo_ends_open_streams_with_a_retry_hint_and_exits_0_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let mut demo = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &["--generator-ms", "0"]);
        let mut stream = Client::connect(demo.addr());
        assert_eq!(stream.send("GET", "/events", &[], "").status, 200);
        assert_eq!(stream.read_chunk().unwrap(), "retry: 1000\n\n");

        let status = demo.stop_with(signal);
        assert!(status.success(), "SIG{signal}: the demo exited with {status}");
        let closing = stream.read_chunk().expect("a last chunk before the end");
        let retry =
            shutdown_retry_millis(&closing).unwrap_or_else(|| panic!("not a shutdown chunk: {closing:?}"));
        assert!((250..1250).contains(&retry), "retry {retry} ms outside the demo's 250..1250");
        assert_eq!(stream.read_chunk(), None, "the body ends cleanly after the hint");
    }
}

/// One client's subscription: whose stream, which categories, which server it prefers.
#[derive(Clone, Copy)]
struct ClientSpec {
    user: UserId,
    filter: CategorySet<C>,
    home: usize,
}

/// What a client saw, updated as it goes.
#[derive(Default)]
struct ClientLog {
    /// `(event id, seq)` of every event received, in order (the end marker not included).
    received: Vec<(String, u64)>,
    end_marker: bool,
    /// The server its stream is open on, once the response head came.
    connected_to: Option<SocketAddr>,
    first_connected: bool,
    /// Streams ended by a server's shutdown: the retry delay each one asked for.
    shutdown_hints: Vec<u64>,
    /// Streams that ended any other way, or failed to open, with why.
    other_ends: Vec<String>,
}

/// The two demo slots as a load balancer sees them: `None` while one is out of rotation.
type Servers = Mutex<[Option<SocketAddr>; 2]>;

fn user(n: usize) -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(0x5e55_0000_0000_4000_8000_0000_0000_0000 + n as u128))
}

/// Every filter holds `security`, the end marker's category.
fn filter(variant: usize) -> CategorySet<C> {
    let security = CategorySet::only(C::Security);
    match variant % 5 {
        0 => CategorySet::all(),
        1 => security.with(C::Ai),
        2 => security.with(C::DataSync).with(C::Import),
        3 => security.with(C::Provider).with(C::Portfolio),
        _ => security,
    }
}

/// The `seq`th published event: to one of the users or to everyone, categories rotating.
fn published_event(seq: u64) -> Event<C> {
    let audience =
        if seq % 7 == 6 { Audience::Broadcast } else { Audience::User(user((seq * 3) as usize % USERS)) };
    let category = C::ALL[((seq * 5 + seq / 7) % C::ALL.len() as u64) as usize];
    Event::new(audience, "test.seq", category, format!("{{\"seq\":{seq}}}")).unwrap()
}

/// Runs one client until it has the end marker: connects to its home server
/// (or the other one when home is out of rotation), reads the stream with an
/// SSE parser, and on every end reconnects after the hinted delay with `Last-Event-ID`.
async fn run_client(spec: ClientSpec, servers: Arc<Servers>, log: Arc<Mutex<ClientLog>>) {
    let mut last_event_id: Option<String> = None;
    let mut delay = Duration::ZERO;
    loop {
        smol::Timer::after(delay).await;
        delay = Duration::from_millis(100);
        let addr = {
            let servers = lock(&servers);
            match servers[spec.home].or(servers[1 - spec.home]) {
                Some(addr) => addr,
                None => continue,
            }
        };
        let response = match open_stream(addr, spec, last_event_id.as_deref()).await {
            Ok(response) => response,
            Err(error) => {
                lock(&log).other_ends.push(format!("open on {addr}: {error}"));
                continue;
            }
        };
        {
            let mut log = lock(&log);
            log.connected_to = Some(addr);
            log.first_connected = true;
        }
        // The raw text's tail, beside the parser: the shutdown hint is a retry
        // field and a comment, which an SSE parser does not hand out.
        let tail = Arc::new(Mutex::new(String::new()));
        let bytes = BodyStream::new(response.into_body()).filter_map(|frame| {
            let tail = Arc::clone(&tail);
            async move {
                match frame {
                    Ok(frame) => {
                        let data = frame.into_data().ok()?;
                        let mut tail = lock(&tail);
                        tail.push_str(std::str::from_utf8(&data).unwrap_or("<not UTF-8>"));
                        let keep_from = tail.len().saturating_sub(256);
                        let keep_from =
                            (keep_from..tail.len()).find(|&i| tail.is_char_boundary(i)).unwrap_or(0);
                        tail.drain(..keep_from);
                        Some(Ok::<Bytes, hyper::Error>(data))
                    }
                    Err(error) => Some(Err(error)),
                }
            }
        });
        let mut events = Box::pin(bytes.eventsource());
        let mut failure = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            };
            if event.event == END_MARKER {
                let mut log = lock(&log);
                log.end_marker = true;
                log.connected_to = None;
                return;
            }
            let data: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
            let seq = data["seq"].as_u64().expect("a seq");
            // The id is a cursor, headed by the event's own id.
            let cursor: ssehub::Cursor =
                event.id.parse().unwrap_or_else(|e| panic!("id {:?}: {e}", event.id));
            lock(&log).received.push((cursor.event_id().to_string(), seq));
            last_event_id = Some(event.id);
        }
        let mut log = lock(&log);
        log.connected_to = None;
        match (failure, shutdown_retry_millis(&lock(&tail))) {
            (None, Some(retry)) => {
                log.shutdown_hints.push(retry);
                delay = Duration::from_millis(retry);
            }
            (failure, _) => {
                let tail = lock(&tail).clone();
                log.other_ends.push(format!("stream on {addr} ended: {failure:?}, last text {tail:?}"))
            }
        }
    }
}

/// `GET /events` for `spec` on `addr` over a fresh connection: the response, once its head is in with 200.
async fn open_stream(
    addr: SocketAddr,
    spec: ClientSpec,
    last_event_id: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let tcp = smol::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(FuturesIo::new(tcp)).await.map_err(|e| e.to_string())?;
    smol::spawn(async move {
        let _ = connection.await;
    })
    .detach();
    let mut request = Request::get(format!("/events?user={}&categories={}", spec.user, spec.filter))
        .header("host", addr.to_string())
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| format!("request: {e}"))?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    Ok(response)
}

/// Publishes events one after another, straight to the hub on the demos' Redis, until stopped.
struct EventFeed {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Event<C>>>,
}

impl EventFeed {
    fn start(hub: RedisHub<C>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut published = Vec::new();
                futures::executor::block_on(async {
                    for seq in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let event = published_event(seq);
                        hub.publish(event.clone()).await.expect("publish");
                        published.push(event);
                        // Pacing only: about 100 events a second.
                        smol::Timer::after(Duration::from_millis(10)).await;
                    }
                    let end = Event::new(Audience::Broadcast, END_MARKER, C::Security, "{}").unwrap();
                    hub.publish(end).await.expect("publish the end marker");
                });
                published
            })
        };
        Self { stop, thread }
    }

    /// Stops publishing, publishes the end marker; returns what was published before it, in order.
    fn finish(self) -> Vec<Event<C>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the publisher")
    }
}

#[test]
fn rolling_restart_of_two_demos_on_one_redis_delivers_every_event_exactly_once_in_order() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis", &url, "--generator-ms", "0"];
    let mut first = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
    let mut second = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
    let servers: Arc<Servers> = Arc::new(Mutex::new([Some(first.addr()), Some(second.addr())]));

    let specs: Vec<ClientSpec> = (0..CLIENTS)
        .map(|n| ClientSpec { user: user(n % USERS), filter: filter(n / USERS), home: n % 2 })
        .collect();
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let clients: Vec<smol::Task<()>> = specs
        .iter()
        .zip(&logs)
        .map(|(spec, log)| smol::spawn(run_client(*spec, Arc::clone(&servers), Arc::clone(log))))
        .collect();
    let all = |condition: &dyn Fn(&ClientLog) -> bool| logs.iter().all(|log| condition(&lock(log)));
    let counts = || logs.iter().map(|log| lock(log).received.len()).collect::<Vec<_>>();
    // Every client has at least `more` events beyond `before`.
    let progressed = |before: &[usize], more: usize| {
        logs.iter().zip(before).all(|(log, before)| lock(log).received.len() >= before + more)
    };

    // A live stream on each before anything is published: from then on, nothing may be missed.
    wait_until("every client's first stream", || all(&|log| log.first_connected));
    let hub = futures::executor::block_on(RedisHub::<C>::connect(&url)).unwrap();
    let feed = EventFeed::start(hub);
    let before = vec![0; CLIENTS];
    wait_until("events on every stream", || progressed(&before, 3));

    // Out of rotation, then SIGTERM: its clients move to the other one.
    for (stopping, still_up) in [(0, 1), (1, 0)] {
        let addr_up = lock(&servers)[still_up].unwrap();
        lock(&servers)[stopping] = None;
        let demo = if stopping == 0 { &mut first } else { &mut second };
        let status = demo.stop_with("TERM");
        assert!(status.success(), "demo {stopping} exited with {status} on SIGTERM");
        wait_until("every client on the demo still up", || all(&|log| log.connected_to == Some(addr_up)));
        let before = counts();
        wait_until("events after the move", || progressed(&before, 3));

        // Restarted (on a new port) and back in rotation.
        *demo = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
        lock(&servers)[stopping] = Some(demo.addr());
    }

    let published = feed.finish();
    wait_until("the end marker on every stream", || all(&|log| log.end_marker));
    futures::executor::block_on(futures::future::join_all(clients));

    let mut hints = 0;
    for (n, (spec, log)) in specs.iter().zip(&logs).enumerate() {
        let log = lock(log);
        assert!(log.other_ends.is_empty(), "client {n}: streams ended badly: {:?}", log.other_ends);
        // Each client was on the second demo when it stopped; those homed on the first, on both.
        let stops_seen = if spec.home == 0 { 2 } else { 1 };
        assert_eq!(log.shutdown_hints.len(), stops_seen, "client {n}: {:?}", log.shutdown_hints);
        assert!(log.shutdown_hints.iter().all(|ms| (250..1250).contains(ms)), "{:?}", log.shutdown_hints);
        hints += log.shutdown_hints.len();

        let expected: Vec<(String, u64)> = published
            .iter()
            .enumerate()
            .filter(|(_, event)| {
                event.audience().includes(spec.user) && spec.filter.contains(event.category())
            })
            .map(|(seq, event)| (event.id().to_string(), seq as u64))
            .collect();
        assert!(!expected.is_empty());
        if log.received != expected {
            let missing = expected.iter().filter(|e| !log.received.contains(e)).count();
            panic!(
                "client {n} (user {}, categories {}): got {} events, expected {} ({missing} missing); first difference at {:?}",
                spec.user,
                spec.filter,
                log.received.len(),
                expected.len(),
                log.received.iter().zip(&expected).position(|(got, want)| got != want),
            );
        }
    }
    assert_eq!(hints, CLIENTS + CLIENTS / 2);
    eprintln!(
        "rolling restart: {} events published, {hints} streams moved on a shutdown hint",
        published.len()
    );
}
