//! The demo: a web page with a live event log over SSE, on smol + hyper 1 (`cargo run -p ssehub-demo --bin demo`).
//!
//! Open <http://127.0.0.1:8080/>, pick a user and categories, watch events
//! arrive, press "Drop connection" and see the browser reconnect with
//! `Last-Event-ID` and get exactly what it missed. See the `page` module of
//! `ssehub-demo` for the routes.
//!
//! The demo users Alice and Bob are in the team, a group (`team:demo`) whose
//! events only they receive: the server decides membership, the page shows
//! it, and team events are labelled in the log; Carol, not a member, never
//! gets them.
//!
//! On SIGTERM or Ctrl-C it stops gracefully and exits 0: no new connections,
//! every open stream told to reconnect soon (`retry:`) and ended. With
//! `--redis`, browsers move to another demo process on the same Redis and
//! miss nothing. A second signal stops it at once (exit code 1).
//!
//! With `--tls` it serves HTTPS with a certificate made at start: browsers
//! speak HTTP/2 to it, so one page can hold any number of streams to it (over
//! HTTP/1.1 a browser stops at six per origin).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use async_signal::{Signal, Signals};
use ssehub::DynHub;
use ssehub_demo::page as server;
use ssehub_demo::tls::{DemoTls, Protocols};

const USAGE: &str = "\
ssehub demo: a web page with a live event log over Server-Sent Events

usage: cargo run -p ssehub-demo --bin demo -- [options]

options:
  --port N            port to listen on (default 8080; 0 picks a free one)
  --host IP           address to listen on (default 127.0.0.1)
  --heartbeat-secs N  seconds of silence before a heartbeat comment (default 15)
  --generator-ms N    publish a demo event every N ms (default 700; 0 turns it off)
  --redis URL         share events with other demo processes through Redis
                      (needs the `fred` feature), e.g. redis://127.0.0.1:6379;
                      a redis-cluster:// URL (redis-cluster://127.0.0.1:7000)
                      runs on a Redis Cluster with the cluster key layout
  --layout NAME       the Redis key layout: standalone (the Python service's
                      names) or cluster (a hash tag per stream, sharded
                      pub/sub); default: cluster for redis-cluster:// URLs,
                      standalone otherwise
  --presence-ttl-ms N with --redis: how long this process's presence counts
                      outlive it if it is killed (default 30000)
  --gzip              gzip /events where the browser accepts it (needs the `gzip` feature)
  --tls               serve HTTPS with a self-signed certificate made at start
                      (for localhost, 127.0.0.1 and ::1; the browser warns about
                      it once): HTTP/2 for browsers (ALPN h2), HTTP/1.1 for
                      clients without it. Over HTTP/1.1 a browser opens at most
                      6 connections per origin, each EventSource holds one, so
                      a 7th stream waits; over HTTP/2 they share one connection.
                      A graceful stop sends HTTP/2 clients a GOAWAY.
  --http1-only        with --tls: offer only HTTP/1.1 (to compare with HTTP/2)
  --help              print this help

The team: a group (team:demo) of the demo users Alice and Bob. The generator
sends it an event now and then (POST /publish with {\"group\": \"team:demo\"}
does too); only its members' streams carry them, as the server decides membership,
never the query string. Carol is not a member. The page lists the members and
labels team events.
";

/// The command line, parsed.
struct Args {
    addr: SocketAddr,
    options: server::DemoOptions,
    redis: Option<String>,
    /// `--layout`: `Some(true)` for the cluster layout; `None` picks it from the URL.
    cluster_layout: Option<bool>,
    /// `--presence-ttl-ms`: the Redis hub's presence expiry, if given.
    presence_ttl: Option<Duration>,
    gzip: bool,
    /// `--tls`: what ALPN offers, if TLS is on.
    tls: Option<Protocols>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut port = 8080u16;
    let mut options = server::DemoOptions::default();
    let mut redis = None;
    let mut cluster_layout = None;
    let mut presence_ttl = None;
    let mut gzip = false;
    let mut tls = false;
    let mut http1_only = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|_| "--port takes a number from 0 to 65535".to_owned())?
            }
            "--host" => {
                host = value("--host")?.parse().map_err(|_| "--host takes an IP address".to_owned())?
            }
            "--heartbeat-secs" => {
                let secs: u64 = value("--heartbeat-secs")?
                    .parse()
                    .map_err(|_| "--heartbeat-secs takes a number".to_owned())?;
                options.sse = options.sse.heartbeat(Duration::from_secs(secs));
            }
            "--generator-ms" => {
                let millis: u64 = value("--generator-ms")?
                    .parse()
                    .map_err(|_| "--generator-ms takes a number".to_owned())?;
                options.generator_interval = (millis > 0).then(|| Duration::from_millis(millis));
            }
            "--redis" => redis = Some(value("--redis")?),
            "--layout" => {
                cluster_layout = match value("--layout")?.as_str() {
                    "cluster" => Some(true),
                    "standalone" => Some(false),
                    other => return Err(format!("--layout takes standalone or cluster, not '{other}'")),
                }
            }
            "--presence-ttl-ms" => {
                let millis: u64 = value("--presence-ttl-ms")?
                    .parse()
                    .map_err(|_| "--presence-ttl-ms takes a number".to_owned())?;
                presence_ttl = Some(Duration::from_millis(millis));
            }
            "--gzip" if cfg!(feature = "gzip") => gzip = true,
            "--gzip" => {
                return Err(
                    "--gzip needs the `gzip` feature: cargo run -p ssehub-demo --bin demo --features gzip -- --gzip"
                        .to_owned(),
                );
            }
            "--tls" => tls = true,
            "--http1-only" => http1_only = true,
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    let tls = match (tls, http1_only) {
        (true, false) => Some(Protocols::Http2AndHttp1),
        (true, true) => Some(Protocols::Http1Only),
        (false, false) => None,
        (false, true) => return Err("--http1-only goes with --tls".to_owned()),
    };
    Ok(Some(Args {
        addr: SocketAddr::new(host, port),
        options,
        redis,
        cluster_layout,
        presence_ttl,
        gzip,
        tls,
    }))
}

/// What winds the hub down before the process exits (the Redis hub removes its presence counts).
type WindDown = Option<Box<dyn FnOnce() + Send>>;

fn hub(args: &Args) -> Result<(DynHub<server::Topic>, WindDown), String> {
    match args.redis.as_deref() {
        None => Ok((DynHub::new(ssehub::memory::MemoryHub::new()), None)),
        Some(url) => redis_hub(
            url,
            args.cluster_layout.unwrap_or(url.starts_with("redis-cluster://")),
            args.presence_ttl,
        ),
    }
}

#[cfg(feature = "fred")]
fn redis_hub(
    url: &str,
    cluster_layout: bool,
    presence_ttl: Option<Duration>,
) -> Result<(DynHub<server::Topic>, WindDown), String> {
    use ssehub::fred::{KeyLayout, RedisHub};
    let layout = if cluster_layout { KeyLayout::cluster() } else { KeyLayout::standalone() };
    let mut builder =
        RedisHub::<server::Topic>::builder(url).map_err(|error| format!("bad Redis URL {url}: {error}"))?;
    if let Some(ttl) = presence_ttl {
        builder = builder.presence_ttl(Some(ttl));
    }
    // Outside tokio: the hub runs its Redis client on a small runtime of its own.
    let hub = futures::executor::block_on(builder.key_layout(layout).connect())
        .map_err(|error| format!("cannot connect to Redis at {url}: {error}"))?;
    let wind_down = hub.shutdown();
    Ok((DynHub::new(hub), Some(Box::new(move || futures::executor::block_on(wind_down)))))
}

#[cfg(not(feature = "fred"))]
fn redis_hub(
    _url: &str,
    _cluster_layout: bool,
    _presence_ttl: Option<Duration>,
) -> Result<(DynHub<server::Topic>, WindDown), String> {
    Err("--redis needs the `fred` feature: cargo run -p ssehub-demo --bin demo --features fred -- --redis URL"
        .to_owned())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The recorder first, so that the hub's metrics count from its start (`GET /metrics`).
    #[cfg(feature = "metrics")]
    let _ = server::prometheus();
    let (hub, wind_down) = match hub(&args) {
        Ok(hub) => hub,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    // Registered before the address is printed: whoever read it may signal at once.
    let stop_signals = match stop_signals() {
        Ok(signals) => Some(signals),
        Err(error) => {
            // Without signal handling the demo still serves; it just cannot stop gracefully.
            eprintln!("warning: cannot handle stop signals ({error}); serving until killed");
            None
        }
    };
    let started = match args.tls {
        None => server::start(args.addr, hub, args.options),
        Some(protocols) => match DemoTls::self_signed(protocols) {
            Ok(tls) => server::start_tls(args.addr, hub, args.options, tls),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
        },
    };
    let running = match started {
        Ok(running) => running,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = running.demo().compress_streams(args.gzip) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    // Tests starting the binary on port 0 read the address from the first line. A closed
    // stdout is no reason to stop serving, so write errors are ignored.
    let backend = if args.redis.is_some() { "redis" } else { "memory" };
    let _ = writeln!(
        std::io::stdout(),
        "ssehub demo listening on {}/\nbackend: {backend}; press Ctrl-C to stop",
        running.url()
    );
    let Some(mut stop_signals) = stop_signals else {
        running.wait();
        return ExitCode::SUCCESS;
    };
    let signal = match smol::block_on(futures::StreamExt::next(&mut stop_signals)) {
        Some(Ok(Signal::Term)) => "SIGTERM",
        Some(Ok(_)) => "SIGINT",
        Some(Err(error)) => {
            eprintln!("warning: reading stop signals failed ({error}); serving until killed");
            running.wait();
            return ExitCode::SUCCESS;
        }
        None => "end of signals",
    };
    // A second signal while the open responses finish: stop at once.
    std::thread::spawn(move || {
        if smol::block_on(futures::StreamExt::next(&mut stop_signals)).is_some() {
            eprintln!("second stop signal: exiting without waiting for open connections");
            std::process::exit(1);
        }
    });
    let open = running.shutdown();
    if let Some(wind_down) = wind_down {
        wind_down();
    }
    let _ = writeln!(std::io::stdout(), "{signal}: stopped; {open} open streams told to reconnect");
    ExitCode::SUCCESS
}

/// Takes over SIGTERM and SIGINT (Ctrl-C): from here on they stop the demo gracefully.
fn stop_signals() -> std::io::Result<Signals> {
    #[cfg(unix)]
    let stop_signals = [Signal::Term, Signal::Int];
    // Windows has only Ctrl-C.
    #[cfg(not(unix))]
    let stop_signals = [Signal::Int];
    Signals::new(stop_signals)
}
