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

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_epoch::{Guard, Owned, Shared};
use iobuf::Lsn;

use crate::cache::lock;
use crate::location::PackedLocation;

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

/// Locations a [`Chain`] holds in place: the longest chain at the default
/// `consolidate_after_fragments` (8: a write that would make the chain 8 long writes a
/// merged base instead).
pub(crate) const INLINE_LOCATIONS: usize = 7;

/// A chain's locations, oldest first, kept inside the entry when there are at most
/// [`INLINE_LOCATIONS`] of them.
///
/// Every write builds a new entry holding the old chain plus one location. With the chain in
/// an allocation of its own, that was a second allocation and free per write (of a size
/// glibc's allocator serves slowly: 128 to 224 bytes) and a second dependent load from cold
/// memory to copy it; profiles of `bench_pages` put the two at about an eighth of a link.
#[derive(Clone)]
// Keeping the locations in place, not behind a pointer, is the point.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Chain {
    /// Up to [`INLINE_LOCATIONS`]; the slots past `len` are placeholders.
    Inline {
        len: u8,
        locations: [PackedLocation; INLINE_LOCATIONS],
    },
    /// A longer chain (a larger `consolidate_after_fragments`, or a chain read back from a
    /// log written with one).
    Spilled(Box<[PackedLocation]>),
}

impl Chain {
    /// No locations (a freed page).
    pub(crate) const EMPTY: Chain = Chain::Inline {
        len: 0,
        locations: [PackedLocation::PLACEHOLDER; INLINE_LOCATIONS],
    };

    /// A chain of one location.
    pub(crate) fn one(location: PackedLocation) -> Chain {
        Chain::extended(&[], location)
    }

    /// `locations` followed by `last`.
    pub(crate) fn extended(locations: &[PackedLocation], last: PackedLocation) -> Chain {
        let len = locations.len() + 1;
        if len <= INLINE_LOCATIONS {
            let mut inline = [PackedLocation::PLACEHOLDER; INLINE_LOCATIONS];
            inline[..locations.len()].copy_from_slice(locations);
            inline[locations.len()] = last;
            Chain::Inline {
                len: len as u8,
                locations: inline,
            }
        } else {
            let mut spilled = Vec::with_capacity(len);
            spilled.extend_from_slice(locations);
            spilled.push(last);
            Chain::Spilled(spilled.into_boxed_slice())
        }
    }

    /// A copy of `locations`.
    pub(crate) fn from_slice(locations: &[PackedLocation]) -> Chain {
        match locations.split_last() {
            Some((last, rest)) => Chain::extended(rest, *last),
            None => Chain::EMPTY,
        }
    }

    /// The locations, oldest first.
    pub(crate) fn as_slice(&self) -> &[PackedLocation] {
        match self {
            Chain::Inline { len, locations } => &locations[..usize::from(*len)],
            Chain::Spilled(locations) => locations,
        }
    }
}

/// What a page is, to build an entry from.
// Built once per new entry and moved into it; boxing the chain would bring back the
// allocation `Chain` exists to avoid.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PageState<F> {
    /// Allocated: its chain's locations, oldest first (never empty), and what is resident.
    Live(Chain, Resident<F>),
    /// Freed (the free list knows when the id may be reused).
    Freed,
}

/// A page's entry: what the table points at.
///
/// Laid out (`repr(C)`) so that what a read looks at (the bit, the version, liveness and the
/// merged value) and what the cleaner looks at (`oldest_lsn`) are the first 64 bytes, not
/// behind the chain: a read of a resident page waits for one or two lines of its entry, the
/// ones the cleaner prefetches. (Aligning entries to a cache line was measured too: reads
/// gained a few nanoseconds, inside the noise, and every fresh entry became an aligned
/// allocation, which glibc serves on a slower path.)
#[repr(C)]
pub(crate) struct Entry<F> {
    pub(crate) version: u64,
    /// The CLOCK bit: set by reads, cleared by the eviction hand.
    pub(crate) referenced: AtomicBool,
    /// Also tells a live page (below `u64::MAX`) from a freed one.
    oldest_lsn: Lsn,
    resident: Resident<F>,
    resident_bytes: u64,
    live_bytes: u64,
    /// The chain's locations, oldest first; empty when the page is freed.
    chain: Chain,
}

impl<F> Entry<F> {
    /// An entry for `state`.
    ///
    /// A `Fragments` residency must have one item per location; one with every item `None`
    /// is stored as `Nothing`.
    pub(crate) fn new(version: u64, state: PageState<F>) -> Entry<F> {
        let (chain, resident) = match state {
            PageState::Freed => (Chain::EMPTY, Resident::Nothing),
            PageState::Live(chain, resident) => {
                let locations = chain.as_slice();
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
                (chain, resident)
            }
        };
        let locations = chain.as_slice();
        let resident_bytes = match &resident {
            Resident::Nothing => 0,
            Resident::Merged(merged) => merged.size_bytes,
            Resident::Fragments(fragments) => fragments
                .iter()
                .flatten()
                .map(|fragment| fragment.size_bytes)
                .sum(),
        };
        let live_bytes = locations
            .iter()
            .map(|location| location.frame_len_bytes())
            .sum();
        let oldest_lsn = locations
            .iter()
            .map(|location| location.lsn())
            .min()
            .unwrap_or(Lsn(u64::MAX));
        let is_live = !locations.is_empty();
        debug_assert_eq!(
            is_live,
            oldest_lsn != Lsn(u64::MAX),
            "no record sits at u64::MAX"
        );
        Entry {
            version,
            referenced: AtomicBool::new(is_live),
            oldest_lsn,
            resident,
            resident_bytes,
            live_bytes,
            chain,
        }
    }

    /// Whether the page is allocated.
    pub(crate) fn is_live(&self) -> bool {
        // The oldest LSN of a non-empty chain is below `u64::MAX` (see `Entry::new`); this
        // reads the entry's first 64 bytes, not the chain.
        self.oldest_lsn != Lsn(u64::MAX)
    }

    /// The chain's locations, oldest first (empty when freed).
    pub(crate) fn locations(&self) -> &[PackedLocation] {
        self.chain.as_slice()
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
        self.locations().len()
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
    // SAFETY: every non-null pointer in the page table came from `Owned::new` or is a home
    // cell whose entry was written before the CAS that published it (`home.rs`). An entry is
    // destroyed only after a CAS unlinked it, through `retire` or `HomeCells::retire`, which
    // defer the destruction until every guard pinned before the unlink is dropped; a home
    // cell's memory stays allocated at least as long as its entry is installed or retired.
    // `shared` was loaded under a guard that lives for 'g, so the entry outlives the borrow.
    unsafe { shared.as_ref() }
}

/// Puts `entry` in a heap allocation for the table, for when neither of the page's home cells
/// is free (`home.rs`): an emptied entry of this thread's spares
/// (refilled from [`SHARED_SPARES`] when empty) when there is one, else a new one.
///
/// Before home cells, every write, page-in, eviction and relocation allocated an entry and
/// retired one; a page written twice within one grace period of the epoch still does. Through
/// the global allocator, a retired entry is freed in a batch of the epoch's garbage, on
/// whichever thread collects it, and the batches overflow glibc's per-thread caches into its
/// locked arenas; allocation and free were about a quarter of a link's samples. Reusing the
/// emptied allocations skips the allocator for entries altogether.
pub(crate) fn new_owned<F: Send + Sync + 'static>(entry: Entry<F>) -> Owned<Entry<F>> {
    let spare = SPARE_ENTRIES
        .try_with(|spares| take_spare(&mut spares.borrow_mut(), &SHARED_SPARES))
        .ok()
        .flatten();
    match spare.map(|spare| spare.downcast::<Entry<F>>()) {
        Some(Ok(mut reused)) => {
            *reused = entry;
            Owned::from(reused)
        }
        // None spare, or one of another page cache's fragment type: allocate.
        _ => Owned::new(entry),
    }
}

/// An emptied entry, of any fragment type (taken back by downcasting).
type Spare = Box<dyn Any + Send>;

/// Emptied entries a thread keeps for [`new_owned`].
const MAX_SPARE_ENTRIES: usize = 256;
/// Spares move between a thread and [`SHARED_SPARES`] this many at a time.
const SPARE_BATCH_LEN: usize = 128;
/// Spares [`SHARED_SPARES`] holds at most (about 1.5 MiB with `Vec` values).
const MAX_SHARED_SPARES: usize = 8192;

thread_local! {
    static SPARE_ENTRIES: RefCell<Vec<Spare>> = const { RefCell::new(Vec::new()) };
}

/// Spares passed between threads: the ones a thread collects beyond its own
/// [`MAX_SPARE_ENTRIES`], for threads that have run out.
///
/// A thread gets the entries it frees as it collects the epoch's garbage, which is the
/// garbage of every thread, in bursts: with two writers, one often collects what both
/// retired while the other runs out. Before this pool the first freed its surplus and the
/// second allocated anew, each a glibc call on the other thread's arena and its lock; in a
/// profile of `bench_pages`' B2, three quarters of the workers' context switches were
/// sleeps on that lock. The pool's own lock is taken once per [`SPARE_BATCH_LEN`] entries.
///
/// One list, not a list of batches: a batch moves by draining one list into the other, so
/// moving spares allocates nothing (each batch used to be a `Vec` of its own, 2 KiB,
/// allocated and freed outside glibc's per-thread caches).
struct SharedSpares {
    spares: Mutex<Vec<Spare>>,
}

impl SharedSpares {
    const fn new() -> SharedSpares {
        SharedSpares {
            spares: Mutex::new(Vec::new()),
        }
    }

    /// Moves [`SPARE_BATCH_LEN`] spares from the end of `local` to the pool, as many as it
    /// has room for; the others are freed.
    fn give(&self, local: &mut Vec<Spare>) {
        let batch_start = local.len().saturating_sub(SPARE_BATCH_LEN);
        {
            let mut spares = lock(&self.spares);
            let n_kept =
                (MAX_SHARED_SPARES.saturating_sub(spares.len())).min(local.len() - batch_start);
            spares.extend(local.drain(local.len() - n_kept..));
        }
        // Outside the lock.
        local.truncate(batch_start);
    }

    /// Moves up to [`SPARE_BATCH_LEN`] spares from the pool to `local`.
    fn take(&self, local: &mut Vec<Spare>) {
        let mut spares = lock(&self.spares);
        let batch_start = spares.len().saturating_sub(SPARE_BATCH_LEN);
        local.extend(spares.drain(batch_start..));
    }
}

static SHARED_SPARES: SharedSpares = SharedSpares::new();

/// A spare from `local`, refilled with a batch from `shared` when empty.
fn take_spare(local: &mut Vec<Spare>, shared: &SharedSpares) -> Option<Spare> {
    if local.is_empty() {
        shared.take(local);
    }
    local.pop()
}

/// Keeps `spare` in `local`, first passing a batch to `shared` when `local` is full.
fn keep_spare(local: &mut Vec<Spare>, shared: &SharedSpares, spare: Spare) {
    if local.len() >= MAX_SPARE_ENTRIES {
        shared.give(local);
    }
    local.push(spare);
}

/// Retires an entry that a successful CAS just unlinked: once no reader can hold it, its
/// values are dropped and its allocation joins the spares of the thread that collects it
/// (see [`recycle`]).
pub(crate) fn retire<F: Send + Sync + 'static>(guard: &Guard, unlinked: Shared<'_, Entry<F>>) {
    if unlinked.is_null() {
        return;
    }
    // SAFETY: the caller's CAS replaced `unlinked` in the table, so no new reader can load it;
    // readers that loaded it before are pinned. Taking ownership here touches nothing: the
    // entry is only moved into the deferred function, which `defer` runs after every guard
    // pinned now is dropped. Each unlinked pointer is retired exactly once: only the thread
    // whose CAS unlinked it calls this.
    let unlinked = unsafe { unlinked.into_owned() }.into_box();
    guard.defer(move || recycle(unlinked));
}

/// Drops what `entry` holds and keeps its allocation as a spare of this thread, or of the
/// shared pool when this thread has [`MAX_SPARE_ENTRIES`] already.
fn recycle<F: Send + Sync + 'static>(mut entry: Box<Entry<F>>) {
    entry.resident = Resident::Nothing;
    entry.chain = Chain::EMPTY;
    // `try_with`: during thread teardown the spares may be gone; the entry is freed.
    let _ = SPARE_ENTRIES
        .try_with(|spares| keep_spare(&mut spares.borrow_mut(), &SHARED_SPARES, entry));
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

    fn location(lsn: u64) -> PackedLocation {
        let geometry = iobuf::Geometry::new(1 << 20).expect("a valid segment length");
        let location = iobuf::Location {
            lsn: Lsn(lsn),
            file_offset: lsn,
            len_bytes: 100,
            stored: iobuf::Stored::Inline,
        };
        PackedLocation::pack(location, geometry).expect("packable")
    }

    #[test]
    fn totals_follow_the_locations_and_the_residency() {
        let merged = Entry::new(
            3,
            PageState::Live(
                Chain::from_slice(&[location(300), location(100), location(200)]),
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
                Chain::from_slice(&[location(100), location(200)]),
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
            PageState::Live(Chain::one(location(100)), Resident::Fragments(vec![None])),
        );
        assert!(matches!(none.resident(), Resident::Nothing));
        assert_eq!(none.resident_bytes(), 0);

        let freed = Entry::<u32>::new(4, PageState::Freed);
        assert!(!freed.is_live());
        assert_eq!(freed.oldest_lsn(), Lsn(u64::MAX));
        assert_eq!((freed.live_bytes(), freed.resident_bytes()), (0, 0));
    }

    #[test]
    fn chains_hold_their_locations_in_order_inline_and_spilled() {
        let all: Vec<PackedLocation> = (1..=2 * INLINE_LOCATIONS as u64).map(location).collect();
        for len in 0..=all.len() {
            let locations = &all[..len];
            let spilled = len > INLINE_LOCATIONS;
            let chain = Chain::from_slice(locations);
            assert_eq!(chain.as_slice(), locations, "length {len}");
            assert_eq!(matches!(chain, Chain::Spilled(_)), spilled, "length {len}");
            if let Some((last, rest)) = locations.split_last() {
                assert_eq!(Chain::extended(rest, *last).as_slice(), locations);
            }
        }
        assert_eq!(Chain::one(location(9)).as_slice(), &[location(9)]);
        assert!(Chain::EMPTY.as_slice().is_empty());
    }

    /// A value that counts its drops.
    #[derive(Clone)]
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_retired_entry_drops_its_value_and_its_allocation_is_reused() {
        let n_dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let entry = |version| {
            Entry::new(
                version,
                PageState::Live(
                    Chain::one(location(version)),
                    Resident::Merged(Charged {
                        value: Counted(Arc::clone(&n_dropped)),
                        size_bytes: 1,
                    }),
                ),
            )
        };
        // A table of one slot, as the page table holds entries.
        let slot = crossbeam_epoch::Atomic::<Entry<Counted>>::null();
        // A collector of its own, with this thread its only participant, so the deferred
        // recycle runs here. (Under the global collector, another test's thread could
        // collect it, and the spare would be that thread's: the test failed now and then.)
        let collector = crossbeam_epoch::Collector::new();
        let handle = collector.register();
        let guard = handle.pin();
        slot.store(new_owned(entry(1)), Ordering::SeqCst);
        let first = slot.load(Ordering::SeqCst, &guard);
        let first_address = first.as_raw() as usize;
        let replaced = slot.swap(new_owned(entry(2)), Ordering::SeqCst, &guard);
        retire(&guard, replaced);
        // A reader pinned before the swap still sees the first entry whole.
        assert_eq!(entry_ref(first).map(|old| old.version), Some(1));
        assert_eq!(n_dropped.load(Ordering::SeqCst), 0);
        drop(guard);
        // Once no guard is pinned the epoch can advance; collecting runs the deferred
        // recycle on this thread, which drops the value and keeps the allocation.
        let mut n_tries = 0;
        while n_dropped.load(Ordering::SeqCst) == 0 {
            let guard = handle.pin();
            guard.flush();
            n_tries += 1;
            assert!(n_tries < 10_000, "the retired entry was never collected");
        }
        assert_eq!(n_dropped.load(Ordering::SeqCst), 1);
        // The allocation is now a spare of this thread; keep only it, so the next allocation
        // must take it.
        let address =
            |spare: &Box<dyn Any + Send>| std::ptr::from_ref(&**spare).cast::<()>() as usize;
        SPARE_ENTRIES.with(|spares| {
            let mut spares = spares.borrow_mut();
            assert!(spares.iter().any(|spare| address(spare) == first_address));
            spares.retain(|spare| address(spare) == first_address);
        });
        let reused = new_owned(entry(3));
        assert_eq!(reused.version, 3);
        let reused_address = std::ptr::from_ref::<Entry<Counted>>(&reused) as usize;
        assert_eq!(reused_address, first_address);
        drop(reused);
        let guard = handle.pin();
        let last = slot.swap(crossbeam_epoch::Shared::null(), Ordering::SeqCst, &guard);
        // SAFETY: the test's only slot no longer holds `last` and no other thread has seen it.
        drop(unsafe { last.into_owned() });
        assert_eq!(n_dropped.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn spares_beyond_a_threads_cap_go_to_the_shared_pool_and_come_back_in_batches() {
        let shared = SharedSpares::new();
        let id = |spare: &Spare| *spare.downcast_ref::<usize>().expect("a usize spare");
        // One thread collects more than it keeps: its surplus goes to the pool in a batch.
        let mut collector = Vec::new();
        for n in 0..=MAX_SPARE_ENTRIES {
            keep_spare(&mut collector, &shared, Box::new(n));
        }
        assert_eq!(collector.len(), MAX_SPARE_ENTRIES - SPARE_BATCH_LEN + 1);
        // The batch is the newest spares but the one just kept.
        let passed = (MAX_SPARE_ENTRIES - SPARE_BATCH_LEN)..MAX_SPARE_ENTRIES;
        // Another thread that has none takes that batch rather than allocating.
        let mut allocator = Vec::new();
        let mut taken = Vec::new();
        while let Some(spare) = take_spare(&mut allocator, &shared) {
            taken.push(id(&spare));
        }
        taken.sort_unstable();
        assert_eq!(taken, passed.collect::<Vec<_>>());
        let mut left = Vec::new();
        shared.take(&mut left);
        assert!(left.is_empty());
        // The pool keeps at most its bound; beyond it, spares are freed.
        for _ in 0..MAX_SHARED_SPARES / SPARE_BATCH_LEN + 3 {
            let mut batch: Vec<Spare> =
                (0..SPARE_BATCH_LEN).map(|n| Box::new(n) as Spare).collect();
            shared.give(&mut batch);
            assert!(
                batch.is_empty(),
                "a batch given is kept or freed, never left"
            );
        }
        let mut n_kept = 0;
        loop {
            let mut batch = Vec::new();
            shared.take(&mut batch);
            if batch.is_empty() {
                break;
            }
            n_kept += batch.len();
        }
        assert_eq!(n_kept, MAX_SHARED_SPARES);
    }

    #[test]
    fn an_entry_with_its_chain_in_place_stays_within_the_documented_size() {
        // The crate doc states the memory a live page costs outside the budget.
        let entry_bytes = size_of::<Entry<Vec<u8>>>();
        assert!(entry_bytes <= 192, "an entry takes {entry_bytes} bytes");
        println!("an entry takes {entry_bytes} bytes");
    }
}
