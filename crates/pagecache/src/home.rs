//! Home cells: two places per page id where that page's entries are built, at an address
//! computed from the id, so a read can start loading the entry before the table slot that
//! points at it has arrived.
//!
//! # Why
//!
//! A read of a resident page waits for three loads in a row from memory that is cold at
//! B's scale (100 000 pages, about 30 MB of entries and values): the page's table slot, the
//! entry it points at, then the value. Entries on the heap lie anywhere, so the second load
//! cannot start before the first is done. A page's entries are built in its home cells
//! instead, so a read prefetches both cells while it loads the slot: the slot and the entry
//! arrive together, and a read waits for two loads instead of three. A prototype, timed in
//! alternating windows of B's one-thread mix on two caches in one process (the machine's
//! load swings too much between runs to see 10 % otherwise), did 5 to 13 % more operations
//! per second with cells than without, in four runs of 40 windows each.
//!
//! # Protocol
//!
//! Every cell has a state byte, free or busy, kept apart from the cells: a cell is written
//! whole only by the thread that claimed it, while no other thread can reach it (apart from
//! that, only its entry's CLOCK bit is written, atomically, while it is installed), and the
//! state bytes are only ever accessed atomically.
//!
//! - A writer **claims** a free cell other than the one the page's current entry is in, with a
//!   CAS of its state from free to busy (acquire: the cell's last entry was dropped before
//!   the release store that freed it). Only the claimer writes the cell.
//! - It writes its entry there and installs a pointer to it with the page's usual CAS. If that
//!   CAS loses, nobody ever saw the cell: the writer takes the entry back and frees the cell.
//! - When a later CAS replaces the entry, the cell is **retired** through the epoch: once no
//!   pinned reader can hold it, a deferred function drops the entry in place and stores
//!   free (release), its last access to the block.
//! - A writer that finds no free cell builds its entry on the heap, as before home cells;
//!   entries built while opening are on the heap too. The table holds both kinds; a pointer
//!   is a home cell of its page exactly when it equals one of the page's two cell addresses.
//!
//! A retired cell is free again only when crossbeam runs its deferred function, which waits
//! for the retiring thread's bag of garbage (64 functions) to fill and for the epoch to move
//! on. A page written again before that finds both cells busy and falls back to the heap: a
//! hot page written by one thread over and over mostly lives on the heap. The cells pay off
//! for reads of the many pages written less often than that, B's case.
//!
//! # Blocks and their lifetime
//!
//! Cells come in blocks of [`BLOCK_PIDS`] page ids, found through a [`PageTable`] indexed by
//! block number. A block is one zeroed allocation: the state bytes of its cells (two per id,
//! 4 KiB), then the cells in pairs, each pair on its own cache lines (772 KiB in all with a
//! 192-byte entry). A block is allocated on the first claim of a cell in it, so memory grows
//! with the ranges of 2048 ids that had a write, page-in, eviction or relocation since open.
//!
//! A retired cell's deferred function may run after the page cache is gone, on any thread
//! (crossbeam keeps it in the retiring thread's bag until then). So a block is not freed
//! while any of its cells is busy: when the cells are dropped, a block with busy cells is put
//! in a process-wide quarantine, and a later sweep (when the next page cache of the process
//! opens or drops) frees it once every cell is free. Before that, the cache empties its
//! table of the entries in cells ([`HomeCells::take_installed`]), so only retired cells can
//! still be busy: at most a few bags of crossbeam garbage per thread. A thread that stays
//! idle holds its bag, and with it a quarantined block, until it uses the epoch again.
//!
//! # Deliberately not done
//!
//! - No bookkeeping per write beyond the claim: the deferred function holds raw pointers, not
//!   a reference count, so writes on different threads share no counter.
//! - Blocks are never shrunk or freed while the page cache is open.
//! - State bytes are not spread out: the 2 bytes of 32 ids share a line, so writers of nearby
//!   ids on different cores contend for it (as they do for their table slots, 8 ids a line).
//!   Spreading them a line per pair would add 64 bytes per id and lose the line's reuse: a
//!   one-thread writer of 100 000 pages finds their 200 KB of state bytes in its L2 cache.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crossbeam_epoch::{Guard, Owned, Shared};

use crate::cache::lock;
use crate::entry::Entry;
use crate::table::{PAGE_ID_LIMIT, PageTable, prefetch_line, prefetch_lines};

/// A cell no entry is in (zeroed memory reads as this).
const CELL_FREE: u8 = 0;
/// A cell claimed by a writer, holding an installed entry, or retired and not yet dropped.
const CELL_BUSY: u8 = 1;

/// Page ids per block of cells.
pub(crate) const BLOCK_PIDS: u64 = 2048;

/// Cells per page id.
const CELLS_PER_PID: usize = 2;

/// State bytes per block, one per cell.
const STATES_PER_BLOCK: usize = BLOCK_PIDS as usize * CELLS_PER_PID;

/// A page's two cells, aligned so that each entry of a 64-byte multiple starts a cache line.
/// Only its layout is used: cells are reached through raw pointers into the block.
#[repr(C, align(64))]
struct Pair<F>([MaybeUninit<Entry<F>>; CELLS_PER_PID]);

/// One home cell: where its entry goes and its state byte.
pub(crate) struct HomeCell<F> {
    entry: *mut Entry<F>,
    state: *const AtomicU8,
}

impl<F> Clone for HomeCell<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for HomeCell<F> {}

impl<F> HomeCell<F> {
    /// The cell's state byte.
    fn state(&self) -> &AtomicU8 {
        // SAFETY: `state` points into the state bytes of a block, which were zeroed when it
        // was allocated and are only ever accessed as atomics. The block is alive: callers
        // hold the `HomeCells` it belongs to, or the cell is busy and they are the thread
        // that frees it (a busy cell's block is not freed, see the module doc).
        unsafe { &*self.state }
    }
}

/// The allocation of a block, untyped: the state bytes first, then the pairs. This is what
/// the quarantine keeps, and all it needs to know to free it.
struct BlockMemory {
    start: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the memory is only freed by its owner; its state bytes are atomics, and the cells'
// entries are never touched through it (they are dropped by the page cache or by deferred
// functions, which require `F: Send + Sync`).
unsafe impl Send for BlockMemory {}
// SAFETY: as above; shared access only reads the state bytes atomically.
unsafe impl Sync for BlockMemory {}

impl BlockMemory {
    /// A zeroed allocation of `layout`, whose first [`STATES_PER_BLOCK`] bytes are the state
    /// bytes of its cells (all free).
    fn zeroed(layout: Layout) -> BlockMemory {
        assert!(
            layout.size() >= STATES_PER_BLOCK,
            "a block holds its state bytes"
        );
        // SAFETY: `layout` has a non-zero size (checked above).
        let start = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(start) = NonNull::new(start) else {
            std::alloc::handle_alloc_error(layout);
        };
        BlockMemory { start, layout }
    }

    /// The state bytes of the block's cells.
    fn states(&self) -> &[AtomicU8] {
        // SAFETY: the first `STATES_PER_BLOCK` bytes of the allocation were zeroed (a valid
        // `AtomicU8` each, free) and are only ever accessed as atomics; they live as long as
        // `self`.
        unsafe {
            std::slice::from_raw_parts(self.start.as_ptr().cast::<AtomicU8>(), STATES_PER_BLOCK)
        }
    }

    /// Whether every cell is free, so that no deferred function will touch the block again.
    fn all_free(&self) -> bool {
        self.states()
            .iter()
            .all(|state| state.load(Ordering::Acquire) == CELL_FREE)
    }

    /// Whether `address` lies in this block (for tests).
    #[cfg(test)]
    fn contains(&self, address: usize) -> bool {
        let start = self.start.as_ptr() as usize;
        (start..start + self.layout.size()).contains(&address)
    }
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        // SAFETY: allocated by `zeroed` with this layout and freed only here. Free cells hold
        // nothing to drop, and the owner drops this only once every cell is free.
        unsafe { std::alloc::dealloc(self.start.as_ptr(), self.layout) };
    }
}

/// The cells of [`BLOCK_PIDS`] consecutive page ids.
struct Block<F: Send + Sync + 'static> {
    /// `None` only once `Drop` has moved it out (to free it or quarantine it).
    memory: Option<BlockMemory>,
    /// The first state byte: the start of `memory`.
    states: NonNull<AtomicU8>,
    /// The first pair, inside `memory` (derived from its start pointer).
    pairs: NonNull<Pair<F>>,
}

// SAFETY: a block hands its cells out by CAS on their state bytes (only the claimer writes a
// cell) and publishes an entry only through the page table's release CAS; entries are `Send`
// and `Sync` when `F` is, as the table requires for heap entries.
unsafe impl<F: Send + Sync + 'static> Sync for Block<F> {}
// SAFETY: as above; a block owns no thread-bound state.
unsafe impl<F: Send + Sync + 'static> Send for Block<F> {}

impl<F: Send + Sync + 'static> Block<F> {
    /// The layout of a block (its state bytes, then its pairs) and the offset of the pairs.
    fn layout() -> (Layout, usize) {
        let states = Layout::array::<AtomicU8>(STATES_PER_BLOCK).expect("4 KiB fits");
        let pairs = Layout::array::<Pair<F>>(BLOCK_PIDS as usize).expect("a block's size fits");
        let (layout, pairs_offset) = states.extend(pairs).expect("a block's size fits");
        (layout.pad_to_align(), pairs_offset)
    }

    /// A block of free cells.
    fn zeroed() -> Block<F> {
        let (layout, pairs_offset) = Self::layout();
        let memory = BlockMemory::zeroed(layout);
        // SAFETY: `pairs_offset` lies inside the allocation (`extend` placed the pairs
        // there), so the pointer stays in bounds and is non-null.
        let pairs = unsafe { memory.start.add(pairs_offset) }.cast::<Pair<F>>();
        Block {
            states: memory.start.cast::<AtomicU8>(),
            memory: Some(memory),
            pairs,
        }
    }

    /// The cells of the id at `index` in this block.
    fn cells(&self, index: usize) -> [HomeCell<F>; CELLS_PER_PID] {
        debug_assert!(index < BLOCK_PIDS as usize);
        // SAFETY: `index < BLOCK_PIDS`, so the pair, its cells and their state bytes lie in
        // the block's allocation; the pointers keep the allocation's provenance (derived from
        // its start), so they stay valid for as long as the allocation.
        unsafe {
            let pair = self.pairs.as_ptr().add(index).cast::<Entry<F>>();
            let first_state = self.states.as_ptr().add(index * CELLS_PER_PID).cast_const();
            [
                HomeCell {
                    entry: pair,
                    state: first_state,
                },
                HomeCell {
                    entry: pair.add(1),
                    state: first_state.add(1),
                },
            ]
        }
    }
}

impl<F: Send + Sync + 'static> Drop for Block<F> {
    fn drop(&mut self) {
        let Some(memory) = self.memory.take() else {
            return;
        };
        if memory.all_free() {
            drop(memory);
        } else {
            lock(&QUARANTINE).push(memory);
        }
    }
}

/// Blocks of dropped page caches with cells still retired, freed by [`sweep_quarantine`].
static QUARANTINE: Mutex<Vec<BlockMemory>> = Mutex::new(Vec::new());

/// Frees the quarantined blocks whose cells are all free now.
fn sweep_quarantine() {
    lock(&QUARANTINE).retain(|block| !block.all_free());
}

/// The page cache's home cells.
pub(crate) struct HomeCells<F: Send + Sync + 'static> {
    /// Off ([`crate::ConfigBuilder::home_cells`]), no block is ever allocated: no cell is
    /// claimed, so every entry goes on the heap, and a read's prefetch finds no block.
    enabled: bool,
    /// Blocks by number (`pid / BLOCK_PIDS`).
    blocks: PageTable<Block<F>>,
    /// How many blocks were allocated.
    n_blocks: AtomicU64,
}

/// What installing an entry gives: the installed pointer, or on a lost CAS the slot's value
/// and the entry back (boxed: a lost CAS is rare, and the result stays small).
pub(crate) type Installed<'g, F> =
    Result<Shared<'g, Entry<F>>, (Shared<'g, Entry<F>>, Box<Entry<F>>)>;

/// A cell a writer claimed: it must either install an entry there ([`HomeCells::install`])
/// or give it back (dropping this does).
pub(crate) struct Claimed<'h, F: Send + Sync + 'static> {
    /// The page the cell belongs to.
    pid: u64,
    cell: HomeCell<F>,
    /// A claim does not outlive the cells (whose blocks it points into).
    _cells: PhantomData<&'h HomeCells<F>>,
}

impl<F: Send + Sync + 'static> Drop for Claimed<'_, F> {
    fn drop(&mut self) {
        // Nothing was published from it: free it again.
        self.cell.state().store(CELL_FREE, Ordering::Release);
    }
}

impl<F: Send + Sync + 'static> HomeCells<F> {
    /// No blocks yet; sweeps the quarantine of earlier page caches. When not `enabled`, no
    /// cell is ever handed out.
    pub(crate) fn new(enabled: bool) -> Self {
        sweep_quarantine();
        HomeCells {
            enabled,
            blocks: PageTable::new(),
            n_blocks: AtomicU64::new(0),
        }
    }

    /// Bytes of the blocks allocated.
    pub(crate) fn allocated_bytes(&self) -> u64 {
        let (layout, _) = Block::<F>::layout();
        self.n_blocks.load(Ordering::Relaxed) * layout.size() as u64
    }

    /// The two cells of `pid`, if its block exists (allocating it when `create` is set).
    fn cells(&self, pid: u64, create: bool, guard: &Guard) -> Option<[HomeCell<F>; CELLS_PER_PID]> {
        if pid >= PAGE_ID_LIMIT {
            return None;
        }
        let block_number = pid / BLOCK_PIDS;
        let mut block = self.blocks.load(block_number, guard);
        if block.is_null() && create {
            let fresh = Owned::new(Block::zeroed());
            block = match self.blocks.cas(block_number, Shared::null(), fresh, guard) {
                Ok(installed) => {
                    self.n_blocks.fetch_add(1, Ordering::Relaxed);
                    installed
                }
                // Another writer installed one first; ours is dropped unused.
                Err((current, _ours)) => current,
            };
        }
        // SAFETY: blocks are installed once and freed only when `self.blocks` drops (`&self`
        // keeps it alive), and were fully initialised before their release CAS.
        let block = unsafe { block.as_ref() }?;
        Some(block.cells((pid % BLOCK_PIDS) as usize))
    }

    /// Starts loading the first line of both cells of `pid` (a no-op if its block does not
    /// exist). Call it before loading the page's slot.
    pub(crate) fn prefetch(&self, pid: u64, guard: &Guard) {
        if let Some([first, second]) = self.cells(pid, false, guard) {
            prefetch_line(first.entry);
            prefetch_line(second.entry);
        }
    }

    /// Starts loading the cells of `pid` other than `current` (the page's entry now) and
    /// their state bytes: a writer calls it before the work that builds its entry, so the
    /// cell it then claims and fills is in its cache (nothing if the block does not exist).
    pub(crate) fn prefetch_free(&self, pid: u64, current: *const Entry<F>, guard: &Guard) {
        if let Some(cells) = self.cells(pid, false, guard) {
            // A page's two state bytes share a line.
            prefetch_line(cells[0].state);
            for cell in cells {
                if !std::ptr::eq(cell.entry, current) {
                    prefetch_lines(cell.entry, std::mem::size_of::<Entry<F>>());
                }
            }
        }
    }

    /// A free cell of `pid` other than `current` (the page's entry now), claimed for the
    /// caller; `None` when both are busy or `pid` is out of range.
    pub(crate) fn claim(
        &self,
        pid: u64,
        current: *const Entry<F>,
        guard: &Guard,
    ) -> Option<Claimed<'_, F>> {
        if !self.enabled {
            return None;
        }
        let cells = self.cells(pid, true, guard)?;
        cells
            .into_iter()
            // The current entry's cell is busy anyway: skip a CAS bound to fail.
            .filter(|cell| !std::ptr::eq(cell.entry, current))
            .find(|cell| {
                cell.state()
                    .compare_exchange(CELL_FREE, CELL_BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .map(|cell| Claimed {
                pid,
                cell,
                _cells: PhantomData,
            })
    }

    /// Writes `entry` into `claimed` and CASes the slot of `pid` in `table` from `current` to
    /// it. On a lost CAS the cell is freed and the entry comes back with the slot's value.
    pub(crate) fn install<'g>(
        table: &PageTable<Entry<F>>,
        pid: u64,
        current: Shared<'g, Entry<F>>,
        claimed: Claimed<'_, F>,
        entry: Entry<F>,
        guard: &'g Guard,
    ) -> Installed<'g, F> {
        debug_assert_eq!(claimed.pid, pid, "a cell is installed for its own page");
        let cell = claimed.cell.entry;
        // SAFETY: the claim gave this thread the cell alone (its state went from free to
        // busy by our CAS, which synchronised with the release store that freed it), and a
        // free cell holds no entry to overwrite: a retired one was dropped in place before it
        // was freed. No reader can hold the cell: it was unlinked and the epoch waited out
        // every reader pinned before, or it was never published.
        unsafe { cell.write(entry) };
        match table.cas_shared(pid, current, Shared::from(cell.cast_const()), guard) {
            Ok(installed) => {
                // Installed: the cell is the page's now, busy until it is retired.
                std::mem::forget(claimed);
                Ok(installed)
            }
            Err(actual) => {
                // SAFETY: the CAS lost, so the pointer was never published: this thread
                // still owns the entry it wrote, and moves it out once. Dropping `claimed`
                // then frees the cell.
                let entry = unsafe { cell.read() };
                Err((actual, Box::new(entry)))
            }
        }
    }

    /// The home cell of `pid` that `entry` is in, if it is one.
    pub(crate) fn cell_of(
        &self,
        pid: u64,
        entry: *const Entry<F>,
        guard: &Guard,
    ) -> Option<HomeCell<F>> {
        self.cells(pid, false, guard)?
            .into_iter()
            .find(|cell| std::ptr::eq(cell.entry, entry))
    }

    /// Retires `unlinked`, a home cell whose entry a successful CAS just replaced: once no
    /// reader pinned now can hold it, its entry is dropped in place and the cell freed. Only
    /// the thread whose CAS unlinked the entry calls this, once.
    pub(crate) fn retire(unlinked: HomeCell<F>, guard: &Guard) {
        let retired = RetiredCell(unlinked);
        guard.defer(move || {
            // A method call moves the whole wrapper in (a pattern would capture its fields).
            let cell = retired.into_cell();
            // SAFETY: the caller's CAS unlinked the cell, so no new reader can reach it, and
            // `defer` runs this only after every guard pinned before is dropped. Only the
            // thread whose CAS unlinked it retires it, once. The block is alive: it is freed
            // only when no cell is busy (see the module doc), and this cell stays busy until
            // the store below, after which nothing here touches the block.
            unsafe { std::ptr::drop_in_place(cell.entry) };
            cell.state().store(CELL_FREE, Ordering::Release);
        });
    }

    /// Moves every entry of `table` that sits in a home cell out of the table (the slot is
    /// left null), dropping it and freeing its cell. The page cache calls this as it drops,
    /// so that the table frees only heap entries and a block's busy cells are only retired
    /// ones. `&mut`: nothing else can reach the table.
    pub(crate) fn take_installed(&mut self, table: &mut PageTable<Entry<F>>) {
        // SAFETY: `&mut` on both: no other thread can pin and read these entries, or write.
        let guard = unsafe { crossbeam_epoch::unprotected() };
        let mut in_cells = Vec::new();
        table.for_each_in(0, PAGE_ID_LIMIT, guard, |pid, entry| {
            if let Some(cell) = self.cell_of(pid, entry.as_raw(), guard) {
                in_cells.push((pid, entry, cell));
            }
        });
        // Every cell leaves the table before any entry is dropped: a fragment's `Drop` may
        // panic, and the table must then hold no cell (its `Drop` would free it as a `Box`).
        // The cells not dropped yet stay busy, so their block is quarantined for good: a
        // leak, not a free of memory in use.
        for &(pid, entry, _) in &in_cells {
            let emptied = table.cas_shared(pid, entry, Shared::null(), guard);
            debug_assert!(emptied.is_ok(), "nothing else writes the table");
        }
        for (_, _, cell) in in_cells {
            // SAFETY: the entry was installed in this cell and is unlinked now; with `&mut`
            // on the table no reader holds it. It is dropped once, here.
            unsafe { std::ptr::drop_in_place(cell.entry) };
            cell.state().store(CELL_FREE, Ordering::Release);
        }
    }
}

impl<F: Send + Sync + 'static> Drop for HomeCells<F> {
    /// Sweeps the quarantine of earlier page caches (this one's blocks drop after this, and
    /// those with retired cells join it, for the next sweep).
    fn drop(&mut self) {
        sweep_quarantine();
    }
}

/// A retired cell, moved into its deferred function.
struct RetiredCell<F>(HomeCell<F>);

// SAFETY: the deferred function may run on another thread; it drops the entry (`Entry<F>` is
// `Send` when `F` is; `Sync` too, as readers on other threads shared it) and stores to the
// state atomic, and the block stays allocated until it has (module doc).
unsafe impl<F: Send + Sync> Send for RetiredCell<F> {}

impl<F> RetiredCell<F> {
    fn into_cell(self) -> HomeCell<F> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use crossbeam_epoch as epoch;

    use super::*;
    use crate::entry::{Chain, Charged, PageState, Resident};
    use crate::location::PackedLocation;

    /// Counts its drops, so a test sees when a retired entry's value was dropped.
    struct Counted(&'static AtomicUsize);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn entry<F>(version: u64, value: F) -> Entry<F> {
        let geometry = iobuf::Geometry::new(1 << 20).expect("a valid segment length");
        let location = iobuf::Location {
            lsn: iobuf::Lsn(version * 100),
            file_offset: version * 100,
            len_bytes: 100,
            stored: iobuf::Stored::Inline,
        };
        let location = PackedLocation::pack(location, geometry).expect("packable");
        Entry::new(
            version,
            PageState::Live(
                Chain::one(location),
                Resident::Merged(Charged {
                    value,
                    size_bytes: 1,
                }),
            ),
        )
    }

    /// Pins and flushes until `done` holds (the epoch moves on once no thread is pinned).
    fn collect_until(done: impl Fn() -> bool) {
        for _ in 0..100_000 {
            if done() {
                return;
            }
            epoch::pin().flush();
        }
        panic!("the epoch never ran the deferred functions");
    }

    #[test]
    fn a_block_keeps_its_state_bytes_apart_from_cells_that_start_cache_lines() {
        let (layout, pairs_offset) = Block::<Vec<u8>>::layout();
        assert_eq!(pairs_offset, STATES_PER_BLOCK);
        assert_eq!(layout.align(), 64);
        assert_eq!(
            layout.size(),
            772 * 1024,
            "the size the docs give (lib.rs, Stats::home_cell_bytes)"
        );
        let block = Block::<Vec<u8>>::zeroed();
        let start = block.states.as_ptr() as usize;
        assert!(block.memory.as_ref().is_some_and(|memory| {
            memory.start.as_ptr() as usize == start && memory.contains(start + layout.size() - 1)
        }));
        for index in [0, 1, BLOCK_PIDS as usize - 1] {
            for (k, cell) in block.cells(index).into_iter().enumerate() {
                assert_eq!(cell.state as usize, start + index * CELLS_PER_PID + k);
                assert_eq!(cell.entry as usize % 64, 0, "cells start cache lines");
                assert!(cell.entry as usize >= start + pairs_offset);
                assert!(
                    cell.entry as usize + std::mem::size_of::<Entry<Vec<u8>>>()
                        <= start + layout.size()
                );
            }
        }
    }

    #[test]
    fn cells_turned_off_hand_out_nothing_and_allocate_no_block() {
        let home = HomeCells::<u32>::new(false);
        let guard = epoch::pin();
        assert!(home.claim(5, std::ptr::null(), &guard).is_none());
        home.prefetch(5, &guard);
        home.prefetch_free(5, std::ptr::null(), &guard);
        assert!(home.cell_of(5, std::ptr::null(), &guard).is_none());
        assert_eq!(home.allocated_bytes(), 0);
    }

    #[test]
    fn each_cell_is_claimed_once_and_a_dropped_claim_frees_it() {
        let home = HomeCells::<u32>::new(true);
        let guard = epoch::pin();
        assert_eq!(home.allocated_bytes(), 0);
        let first = home
            .claim(5000, std::ptr::null(), &guard)
            .expect("a free cell");
        assert_eq!(
            home.allocated_bytes(),
            Block::<u32>::layout().0.size() as u64
        );
        let second = home
            .claim(5000, std::ptr::null(), &guard)
            .expect("the other cell");
        assert!(!std::ptr::eq(first.cell.entry, second.cell.entry));
        assert!(
            home.claim(5000, std::ptr::null(), &guard).is_none(),
            "both are busy"
        );
        assert!(home.cell_of(5000, first.cell.entry, &guard).is_some());
        assert!(
            home.cell_of(5001, first.cell.entry, &guard).is_none(),
            "a cell belongs to one page"
        );
        let first_cell = first.cell.entry;
        drop(first);
        let again = home
            .claim(5000, std::ptr::null(), &guard)
            .expect("freed by the drop");
        assert!(std::ptr::eq(again.cell.entry, first_cell));
        drop((again, second));
        // The cell holding the current entry is never claimed, even when free.
        let other = home
            .claim(5000, first_cell, &guard)
            .expect("the other cell");
        assert!(!std::ptr::eq(other.cell.entry, first_cell));
        drop(other);
        assert!(
            home.claim(PAGE_ID_LIMIT, std::ptr::null(), &guard)
                .is_none()
        );
    }

    #[test]
    fn an_installed_cell_is_freed_only_after_it_is_retired_and_the_epoch_moves_on() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let mut home = HomeCells::<Counted>::new(true);
        let mut table = PageTable::new();
        {
            let guard = epoch::pin();
            let claimed = home.claim(7, std::ptr::null(), &guard).expect("free");
            let first_cell = claimed.cell.entry;
            let installed = HomeCells::install(
                &table,
                7,
                Shared::null(),
                claimed,
                entry(1, Counted(&DROPS)),
                &guard,
            )
            .unwrap_or_else(|_| panic!("the slot was null"));
            assert!(std::ptr::eq(installed.as_raw(), first_cell));
            // A stale CAS gives the entry back and frees the claimed cell.
            let claimed = home
                .claim(7, installed.as_raw(), &guard)
                .expect("the other cell");
            let other_cell = claimed.cell.entry;
            let lost = HomeCells::install(
                &table,
                7,
                Shared::null(),
                claimed,
                entry(2, Counted(&DROPS)),
                &guard,
            );
            let (actual, back) = lost.expect_err("the slot is not null any more");
            assert!(std::ptr::eq(actual.as_raw(), first_cell));
            assert_eq!(back.version, 2);
            drop(back);
            assert_eq!(
                DROPS.load(Ordering::SeqCst),
                1,
                "the entry given back was dropped"
            );
            // Replace the first entry, then retire it while still pinned.
            let claimed = home
                .claim(7, first_cell, &guard)
                .expect("freed by the lost CAS");
            assert!(std::ptr::eq(claimed.cell.entry, other_cell));
            let replaced = HomeCells::install(
                &table,
                7,
                installed,
                claimed,
                entry(3, Counted(&DROPS)),
                &guard,
            )
            .unwrap_or_else(|_| panic!("the slot held the first entry"));
            let retired = home
                .cell_of(7, installed.as_raw(), &guard)
                .expect("a home cell");
            HomeCells::retire(retired, &guard);
            assert!(
                home.claim(7, replaced.as_raw(), &guard).is_none(),
                "a retired cell stays busy while a reader may hold it"
            );
            assert!(
                home.claim(7, std::ptr::null(), &guard).is_none(),
                "and so does the installed one"
            );
            assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        }
        collect_until(|| DROPS.load(Ordering::SeqCst) == 2);
        let guard = epoch::pin();
        let current = table.load(7, &guard);
        let claimed = home
            .claim(7, current.as_raw(), &guard)
            .expect("freed by the epoch");
        drop(claimed);
        drop(guard);
        home.take_installed(&mut table);
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            3,
            "the installed entry was dropped"
        );
        assert!(table.load(7, &epoch::pin()).is_null());
    }

    #[test]
    fn a_block_with_retired_cells_outlives_its_page_cache_until_they_are_freed() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let mut home = HomeCells::<Counted>::new(true);
        let mut table = PageTable::new();
        let pinned = epoch::pin();
        let claimed = home.claim(9, std::ptr::null(), &pinned).expect("free");
        let first_cell = claimed.cell.entry as usize;
        let first = HomeCells::install(
            &table,
            9,
            Shared::null(),
            claimed,
            entry(1, Counted(&DROPS)),
            &pinned,
        )
        .unwrap_or_else(|_| panic!("the slot was null"));
        let claimed = home
            .claim(9, first.as_raw(), &pinned)
            .expect("the other cell");
        HomeCells::install(
            &table,
            9,
            first,
            claimed,
            entry(2, Counted(&DROPS)),
            &pinned,
        )
        .unwrap_or_else(|_| panic!("the slot held the first entry"));
        let retired = home
            .cell_of(9, first.as_raw(), &pinned)
            .expect("a home cell");
        HomeCells::retire(retired, &pinned);
        // Drop the cells while the retired one waits for the epoch (this thread is pinned).
        home.take_installed(&mut table);
        drop(home);
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            1,
            "only the installed entry is dropped"
        );
        let quarantined = || {
            lock(&QUARANTINE)
                .iter()
                .any(|block| block.contains(first_cell))
        };
        assert!(quarantined(), "the block waits for its retired cell");
        drop(pinned);
        collect_until(|| DROPS.load(Ordering::SeqCst) == 2);
        sweep_quarantine();
        assert!(!quarantined(), "freed once every cell is free");
    }

    /// Writers race on one page's cells (heap entries when both are busy) while readers
    /// check every entry they load is whole; run under Miri, this checks the protocol for
    /// data races (`MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-permissive-provenance
    /// -Zmiri-ignore-leaks" cargo +nightly miri test -p pagecache --lib home`: crossbeam-epoch
    /// itself needs the first two, and its garbage left at exit is not ours).
    #[test]
    fn writers_racing_on_one_page_never_let_a_reader_see_a_torn_entry() {
        const N_WRITES_PER_WRITER: u64 = if cfg!(miri) { 40 } else { 2000 };
        let mut home = HomeCells::<Vec<u64>>::new(true);
        let mut table = PageTable::new();
        {
            let guard = epoch::pin();
            let installed = HomeCells::install(
                &table,
                3,
                Shared::null(),
                home.claim(3, std::ptr::null(), &guard).expect("free"),
                entry(0, vec![0; 4]),
                &guard,
            );
            assert!(installed.is_ok());
        }
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut n_written = 0;
                    while n_written < N_WRITES_PER_WRITER {
                        let guard = epoch::pin();
                        let current = table.load(3, &guard);
                        let version = crate::entry::entry_ref(current).expect("live").version;
                        let next = entry(version + 1, vec![version + 1; 4]);
                        let installed = match home.claim(3, current.as_raw(), &guard) {
                            Some(claimed) => {
                                HomeCells::install(&table, 3, current, claimed, next, &guard)
                            }
                            None => table
                                .cas(3, current, crate::entry::new_owned(next), &guard)
                                .map_err(|(actual, lost)| (actual, lost.into_box())),
                        };
                        if installed.is_ok() {
                            n_written += 1;
                            match home.cell_of(3, current.as_raw(), &guard) {
                                Some(cell) => HomeCells::retire(cell, &guard),
                                None => crate::entry::retire(&guard, current),
                            }
                        }
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..N_WRITES_PER_WRITER {
                    let guard = epoch::pin();
                    let entry = crate::entry::entry_ref(table.load(3, &guard)).expect("live");
                    let value = entry.merged().expect("resident");
                    assert_eq!(value, &vec![entry.version; 4], "a whole entry");
                }
            });
        });
        let guard = epoch::pin();
        let last = crate::entry::entry_ref(table.load(3, &guard)).expect("live");
        assert_eq!(last.version, 2 * N_WRITES_PER_WRITER);
        drop(guard);
        home.take_installed(&mut table);
    }

    /// A fragment whose drop panics while it is armed.
    struct Bomb(&'static AtomicBool);

    impl Drop for Bomb {
        fn drop(&mut self) {
            if self.0.swap(false, Ordering::SeqCst) {
                panic!("a fragment's drop panics");
            }
        }
    }

    /// What `Inner` does as it drops: takes the installed cells out, then drops the table.
    struct TableAndCells {
        table: PageTable<Entry<Bomb>>,
        home: HomeCells<Bomb>,
    }

    impl Drop for TableAndCells {
        fn drop(&mut self) {
            self.home.take_installed(&mut self.table);
        }
    }

    /// Regression (found by review under Miri): `take_installed` dropped each entry as it
    /// took it out, so a panicking fragment left later pages' cells in the table, whose
    /// `Drop` then freed them as boxes (`free(): invalid pointer`).
    #[test]
    fn a_panicking_fragment_drop_at_close_leaves_no_cell_in_the_table() {
        static ARMED: AtomicBool = AtomicBool::new(false);
        let both = TableAndCells {
            table: PageTable::new(),
            home: HomeCells::new(true),
        };
        {
            let guard = epoch::pin();
            for pid in [1, 2] {
                let claimed = both
                    .home
                    .claim(pid, std::ptr::null(), &guard)
                    .expect("free");
                let installed = HomeCells::install(
                    &both.table,
                    pid,
                    Shared::null(),
                    claimed,
                    entry(1, Bomb(&ARMED)),
                    &guard,
                );
                assert!(installed.is_ok());
            }
        }
        ARMED.store(true, Ordering::SeqCst);
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(both)));
        assert!(dropped.is_err(), "the fragment's panic reaches the caller");
    }

    /// A thread runs a retired cell's deferred drop while another drops the block and sweeps
    /// the quarantine, and a reader sets the CLOCK bit of the entries it loads (for Miri).
    #[test]
    fn a_deferred_free_racing_the_block_drop_and_the_sweep_is_safe() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let home = Arc::new(HomeCells::<Counted>::new(true));
        let table = Arc::new(PageTable::new());
        let (retired_tx, retired_rx) = std::sync::mpsc::channel::<usize>();
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        let retiring = {
            let (home, table) = (Arc::clone(&home), Arc::clone(&table));
            std::thread::spawn(move || {
                let guard = epoch::pin();
                let claimed = home.claim(11, std::ptr::null(), &guard).expect("free");
                let first = HomeCells::install(
                    &table,
                    11,
                    Shared::null(),
                    claimed,
                    entry(1, Counted(&DROPS)),
                    &guard,
                )
                .unwrap_or_else(|_| panic!("the slot was null"));
                let claimed = home.claim(11, first.as_raw(), &guard).expect("the other");
                HomeCells::install(
                    &table,
                    11,
                    first,
                    claimed,
                    entry(2, Counted(&DROPS)),
                    &guard,
                )
                .unwrap_or_else(|_| panic!("the slot held the first entry"));
                let cell = home.cell_of(11, first.as_raw(), &guard).expect("a cell");
                HomeCells::retire(cell, &guard);
                drop(guard);
                drop((home, table));
                retired_tx
                    .send(cell.entry as usize)
                    .expect("the main thread waits");
                // Run the deferred drop here, while the main thread drops and sweeps.
                dropped_rx.recv().expect("the main thread sends");
                // The installed entry was dropped by `take_installed`; this is the retired one.
                collect_until(|| DROPS.load(Ordering::SeqCst) == 2);
            })
        };
        let reading = {
            let (home, table) = (Arc::clone(&home), Arc::clone(&table));
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let guard = epoch::pin();
                    home.prefetch(11, &guard);
                    if let Some(entry) = crate::entry::entry_ref(table.load(11, &guard)) {
                        entry.touch();
                        assert!(entry.version >= 1);
                    }
                }
            })
        };
        let cell = retired_rx.recv().expect("the retiring thread sends");
        reading.join().expect("the reader passes");
        let (Ok(mut home), Ok(mut table)) = (Arc::try_unwrap(home), Arc::try_unwrap(table)) else {
            panic!("both threads let go of the cells and the table");
        };
        home.take_installed(&mut table);
        drop((home, table));
        dropped_tx.send(()).expect("the retiring thread waits");
        let quarantined = || lock(&QUARANTINE).iter().any(|block| block.contains(cell));
        // Sweep while the retiring thread frees the cell, then once more after.
        while !retiring.is_finished() && quarantined() {
            sweep_quarantine();
            std::thread::yield_now();
        }
        retiring.join().expect("the retiring thread passes");
        sweep_quarantine();
        assert!(!quarantined(), "the block was freed once its cell was");
    }
}
