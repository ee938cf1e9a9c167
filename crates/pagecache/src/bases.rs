//! Which pages have a base record in each segment written since open, so that the cleaner
//! knows which pages to move without reading the segment back.
//!
//! The cleaner only needs a segment's base records: a page that still uses the segment has
//! its chain's base there (see `Inner::clean_some`). Reading the segment back to find them
//! cost a 2 MiB read, a checksum of every frame and a fresh buffer per segment, on the
//! writing thread that cleans (about 5 % of the samples of `bench_pages`' B1), and on a store
//! larger than memory that read goes to the device. Noting each base as it is reserved costs
//! a short lock and 8 bytes until its segment is cleaned.
//!
//! The lists are striped by thread ([`N_STRIPES`], as the metrics' counters are), so writers
//! on different threads do not wait for one lock while they hold a log reservation; the
//! cleaner gathers a segment from every stripe, once per segment.
//!
//! Segments written before open (the segment holding the tip at open may be one) are not
//! indexed, and nor is a segment that gains a base in a stripe at its cap; the cleaner reads
//! those back as before. An extra id is harmless (the cleaner finds the page does not use
//! the segment), a missing one is not, so a base is noted before its reservation completes
//! or aborts: by the time the segment is durable, and so cleanable, every base in it is
//! noted.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crossbeam_utils::CachePadded;
use iobuf::Lsn;

use crate::cache::lock;
use crate::metrics::stripe_index;

/// Stripes of the index; a thread notes in one of them.
const N_STRIPES: usize = 16;

/// Page ids the index holds at most, `2^16` per stripe (8 bytes each, so 8 MiB in all; the
/// lists' spare capacity and the cleaner's copy of the segment it works through come on
/// top). That is several times the bases in the span of `bench_pages`' mixed workload
/// (100 000 pages). Past it, a segment that gains a base in a full stripe leaves the index
/// and is read back when its turn comes.
pub(crate) const MAX_INDEXED_BASES_PER_STRIPE: usize = 1 << 16;

/// Per segment written since open, the pages with a base record in it.
pub(crate) struct BaseIndex {
    segment_len_bytes: u64,
    /// Segments are numbered by LSN over segment length; from this one on, every record
    /// was reserved by this process.
    first_indexed: u64,
    max_pids_per_stripe: usize,
    stripes: [CachePadded<Mutex<Stripe>>; N_STRIPES],
}

#[derive(Default)]
struct Stripe {
    /// The pages with a base in each segment, noted by this stripe's threads, in the order
    /// they were noted; `None` once the segment left the index for the cap.
    segments: BTreeMap<u64, Option<Vec<u64>>>,
    /// Ids held in `segments`.
    n_pids: usize,
}

impl BaseIndex {
    /// An index for a log whose next record goes at `tip`. The segment holding `tip` may
    /// have records from before, so indexing starts with the next one.
    pub(crate) fn new(segment_len_bytes: u64, tip: Lsn, max_pids_per_stripe: usize) -> BaseIndex {
        BaseIndex {
            segment_len_bytes,
            first_indexed: tip.0 / segment_len_bytes + 1,
            max_pids_per_stripe,
            stripes: std::array::from_fn(|_| CachePadded::new(Mutex::new(Stripe::default()))),
        }
    }

    /// Notes a base record of `pid` reserved at `lsn`, before the reservation completes or
    /// aborts.
    pub(crate) fn note(&self, lsn: Lsn, pid: u64) {
        let segment = lsn.0 / self.segment_len_bytes;
        if segment < self.first_indexed {
            return;
        }
        let mut stripe = lock(&self.stripes[stripe_index() % N_STRIPES]);
        let Stripe { segments, n_pids } = &mut *stripe;
        let at_cap = *n_pids >= self.max_pids_per_stripe;
        let slot = segments.entry(segment).or_insert_with(|| Some(Vec::new()));
        match slot {
            None => {}
            Some(pids) if at_cap => {
                *n_pids -= pids.len();
                *slot = None;
            }
            Some(pids) => {
                pids.push(pid);
                *n_pids += 1;
            }
        }
    }

    /// Takes the pages with a base in the segment that starts at `segment_start`, stripe by
    /// stripe; `None` when the segment is not indexed and must be read back. Call it once
    /// the segment is durable (no reservation in it is outstanding).
    pub(crate) fn take(&self, segment_start: Lsn) -> Option<Vec<u64>> {
        let segment = segment_start.0 / self.segment_len_bytes;
        let mut all = Vec::new();
        let mut indexed = segment >= self.first_indexed;
        for stripe in &self.stripes {
            let mut stripe = lock(stripe);
            match stripe.segments.remove(&segment) {
                Some(Some(pids)) => {
                    stripe.n_pids -= pids.len();
                    if indexed {
                        all.extend_from_slice(&pids);
                    }
                }
                // Left the index at a stripe's cap.
                Some(None) => indexed = false,
                // No base noted in this stripe.
                None => {}
            }
        }
        indexed.then_some(all)
    }

    /// Ids held (for tests).
    #[cfg(test)]
    fn n_pids(&self) -> usize {
        self.stripes.iter().map(|stripe| lock(stripe).n_pids).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 1 << 10;

    #[test]
    fn segments_from_before_open_are_read_back() {
        // Opened with the tip inside segment 2: segments 0 to 2 may hold older records.
        let index = BaseIndex::new(SEGMENT, Lsn(2 * SEGMENT + 100), 100);
        index.note(Lsn(2 * SEGMENT + 200), 7);
        assert_eq!(
            index.n_pids(),
            0,
            "nothing is noted for a segment read back anyway"
        );
        for segment in 0..3 {
            assert_eq!(
                index.take(Lsn(segment * SEGMENT)),
                None,
                "segment {segment}"
            );
        }
        index.note(Lsn(3 * SEGMENT + 10), 7);
        index.note(Lsn(3 * SEGMENT + 90), 5);
        index.note(Lsn(4 * SEGMENT), 7);
        assert_eq!(index.take(Lsn(3 * SEGMENT)), Some(vec![7, 5]));
        assert_eq!(index.take(Lsn(4 * SEGMENT)), Some(vec![7]));
        // A segment without bases, and one already taken, have none.
        assert_eq!(index.take(Lsn(5 * SEGMENT)), Some(Vec::new()));
        assert_eq!(index.take(Lsn(3 * SEGMENT)), Some(Vec::new()));
        assert_eq!(index.n_pids(), 0);
    }

    #[test]
    fn a_segment_noted_at_the_cap_leaves_the_index_for_good() {
        // One thread notes in one stripe: its cap is 3.
        let index = BaseIndex::new(SEGMENT, Lsn(0), 3);
        for pid in 0..3 {
            index.note(Lsn(SEGMENT + pid), pid);
        }
        assert_eq!(index.n_pids(), 3);
        // At the cap: the segment gaining a base leaves the index and frees its ids.
        index.note(Lsn(SEGMENT + 50), 9);
        assert_eq!(index.n_pids(), 0);
        // Later bases in it are not kept either, though there is room again.
        index.note(Lsn(SEGMENT + 60), 10);
        index.note(Lsn(2 * SEGMENT), 11);
        assert_eq!(index.n_pids(), 1);
        assert_eq!(index.take(Lsn(SEGMENT)), None);
        assert_eq!(index.take(Lsn(2 * SEGMENT)), Some(vec![11]));
    }

    #[test]
    fn a_segment_is_gathered_from_every_stripe() {
        let index = BaseIndex::new(SEGMENT, Lsn(0), 4);
        let note_on_new_threads = |segment: u64, n_threads: u64| {
            // Threads take stripes in turn as they first note.
            std::thread::scope(|scope| {
                for pid in 0..n_threads {
                    let index = &index;
                    scope.spawn(move || index.note(Lsn(segment * SEGMENT + pid), pid));
                }
            });
        };
        note_on_new_threads(1, N_STRIPES as u64);
        let mut gathered = index.take(Lsn(SEGMENT)).expect("indexed");
        gathered.sort_unstable();
        assert_eq!(gathered, (0..N_STRIPES as u64).collect::<Vec<_>>());
        assert_eq!(index.n_pids(), 0);

        // One stripe reaching its cap drops the segment from the whole index, though the
        // other stripes kept their lists.
        note_on_new_threads(2, 3);
        for pid in 0..5 {
            index.note(Lsn(2 * SEGMENT + 100 + pid), 100 + pid);
        }
        assert_eq!(index.take(Lsn(2 * SEGMENT)), None);
        assert_eq!(index.n_pids(), 0);
    }
}
