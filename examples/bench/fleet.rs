//! The fleet scenario: a Redis Cluster with replicas, K server processes, C browser-like SSE clients in client processes, publishers, and a chaos script, all on this machine; every client's log checked for exactly-once delivery.
//!
//! The run: a private cluster of 3 masters with a replica each; K
//! `bench http-server` processes on the cluster (each on its own port); the
//! clients spread over P `bench fleet-client` processes (see there for how
//! they reconnect); once every client is live, an idle window (half the
//! warm-up: CPU with nothing published), then publishers of user events,
//! broadcasts and group events at set rates, each publish recorded; the
//! warm-up, whose second half is the steady window (CPU per delivered frame
//! of the servers, the clients and the machine; each master's CPU per
//! published event); then the chaos script, each step logged with its time:
//!
//! 1. a rolling restart: each server in turn gets SIGTERM (its streams end
//!    with a short `retry:`), exits, and starts again on its port;
//! 2. SIGKILL of one server, started again at once;
//! 3. SIGKILL of one Redis master; its replica takes over; the killed node
//!    comes back as a replica;
//! 4. `CLIENT KILL` of one server process's pub/sub connections, on every node;
//! 5. SIGSTOP of one master for 3 s (longer than the node timeout: it may
//!    be failed over too).
//!
//! Then the publishers stop, end markers go to every user, group and the
//! broadcast stream, and each client process writes its log once all its
//! connections have their markers. Every connection's log is checked
//! against what was published to it (`fleet_check`); the JSON line adds a
//! per-second timeline of the publish-to-client latency, which
//! `plot_fleet.py` draws with the chaos marked (`docs/fleet.png`). Every process the run
//! starts is ended on every way out: the servers and clients by their
//! handles' `Drop` (and their stdin, the lifeline both watch), the Redis
//! nodes by the cluster's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, Event, GroupId, Publisher, UserId};
use ssehub_harness::redis_server::RedisCluster;
use tokio::sync::oneshot;

use crate::fleet_check::{self, ChaosEvent, Published, Target};
use crate::fleet_client::{END_EVENT_TYPE, group_name, user_number};
use crate::http_server::unix_ns;
use crate::report::{Figures, Report, Value};
use crate::workload::{C, EVENT_TYPE, category_of, data};
use crate::{Bench, Result, failed};

/// The sizes and rates of a run.
struct Plan {
    servers: usize,
    connections: usize,
    client_processes: usize,
    groups: usize,
    user_rate: u64,
    broadcast_rate: u64,
    group_rate: u64,
    warmup: Duration,
    /// The pause between two chaos steps, and after the last.
    between_chaos: Duration,
}

pub fn run(bench: &mut Bench, report: &mut Report) -> Result<()> {
    let plan = Plan {
        servers: crate::positive(bench.cli.number("servers", 4, 2)?, "servers")?,
        connections: crate::positive(bench.cli.number("connections", 20_000, 300)?, "connections")?,
        client_processes: crate::positive(bench.cli.number("client-processes", 4, 2)?, "client-processes")?,
        groups: crate::positive(bench.cli.number("groups", 64, 8)?, "groups")?,
        user_rate: bench.cli.number("user-rate", 500, 200)?,
        broadcast_rate: bench.cli.number("broadcast-rate", 1, 5)?,
        group_rate: bench.cli.number("group-rate", 20, 20)?,
        warmup: Duration::from_secs(bench.cli.number("warmup", 10, 3)?),
        between_chaos: Duration::from_secs(bench.cli.number("between-chaos", 10, 6)?),
    };
    bench.cli.finish()?;
    let mut figures = Figures::default();
    figures.put("servers", plan.servers as u64);
    figures.put("connections", plan.connections as u64);
    figures.put("client_processes", plan.client_processes as u64);
    figures.put("groups", plan.groups as u64);
    figures.put("user_rate", plan.user_rate);
    figures.put("broadcast_rate", plan.broadcast_rate);
    figures.put("group_rate", plan.group_rate);
    let outcome = fleet(bench, &plan, &mut figures);
    report.add("", figures);
    outcome
}

fn fleet(bench: &Bench, plan: &Plan, figures: &mut Figures) -> Result<()> {
    let progress = |message: &str| bench.progress(message);
    progress("starting a Redis Cluster of 3 masters with a replica each");
    let cluster = RedisCluster::start(3, 1);
    // The masters that keep running serve their slots while another one fails over.
    for node in cluster.nodes() {
        node.command(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]).expect_ok();
    }
    let url = cluster.url();
    let ports = free_ports(plan.servers)?;
    let mut servers = Vec::with_capacity(plan.servers);
    for port in &ports {
        servers.push(ServerProcess::start(&url, *port)?);
    }
    let server_rss_before: u64 = servers.iter().filter_map(ServerProcess::rss_kib).sum();
    let addrs: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let dir = std::env::temp_dir().join(format!("ssehub-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    let _remove_dir = RemoveDir(dir.clone());
    let (lines, client_lines) = mpsc::channel();
    let mut clients = Vec::with_capacity(plan.client_processes);
    let per_process = plan.connections.div_ceil(plan.client_processes);
    for n in 0..plan.client_processes {
        let first = n * per_process;
        let count = per_process.min(plan.connections.saturating_sub(first));
        if count > 0 {
            let log = dir.join(format!("client-{n}.log"));
            clients.push(ClientProcess::start(n, &addrs, first, count, plan.groups, log, lines.clone())?);
        }
    }
    drop(lines);
    progress(&format!(
        "{} servers, {} clients in {} processes: waiting until every client is live",
        plan.servers,
        plan.connections,
        clients.len()
    ));
    let live_limit = Duration::from_secs(60) + Duration::from_millis(plan.connections as u64 * 5);
    wait_for_all(&client_lines, clients.len(), "live", live_limit)?;

    // An idle window: every client live, nothing published yet (heartbeats, the cluster's own traffic).
    let idle_from = CpuSample::take(&cluster, &servers, &clients);
    thread::sleep(plan.warmup / 2);
    let idle_to = CpuSample::take(&cluster, &servers, &clients);

    // The servers' hubs are told the same replica acks: a failover then loses no acknowledged publish.
    let hub = bench.runtime.block_on(
        RedisHub::<C>::builder(&url)?
            .key_layout(KeyLayout::cluster())
            .command_timeout(Duration::from_secs(2))
            .replica_acks(1, Duration::from_secs(1))
            .connect(),
    )?;
    let published = Arc::new(Mutex::new(Vec::<Published>::new()));
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start_ns = unix_ns();
    let publishers = [
        (plan.user_rate, Stream::Users(plan.connections)),
        (plan.broadcast_rate, Stream::Broadcast),
        (plan.group_rate, Stream::Groups(plan.groups)),
    ]
    .into_iter()
    .filter(|(rate, _)| *rate > 0)
    .map(|(rate, stream)| {
        let publisher = Publishing {
            hub: hub.clone(),
            published: Arc::clone(&published),
            seq: Arc::clone(&seq),
            stop: Arc::clone(&stop),
        };
        bench.runtime.spawn(publisher.run(stream, rate))
    })
    .collect::<Vec<_>>();
    progress("publishing; warming up, then a steady window before the chaos");
    thread::sleep(plan.warmup / 2);
    let steady_from = CpuSample::take(&cluster, &servers, &clients);
    thread::sleep(plan.warmup / 2);
    let steady_to = CpuSample::take(&cluster, &servers, &clients);
    let server_rss_live: u64 = servers.iter().filter_map(ServerProcess::rss_kib).sum();
    figures.put(
        "server_rss_kib_per_connection",
        server_rss_live.saturating_sub(server_rss_before) as f64 / plan.connections as f64,
    );
    figures.put("server_rss_kib", server_rss_live);

    let chaos = chaos_script(&cluster, &mut servers, &url, plan, &progress)?;
    let chaos_from = chaos.first().map_or(0, |event| event.began_ns);
    let chaos_to = chaos.last().map_or(0, |event| event.ended_ns);
    thread::sleep(plan.between_chaos);

    stop.store(true, Ordering::SeqCst);
    for publisher in publishers {
        let _ = bench.runtime.block_on(publisher);
    }
    let publish_end_ns = unix_ns();
    progress("publishing the end markers");
    let markers = Publishing { hub: hub.clone(), published: Arc::clone(&published), seq, stop };
    bench.runtime.block_on(markers.end_markers(plan.connections, plan.groups))?;
    let done_limit = Duration::from_secs(120);
    if wait_for_all(&client_lines, clients.len(), "done", done_limit).is_err() {
        progress("not every client is done: asking for their logs as they stand");
        for client in &mut clients {
            client.finish();
        }
        let _ = wait_for_all(&client_lines, clients.len(), "done", Duration::from_secs(30));
    }
    let end_ns = unix_ns();
    let paths: Vec<PathBuf> = clients.iter().map(|client| client.log.clone()).collect();
    drop(clients);
    drop(servers);
    let logs = fleet_check::read_logs(&paths, plan.connections).map_err(failed)?;
    let published = published.lock().unwrap().clone();

    let verdict = fleet_check::verify(&logs, &published, plan.groups);
    verdict.put(figures);
    let mut latencies: Vec<u64> = logs
        .iter()
        .flat_map(|log| log.events.iter().map(|(_, latency)| *latency))
        .filter(|latency| *latency > 0)
        .collect();
    latencies.sort_unstable();
    let seconds = (publish_end_ns - start_ns) as f64 / 1e9;
    figures.put("published", published.len() as u64);
    figures.put("failed_publishes", published.iter().filter(|p| !p.ok).count() as u64);
    figures.put("seconds", seconds);
    figures.put("deliveries", verdict.delivered);
    figures.put("deliveries_per_s", verdict.delivered as f64 / ((end_ns - start_ns) as f64 / 1e9));
    figures.put("p50_us", fleet_check::percentile(&latencies, 0.5));
    figures.put("p99_us", fleet_check::percentile(&latencies, 0.99));
    figures.put("max_us", latencies.last().copied().unwrap_or(0));
    let reconnects: u64 = logs.iter().map(|log| log.lives.len().saturating_sub(1) as u64).sum();
    figures.put("reconnects", reconnects);
    idle_figures(&idle_from, &idle_to, plan.connections, figures);
    steady_figures(&steady_from, &steady_to, &logs, &published, figures);
    figures.put("chaos", fleet_check::chaos_figures(&chaos, &logs, start_ns, publish_end_ns));
    figures.put("timeline", fleet_check::timeline(&logs, &published, start_ns));
    fleet_check::chaos_publish_fate(&logs, &published, plan.groups, chaos_from, chaos_to, figures);
    Ok(())
}

/// CPU time so far of each part of the run, and of the whole machine, in seconds.
struct CpuSample {
    at_ns: u64,
    servers: f64,
    clients: f64,
    /// Each master's port and CPU time.
    masters: Vec<(u16, f64)>,
    /// Each master's `INFO commandstats`: calls and microseconds by command.
    commands: Vec<HashMap<String, (f64, f64)>>,
    /// Every core's time outside idle and I/O wait (`/proc/stat`).
    machine_busy: f64,
}

impl CpuSample {
    fn take(cluster: &RedisCluster, servers: &[ServerProcess], clients: &[ClientProcess]) -> Self {
        let cpu = |pid: u32| crate::http::process_cpu_time(pid).map_or(0.0, |time| time.total());
        let masters = cluster
            .master_ports()
            .into_iter()
            .map(|port| (port, cluster.node(port).pid().map_or(0.0, cpu)))
            .collect();
        let commands = cluster.master_ports().into_iter().map(|port| command_stats(cluster, port)).collect();
        Self {
            at_ns: unix_ns(),
            commands,
            servers: servers.iter().map(|server| cpu(server.child.id())).sum(),
            clients: clients.iter().map(|client| cpu(client.child.id())).sum(),
            masters,
            machine_busy: machine_busy_seconds().unwrap_or(0.0),
        }
    }
}

/// A node's `INFO commandstats`: calls and microseconds by command (empty if it cannot say).
fn command_stats(cluster: &RedisCluster, port: u16) -> HashMap<String, (f64, f64)> {
    let Ok(reply) = cluster.node(port).try_command(&["INFO", "commandstats"]) else { return HashMap::new() };
    let text = reply.as_str().unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                stats.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok())
            };
            Some((name.to_string(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// The machine's CPU time outside idle and I/O wait so far, over all cores (`/proc/stat`).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|t| t.parse().ok()).collect();
    let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (per_second > 0.0).then(|| (ticks.iter().sum::<u64>() - idle - iowait) as f64 / per_second)
}

/// The idle window's cost: the servers' CPU per connection with nothing published (heartbeats),
/// and the masters' CPU with no event (the cluster bus, replication, the hubs' checks).
fn idle_figures(from: &CpuSample, to: &CpuSample, connections: usize, figures: &mut Figures) {
    let seconds = to.at_ns.saturating_sub(from.at_ns) as f64 / 1e9;
    let server_cores = (to.servers - from.servers) / seconds.max(1e-9);
    figures.put("idle_s", seconds);
    figures.put("idle_server_cpu_cores", server_cores);
    figures.put("idle_server_cpu_us_per_connection_s", server_cores * 1e6 / connections as f64);
    let redis: f64 =
        from.masters.iter().zip(&to.masters).map(|((_, before), (_, after))| after - before).sum();
    figures.put("idle_redis_cpu_cores", redis / seconds.max(1e-9));
}

/// The steady window's cost (every client live, publishing, before the chaos): CPU per delivered
/// frame of the servers, the clients and the machine, and each master's CPU per published event.
fn steady_figures(
    from: &CpuSample,
    to: &CpuSample,
    logs: &[fleet_check::ConnectionLog],
    published: &[Published],
    figures: &mut Figures,
) {
    let started: HashMap<u64, u64> = published.iter().map(|p| (p.seq, p.started_ns)).collect();
    let arrived_in_window = |(seq, latency_us): &(u64, u64)| {
        started.get(seq).is_some_and(|ns| (from.at_ns..to.at_ns).contains(&(ns + latency_us * 1000)))
    };
    let mut latencies: Vec<u64> = logs
        .iter()
        .flat_map(|log| log.events.iter().filter(|e| arrived_in_window(e)).map(|(_, latency_us)| *latency_us))
        .collect();
    latencies.sort_unstable();
    let deliveries = latencies.len() as u64;
    let publishes =
        published.iter().filter(|p| (from.at_ns..to.at_ns).contains(&p.started_ns)).count() as u64;
    let seconds = to.at_ns.saturating_sub(from.at_ns) as f64 / 1e9;
    let per = |cpu: f64, count: u64| if count == 0 { 0.0 } else { cpu * 1e6 / count as f64 };
    figures.put("steady_s", seconds);
    figures.put("steady_deliveries", deliveries);
    figures.put("steady_deliveries_per_s", deliveries as f64 / seconds.max(1e-9));
    figures.put("steady_published", publishes);
    figures.put("steady_p50_us", fleet_check::percentile(&latencies, 0.5));
    figures.put("steady_p99_us", fleet_check::percentile(&latencies, 0.99));
    figures.put("steady_max_us", latencies.last().copied().unwrap_or(0));
    figures.put("server_cpu_cores", (to.servers - from.servers) / seconds.max(1e-9));
    figures.put("server_cpu_us_per_delivery", per(to.servers - from.servers, deliveries));
    figures.put("client_cpu_us_per_delivery", per(to.clients - from.clients, deliveries));
    figures.put("machine_cpu_cores", (to.machine_busy - from.machine_busy) / seconds.max(1e-9));
    figures.put("machine_cpu_us_per_delivery", per(to.machine_busy - from.machine_busy, deliveries));
    let masters: Vec<Value> = from
        .masters
        .iter()
        .zip(&to.masters)
        .zip(from.commands.iter().zip(&to.commands))
        .map(|(((port, before), (_, after)), (commands_before, commands_after))| {
            // The commands that took the most of its time, with their calls, over the window.
            let mut commands: Vec<(String, f64, f64)> = commands_after
                .iter()
                .map(|(name, (calls, usec))| {
                    let (calls_before, usec_before) = commands_before.get(name).copied().unwrap_or_default();
                    (name.clone(), calls - calls_before, usec - usec_before)
                })
                .filter(|(_, calls, _)| *calls > 0.0)
                .collect();
            commands.sort_by(|a, b| b.2.total_cmp(&a.2));
            // A script's time holds the commands it runs, which commandstats also counts by name.
            let script_usec: f64 = commands
                .iter()
                .filter(|(name, _, _)| name.starts_with("eval"))
                .map(|(_, _, usec)| usec)
                .sum();
            Value::Object(vec![
                ("port".into(), u64::from(*port).into()),
                ("cpu_s".into(), (after - before).into()),
                // Over every event published in the window, not only this master's share.
                ("cpu_us_per_published_event".into(), per(after - before, publishes).into()),
                ("script_us_per_published_event".into(), (script_usec / publishes.max(1) as f64).into()),
                (
                    "top_commands".into(),
                    Value::Object(
                        commands
                            .into_iter()
                            .take(6)
                            .map(|(name, calls, usec)| {
                                let stats =
                                    vec![("calls".into(), calls.into()), ("usec".into(), usec.into())];
                                (name, Value::Object(stats))
                            })
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let redis: f64 =
        from.masters.iter().zip(&to.masters).map(|((_, before), (_, after))| after - before).sum();
    figures.put("redis_cpu_us_per_published_event", per(redis, publishes));
    figures.put("redis_masters", Value::List(masters));
}

/// `count` loopback ports free now, for the servers to listen on across their restarts.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<std::io::Result<_>>()
        .map_err(|e| failed(format!("no free port: {e}")))?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| failed(format!("no free port: {e}")))
}

/// Removes the run's log directory on every way out.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `processes` client processes have each said `word` (`live`, `done`).
fn wait_for_all(
    lines: &mpsc::Receiver<(usize, String)>,
    processes: usize,
    word: &str,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut said = std::collections::HashSet::new();
    while said.len() < processes {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((process, line)) if line == word => {
                said.insert(process);
            }
            Ok((process, line)) => {
                if line.starts_with("failed") {
                    return Err(failed(format!("client process {process}: {line}")));
                }
            }
            Err(_) => {
                return Err(failed(format!(
                    "{} of {processes} client processes said `{word}` within {limit:?}",
                    said.len()
                )));
            }
        }
    }
    Ok(())
}

/// One `bench http-server` process on the cluster, on its own port.
struct ServerProcess {
    child: Child,
    /// Its lifeline: the server exits when its stdin ends.
    stdin: Option<ChildStdin>,
    port: u16,
}

impl ServerProcess {
    fn start(url: &str, port: u16) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find this binary: {e}")))?;
        let mut child = Command::new(exe)
            .args(["http-server", "--mode", "ssehub", "--backend", "fred", "--threads", "1"])
            .args(["--redis-url", url, "--port", &port.to_string(), "--replica-acks", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot start a server process: {e}")))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let said = stdout.read_line(&mut line);
        if said.is_err() || !line.starts_with("listening ") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("the server process on port {port} said {line:?}")));
        }
        Ok(Self { child, stdin, port })
    }

    fn rss_kib(&self) -> Option<u64> {
        crate::http::process_rss_kib(self.child.id())
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill only sends a signal, to a child this handle has not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits (`limit` at most) for the process to exit; true if it did.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        crate::http::wait_exit(&mut self.child, limit)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        crate::http::end_child(&mut self.child, &mut self.stdin, Duration::from_secs(2));
    }
}

/// One `bench fleet-client` process; a thread forwards its stdout lines to the scenario.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl ClientProcess {
    fn start(
        number: usize,
        servers: &[String],
        first: usize,
        count: usize,
        groups: usize,
        log: PathBuf,
        lines: mpsc::Sender<(usize, String)>,
    ) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find this binary: {e}")))?;
        let mut child = Command::new(exe)
            .args(["fleet-client", "--servers", &servers.join(",")])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--groups", &groups.to_string(), "--threads", "1"])
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot start a client process: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        thread::spawn(move || {
            for line in stdout.lines().map_while(std::result::Result::ok) {
                if lines.send((number, line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, stdin, log })
    }

    /// Asks for the log as it stands.
    fn finish(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "finish").and_then(|()| stdin.flush());
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        crate::http::end_child(&mut self.child, &mut self.stdin, Duration::from_secs(2));
    }
}

/// The streams one publisher feeds.
#[derive(Clone, Copy)]
enum Stream {
    /// Each connection's user in turn.
    Users(usize),
    Broadcast,
    /// Each group in turn.
    Groups(usize),
}

/// A publisher's hub and the shared record of what was published.
#[derive(Clone)]
struct Publishing {
    hub: RedisHub<C>,
    published: Arc<Mutex<Vec<Published>>>,
    seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn audience_of(target: Target) -> Audience {
    match target {
        Target::User(index) => Audience::User(UserId::from_u64(user_number(index))),
        Target::Broadcast => Audience::Broadcast,
        Target::Group(group) => Audience::Group(GroupId::from_name(&group_name(group, usize::MAX))),
    }
}

impl Publishing {
    /// Publishes to `stream` at `rate` a second until stopped.
    ///
    /// Publishes to different targets overlap, so one stalled on a lost master (until the command
    /// timeout) holds up no other; each waits for the previous publish to its own target, so each
    /// stream's order is the order of its sequence numbers.
    async fn run(self, stream: Stream, rate: u64) {
        let started = tokio::time::Instant::now();
        let started_unix_ns = unix_ns();
        let mut previous: HashMap<Target, oneshot::Receiver<()>> = HashMap::new();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut n: u64 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let due = Duration::from_nanos(n * 1_000_000_000 / rate);
            tokio::time::sleep_until(started + due).await;
            // Latency counts from when the publish was due: a wait behind a stalled publish to the
            // same target is part of it.
            let due_ns = started_unix_ns + due.as_nanos() as u64;
            let target = match stream {
                Stream::Users(count) => Target::User(n as usize % count),
                Stream::Broadcast => Target::Broadcast,
                Stream::Groups(count) => Target::Group(n as usize % count),
            };
            let seq = self.seq.fetch_add(1, Ordering::SeqCst);
            let (done, next) = oneshot::channel();
            let before = previous.insert(target, next);
            let publisher = self.clone();
            in_flight.spawn(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                let category = category_of(seq);
                let started_ns = due_ns;
                let event =
                    Event::new(audience_of(target), EVENT_TYPE, category, data(seq, Some(started_ns)))
                        .expect("a valid bench event");
                let ok = publisher.hub.publish(event).await.is_ok();
                publisher.published.lock().unwrap().push(Published { seq, target, category, ok, started_ns });
                let _ = done.send(());
            });
            while in_flight.try_join_next().is_some() {}
            n += 1;
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// One end marker to every user, every group and the broadcast stream, each retried until it
    /// is published: the clients stop at them.
    async fn end_markers(&self, connections: usize, groups: usize) -> Result<()> {
        let targets: Vec<(Target, &str)> = (0..connections)
            .map(|index| (Target::User(index), "user"))
            .chain((0..groups).map(|group| (Target::Group(group), "group")))
            .chain([(Target::Broadcast, "broadcast")])
            .collect();
        let results: Vec<bool> = futures::stream::iter(targets)
            .map(|(target, kind)| async move {
                let seq = self.seq.fetch_add(1, Ordering::SeqCst);
                let text = format!(r#"{{"seq":{seq},"end":"{kind}"}}"#);
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let event = Event::new(audience_of(target), END_EVENT_TYPE, C::DataSync, text.clone())
                        .expect("a valid end marker");
                    let started_ns = unix_ns();
                    if self.hub.publish(event).await.is_ok() {
                        let category = C::DataSync;
                        self.published.lock().unwrap().push(Published {
                            seq,
                            target,
                            category,
                            ok: true,
                            started_ns,
                        });
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                false
            })
            .buffer_unordered(64)
            .collect()
            .await;
        match results.iter().filter(|ok| !**ok).count() {
            0 => Ok(()),
            n => Err(failed(format!("{n} end markers could not be published within 30 s"))),
        }
    }
}

/// Runs the chaos script, each step logged (stderr) and returned with its times.
fn chaos_script(
    cluster: &RedisCluster,
    servers: &mut [ServerProcess],
    url: &str,
    plan: &Plan,
    progress: &dyn Fn(&str),
) -> Result<Vec<ChaosEvent>> {
    let mut events = Vec::new();
    let mut step = |name: &str, act: &mut dyn FnMut() -> Result<String>| -> Result<()> {
        let began_ns = unix_ns();
        progress(&format!("chaos at {began_ns}: {name}"));
        let detail = act()?;
        let ended_ns = unix_ns();
        progress(&format!("chaos at {ended_ns}: {name} done: {detail}"));
        events.push(ChaosEvent { name: name.to_string(), detail, began_ns, ended_ns });
        thread::sleep(plan.between_chaos);
        Ok(())
    };
    step("rolling_restart", &mut || {
        let mut took = Vec::new();
        for server in servers.iter_mut() {
            let began = Instant::now();
            server.signal(libc::SIGTERM);
            if !server.wait_exit(Duration::from_secs(10)) {
                return Err(failed(format!(
                    "the server on port {} did not exit within 10 s of SIGTERM",
                    server.port
                )));
            }
            let port = server.port;
            *server = ServerProcess::start(url, port)?;
            took.push(format!("{port}: {:.2} s", began.elapsed().as_secs_f64()));
        }
        Ok(format!("SIGTERM, exit, start again: {}", took.join(", ")))
    })?;
    step("sigkill_server", &mut || {
        let server = &mut servers[0];
        let port = server.port;
        server.signal(libc::SIGKILL);
        server.kill();
        *server = ServerProcess::start(url, port)?;
        Ok(format!("server on port {port} killed and started again"))
    })?;
    step("sigkill_master", &mut || {
        let victim = cluster.master_ports()[0];
        let began = Instant::now();
        cluster.kill_master(victim);
        let promoted = cluster.wait_for_failover(victim, Duration::from_secs(30));
        let failover_s = began.elapsed().as_secs_f64();
        cluster.node(victim).restart();
        Ok(format!(
            "master {victim} killed; replica {promoted} promoted after {failover_s:.2} s; {victim} back as a replica"
        ))
    })?;
    step("client_kill_pubsub", &mut || {
        let pid = servers[servers.len() - 1].child.id();
        let ports = local_tcp_ports(pid);
        let mut killed = 0;
        for node in cluster.nodes().iter().filter(|node| node.is_running()) {
            let Ok(list) = node.try_command(&["CLIENT", "LIST", "TYPE", "pubsub"]) else { continue };
            for line in list.as_str().unwrap_or_default().lines() {
                let field = |name: &str| line.split(' ').find_map(|pair| pair.strip_prefix(name));
                let port =
                    field("addr=").and_then(|addr| addr.rsplit(':').next()).and_then(|p| p.parse().ok());
                if let (Some(id), Some(port)) = (field("id="), port)
                    && ports.contains(&port)
                    && node.try_command(&["CLIENT", "KILL", "ID", id]).is_ok()
                {
                    killed += 1;
                }
            }
        }
        Ok(format!("{killed} pub/sub connections of server process {pid} killed"))
    })?;
    step("sigstop_master", &mut || {
        let victim = cluster.master_ports()[0];
        let pid = cluster.node(victim).pid().ok_or_else(|| failed(format!("no pid for node {victim}")))?;
        // SAFETY: kill only sends signals, to a redis-server this run started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        thread::sleep(Duration::from_secs(3));
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        Ok(format!("master {victim} (pid {pid}) stopped for 3 s"))
    })?;
    Ok(events)
}

/// The local ports of the TCP sockets process `pid` holds.
fn local_tcp_ports(pid: u32) -> std::collections::HashSet<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = std::collections::HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else { continue };
            if inodes.contains(*inode)
                && let Some(port) = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}
