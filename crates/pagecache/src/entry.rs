//! A page's entry in the table: an immutable node swapped whole by CAS.
//!
//! Every change to a page (a write, an eviction, a page-in, a relocation) builds a new entry
//! and installs it with one CAS on the page's slot, so a reader sees either the old chain or
//! the new one, never a mix. The user-visible [`Version`] is a counter inside the entry that
//! only writes bump: an eviction or a relocation replaces the node without changing the
//! version, so it never makes a user's CAS fail.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_epoch::{Guard, Shared};
use iobuf::Location;

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

/// One fragment of a chain: where it is on disk, and its decoded value when resident.
pub(crate) struct Slot<F> {
    pub(crate) location: Location,
    pub(crate) resident: Option<Arc<F>>,
    /// What the resident value is charged against the cache budget (0 when not resident).
    pub(crate) resident_bytes: u64,
}

impl<F> Clone for Slot<F> {
    fn clone(&self) -> Self {
        Slot {
            location: self.location,
            resident: self.resident.clone(),
            resident_bytes: self.resident_bytes,
        }
    }
}

impl<F> Slot<F> {
    pub(crate) fn on_disk(location: Location) -> Slot<F> {
        Slot {
            location,
            resident: None,
            resident_bytes: 0,
        }
    }
}

/// What a page is now.
pub(crate) enum PageState<F> {
    /// Allocated: its chain, oldest first (never empty).
    Live(Vec<Slot<F>>),
    /// Freed (the free list knows when the id may be reused).
    Freed,
}

/// The node a page's table slot points at.
pub(crate) struct Entry<F> {
    pub(crate) version: u64,
    pub(crate) state: PageState<F>,
    /// The CLOCK bit: set by reads, cleared by the eviction hand.
    pub(crate) referenced: AtomicBool,
}

impl<F> Entry<F> {
    pub(crate) fn new(version: u64, state: PageState<F>) -> Entry<F> {
        Entry {
            version,
            state,
            referenced: AtomicBool::new(true),
        }
    }

    pub(crate) fn chain(&self) -> Option<&[Slot<F>]> {
        match &self.state {
            PageState::Live(chain) => Some(chain),
            PageState::Freed => None,
        }
    }

    pub(crate) fn resident_bytes(&self) -> u64 {
        self.chain().map_or(0, |chain| {
            chain.iter().map(|slot| slot.resident_bytes).sum()
        })
    }

    /// Bytes the chain's frames take in the data file (what cleaning must keep).
    pub(crate) fn live_bytes(&self) -> u64 {
        self.chain().map_or(0, |chain| {
            chain
                .iter()
                .map(|slot| slot.location.frame_len_bytes())
                .sum()
        })
    }

    /// Marks the entry recently used; a store only when the bit is clear, so hot pages do
    /// not bounce a cache line between cores on every read.
    pub(crate) fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
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
