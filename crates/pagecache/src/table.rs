//! The page table: a lock-free map from a page id to the page's current entry.
//!
//! Writers replace an entry with one compare-and-swap on the page's slot; readers load it under
//! a crossbeam-epoch [`Guard`]. The table never frees an entry it has handed out while it is
//! alive: a writer whose CAS replaced a non-null entry passes that entry to
//! `guard.defer_destroy`, so readers still holding it stay safe until their guards are dropped.
//!
//! # Geometry
//!
//! A radix tree of three levels. Every node is an array of 2^11 = 2048 pointer-sized slots
//! (16 KiB on a 64-bit target). A page id is split into three 11-bit indexes:
//!
//! ```text
//!  bit 33      22 21      11 10       0
//!     | root idx |  mid idx |  leaf idx |
//! ```
//!
//! so the id space is [`PAGE_ID_LIMIT`] = 2^33 ids, and a lookup is three dependent loads (root
//! slot, mid slot, leaf slot). The root node is allocated by [`PageTable::new`]; mid and leaf
//! nodes are allocated on the first store beneath them and installed with a CAS on the parent
//! slot (the loser of an install race frees its own, never-shared node and uses the winner's).
//!
//! Memory is therefore proportional to the ids in use, not to the id space: ids `0..n` occupy
//! `1 + ceil(n / 2^22) + ceil(n / 2^11)` nodes, about 8 bytes per page plus one 16 KiB root.
//! (The original allocated 2 MiB per level up front; see weak point 15.)
//!
//! # Invariants
//!
//! - A mid or leaf node, once installed, is never removed or freed until the table is dropped.
//!   References to nodes may therefore live as long as `&self` without epoch protection.
//! - A node is fully initialised (every slot null) before the CAS that publishes it (release),
//!   and every load of a node pointer is an acquire, so no reader sees an uninitialised node.
//! - Entries are freed by the table only in `Drop`, which holds `&mut self`. Everything else
//!   about an entry's lifetime (deferring destruction of replaced entries) is the caller's job.
//!
//! # Deliberately not done
//!
//! - Nodes never shrink. Page ids are dense and freed ids are reused by the allocator, so an
//!   emptied leaf is expected to fill again; the table's footprint follows the highest id used.
//! - [`PageTable::for_each_in`] is not an atomic snapshot: it reads each slot once, at some
//!   moment during the call.
//! - No locking, no retry loops: every operation is a bounded number of loads and at most one
//!   CAS per level, so there is nothing to back off from.
#![allow(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

/// Bits of the page id consumed by each level of the tree.
const LEVEL_BITS: u32 = 11;
/// Slots per node.
const FANOUT: usize = 1 << LEVEL_BITS;
/// Mask selecting one level's index once shifted down.
const INDEX_MASK: u64 = (1 << LEVEL_BITS) - 1;
/// Shift of the mid-level index within a page id.
const MID_SHIFT: u32 = LEVEL_BITS;
/// Shift of the root-level index within a page id.
const ROOT_SHIFT: u32 = 2 * LEVEL_BITS;

/// Largest page id the table can hold, plus one (the id space): three levels of 11 bits.
pub(crate) const PAGE_ID_LIMIT: u64 = 1 << (3 * LEVEL_BITS);

const _: () = assert!(PAGE_ID_LIMIT == 1 << 33);
const _: () = assert!(INDEX_MASK as usize == FANOUT - 1);

/// A node whose slots point at `X`: a leaf when `X` is the entry type, an interior node when `X`
/// is itself a node.
type Node<X> = [Atomic<X>; FANOUT];
/// The bottom level: one slot per page id.
type Leaf<T> = Node<T>;
/// The middle level: one slot per leaf.
type Mid<T> = Node<Leaf<T>>;

/// Asks the CPU to start loading the two cache lines at `ptr` (see [`prefetch_lines`]).
pub(crate) fn prefetch<X>(ptr: *const X) {
    prefetch_lines(ptr, 128);
}

/// Asks the CPU to start loading the cache line at `ptr` (see [`prefetch_lines`]).
pub(crate) fn prefetch_line<X>(ptr: *const X) {
    prefetch_lines(ptr, 1);
}

/// Asks the CPU to start loading the lines holding the `n_bytes` at `ptr` (a hint: it never
/// faults and never changes what a load sees, so any address will do, even freed memory). A
/// no-op on targets other than x86-64. A writer uses it for the memory it is about to fill.
/// (A prefetch for writing, `prefetchw`, needs a target feature beyond the x86-64 baseline;
/// on one thread it measured within the noise of this one, +2 % in the median of 14
/// alternating pairs.)
pub(crate) fn prefetch_lines<X>(ptr: *const X, n_bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first_line = ptr.cast::<i8>();
        for offset in (0..n_bytes).step_by(64) {
            // SAFETY: `prefetch` instructions are hints that never fault and have no effect
            // a program can observe other than timing, whatever the address; SSE, which the
            // intrinsic requires, is part of the x86-64 baseline.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(first_line.wrapping_add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, n_bytes);
}

/// How many slots ahead [`PageTable::for_each_in`] prefetches entries.
const WALK_PREFETCH_DISTANCE: usize = 8;

/// Bytes of one node of any level (all levels hold pointer-sized slots).
const NODE_BYTES: usize = FANOUT * size_of::<Atomic<u8>>();

/// Lock-free map from page id (`0..PAGE_ID_LIMIT`) to an epoch-managed entry `T`.
///
/// See the module documentation for the geometry and the invariants.
pub(crate) struct PageTable<T: Send + Sync + 'static> {
    /// The top level, allocated once by `new` and freed by `Drop`.
    root: Box<Node<Mid<T>>>,
    /// Nodes allocated and installed, the root included.
    n_nodes: AtomicUsize,
    /// Node installs lost to another thread (tests use it to confirm the race happened).
    #[cfg(test)]
    n_install_races_lost: AtomicUsize,
}

impl<T: Send + Sync + 'static> PageTable<T> {
    /// An empty table. Allocates only the root node (16 KiB).
    pub(crate) fn new() -> Self {
        Self {
            root: null_node(),
            n_nodes: AtomicUsize::new(1),
            #[cfg(test)]
            n_install_races_lost: AtomicUsize::new(0),
        }
    }

    /// The entry of `pid`, or null if nothing was ever stored there (or the last store was
    /// null). `pid >= PAGE_ID_LIMIT` returns null. Never allocates.
    ///
    /// The returned pointer is valid while `guard` is pinned and the table is alive: it must not
    /// be dereferenced after the table is dropped.
    pub(crate) fn load<'g>(&self, pid: u64, guard: &'g Guard) -> Shared<'g, T> {
        match self.slot(pid, false, guard) {
            Some(slot) => slot.load(Ordering::Acquire, guard),
            None => Shared::null(),
        }
    }

    /// Compares the slot of `pid` with `current` and, if equal, replaces it with `new`
    /// (acquire-release on success, acquire on failure). Allocates the missing nodes on the
    /// path to the slot.
    ///
    /// On success returns the installed pointer. The table does not free the replaced entry:
    /// when `current` is non-null the caller must pass it to `guard.defer_destroy(current)`
    /// (exactly once), because other threads may still be reading it under their guards.
    ///
    /// On failure returns the slot's actual value and gives `new` back untouched, so a retry
    /// loop can reuse the allocation. A lost CAS is a normal result, not an error.
    ///
    /// `pid >= PAGE_ID_LIMIT` is a caller bug (the caller checks the limit when allocating
    /// ids): it trips a `debug_assert!`, and in release builds returns `Err((null, new))`.
    pub(crate) fn cas<'g>(
        &self,
        pid: u64,
        current: Shared<'g, T>,
        new: Owned<T>,
        guard: &'g Guard,
    ) -> Result<Shared<'g, T>, (Shared<'g, T>, Owned<T>)> {
        debug_assert!(
            pid < PAGE_ID_LIMIT,
            "page id {pid} outside the table's id space"
        );
        let Some(slot) = self.slot(pid, true, guard) else {
            return Err((Shared::null(), new));
        };
        slot.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire, guard)
            .map_err(|lost| (lost.current, lost.new))
    }

    /// Like [`cas`](Self::cas) but with a `Shared` new value: CAS to null when a page is freed,
    /// or re-installing an entry the caller already owns.
    ///
    /// On success returns `new`; on failure the slot's actual value. The same ownership rules
    /// apply: the caller defers destruction of a replaced non-null `current`, and must not
    /// install a pointer that is also reachable from another slot or already destroyed. A
    /// pointer that is not a `Box` allocation (an entry in a home cell, `home.rs`) must be
    /// taken out of the table again before it drops, since `Drop` frees what it finds as a
    /// `Box`.
    ///
    /// A CAS to null never allocates: if the leaf of `pid` does not exist yet, the slot reads as
    /// null, so the CAS succeeds exactly when `current` is null. `pid >= PAGE_ID_LIMIT` trips a
    /// `debug_assert!` and in release builds returns `Err(null)`.
    pub(crate) fn cas_shared<'g>(
        &self,
        pid: u64,
        current: Shared<'g, T>,
        new: Shared<'g, T>,
        guard: &'g Guard,
    ) -> Result<Shared<'g, T>, Shared<'g, T>> {
        debug_assert!(
            pid < PAGE_ID_LIMIT,
            "page id {pid} outside the table's id space"
        );
        if pid >= PAGE_ID_LIMIT {
            return Err(Shared::null());
        }
        match self.slot(pid, !new.is_null(), guard) {
            Some(slot) => slot
                .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire, guard)
                .map_err(|lost| lost.current),
            // The leaf is absent, so the slot was null when we looked: null -> null succeeds.
            None if current.is_null() => Ok(new),
            None => Err(Shared::null()),
        }
    }

    /// Asks the CPU to start loading the slot of `pid` into the cache, so a load of it a
    /// little later does not wait for memory. Walks the (cached) upper levels; does nothing
    /// when a node on the path is absent.
    pub(crate) fn prefetch_slot(&self, pid: u64, guard: &Guard) {
        if let Some(slot) = self.slot(pid, false, guard) {
            prefetch(std::ptr::from_ref(slot));
        }
    }

    /// Number of nodes allocated, the root included.
    pub(crate) fn n_nodes(&self) -> usize {
        self.n_nodes.load(Ordering::Relaxed)
    }

    /// Total bytes of all allocated nodes (entries themselves not included).
    pub(crate) fn node_bytes(&self) -> usize {
        self.n_nodes() * NODE_BYTES
    }

    /// Calls `f(pid, entry)` for every non-null entry with `from <= pid < to`, in increasing pid
    /// order. `to` is clamped to [`PAGE_ID_LIMIT`]. Absent mid and leaf nodes are skipped whole,
    /// so a sparse range costs at most one load per absent subtree.
    ///
    /// Each slot is read once (acquire); entries stored or removed concurrently may or may not
    /// be seen.
    pub(crate) fn for_each_in<'g>(
        &self,
        from: u64,
        to: u64,
        guard: &'g Guard,
        mut f: impl FnMut(u64, Shared<'g, T>),
    ) {
        let to = to.min(PAGE_ID_LIMIT);
        let mut pid = from;
        while pid < to {
            let (root_idx, mid_idx, leaf_idx) = split(pid);
            let Some(mid) = existing_child(&self.root[root_idx], guard) else {
                // Jump to the first id under the next root slot.
                pid = (pid | ((1 << ROOT_SHIFT) - 1)) + 1;
                continue;
            };
            let Some(leaf) = existing_child(&mid[mid_idx], guard) else {
                pid = (pid | ((1 << MID_SHIFT) - 1)) + 1;
                continue;
            };
            let leaf_end = to.min((pid | INDEX_MASK) + 1);
            let n_slots = (leaf_end - pid) as usize;
            let slots = &leaf[leaf_idx..leaf_idx + n_slots];
            for (offset, slot) in slots.iter().enumerate() {
                // Entries lie anywhere in memory; start loading the one a few slots ahead so
                // the walk waits for several at once rather than for each in turn.
                if let Some(ahead) = slots.get(offset + WALK_PREFETCH_DISTANCE) {
                    prefetch(ahead.load(Ordering::Relaxed, guard).as_raw());
                }
                let entry = slot.load(Ordering::Acquire, guard);
                if !entry.is_null() {
                    f(pid + offset as u64, entry);
                }
            }
            pid = leaf_end;
        }
    }

    /// The slot of `pid`, allocating the nodes on its path when `create` is set. `None` when
    /// `pid` is out of range, or a node on the path is absent and `create` is false.
    fn slot<'s>(&'s self, pid: u64, create: bool, guard: &Guard) -> Option<&'s Atomic<T>> {
        if pid >= PAGE_ID_LIMIT {
            return None;
        }
        let (root_idx, mid_idx, leaf_idx) = split(pid);
        let mid = self.child(&self.root[root_idx], create, guard)?;
        let leaf = self.child(&mid[mid_idx], create, guard)?;
        Some(&leaf[leaf_idx])
    }

    /// The node below `parent_slot` (a slot of this table), installing a fresh one if absent
    /// and `create` is set.
    fn child<'s, X>(
        &'s self,
        parent_slot: &'s Atomic<Node<X>>,
        create: bool,
        guard: &Guard,
    ) -> Option<&'s Node<X>> {
        match existing_child(parent_slot, guard) {
            Some(node) => Some(node),
            None if create => Some(self.install(parent_slot, guard)),
            None => None,
        }
    }

    /// Installs a fresh all-null node in `parent_slot` (a slot of this table) if it is still
    /// null, and returns whichever node the slot holds afterwards: ours if our CAS won, the
    /// winner's if another thread installed one first.
    fn install<'s, X>(&'s self, parent_slot: &'s Atomic<Node<X>>, guard: &Guard) -> &'s Node<X> {
        let fresh = Owned::from(null_node::<X>());
        let node = match parent_slot.compare_exchange(
            Shared::null(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
            guard,
        ) {
            Ok(installed) => {
                self.n_nodes.fetch_add(1, Ordering::Relaxed);
                installed
            }
            Err(lost) => {
                // Our node was never shared: dropping it (with `lost.new`, at the end of this
                // arm) frees it at once. Its slots are all null, so nothing else leaks.
                #[cfg(test)]
                self.n_install_races_lost.fetch_add(1, Ordering::Relaxed);
                lost.current
            }
        };
        debug_assert!(!node.is_null(), "a CAS from null failed against null");
        // SAFETY: `node` is non-null (we installed it, or the CAS failed because the slot held
        // another non-null node) and was published with a release CAS after initialisation,
        // observed here with acquire. Installed nodes are freed only by `Drop`, which needs
        // `&mut self`, so the node outlives the `&'s self` borrow the returned reference has.
        unsafe { &*node.as_raw() }
    }
}

/// The node below `parent_slot`, if one is installed. `parent_slot` must be a slot of a live
/// table, and the returned reference must not outlive that table (the caller's `'s`).
fn existing_child<'s, X>(parent_slot: &'s Atomic<Node<X>>, guard: &Guard) -> Option<&'s Node<X>> {
    let node = parent_slot.load(Ordering::Acquire, guard);
    if node.is_null() {
        return None;
    }
    // SAFETY: non-null node pointers in a table come from `install`, which published a fully
    // initialised node with a release CAS; this acquire load sees its contents. Nodes are freed
    // only in `PageTable::drop` (`&mut self`), and `parent_slot` borrows the table for `'s`, so
    // the node lives at least as long as the returned reference.
    Some(unsafe { &*node.as_raw() })
}

/// Splits a page id (below `PAGE_ID_LIMIT`) into its root, mid and leaf indexes.
fn split(pid: u64) -> (usize, usize, usize) {
    debug_assert!(pid < PAGE_ID_LIMIT);
    // Each index is masked to 11 bits, so the casts cannot truncate.
    (
        ((pid >> ROOT_SHIFT) & INDEX_MASK) as usize,
        ((pid >> MID_SHIFT) & INDEX_MASK) as usize,
        (pid & INDEX_MASK) as usize,
    )
}

/// A node with every slot null, built on the heap directly (16 KiB is too much to move
/// through the stack for every install).
fn null_node<X>() -> Box<Node<X>> {
    let slots: Box<[Atomic<X>]> = (0..FANOUT).map(|_| Atomic::null()).collect();
    match slots.try_into() {
        Ok(node) => node,
        Err(_) => unreachable!("collected exactly FANOUT slots"),
    }
}

impl<T: Send + Sync + 'static> Drop for PageTable<T> {
    /// Frees every node and every non-null entry still in the table. Entries replaced earlier
    /// were handed to the epoch collector by the writers and are not in the table any more.
    fn drop(&mut self) {
        // SAFETY: `&mut self` proves no other thread can reach the table now, so the slots
        // cannot change under us and no guard is needed to read them.
        let guard = unsafe { epoch::unprotected() };
        for mid_slot in self.root.iter() {
            let mid = mid_slot.load(Ordering::Relaxed, guard);
            if mid.is_null() {
                continue;
            }
            // SAFETY: non-null, allocated by `install` via `Owned`, reachable only from this
            // root slot (visited once), and nothing else frees nodes.
            let mid: Owned<Mid<T>> = unsafe { mid.into_owned() };
            for leaf_slot in mid.iter() {
                let leaf = leaf_slot.load(Ordering::Relaxed, guard);
                if leaf.is_null() {
                    continue;
                }
                // SAFETY: as for the mid node: allocated by `install`, owned by this slot alone.
                let leaf: Owned<Leaf<T>> = unsafe { leaf.into_owned() };
                for entry_slot in leaf.iter() {
                    let entry = entry_slot.load(Ordering::Relaxed, guard);
                    if entry.is_null() {
                        continue;
                    }
                    // SAFETY: entries in the table were installed as `Owned` by `cas` (or
                    // by `cas_shared`, which requires the caller to own them as a `Box` or to
                    // take them out before the table drops, as the page cache does) and
                    // have not been handed to `defer_destroy`: writers defer only entries they
                    // replaced, which are no longer in the table.
                    drop(unsafe { entry.into_owned() });
                }
            }
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for PageTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("n_nodes", &self.n_nodes())
            .field("node_bytes", &self.node_bytes())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::Barrier;

    use super::*;

    /// The value of `pid`'s entry, if any.
    fn read(table: &PageTable<u64>, pid: u64, guard: &Guard) -> Option<u64> {
        let entry = table.load(pid, guard);
        // SAFETY: entries are freed only through `defer_destroy` (after this guard unpins) or
        // when the table is dropped, and `table` is borrowed for the whole call.
        unsafe { entry.as_ref() }.copied()
    }

    /// Stores `value` at `pid`, which must be empty.
    fn store_new(table: &PageTable<u64>, pid: u64, value: u64, guard: &Guard) {
        let stored = table.cas(pid, Shared::null(), Owned::new(value), guard);
        assert!(stored.is_ok(), "pid {pid} was not empty");
    }

    /// Node count the geometry predicts for a set of stored ids.
    fn expected_nodes(pids: &[u64]) -> usize {
        let mids: std::collections::BTreeSet<u64> = pids.iter().map(|p| p >> ROOT_SHIFT).collect();
        let leaves: std::collections::BTreeSet<u64> = pids.iter().map(|p| p >> MID_SHIFT).collect();
        1 + mids.len() + leaves.len()
    }

    const BOUNDARY_PIDS: [u64; 8] = [
        0,
        FANOUT as u64 - 1,
        FANOUT as u64,
        (1 << ROOT_SHIFT) - 1,
        1 << ROOT_SHIFT,
        (1 << ROOT_SHIFT) + (1 << MID_SHIFT),
        PAGE_ID_LIMIT - FANOUT as u64,
        PAGE_ID_LIMIT - 1,
    ];

    #[test]
    fn never_stored_ids_load_null_and_allocate_nothing() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        for pid in BOUNDARY_PIDS.into_iter().chain([PAGE_ID_LIMIT, u64::MAX]) {
            assert!(table.load(pid, &guard).is_null(), "pid {pid}");
        }
        assert_eq!(table.n_nodes(), 1);
        assert_eq!(table.node_bytes(), NODE_BYTES);
        assert_eq!(NODE_BYTES, 16 * 1024);
    }

    #[test]
    fn store_load_round_trip_at_node_boundaries() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        for pid in BOUNDARY_PIDS {
            store_new(&table, pid, pid ^ 0xABCD, &guard);
        }
        for pid in BOUNDARY_PIDS {
            assert_eq!(read(&table, pid, &guard), Some(pid ^ 0xABCD), "pid {pid}");
        }
        // Neighbours of the stored ids stay empty.
        for pid in BOUNDARY_PIDS {
            for neighbour in [pid.wrapping_sub(1), pid + 1] {
                if !BOUNDARY_PIDS.contains(&neighbour) {
                    assert_eq!(read(&table, neighbour, &guard), None, "pid {neighbour}");
                }
            }
        }
        assert_eq!(table.n_nodes(), expected_nodes(&BOUNDARY_PIDS));
    }

    #[test]
    fn cas_with_stale_current_fails_and_gives_value_back() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        let first = table
            .cas(7, Shared::null(), Owned::new(1), &guard)
            .expect("empty slot");

        // Expecting null while the slot holds `first`.
        let (actual, back) = table
            .cas(7, Shared::null(), Owned::new(2), &guard)
            .expect_err("stale null current");
        assert_eq!(actual, first);
        assert_eq!(*back, 2);

        // Retry with the actual value, reusing the allocation we got back.
        let second = table.cas(7, actual, back, &guard).expect("fresh current");
        // SAFETY: `first` was replaced just now and is deferred exactly once.
        unsafe { guard.defer_destroy(first) };
        assert_eq!(read(&table, 7, &guard), Some(2));

        // `first` is now stale too.
        let (actual, back) = table
            .cas(7, first, Owned::new(3), &guard)
            .expect_err("stale non-null current");
        assert_eq!(actual, second);
        assert_eq!(*back, 3);
        assert_eq!(read(&table, 7, &guard), Some(2));
    }

    #[test]
    fn cas_shared_frees_and_reinstalls() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        let entry = table
            .cas(5000, Shared::null(), Owned::new(9), &guard)
            .expect("empty slot");

        // Stale current: fails with the actual value.
        assert_eq!(
            table.cas_shared(5000, Shared::null(), Shared::null(), &guard),
            Err(entry)
        );
        // Take the entry out, then put the very same entry back.
        assert_eq!(
            table.cas_shared(5000, entry, Shared::null(), &guard),
            Ok(Shared::null())
        );
        assert!(table.load(5000, &guard).is_null());
        assert_eq!(
            table.cas_shared(5000, Shared::null(), entry, &guard),
            Ok(entry)
        );
        assert_eq!(read(&table, 5000, &guard), Some(9));

        // A CAS to null under an absent leaf allocates nothing.
        let n_nodes = table.n_nodes();
        let far = PAGE_ID_LIMIT - 1;
        assert_eq!(
            table.cas_shared(far, Shared::null(), Shared::null(), &guard),
            Ok(Shared::null())
        );
        assert_eq!(
            table.cas_shared(far, entry, Shared::null(), &guard),
            Err(Shared::null())
        );
        assert_eq!(table.n_nodes(), n_nodes);
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn cas_out_of_range_gives_value_back_in_release() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        let (actual, back) = table
            .cas(PAGE_ID_LIMIT, Shared::null(), Owned::new(4), &guard)
            .expect_err("out of range");
        assert!(actual.is_null());
        assert_eq!(*back, 4);
        assert_eq!(
            table.cas_shared(u64::MAX, Shared::null(), Shared::null(), &guard),
            Err(Shared::null())
        );
        assert_eq!(table.n_nodes(), 1);
    }

    #[test]
    fn memory_is_proportional_to_ids_in_use() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        for pid in 0..10_000 {
            store_new(&table, pid, pid, &guard);
        }
        // 1 root + 1 mid + ceil(10_000 / 2048) = 5 leaves.
        assert_eq!(table.n_nodes(), 7);
        assert_eq!(table.node_bytes(), 7 * 16 * 1024);

        // A lone id at the top of the id space allocates only its own path.
        let sparse = PageTable::<u64>::new();
        store_new(&sparse, PAGE_ID_LIMIT - 1, 1, &guard);
        assert_eq!(sparse.n_nodes(), 3);
        // Storing next to it allocates nothing more.
        store_new(&sparse, PAGE_ID_LIMIT - 2, 2, &guard);
        assert_eq!(sparse.n_nodes(), 3);
    }

    #[test]
    fn install_loser_uses_the_winners_node() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        let winner = table.install(&table.root[3], &guard) as *const Mid<u64>;
        // A second install on the same slot loses its CAS, as a racing thread would.
        let loser_view = table.install(&table.root[3], &guard) as *const Mid<u64>;
        assert_eq!(winner, loser_view);
        assert_eq!(table.n_nodes(), 2);
        assert_eq!(table.n_install_races_lost.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn for_each_in_visits_exactly_the_stored_ids_in_order() {
        let table = PageTable::<u64>::new();
        let guard = epoch::pin();
        let mut model = BTreeMap::new();
        // xorshift64: deterministic, spread over every level of the tree.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut pids: Vec<u64> = BOUNDARY_PIDS.to_vec();
        for _ in 0..300 {
            let r = next();
            // Mix ids clustered near the bottom (dense leaves) with ids anywhere.
            pids.push(if r & 1 == 0 {
                r % 5000
            } else {
                r % PAGE_ID_LIMIT
            });
        }
        for pid in pids {
            if let std::collections::btree_map::Entry::Vacant(slot) = model.entry(pid) {
                slot.insert(pid * 3);
                store_new(&table, pid, pid * 3, &guard);
            }
        }
        let stored: Vec<u64> = model.keys().copied().collect();
        assert_eq!(table.n_nodes(), expected_nodes(&stored));

        let visit = |from: u64, to: u64| {
            let mut seen = Vec::new();
            table.for_each_in(from, to, &guard, |pid, entry| {
                // SAFETY: the guard is pinned and nothing is destroyed during this test.
                seen.push((pid, *unsafe { entry.deref() }));
            });
            seen
        };
        let expect = |from: u64, to: u64| -> Vec<(u64, u64)> {
            if from >= to {
                return Vec::new();
            }
            model.range(from..to).map(|(&p, &v)| (p, v)).collect()
        };

        assert_eq!(visit(0, u64::MAX), expect(0, PAGE_ID_LIMIT));
        assert_eq!(visit(0, PAGE_ID_LIMIT).len(), model.len());
        let edges = [
            (0, 1),
            (1, FANOUT as u64),
            (FANOUT as u64 - 1, FANOUT as u64 + 1),
            ((1 << ROOT_SHIFT) - 1, (1 << ROOT_SHIFT) + 1),
            (PAGE_ID_LIMIT - 1, PAGE_ID_LIMIT),
            (PAGE_ID_LIMIT, u64::MAX),
            (10, 10),
            (20, 10),
        ];
        for (from, to) in edges {
            assert_eq!(
                visit(from, to),
                expect(from, to.min(PAGE_ID_LIMIT)),
                "[{from}, {to})"
            );
        }
        for _ in 0..200 {
            let (a, b) = (next(), next());
            let (a, b) = if next() & 1 == 0 {
                (a % 6000, b % 6000)
            } else {
                (a % PAGE_ID_LIMIT, b % PAGE_ID_LIMIT)
            };
            let (from, to) = (a.min(b), a.max(b));
            assert_eq!(visit(from, to), expect(from, to), "[{from}, {to})");
        }
    }

    /// An entry that counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn drop_frees_every_entry_and_node() {
        let n_dropped = Arc::new(AtomicUsize::new(0));
        let pids: Vec<u64> = BOUNDARY_PIDS.iter().copied().chain(3000..6000).collect();
        {
            let table = PageTable::<Counted>::new();
            let guard = epoch::pin();
            for &pid in &pids {
                let stored = table.cas(
                    pid,
                    Shared::null(),
                    Owned::new(Counted(n_dropped.clone())),
                    &guard,
                );
                assert!(stored.is_ok());
            }
            // A slot emptied again holds nothing for `Drop` to free.
            let entry = table.load(3000, &guard);
            assert!(
                table
                    .cas_shared(3000, entry, Shared::null(), &guard)
                    .is_ok()
            );
            // SAFETY: removed from the table just now; this is its only owner.
            drop(unsafe { entry.into_owned() });
            assert_eq!(n_dropped.load(Ordering::Relaxed), 1);
            drop(guard);
        }
        assert_eq!(n_dropped.load(Ordering::Relaxed), pids.len());
    }

    #[test]
    fn racing_threads_install_each_node_once() {
        const N_THREADS: u64 = 4;
        const N_ROUNDS: u64 = 200;
        const PIDS_PER_THREAD: u64 = 16;
        let table = PageTable::<u64>::new();
        let barrier = Barrier::new(N_THREADS as usize);
        std::thread::scope(|scope| {
            for thread_idx in 0..N_THREADS {
                let (table, barrier) = (&table, &barrier);
                scope.spawn(move || {
                    for round in 0..N_ROUNDS {
                        // Every round starts under an untouched root slot, so all threads race
                        // to install the same mid node and then the same leaf.
                        let base = round << ROOT_SHIFT;
                        barrier.wait();
                        let guard = epoch::pin();
                        for i in 0..PIDS_PER_THREAD {
                            let pid = base + i * N_THREADS + thread_idx;
                            store_new(table, pid, pid, &guard);
                        }
                    }
                });
            }
        });
        let guard = epoch::pin();
        let mut n_seen = 0;
        table.for_each_in(0, PAGE_ID_LIMIT, &guard, |pid, entry| {
            // SAFETY: all threads are done; nothing is destroyed.
            assert_eq!(*unsafe { entry.deref() }, pid);
            n_seen += 1;
        });
        assert_eq!(n_seen, N_THREADS * N_ROUNDS * PIDS_PER_THREAD);
        // One mid and one leaf per round, whoever won: losers' nodes were not counted or kept.
        assert_eq!(table.n_nodes(), 1 + 2 * N_ROUNDS as usize);
        eprintln!(
            "node installs lost to a racing thread: {}",
            table.n_install_races_lost.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn concurrent_cas_increments_are_exact() {
        const N_THREADS: u64 = 4;
        const N_INCREMENTS: u64 = 4000;
        // Counters in fresh leaves, so the first increments also race the node installs.
        let pids = [0, 1, 2047, 2048, 1 << ROOT_SHIFT, PAGE_ID_LIMIT - 1];
        let table = PageTable::<u64>::new();
        let barrier = Barrier::new(N_THREADS as usize);
        std::thread::scope(|scope| {
            for thread_idx in 0..N_THREADS {
                let (table, barrier, pids) = (&table, &barrier, &pids);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..N_INCREMENTS {
                        let pid = pids[((i + thread_idx) % pids.len() as u64) as usize];
                        let guard = epoch::pin();
                        let mut current = table.load(pid, &guard);
                        let mut new = Owned::new(0);
                        loop {
                            // SAFETY: `current` came from the table under this guard; replaced
                            // entries are only deferred, so it is alive while we are pinned.
                            *new = unsafe { current.as_ref() }.map_or(0, |v| *v) + 1;
                            match table.cas(pid, current, new, &guard) {
                                Ok(_) => {
                                    if !current.is_null() {
                                        // SAFETY: our CAS removed `current`; we defer it once.
                                        unsafe { guard.defer_destroy(current) };
                                    }
                                    break;
                                }
                                Err((actual, back)) => {
                                    current = actual;
                                    new = back;
                                }
                            }
                        }
                    }
                });
            }
        });
        let guard = epoch::pin();
        let total: u64 = pids
            .iter()
            .map(|&pid| read(&table, pid, &guard).unwrap_or(0))
            .sum();
        assert_eq!(total, N_THREADS * N_INCREMENTS);
        // Each thread spreads its increments evenly (up to rounding) over the pids.
        let per_thread = N_INCREMENTS / pids.len() as u64;
        for (idx, &pid) in pids.iter().enumerate() {
            let expected: u64 = (0..N_THREADS)
                .map(|t| {
                    (0..N_INCREMENTS)
                        .filter(|i| ((i + t) % pids.len() as u64) as usize == idx)
                        .count() as u64
                })
                .sum();
            assert!(expected >= per_thread * N_THREADS);
            assert_eq!(read(&table, pid, &guard), Some(expected), "pid {pid}");
        }
        assert_eq!(table.n_nodes(), expected_nodes(&pids));
    }
}
