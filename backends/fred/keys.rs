//! `KeyLayout`: the Redis channel and stream names of each audience, standalone or cluster.

use std::fmt;
use std::sync::Arc;

use crate::{Audience, EventId, GroupId, UserId};

/// How a layout delivers live events: plain or sharded pub/sub.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum PubSubKind {
    /// `SUBSCRIBE` / `PUBLISH`: one server, or a cluster that broadcasts every message to every node.
    Plain,
    /// `SSUBSCRIBE` / `SPUBLISH`: each channel lives on the node that owns its hash slot.
    Sharded,
}

/// The Redis names ssehub reads and writes: a pub/sub channel and a stream per audience.
///
/// Two shapes:
///
/// | audience  | [`standalone`](KeyLayout::standalone) (default) | [`cluster`](KeyLayout::cluster) |
/// |-----------|--------------------------|-------------------------|
/// | user live | `sse:user:{id}`          | `sse:{<id>}:live`       |
/// | user history | `sse:stream:user:{id}` | `sse:{<id>}:stream`   |
/// | broadcast live | `sse:broadcast`     | `sse:{broadcast}:live`  |
/// | broadcast history | `sse:stream:broadcast` | `sse:{broadcast}:stream` |
/// | group live | `sse:group:{id}`        | `sse:{g:<id>}:live`     |
/// | group history | `sse:stream:group:{id}` | `sse:{g:<id>}:stream` |
///
/// (`{id}` is the hyphenated user or group id; in the cluster shape the braces are
/// literal, a hash tag, so each audience's channel and stream share one slot
/// and one Lua script can write both.) The standalone shape is the one of the
/// existing JSON-envelope publishers, so ssehub can serve their events side by
/// side with them. The cluster shape uses sharded pub/sub.
///
/// # Examples
///
/// ```
/// use ssehub::fred::{KeyLayout, PubSubKind};
/// use ssehub::{Audience, UserId};
///
/// let user: UserId = "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11".parse().unwrap();
/// let layout = KeyLayout::standalone();
/// assert_eq!(layout.channel(Audience::User(user)), "sse:user:5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11");
/// assert_eq!(layout.stream(Audience::Broadcast), "sse:stream:broadcast");
/// assert_eq!(layout.audience_of_channel("sse:broadcast"), Some(Audience::Broadcast));
///
/// let cluster = KeyLayout::cluster_with_prefix("app").unwrap();
/// assert_eq!(cluster.stream(Audience::User(user)), "app:{5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11}:stream");
/// assert_eq!(cluster.pubsub_kind(), PubSubKind::Sharded);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    prefix: Arc<str>,
    shape: Shape,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Shape {
    Standalone,
    Cluster,
}

/// Where the marker of a stored event lives (see [`KeyLayout::publish_marker`]).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum PublishMarker {
    /// A key of its own, holding the event's entry id and expiring on its own.
    Key(String),
    /// A field of a hash shared with other events' markers, named by the event id and holding its entry id.
    Field {
        /// The hash.
        hash: String,
        /// The field: the event id.
        field: String,
    },
}

impl PublishMarker {
    /// The key the marker lives in: its own, or the hash.
    pub fn key(&self) -> &str {
        match self {
            Self::Key(key) => key,
            Self::Field { hash, .. } => hash,
        }
    }
}

/// The longest key prefix a [`KeyLayout`] accepts, in bytes.
pub const MAX_PREFIX_BYTES: usize = 64;

impl KeyLayout {
    /// The default layout: `sse:user:{id}`, `sse:broadcast`, `sse:stream:user:{id}`, `sse:stream:broadcast`.
    pub fn standalone() -> Self {
        Self { prefix: Arc::from("sse"), shape: Shape::Standalone }
    }

    /// The standalone layout with `prefix` in place of `sse`.
    ///
    /// # Errors
    ///
    /// A prefix that is empty, longer than [`MAX_PREFIX_BYTES`], or holds
    /// anything but ASCII letters, digits, `_`, `-`, `.` and `:`.
    pub fn standalone_with_prefix(prefix: &str) -> Result<Self, InvalidPrefix> {
        Ok(Self { prefix: check_prefix(prefix)?, shape: Shape::Standalone })
    }

    /// The cluster layout: `sse:{<id>}:live`, `sse:{<id>}:stream`, `sse:{broadcast}:live`, `sse:{broadcast}:stream`.
    pub fn cluster() -> Self {
        Self { prefix: Arc::from("sse"), shape: Shape::Cluster }
    }

    /// The cluster layout with `prefix` in place of `sse`.
    ///
    /// # Errors
    ///
    /// As for [`standalone_with_prefix`](KeyLayout::standalone_with_prefix).
    pub fn cluster_with_prefix(prefix: &str) -> Result<Self, InvalidPrefix> {
        Ok(Self { prefix: check_prefix(prefix)?, shape: Shape::Cluster })
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Plain or sharded pub/sub.
    pub fn pubsub_kind(&self) -> PubSubKind {
        match self.shape {
            Shape::Standalone => PubSubKind::Plain,
            Shape::Cluster => PubSubKind::Sharded,
        }
    }

    /// The pub/sub channel live events of `audience` travel on.
    pub fn channel(&self, audience: Audience) -> String {
        let p = &self.prefix;
        match (self.shape, audience) {
            (Shape::Standalone, Audience::User(user)) => format!("{p}:user:{user}"),
            (Shape::Standalone, Audience::Broadcast) => format!("{p}:broadcast"),
            (Shape::Standalone, Audience::Group(group)) => format!("{p}:group:{group}"),
            (Shape::Cluster, Audience::User(user)) => format!("{p}:{{{user}}}:live"),
            (Shape::Cluster, Audience::Broadcast) => format!("{p}:{{broadcast}}:live"),
            (Shape::Cluster, Audience::Group(group)) => format!("{p}:{{g:{group}}}:live"),
        }
    }

    /// The pub/sub channel of the hubs' control messages: every hub sharing
    /// the layout subscribes to it, and [`disconnect`](crate::EventSource::disconnect)
    /// publishes `{"disconnect":"<user id>"}` on it (`sse:control`; on a
    /// cluster `sse:{control}:live`, one slot of its own).
    pub fn control_channel(&self) -> String {
        let p = &self.prefix;
        match self.shape {
            Shape::Standalone => format!("{p}:control"),
            Shape::Cluster => format!("{p}:{{control}}:live"),
        }
    }

    /// The sorted set of the hubs counting presence (member: a hub id; score:
    /// when its counts expire, Unix ms): `sse:presence:hubs`, on a cluster
    /// `sse:{presence}:hubs`.
    pub fn presence_hubs(&self) -> String {
        format!("{}:hubs", self.presence_prefix())
    }

    /// The hash of one hub's presence counts (field: a user id; value: the
    /// streams it has open on that hub): `sse:presence:hub:<hub id>`, on a
    /// cluster in the `{presence}` slot beside [`presence_hubs`](Self::presence_hubs).
    pub fn presence_of_hub(&self, hub: &str) -> String {
        format!("{}:hub:{hub}", self.presence_prefix())
    }

    fn presence_prefix(&self) -> String {
        let p = &self.prefix;
        match self.shape {
            Shape::Standalone => format!("{p}:presence"),
            Shape::Cluster => format!("{p}:{{presence}}"),
        }
    }

    /// The stream that retains the events of `audience`.
    pub fn stream(&self, audience: Audience) -> String {
        let p = &self.prefix;
        match (self.shape, audience) {
            (Shape::Standalone, Audience::User(user)) => format!("{p}:stream:user:{user}"),
            (Shape::Standalone, Audience::Broadcast) => format!("{p}:stream:broadcast"),
            (Shape::Standalone, Audience::Group(group)) => format!("{p}:stream:group:{group}"),
            (Shape::Cluster, Audience::User(user)) => format!("{p}:{{{user}}}:stream"),
            (Shape::Cluster, Audience::Broadcast) => format!("{p}:{{broadcast}}:stream"),
            (Shape::Cluster, Audience::Group(group)) => format!("{p}:{{g:{group}}}:stream"),
        }
    }

    /// Where a stored event leaves its marker for a while, so that publishing it again stores nothing twice.
    ///
    /// The publish scripts write it (the event's entry id, kept for
    /// [`publish_dedupe_window`](super::RedisHubBuilder::publish_dedupe_window))
    /// when they store the event, and a later call for the same event id (a retry
    /// after a lost reply) finds it and returns that entry id instead of adding
    /// the event again.
    ///
    /// In the standalone layout the marker of a UUIDv7 event id is a field of
    /// one hash per second of the ids' time (`sse:published:second:<unix
    /// second>`, the field named by the event id): one `HMGET` and one `HSET`
    /// per batch of events instead of a key per event, and the hash expires a
    /// window after its last write, so marker memory stays level (within a
    /// second's worth) under a steady load. Any other event id gets a key of
    /// its own (`sse:published:<event id>`). In the cluster layout every
    /// marker is a key of its own carrying the audience's hash tag, so it lives
    /// in the slot of the stream it guards.
    pub fn publish_marker(&self, audience: Audience, event: EventId) -> PublishMarker {
        match (self.shape, event.timestamp_millis()) {
            (Shape::Standalone, Some(millis)) => PublishMarker::Field {
                hash: format!("{}:published:second:{}", self.prefix, millis / 1000),
                field: event.to_string(),
            },
            _ => PublishMarker::Key(self.publish_marker_key(audience, event)),
        }
    }

    /// The marker key of its own an event gets where its marker is not a hash field (and in every
    /// cluster layout, whose scripts take markers as keys only).
    pub(crate) fn publish_marker_key(&self, audience: Audience, event: EventId) -> String {
        let p = &self.prefix;
        match (self.shape, audience) {
            (Shape::Standalone, _) => format!("{p}:published:{event}"),
            (Shape::Cluster, Audience::User(user)) => format!("{p}:{{{user}}}:published:{event}"),
            (Shape::Cluster, Audience::Broadcast) => format!("{p}:{{broadcast}}:published:{event}"),
            (Shape::Cluster, Audience::Group(group)) => format!("{p}:{{g:{group}}}:published:{event}"),
        }
    }

    /// The key that orders stream entries across audiences, where the layout has one.
    ///
    /// In the standalone layout (`sse:order`) the publish script draws every
    /// stream's entry ids from it, so ids order a user's events and the
    /// broadcasts exactly as published. The cluster layout has none: one key
    /// cannot share a slot with every stream. There entry ids come from a
    /// hybrid clock (see [Redis Cluster](super#redis-cluster)).
    pub fn order_key(&self) -> Option<String> {
        match self.shape {
            Shape::Standalone => Some(format!("{}:order", self.prefix)),
            Shape::Cluster => None,
        }
    }

    /// The audience whose channel is `channel`, if it is one of this layout's.
    ///
    /// Only the exact names [`channel`](KeyLayout::channel) makes are
    /// recognised (a user id in its hyphenated lowercase form), so no crafted
    /// name maps to another user's channel.
    pub fn audience_of_channel(&self, channel: &str) -> Option<Audience> {
        let rest = channel.strip_prefix(&*self.prefix)?.strip_prefix(':')?;
        let id_part = match self.shape {
            Shape::Standalone => {
                if rest == "broadcast" {
                    return Some(Audience::Broadcast);
                }
                rest.strip_prefix("user:").or_else(|| rest.strip_prefix("group:"))?
            }
            Shape::Cluster => {
                let tagged = rest.strip_suffix(":live")?.strip_prefix('{')?.strip_suffix('}')?;
                if tagged == "broadcast" {
                    return Some(Audience::Broadcast);
                }
                tagged.strip_prefix("g:").unwrap_or(tagged)
            }
        };
        let is_group = match self.shape {
            Shape::Standalone => rest.starts_with("group:"),
            Shape::Cluster => rest.starts_with("{g:"),
        };
        let uuid: uuid::Uuid = crate::parse::uuid(id_part).ok()?;
        // The parser trims whitespace and accepts upper case; the channel must be the exact name.
        if uuid.hyphenated().to_string() != id_part {
            return None;
        }
        Some(if is_group {
            Audience::Group(GroupId::from_uuid(uuid))
        } else {
            Audience::User(UserId::from_uuid(uuid))
        })
    }
}

impl Default for KeyLayout {
    /// [`KeyLayout::standalone`].
    fn default() -> Self {
        Self::standalone()
    }
}

impl fmt::Debug for KeyLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLayout").field("prefix", &self.prefix).field("shape", &self.shape).finish()
    }
}

fn check_prefix(prefix: &str) -> Result<Arc<str>, InvalidPrefix> {
    let valid = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_BYTES
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if valid { Ok(Arc::from(prefix)) } else { Err(InvalidPrefix { _private: () }) }
}

/// A key prefix [`KeyLayout`] refuses: empty, too long, or with characters outside `[A-Za-z0-9_.:-]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPrefix {
    _private: (),
}

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid key prefix: 1 to {MAX_PREFIX_BYTES} bytes of ASCII letters, digits, '_', '-', '.' and ':'"
        )
    }
}

impl std::error::Error for InvalidPrefix {}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        "5f0c1f7e-2a43-4c1b-9d8e-0b6b8f3c2a11".parse().unwrap()
    }

    #[test]
    fn standalone_names_match_the_envelope_publishers_layout() {
        let l = KeyLayout::standalone();
        let u = user();
        assert_eq!(l.channel(Audience::User(u)), format!("sse:user:{u}"));
        assert_eq!(l.channel(Audience::Broadcast), "sse:broadcast");
        assert_eq!(l.stream(Audience::User(u)), format!("sse:stream:user:{u}"));
        assert_eq!(l.stream(Audience::Broadcast), "sse:stream:broadcast");
        assert_eq!(l.pubsub_kind(), PubSubKind::Plain);
        assert_eq!(l.order_key().as_deref(), Some("sse:order"));
    }

    #[test]
    fn cluster_names_share_one_hash_tag_per_audience() {
        let l = KeyLayout::cluster();
        let u = user();
        assert_eq!(l.channel(Audience::User(u)), format!("sse:{{{u}}}:live"));
        assert_eq!(l.stream(Audience::User(u)), format!("sse:{{{u}}}:stream"));
        assert_eq!(l.channel(Audience::Broadcast), "sse:{broadcast}:live");
        assert_eq!(l.stream(Audience::Broadcast), "sse:{broadcast}:stream");
    }

    #[test]
    fn publish_markers_share_their_streams_hash_tag() {
        let (u, e) = (user(), EventId::new());
        let l = KeyLayout::cluster();
        assert_eq!(
            l.publish_marker(Audience::User(u), e),
            PublishMarker::Key(format!("sse:{{{u}}}:published:{e}"))
        );
        assert_eq!(
            l.publish_marker(Audience::Broadcast, e),
            PublishMarker::Key(format!("sse:{{broadcast}}:published:{e}"))
        );
    }

    #[test]
    fn standalone_markers_of_uuid_v7_ids_are_fields_of_one_hash_per_second() {
        let (u, l) = (user(), KeyLayout::standalone());
        // 2024-06-01T10:00:00.123Z, and the same second 0.8 s later.
        let early =
            EventId::from_uuid(uuid::Uuid::parse_str("018fd33d-e51b-7000-8000-000000000001").unwrap());
        let late = EventId::from_uuid(uuid::Uuid::parse_str("018fd33d-e83b-7000-8000-000000000002").unwrap());
        assert_eq!(early.timestamp_millis(), Some(1_717_236_000_027));
        let hash = "sse:published:second:1717236000".to_string();
        assert_eq!(
            l.publish_marker(Audience::User(u), early),
            PublishMarker::Field { hash: hash.clone(), field: early.to_string() }
        );
        assert_eq!(
            l.publish_marker(Audience::Broadcast, late),
            PublishMarker::Field { hash, field: late.to_string() }
        );
        let v4 = EventId::from_uuid(uuid::Uuid::parse_str("9f1c2f4e-5a8b-4c3d-9e2f-1a2b3c4d5e6f").unwrap());
        assert_eq!(
            l.publish_marker(Audience::User(u), v4),
            PublishMarker::Key(format!("sse:published:{v4}"))
        );
    }

    #[test]
    fn channel_names_map_back_to_their_audience_only_when_exact() {
        for l in [KeyLayout::standalone(), KeyLayout::cluster()] {
            let u = user();
            assert_eq!(l.audience_of_channel(&l.channel(Audience::User(u))), Some(Audience::User(u)));
            assert_eq!(l.audience_of_channel(&l.channel(Audience::Broadcast)), Some(Audience::Broadcast));
            let upper = l.channel(Audience::User(u)).to_uppercase();
            assert_eq!(l.audience_of_channel(&upper), None);
            assert_eq!(l.audience_of_channel(&l.stream(Audience::User(u))), None);
            assert_eq!(l.audience_of_channel("other:user:x"), None);
        }
        let l = KeyLayout::standalone();
        assert_eq!(l.audience_of_channel(&format!("sse:user: {}", user())), None);
    }

    #[test]
    fn prefixes_with_braces_or_spaces_are_refused() {
        assert!(KeyLayout::standalone_with_prefix("").is_err());
        assert!(KeyLayout::standalone_with_prefix("a b").is_err());
        assert!(KeyLayout::cluster_with_prefix("a{b}").is_err());
        assert!(KeyLayout::cluster_with_prefix(&"x".repeat(65)).is_err());
        assert_eq!(KeyLayout::standalone_with_prefix("app:v2").unwrap().prefix(), "app:v2");
    }
}
