//! A page's entry in the table: its chain's disk locations and what of it is in memory,
//! replaced whole by one CAS.
//!
//! An entry is immutable once installed. Every change (a link, a new base, a free, a page-in,
//! an eviction, a relocation) builds a new entry and installs it with one CAS on the page's
//! slot, and the old entry is retired through the epoch, which frees it once no reader can
//! hold it. A reader therefore sees one consistent chain, never a mix.
//!
//! What an entry keeps in memory ([`Resident`]) is, most of the time, the page's **merged
//! value**: the one thing a read returns. A link over a page whose merged value is resident
//! merges the new delta onto it at once (the delta's bytes go to the log as a delta record;
//! in memory only the merged value is kept). This is the cost the next read would pay anyway,
//! and it buys three things that profiles asked for:
//!
//! * a read of a resident page is one entry and one value, whatever the chain's length;
//! * a page holds one allocation of user data, not one per fragment plus cached merges;
//! * consolidation and relocation find the merged value ready and drop one small entry.
//!
//! Individual fragments are kept only when there is no merged value to fold them into: a link
//! over a page that was evicted keeps its delta (it may not be durable yet, and a read must
//! not wait for the log), and the next read pages in the rest and merges.
//!
//! The user-visible [`Version`] is a counter in the entry that only writes bump: an eviction,
//! a page-in or a relocation installs a new entry with the same version, so it never makes a
//! user's CAS fail.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_epoch::{Guard, Owned, Shared};
use iobuf::{Location, Lsn};

/// A page's version: what [`crate::PageCache::link`], [`crate::PageCache::replace`] and
/// [`crate::PageCache::free`] compare against. It changes with every write to the page
/// (including across a free and a reallocation of the same id), never on eviction or
/// cleaning. Versions are not persisted: read a page again after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub(crate) u64);

impl Version {
    /// The number inside (for printing and tests).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A decoded value in memory and what it is charged against the cache budget.
pub(crate) struct Charged<T> {
    pub(crate) value: T,
    pub(crate) size_bytes: u64,
}

impl<T: Clone> Clone for Charged<T> {
    fn clone(&self) -> Self {
        Charged {
            value: self.value.clone(),
            size_bytes: self.size_bytes,
        }
    }
}

/// What of a live page is in memory.
pub(crate) enum Resident<F> {
    /// Nothing: a read pages in every fragment.
    Nothing,
    /// The merged value of the whole chain.
    Merged(Charged<F>),
    /// Fragments one by one, one per location (oldest first), `None` where not resident.
    /// Shared (`Arc`) so that building the next entry over them copies pointers, not values.
    Fragments(Vec<Option<Charged<Arc<F>>>>),
}

/// What a page is, to build an entry from.
pub(crate) enum PageState<F> {
    /// Allocated: its chain's locations, oldest first (never empty), and what is resident.
    Live(Vec<Location>, Resident<F>),
    /// Freed (the free list knows when the id may be reused).
    Freed,
}

/// A page's entry: what the table points at.
pub(crate) struct Entry<F> {
    pub(crate) version: u64,
    /// The CLOCK bit: set by reads, cleared by the eviction hand.
    pub(crate) referenced: AtomicBool,
    /// The chain's locations, oldest first; empty when the page is freed.
    locations: Box<[Location]>,
    resident: Resident<F>,
    resident_bytes: u64,
    live_bytes: u64,
    oldest_lsn: Lsn,
}

impl<F> Entry<F> {
    /// An entry for `state`.
    ///
    /// A `Fragments` residency must have one item per location; one with every item `None`
    /// is stored as `Nothing`.
    pub(crate) fn new(version: u64, state: PageState<F>) -> Entry<F> {
        let (locations, resident) = match state {
            PageState::Freed => (Vec::new(), Resident::Nothing),
            PageState::Live(locations, resident) => {
                assert!(!locations.is_empty(), "a live page's chain is never empty");
                let resident = match resident {
                    Resident::Fragments(fragments) => {
                        assert_eq!(
                            fragments.len(),
                            locations.len(),
                            "one resident slot per location"
                        );
                        if fragments.iter().all(Option::is_none) {
                            Resident::Nothing
                        } else {
                            Resident::Fragments(fragments)
                        }
                    }
                    other => other,
                };
                (locations, resident)
            }
        };
        let resident_bytes = match &resident {
            Resident::Nothing => 0,
            Resident::Merged(merged) => merged.size_bytes,
            Resident::Fragments(fragments) => fragments
                .iter()
                .flatten()
                .map(|fragment| fragment.size_bytes)
                .sum(),
        };
        let live_bytes = locations.iter().map(Location::frame_len_bytes).sum();
        let oldest_lsn = locations
            .iter()
            .map(|location| location.lsn)
            .min()
            .unwrap_or(Lsn(u64::MAX));
        Entry {
            version,
            referenced: AtomicBool::new(!locations.is_empty()),
            locations: locations.into_boxed_slice(),
            resident,
            resident_bytes,
            live_bytes,
            oldest_lsn,
        }
    }

    /// Whether the page is allocated.
    pub(crate) fn is_live(&self) -> bool {
        !self.locations.is_empty()
    }

    /// The chain's locations, oldest first (empty when freed).
    pub(crate) fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// What is in memory.
    pub(crate) fn resident(&self) -> &Resident<F> {
        &self.resident
    }

    /// The merged value, when that is what is resident.
    pub(crate) fn merged(&self) -> Option<&F> {
        match &self.resident {
            Resident::Merged(merged) => Some(&merged.value),
            _ => None,
        }
    }

    pub(crate) fn chain_len(&self) -> usize {
        self.locations.len()
    }

    /// Bytes the resident values are charged.
    pub(crate) fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    /// Bytes the chain's frames take in the data file (what cleaning must keep).
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The LSN of the chain's oldest fragment, or `Lsn(u64::MAX)` when freed: the cleaner
    /// asks "does this page still use anything below the segment's end?" for every record
    /// it examines, and this answers without walking the chain.
    pub(crate) fn oldest_lsn(&self) -> Lsn {
        self.oldest_lsn
    }

    /// Marks the entry recently used; a store only when the bit is clear, so hot pages do
    /// not bounce a cache line between cores on every read.
    pub(crate) fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// Takes back the merged value of an entry whose CAS lost (nothing else can see it).
    pub(crate) fn into_merged(self) -> Option<F> {
        match self.resident {
            Resident::Merged(merged) => Some(merged.value),
            _ => None,
        }
    }
}

/// Borrows the entry behind a slot value loaded under `guard`.
pub(crate) fn entry_ref<'g, F>(shared: Shared<'g, Entry<F>>) -> Option<&'g Entry<F>> {
    // SAFETY: every non-null pointer in the page table came from `Owned::new`, and an entry is
    // destroyed only through `retire` after a CAS unlinked it, which defers the destruction
    // until every guard pinned before the unlink is dropped. `shared` was loaded under a guard
    // that lives for 'g, so the entry outlives the borrow.
    unsafe { shared.as_ref() }
}

/// Frees an entry that a successful CAS just unlinked, once no reader can still hold it.
pub(crate) fn retire<F>(guard: &Guard, unlinked: Shared<'_, Entry<F>>) {
    if unlinked.is_null() {
        return;
    }
    // SAFETY: the caller's CAS replaced `unlinked` in the table, so no new reader can load it;
    // readers that loaded it before are pinned, and `defer_destroy` waits for them. Each
    // unlinked pointer is retired exactly once: only the thread whose CAS unlinked it calls
    // this.
    unsafe { guard.defer_destroy(unlinked) };
}

/// Hands `value` to the epoch and borrows it for as long as `guard` stays pinned: a value a
/// read may not keep in the table (the budget is full and another thread holds the eviction
/// hand) is returned the same way as a resident one.
pub(crate) fn park<F: Send + 'static>(value: F, guard: &Guard) -> &F {
    let parked = Owned::new(value).into_shared(guard);
    // SAFETY: `parked` was just allocated and is reachable from nowhere else, so it is
    // destroyed exactly once, by this deferral. `defer_destroy` runs only after every guard
    // pinned now is dropped, `guard` among them (every guard the crate pins is a real pin,
    // never `epoch::unprotected`), so the value outlives the returned borrow. `F: Send` because the
    // deferred drop may run on another thread.
    unsafe {
        guard.defer_destroy(parked);
        parked.deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(lsn: u64) -> Location {
        Location {
            lsn: Lsn(lsn),
            file_offset: lsn,
            len_bytes: 100,
            stored: iobuf::Stored::Inline,
        }
    }

    #[test]
    fn totals_follow_the_locations_and_the_residency() {
        let merged = Entry::new(
            3,
            PageState::Live(
                vec![location(300), location(100), location(200)],
                Resident::Merged(Charged {
                    value: 7u32,
                    size_bytes: 40,
                }),
            ),
        );
        assert!(merged.is_live());
        assert_eq!(merged.chain_len(), 3);
        assert_eq!(merged.resident_bytes(), 40);
        assert_eq!(merged.live_bytes(), 3 * location(0).frame_len_bytes());
        assert_eq!(merged.oldest_lsn(), Lsn(100));
        assert_eq!(merged.merged(), Some(&7));

        let some = Entry::new(
            3,
            PageState::Live(
                vec![location(100), location(200)],
                Resident::Fragments(vec![
                    None,
                    Some(Charged {
                        value: Arc::new(1u32),
                        size_bytes: 10,
                    }),
                ]),
            ),
        );
        assert_eq!(some.resident_bytes(), 10);
        assert!(some.merged().is_none());

        // No resident fragment at all is stored as nothing resident.
        let none = Entry::<u32>::new(
            3,
            PageState::Live(vec![location(100)], Resident::Fragments(vec![None])),
        );
        assert!(matches!(none.resident(), Resident::Nothing));
        assert_eq!(none.resident_bytes(), 0);

        let freed = Entry::<u32>::new(4, PageState::Freed);
        assert!(!freed.is_live());
        assert_eq!(freed.oldest_lsn(), Lsn(u64::MAX));
        assert_eq!((freed.live_bytes(), freed.resident_bytes()), (0, 0));
    }
}
