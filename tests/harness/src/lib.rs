//! Test harness shared by ssehub's test crates and its bench: private Redis servers and clusters, a RESP client, fault proxies, an HTTP client and bounded waits.
//!
//! Not published; a dev-dependency of the workspace's crates only.
//!
//! * [`redis_server`]: private, throwaway `redis-server` processes
//!   (standalone and cluster), killed with the test process whatever ends it.
//! * [`resp`]: a blocking RESP2 client on the `redis-protocol` codec, for
//!   checks made from tests (`CLIENT LIST`, `PUBSUB NUMSUB`, `XRANGE`, ...).
//! * [`reply_cutter`]: a TCP proxy that drops a connection after Redis ran a
//!   script and before its reply reaches the client.
//! * [`demo_process`]: the demo binary as a child process on a free port.
//! * [`http_client`]: a raw HTTP/1.1 client that reads SSE bodies chunk by chunk.
//! * [`wait`]: `within`, `eventually`, `wait_until`: waits on events and
//!   conditions, bounded so a hang fails the test.

pub mod demo_process;
pub mod http_client;
pub mod redis_server;
pub mod reply_cutter;
pub mod resp;
pub mod wait;
