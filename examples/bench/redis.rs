//! The Redis of `--backend fred`: a private redis-server (or `--redis-url`), connection counts, the hub's settings, raw fred clients and envelopes.

use ssehub_harness::redis_server;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use chrono::SecondsFormat;
use redis_server::{RedisCluster, RedisServer, RespValue, encode_command, read_resp};
use ssehub::fred::client::clients::{Client, Pool};
use ssehub::fred::client::interfaces::ClientLike;
use ssehub::fred::client::types::Builder;
use ssehub::fred::client::types::config::Config;
use ssehub::fred::{KeyLayout, RedisHub, RedisHubBuilder, Retention};
use ssehub::{Audience, Category, Event, UserId};

use crate::workload::C;
use crate::{BenchError, Result, failed};

/// How many messages fred may buffer for a raw subscriber before it lags (fred's default is 32):
/// the hub's default, so that both sides hold the same up-front memory for it.
const RAW_MESSAGE_CAPACITY: usize = 1 << 14;

/// fred's default notification channel capacity, for raw command clients (no one reads theirs), as the hub's.
const RAW_COMMAND_CHANNEL_CAPACITY: usize = 32;

/// Where the Redis of the run is, and the private server (or cluster) if the bench started one.
pub struct RedisTarget {
    /// Clients connected when the run began: others' (with `--redis-url`), not ours.
    clients_at_start: u64,
    url: String,
    host: String,
    port: u16,
    /// Every master's port: the one server's, or each cluster master's.
    ports: Vec<u16>,
    password: Option<String>,
    layout: KeyLayout,
    /// Whether hubs write presence counts.
    presence: bool,
    _server: Option<RedisServer>,
    cluster: Option<RedisCluster>,
}

impl RedisTarget {
    /// The Redis at `url`, or a private redis-server started now (stopped when this is dropped).
    pub fn new(url: Option<String>) -> Result<Self> {
        let (url, server) = match url {
            Some(url) => (url, None),
            None => {
                eprintln!("[bench] starting a private redis-server");
                let server = RedisServer::start();
                (server.url(), Some(server))
            }
        };
        let (host, port, password) = parse_url(&url)?;
        let mut target = Self {
            clients_at_start: 0,
            url,
            host,
            port,
            ports: vec![port],
            password,
            layout: KeyLayout::standalone(),
            presence: true,
            _server: server,
            cluster: None,
        };
        target.settle()?;
        Ok(target)
    }

    /// A private Redis Cluster of `masters` masters (no replicas), started now and stopped when this is
    /// dropped; hubs use the cluster key layout.
    pub fn new_cluster(masters: usize) -> Result<Self> {
        eprintln!("[bench] starting a private Redis Cluster of {masters} masters");
        let cluster = RedisCluster::start(masters, 0);
        let ports = cluster.master_ports();
        let mut target = Self {
            clients_at_start: 0,
            url: cluster.url(),
            host: "127.0.0.1".into(),
            port: ports[0],
            ports,
            password: None,
            layout: KeyLayout::cluster(),
            presence: true,
            _server: None,
            cluster: Some(cluster),
        };
        target.settle()?;
        Ok(target)
    }

    /// Whether the target is a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Notes the clients connected now and names the server.
    fn settle(&mut self) -> Result<()> {
        let target = self;
        target.clients_at_start = target.client_count()?;
        let version = target.command(&["INFO", "server"])?;
        if let Some(line) =
            version.as_str().and_then(|info| info.lines().find(|l| l.starts_with("redis_version:")))
        {
            eprintln!("[bench] Redis at {}:{} ({})", target.host, target.port, line.trim());
        }
        Ok(())
    }

    /// Runs one command on a fresh plain connection (to the first master, on a cluster).
    pub fn command(&self, args: &[&str]) -> Result<RespValue> {
        self.command_on(self.port, args)
    }

    /// Runs one command on a fresh plain connection to the master at `port`.
    pub fn command_on(&self, port: u16, args: &[&str]) -> Result<RespValue> {
        let io = |e: std::io::Error| failed(format!("Redis at {}:{port}: {e}", self.host));
        let stream = TcpStream::connect((self.host.as_str(), port)).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
        let mut reader = BufReader::new(stream);
        if let Some(password) = &self.password {
            reader.get_mut().write_all(&encode_command(&["AUTH", password.as_str()])).map_err(io)?;
            let reply = read_resp(&mut reader).map_err(io)?;
            if reply.is_error() {
                return Err(failed(format!("AUTH: {reply}")));
            }
        }
        reader.get_mut().write_all(&encode_command(args)).map_err(io)?;
        let reply = read_resp(&mut reader).map_err(io)?;
        match reply.as_error() {
            Some(error) => Err(failed(format!("{}: {error}", args.join(" ")))),
            None => Ok(reply),
        }
    }

    /// Clients connected to the server (to every master, on a cluster), not counting the connections used to ask.
    pub fn client_count(&self) -> Result<u64> {
        let mut count = 0;
        for &port in &self.ports {
            let list = self.command_on(port, &["CLIENT", "LIST"])?;
            let text = list.as_str().ok_or_else(|| failed(format!("CLIENT LIST replied {list}")))?;
            count += text.lines().filter(|line| !line.trim().is_empty()).count().saturating_sub(1) as u64;
        }
        Ok(count)
    }

    /// Every master's port.
    pub fn master_ports(&self) -> &[u16] {
        &self.ports
    }

    /// Waits (up to 5 s) until the connections of earlier rounds are closed,
    /// so that the next count sees only the side being measured; returns the
    /// clients connected now.
    pub async fn settled_client_count(&self) -> Result<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let count = self.client_count()?;
            if count <= self.clients_at_start || std::time::Instant::now() >= deadline {
                if count > self.clients_at_start {
                    eprintln!(
                        "[bench] {count} Redis clients still connected, {} at start",
                        self.clients_at_start
                    );
                }
                return Ok(count);
            }
            crate::workload::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's `used_memory` (`INFO memory`), in bytes.
    pub fn used_memory(&self) -> Result<u64> {
        let reply = self.command(&["INFO", "memory"])?;
        reply
            .as_str()
            .and_then(|info| info.lines().find_map(|line| line.strip_prefix("used_memory:")))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| failed(format!("INFO memory replied {reply}")))
    }

    /// One `field:value` of an `INFO` section, as a number.
    pub fn info_number(&self, section: &str, field: &str) -> Result<f64> {
        let info = self.command(&["INFO", section])?;
        let text = info.as_str().ok_or_else(|| failed(format!("INFO {section} replied {info}")))?;
        text.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| failed(format!("INFO {section} has no {field}")))
    }

    /// `calls` and `usec` of one command in `INFO commandstats` (zeros for a command not run).
    pub fn command_stats(&self, command: &str) -> Result<(f64, f64)> {
        let info = self.command(&["INFO", "commandstats"])?;
        let text = info.as_str().ok_or_else(|| failed(format!("INFO commandstats replied {info}")))?;
        let Some(stats) = text.lines().find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:")))
        else {
            return Ok((0.0, 0.0));
        };
        let field = |name: &str| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0.0)
        };
        Ok((field("calls"), field("usec")))
    }

    /// Redis CPU seconds so far, user and system.
    pub fn cpu_seconds(&self) -> Result<f64> {
        Ok(self.info_number("cpu", "used_cpu_user")? + self.info_number("cpu", "used_cpu_sys")?)
    }

    /// `XLEN key`.
    pub fn stream_len(&self, key: &str) -> Result<u64> {
        let reply = self.command(&["XLEN", key])?;
        reply.as_int().map(|n| n as u64).ok_or_else(|| failed(format!("XLEN replied {reply}")))
    }

    /// The Redis URL, for a server process of its own.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This target with hubs writing presence counts, or not.
    pub fn with_presence(mut self, presence: bool) -> Self {
        self.presence = presence;
        self
    }

    /// A hub builder for this Redis, running on the caller's runtime.
    pub fn hub_builder(&self) -> Result<RedisHubBuilder<C>> {
        let builder = RedisHub::<C>::builder(&self.url)?.key_layout(self.layout.clone());
        Ok(if self.presence { builder } else { builder.presence_ttl(None) })
    }

    /// Retention of `events` per audience, for an hour.
    pub fn retention(&self, events: usize) -> Retention {
        Retention::new(events as u64, Duration::from_secs(3600))
    }

    /// The channel the hub uses for `user`.
    pub fn user_channel(&self, user: UserId) -> String {
        self.layout.channel(Audience::User(user))
    }

    /// The key layout the hub uses.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The stream the hub retains `user`'s events in.
    pub fn user_stream(&self, user: UserId) -> String {
        self.layout.stream(Audience::User(user))
    }

    fn builder(&self, channel_capacity: usize) -> Result<Builder> {
        let config =
            Config::from_url(&self.url).map_err(|e| BenchError::Usage(format!("--redis-url: {e}")))?;
        let mut builder = Builder::from_config(config);
        builder.with_performance_config(|performance| {
            performance.broadcast_channel_capacity = channel_capacity;
        });
        Ok(builder)
    }

    /// A connected raw fred client for SUBSCRIBE, its message buffer as large as the hub's.
    pub async fn raw_subscriber(&self) -> Result<Client> {
        let client =
            self.builder(RAW_MESSAGE_CAPACITY)?.build().map_err(|e| failed(format!("fred client: {e}")))?;
        client.init().await.map_err(|e| failed(format!("fred connect: {e}")))?;
        Ok(client)
    }

    /// A connected raw fred pool of two connections for commands, as many as the hub's.
    pub async fn raw_commands(&self) -> Result<Pool> {
        let pool = self
            .builder(RAW_COMMAND_CHANNEL_CAPACITY)?
            .build_pool(2)
            .map_err(|e| failed(format!("fred pool: {e}")))?;
        pool.init().await.map_err(|e| failed(format!("fred connect: {e}")))?;
        Ok(pool)
    }
}

/// `redis://[[user]:password@]host[:port][/db]` into host, port and password.
fn parse_url(url: &str) -> Result<(String, u16, Option<String>)> {
    let bad =
        || BenchError::Usage(format!("--redis-url {url:?}: expected redis://[:password@]host[:port][/db]"));
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let rest = rest.split('/').next().unwrap_or_default();
    let (password, address) = match rest.rsplit_once('@') {
        Some((credentials, address)) => {
            let password = credentials.split_once(':').map_or(credentials, |(_, p)| p);
            (Some(password.to_string()).filter(|p| !p.is_empty()), address)
        }
        None => (None, rest),
    };
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
        None => (address, 6379),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port, password))
}

/// The channel message the hub publishes for `event`: its JSON envelope with a
/// stream id, byte for byte the layout (and so the size) of the hub's own.
pub fn envelope(event: &Event<C>) -> String {
    let mut message = foreign_envelope(event);
    message.pop();
    message.push_str(&format!(",\"stream_id\":\"{}-0\"}}", event.occurred_at().timestamp_millis()));
    message
}

/// The JSON envelope of `event` as another publisher writes it, without a stream id.
pub fn foreign_envelope(event: &Event<C>) -> String {
    let user = match event.audience() {
        Audience::User(user) => format!("\"{user}\""),
        Audience::Broadcast | Audience::Group(_) => "null".into(),
    };
    format!(
        r#"{{"event_id":"{}","event_type":"{}","user_id":{user},"category":"{}","data":{},"occurred_at":"{}"}}"#,
        event.id(),
        event.event_type(),
        event.category().name(),
        event.data(),
        event.occurred_at().to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}
