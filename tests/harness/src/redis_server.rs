//! Test harness: private, throwaway `redis-server` processes (standalone and cluster) for integration tests, std only.
//!
//! It blocks and starts no runtime, so it works in every test whatever async runtime (if any) the
//! test uses.
//!
//! * [`RedisServer::start`] runs a private `redis-server` on a free loopback port, in its own
//!   temporary directory (no persistence), and waits until it answers `PING`.
//! * [`RedisCluster::start`] runs a whole Redis Cluster (masters + replicas) and waits until it
//!   is healthy; [`RedisCluster::kill_master`] + [`RedisCluster::wait_for_failover`] exercise
//!   failover.
//!
//! If `redis-server` (or `redis-cli`, for clusters) cannot be run, the harness PANICS: tests that
//! need Redis fail, they are never silently skipped. `REDIS_SERVER_BIN` / `REDIS_CLI_BIN` override
//! the binaries' names or paths.
//!
//! Every server runs under a tiny `sh` watchdog holding a pipe to the test process: when the
//! test process dies for any reason (panic, abort, SIGKILL) the pipe closes and the watchdog
//! SIGKILLs the server, so no `redis-server` outlives its test binary. Dropping a
//! [`RedisServer`] / [`RedisCluster`] kills the processes and removes their directories.
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crate::resp::{RespConnection, RespValue, encode_command, read_resp};

/// How long a server gets to answer `PING` after being launched.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster gets to become healthy after `redis-cli --cluster create`.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Log file (stdout+stderr of every launch) inside a server's directory.
const LOG_FILE: &str = "redis.log";
/// Cluster node timeout (ms) passed to every cluster node.
const CLUSTER_NODE_TIMEOUT_MS: u64 = 2000;
/// Number of hash slots in Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

// ---------------------------------------------------------------------------------------------
// Binaries, ports, directories
// ---------------------------------------------------------------------------------------------

fn check_binary(env_var: &str, default: &str, what: &str) -> String {
    let bin = std::env::var(env_var).unwrap_or_else(|_| default.to_string());
    match Command::new(&bin).arg("--version").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => bin,
        Ok(out) => panic!(
            "`{bin} --version` failed ({}): {}{}\n{what} is required by these tests (they are never skipped); \
             install Redis with `bash tests/setup.sh` (or `apt-get install redis-server`) or set {env_var}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run `{bin}`: {e}\n{what} is required by these tests (they are never skipped); \
             install Redis with `bash tests/setup.sh` (or `apt-get install redis-server`) or set {env_var} to its path"
        ),
    }
}

fn redis_server_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| check_binary("REDIS_SERVER_BIN", "redis-server", "redis-server"))
}

fn redis_cli_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| check_binary("REDIS_CLI_BIN", "redis-cli", "redis-cli (for `--cluster create`)"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Picks `n` distinct free loopback ports: binds them all to port 0 at once, then releases them.
/// Ports already handed out by this process are never handed out again.
fn pick_free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut handed_out = lock(HANDED_OUT.get_or_init(Default::default));
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if ports.len() == n {
            break;
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if !handed_out.contains(&port) && !ports.contains(&port) {
            ports.push(port);
        }
        held.push(listener);
    }
    assert_eq!(ports.len(), n, "could not find {n} free loopback ports");
    handed_out.extend(&ports);
    ports
}

/// Removes `ssehub-redis*-<pid>-...` directories left in the temp dir by test processes that
/// no longer exist (killed or aborted before their `Drop` ran). Linux only (uses `/proc`).
fn remove_stale_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) =
                name.strip_prefix("ssehub-redis-cluster-").or_else(|| name.strip_prefix("ssehub-redis-"))
            else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    });
}

fn unique_temp_dir(prefix: &str, parent: Option<&Path>) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if parent.is_none() {
        remove_stale_dirs();
    }
    let parent = parent.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    loop {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name =
            format!("{prefix}-{}-{}-{nanos:08x}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let dir = parent.join(name);
        match fs::create_dir_all(&parent).and_then(|()| fs::create_dir(&dir)) {
            Ok(()) => return dir.canonicalize().unwrap_or(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temp dir {}: {e}", dir.display()),
        }
    }
}

/// Removes a directory on drop (e.g. while unwinding from a startup panic) unless disarmed.
struct DirGuard(Option<PathBuf>);

impl DirGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// The last `max` bytes of a file, lossily decoded.
fn file_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("<no log at {}>", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 { format!("...{text}") } else { text }
}

fn file_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------------------------
// One server process
// ---------------------------------------------------------------------------------------------

/// Runs `"$@"` (redis-server + args) in the background plus a watchdog that SIGKILLs it as soon
/// as our stdin pipe reaches EOF (we closed it, or the test process died). The shell exits
/// when redis-server exits, with its status.
const WATCHDOG_SCRIPT: &str = r#"exec 3<&0
"$@" 3<&- &
r=$!
{ read -r _ <&3; kill -9 "$r" 2>/dev/null; } &
w=$!
exec 3<&-
wait "$r"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

struct Running {
    /// The `sh` watchdog wrapper; its stdin is the lifeline pipe.
    child: Child,
    /// The redis-server pid (from `INFO server`).
    pid: u32,
}

enum LaunchError {
    /// The port (or cluster bus port) was taken: retry, possibly on other ports.
    AddrInUse(String),
}

/// A private `redis-server` process on `127.0.0.1:port()`, killed (and its directory removed)
/// on drop. All methods take `&self`, so it can be shared (e.g. in an `Arc`) between threads.
pub struct RedisServer {
    port: u16,
    /// Cluster bus port (`--cluster-port`), for cluster nodes.
    bus_port: Option<u16>,
    dir: PathBuf,
    extra_args: Vec<String>,
    process: Mutex<Option<Running>>,
}

impl RedisServer {
    /// Starts a standalone server on a free loopback port and waits until it answers `PING`.
    /// Panics (with the server log) if it does not come up within 10 s, and panics if
    /// `redis-server` is not installed.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start) with extra `redis-server` arguments (e.g. `["--maxclients", "50"]`).
    /// Must not enable authentication (the harness talks to the server without AUTH).
    pub fn start_with_args(extra_args: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::start_inner(None, "ssehub-redis", extra, false)
    }

    fn start_inner(
        parent: Option<&Path>,
        prefix: &str,
        extra_args: Vec<String>,
        cluster: bool,
    ) -> RedisServer {
        redis_server_bin();
        let dir = unique_temp_dir(prefix, parent);
        let guard = DirGuard(Some(dir.clone()));
        let mut last_err = String::new();
        for _attempt in 0..20 {
            let ports = pick_free_ports(if cluster { 2 } else { 1 });
            let (port, bus_port) = (ports[0], ports.get(1).copied());
            match launch(&dir, port, bus_port, &extra_args) {
                Ok(running) => {
                    guard.disarm();
                    return RedisServer {
                        port,
                        bus_port,
                        dir,
                        extra_args,
                        process: Mutex::new(Some(running)),
                    };
                }
                Err(LaunchError::AddrInUse(log)) => last_err = log,
            }
        }
        panic!("could not start redis-server: ports kept being taken (bind race). Last log:\n{last_err}");
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster bus port, for cluster nodes.
    pub fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file receiving the server's stdout/stderr (all launches, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The last 16 KiB of the server log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path(), 16 * 1024)
    }

    /// The redis-server pid, while running.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.process).as_ref().map(|r| r.pid)
    }

    /// Whether the process is (still) running.
    pub fn is_running(&self) -> bool {
        let mut guard = lock(&self.process);
        match guard.as_mut() {
            Some(r) => matches!(r.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the server and waits for it to be gone. No-op if it is not running.
    pub fn kill(&self) {
        let running = lock(&self.process).take();
        if let Some(mut running) = running {
            stop(&mut running);
        }
    }

    /// Kills the server (if running) and starts it again on the SAME port with the same
    /// arguments and empty data (nothing is persisted), then waits for `PING`.
    /// (A cluster node keeps its `nodes.conf`, so it rejoins its cluster.)
    pub fn restart(&self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match launch(&self.dir, self.port, self.bus_port, &self.extra_args) {
                Ok(running) => {
                    *lock(&self.process) = Some(running);
                    return;
                }
                Err(LaunchError::AddrInUse(log)) => {
                    if Instant::now() >= deadline {
                        panic!(
                            "cannot restart redis-server: port {} still in use after {START_TIMEOUT:?}:\n{log}",
                            self.port
                        );
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// A new connection to this server; panics if it cannot connect.
    #[track_caller]
    pub fn connect(&self) -> RespConnection {
        RespConnection::connect(self.port)
            .unwrap_or_else(|e| panic!("cannot connect to redis on port {}: {e}", self.port))
    }

    /// Runs one command over a fresh connection; I/O errors are returned.
    pub fn try_command(&self, args: &[&str]) -> io::Result<RespValue> {
        RespConnection::connect(self.port)?.command(args)
    }

    /// Runs one command over a fresh connection; panics on I/O errors (Redis errors are
    /// returned as [`RespValue::Error`]).
    #[track_caller]
    pub fn command(&self, args: &[&str]) -> RespValue {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {} failed: {e}", self.port))
    }

    /// The lines of `CLIENT LIST` (including the connection used to ask).
    #[track_caller]
    pub fn client_list(&self) -> Vec<String> {
        let reply = self.command(&["CLIENT", "LIST"]);
        lines_of(&reply, "CLIENT LIST")
    }

    /// The `CLIENT LIST` lines except the connection used to ask (matched by `id=` against
    /// `CLIENT ID` on that same connection).
    #[track_caller]
    pub fn clients_excluding_self(&self) -> Vec<String> {
        let mut conn = self.connect();
        let io = |e: io::Error| panic!("CLIENT ID/LIST on port {} failed: {e}", self.port);
        let id = conn.command(&["CLIENT", "ID"]).unwrap_or_else(io);
        let id = id.as_int().unwrap_or_else(|| panic!("unexpected CLIENT ID reply {id}"));
        let list = conn.command(&["CLIENT", "LIST"]).unwrap_or_else(io);
        let me = format!("id={id}");
        lines_of(&list, "CLIENT LIST")
            .into_iter()
            .filter(|l| l.split(' ').next() != Some(me.as_str()))
            .collect()
    }

    /// The number of connected clients, not counting the connection used to ask.
    #[track_caller]
    pub fn connected_clients_excluding_self(&self) -> usize {
        self.clients_excluding_self().len()
    }

    /// `PUBSUB NUMSUB channel`: the number of subscribers of `channel`.
    #[track_caller]
    pub fn pubsub_numsub(&self, channel: &str) -> i64 {
        let reply = self.command(&["PUBSUB", "NUMSUB", channel]);
        reply
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(RespValue::as_int)
            .unwrap_or_else(|| panic!("unexpected PUBSUB NUMSUB reply: {reply}"))
    }

    /// `ROLE`'s first element: `"master"` or `"slave"`.
    #[track_caller]
    pub fn role(&self) -> String {
        let reply = self.command(&["ROLE"]);
        reply
            .as_array()
            .and_then(|a| a.first())
            .and_then(RespValue::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("unexpected ROLE reply: {reply}"))
    }

    /// `INFO <section>` as text.
    #[track_caller]
    pub fn info(&self, section: &str) -> String {
        let reply = self.command(&["INFO", section]);
        reply.as_str().map(str::to_string).unwrap_or_else(|| panic!("unexpected INFO reply: {reply}"))
    }

    /// One `field:value` of `INFO <section>`.
    #[track_caller]
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        info_value(&self.info(section), field).map(str::to_string)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer").field("port", &self.port).field("dir", &self.dir).finish()
    }
}

fn server_args(dir: &Path, port: u16, bus_port: Option<u16>, extra_args: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--daemonize".into(),
        "no".into(),
        "--dir".into(),
        dir.to_string_lossy().into_owned(),
    ];
    if let Some(bus) = bus_port {
        args.push("--cluster-port".into());
        args.push(bus.to_string());
    }
    args.extend(extra_args.iter().cloned());
    args
}

/// Launches the process and waits for PING (and checks, via `CONFIG GET dir`, that the
/// server answering is ours). Panics on anything but a bind race.
fn launch(
    dir: &Path,
    port: u16,
    bus_port: Option<u16>,
    extra_args: &[String],
) -> Result<Running, LaunchError> {
    let log_path = dir.join(LOG_FILE);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
    let _ = writeln!(log, "=== harness: launching {} on port {} ===", redis_server_bin(), port);
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().expect("clone log file handle");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("sh")
        .arg(redis_server_bin())
        .args(server_args(dir, port, bus_port, extra_args))
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn sh to run redis-server: {e}"));

    let want_dir = dir.to_string_lossy().into_owned();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on redis-server wrapper") {
            let log = file_from(&log_path, log_offset);
            if log.contains("Address already in use") {
                return Err(LaunchError::AddrInUse(log));
            }
            panic!(
                "redis-server on port {} exited during startup ({status}); log {}:\n{log}",
                port,
                log_path.display()
            );
        }
        if let Some(pid) = probe(port, &want_dir) {
            return Ok(Running { child, pid });
        }
        if Instant::now() >= deadline {
            drop(child.stdin.take());
            let _ = child.wait();
            panic!(
                "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log {}:\n{}",
                port,
                log_path.display(),
                file_from(&log_path, log_offset)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// PINGs the server; if it answers PONG and its `dir` is ours, returns its pid.
fn probe(port: u16, want_dir: &str) -> Option<u32> {
    let mut conn =
        RespConnection::connect_with_timeout(port, Duration::from_millis(500), Duration::from_secs(2))
            .ok()?;
    if conn.command(&["PING"]).ok()? != RespValue::Simple("PONG".into()) {
        return None;
    }
    let dir = conn.command(&["CONFIG", "GET", "dir"]).ok()?;
    if dir.as_array()?.get(1)?.as_str()? != want_dir {
        return None; // somebody else's server on this port; ours will fail with EADDRINUSE
    }
    let info = conn.command(&["INFO", "server"]).ok()?;
    info_value(info.as_str()?, "process_id")?.parse().ok()
}

fn stop(running: &mut Running) {
    // Closing the lifeline makes the watchdog SIGKILL redis-server; the wrapper then exits.
    drop(running.child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match running.child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                let _ = Command::new("kill").arg("-9").arg(running.pid.to_string()).status();
                let _ = running.child.kill();
                let _ = running.child.wait();
                return;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn lines_of(reply: &RespValue, what: &str) -> Vec<String> {
    let text = reply.as_str().unwrap_or_else(|| panic!("unexpected {what} reply: {reply}"));
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn info_value<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(str::trim)
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// The cluster hash slot of `key`, hash tags honoured (redis-protocol's `redis_keyslot`, the
/// function the fred client routes by).
pub fn key_slot(key: &str) -> u16 {
    redis_protocol::redis_keyslot(key.as_bytes())
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// The master's node id, for replicas.
    pub master_id: Option<String>,
    /// `link-state` is `connected`.
    pub connected: bool,
    /// Inclusive slot ranges served.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNodeInfo {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }
    /// Flagged `fail` or `fail?`.
    pub fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = fields[1].split(['@', ',']).next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(ClusterNodeInfo {
                id: fields[0].to_string(),
                port,
                flags: fields[2].split(',').map(str::to_string).collect(),
                master_id: (fields[3] != "-").then(|| fields[3].to_string()),
                connected: fields[7] == "connected",
                slots,
            })
        })
        .collect()
}

/// A master's port and the (inclusive) slot ranges it serves.
type MasterSlots = (u16, Vec<(u16, u16)>);

/// A private Redis Cluster on loopback; every node is a [`RedisServer`]. Dropping it kills all
/// nodes and removes their directories.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
    masters: usize,
    replicas_per_master: usize,
    /// Last known slot ranges per master port (taken at start and before each `kill_master`).
    known_slots: Mutex<Vec<MasterSlots>>,
}

impl RedisCluster {
    /// Starts `masters * (1 + replicas_per_master)` nodes, creates the cluster with
    /// `redis-cli --cluster create`, and waits (30 s max) until every node reports
    /// `cluster_state:ok` / `cluster_slots_ok:16384`, knows every node, and every replica is
    /// connected to its master. `masters` must be at least 3 (a `redis-cli` requirement).
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        assert!(
            masters >= 3,
            "Redis Cluster needs at least 3 masters (redis-cli --cluster create), got {masters}"
        );
        redis_server_bin();
        redis_cli_bin();
        let dir = unique_temp_dir("ssehub-redis-cluster", None);
        let guard = DirGuard(Some(dir.clone()));
        let node_args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &CLUSTER_NODE_TIMEOUT_MS.to_string(),
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let total = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| RedisServer::start_inner(Some(&dir), "node", node_args.clone(), true))
            .collect();
        guard.disarm(); // from here on, `RedisCluster`'s Drop cleans up
        let cluster =
            RedisCluster { nodes, dir, masters, replicas_per_master, known_slots: Mutex::new(Vec::new()) };
        cluster.create();
        cluster.wait_ready(CLUSTER_READY_TIMEOUT);
        *lock(&cluster.known_slots) = cluster.master_slot_map();
        cluster
    }

    fn create(&self) {
        let log_path = self.dir.join("cluster-create.log");
        let log = File::create(&log_path).expect("create cluster-create.log");
        let mut cmd = Command::new(redis_cli_bin());
        cmd.arg("--cluster").arg("create");
        for n in &self.nodes {
            cmd.arg(n.addr());
        }
        cmd.arg("--cluster-replicas").arg(self.replicas_per_master.to_string()).arg("--cluster-yes");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait redis-cli") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli --cluster create did not finish within {CLUSTER_READY_TIMEOUT:?}:\n{}",
                    file_tail(&log_path, 16 * 1024)
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        let out = file_tail(&log_path, 64 * 1024);
        if !status.success() || out.contains("[ERR]") {
            panic!("redis-cli --cluster create failed ({status}):\n{out}");
        }
    }

    /// Panics with diagnostics unless the whole cluster becomes healthy within `timeout`.
    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = match self.health_problem() {
                None => return,
                Some(p) => p,
            };
            if Instant::now() >= deadline {
                panic!("cluster not ready after {timeout:?}: {problem}\n{}", self.diagnostics());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `None` if every node is up, agrees on a fully covered cluster, and replication is up.
    fn health_problem(&self) -> Option<String> {
        let total = self.nodes.len();
        for node in &self.nodes {
            let port = node.port();
            let info = match node.try_command(&["CLUSTER", "INFO"]) {
                Ok(v) => v.as_str().unwrap_or_default().to_string(),
                Err(e) => return Some(format!("{port}: CLUSTER INFO failed: {e}")),
            };
            for (field, want) in [
                ("cluster_state", "ok".to_string()),
                ("cluster_slots_ok", CLUSTER_SLOTS.to_string()),
                ("cluster_known_nodes", total.to_string()),
            ] {
                let got = info_value(&info, field);
                if got != Some(want.as_str()) {
                    return Some(format!("{port}: {field} is {got:?}, want {want}"));
                }
            }
            let view = match self.cluster_nodes_of(node) {
                Ok(v) => v,
                Err(e) => return Some(format!("{port}: CLUSTER NODES failed: {e}")),
            };
            if view.len() != total {
                return Some(format!("{port} sees {} nodes, want {total}", view.len()));
            }
            if let Some(bad) = view
                .iter()
                .find(|n| n.is_failing() || n.has_flag("handshake") || n.has_flag("noaddr") || !n.connected)
            {
                return Some(format!(
                    "{port} sees node {} as {:?} connected={}",
                    bad.port, bad.flags, bad.connected
                ));
            }
            let masters: Vec<&ClusterNodeInfo> = view.iter().filter(|n| n.is_master()).collect();
            if masters.len() != self.masters || masters.iter().any(|m| m.slots.is_empty()) {
                return Some(format!(
                    "{port} sees masters {:?}",
                    masters.iter().map(|m| m.port).collect::<Vec<_>>()
                ));
            }
            for m in &masters {
                let n = view.iter().filter(|r| r.master_id.as_deref() == Some(m.id.as_str())).count();
                if n != self.replicas_per_master {
                    return Some(format!("{port} sees {n} replicas of {}", m.port));
                }
            }
        }
        for node in &self.nodes {
            let role = match node.try_command(&["ROLE"]) {
                Ok(v) => v,
                Err(e) => return Some(format!("{}: ROLE failed: {e}", node.port())),
            };
            let items = role.as_array().unwrap_or_default();
            match items.first().and_then(RespValue::as_str) {
                Some("slave") => {
                    let state = items.get(3).and_then(RespValue::as_str);
                    if state != Some("connected") {
                        return Some(format!("replica {} link state {state:?}", node.port()));
                    }
                }
                Some("master") => {
                    let n = items.get(2).and_then(RespValue::as_array).map_or(0, <[RespValue]>::len);
                    if n != self.replicas_per_master {
                        return Some(format!("master {} has {n} connected replicas", node.port()));
                    }
                }
                _ => return Some(format!("{}: unexpected ROLE {role}", node.port())),
            }
        }
        None
    }

    fn cluster_nodes_of(&self, node: &RedisServer) -> io::Result<Vec<ClusterNodeInfo>> {
        let reply = node.try_command(&["CLUSTER", "NODES"])?;
        let text = reply.as_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("CLUSTER NODES reply {reply}"))
        })?;
        Ok(parse_cluster_nodes(text))
    }

    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!("--- node {} (running: {}) ---\n", node.port(), node.is_running()));
            match node.try_command(&["CLUSTER", "NODES"]) {
                Ok(v) => out.push_str(v.as_str().unwrap_or_default()),
                Err(e) => out.push_str(&format!("CLUSTER NODES failed: {e}\n")),
            }
            let log = node.log_tail();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str("log tail:\n");
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The `CLUSTER NODES` view of the first running node that answers.
    #[track_caller]
    pub fn cluster_nodes(&self) -> Vec<ClusterNodeInfo> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            if let Ok(view) = self.cluster_nodes_of(node) {
                return view;
            }
        }
        panic!("no cluster node answers CLUSTER NODES");
    }

    /// Current masters serving slots (not failing), ordered by their first slot, with their ranges.
    fn master_slot_map(&self) -> Vec<MasterSlots> {
        let mut masters: Vec<MasterSlots> = self
            .cluster_nodes()
            .into_iter()
            .filter(|n| n.is_master() && !n.is_failing() && !n.slots.is_empty())
            .map(|n| (n.port, n.slots))
            .collect();
        masters.sort_by_key(|(_, slots)| slots.iter().map(|s| s.0).min());
        masters
    }

    /// `redis-cluster://127.0.0.1:p1?node=127.0.0.1:p2&node=...` listing the current masters.
    pub fn url(&self) -> String {
        let ports = self.master_ports();
        let mut url = format!("redis-cluster://127.0.0.1:{}", ports[0]);
        for (i, p) in ports[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{p}"));
        }
        url
    }

    /// All nodes (masters and replicas, running or killed), in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node on `port`; panics if there is none.
    #[track_caller]
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Ports of all nodes, in creation order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Ports of the current (non-failing, slot-serving) masters, ordered by first slot.
    pub fn master_ports(&self) -> Vec<u16> {
        self.master_slot_map().into_iter().map(|(p, _)| p).collect()
    }

    /// Ports of the current replicas of the master on `master_port`.
    pub fn replica_ports_of(&self, master_port: u16) -> Vec<u16> {
        let view = self.cluster_nodes();
        let Some(master) = view.iter().find(|n| n.port == master_port) else {
            return Vec::new();
        };
        view.iter().filter(|n| n.master_id.as_deref() == Some(master.id.as_str())).map(|n| n.port).collect()
    }

    /// The port of the master currently serving `slot`.
    #[track_caller]
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        self.master_slot_map()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The port of the master currently serving `key`.
    pub fn master_for_key(&self, key: &str) -> u16 {
        self.master_for_slot(key_slot(key))
    }

    /// Same as the free function [`key_slot`].
    pub fn key_slot(key: &str) -> u16 {
        key_slot(key)
    }

    /// SIGKILLs any node.
    pub fn kill_node(&self, port: u16) {
        self.node(port).kill();
    }

    /// SIGKILLs the master on `port` (panics if it is not a current master), remembering its
    /// slots for [`wait_for_failover`](Self::wait_for_failover).
    #[track_caller]
    pub fn kill_master(&self, port: u16) {
        let map = self.master_slot_map();
        assert!(map.iter().any(|(p, _)| *p == port), "port {port} is not a current master: {map:?}");
        *lock(&self.known_slots) = map;
        self.node(port).kill();
    }

    /// Waits until a replica of the (killed) master `old_master_port` has been promoted: every
    /// surviving node reports `cluster_state:ok` and `cluster_slots_ok:16384`, and agrees that
    /// the old master's slots are served by one running node whose `ROLE` is `master`.
    /// Returns that new master's port; panics with diagnostics after `timeout`.
    #[track_caller]
    pub fn wait_for_failover(&self, old_master_port: u16, timeout: Duration) -> u16 {
        let old_slots = lock(&self.known_slots)
            .iter()
            .find(|(p, _)| *p == old_master_port)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("port {old_master_port} was not a known master"));
        let probe_slot = old_slots[0].0;
        let deadline = Instant::now() + timeout;
        loop {
            let problem = match self.failover_problem(old_master_port, probe_slot) {
                Ok(new_master) => return new_master,
                Err(p) => p,
            };
            if Instant::now() >= deadline {
                panic!(
                    "no failover of master {old_master_port} within {timeout:?}: {problem}\n{}",
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn failover_problem(&self, old_port: u16, slot: u16) -> Result<u16, String> {
        let survivors: Vec<&RedisServer> =
            self.nodes.iter().filter(|n| n.port() != old_port && n.is_running()).collect();
        let mut owner: Option<u16> = None;
        for node in &survivors {
            let port = node.port();
            let info = node.try_command(&["CLUSTER", "INFO"]).map_err(|e| format!("{port}: {e}"))?;
            let info = info.as_str().unwrap_or_default();
            for (field, want) in
                [("cluster_state", "ok".to_string()), ("cluster_slots_ok", CLUSTER_SLOTS.to_string())]
            {
                let got = info_value(info, field);
                if got != Some(want.as_str()) {
                    return Err(format!("{port}: {field} is {got:?}, want {want}"));
                }
            }
            let view = self.cluster_nodes_of(node).map_err(|e| format!("{port}: {e}"))?;
            let serving = view
                .iter()
                .find(|n| n.serves(slot))
                .ok_or_else(|| format!("{port}: nobody serves slot {slot}"))?;
            if serving.port == old_port || serving.is_failing() {
                return Err(format!("{port}: slot {slot} still on {} {:?}", serving.port, serving.flags));
            }
            match owner {
                None => owner = Some(serving.port),
                Some(o) if o != serving.port => {
                    return Err(format!("{port} says slot {slot} is on {}, others say {o}", serving.port));
                }
                Some(_) => {}
            }
        }
        let new_master = owner.ok_or("no surviving nodes")?;
        let node = survivors
            .iter()
            .find(|n| n.port() == new_master)
            .ok_or_else(|| format!("new master {new_master} is not running"))?;
        let role = node.try_command(&["ROLE"]).map_err(|e| format!("{new_master}: ROLE: {e}"))?;
        match role.as_array().and_then(|a| a.first()).and_then(RespValue::as_str) {
            Some("master") => Ok(new_master),
            other => Err(format!("{new_master} ROLE is {other:?}")),
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Close every lifeline first so the nodes die together, then reap them.
        let mut running: Vec<Running> = self.nodes.iter().filter_map(|n| lock(&n.process).take()).collect();
        for r in &mut running {
            drop(r.child.stdin.take());
        }
        for r in &mut running {
            stop(r);
        }
        self.nodes.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster").field("ports", &self.ports()).field("dir", &self.dir).finish()
    }
}
