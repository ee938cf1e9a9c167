//! The page cache itself: page operations, reads with page-in, eviction, cleaning, roots and
//! ids. Opening (replay) is in `open.rs`, snapshots in `snapshot.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_epoch::{self as epoch, Guard, Shared};
use iobuf::{Geometry, Log, LogMetrics, Lsn, PageId, Reservation};
use recovery::SnapshotStore;

use crate::bases::BaseIndex;
use crate::cleaner_thread::{BackgroundCleaner, LEAD_STEPS, Pass};
use crate::config::Config;
use crate::entry::{
    Chain, Charged, Entry, PageState, Resident, Version, entry_ref, new_owned, park, retire,
};
use crate::error::{Error, Result};
use crate::home::{HomeCells, Installed};
use crate::location::{MAX_RECORD_LEN_BYTES, PackedLocation};
use crate::materializer::Materializer;
use crate::metrics::Metrics;
use crate::record::{self, Meta, RECORD_HEADER_LEN, RecordKind};
use crate::table::{self, PAGE_ID_LIMIT, PageTable};

/// How many steps of [`Inner::cleaning_step_bytes`] the log span may run past the space
/// target before every write takes its share of cleaning, waiting for the cleaner's lock if
/// need be (a whole segment at four steps).
const MAX_CLEANING_STEPS: u64 = 4;

/// The most pages a write takes from the cleaner's list at a time (and prefetches together).
const MAX_CLEANING_BATCH: usize = 64;
/// How long a thread that must clean waits for the last pages of a segment lent to another
/// thread (see [`Inner::clean_some`]): longer than a scheduler's time slice, so a holder
/// that was only descheduled gets back to them.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// The longest root name, in bytes.
pub const MAX_ROOT_NAME_LEN_BYTES: usize = 1024;

/// A page's merged value and the version it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<F> {
    /// Pass this to the next write of the page.
    pub version: Version,
    /// The chain merged by the materializer.
    pub value: F,
}

/// A page's merged value borrowed from the cache, and the version it was read at: what
/// [`PageCache::get_pinned`] returns. It lives as long as the [`Pinned`] it was read under.
#[derive(Debug, PartialEq, Eq)]
pub struct PageRef<'g, F> {
    /// Pass this to the next write of the page.
    pub version: Version,
    /// The chain merged by the materializer.
    pub value: &'g F,
}

// Derived `Clone`/`Copy` would require `F: Clone`/`F: Copy`; a borrow is copyable anyway.
impl<F> Clone for PageRef<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for PageRef<'_, F> {}

/// A pinned epoch of the page cache's memory reclamation: while it lives, nothing a
/// [`PageCache::get_pinned`] under it returned is freed. Values replaced or evicted meanwhile
/// are freed once it (and every other pin taken before) is dropped, so hold it for the span
/// of one traversal, not longer: a pin kept for seconds keeps the garbage of those seconds.
/// It cannot leave its thread.
pub struct Pinned {
    guard: Guard,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// A successful write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The page's new version.
    pub version: Version,
    /// The write's LSN: [`PageCache::make_stable`] on it makes just this write (and everything
    /// before it in the log) durable.
    pub lsn: Lsn,
}

/// A write refused because the page changed since the caller read it. Nothing was written and
/// nothing changed; the caller's fragment comes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale<T> {
    /// The page's current version, or `None` if the page is free.
    pub current: Option<Version>,
    /// What the caller passed in.
    pub fragment: T,
}

/// Sizes, in bytes, of what the page cache holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of decoded fragments resident in memory (what the budget bounds).
    pub resident_bytes: u64,
    /// The configured budget.
    pub cache_budget_bytes: u64,
    /// Bytes of the data file that live pages (and the metadata record) occupy.
    pub live_bytes: u64,
    /// Bytes of log from the oldest segment not yet cleaned to the tip.
    pub log_span_bytes: u64,
    /// The data file's length.
    pub file_len_bytes: u64,
    /// Memory of the page table's nodes.
    pub page_table_bytes: u64,
    /// Memory of the blocks of home cells, where entries are built: 772 KiB with `Vec`
    /// fragments (two entries and two state bytes per id) per range of 2048 page ids with a
    /// write, page-in, eviction or relocation since open.
    pub home_cell_bytes: u64,
    /// One more than the highest page id ever allocated.
    pub page_id_high_water: u64,
}

/// What the cleaner is working through: the bases of the oldest segment not yet released.
#[derive(Debug)]
pub(crate) struct CleanerState {
    /// Pages with a base record in the segment at the cleaning cursor
    /// ([`Inner::clean_cursor`]) not yet handed out, last first.
    pending: Vec<PageId>,
    /// The end of the segment `pending` came from (`None` when nothing is loaded).
    loaded_segment_end: Option<Lsn>,
    /// How many pages `pending` held when that segment was loaded.
    n_loaded: usize,
    /// Batches taken from `pending` that are still being relocated (outside the lock).
    n_batches_out: usize,
    /// Threads waiting on [`Inner::batches_back`] for those batches to come back.
    n_waiting_for_batches: usize,
    /// Batches given back since open: a wait for a batch ends when this moves.
    n_batches_returned: u64,
    /// `n_batches_returned` when a wait for batches last timed out: until another batch
    /// comes back, the batches out are taken as stalled and nobody waits for them again.
    gave_up_waiting_at: Option<u64>,
}

impl CleanerState {
    pub(crate) fn new() -> CleanerState {
        CleanerState {
            pending: Vec::new(),
            loaded_segment_end: None,
            n_loaded: 0,
            n_batches_out: 0,
            n_waiting_for_batches: 0,
            n_batches_returned: 0,
            gave_up_waiting_at: None,
        }
    }
}

/// Pages taken from the cleaner's list ([`CleanerState::pending`]) to relocate with its lock
/// released.
///
/// Giving the batch back puts the pages not relocated back on the list and counts the batch
/// in, so the segment is neither released without them nor held forever by a batch that
/// never came back. Dropping it does the same, for a relocation that unwinds (a panic in the
/// user's materializer): the batch would otherwise stay out and cleaning stop for good.
struct LentBatch<'a> {
    cleaner: &'a Mutex<CleanerState>,
    /// Notified when a batch comes back and someone waits for it.
    batches_back: &'a Condvar,
    pages: [PageId; MAX_CLEANING_BATCH],
    len: usize,
    /// How many pages, from the end, were relocated.
    n_relocated: usize,
    given_back: bool,
}

impl<'a> LentBatch<'a> {
    /// Takes up to `max_len` pages (and at most [`MAX_CLEANING_BATCH`]) from the end of the
    /// list; `state` is `cleaner`'s, locked.
    fn take(
        cleaner: &'a Mutex<CleanerState>,
        batches_back: &'a Condvar,
        state: &mut CleanerState,
        max_len: usize,
    ) -> LentBatch<'a> {
        let len = max_len.min(MAX_CLEANING_BATCH).min(state.pending.len());
        let rest = state.pending.len() - len;
        let mut pages = [PageId(0); MAX_CLEANING_BATCH];
        pages[..len].copy_from_slice(&state.pending[rest..]);
        state.pending.truncate(rest);
        state.n_batches_out += 1;
        LentBatch {
            cleaner,
            batches_back,
            pages,
            len,
            n_relocated: 0,
            given_back: false,
        }
    }

    fn pages(&self) -> &[PageId] {
        &self.pages[..self.len]
    }

    /// The next page to relocate (the list is last first).
    fn next_to_relocate(&self) -> Option<PageId> {
        let left = self.len - self.n_relocated;
        left.checked_sub(1).map(|index| self.pages[index])
    }

    /// Returns the batch and the list's lock.
    fn give_back(mut self) -> MutexGuard<'a, CleanerState> {
        let mut state = lock(self.cleaner);
        self.return_to(&mut state);
        self.given_back = true;
        state
    }

    fn return_to(&self, state: &mut CleanerState) {
        state.n_batches_out -= 1;
        state.n_batches_returned += 1;
        state
            .pending
            .extend_from_slice(&self.pages[..self.len - self.n_relocated]);
        if state.n_waiting_for_batches > 0 {
            self.batches_back.notify_all();
        }
    }
}

impl Drop for LentBatch<'_> {
    fn drop(&mut self) {
        if !self.given_back {
            self.return_to(&mut lock(self.cleaner));
        }
    }
}

/// Waits up to `timeout` for a batch to come back to `state` (`cleaner`'s, locked), unless a
/// wait already timed out with no batch back since (the batches out are then taken as
/// stalled). Returns the lock and whether a batch came back. See [`Inner::clean_some`].
fn wait_for_batches<'a>(
    batches_back: &Condvar,
    mut state: MutexGuard<'a, CleanerState>,
    timeout: Duration,
) -> (MutexGuard<'a, CleanerState>, bool) {
    let seen = state.n_batches_returned;
    if state.gave_up_waiting_at == Some(seen) {
        return (state, false);
    }
    state.n_waiting_for_batches += 1;
    let (mut state, waited) = batches_back
        .wait_timeout_while(state, timeout, |state| state.n_batches_returned == seen)
        .unwrap_or_else(PoisonError::into_inner);
    state.n_waiting_for_batches -= 1;
    if waited.timed_out() {
        state.gave_up_waiting_at = Some(seen);
        return (state, false);
    }
    (state, true)
}

/// What [`Inner::cleaning_work`] found.
enum CleaningWork {
    /// Pages of the segment ending here are on the list, ready to be taken.
    Ready(Lsn),
    /// Nothing to hand out now: cleaning is not wanted, or the oldest segment is not durable
    /// yet.
    Nothing,
    /// The list is empty but batches of the loaded segment are still out with other threads;
    /// the segment is finished once they come back.
    BatchesOut,
}

/// The metadata record and where it is.
#[derive(Debug)]
pub(crate) struct MetaState {
    pub(crate) meta: Meta,
    /// Its record's LSN (`Lsn(0)` before the first one is written).
    pub(crate) lsn: Lsn,
    /// Its record's frame length (for live-byte accounting).
    pub(crate) frame_len_bytes: u64,
}

/// Everything the page cache and its background threads share.
pub(crate) struct Inner<M: Materializer> {
    pub(crate) config: Config,
    pub(crate) materializer: M,
    pub(crate) log: Log,
    pub(crate) table: PageTable<Entry<M::Fragment>>,
    /// Where the table's entries are built when a cell is free (see `home.rs`).
    pub(crate) home: HomeCells<M::Fragment>,
    /// The first page id never handed out.
    pub(crate) next_pid: AtomicU64,
    /// Freed ids with the LSN of their free record, oldest first.
    pub(crate) free_ids: Mutex<VecDeque<(u64, Lsn)>>,
    /// `free_ids.len()`, so allocation skips the lock when the list is empty.
    pub(crate) n_free_ids: AtomicUsize,
    pub(crate) resident_bytes: AtomicI64,
    pub(crate) live_bytes: AtomicI64,
    /// Held by the thread running the eviction hand (others skip eviction: `try_lock`).
    pub(crate) clock_hand: Mutex<()>,
    /// The CLOCK ring: ids of pages that became resident, in that order. The hand takes
    /// from the front and puts back at the end the pages it spares, so a pass visits resident
    /// pages only, however sparse they are among all pages.
    pub(crate) resident_ring: Mutex<VecDeque<u64>>,
    /// The stable LSN (plus one) when a whole pass could not get under the budget: what is
    /// left is not durable yet, so passes are skipped until the stable LSN moves.
    pub(crate) evict_blocked_at: AtomicU64,
    pub(crate) cleaner: Mutex<CleanerState>,
    /// Wakes a cleaning thread that must do its share but found the segment's last pages
    /// lent to another (see [`Inner::clean_some`]).
    pub(crate) batches_back: Condvar,
    /// The pages with a base record in each segment written since open (for the cleaner).
    pub(crate) bases: BaseIndex,
    /// The cleaning cursor: everything below is released (or about to be). Changed only by
    /// the thread holding `cleaner`; an atomic so a write checks whether cleaning is wanted
    /// without touching that lock.
    pub(crate) clean_cursor: AtomicU64,
    /// How far cleaning has come: the cursor plus the share of its segment's bases handed
    /// out to writes (it moves back when pages are given back after an error). Writes pace
    /// themselves by this, not by the cursor, which moves a whole segment at a time (see
    /// [`Inner::maybe_clean`]). Changed only by the thread holding `cleaner`.
    pub(crate) clean_progress: AtomicU64,
    pub(crate) meta: Mutex<MetaState>,
    pub(crate) next_id: AtomicU64,
    /// Ids below this are durable in a metadata record.
    pub(crate) id_high_water: AtomicU64,
    pub(crate) snapshots: SnapshotStore,
    /// Held while a snapshot is taken; holds the tip at the last snapshot.
    pub(crate) snapshot_state: Mutex<Lsn>,
    pub(crate) metrics: Metrics,
    pub(crate) closed: AtomicBool,
    /// Set to stop the snapshot thread; the condvar wakes it (the cleaner thread has its own).
    pub(crate) shutdown: (Mutex<bool>, Condvar),
    /// The last error of a background thread (snapshots or cleaning) or of a write's share
    /// of cleaning.
    pub(crate) background_error: Mutex<Option<Error>>,
    /// How writes hand cleaning to the background cleaner (`cleaner_thread.rs`).
    pub(crate) background_cleaner: BackgroundCleaner,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data that is still consistent
    // (every update is a single assignment), so a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A lock-free page cache over a log: pages of fragment chains, merged by a
/// [`Materializer`], cached within a byte budget, cleaned, snapshotted. See the crate doc.
///
/// Share it between threads by reference or in an `Arc`: every method takes `&self`.
pub struct PageCache<M: Materializer> {
    pub(crate) inner: Arc<Inner<M>>,
    /// The snapshot thread, when `background_snapshots` is on.
    pub(crate) background: Option<JoinHandle<()>>,
    /// The cleaner thread, when `background_cleaning` is on.
    pub(crate) cleaner_thread: Option<JoinHandle<()>>,
}

impl<M: Materializer> std::fmt::Debug for PageCache<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("stats", &self.stats())
            .field("log", &self.inner.log)
            .finish_non_exhaustive()
    }
}

/// What a write does to a page's chain.
enum Change<F> {
    /// Append a delta (consolidated into a new base when the chain is long).
    Delta(F),
    /// Install a new base.
    Base(F),
    /// Free the page.
    Free,
}

impl<M: Materializer> PageCache<M> {
    /// Allocates a page whose base is `fragment`. Reuses a freed id once its free is durable,
    /// else takes a fresh one.
    pub fn allocate(&self, fragment: M::Fragment) -> Result<(PageId, Written)> {
        let inner = &*self.inner;
        inner.check_open()?;
        let mut fragment = Some(fragment);
        // Encoded before an id is taken, so a record that is too long uses up none; the
        // header gets the id below.
        let base = fragment.as_ref().expect("not taken yet");
        let mut body = encode_body(inner, RecordKind::Base, PageId(0), base);
        check_record_len(body.len())?;
        let pid = match inner.pop_free_id() {
            Some(pid) => pid,
            None => {
                let pid = inner.next_pid.fetch_add(1, Ordering::AcqRel);
                if pid >= PAGE_ID_LIMIT {
                    inner.next_pid.store(PAGE_ID_LIMIT, Ordering::Release);
                    return Err(Error::PageIdsExhausted {
                        limit: PAGE_ID_LIMIT,
                    });
                }
                pid
            }
        };
        record::put_record_header(&mut body.bytes, RecordKind::Base, PageId(pid));
        let size = inner.materializer.size_in_bytes(base) as u64;
        loop {
            let guard = epoch::pin();
            let current = inner.table.load(pid, &guard);
            let previous = entry_ref(current);
            let version = match previous {
                None => 1,
                Some(entry) if !entry.is_live() => entry.version + 1,
                Some(_) => unreachable!(
                    "page {pid} came off the free list or the fresh counter but is live"
                ),
            };
            let (reservation, location) = inner.reserve_record(&body)?;
            let merged = Charged {
                value: fragment.take().expect("given back by a lost CAS"),
                size_bytes: size,
            };
            let entry = Entry::new(
                version,
                PageState::Live(Chain::one(location), Resident::Merged(merged)),
            );
            match inner.install(pid, current, entry, &guard) {
                Ok(_) => {
                    inner.retire(pid, current, &guard);
                    drop(guard);
                    reservation.complete()?;
                    inner.account(size as i64, location.frame_len_bytes() as i64);
                    inner.became_resident(pid);
                    inner.metrics.n_writes.add(1);
                    inner.after_write();
                    return Ok((
                        PageId(pid),
                        Written {
                            version: Version(version),
                            lsn: location.lsn(),
                        },
                    ));
                }
                Err((_, lost)) => {
                    fragment = lost.into_merged();
                    reservation.abort()?;
                    Metrics::bump(&inner.metrics.n_write_retries, 1);
                }
            }
        }
    }

    /// Appends `fragment` to the page's chain if the page is still at `expected`. A chain that
    /// reaches the configured length is consolidated by this write into a new base (the
    /// value is the same; the record written is the merged base).
    pub fn link(
        &self,
        pid: PageId,
        expected: Version,
        fragment: M::Fragment,
    ) -> Result<Result<Written, Stale<M::Fragment>>> {
        self.write_fragment(pid, expected, Change::Delta(fragment))
    }

    /// Replaces the page's whole chain with `fragment` as a new base, if the page is still at
    /// `expected`.
    pub fn replace(
        &self,
        pid: PageId,
        expected: Version,
        fragment: M::Fragment,
    ) -> Result<Result<Written, Stale<M::Fragment>>> {
        self.write_fragment(pid, expected, Change::Base(fragment))
    }

    fn write_fragment(
        &self,
        pid: PageId,
        expected: Version,
        change: Change<M::Fragment>,
    ) -> Result<Result<Written, Stale<M::Fragment>>> {
        self.inner.check_open()?;
        let outcome = self.inner.write(pid, expected, change)?;
        Ok(outcome.map_err(|(current, fragment)| Stale {
            current,
            fragment: fragment.expect("a refused link or replace gives its fragment back"),
        }))
    }

    /// Frees the page if it is still at `expected`. Its id is reused only once this free is
    /// durable. A stale version changes nothing (the original put the id on the free list
    /// anyway, and the next allocation then collided with a live page).
    pub fn free(&self, pid: PageId, expected: Version) -> Result<Result<Lsn, Stale<()>>> {
        self.inner.check_open()?;
        let outcome = self.inner.write(pid, expected, Change::Free)?;
        Ok(outcome
            .map(|written| written.lsn)
            .map_err(|(current, _)| Stale {
                current,
                fragment: (),
            }))
    }

    /// The page's merged value and version, or `None` if the page is free or was never
    /// allocated. Fragments that were evicted are read back with positional reads; a read
    /// never writes to the log and never waits for a write.
    pub fn get(&self, pid: PageId) -> Result<Option<Page<M::Fragment>>> {
        self.inner.check_open()?;
        let guard = epoch::pin();
        let page = self.inner.get_in(pid, &guard)?;
        Ok(page.map(|page| Page {
            version: page.version,
            value: page.value.clone(),
        }))
    }

    /// Pins the epoch for [`get_pinned`](Self::get_pinned) reads.
    pub fn pin(&self) -> Pinned {
        Pinned {
            guard: epoch::pin(),
        }
    }

    /// Like [`get`](Self::get), without the clone: the merged value is borrowed for as long as
    /// `pinned` lives. This is the read a tree traversal wants: a pin per traversal, and every
    /// page on the way read in place, however many threads read the same page.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use iobuf::storage::SimStorage;
    /// # use pagecache::{Config, DecodeError, Materializer, PageCache};
    /// # struct Bytes;
    /// # impl Materializer for Bytes {
    /// #     type Fragment = Vec<u8>;
    /// #     fn encode(&self, fragment: &Vec<u8>, out: &mut Vec<u8>) { out.extend_from_slice(fragment) }
    /// #     fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> { Ok(bytes.to_vec()) }
    /// #     fn merge(&self, chain: &[&Vec<u8>]) -> Vec<u8> { chain.iter().flat_map(|f| f.iter().copied()).collect() }
    /// #     fn size_in_bytes(&self, fragment: &Vec<u8>) -> usize { fragment.len() }
    /// # }
    /// # let config = Config::builder().build()?;
    /// # let (cache, _) = PageCache::open(Arc::new(SimStorage::new()), config, Bytes)?;
    /// let (pid, _) = cache.allocate(b"hello".to_vec())?;
    /// let pinned = cache.pin();
    /// let page = cache.get_pinned(pid, &pinned)?.expect("allocated");
    /// assert_eq!(page.value.as_slice(), b"hello");
    /// // The version read in place serves a write as well as a cloned one.
    /// cache.link(pid, page.version, b", world".to_vec())?.expect("nobody else writes");
    /// drop(pinned);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The borrow is tied to the cache as well as to the pin: dropping or closing the cache
    /// frees its table at once, not through the epoch, so a value must not outlive it.
    ///
    /// ```compile_fail
    /// # use std::sync::Arc;
    /// # use iobuf::storage::SimStorage;
    /// # use pagecache::{Config, DecodeError, Materializer, PageCache};
    /// # struct Bytes;
    /// # impl Materializer for Bytes {
    /// #     type Fragment = Vec<u8>;
    /// #     fn encode(&self, fragment: &Vec<u8>, out: &mut Vec<u8>) { out.extend_from_slice(fragment) }
    /// #     fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> { Ok(bytes.to_vec()) }
    /// #     fn merge(&self, chain: &[&Vec<u8>]) -> Vec<u8> { chain.iter().flat_map(|f| f.iter().copied()).collect() }
    /// #     fn size_in_bytes(&self, fragment: &Vec<u8>) -> usize { fragment.len() }
    /// # }
    /// # let config = Config::builder().build().unwrap();
    /// # let (cache, _) = PageCache::open(Arc::new(SimStorage::new()), config, Bytes).unwrap();
    /// let (pid, _) = cache.allocate(b"hello".to_vec()).unwrap();
    /// let pinned = cache.pin();
    /// let page = cache.get_pinned(pid, &pinned).unwrap().expect("allocated");
    /// drop(cache); // refused: `page` still borrows the cache
    /// assert_eq!(page.value.as_slice(), b"hello");
    /// ```
    ///
    /// Fix: the borrow used to be tied to the pin alone, so the code above compiled and read
    /// freed memory.
    pub fn get_pinned<'g>(
        &'g self,
        pid: PageId,
        pinned: &'g Pinned,
    ) -> Result<Option<PageRef<'g, M::Fragment>>> {
        self.inner.check_open()?;
        self.inner.get_in(pid, &pinned.guard)
    }

    /// Makes every write up to `lsn` durable (one group-committed sync).
    pub fn make_stable(&self, lsn: Lsn) -> Result<()> {
        self.inner.check_open()?;
        self.inner.log.make_stable(lsn)?;
        // Fix (found by tests/regressions.rs, weak point 14): see `flush`.
        self.inner.maybe_evict();
        Ok(())
    }

    /// Makes every write so far durable; returns the LSN it covers.
    pub fn flush(&self) -> Result<Lsn> {
        self.inner.check_open()?;
        let lsn = self.inner.log.flush()?;
        // Fix (found by tests/regressions.rs, weak point 14): fragments written over the
        // budget could not be evicted while not durable, and nothing ran the hand once they
        // became durable: reads that hit never evict, so a write burst followed by reads
        // stayed at many times the budget. They are evictable now.
        self.inner.maybe_evict();
        Ok(lsn)
    }

    /// The page id a name points at.
    pub fn root(&self, name: &str) -> Option<PageId> {
        lock(&self.inner.meta).meta.roots.get(name).copied()
    }

    /// Every named root.
    pub fn roots(&self) -> Vec<(String, PageId)> {
        lock(&self.inner.meta)
            .meta
            .roots
            .iter()
            .map(|(name, pid)| (name.clone(), *pid))
            .collect()
    }

    /// Points `name` at `new` (or removes it, with `None`) if it currently points at
    /// `expected`. Returns the record's LSN, or the current value when `expected` is stale.
    /// Roots change rarely (a tree's root split): they are kept in one small record written
    /// whole, under a lock that page operations never take.
    pub fn set_root(
        &self,
        name: &str,
        expected: Option<PageId>,
        new: Option<PageId>,
    ) -> Result<Result<Lsn, Option<PageId>>> {
        let inner = &*self.inner;
        inner.check_open()?;
        if name.len() > MAX_ROOT_NAME_LEN_BYTES {
            return Err(Error::RootNameTooLong {
                len_bytes: name.len(),
                max: MAX_ROOT_NAME_LEN_BYTES,
            });
        }
        let mut state = lock(&inner.meta);
        let current = state.meta.roots.get(name).copied();
        if current != expected {
            return Ok(Err(current));
        }
        let mut meta = state.meta.clone();
        match new {
            Some(pid) => meta.roots.insert(name.to_string(), pid),
            None => meta.roots.remove(name),
        };
        let lsn = inner.write_meta(&mut state, meta)?;
        drop(state);
        inner.after_write();
        Ok(Ok(lsn))
    }

    /// A new id, never returned before by this directory, across restarts and crashes. Ids
    /// are made durable in batches of the configured interval (one sync per batch); after a
    /// restart the generator continues past the last durable batch.
    pub fn generate_id(&self) -> Result<u64> {
        let inner = &*self.inner;
        inner.check_open()?;
        let id = inner.next_id.fetch_add(1, Ordering::AcqRel);
        if id == u64::MAX {
            inner.next_id.store(u64::MAX, Ordering::Release);
            return Err(Error::IdsExhausted);
        }
        if id < inner.id_high_water.load(Ordering::Acquire) {
            return Ok(id);
        }
        let mut state = lock(&inner.meta);
        while id >= inner.id_high_water.load(Ordering::Acquire) {
            let mut meta = state.meta.clone();
            meta.id_high_water = id
                .max(meta.id_high_water)
                .saturating_add(inner.config.id_persist_interval);
            let new_high_water = meta.id_high_water;
            let lsn = inner.write_meta(&mut state, meta)?;
            inner.log.make_stable(lsn)?;
            inner.id_high_water.store(new_high_water, Ordering::Release);
        }
        Ok(id)
    }

    /// Takes a snapshot now (the background thread also takes them every configured number of
    /// bytes of log). Returns what was written.
    pub fn snapshot(&self) -> Result<recovery::SnapshotInfo> {
        self.inner.check_open()?;
        self.inner.take_snapshot()
    }

    /// Counters and latency histograms of the page cache.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Counters and latency histograms of the log underneath (reserve, write, sync).
    pub fn log_metrics(&self) -> &LogMetrics {
        self.inner.log.metrics()
    }

    /// Sizes of what the cache holds now.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The configuration the cache runs on.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The last error of work done in the background, if any:
    ///
    /// * of the snapshot thread, which has then stopped ([`snapshot`](Self::snapshot) still
    ///   works: a full disk may have been freed meanwhile);
    /// * of the cleaner thread, which has then stopped; writes do all the cleaning from then
    ///   on, as with `background_cleaning` off;
    /// * of a write's share of cleaning, after the write itself succeeded. Cleaning goes on
    ///   with later writes, which retry the record that failed.
    pub fn background_error(&self) -> Option<Error> {
        lock(&self.inner.background_error).clone()
    }

    /// Stops the background threads, makes everything durable and releases the directory.
    pub fn close(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let (stop, wake) = &self.inner.shutdown;
            *lock(stop) = true;
            wake.notify_all();
        }
        self.inner.background_cleaner.stop();
        for (handle, what) in [
            (self.background.take(), "snapshot"),
            (self.cleaner_thread.take(), "cleaner"),
        ] {
            // The threads catch their own errors; a panic there is a bug, reported here.
            if let Some(handle) = handle
                && handle.join().is_err()
            {
                eprintln!("pagecache: the background {what} thread panicked");
            }
        }
        Ok(self.inner.log.flush().map(|_| ())?)
    }
}

impl<M: Materializer> Drop for PageCache<M> {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            // Drop cannot return it; the durable prefix is intact and reopening recovers it.
            eprintln!("pagecache: closing on drop failed: {error}");
        }
    }
}

/// Whether a record of this kind can be the first of a page's chain, which is what the
/// cleaner looks for (see [`Inner::clean_some`]).
fn starts_chain(kind: RecordKind) -> bool {
    kind == RecordKind::Base
}

/// `Ok` if a record of `len_bytes` fits a page's chain (see [`MAX_RECORD_LEN_BYTES`]).
fn check_record_len(len_bytes: usize) -> Result<()> {
    if len_bytes as u64 > MAX_RECORD_LEN_BYTES {
        return Err(Error::RecordTooLarge {
            len_bytes: len_bytes as u64,
            max_len_bytes: MAX_RECORD_LEN_BYTES,
        });
    }
    Ok(())
}

/// A record's bytes: its header and the encoded fragment, in this thread's scratch buffer.
fn encode_body<M: Materializer>(
    inner: &Inner<M>,
    kind: RecordKind,
    pid: PageId,
    fragment: &M::Fragment,
) -> RecordBuf {
    let mut body = RecordBuf::take();
    body.bytes.resize(RECORD_HEADER_LEN, 0);
    inner.materializer.encode(fragment, &mut body.bytes);
    record::put_record_header(&mut body.bytes, kind, pid);
    body
}

/// A buffer records are encoded into before they are copied into their log reservation,
/// kept per thread between writes, so encoding allocates nothing (a write used to pay a
/// `malloc` and a `free` for its record). A consolidation still pays them once: it encodes
/// its merged base while the delta's buffer is taken.
///
/// Taken out of the thread's slot and put back on drop, so a nested write (a materializer
/// that writes from inside `encode`) or a second record in flight just gets a fresh buffer.
struct RecordBuf {
    bytes: Vec<u8>,
}

thread_local! {
    static RECORD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl RecordBuf {
    /// Buffers larger than this are freed instead of kept, so one large value does not pin
    /// its size in every thread that wrote it.
    const KEEP_CAPACITY_BYTES: usize = 64 << 10;

    fn take() -> RecordBuf {
        let mut bytes = RECORD_BUF.take();
        bytes.clear();
        RecordBuf { bytes }
    }
}

impl std::ops::Deref for RecordBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl<M: Materializer> Drop for Inner<M> {
    /// Takes the entries in home cells out of the table, so that the table frees only heap
    /// entries and the cells' blocks only have retired cells left busy (see `home.rs`).
    fn drop(&mut self) {
        self.home.take_installed(&mut self.table);
    }
}

impl Drop for RecordBuf {
    fn drop(&mut self) {
        if self.bytes.capacity() <= Self::KEEP_CAPACITY_BYTES {
            // `try_with`: during thread teardown the slot may be gone; the buffer is freed.
            let bytes = std::mem::take(&mut self.bytes);
            let _ = RECORD_BUF.try_with(|slot| slot.set(bytes));
        }
    }
}

/// A chain's decoded fragments, oldest first, and how many of them were read from disk.
type ChainValues<F> = (Vec<Arc<F>>, u64);

type WriteOutcome<F> = std::result::Result<Written, (Option<Version>, Option<F>)>;

impl<M: Materializer> Inner<M> {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Installs `entry` as the page's entry if the slot still holds `current`: built in one
    /// of the page's home cells when one is free (see `home.rs`), else on the heap. A lost
    /// CAS gives the entry back with the slot's value.
    pub(crate) fn install<'g>(
        &self,
        pid: u64,
        current: Shared<'g, Entry<M::Fragment>>,
        entry: Entry<M::Fragment>,
        guard: &'g Guard,
    ) -> Installed<'g, M::Fragment> {
        match self.home.claim(pid, current.as_raw(), guard) {
            Some(claimed) => HomeCells::install(&self.table, pid, current, claimed, entry, guard),
            None => self
                .table
                .cas(pid, current, new_owned(entry), guard)
                .map_err(|(actual, lost)| (actual, lost.into_box())),
        }
    }

    /// Retires `unlinked`, the entry of `pid` that a successful [`Self::install`] replaced
    /// (nothing when it is null), through the epoch: a home cell is freed for reuse, a heap
    /// entry joins the spares.
    pub(crate) fn retire(&self, pid: u64, unlinked: Shared<'_, Entry<M::Fragment>>, guard: &Guard) {
        match self.home.cell_of(pid, unlinked.as_raw(), guard) {
            Some(cell) => HomeCells::retire(cell, guard),
            None => retire(guard, unlinked),
        }
    }

    fn account(&self, resident_delta: i64, live_delta: i64) {
        if resident_delta != 0 {
            self.resident_bytes
                .fetch_add(resident_delta, Ordering::Relaxed);
        }
        if live_delta != 0 {
            self.live_bytes.fetch_add(live_delta, Ordering::Relaxed);
        }
    }

    /// Merges decoded fragments given oldest first, without allocating for the list of
    /// references when the chain is short (reads that page in merge on every call).
    fn merge_values(&self, values: &[Arc<M::Fragment>]) -> M::Fragment {
        const ON_STACK: usize = 16;
        let first = &*values[0];
        if values.len() <= ON_STACK {
            let mut refs = [first; ON_STACK];
            for (slot, value) in refs.iter_mut().zip(values) {
                *slot = value;
            }
            self.materializer.merge(&refs[..values.len()])
        } else {
            let refs: Vec<&M::Fragment> = values.iter().map(|value| &**value).collect();
            self.materializer.merge(&refs)
        }
    }

    /// A link, replace or free: load, check the version, reserve, CAS, then complete (or
    /// abort and retry when the CAS lost to an eviction, a page-in or a relocation).
    ///
    /// The reservation is taken after loading the entry and the CAS succeeds only if the
    /// entry is unchanged, so per page the order of successful CASes is the order of their
    /// LSNs, and replaying the log rebuilds exactly this chain.
    ///
    /// A delta over a page whose merged value is resident is merged onto it here (see the
    /// `entry` module): the log gets the delta, memory keeps one merged value.
    fn write(
        &self,
        pid: PageId,
        expected: Version,
        change: Change<M::Fragment>,
    ) -> Result<WriteOutcome<M::Fragment>> {
        let (kind, mut fragment) = match change {
            Change::Delta(fragment) => (RecordKind::Delta, Some(fragment)),
            Change::Base(fragment) => (RecordKind::Base, Some(fragment)),
            Change::Free => (RecordKind::Free, None),
        };
        let body = match &fragment {
            Some(fragment) => encode_body(self, kind, pid, fragment),
            None => {
                let mut header = RecordBuf::take();
                header.bytes.resize(RECORD_HEADER_LEN, 0);
                record::put_record_header(&mut header.bytes, kind, pid);
                header
            }
        };
        let new_size = fragment.as_ref().map_or(0, |fragment| {
            self.materializer.size_in_bytes(fragment) as u64
        });
        loop {
            let guard = epoch::pin();
            let current = self.table.load(pid.0, &guard);
            let old = match entry_ref(current) {
                Some(old) if old.version == expected.0 && old.is_live() => old,
                Some(old) if old.version == expected.0 => {
                    Metrics::bump(&self.metrics.n_stale, 1);
                    return Ok(Err((None, fragment)));
                }
                other => {
                    // A stale version: nothing is written and the fragment goes back.
                    Metrics::bump(&self.metrics.n_stale, 1);
                    let current = other
                        .filter(|old| old.is_live())
                        .map(|old| Version(old.version));
                    return Ok(Err((current, fragment)));
                }
            };
            // The cell the new entry will be built in loads while it is computed.
            self.home.prefetch_free(pid.0, current.as_raw(), &guard);
            // What the new entry keeps in memory, and for a consolidation the merged base
            // written instead of the delta.
            let (resident, consolidated_body) = match kind {
                RecordKind::Delta => {
                    let delta = fragment.as_ref().expect("a delta has a fragment");
                    let consolidate =
                        old.chain_len() + 1 >= self.config.consolidate_after_fragments as usize;
                    let merged = match old.resident() {
                        Resident::Merged(merged) => {
                            Some(self.materializer.merge(&[&merged.value, delta]))
                        }
                        // A long chain is consolidated by this writer: the record becomes
                        // the merged base, reading the fragments not in memory.
                        _ if consolidate => {
                            let Some((mut values, _)) =
                                self.read_chain(pid, current, old, &guard)?
                            else {
                                continue;
                            };
                            values.push(Arc::new(delta.clone()));
                            Some(self.merge_values(&values))
                        }
                        _ => None,
                    };
                    match merged {
                        Some(value) => {
                            let base = consolidate
                                .then(|| encode_body(self, RecordKind::Base, pid, &value));
                            let size_bytes = self.materializer.size_in_bytes(&value) as u64;
                            let resident = Resident::Merged(Charged { value, size_bytes });
                            (resident, base)
                        }
                        None => {
                            let mut fragments = match old.resident() {
                                Resident::Fragments(fragments) => fragments.clone(),
                                _ => vec![None; old.chain_len()],
                            };
                            fragments.push(Some(Charged {
                                value: Arc::new(delta.clone()),
                                size_bytes: new_size,
                            }));
                            (Resident::Fragments(fragments), None)
                        }
                    }
                }
                RecordKind::Base => {
                    let value = fragment.take().expect("a base has a fragment");
                    let merged = Charged {
                        value,
                        size_bytes: new_size,
                    };
                    (Resident::Merged(merged), None)
                }
                _ => (Resident::Nothing, None),
            };
            // Only a delta that is not consolidated extends the chain; every other record
            // starts it over.
            let replaces_chain = kind != RecordKind::Delta || consolidated_body.is_some();
            let record_bytes: &[u8] = consolidated_body.as_ref().unwrap_or(&body);
            let (reservation, location) = self.reserve_record(record_bytes)?;
            let version = old.version + 1;
            let entry = if kind == RecordKind::Free {
                Entry::new(version, PageState::Freed)
            } else {
                let chain = if replaces_chain {
                    Chain::one(location)
                } else {
                    Chain::extended(old.locations(), location)
                };
                Entry::new(version, PageState::Live(chain, resident))
            };
            let resident_delta = entry.resident_bytes() as i64 - old.resident_bytes() as i64;
            let live_delta = entry.live_bytes() as i64 - old.live_bytes() as i64;
            let became_resident = old.resident_bytes() == 0 && entry.resident_bytes() > 0;
            match self.install(pid.0, current, entry, &guard) {
                Ok(_) => {
                    self.retire(pid.0, current, &guard);
                    drop(guard);
                    reservation.complete()?;
                    self.account(resident_delta, live_delta);
                    if became_resident {
                        self.became_resident(pid.0);
                    }
                    self.metrics.n_writes.add(1);
                    if consolidated_body.is_some() {
                        Metrics::bump(&self.metrics.n_consolidations, 1);
                    }
                    if kind == RecordKind::Free {
                        let mut free_ids = lock(&self.free_ids);
                        free_ids.push_back((pid.0, location.lsn()));
                        self.n_free_ids.store(free_ids.len(), Ordering::Release);
                    }
                    self.after_write();
                    return Ok(Ok(Written {
                        version: Version(version),
                        lsn: location.lsn(),
                    }));
                }
                Err((_, lost)) => {
                    // Not installed: a new base comes back out of it for the retry.
                    if kind == RecordKind::Base {
                        fragment = lost.into_merged();
                    }
                    drop(guard);
                    reservation.abort()?;
                    Metrics::bump(&self.metrics.n_write_retries, 1);
                }
            }
        }
    }

    /// Work a write takes on after it is done: its share of cleaning, and eviction when the
    /// cache is over budget. The write itself is complete and acknowledged by then, so a
    /// cleaning failure does not fail it (its caller might retry and write twice): the error
    /// is kept for [`PageCache::background_error`], and if the log is poisoned every later
    /// call reports it anyway.
    fn after_write(&self) {
        if let Err(error) = self.maybe_clean() {
            *lock(&self.background_error) = Some(error);
        }
        self.maybe_evict();
    }

    /// A freed id whose free is durable, if any.
    fn pop_free_id(&self) -> Option<u64> {
        if self.n_free_ids.load(Ordering::Acquire) == 0 {
            return None;
        }
        let stable = self.log.stable_lsn();
        let mut free_ids = lock(&self.free_ids);
        // The record at `free_lsn` is durable once the stable LSN is past its start (the stable
        // LSN only stops on frame boundaries).
        let (pid, free_lsn) = *free_ids.front()?;
        if free_lsn >= stable {
            return None;
        }
        free_ids.pop_front();
        self.n_free_ids.store(free_ids.len(), Ordering::Release);
        Some(pid)
    }

    /// The page's version and merged value, borrowed for as long as `guard` stays pinned.
    ///
    /// A resident value is borrowed from the page's entry (an entry replaced meanwhile is
    /// freed only after every guard pinned before is dropped). A value paged in is kept in a
    /// new entry when the budget allows and borrowed from it; when it may not be kept, it is
    /// handed to the epoch to free (`park`), so the borrow is the same either way.
    pub(crate) fn get_in<'g>(
        &self,
        pid: PageId,
        guard: &'g Guard,
    ) -> Result<Option<PageRef<'g, M::Fragment>>> {
        self.metrics.n_gets.add(1);
        // Both places the page's entry is likely in start loading with its slot (`home.rs`).
        self.home.prefetch(pid.0, guard);
        loop {
            let current = self.table.load(pid.0, guard);
            let Some(entry) = entry_ref(current) else {
                return Ok(None);
            };
            if !entry.is_live() {
                return Ok(None);
            }
            entry.touch();
            let version = Version(entry.version);
            if let Some(value) = entry.merged() {
                self.metrics.n_cache_hits.add(1);
                // Values written over the budget become evictable once durable (the
                // background flusher may make them so): a read-only phase must shrink the
                // cache too. One relaxed load when under budget.
                self.maybe_evict();
                return Ok(Some(PageRef { version, value }));
            }
            // Some or all fragments are on disk (or resident one by one): read the rest,
            // merge, and keep the merged value if the page did not change meanwhile.
            let started = Instant::now();
            let Some((values, n_read)) = self.read_chain(pid, current, entry, guard)? else {
                continue;
            };
            let value = self.merge_values(&values);
            if n_read > 0 {
                self.metrics.page_in_latency.record(started.elapsed());
                Metrics::bump(&self.metrics.n_page_ins, 1);
            } else {
                self.metrics.n_cache_hits.add(1);
            }
            let size_bytes = self.materializer.size_in_bytes(&value) as u64;
            // Fix (found by tests/cache_pressure.rs, two readers): a reader used to keep what
            // it read even while another thread held the eviction hand, and return; during
            // one pass of the hand (up to two sweeps of the table) the other readers kept
            // adding pages, so resident bytes exceeded the budget by several pages per
            // reader. Now a reader that would go over the budget keeps its page only if it
            // takes the hand itself (and then evicts before letting go); if the hand is
            // busy it returns the value without keeping it.
            let added_bytes = size_bytes as i64 - entry.resident_bytes() as i64;
            let budget = self.config.cache_budget_bytes as i64;
            let mut hand = None;
            if added_bytes > 0 && self.resident_bytes.load(Ordering::Relaxed) + added_bytes > budget
            {
                match self.clock_hand.try_lock() {
                    Ok(held) => hand = Some(held),
                    Err(_) => {
                        let value = park(value, guard);
                        return Ok(Some(PageRef { version, value }));
                    }
                }
            }
            let resident = Entry::new(
                entry.version,
                PageState::Live(
                    Chain::from_slice(entry.locations()),
                    Resident::Merged(Charged { value, size_bytes }),
                ),
            );
            let value = match self.install(pid.0, current, resident, guard) {
                Ok(installed) => {
                    let was_resident = entry.resident_bytes() > 0;
                    self.retire(pid.0, current, guard);
                    self.account(added_bytes, 0);
                    if !was_resident {
                        self.became_resident(pid.0);
                    }
                    entry_ref(installed)
                        .and_then(Entry::merged)
                        .expect("the entry just installed holds the merged value")
                }
                Err((_, lost)) => {
                    let value = lost.into_merged().expect("built with a value");
                    park(value, guard)
                }
            };
            match hand {
                Some(_hand) => self.evict_pass(budget),
                None => self.maybe_evict(),
            }
            return Ok(Some(PageRef { version, value }));
        }
    }

    /// The decoded fragments of the chain of `current` (`entry`, the entry of `pid` loaded
    /// under `guard`), oldest first, reading the ones not resident from disk. `Ok(None)` when
    /// a read failed because the page changed meanwhile: the cleaner may have moved it and
    /// its old segment been reused while we read, so the caller loads the page again.
    fn read_chain(
        &self,
        pid: PageId,
        current: Shared<'_, Entry<M::Fragment>>,
        entry: &Entry<M::Fragment>,
        guard: &Guard,
    ) -> Result<Option<ChainValues<M::Fragment>>> {
        match self.chain_values(pid, entry) {
            Ok(values) => Ok(Some(values)),
            Err(_) if self.table.load(pid.0, guard) != current => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The decoded fragments of a live entry's chain, oldest first, reading the ones not
    /// resident from disk, and how many were read. A merged value stands for the whole
    /// chain.
    fn chain_values(
        &self,
        pid: PageId,
        entry: &Entry<M::Fragment>,
    ) -> Result<ChainValues<M::Fragment>> {
        let locations = entry.locations();
        let mut values = Vec::with_capacity(locations.len());
        let mut n_read = 0u64;
        match entry.resident() {
            Resident::Merged(merged) => values.push(Arc::new(merged.value.clone())),
            Resident::Fragments(fragments) => {
                for (location, fragment) in locations.iter().zip(fragments) {
                    match fragment {
                        Some(fragment) => values.push(Arc::clone(&fragment.value)),
                        None => {
                            values.push(Arc::new(self.read_fragment(pid, *location)?));
                            n_read += 1;
                        }
                    }
                }
            }
            Resident::Nothing => {
                for location in locations {
                    values.push(Arc::new(self.read_fragment(pid, *location)?));
                    n_read += 1;
                }
            }
        }
        Metrics::bump(&self.metrics.n_fragments_paged_in, n_read);
        Ok((values, n_read))
    }
    /// Reads and decodes one fragment from disk.
    fn read_fragment(&self, pid: PageId, location: PackedLocation) -> Result<M::Fragment> {
        let location = location.unpack(self.geometry());
        let corrupt = |reason: String| Error::corruption(Some(pid), Some(location.lsn), reason);
        // A frame that does not verify where the page table points is damage on disk (open
        // verifies frames only from the snapshot's replay point on). `read_chain` retries
        // instead when the page moved meanwhile, so this names the page only when it did not.
        // The record is decoded straight from the log's read buffer: no copy of its bytes.
        let decoded = self.log.read_with(location, |bytes| {
            let (kind, record_pid, body) = record::decode_record(bytes).map_err(corrupt)?;
            if record_pid != pid || !matches!(kind, RecordKind::Base | RecordKind::Delta) {
                return Err(corrupt(format!(
                    "expected a fragment of page {}, found a {kind:?} record of page {}",
                    pid.0, record_pid.0
                )));
            }
            self.materializer
                .decode(body)
                .map_err(|error| corrupt(format!("the materializer refused the fragment: {error}")))
        });
        decoded.map_err(|error| match error {
            iobuf::LogError::NoMessage { reason, .. } => {
                corrupt(format!("the log has no valid record there: {reason}"))
            }
            other => Error::from(other),
        })?
    }

    /// The log's segment geometry, which packed locations are relative to.
    pub(crate) fn geometry(&self) -> Geometry {
        self.log.config().geometry()
    }

    /// Reserves room for `record` in the log and copies it in; returns the reservation (for
    /// the caller to complete once its CAS succeeded, or abort) and where the record will
    /// be, as a page's chain keeps it.
    fn reserve_record(&self, record: &[u8]) -> Result<(Reservation<'_>, PackedLocation)> {
        // Before reserving: a message above the blob threshold is buffered whole.
        check_record_len(record.len())?;
        let mut reservation = self.log.reserve(record.len())?;
        reservation.buffer_mut().copy_from_slice(record);
        match PackedLocation::pack(reservation.location(), self.geometry()) {
            Ok(location) => {
                // Noted before the reservation completes or aborts (see `bases`).
                let (kind, pid, _) =
                    record::decode_record(record).expect("the crate's own records decode");
                if kind == RecordKind::Base {
                    self.bases.note(location.lsn(), pid.0);
                }
                Ok((reservation, location))
            }
            Err(unpackable) => {
                reservation.abort()?;
                Err(unpackable.into_write_error())
            }
        }
    }

    /// Writes the metadata record; the caller holds the meta lock, so records are in lock
    /// order.
    pub(crate) fn write_meta(&self, state: &mut MetaState, meta: Meta) -> Result<Lsn> {
        let mut body = vec![0u8; RECORD_HEADER_LEN];
        meta.encode(&mut body);
        record::put_record_header(&mut body, RecordKind::Meta, PageId(0));
        let location = self.log.write(&body)?;
        // Before the first metadata record `frame_len_bytes` is 0: nothing is replaced.
        self.account(
            0,
            location.frame_len_bytes() as i64 - state.frame_len_bytes as i64,
        );
        state.meta = meta;
        state.lsn = location.lsn;
        state.frame_len_bytes = location.frame_len_bytes();
        Ok(location.lsn)
    }

    // ---- eviction -------------------------------------------------------------------------

    /// Runs the CLOCK hand while resident bytes exceed the budget. Only one thread runs it
    /// at a time (`try_lock`: others carry on); reads only set a bit in the entry.
    ///
    /// CLOCK was chosen over an LRU list or S3-FIFO because a hit costs one relaxed load (and
    /// a store only when the bit was clear), with no list to move the page in and no lock;
    /// the hand walks a ring of the pages that became resident (one `u64` per resident page,
    /// pushed only when a page goes from no resident fragment to some), so a pass visits
    /// resident pages only, however small the budget is next to the data.
    /// Values not yet durable are skipped: reading them back could need a write (a merged
    /// value counts as not durable until every record of its chain is).
    pub(crate) fn maybe_evict(&self) {
        let budget = self.config.cache_budget_bytes as i64;
        if self.resident_bytes.load(Ordering::Relaxed) <= budget {
            return;
        }
        if self.evict_blocked_at.load(Ordering::Relaxed) == self.log.stable_lsn().0 + 1 {
            return;
        }
        let Ok(_hand) = self.clock_hand.try_lock() else {
            return;
        };
        self.evict_pass(budget);
    }

    /// One run of the CLOCK hand while resident bytes exceed `budget` (the caller holds the
    /// hand): at most two sweeps of the ring.
    ///
    /// The hand takes pages off the ring a few at a time (one lock and one epoch pin per
    /// batch, not per page) and puts back in one go the pages it spares at the end and the
    /// ones it did not get to at the front, so the order of the ring is what visiting them
    /// one at a time would leave.
    fn evict_pass(&self, budget: i64) {
        /// Pages taken off the ring at once. Small, because a page-in over the budget
        /// usually needs one or two visits and the rest go straight back.
        const BATCH: usize = 8;
        let started = Instant::now();
        let stable = self.log.stable_lsn();
        // Two rounds of the ring clear every bit and evict every durable fragment if need be;
        // pages still holding fragments that are not durable go back for a later pass.
        let n_to_visit = 2 * lock(&self.resident_ring).len() + 1;
        let mut n_visited = 0usize;
        let mut batch = [0u64; BATCH];
        let mut spared = [0u64; BATCH];
        while self.resident_bytes.load(Ordering::Relaxed) > budget && n_visited < n_to_visit {
            let n_taken = {
                let mut ring = lock(&self.resident_ring);
                let n = ring.len().min(BATCH).min(n_to_visit - n_visited);
                for (slot, pid) in batch.iter_mut().zip(ring.drain(..n)) {
                    *slot = pid;
                }
                n
            };
            if n_taken == 0 {
                break;
            }
            let mut n_done = 0usize;
            let mut n_spared = 0usize;
            {
                let guard = epoch::pin();
                while n_done < n_taken && self.resident_bytes.load(Ordering::Relaxed) > budget {
                    let pid = batch[n_done];
                    n_done += 1;
                    if self.evict_visit(pid, stable, &guard) {
                        spared[n_spared] = pid;
                        n_spared += 1;
                    }
                }
            }
            n_visited += n_done;
            let mut ring = lock(&self.resident_ring);
            for pid in batch[n_done..n_taken].iter().rev() {
                ring.push_front(*pid);
            }
            ring.extend(&spared[..n_spared]);
        }
        Metrics::bump(&self.metrics.n_eviction_visits, n_visited as u64);
        if self.resident_bytes.load(Ordering::Relaxed) > budget && n_visited >= n_to_visit {
            self.evict_blocked_at.store(stable.0 + 1, Ordering::Relaxed);
        }
        self.metrics.eviction_latency.record(started.elapsed());
    }

    /// One visit of the CLOCK hand to `pid`: clears its bit if set, else drops what is
    /// resident and durable by installing an entry without it. A merged value is dropped only
    /// once the whole chain is durable (it stands for every fragment); fragments held one by
    /// one go each as soon as it is durable. Returns whether the page stays on the ring (it
    /// still holds resident values, or was spared).
    fn evict_visit(&self, pid: u64, stable: Lsn, guard: &Guard) -> bool {
        let current = self.table.load(pid, guard);
        let Some(entry) = entry_ref(current).filter(|entry| entry.is_live()) else {
            return false; // freed: it leaves the ring
        };
        if entry.resident_bytes() == 0 {
            return false; // already evicted: it leaves the ring
        }
        if entry.referenced.swap(false, Ordering::Relaxed) {
            return true;
        }
        let is_durable = |location: &PackedLocation| location.lsn() < stable;
        let (resident, n_evicted) = match entry.resident() {
            Resident::Nothing => return false,
            Resident::Merged(_) => {
                if !entry.locations().iter().all(is_durable) {
                    return true;
                }
                (Resident::Nothing, 1)
            }
            Resident::Fragments(fragments) => {
                let mut n_evicted = 0u64;
                let kept = entry
                    .locations()
                    .iter()
                    .zip(fragments)
                    .map(|(location, fragment)| match fragment {
                        Some(_) if is_durable(location) => {
                            n_evicted += 1;
                            None
                        }
                        other => other.clone(),
                    })
                    .collect();
                if n_evicted == 0 {
                    return true;
                }
                (Resident::Fragments(kept), n_evicted)
            }
        };
        let evicted = Entry::new(
            entry.version,
            PageState::Live(Chain::from_slice(entry.locations()), resident),
        );
        evicted.referenced.store(false, Ordering::Relaxed);
        let freed_bytes = entry.resident_bytes() - evicted.resident_bytes();
        let still_resident = evicted.resident_bytes() > 0;
        match self.install(pid, current, evicted, guard) {
            Ok(_) => {
                self.retire(pid, current, guard);
                self.account(-(freed_bytes as i64), 0);
                Metrics::bump(&self.metrics.n_fragments_evicted, n_evicted);
                still_resident
            }
            // The page changed meanwhile; if it is still resident, the next pass sees it
            // (when it still holds fragments it is kept on the ring anyway).
            Err(_) => true,
        }
    }

    /// Puts a page that just became resident (none of its fragments was) on the CLOCK ring.
    fn became_resident(&self, pid: u64) {
        let mut ring = lock(&self.resident_ring);
        ring.push_back(pid);
        // A page freed and allocated again, or evicted and read again before the hand passed,
        // can be on the ring twice; keep the ring proportional to the pages.
        let limit = 2 * self.next_pid.load(Ordering::Relaxed) as usize + 64;
        if ring.len() > limit {
            let mut seen = std::collections::HashSet::with_capacity(ring.len());
            ring.retain(|pid| seen.insert(*pid));
        }
    }

    // ---- cleaning -------------------------------------------------------------------------

    /// Whether the log, measured from `cursor`, spans more than `allowed_span_bytes`.
    fn cleaning_wanted(&self, cursor: Lsn, allowed_span_bytes: u64) -> bool {
        self.log.tip().0.saturating_sub(cursor.0) > allowed_span_bytes
    }

    /// The span the cleaner thread brings the log back to: [`LEAD_STEPS`] below `allowed`
    /// (what the target allows now; but not below the span the cleaner never goes under), so
    /// that writes, which clean from the target on, find little to do while it keeps up.
    fn background_span_bytes(&self, allowed: u64) -> u64 {
        let lead = LEAD_STEPS * self.cleaning_step_bytes();
        allowed.saturating_sub(lead).max(self.min_span_bytes())
    }

    /// The unit of how far the span has run past the target: a quarter segment, small next
    /// to the target's margin. Each step past the target doubles a write's cleaning budget;
    /// [`MAX_CLEANING_STEPS`] steps past it, a write waits for the cleaner's lock rather
    /// than skip its share.
    fn cleaning_step_bytes(&self) -> u64 {
        self.log.config().segment_len_bytes() / 4
    }

    /// The span the space target allows for the live bytes now.
    fn allowed_span_bytes(&self) -> u64 {
        let live = self.live_bytes.load(Ordering::Relaxed).max(0) as f64;
        let allowed = (self.config.space_amplification_target * live) as u64;
        allowed.max(self.min_span_bytes())
    }

    /// The span the cleaner never tries to go below: the segments the ring can have writes
    /// in flight to (the log's own count, which also decides how many recent segments are
    /// kept from reuse) plus the one being cleaned, so an almost empty store is not cleaned
    /// in circles.
    ///
    /// Fix: this used to be `n_io_bufs + 2` whole segments, which assumed a buffer per
    /// segment; at the defaults of the time (8 buffers of 1 MiB, 8 MiB segments) it held
    /// 80 MiB of log back from cleaning, so a store with 50 MiB live sat at 1.6x before the
    /// space target counted at all.
    fn min_span_bytes(&self) -> u64 {
        let log = self.log.config();
        (u64::from(log.segments_in_flight()) + 1) * log.segment_len_bytes()
    }

    /// This write's share of cleaning: examine at most `clean_records_per_write` base
    /// records of the oldest segment, relocating the pages that still use it; release the
    /// segment once all its pages are moved.
    ///
    /// Cleaning goes in log order (the oldest segment first) rather than by lowest live
    /// bytes: the log then stays one contiguous run of segments, so recovery remains a
    /// prefix scan in which every gap is damage, never a cleaned hole. The price is write
    /// amplification: under uniform overwrites at a span of 1.3x live, about 2.1 bytes of
    /// records are written per byte of user records (`tests/space.rs` prints it).
    ///
    /// Pacing. The span is measured from how far cleaning has come ([`Inner::clean_progress`]),
    /// not from the cursor, which jumps a whole segment when one is released: measured from
    /// the cursor, the overshoot swung by four steps with every segment, whatever the
    /// cleaning kept up with. A write's budget doubles with each
    /// [`Self::cleaning_step_bytes`] of overshoot. Below [`MAX_CLEANING_STEPS`] a write whose
    /// share finds the cleaner's lock taken goes on; past it, it waits for the lock, so
    /// writers cannot outrun cleaning (and the file the space target).
    ///
    /// Writes clean in parallel. The lock guards only the cleaner's list: a write takes a
    /// batch of pages from it and relocates them with the lock released (a relocation is a
    /// CAS like any write). So a write waiting past the limit waits for a list operation
    /// (or for a segment to be finished or read back, which happen under the lock), not
    /// for another write's whole share, and all writes past it clean at once. A write finds
    /// nothing to take while the last pages of a segment are out with another write.
    ///
    /// Before, the lock was held for a whole share. In `bench_pages`' B mix on two threads,
    /// every turn of the log relocates all 100 000 pages in a burst (their bases stay
    /// together from the allocation on), and that burst pushes the overshoot past the limit.
    /// The second writer then slept on the lock while the first cleaned. Because the lock
    /// is not fair, the first writer took it back with its next write, before the sleeper
    /// ran, so the sleeper slept through many shares: a profile counted about 1 700
    /// context switches in 3 s on this lock, from about 50 waits. Batches, this pacing and
    /// the shared spare entries of `entry.rs`, measured together, gained 14 % on two
    /// threads (five alternations of a 5 s loop of B's mix: 1 939 against 2 216 k ops/s on
    /// average; the change won every pair) and 4 % on one (four alternations).
    fn maybe_clean(&self) -> Result<()> {
        let span = self.progress_span_bytes();
        let allowed = self.allowed_span_bytes();
        if self.background_cleaner.is_running() && span > self.background_span_bytes(allowed) {
            self.background_cleaner.wake();
        }
        if span <= allowed {
            return Ok(());
        }
        let n_steps = ((span - allowed) / self.cleaning_step_bytes()).min(MAX_CLEANING_STEPS);
        let budget = self
            .config
            .clean_records_per_write
            .saturating_mul(1 << n_steps);
        let started = Instant::now();
        let n_examined = self.clean_some(budget, n_steps >= MAX_CLEANING_STEPS, allowed)?;
        if n_examined > 0 {
            self.metrics.cleaning_latency.record(started.elapsed());
            Metrics::bump(&self.metrics.n_records_examined, u64::from(n_examined));
        }
        Ok(())
    }

    /// How far the log spans from how far cleaning has come (what writes and the cleaner
    /// thread pace themselves by).
    fn progress_span_bytes(&self) -> u64 {
        self.log
            .tip()
            .0
            .saturating_sub(self.clean_progress.load(Ordering::Relaxed))
    }

    /// Whether the log, measured from how far cleaning has come, spans more than the cleaner
    /// thread lets it ([`Self::background_span_bytes`]).
    pub(crate) fn background_cleaning_wanted(&self) -> bool {
        self.progress_span_bytes() > self.background_span_bytes(self.allowed_span_bytes())
    }

    /// One pass of the cleaner thread: a batch of the oldest segment's bases while the span
    /// is over what the thread aims at. It waits for the cleaner's lock (a write holds it
    /// only for a list operation, or to finish or read back a segment).
    pub(crate) fn clean_in_background(&self) -> Result<Pass> {
        let aim = self.background_span_bytes(self.allowed_span_bytes());
        if self.progress_span_bytes() <= aim {
            return Ok(Pass::WithinTarget);
        }
        let n_examined = self.clean_some(MAX_CLEANING_BATCH as u32, true, aim)?;
        if n_examined == 0 {
            return Ok(Pass::Blocked);
        }
        Metrics::bump(&self.metrics.n_records_examined, u64::from(n_examined));
        Metrics::bump(
            &self.metrics.n_records_examined_in_background,
            u64::from(n_examined),
        );
        Ok(Pass::Cleaned)
    }

    /// How far cleaning has come: the cursor, plus the loaded segment's length in proportion
    /// to the share of its bases handed out.
    fn progress_of(&self, state: &CleanerState) -> Lsn {
        let cursor = Lsn(self.clean_cursor.load(Ordering::Relaxed));
        let (Some(segment_end), Some(n_examined)) = (
            state.loaded_segment_end,
            state.n_loaded.checked_sub(state.pending.len()),
        ) else {
            return cursor;
        };
        let segment_len = self.log.config().segment_len_bytes();
        let done_bytes = match state.n_loaded {
            0 => 0,
            n_loaded => (u128::from(segment_len) * n_examined as u128 / n_loaded as u128) as u64,
        };
        Lsn(cursor.0.max(segment_end.0 - segment_len + done_bytes))
    }

    /// Examines at most `budget` base records of the oldest segment while cleaning is
    /// wanted, in batches of at most [`MAX_CLEANING_BATCH`] taken from the cleaner's list
    /// and relocated with its lock released; returns how many it examined (0 when there was
    /// nothing it could do yet). When the lock is taken, returns at once unless `wait`.
    ///
    /// With `wait`, a thread that finds the segment's last pages lent to another thread
    /// waits up to [`BATCH_WAIT`] for them to come back (the segment can then be finished and
    /// the next one loaded) instead of returning: a write past the pacing limit must not go
    /// on writing because another thread, descheduled for a moment, holds the last batch.
    /// Fix (found by a review of the background cleaner): a write returned at once then, so
    /// while the cleaner thread held a batch the pacing held nothing back, and with the
    /// thread on `tests/space.rs` reached 2.5x on a busy machine. The wait is bounded
    /// because a relocation can stall for good (the user's materializer may block, even on
    /// something the waiting write's caller would do next: `tests/cleaning_parallel.rs`);
    /// after one wait timed out, nobody waits again until some batch comes back, so a
    /// stalled batch costs one wait, after which writes go on as they did before. A thread
    /// gives its batch back before it looks for more, so it waits only for others'; the
    /// exception is a materializer that writes to the cache from inside a relocation's
    /// `encode`, whose write may wait out [`BATCH_WAIT`] on its own thread's batch.
    ///
    /// Only base records send the cleaner to the page table. Every chain starts with a base
    /// (an allocation, a `replace`, a consolidation or a relocation; a delta only extends a
    /// chain), and cleaning goes in log order, so when this segment's turn comes every page
    /// whose chain starts in an older segment has been moved already: a page that uses this
    /// segment at all has its chain's base here. A delta here either belongs to such a page,
    /// which its base's turn moves, or is dead. Under links most records are deltas, and
    /// looking each one up was two loads from cold memory (its slot and its entry) to learn
    /// what its base's turn decides anyway. Debug builds check the consequence after every
    /// segment (`assert_no_chain_below`).
    ///
    /// The bases of a segment written since open come from the index writes keep
    /// ([`BaseIndex`]), so nothing is read; other segments are read back and their bases
    /// picked out of every record's header. In a loop of `bench_pages`' B mix on two
    /// threads, the index gained 3 to 18 % (four alternations).
    fn clean_some(&self, budget: u32, wait: bool, allowed_span_bytes: u64) -> Result<u32> {
        let mut state = match self.cleaner.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) if wait => lock(&self.cleaner),
            Err(TryLockError::WouldBlock) => return Ok(0),
        };
        let mut n_left = budget as usize;
        while n_left > 0 {
            let segment_end = match self.cleaning_work(&mut state, allowed_span_bytes)? {
                CleaningWork::Ready(segment_end) => segment_end,
                CleaningWork::BatchesOut if wait => {
                    let came_back;
                    (state, came_back) = wait_for_batches(&self.batches_back, state, BATCH_WAIT);
                    if !came_back {
                        break;
                    }
                    continue;
                }
                CleaningWork::BatchesOut | CleaningWork::Nothing => break,
            };
            let mut batch = LentBatch::take(&self.cleaner, &self.batches_back, &mut state, n_left);
            drop(state);
            let outcome = self.relocate_batch(&mut batch, segment_end);
            n_left -= batch.pages().len();
            // After an error the pages not relocated are back on the list, for the next
            // write's share: taking them first let cleaning go on without them and release
            // a segment a page still used (`tests/cleaning_errors.rs`).
            state = batch.give_back();
            outcome?;
        }
        self.clean_progress
            .store(self.progress_of(&state).0, Ordering::Relaxed);
        Ok(budget - n_left as u32)
    }

    /// Gets the cleaner's next work ready: finishes the loaded segment if all its pages were
    /// relocated, loads the next one if cleaning is still wanted.
    fn cleaning_work(
        &self,
        state: &mut CleanerState,
        allowed_span_bytes: u64,
    ) -> Result<CleaningWork> {
        let segment_len = self.log.config().segment_len_bytes();
        loop {
            let cursor = Lsn(self.clean_cursor.load(Ordering::Relaxed));
            if !self.cleaning_wanted(cursor, allowed_span_bytes) {
                return Ok(CleaningWork::Nothing);
            }
            if let Some(segment_end) = state.loaded_segment_end {
                if !state.pending.is_empty() {
                    return Ok(CleaningWork::Ready(segment_end));
                }
                if state.n_batches_out > 0 {
                    return Ok(CleaningWork::BatchesOut);
                }
                self.finish_segment(segment_end)?;
                state.loaded_segment_end = None;
                continue;
            }
            let end = Lsn((cursor.0 / segment_len + 1) * segment_len);
            if end > self.log.stable_lsn() {
                // The oldest segment is not even durable yet: nothing to clean.
                return Ok(CleaningWork::Nothing);
            }
            // The last segment's list is empty by now; its allocation is reused.
            let mut bases = std::mem::take(&mut state.pending);
            let segment_start = Lsn(end.0 - segment_len);
            if let Some(pids) = self.bases.take(segment_start) {
                // Written since open: its bases are known without reading it.
                bases.extend(pids.iter().rev().map(|&pid| PageId(pid)));
            } else {
                // The segment alone (not the next one's first record to see where it ends),
                // and only each record's header, decoded in the iterator's segment buffer:
                // nothing is copied out per record.
                let mut iter = self.log.iter_range(cursor, end)?;
                while let Some(item) = iter.next_with(|location, bytes| {
                    record::decode_record(bytes)
                        .map(|(kind, pid, _)| starts_chain(kind).then_some(pid))
                        .map_err(|reason| Error::corruption(None, Some(location.lsn), reason))
                }) {
                    bases.extend(item??);
                }
                bases.reverse();
                Metrics::bump(&self.metrics.n_segments_read_back, 1);
            }
            state.n_loaded = bases.len();
            state.pending = bases;
            state.loaded_segment_end = Some(end);
        }
    }

    /// Every base of the segment ending at `segment_end` was examined and every page that
    /// used it moved: the metadata record moves too if it is still there, then everything
    /// below the segment's end may be reused.
    fn finish_segment(&self, segment_end: Lsn) -> Result<()> {
        #[cfg(debug_assertions)]
        self.assert_no_chain_below(segment_end);
        {
            let mut meta = lock(&self.meta);
            if meta.lsn < segment_end && meta.frame_len_bytes > 0 {
                let copy = meta.meta.clone();
                self.write_meta(&mut meta, copy)?;
            }
        }
        self.clean_cursor.store(segment_end.0, Ordering::Relaxed);
        self.log.release_before(segment_end);
        Metrics::bump(&self.metrics.n_segments_cleaned, 1);
        Ok(())
    }

    /// Relocates, last first, the pages of `batch` that still use anything below
    /// `segment_end`, counting them in the batch as it goes.
    fn relocate_batch(&self, batch: &mut LentBatch<'_>, segment_end: Lsn) -> Result<()> {
        self.prefetch_pages(batch.pages());
        while let Some(pid) = batch.next_to_relocate() {
            self.relocate(pid, segment_end)?;
            batch.n_relocated += 1;
        }
        Ok(())
    }

    /// Starts loading the table slots, then the entries, of the pages of `batch`. Each needs
    /// its slot and entry, two dependent loads from memory that is cold (the pages of a
    /// segment's records are spread over the whole table), and examining one page at a
    /// time waits for each in turn (when every record was looked up, about 7 % of the
    /// samples of a link-only loop at the default space target went to that one
    /// comparison). Batched like this, the loads of a batch overlap, and the cleaner's share
    /// of those samples fell from 9.7 % to 4.3 %.
    fn prefetch_pages(&self, batch: &[PageId]) {
        let guard = epoch::pin();
        for pid in batch {
            self.table.prefetch_slot(pid.0, &guard);
        }
        for pid in batch {
            table::prefetch(self.table.load(pid.0, &guard).as_raw());
        }
    }

    /// Checks what cleaning a segment relies on: once every base record below `segment_end`
    /// has been examined, no live page's chain starts below it. A walk of the whole table
    /// per cleaned segment, so only in debug builds (the tests run with tiny segments and
    /// few pages).
    #[cfg(debug_assertions)]
    fn assert_no_chain_below(&self, segment_end: Lsn) {
        let guard = epoch::pin();
        self.table
            .for_each_in(0, PAGE_ID_LIMIT, &guard, |pid, current| {
                if let Some(entry) = entry_ref(current) {
                    assert!(
                        !entry.is_live() || entry.oldest_lsn() >= segment_end,
                        "page {pid}'s chain starts at {:?}, in a segment cleaned up to {:?}",
                        entry.oldest_lsn(),
                        segment_end
                    );
                }
            });
    }

    /// Rewrites `pid` as one merged base at the tip if its chain still uses anything below
    /// `below` (the end of the segment being cleaned). Keeps the page's version.
    fn relocate(&self, pid: PageId, below: Lsn) -> Result<()> {
        loop {
            let guard = epoch::pin();
            let current = self.table.load(pid.0, &guard);
            let Some(entry) = entry_ref(current) else {
                return Ok(());
            };
            // One field of the entry, not a walk of the chain (a freed page's oldest LSN is
            // the largest there is).
            if entry.oldest_lsn() >= below {
                return Ok(());
            }
            // The moved page stays resident (its new record is not durable yet, so it could
            // not be read back); the eviction hand lets go of it once it is.
            let value = match entry.merged() {
                Some(merged) => merged.clone(),
                None => {
                    let Some((values, _)) = self.read_chain(pid, current, entry, &guard)? else {
                        continue;
                    };
                    self.merge_values(&values)
                }
            };
            let body = encode_body(self, RecordKind::Base, pid, &value);
            let size_bytes = self.materializer.size_in_bytes(&value) as u64;
            let (reservation, location) = self.reserve_record(&body)?;
            let moved = Entry::new(
                entry.version,
                PageState::Live(
                    Chain::one(location),
                    Resident::Merged(Charged { value, size_bytes }),
                ),
            );
            let resident_delta = moved.resident_bytes() as i64 - entry.resident_bytes() as i64;
            let live_delta = moved.live_bytes() as i64 - entry.live_bytes() as i64;
            let became_resident = entry.resident_bytes() == 0;
            match self.install(pid.0, current, moved, &guard) {
                Ok(_) => {
                    self.retire(pid.0, current, &guard);
                    drop(guard);
                    reservation.complete()?;
                    self.account(resident_delta, live_delta);
                    if became_resident {
                        self.became_resident(pid.0);
                    }
                    Metrics::bump(&self.metrics.n_relocations, 1);
                    Metrics::bump(&self.metrics.relocated_bytes, location.frame_len_bytes());
                    return Ok(());
                }
                Err(_) => {
                    drop(guard);
                    reservation.abort()?;
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let cursor = Lsn(self.clean_cursor.load(Ordering::Relaxed));
        let geometry = self.log.config().geometry();
        let n_segments = self
            .log
            .with_accountant(|accountant| accountant.n_segments_in_file());
        Stats {
            resident_bytes: self.resident_bytes.load(Ordering::Relaxed).max(0) as u64,
            cache_budget_bytes: self.config.cache_budget_bytes,
            live_bytes: self.live_bytes.load(Ordering::Relaxed).max(0) as u64,
            log_span_bytes: self.log.tip().0.saturating_sub(cursor.0),
            file_len_bytes: n_segments * geometry.segment_len_bytes(),
            page_table_bytes: self.table.node_bytes() as u64,
            home_cell_bytes: self.home.allocated_bytes(),
            page_id_high_water: self.next_pid.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(pages: &[u64]) -> Vec<PageId> {
        pages.iter().map(|&pid| PageId(pid)).collect()
    }

    #[test]
    fn a_lent_batch_returns_what_it_did_not_relocate_even_when_a_relocation_panics() {
        let cleaner = Mutex::new(CleanerState::new());
        lock(&cleaner).pending = pids(&[9, 8, 7, 6, 5]);

        // Given back after relocating two of three: the third goes back on the list.
        let back = Condvar::new();
        let mut batch = LentBatch::take(&cleaner, &back, &mut lock(&cleaner), 3);
        assert_eq!(batch.pages(), pids(&[7, 6, 5]));
        assert_eq!(lock(&cleaner).n_batches_out, 1);
        assert_eq!(batch.next_to_relocate(), Some(PageId(5)));
        batch.n_relocated = 2;
        assert_eq!(batch.next_to_relocate(), Some(PageId(7)));
        let state = batch.give_back();
        assert_eq!(state.pending, pids(&[9, 8, 7]));
        assert_eq!(state.n_batches_out, 0);
        drop(state);

        // A relocation that unwinds (the user's merge panicked) still returns the batch.
        let unwound = std::panic::catch_unwind(|| {
            let mut batch =
                LentBatch::take(&cleaner, &back, &mut lock(&cleaner), MAX_CLEANING_BATCH);
            batch.n_relocated = 1;
            panic!("the materializer panicked");
        });
        assert!(unwound.is_err());
        let state = lock(&cleaner);
        assert_eq!(state.pending, pids(&[9, 8]));
        assert_eq!(state.n_batches_out, 0);
    }

    /// The wait behind a write past the pacing limit that finds the segment's last pages
    /// lent to another thread (regression for the review of the background cleaner: such a
    /// write used to go on at once).
    #[test]
    fn a_wait_for_lent_pages_ends_when_they_come_back_and_a_stalled_batch_is_waited_for_once() {
        let cleaner = Mutex::new(CleanerState::new());
        let back = Condvar::new();
        lock(&cleaner).pending = pids(&[3, 2, 1]);
        let long = Duration::from_secs(60);

        // Another thread gives its batch back while this one waits: the wait ends then.
        let batch = LentBatch::take(&cleaner, &back, &mut lock(&cleaner), 3);
        std::thread::scope(|scope| {
            let holder = scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(batch.give_back());
            });
            let started = Instant::now();
            let (state, came_back) = wait_for_batches(&back, lock(&cleaner), long);
            assert!(came_back);
            assert!(started.elapsed() < long);
            assert_eq!(state.n_batches_out, 0);
            assert_eq!(state.n_waiting_for_batches, 0);
            drop(state);
            holder.join().expect("holder");
        });

        // A batch that does not come back: one wait times out, the next does not wait.
        let stalled = LentBatch::take(&cleaner, &back, &mut lock(&cleaner), 3);
        let short = Duration::from_millis(30);
        let started = Instant::now();
        let (state, came_back) = wait_for_batches(&back, lock(&cleaner), short);
        assert!(!came_back);
        assert!(started.elapsed() >= short);
        drop(state);
        let started = Instant::now();
        let (state, came_back) = wait_for_batches(&back, lock(&cleaner), long);
        assert!(!came_back);
        assert!(
            started.elapsed() < long,
            "a stalled batch is waited for once"
        );
        drop(state);

        // Once any batch comes back, threads wait again.
        drop(stalled.give_back());
        let other = LentBatch::take(&cleaner, &back, &mut lock(&cleaner), 1);
        std::thread::scope(|scope| {
            let holder = scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(other.give_back());
            });
            let (_state, came_back) = wait_for_batches(&back, lock(&cleaner), long);
            assert!(came_back, "waiting resumed after a batch came back");
            holder.join().expect("holder");
        });
    }
}
