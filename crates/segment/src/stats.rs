//! Read-only figures for metrics and the stress program.

use crate::config::AccountingMode;
use crate::ids::{Lsn, SegmentId};
use crate::state::SegmentState;

/// One segment's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentStats {
    /// The segment.
    pub segment: SegmentId,
    /// Its state.
    pub state: SegmentState,
    /// The first LSN of the logical segment it holds; `None` when Free.
    pub base_lsn: Option<Lsn>,
    /// Bytes of current page fragments stored in it (always 0 for a plain log).
    pub live_bytes: u64,
    /// Bytes of replaced or freed fragments whose replacement is not yet stable: they still
    /// keep the segment from being reused.
    pub dying_bytes: u64,
}

/// Whole-file figures. Computed in O(1) from counters the accountant maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountantStats {
    /// Plain log or pages: decides what "live" means in [`Self::space_amplification`].
    pub mode: AccountingMode,
    /// Segments in the data file.
    pub n_segments_in_file: u64,
    /// Free segments (including recently handed out ones that may not be reused yet).
    pub n_free: u64,
    /// Active segments.
    pub n_active: u64,
    /// Inactive segments.
    pub n_inactive: u64,
    /// Draining segments.
    pub n_draining: u64,
    /// Current page fragment bytes in the whole file.
    pub live_bytes: u64,
    /// Replaced fragment bytes waiting for their replacement to become stable.
    pub dying_bytes: u64,
    /// The data file's length.
    pub file_bytes: u64,
    /// The bytes of the segments in use (not Free).
    pub in_use_bytes: u64,
    /// The plain log's release point.
    pub release_point: Lsn,
}

impl AccountantStats {
    /// The data file's length divided by the bytes that must be kept: the live page bytes for a
    /// page store, the bytes of the segments in use for a plain log (whose messages the
    /// accountant does not see). `None` when nothing must be kept.
    pub fn space_amplification(&self) -> Option<f64> {
        let needed_bytes = match self.mode {
            AccountingMode::Pages => self.live_bytes,
            AccountingMode::PlainLog => self.in_use_bytes,
        };
        (needed_bytes > 0).then(|| self.file_bytes as f64 / needed_bytes as f64)
    }
}
