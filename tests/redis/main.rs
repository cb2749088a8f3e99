//! The Redis backend (`fred` feature) on private `redis-server` processes and clusters this crate starts: the conformance suite, faults, failover, interop, costs.
//!
//! Every test starts the servers it needs through `ssehub_harness`, so the
//! whole crate runs on a machine with `redis-server` and `redis-cli`
//! installed (`bash tests/setup.sh`) and nothing running. Helpers shared by
//! the modules are in `support`.

mod support;

/// Publish batching.
mod batching;
/// Closing a hub ends every task it started.
mod close;
/// The conformance suite and 1,000 users on three-master clusters.
mod cluster;
/// A master failover and a slot migration.
mod cluster_failover;
/// The conformance suite on one server.
mod conformance;
/// One subscriber connection however many subscriptions.
mod connections;
/// Per-stream cursors across reconnects, on a server and a cluster.
mod cursor;
/// smol, async-std, `futures::executor` and tokio callers.
mod executors;
/// Lost replies, restarts, output-buffer limits, `maxmemory`, pauses.
mod faults;
/// Groups across hubs: one publish to every member, recovery.
mod groups;
/// Side by side with the JSON-envelope publisher.
mod interop;
/// Key layouts: prefixes, the cluster layout on one server.
mod layouts;
/// Bad data on channels and streams.
mod malformed;
/// Killed connections, an emptied server, retention off, overflows.
mod outages;
/// Replay work follows what it returns.
mod replay_cost;
/// Replays the script does not finish alone.
mod replay_paths;
/// Retention by age.
mod retention_age;
/// Sessions across hubs: disconnect, presence, deadlines.
mod sessions;
