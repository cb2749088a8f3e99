//! The Lua scripts the hub runs, each one the shared prelude (`prelude.lua`) followed by its own body.
//!
//! Redis runs a script as one atomic step, so each publish stores and
//! announces its events together. The helpers every script needs (entry id
//! parsing and formatting, the server's clock) are written once, in the
//! prelude, and concatenated in front of each script at compile time.

use ::fred::types::scripts::Script;

/// Stores and publishes one event (cluster layouts): `XADD` with the hybrid clock's id, trimming, expiry, `SPUBLISH`.
const PUBLISH: &str = concat!(include_str!("prelude.lua"), include_str!("publish.lua"));

/// Stores and publishes a batch of events (standalone layouts), every id drawn from the order key.
const PUBLISH_BATCH: &str = concat!(include_str!("prelude.lua"), include_str!("publish_batch.lua"));

/// Stores and publishes a batch of events on one cluster master: `publish.lua` as a function, run per event.
const PUBLISH_CLUSTER_BATCH: &str = concat!(
    include_str!("prelude.lua"),
    "local function publish_one(KEYS, ARGV)\n",
    include_str!("publish.lua"),
    "\nend\n",
    include_str!("publish_cluster_batch.lua")
);

/// Reads the server's clock and the last entry id given out: a consistent cut of several streams.
const HORIZON: &str = concat!(include_str!("prelude.lua"), include_str!("horizon.lua"));

/// A replay's reads: locates an event id in one or two streams, reads what followed it, says what each dropped.
const REPLAY: &str =
    concat!(include_str!("prelude.lua"), include_str!("trim_info.lua"), include_str!("replay.lua"));

/// A replay's reads after a cursor: each stream after its own position, and what each holds.
const READ_AFTER: &str =
    concat!(include_str!("prelude.lua"), include_str!("trim_info.lua"), include_str!("read_after.lua"));

/// Writes one hub's presence counts (or removes them when it leaves).
const PRESENCE: &str = include_str!("presence.lua");

/// Reads presence across hubs: one user's streams, or the users online.
const PRESENCE_QUERY: &str = include_str!("presence_query.lua");

/// The presence write script.
pub(crate) fn presence() -> Script {
    Script::from_lua(PRESENCE)
}

/// The presence query script.
pub(crate) fn presence_query() -> Script {
    Script::from_lua(PRESENCE_QUERY)
}

/// The one-event publish script.
pub(crate) fn publish() -> Script {
    Script::from_lua(PUBLISH)
}

/// The batch publish script.
pub(crate) fn publish_batch() -> Script {
    Script::from_lua(PUBLISH_BATCH)
}

/// The cluster batch publish script.
pub(crate) fn publish_cluster_batch() -> Script {
    Script::from_lua(PUBLISH_CLUSTER_BATCH)
}

/// The clock script.
pub(crate) fn horizon() -> Script {
    Script::from_lua(HORIZON)
}

/// The replay script.
pub(crate) fn replay() -> Script {
    Script::from_lua(REPLAY)
}

/// The script of a replay after a cursor.
pub(crate) fn read_after() -> Script {
    Script::from_lua(READ_AFTER)
}
