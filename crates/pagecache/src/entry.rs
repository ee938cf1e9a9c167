//! A page's entry in the table: the newest node of its chain, swapped by CAS.
//!
//! A page is a chain of nodes, newest first, each holding one fragment (where it is on
//! disk, and its decoded value when resident) and owning the next older node; the table's
//! slot points at the newest. Every change builds a new head and installs it with one CAS on
//! the slot, so a reader sees either the old chain or the new one, never a mix:
//!
//! * a `link` builds one node over the current head and, once its CAS wins, that node owns
//!   the old head: a link costs one allocation whatever the chain's length, and nothing is
//!   retired (the old head lives on inside the new chain);
//! * everything else (a new base, a free, an eviction, a page-in, a relocation) builds a
//!   whole new chain, and the old head is retired through the epoch, which frees the old
//!   chain once no reader can hold it.
//!
//! Each node also caches totals over itself and every older node (length, resident and live
//! bytes, the oldest LSN), so writers and the cleaner never walk a chain to account for it.
//! The user-visible [`Version`] is a counter inside the head that only writes bump: an
//! eviction or a relocation replaces the chain without changing the version, so it never
//! makes a user's CAS fail.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

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

/// What a page is, to build an entry from.
pub(crate) enum PageState<F> {
    /// Allocated: its chain, oldest first (never empty).
    Live(Vec<Slot<F>>),
    /// Freed (the free list knows when the id may be reused).
    Freed,
}

/// Totals over a node and every older node of its chain.
#[derive(Clone, Copy)]
struct Totals {
    chain_len: u32,
    resident_bytes: u64,
    live_bytes: u64,
    fully_resident: bool,
    oldest_lsn: Lsn,
}

impl Totals {
    fn of(slot: &Slot<impl Sized>, older: Option<&Totals>) -> Totals {
        let own = Totals {
            chain_len: 1,
            resident_bytes: slot.resident_bytes,
            live_bytes: slot.location.frame_len_bytes(),
            fully_resident: slot.resident.is_some(),
            oldest_lsn: slot.location.lsn,
        };
        match older {
            None => own,
            Some(older) => Totals {
                chain_len: older.chain_len.saturating_add(1),
                resident_bytes: older.resident_bytes + own.resident_bytes,
                live_bytes: older.live_bytes + own.live_bytes,
                fully_resident: older.fully_resident && own.fully_resident,
                oldest_lsn: older.oldest_lsn.min(own.oldest_lsn),
            },
        }
    }
}

/// A node of a page's chain; the one the table points at is the page's head.
pub(crate) struct Entry<F> {
    pub(crate) version: u64,
    /// The CLOCK bit: set by reads of the head, cleared by the eviction hand.
    pub(crate) referenced: AtomicBool,
    /// The chain up to this node merged by a reader, kept so later reads clone it (or merge
    /// only the newer deltas onto it) instead of merging every fragment again. Charged
    /// against the cache budget while the chain is installed; see [`Memo`].
    pub(crate) memo: Memo<F>,
    /// `None` when the page is freed.
    slot: Option<Slot<F>>,
    /// The next older node. Owned once `owns_older` is set (after the CAS that installed
    /// this node won); until then it is the table's, and dropping this node leaves it alone.
    older: Option<NonNull<Entry<F>>>,
    owns_older: AtomicBool,
    totals: Totals,
}

// SAFETY: an entry is shared between threads only through the page table, and every field
// is either immutable after construction (read through `&`), atomic, or a `OnceLock`. The
// `older` pointer is to another `Entry<F>`, which the same bounds make shareable; it is
// dereferenced only through `&self` and freed only by the unique owner in `drop`.
unsafe impl<F: Send + Sync> Send for Entry<F> {}
// SAFETY: see the `Send` impl above.
unsafe impl<F: Send + Sync> Sync for Entry<F> {}

impl<F> Entry<F> {
    /// An entry for `state` (a chain given oldest first is built into nodes).
    pub(crate) fn new(version: u64, state: PageState<F>) -> Entry<F> {
        match state {
            PageState::Freed => Entry {
                version,
                referenced: AtomicBool::new(false),
                memo: Memo::new(),
                slot: None,
                older: None,
                owns_older: AtomicBool::new(false),
                totals: Totals {
                    chain_len: 0,
                    resident_bytes: 0,
                    live_bytes: 0,
                    fully_resident: false,
                    oldest_lsn: Lsn(u64::MAX),
                },
            },
            PageState::Live(chain) => {
                let mut head: Option<Entry<F>> = None;
                for slot in chain {
                    let older = head.take().map(Box::new);
                    let totals = Totals::of(&slot, older.as_ref().map(|older| &older.totals));
                    head = Some(Entry {
                        version,
                        referenced: AtomicBool::new(true),
                        memo: Memo::new(),
                        slot: Some(slot),
                        older: older.map(|older| NonNull::from(Box::leak(older))),
                        // A chain built here owns all its nodes from the start.
                        owns_older: AtomicBool::new(true),
                        totals,
                    });
                }
                head.expect("a live page's chain is never empty")
            }
        }
    }

    /// A node holding `slot` over `older`, the page's current head loaded from the table
    /// under `guard`. It does not own `older` until [`Entry::take_ownership_of_older`] is
    /// called after the CAS that installs it won; a node whose CAS lost is dropped (or
    /// reused) without touching `older`.
    pub(crate) fn over(
        version: u64,
        slot: Slot<F>,
        older: Shared<'_, Entry<F>>,
        older_ref: &Entry<F>,
    ) -> Entry<F> {
        debug_assert!(std::ptr::eq(older.as_raw(), older_ref));
        let totals = Totals::of(&slot, Some(&older_ref.totals));
        Entry {
            version,
            referenced: AtomicBool::new(true),
            memo: Memo::new(),
            slot: Some(slot),
            older: NonNull::new(older.as_raw().cast_mut()),
            owns_older: AtomicBool::new(false),
            totals,
        }
    }

    /// Called by the thread whose CAS replaced the older node with this one: the older node
    /// is no longer reachable from the table, so this node frees it when it is freed itself.
    pub(crate) fn take_ownership_of_older(&self) {
        self.owns_older.store(true, Ordering::Release);
    }

    /// Whether the page is allocated.
    pub(crate) fn is_live(&self) -> bool {
        self.slot.is_some()
    }

    /// The chain, oldest first; `None` when the page is freed.
    pub(crate) fn chain(&self) -> Option<Vec<&Slot<F>>> {
        self.slot.as_ref()?;
        let mut chain: Vec<&Slot<F>> = self.nodes().filter_map(|node| node.slot.as_ref()).collect();
        chain.reverse();
        Some(chain)
    }

    /// This node and every older one, newest first.
    pub(crate) fn nodes(&self) -> Nodes<'_, F> {
        Nodes { next: Some(self) }
    }

    /// This node's own fragment (`None` when freed).
    pub(crate) fn slot(&self) -> Option<&Slot<F>> {
        self.slot.as_ref()
    }

    pub(crate) fn chain_len(&self) -> usize {
        self.totals.chain_len as usize
    }

    /// Bytes the chain's resident fragments are charged (memos not included).
    pub(crate) fn resident_bytes(&self) -> u64 {
        self.totals.resident_bytes
    }

    /// Bytes the chain's frames take in the data file (what cleaning must keep).
    pub(crate) fn live_bytes(&self) -> u64 {
        self.totals.live_bytes
    }

    /// Whether every fragment of the chain is resident (a read needs no IO).
    pub(crate) fn fully_resident(&self) -> bool {
        self.totals.fully_resident
    }

    /// The LSN of the chain's oldest fragment, or `Lsn(u64::MAX)` when freed: the cleaner
    /// asks "does this page still use anything below the segment's end?" for every record
    /// it examines, and this answers without walking the chain.
    pub(crate) fn oldest_lsn(&self) -> Lsn {
        self.totals.oldest_lsn
    }

    /// Takes back the charges of every memo of the chain; called once, by the thread whose
    /// CAS unlinked this head to replace the whole chain. Returns the bytes.
    pub(crate) fn retire_memos(&self) -> u64 {
        self.nodes().map(|node| node.memo.retire()).sum()
    }

    /// Marks the entry recently used; a store only when the bit is clear, so hot pages do
    /// not bounce a cache line between cores on every read.
    pub(crate) fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    fn older_ref(&self) -> Option<&Entry<F>> {
        // SAFETY: `older` points at a node that is alive as long as `self` is: either `self`
        // owns it (freed only by `self`'s drop), or `self` is not installed yet and the
        // caller of `over` holds a guard under which the older node was loaded from the
        // table, or `self` was installed by a CAS that made it the owner.
        self.older.map(|older| unsafe { older.as_ref() })
    }
}

impl<F> Drop for Entry<F> {
    fn drop(&mut self) {
        // Iterative, so a long chain does not recurse once per node.
        let mut next = self.take_owned_older();
        while let Some(older) = next {
            // SAFETY: `older` was owned by the node just dropped (its `owns_older` is set only
            // by `new`, whose nodes are private to the chain, or after the CAS that made that
            // node the only path to `older`). Every node is a `Box` allocation: `new` boxes
            // the older nodes itself, and a head installed with `Owned::new` is one too
            // (crossbeam's `Owned<T>` for a sized `T` is a box: `Owned::into_box` and
            // `From<Box<T>>` convert without reallocating). Each node is freed exactly once:
            // by its unique owner here, or through the epoch when it is a retired head, and a
            // retired head is never owned by another node (only a successful CAS transfers
            // ownership, and that CAS is what unlinks it, instead of retiring it).
            let mut boxed = unsafe { Box::from_raw(older.as_ptr()) };
            next = boxed.take_owned_older();
        }
    }
}

impl<F> Entry<F> {
    fn take_owned_older(&mut self) -> Option<NonNull<Entry<F>>> {
        let older = self.older.take();
        if *self.owns_older.get_mut() {
            older
        } else {
            None
        }
    }
}

/// Iterates a chain's nodes, newest first.
pub(crate) struct Nodes<'a, F> {
    next: Option<&'a Entry<F>>,
}

impl<'a, F> Iterator for Nodes<'a, F> {
    type Item = &'a Entry<F>;

    fn next(&mut self) -> Option<&'a Entry<F>> {
        let node = self.next?;
        self.next = node.older_ref();
        Some(node)
    }
}

/// Turns an entry whose CAS lost back into an owned value. A node built by
/// [`Entry::over`] lets go of the older node it points at (still the table's); a chain built
/// whole owns its nodes and frees them when dropped.
pub(crate) fn reclaim_lost<F>(lost: Owned<Entry<F>>) -> Box<Entry<F>> {
    let mut boxed = lost.into_box();
    if !*boxed.owns_older.get_mut() {
        boxed.older = None;
    }
    boxed
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize};

    use crossbeam_epoch::{self as epoch, Atomic};

    use super::*;

    /// A fragment that counts its drops, so the tests see leaks and double frees.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn slot(drops: &Arc<AtomicUsize>, lsn: u64) -> Slot<Counted> {
        Slot {
            location: Location {
                lsn: Lsn(lsn),
                file_offset: lsn,
                len_bytes: 100,
                stored: iobuf::Stored::Inline,
            },
            resident: Some(Arc::new(Counted(Arc::clone(drops)))),
            resident_bytes: 10,
        }
    }

    #[test]
    fn a_node_over_the_head_owns_it_only_once_installed() {
        let drops = Arc::new(AtomicUsize::new(0));
        let table = Atomic::new(Entry::new(
            1,
            PageState::Live(vec![slot(&drops, 100), slot(&drops, 200)]),
        ));
        let guard = epoch::pin();
        let head = table.load(Ordering::Acquire, &guard);
        let head_ref = entry_ref(head).expect("installed");
        assert_eq!(head_ref.chain_len(), 2);

        // A node whose CAS lost lets go of the head without freeing it.
        let lost = Owned::new(Entry::over(2, slot(&drops, 300), head, head_ref));
        drop(reclaim_lost(lost));
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "only the lost node's fragment"
        );
        assert_eq!(
            entry_ref(table.load(Ordering::Acquire, &guard)).map(Entry::chain_len),
            Some(2)
        );

        // A node whose CAS won owns the old head: totals are cumulative, the chain reads
        // oldest first, and dropping the new head frees the whole chain once.
        let node = Entry::over(2, slot(&drops, 400), head, head_ref);
        assert_eq!(node.chain_len(), 3);
        assert_eq!(node.resident_bytes(), 30);
        assert_eq!(node.oldest_lsn(), Lsn(100));
        assert!(node.fully_resident());
        let installed = table
            .compare_exchange(
                head,
                Owned::new(node),
                Ordering::AcqRel,
                Ordering::Acquire,
                &guard,
            )
            .unwrap_or_else(|_| panic!("nobody else writes"));
        let installed_ref = entry_ref(installed).expect("installed");
        installed_ref.take_ownership_of_older();
        let lsns: Vec<u64> = installed_ref
            .chain()
            .expect("live")
            .iter()
            .map(|slot| slot.location.lsn.0)
            .collect();
        assert_eq!(lsns, [100, 200, 400]);
        drop(guard);
        // SAFETY: the test is the only thread; nothing else holds the entry.
        drop(unsafe { table.into_owned() });
        assert_eq!(
            drops.load(Ordering::Relaxed),
            4,
            "every fragment freed exactly once"
        );
    }

    #[test]
    fn memo_charges_are_taken_back_exactly_once() {
        let charged = AtomicI64::new(0);
        let charge = |delta: i64| {
            charged.fetch_add(delta, Ordering::Relaxed);
        };
        // Offered, then retired: charged, then taken back.
        let memo = Memo::new();
        memo.offer(7u32, 40, charge);
        assert_eq!((memo.get(), memo.charged_bytes()), (Some(&7), 40));
        assert_eq!(charged.load(Ordering::Relaxed), 40);
        assert_eq!(memo.retire(), 40);
        charge(-40);
        assert_eq!(charged.load(Ordering::Relaxed), 0);
        // A second offer loses and takes its own charge back.
        let memo = Memo::new();
        memo.offer(1u32, 8, charge);
        memo.offer(2u32, 8, charge);
        assert_eq!((memo.get(), charged.load(Ordering::Relaxed)), (Some(&1), 8));
        assert_eq!(memo.retire(), 8);
        charge(-8);
        // Retired first, offered after: the offer takes its own charge back.
        let memo = Memo::new();
        assert_eq!(memo.retire(), 0);
        memo.offer(3u32, 16, charge);
        assert_eq!(charged.load(Ordering::Relaxed), 0);
        assert_eq!(memo.charged_bytes(), 0);
    }
}
