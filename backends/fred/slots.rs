//! Hash slots of Redis Cluster: a key's slot, sets of slots, the slot map, and `Scope`, the channels a recovery covers.
//!
//! Plain data, no I/O: the topology fills it from the cluster, the
//! dispatcher carries a `Scope` without knowing whether slots exist where it
//! runs (on one server every scope is `All`).

use ::fred::types::config::Server;
use ::fred::util::redis_keyslot;

/// Hash slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// The hash slot of a key or shard channel.
pub(crate) fn slot_of(name: &str) -> u16 {
    redis_keyslot(name.as_bytes())
}

/// Slot ranges (first, last, both included) and the master serving each, sorted by first slot.
pub(crate) type SlotMap = Vec<(u16, u16, Server)>;

/// The master serving `slot` in `map`.
pub(crate) fn master_of(map: &[(u16, u16, Server)], slot: u16) -> Option<&Server> {
    map.iter().find(|(start, end, _)| *start <= slot && slot <= *end).map(|(_, _, server)| server)
}

/// The slots whose master differs between two slot maps.
pub(crate) fn moved_slots(before: &[(u16, u16, Server)], now: &[(u16, u16, Server)]) -> SlotSet {
    let mut moved = SlotSet::new();
    for slot in 0..SLOTS as u16 {
        if master_of(before, slot) != master_of(now, slot) {
            moved.insert(slot);
        }
    }
    moved
}

/// A set of hash slots, one bit each.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SlotSet(Box<[u64; SLOTS / 64]>);

impl SlotSet {
    pub(crate) fn new() -> Self {
        Self(Box::new([0; SLOTS / 64]))
    }

    pub(crate) fn insert(&mut self, slot: u16) {
        let slot = usize::from(slot) % SLOTS;
        self.0[slot / 64] |= 1 << (slot % 64);
    }

    pub(crate) fn contains(&self, slot: u16) -> bool {
        let slot = usize::from(slot) % SLOTS;
        self.0[slot / 64] & (1 << (slot % 64)) != 0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    fn union(&mut self, other: &SlotSet) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine |= theirs;
        }
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({} slots)", self.len())
    }
}

/// Which channels a recovery covers: all, or those of some hash slots.
#[derive(Clone, Debug, Default)]
pub(crate) enum Scope {
    /// Every channel: one server, or a loss that may have hit any channel.
    #[default]
    All,
    /// The channels whose slot is in the set.
    Slots(SlotSet),
}

impl Scope {
    /// Whether `channel` is covered.
    pub(crate) fn covers(&self, channel: &str) -> bool {
        self.covers_slot(slot_of(channel))
    }

    pub(crate) fn covers_slot(&self, slot: u16) -> bool {
        match self {
            Scope::All => true,
            Scope::Slots(slots) => slots.contains(slot),
        }
    }

    /// This scope grown to cover `other` too.
    pub(crate) fn widen(&mut self, other: Scope) {
        match (&mut *self, other) {
            (Scope::All, _) => {}
            (_, Scope::All) => *self = Scope::All,
            (Scope::Slots(mine), Scope::Slots(theirs)) => mine.union(&theirs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_redis_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 0x31C3);
        assert_eq!(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
        assert_eq!(slot_of("sse:{broadcast}:live"), slot_of("sse:{broadcast}:stream"));
    }

    #[test]
    fn scopes_cover_their_slots_and_widen() {
        let mut slots = SlotSet::new();
        slots.insert(slot_of("a:{x}:live"));
        let mut scope = Scope::Slots(slots);
        assert!(scope.covers("a:{x}:stream"));
        let other = (0..).map(|n| format!("a:{{y{n}}}:live")).find(|c| !scope.covers(c)).unwrap();
        let mut more = SlotSet::new();
        more.insert(slot_of(&other));
        scope.widen(Scope::Slots(more));
        assert!(scope.covers(&other) && scope.covers("a:{x}:live"));
        scope.widen(Scope::All);
        assert!(matches!(scope, Scope::All));
        assert!(Scope::default().covers("anything"));
    }

    #[test]
    fn slot_sets_count_and_test_bits() {
        let mut set = SlotSet::new();
        assert!(set.is_empty());
        for slot in [0, 63, 64, 16383] {
            set.insert(slot);
        }
        assert_eq!(set.len(), 4);
        assert!(set.contains(16383) && set.contains(64) && !set.contains(65));
    }
}
