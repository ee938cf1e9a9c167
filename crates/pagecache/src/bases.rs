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
//! Segments written (even in part) before open are not indexed, and nor is a segment that
//! gains a base while the index is at its cap ([`MAX_INDEXED_BASES`]); the cleaner reads
//! those back as before. An extra id is harmless (the cleaner finds the page does not use
//! the segment), a missing one is not, so a base is noted before its reservation completes
//! or aborts: by the time the segment is durable, and so cleanable, every base in it is
//! noted.

use std::collections::BTreeMap;
use std::sync::Mutex;

use iobuf::Lsn;

use crate::cache::lock;

/// Page ids the index holds at most (8 bytes each, so 8 MiB, and up to as much again in the
/// lists' spare capacity): several times the bases in the span of `bench_pages`' mixed
/// workload (100 000 pages). Past it, a segment that gains a base leaves the index and is
/// read back when its turn comes.
pub(crate) const MAX_INDEXED_BASES: usize = 1 << 20;

/// Per segment written since open, the pages with a base record in it.
pub(crate) struct BaseIndex {
    segment_len_bytes: u64,
    /// Segments are numbered by LSN over segment length; from this one on, every record
    /// was reserved by this process.
    first_indexed: u64,
    max_pids: usize,
    state: Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    /// The pages with a base in each segment, in the order they were noted; `None` once the
    /// segment left the index for the cap.
    segments: BTreeMap<u64, Option<Vec<u64>>>,
    /// Ids held in `segments`.
    n_pids: usize,
}

impl BaseIndex {
    /// An index for a log whose next record goes at `tip`: the segment holding `tip` has
    /// records from before, so indexing starts with the next one.
    pub(crate) fn new(segment_len_bytes: u64, tip: Lsn, max_pids: usize) -> BaseIndex {
        BaseIndex {
            segment_len_bytes,
            first_indexed: tip.0 / segment_len_bytes + 1,
            max_pids,
            state: Mutex::new(IndexState::default()),
        }
    }

    /// Notes a base record of `pid` reserved at `lsn`, before the reservation completes or
    /// aborts.
    pub(crate) fn note(&self, lsn: Lsn, pid: u64) {
        let segment = lsn.0 / self.segment_len_bytes;
        if segment < self.first_indexed {
            return;
        }
        let mut state = lock(&self.state);
        let IndexState { segments, n_pids } = &mut *state;
        let at_cap = *n_pids >= self.max_pids;
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

    /// Takes the pages with a base in the segment that starts at `segment_start`, in the
    /// order they were noted; `None` when the segment is not indexed and must be read back.
    /// Call it once the segment is durable (no reservation in it is outstanding).
    pub(crate) fn take(&self, segment_start: Lsn) -> Option<Vec<u64>> {
        let segment = segment_start.0 / self.segment_len_bytes;
        let mut state = lock(&self.state);
        let taken = state.segments.remove(&segment);
        if let Some(Some(pids)) = &taken {
            state.n_pids -= pids.len();
        }
        if segment < self.first_indexed {
            return None;
        }
        match taken {
            // No base was reserved in it.
            None => Some(Vec::new()),
            Some(pids) => pids,
        }
    }

    /// Ids held (for tests and the memory figure).
    #[cfg(test)]
    fn n_pids(&self) -> usize {
        lock(&self.state).n_pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 1 << 10;

    #[test]
    fn segments_from_before_open_are_read_back() {
        // Opened with the tip inside segment 2: segments 0 to 2 hold older records.
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
}
