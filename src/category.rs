//! User-defined event categories, the `categories!` macro, and the `CategorySet` bitset filter.

use core::fmt;
use core::marker::PhantomData;

/// A small, user-defined set of event categories (at most 64).
///
/// Declare one with [`categories!`](crate::categories), which writes the enum
/// and this impl from one list of variants and wire names. Implement it by hand
/// only to customise [`from_event_type`](Category::from_event_type).
///
/// # Examples
///
/// ```
/// use ssehub::{categories, Category};
///
/// categories! {
///     pub enum Topic {
///         Billing = "billing",
///         Alerts = "alerts",
///     }
/// }
///
/// assert_eq!(Topic::Alerts.name(), "alerts");
/// assert_eq!(Topic::from_name("billing"), Some(Topic::Billing));
/// assert_eq!(Topic::ALL, &[Topic::Billing, Topic::Alerts]);
/// ```
pub trait Category: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Every category, in index order: `ALL[c.index()] == c`. At most 64.
    const ALL: &'static [Self];

    /// The name used on the wire and in `?categories=` values.
    fn name(self) -> &'static str;

    /// The position of this category in [`ALL`](Category::ALL), below 64.
    fn index(self) -> usize;

    /// The category with this wire name, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The category of an event whose envelope carries none, from its event type.
    ///
    /// Backends call this for envelopes written without a `category` field.
    /// The default takes the event type itself as a category name, then the
    /// part before its first `.` or `:` (`"ai.completed"` is `ai`).
    fn from_event_type(event_type: &str) -> Option<Self> {
        Self::from_name(event_type).or_else(|| {
            let head = event_type.split(['.', ':']).next()?;
            Self::from_name(head)
        })
    }
}

/// Declares a [`Category`] enum with its wire names in one place.
///
/// Names are checked at compile time: non-empty, at most 64 bytes, made of
/// ASCII letters, digits, `_`, `-` and `.`, and unique. At most 64 variants.
///
/// # Examples
///
/// ```
/// ssehub::categories! {
///     /// What an event is about.
///     #[derive(Default)]
///     pub enum Topic {
///         #[default]
///         Billing = "billing",
///         Alerts = "alerts",
///     }
/// }
/// assert_eq!(Topic::default(), Topic::Billing);
/// ```
///
/// A name that could not travel in a query value does not compile:
///
/// ```compile_fail
/// ssehub::categories! {
///     pub enum Bad { Spaced = "has space" }
/// }
/// ```
#[macro_export]
macro_rules! categories {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $crate::Category for $name {
            const ALL: &'static [Self] = &[ $( Self::$variant ),+ ];

            fn name(self) -> &'static str {
                match self { $( Self::$variant => $wire ),+ }
            }

            fn index(self) -> usize {
                self as usize
            }
        }

        const _: () = $crate::__private::assert_valid_names(&[ $( $wire ),+ ]);
    };
}

/// Compile-time check of the names given to [`categories!`].
#[doc(hidden)]
pub const fn assert_valid_names(names: &[&str]) {
    assert!(names.len() <= 64, "at most 64 categories");
    let mut i = 0;
    while i < names.len() {
        let name = names[i].as_bytes();
        assert!(!name.is_empty() && name.len() <= 64, "a category name has 1 to 64 bytes");
        let mut b = 0;
        while b < name.len() {
            let c = name[b];
            assert!(
                c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.',
                "a category name is made of ASCII letters, digits, '_', '-' and '.'"
            );
            b += 1;
        }
        let mut j = 0;
        while j < i {
            assert!(!bytes_eq(names[j].as_bytes(), name), "category names are unique");
            j += 1;
        }
        i += 1;
    }
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A set of categories a client subscribes to: a bitset, so the filter check is one AND.
///
/// A set is never empty: "no filter" is [`CategorySet::all`], and building a set
/// from no categories gives `all` too. Its [`Display`](fmt::Display) form is a
/// `?categories=` value that [`parse::categories`](crate::parse::categories)
/// reads back to the same set.
///
/// # Examples
///
/// ```
/// use ssehub::{CategorySet, fixture::ExampleCategory as C};
///
/// let filter = CategorySet::only(C::Ai).with(C::Security);
/// assert!(filter.contains(C::Ai));
/// assert!(!filter.contains(C::Provider));
/// assert_eq!(filter.to_string(), "ai,security");
/// assert!(CategorySet::<C>::from_iter([]).is_all());
/// ```
pub struct CategorySet<C> {
    bits: u64,
    _category: PhantomData<fn() -> C>,
}

impl<C: Category> CategorySet<C> {
    const ALL_BITS: u64 = if C::ALL.len() >= 64 { u64::MAX } else { (1u64 << C::ALL.len()) - 1 };

    const fn from_bits_unchecked(bits: u64) -> Self {
        Self { bits, _category: PhantomData }
    }

    /// Every category: no filter.
    pub const fn all() -> Self {
        Self::from_bits_unchecked(Self::ALL_BITS)
    }

    /// Just one category.
    pub fn only(category: C) -> Self {
        Self::from_bits_unchecked(Self::bit(category))
    }

    /// This set with `category` added.
    #[must_use]
    pub fn with(self, category: C) -> Self {
        Self::from_bits_unchecked(self.bits | Self::bit(category))
    }

    /// The categories in either set.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self::from_bits_unchecked(self.bits | other.bits)
    }

    /// Whether an event of `category` passes this filter.
    #[inline]
    pub fn contains(self, category: C) -> bool {
        self.bits & Self::bit(category) != 0
    }

    /// Whether this set holds every category.
    pub fn is_all(self) -> bool {
        self.bits == Self::ALL_BITS
    }

    /// How many categories the set holds.
    pub fn len(self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Always `false`: a set is never empty. Here for the `len`/`is_empty` pair.
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// The categories, in index order.
    pub fn iter(self) -> CategorySetIter<C> {
        CategorySetIter { bits: self.bits, _category: PhantomData }
    }

    /// The raw bits: bit `c.index()` is set for each category `c` in the set.
    pub fn bits(self) -> u64 {
        self.bits
    }

    /// The set with these raw bits, or `None` if they name no category or
    /// one beyond [`Category::ALL`].
    pub fn from_bits(bits: u64) -> Option<Self> {
        (bits != 0 && bits & !Self::ALL_BITS == 0).then(|| Self::from_bits_unchecked(bits))
    }

    #[inline]
    fn bit(category: C) -> u64 {
        1u64 << (category.index() & 63)
    }
}

impl<C: Category> FromIterator<C> for CategorySet<C> {
    /// The set of the given categories; [`all`](CategorySet::all) if none are given.
    fn from_iter<I: IntoIterator<Item = C>>(iter: I) -> Self {
        let bits = iter.into_iter().fold(0, |bits, c| bits | Self::bit(c));
        if bits == 0 { Self::all() } else { Self::from_bits_unchecked(bits) }
    }
}

impl<C: Category> Default for CategorySet<C> {
    /// No filter: every category.
    fn default() -> Self {
        Self::all()
    }
}

impl<C> Clone for CategorySet<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for CategorySet<C> {}
impl<C> PartialEq for CategorySet<C> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}
impl<C> Eq for CategorySet<C> {}
impl<C> core::hash::Hash for CategorySet<C> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}

impl<C: Category> fmt::Debug for CategorySet<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<C: Category> fmt::Display for CategorySet<C> {
    /// The `?categories=` value of the set: names joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, category) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(category.name())?;
        }
        Ok(())
    }
}

impl<C: Category> IntoIterator for CategorySet<C> {
    type Item = C;
    type IntoIter = CategorySetIter<C>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The categories of a [`CategorySet`], in index order.
pub struct CategorySetIter<C> {
    bits: u64,
    _category: PhantomData<fn() -> C>,
}

impl<C: Category> Iterator for CategorySetIter<C> {
    type Item = C;
    fn next(&mut self) -> Option<C> {
        while self.bits != 0 {
            let index = self.bits.trailing_zeros() as usize;
            self.bits &= self.bits - 1;
            if let Some(&category) = C::ALL.get(index) {
                return Some(category);
            }
        }
        None
    }
}

#[cfg(feature = "serde")]
impl<C: Category> serde::Serialize for CategorySet<C> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Category::name))
    }
}

#[cfg(feature = "serde")]
impl<'de, C: Category> serde::Deserialize<'de> for CategorySet<C> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = <alloc::vec::Vec<alloc::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        crate::parse::categories(names.iter().map(|n| n.as_ref())).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::ExampleCategory as C;
    use alloc::vec::Vec;

    #[test]
    fn names_that_travel_in_a_query_value_are_valid() {
        assert_valid_names(&["data_sync", "ai-2", "a.b", "X9"]);
    }

    #[test]
    #[should_panic(expected = "category names are unique")]
    fn duplicate_names_are_refused() {
        assert_valid_names(&["ai", "provider", "ai"]);
    }

    #[test]
    #[should_panic(expected = "a category name has 1 to 64 bytes")]
    fn empty_names_are_refused() {
        assert_valid_names(&[""]);
    }

    #[test]
    #[should_panic(expected = "a category name has 1 to 64 bytes")]
    fn names_over_64_bytes_are_refused() {
        assert_valid_names(&[core::str::from_utf8(&[b'a'; 65]).unwrap()]);
    }

    #[test]
    #[should_panic(expected = "a category name is made of ASCII letters")]
    fn names_with_a_comma_are_refused() {
        // A comma would split the name when it comes back in a `?categories=` value.
        assert_valid_names(&["a,b"]);
    }

    #[test]
    #[should_panic(expected = "at most 64 categories")]
    fn more_than_64_names_are_refused() {
        assert_valid_names(&["a"; 65]);
    }

    #[test]
    fn raw_bits_naming_no_category_or_one_beyond_all_are_refused() {
        assert_eq!(CategorySet::<C>::from_bits(0), None);
        assert_eq!(CategorySet::<C>::from_bits(1 << 6), None);
        assert_eq!(CategorySet::<C>::from_bits(0b11_1111), Some(CategorySet::all()));
        assert_eq!(CategorySet::<C>::from_bits(0b100), Some(CategorySet::only(C::Ai)));
    }

    #[test]
    fn a_set_iterates_in_index_order_and_is_never_empty() {
        let set = CategorySet::only(C::Security).with(C::DataSync).union(CategorySet::only(C::Ai));
        assert_eq!(set.iter().collect::<Vec<_>>(), [C::DataSync, C::Ai, C::Security]);
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty() && !set.is_all());
        assert!(CategorySet::<C>::from_iter([]).is_all());
        assert_eq!(CategorySet::<C>::default(), CategorySet::all());
    }

    #[test]
    fn event_types_map_to_the_category_they_name_or_start_with() {
        assert_eq!(C::from_event_type("portfolio"), Some(C::Portfolio));
        assert_eq!(C::from_event_type("ai.completed"), Some(C::Ai));
        assert_eq!(C::from_event_type("data_sync:started"), Some(C::DataSync));
        assert_eq!(C::from_event_type("aim.completed"), None);
        assert_eq!(C::from_event_type(""), None);
    }
}
