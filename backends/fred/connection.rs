//! How the hub makes its fred clients, and reads what a server says of itself: one builder, one `INFO` parser.
//!
//! Every client the hub opens (the subscriber and command pool of one
//! server, or of each cluster master) gets the same reconnect policy,
//! timeouts and message channel capacity, so they are made in one place.

use std::time::Duration;

use ::fred::error::Error as FredError;
use ::fred::types::Builder;
use ::fred::types::config::{Config, ReconnectPolicy, Server, ServerConfig};

/// The notification channel capacity of command connections: fred's default.
const COMMAND_CLIENT_CHANNEL_CAPACITY: usize = 32;

/// The hub's settings for every fred client it makes.
#[derive(Clone)]
pub(crate) struct ClientSettings {
    pub(crate) config: Config,
    pub(crate) reconnect_policy: ReconnectPolicy,
    pub(crate) command_timeout: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) message_channel_capacity: usize,
    pub(crate) command_connections: usize,
}

impl ClientSettings {
    /// A client builder with the hub's settings: for `server` alone if given (one cluster master), else
    /// for the configured server(s).
    pub(crate) fn builder(&self, server: Option<&Server>) -> Builder {
        let mut config = self.config.clone();
        if let Some(server) = server {
            config.server = ServerConfig::Centralized { server: server.clone() };
        }
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(self.reconnect_policy.clone())
            .with_performance_config(|perf| {
                perf.default_command_timeout = self.command_timeout;
                perf.broadcast_channel_capacity = self.message_channel_capacity;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = self.connection_timeout;
                conn.internal_command_timeout = self.connection_timeout;
            });
        builder
    }

    /// A builder for command connections: as [`builder`](Self::builder), with
    /// fred's small default notification channels. fred gives every client
    /// about nine broadcast channels (messages, reconnects, errors, ...) of
    /// the configured capacity, filled in up front; only the subscriber
    /// connection's messages need a large one, and no one reads a command
    /// connection's.
    pub(crate) fn command_builder(&self, server: Option<&Server>) -> Builder {
        let mut builder = self.builder(server);
        builder.with_performance_config(|perf| {
            perf.broadcast_channel_capacity = COMMAND_CLIENT_CHANNEL_CAPACITY;
        });
        builder
    }

    /// The seed nodes, if the configuration names a Redis Cluster.
    pub(crate) fn cluster_seeds(&self) -> Option<&[Server]> {
        match &self.config.server {
            ServerConfig::Clustered { hosts, .. } => Some(hosts),
            _ => None,
        }
    }
}

/// The value of `field` in what `INFO` returned (`field:value` lines), trimmed.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':')).map(str::trim)
}

/// The server process's identity from `INFO server`: another value means another process, whose data may differ.
pub(crate) fn run_id(info: &str) -> Option<&str> {
    info_field(info, "run_id")
}

/// Whether a command failed because its slot is served elsewhere (`MOVED`, `ASK`) or the cluster is down.
pub(crate) fn is_redirect(error: &FredError) -> bool {
    let details = error.details();
    ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"].iter().any(|prefix| details.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:7000\r\n";
        assert_eq!(run_id(info), Some("abc123"));
        assert_eq!(info_field(info, "tcp_port"), Some("7000"));
        assert_eq!(run_id("# Server\r\n"), None);
    }
}
