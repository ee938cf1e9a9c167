//! What recovery found on disk, the input of
//! [`SegmentAccountant::rebuild`](crate::SegmentAccountant::rebuild).

use crate::ids::{Lsn, PageId, SegmentId};

/// Everything the accountant needs to rebuild its state after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredFacts {
    /// The number of segments the data file holds. Every segment not listed in `segments` is
    /// Free.
    pub n_segments_in_file: u64,
    /// The segments in use.
    pub segments: Vec<RecoveredSegment>,
    /// The live page fragments (empty for a plain log).
    pub fragments: Vec<RecoveredFragment>,
    /// The plain log's release point: nothing below it is needed. `Lsn(0)` if none.
    pub release_point: Lsn,
}

/// One segment in use, as recovery found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecoveredSegment {
    /// The physical segment.
    pub segment: SegmentId,
    /// The first LSN of the logical segment it holds.
    pub base_lsn: Lsn,
    /// Whether the log is still writing it.
    pub state: RecoveredState,
}

/// The state of a recovered segment in use. Exactly one segment (the one with the highest base
/// LSN) is Active, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecoveredState {
    /// The log continues writing it.
    Active,
    /// Fully written and stable.
    Inactive,
}

/// One live page fragment recovery found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecoveredFragment {
    /// The page it belongs to.
    pub page: PageId,
    /// The physical segment it is stored in.
    pub segment: SegmentId,
    /// Its length on disk, frame header included.
    pub len_bytes: u64,
}
