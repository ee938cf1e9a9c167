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
//! Every cell has a state byte, which is the [`Entry::cell_state`] field of the entry it holds
//! (a field written by [`Entry::new`] as [`CELL_BUSY`], and zero, [`CELL_FREE`], in a block
//! that was never written):
//!
//! - A writer **claims** a free cell other than the one the page's current entry is in, with a
//!   CAS of its state from free to busy. Only the claimer writes the cell.
//! - It writes its entry there and installs a pointer to it with the page's usual CAS. If that
//!   CAS loses, nobody ever saw the cell: the writer takes the entry back and frees the cell.
//! - When a later CAS replaces the entry, the cell is **retired** through the epoch: once no
//!   pinned reader can hold it, a deferred function drops the entry in place and stores
//!   free (release), its last access to the block.
//! - A writer that finds no free cell (the page was written twice within one epoch's grace
//!   period) builds its entry on the heap, as before home cells; entries built while opening
//!   are on the heap too. The table holds both kinds; a pointer is a home cell of its page
//!   exactly when it equals one of the page's two cell addresses.
//!
//! # Blocks and their lifetime
//!
//! Cells come in blocks of [`BLOCK_PIDS`] page ids (768 KiB with a 192-byte entry), found
//! through a [`PageTable`] indexed by block number and allocated zeroed on the first claim in
//! them. Memory is therefore proportional to the ids in use, in steps of a block.
//!
//! A retired cell's deferred function may run after the page cache is gone, on any thread
//! (crossbeam keeps it in the retiring thread's bag until then). So a block is not freed
//! while any of its cells is busy: when the cells are dropped, a block with busy cells is put
//! in a process-wide quarantine and freed by a later sweep (at the next drop or creation of
//! any home cells) once every cell is free. Before that, the cache empties its table of the
//! entries in cells ([`HomeCells::take_installed`]), so only retired cells can still be busy:
//! at most a few bags of crossbeam garbage per thread.
//!
//! # Deliberately not done
//!
//! - No bookkeeping per write beyond the claim: the deferred function holds a raw pointer,
//!   not a reference count, so writes on different threads share no counter.
//! - Blocks are never shrunk or freed while the page cache is open.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use crossbeam_epoch::{Guard, Owned, Shared};

use crate::cache::lock;
use crate::entry::Entry;
use crate::table::{PAGE_ID_LIMIT, PageTable, prefetch_line};

/// A cell no entry is in (zeroed memory reads as this).
pub(crate) const CELL_FREE: u8 = 0;
/// A cell claimed by a writer, holding an installed entry, or retired and not yet dropped.
pub(crate) const CELL_BUSY: u8 = 1;

/// Page ids per block of cells.
pub(crate) const BLOCK_PIDS: u64 = 2048;

/// A page's two cells, aligned so that each entry of a 64-byte multiple starts a cache line.
#[repr(C, align(64))]
struct Pair<F>([UnsafeCell<MaybeUninit<Entry<F>>>; 2]);

/// The cells of [`BLOCK_PIDS`] consecutive page ids.
struct Block<F: Send + Sync + 'static> {
    /// `None` only once `Drop` has moved the cells out (to free them or quarantine them).
    pairs: Option<Box<[Pair<F>]>>,
}

// SAFETY: a block hands its cells out by CAS on their state bytes (only the claimer writes a
// cell) and publishes an entry only through the page table's release CAS; entries are `Send`
// and `Sync` when `F` is, as the table requires for heap entries.
unsafe impl<F: Send + Sync + 'static> Sync for Block<F> {}
// SAFETY: as above; a block owns no thread-bound state.
unsafe impl<F: Send + Sync + 'static> Send for Block<F> {}

/// A page's home cells.
pub(crate) struct HomeCells<F: Send + Sync + 'static> {
    /// Blocks by number (`pid / BLOCK_PIDS`).
    blocks: PageTable<Block<F>>,
}

/// What installing an entry gives: the installed pointer, or on a lost CAS the slot's value
/// and the entry back (boxed: a lost CAS is rare, and the result stays small).
pub(crate) type Installed<'g, F> =
    Result<Shared<'g, Entry<F>>, (Shared<'g, Entry<F>>, Box<Entry<F>>)>;

/// A cell a writer claimed: it must either install an entry there ([`HomeCells::install`])
/// or give it back (dropping this does).
pub(crate) struct Claimed<F> {
    cell: *mut Entry<F>,
}

impl<F> Drop for Claimed<F> {
    fn drop(&mut self) {
        // Nothing was published from it: free it again.
        state(self.cell).store(CELL_FREE, Ordering::Release);
    }
}

/// The state byte of `cell`.
fn state<'a, F>(cell: *const Entry<F>) -> &'a AtomicU8 {
    // SAFETY: `cell` points into a live block (callers hold one, or run before the block's
    // last state store, see the module doc). The state byte is initialised in every cell:
    // zeroed with the block, then written with each entry and by each free; it is only ever
    // accessed through this atomic, never through a reference to the whole entry while the
    // cell is free. `addr_of!` makes no reference to the (possibly dropped) entry.
    unsafe { &*std::ptr::addr_of!((*cell).cell_state) }
}

impl<F: Send + Sync + 'static> HomeCells<F> {
    /// No blocks yet; sweeps the quarantine of earlier page caches.
    pub(crate) fn new() -> Self {
        sweep_quarantine();
        HomeCells {
            blocks: PageTable::new(),
        }
    }

    /// The two cells of `pid`, if its block exists (allocating it when `create` is set).
    fn cells(&self, pid: u64, create: bool, guard: &Guard) -> Option<[*mut Entry<F>; 2]> {
        if pid >= PAGE_ID_LIMIT {
            return None;
        }
        let block_number = pid / BLOCK_PIDS;
        let mut block = self.blocks.load(block_number, guard);
        if block.is_null() && create {
            let fresh = Owned::new(Block::zeroed());
            block = match self.blocks.cas(block_number, Shared::null(), fresh, guard) {
                Ok(installed) => installed,
                // Another writer installed one first; ours is dropped unused.
                Err((current, _ours)) => current,
            };
        }
        // SAFETY: blocks are installed once and freed only when `self.blocks` drops (`&self`
        // keeps it alive), and were fully initialised before their release CAS.
        let block = unsafe { block.as_ref() }?;
        let pairs = block.pairs.as_ref().expect("a live block has its cells");
        let pair = &pairs[(pid % BLOCK_PIDS) as usize];
        Some([pair.0[0].get().cast(), pair.0[1].get().cast()])
    }

    /// Starts loading the first line of both cells of `pid` (a no-op if its block does not
    /// exist). Call it before loading the page's slot.
    pub(crate) fn prefetch(&self, pid: u64, guard: &Guard) {
        if let Some([first, second]) = self.cells(pid, false, guard) {
            prefetch_line(first);
            prefetch_line(second);
        }
    }

    /// A free cell of `pid` other than `current` (the page's entry now), claimed for the
    /// caller; `None` when both are busy or `pid` is out of range.
    pub(crate) fn claim(
        &self,
        pid: u64,
        current: *const Entry<F>,
        guard: &Guard,
    ) -> Option<Claimed<F>> {
        let cells = self.cells(pid, true, guard)?;
        cells
            .into_iter()
            .filter(|&cell| !std::ptr::eq(cell, current))
            .find(|&cell| {
                state(cell)
                    .compare_exchange(CELL_FREE, CELL_BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .map(|cell| Claimed { cell })
    }

    /// Writes `entry` into `claimed` and CASes the slot of `pid` in `table` from `current` to
    /// it. On a lost CAS the cell is freed and the entry comes back with the slot's value.
    pub(crate) fn install<'g>(
        table: &PageTable<Entry<F>>,
        pid: u64,
        current: Shared<'g, Entry<F>>,
        claimed: Claimed<F>,
        entry: Entry<F>,
        guard: &'g Guard,
    ) -> Installed<'g, F> {
        debug_assert_eq!(entry.cell_state.load(Ordering::Relaxed), CELL_BUSY);
        // SAFETY: the claim gave this thread the cell alone (its state went from free to
        // busy by our CAS), and a free cell holds no entry to overwrite: a retired one was
        // dropped in place before it was freed.
        unsafe { claimed.cell.write(entry) };
        let new = Shared::from(claimed.cell.cast_const());
        match table.cas_shared(pid, current, new, guard) {
            Ok(installed) => {
                // Installed: the cell is the page's now, until it is retired.
                std::mem::forget(claimed);
                Ok(installed)
            }
            Err(actual) => {
                // SAFETY: the CAS lost, so the pointer was never published: this thread
                // still owns the entry it wrote, and moves it out once. Dropping `claimed`
                // then frees the cell.
                let entry = unsafe { claimed.cell.read() };
                Err((actual, Box::new(entry)))
            }
        }
    }

    /// Whether `entry` is one of the home cells of `pid`.
    pub(crate) fn holds(&self, pid: u64, entry: *const Entry<F>, guard: &Guard) -> bool {
        self.cells(pid, false, guard)
            .is_some_and(|cells| cells.iter().any(|&cell| std::ptr::eq(cell, entry)))
    }

    /// Retires `unlinked`, a home cell of a page that a successful CAS just replaced: once
    /// no reader pinned now can hold it, its entry is dropped in place and the cell freed.
    pub(crate) fn retire(guard: &Guard, unlinked: *const Entry<F>) {
        let cell = RetiredCell(unlinked.cast_mut());
        guard.defer(move || {
            let cell = cell;
            // SAFETY: the caller's CAS unlinked the cell, so no new reader can reach it, and
            // `defer` runs this only after every guard pinned before is dropped. Only the
            // thread whose CAS unlinked it retires it, once. The block is alive: it is freed
            // only when no cell is busy (see the module doc), and this cell stays busy until
            // the store below, after which nothing here touches the block.
            unsafe { std::ptr::drop_in_place(cell.0) };
            state(cell.0).store(CELL_FREE, Ordering::Release);
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
            if self.holds(pid, entry.as_raw(), guard) {
                in_cells.push((pid, entry));
            }
        });
        for (pid, entry) in in_cells {
            let emptied = table.cas_shared(pid, entry, Shared::null(), guard);
            debug_assert!(emptied.is_ok(), "nothing else writes the table");
            let cell = entry.as_raw().cast_mut();
            // SAFETY: the entry was installed in this cell and is unlinked now; with `&mut`
            // on the table no reader holds it. It is dropped once, here.
            unsafe { std::ptr::drop_in_place(cell) };
            state(cell).store(CELL_FREE, Ordering::Release);
        }
    }
}

/// A retired cell's address, moved into its deferred function.
struct RetiredCell<F>(*mut Entry<F>);

// SAFETY: the deferred function may run on another thread; it drops the entry (`F: Send`) and
// stores to the state atomic, and the block stays allocated until it has (module doc).
unsafe impl<F: Send> Send for RetiredCell<F> {}

impl<F: Send + Sync + 'static> Block<F> {
    /// A block of free cells: all zero bytes (a zero state byte is [`CELL_FREE`]; nothing
    /// else of a free cell is read).
    fn zeroed() -> Block<F> {
        let n_pairs = BLOCK_PIDS as usize;
        let layout = std::alloc::Layout::array::<Pair<F>>(n_pairs).expect("a block's size fits");
        // SAFETY: `layout` has a non-zero size (an entry is never zero-sized). The zeroed
        // memory is a valid `[Pair<F>]`: a pair is only `UnsafeCell<MaybeUninit<_>>`s, valid
        // for any bytes. `Box::from_raw` takes ownership of an allocation made with the
        // global allocator and the same layout, as `Box<[Pair<F>]>` frees it.
        let pairs = unsafe {
            let memory = std::alloc::alloc_zeroed(layout).cast::<Pair<F>>();
            if memory.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(memory, n_pairs))
        };
        Block { pairs: Some(pairs) }
    }
}

/// Cells whose block was dropped while some of them were busy.
trait Quarantined: Send {
    /// Whether every cell is free (so no deferred function will touch them again).
    fn all_free(&self) -> bool;

    /// Whether `address` lies in these cells (for tests).
    #[cfg(test)]
    fn contains(&self, address: usize) -> bool;
}

impl<F: Send + Sync + 'static> Quarantined for Box<[Pair<F>]> {
    #[cfg(test)]
    fn contains(&self, address: usize) -> bool {
        let start = self.as_ptr() as usize;
        (start..start + std::mem::size_of_val(&**self)).contains(&address)
    }

    fn all_free(&self) -> bool {
        self.iter().all(|pair| {
            pair.0
                .iter()
                .all(|cell| state::<F>(cell.get().cast()).load(Ordering::Acquire) == CELL_FREE)
        })
    }
}

/// Blocks of dropped page caches with cells still retired, freed by [`sweep_quarantine`].
static QUARANTINE: Mutex<Vec<Box<dyn Quarantined>>> = Mutex::new(Vec::new());

/// Frees the quarantined blocks whose cells are all free now.
fn sweep_quarantine() {
    let mut quarantine = lock(&QUARANTINE);
    if !quarantine.is_empty() {
        quarantine.retain(|block| !block.all_free());
    }
}

impl<F: Send + Sync + 'static> Drop for Block<F> {
    fn drop(&mut self) {
        let Some(pairs) = self.pairs.take() else {
            return;
        };
        // Free cells hold nothing to drop: a `Pair` is `MaybeUninit`, freed as bytes.
        if pairs.all_free() {
            drop(pairs);
        } else {
            lock(&QUARANTINE).push(Box::new(pairs));
        }
        sweep_quarantine();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

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
    fn each_cell_is_claimed_once_and_a_dropped_claim_frees_it() {
        let home = HomeCells::<u32>::new();
        let guard = epoch::pin();
        let first = home
            .claim(5000, std::ptr::null(), &guard)
            .expect("a free cell");
        let second = home
            .claim(5000, std::ptr::null(), &guard)
            .expect("the other cell");
        assert!(!std::ptr::eq(first.cell, second.cell));
        assert!(
            home.claim(5000, std::ptr::null(), &guard).is_none(),
            "both are busy"
        );
        assert!(home.holds(5000, first.cell, &guard));
        assert!(
            !home.holds(5001, first.cell, &guard),
            "a cell belongs to one page"
        );
        let first_cell = first.cell;
        drop(first);
        let again = home
            .claim(5000, std::ptr::null(), &guard)
            .expect("freed by the drop");
        assert!(std::ptr::eq(again.cell, first_cell));
        drop((again, second));
        // The cell holding the current entry is never claimed, even when free.
        let other = home
            .claim(5000, first_cell, &guard)
            .expect("the other cell");
        assert!(!std::ptr::eq(other.cell, first_cell));
        drop(other);
        assert!(
            home.claim(PAGE_ID_LIMIT, std::ptr::null(), &guard)
                .is_none()
        );
    }

    #[test]
    fn an_installed_cell_is_freed_only_after_it_is_retired_and_the_epoch_moves_on() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let mut home = HomeCells::<Counted>::new();
        let mut table = PageTable::new();
        {
            let guard = epoch::pin();
            let claimed = home.claim(7, std::ptr::null(), &guard).expect("free");
            let first_cell = claimed.cell;
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
            let other_cell = claimed.cell;
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
            assert!(std::ptr::eq(claimed.cell, other_cell));
            let replaced = HomeCells::install(
                &table,
                7,
                installed,
                claimed,
                entry(3, Counted(&DROPS)),
                &guard,
            )
            .unwrap_or_else(|_| panic!("the slot held the first entry"));
            HomeCells::retire(&guard, installed.as_raw());
            assert!(
                home.claim(7, replaced.as_raw(), &guard).is_none(),
                "a retired cell stays busy while a reader may hold it"
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
        let mut home = HomeCells::<Counted>::new();
        let mut table = PageTable::new();
        let pinned = epoch::pin();
        let claimed = home.claim(9, std::ptr::null(), &pinned).expect("free");
        let first_cell = claimed.cell as usize;
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
        HomeCells::retire(&pinned, first.as_raw());
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
}
