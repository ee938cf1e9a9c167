//! The crate's one error type.

use crate::ids::{Lsn, PageId, SegmentId};
use crate::state::SegmentState;

/// Everything the accountant can refuse. Each variant names what was wrong so the caller (or a
/// bug report) can tell which segment, LSN or page was involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The segment length is not a power of two within
    /// [`MIN_SEGMENT_LEN_BYTES`](crate::MIN_SEGMENT_LEN_BYTES)..=[`MAX_SEGMENT_LEN_BYTES`](crate::MAX_SEGMENT_LEN_BYTES).
    #[error(
        "segment length {segment_len_bytes} bytes is not a power of two between {} and {}",
        crate::MIN_SEGMENT_LEN_BYTES,
        crate::MAX_SEGMENT_LEN_BYTES
    )]
    BadSegmentLength {
        /// The rejected length.
        segment_len_bytes: u64,
    },

    /// A configuration field is out of range.
    #[error("bad accountant configuration: {field}: {reason}")]
    BadConfig {
        /// The field's name.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A state transition the state machine does not allow.
    #[error("{segment}: illegal transition from {from} to {to}")]
    IllegalTransition {
        /// The segment asked to change state.
        segment: SegmentId,
        /// Its state at the time.
        from: SegmentState,
        /// The state it was asked to enter.
        to: SegmentState,
    },

    /// A base LSN that is not a multiple of the segment length.
    #[error("{lsn} is not a multiple of the segment length {segment_len_bytes}")]
    MisalignedLsn {
        /// The rejected LSN.
        lsn: Lsn,
        /// The segment length it should be a multiple of.
        segment_len_bytes: u64,
    },

    /// A segment in use already holds the logical segment starting at this LSN.
    #[error("base {base_lsn} is already held by {held_by}")]
    DuplicateLsn {
        /// The base LSN asked for.
        base_lsn: Lsn,
        /// The segment already holding it.
        held_by: SegmentId,
    },

    /// A segment id at or beyond the end of the file.
    #[error("{segment} does not exist: the file holds {n_segments_in_file} segments")]
    UnknownSegment {
        /// The rejected id.
        segment: SegmentId,
        /// How many segments the file holds.
        n_segments_in_file: u64,
    },

    /// Page changes were applied to a segment that is not being written (Free or Draining).
    #[error(
        "{segment} is {state}: page changes can only be stored in an Active or Inactive segment"
    )]
    NotWritable {
        /// The batch's segment.
        segment: SegmentId,
        /// Its state.
        state: SegmentState,
    },

    /// Page accounting was asked of an accountant configured for a plain log.
    #[error("page accounting is not enabled: the accountant was configured for a plain log")]
    PagesNotTracked,

    /// A page the accountant holds no live fragment for (freed twice, or never written).
    #[error("{page} has no live fragments")]
    UnknownPage {
        /// The page.
        page: PageId,
    },

    /// A truncation that would cut off a segment still in use or still protected.
    #[error("cannot cut the file to {new_n_segments} segments: {segment} is {state}{}", if *.protected { " (recently handed out)" } else { "" })]
    CannotTruncate {
        /// The requested new number of segments.
        new_n_segments: u64,
        /// The first segment that prevents it.
        segment: SegmentId,
        /// That segment's state.
        state: SegmentState,
        /// Whether it is among the last segments handed out.
        protected: bool,
    },

    /// The facts given to [`SegmentAccountant::rebuild`](crate::SegmentAccountant)
    /// contradict each other.
    #[error("inconsistent recovered facts: {reason}")]
    InconsistentFacts {
        /// What contradicts what.
        reason: String,
    },
}
