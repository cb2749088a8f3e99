//! Groups: audiences between one user and everyone, and the reader a subscription is for (a user and its groups).
//!
//! A [`GroupId`] names an audience of the application's choosing: an
//! organisation, a project, the watchers of one document. An event for
//! [`Audience::Group`] is published once, retained once, and delivered to
//! every subscription that reads the group.
//!
//! Membership is the server's decision: a subscription reads the groups its
//! [`Reader`] names, which the application derives from the verified session
//! (a token's claim, a database row), never from the request. Nothing a client
//! sends can add a group.

use alloc::sync::Arc;
use core::fmt;

use uuid::Uuid;

use crate::{Audience, UserId};

/// The most groups one subscription reads: [`Groups::new`] refuses more.
pub const MAX_GROUPS: usize = 64;

/// A group of users: an audience events can be published to.
///
/// Made from the application's own ids in one documented, stable way, the
/// same in every process, as [`UserId`] is:
/// - a UUID: [`from_uuid`](Self::from_uuid), or `parse` its text;
/// - an integer: [`from_u64`](Self::from_u64), the UUID whose 128 bits are the number;
/// - a string (`"org:42"`, a slug): [`from_name`](Self::from_name), the
///   UUIDv5 of its UTF-8 bytes in [`GroupId::NAMESPACE`] (Python:
///   `uuid.uuid5(namespace, name)`).
///
/// A group and a user made from the same number or name are different
/// audiences: a group's events reach only the subscriptions that read it.
///
/// # Examples
///
/// ```
/// use ssehub::GroupId;
///
/// assert_eq!(GroupId::from_u64(42).to_string(), "00000000-0000-0000-0000-00000000002a");
/// assert_eq!(GroupId::from_name("org:42"), GroupId::from_name("org:42"));
/// let parsed: GroupId = "00000000-0000-0000-0000-00000000002a".parse().unwrap();
/// assert_eq!(parsed, GroupId::from_u64(42));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
pub struct GroupId(Uuid);

crate::event::uuid_id!(
    GroupId,
    "group",
    0xa316_e007_2ea5_5b22_9d94_d2f6_4bd8_7e71,
    "a316e007-2ea5-5b22-9d94-d2f64bd87e71",
    "group"
);

impl GroupId {
    /// The 64-bit fingerprint a [`Cursor`](crate::Cursor) names the group by:
    /// FNV-1a of its 16 bytes.
    pub fn fingerprint(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.0.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }
}

/// The groups one subscription reads: at most [`MAX_GROUPS`], each once, cheap to clone.
///
/// # Examples
///
/// ```
/// use ssehub::{GroupId, Groups, MAX_GROUPS};
///
/// let team = GroupId::from_name("team:7");
/// let groups = Groups::new([team, GroupId::from_u64(1), team]).unwrap();
/// assert_eq!(groups.len(), 2);
/// assert!(groups.contains(team));
/// assert!(Groups::new((0..=MAX_GROUPS as u64).map(GroupId::from_u64)).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Groups(Option<Arc<[GroupId]>>);

impl Groups {
    /// No group.
    pub const NONE: Groups = Groups(None);

    /// These groups (repeats count once).
    ///
    /// # Errors
    ///
    /// [`TooManyGroups`] for more than [`MAX_GROUPS`] distinct groups: refused
    /// before any subscription starts.
    pub fn new(groups: impl IntoIterator<Item = GroupId>) -> Result<Self, TooManyGroups> {
        let mut list: alloc::vec::Vec<GroupId> = groups.into_iter().collect();
        list.sort_unstable();
        list.dedup();
        if list.len() > MAX_GROUPS {
            return Err(TooManyGroups { given: list.len() });
        }
        Ok(if list.is_empty() { Groups::NONE } else { Groups(Some(list.into())) })
    }

    /// The groups, in ascending order.
    pub fn as_slice(&self) -> &[GroupId] {
        self.0.as_deref().unwrap_or_default()
    }

    /// Whether `group` is among them.
    pub fn contains(&self, group: GroupId) -> bool {
        self.as_slice().binary_search(&group).is_ok()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The groups, in ascending order.
    pub fn iter(&self) -> core::iter::Copied<core::slice::Iter<'_, GroupId>> {
        self.as_slice().iter().copied()
    }
}

impl fmt::Debug for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'a> IntoIterator for &'a Groups {
    type Item = GroupId;
    type IntoIter = core::iter::Copied<core::slice::Iter<'a, GroupId>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// More than [`MAX_GROUPS`] groups for one subscription.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TooManyGroups {
    /// How many distinct groups were given.
    pub given: usize,
}

impl fmt::Display for TooManyGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a subscription reads at most {MAX_GROUPS} groups, {} were given", self.given)
    }
}

impl core::error::Error for TooManyGroups {}

/// Who a subscription is for: a user, and the groups it reads.
///
/// A [`UserId`] converts into a reader of no group, so
/// `hub.subscribe(user, filter)` and `resume(&hub, user, ...)` read the
/// user's own events and the broadcasts.
///
/// # Examples
///
/// ```
/// use ssehub::{Audience, GroupId, Groups, Reader, UserId};
///
/// let alice = UserId::from_u64(1);
/// let team = GroupId::from_name("team:7");
/// let reader = Reader::new(alice, Groups::new([team]).unwrap());
/// assert!(reader.reads(Audience::Group(team)));
/// assert!(reader.reads(Audience::User(alice)));
/// assert!(!reader.reads(Audience::Group(GroupId::from_name("team:8"))));
/// assert!(!Reader::from(alice).reads(Audience::Group(team)));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reader {
    /// The user: its own events and the broadcasts.
    pub user: UserId,
    /// The groups it reads.
    pub groups: Groups,
}

impl Reader {
    /// `user`, reading `groups` too.
    pub fn new(user: UserId, groups: Groups) -> Self {
        Self { user, groups }
    }

    /// Whether a subscription of this reader receives events for `audience`.
    pub fn reads(&self, audience: Audience) -> bool {
        match audience {
            Audience::User(user) => user == self.user,
            Audience::Broadcast => true,
            Audience::Group(group) => self.groups.contains(group),
        }
    }
}

impl From<UserId> for Reader {
    fn from(user: UserId) -> Self {
        Self { user, groups: Groups::NONE }
    }
}

impl From<&Reader> for Reader {
    fn from(reader: &Reader) -> Self {
        reader.clone()
    }
}
