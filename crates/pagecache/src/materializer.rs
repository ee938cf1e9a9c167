//! The user's side of a page: what a fragment is, how it is stored, how a chain merges.

/// What a page is made of, supplied by the layer above (a tree node, a key range, a queue
/// segment).
///
/// A page is a chain of fragments: a base (written by [`PageCache::allocate`] or
/// [`PageCache::replace`]) followed by deltas ([`PageCache::link`]). The cache never looks
/// inside a fragment; it stores the bytes [`Materializer::encode`] produces, hands them back to
/// [`Materializer::decode`] after a restart or an eviction, and asks
/// [`Materializer::merge`] for the page's value.
///
/// The materializer may hold state (a comparator, a schema), so every method takes `&self`.
/// It is shared by every thread: keep it cheap to call and free of locks.
///
/// [`PageCache::allocate`]: crate::PageCache::allocate
/// [`PageCache::replace`]: crate::PageCache::replace
/// [`PageCache::link`]: crate::PageCache::link
pub trait Materializer: Send + Sync + 'static {
    /// One fragment of a page, and also the merged value of a page (a merge of a chain is a
    /// fragment that can serve as a new base).
    type Fragment: Clone + Send + Sync + 'static;

    /// Appends the bytes of `fragment` to `out`. The encoding is the materializer's own; it
    /// must be readable by [`Materializer::decode`] after any restart, so treat it as an
    /// on-disk format (fixed-width little-endian integers, a version byte if it may change).
    fn encode(&self, fragment: &Self::Fragment, out: &mut Vec<u8>);

    /// Reads back a fragment that [`Materializer::encode`] wrote. The bytes come from disk:
    /// anything unexpected must be a [`DecodeError`], never a panic.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Fragment, DecodeError>;

    /// Merges a page's chain, oldest first (the base, then each delta in the order they were
    /// linked), into one fragment: the page's value. A chain of one fragment merges to (a clone
    /// of) that fragment. The cache also uses the result as a new base when it consolidates a
    /// long chain or relocates a page out of a segment being cleaned, so `merge` of a merged
    /// value must be that value, and merging a merged value with later deltas must give what
    /// merging the whole chain gives.
    ///
    /// A resident page keeps only its merged value in memory, so every `link` to it calls
    /// `merge(&[value, delta])` once (the work the next read would otherwise do): keep it
    /// proportional to the value's size.
    fn merge(&self, chain: &[&Self::Fragment]) -> Self::Fragment;

    /// Bytes `fragment` keeps resident in memory, charged against the cache budget.
    fn size_in_bytes(&self, fragment: &Self::Fragment) -> usize;
}

/// Why [`Materializer::decode`] refused bytes read from disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// What was wrong with the bytes.
    pub reason: String,
}

impl DecodeError {
    /// A decode error saying `reason`.
    pub fn new(reason: impl Into<String>) -> DecodeError {
        DecodeError {
            reason: reason.into(),
        }
    }
}
