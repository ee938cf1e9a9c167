//! A page's entry in the table: an immutable node swapped whole by CAS.
//!
//! Every change to a page (a write, an eviction, a page-in, a relocation) builds a new entry
//! and installs it with one CAS on the page's slot, so a reader sees either the old chain or
//! the new one, never a mix. The user-visible [`Version`] is a counter inside the entry that
//! only writes bump: an eviction or a relocation replaces the node without changing the
//! version, so it never makes a user's CAS fail.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_epoch::{Guard, Shared};
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
    /// Whether every fragment of the chain is resident (so a read needs no IO), kept here so
    /// a read of a memoized page does not touch the chain at all.
    pub(crate) fully_resident: bool,
    /// The LSN of the chain's oldest fragment (its base), or `Lsn(u64::MAX)` when freed: the
    /// cleaner asks "does this page still use anything below the segment's end?" per record
    /// it examines, and this answers without touching the chain.
    pub(crate) oldest_lsn: Lsn,
    /// The chain merged by a reader, kept so the next reads of the unchanged page clone it
    /// instead of merging every fragment again. Charged against the cache budget while the
    /// entry is installed; see [`Memo`].
    pub(crate) memo: Memo<F>,
}

impl<F> Entry<F> {
    pub(crate) fn new(version: u64, state: PageState<F>) -> Entry<F> {
        let (fully_resident, oldest_lsn) = match &state {
            PageState::Live(chain) => (
                chain.iter().all(|slot| slot.resident.is_some()),
                chain
                    .iter()
                    .map(|slot| slot.location.lsn)
                    .min()
                    .unwrap_or(Lsn(u64::MAX)),
            ),
            PageState::Freed => (false, Lsn(u64::MAX)),
        };
        Entry {
            version,
            state,
            referenced: AtomicBool::new(true),
            fully_resident,
            oldest_lsn,
            memo: Memo::new(),
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

/// A merged value memoized in an entry, and whether it is charged against the cache budget.
///
/// Charging must be exact although a reader may set the memo while a writer is replacing
/// the entry. The reader charges first, then moves the state from `EMPTY` to `CHARGED`; the
/// thread whose CAS unlinked the entry (exactly one) swaps the state to `RETIRED` and takes
/// the charge back if it was `CHARGED`. A reader that finds `RETIRED` takes its own charge
/// back. Either way every charge is returned exactly once.
pub(crate) struct Memo<F> {
    value: OnceLock<(F, u64)>,
    state: AtomicU8,
}

const MEMO_EMPTY: u8 = 0;
const MEMO_CHARGED: u8 = 1;
const MEMO_RETIRED: u8 = 2;

impl<F> Memo<F> {
    fn new() -> Memo<F> {
        Memo {
            value: OnceLock::new(),
            state: AtomicU8::new(MEMO_EMPTY),
        }
    }

    /// The memoized value, if a reader left one.
    pub(crate) fn get(&self) -> Option<&F> {
        self.value.get().map(|(value, _)| value)
    }

    /// Bytes charged for the memo right now (0 if none).
    pub(crate) fn charged_bytes(&self) -> u64 {
        if self.state.load(Ordering::Acquire) == MEMO_CHARGED {
            self.value.get().map_or(0, |(_, size)| *size)
        } else {
            0
        }
    }

    /// Keeps `value` (of `size` bytes) unless another reader was first. `charge` adds to (or,
    /// negative, takes back from) the cache's resident bytes.
    pub(crate) fn offer(&self, value: F, size: u64, charge: impl Fn(i64)) {
        charge(size as i64);
        if self.value.set((value, size)).is_err() {
            charge(-(size as i64));
            return;
        }
        if self
            .state
            .compare_exchange(
                MEMO_EMPTY,
                MEMO_CHARGED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // The entry was unlinked meanwhile; its retirer saw no charge to take back.
            charge(-(size as i64));
        }
    }

    /// Called once, by the thread whose CAS unlinked the entry: the bytes to take back.
    pub(crate) fn retire(&self) -> u64 {
        if self.state.swap(MEMO_RETIRED, Ordering::AcqRel) == MEMO_CHARGED {
            self.value.get().map_or(0, |(_, size)| *size)
        } else {
            0
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
