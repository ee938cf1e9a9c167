//! The segment accountant: pure bookkeeping of which segments of the data file are Free,
//! Active (being written), Inactive (fully written and stable) or Draining (being cleaned), how
//! many live bytes each holds, and when one may be reused.
//!
//! It decides; it does no IO and starts no threads. The crates that own files ask it "which
//! segment next?", "which pages must move so segment 7 can be freed?", "may the file be cut?"
//! and act on the answers, which makes it testable exhaustively.
//!
//! # Invariants
//!
//! - **Safe reuse.** A segment is handed out by [`SegmentAccountant::next_segment`] only if it
//!   is Free, and it becomes Free only when nothing in it is needed: for a plain log, its whole
//!   LSN range lies below the (durable) release point and it was fully written; for a page
//!   store, it holds no live fragment *and* every write that replaced one of its fragments is
//!   stable. Bytes made dead by a write stored in segment T stay "dying" (counted, blocking
//!   reuse) until T is deactivated.
//! - **Recent segments are not reused.** The last `n_recent_protected` segments handed out (as
//!   many as the IO buffer ring can have writes in flight to) are not handed out again, so
//!   recovery can tell a lost segment from one that was never written when buffers reach the
//!   disk out of order.
//! - **Exact live bytes.** Per-segment live bytes are the exact sum of the current fragments'
//!   lengths; cleaning works on bytes, not page counts.
//! - **Distinct LSNs.** Every segment in use holds a distinct, segment-aligned base LSN.
//! - **Rebuildable.** [`SegmentAccountant::rebuild`] turns what recovery finds into the state a
//!   running process had, including the true end of the file.
//!
//! # Cleaning policy
//!
//! Inactive segments with live bytes below `cleaning_threshold_live_fraction` of the segment
//! length are candidates; [`SegmentAccountant::pick_cleaning_victim`] takes the one with the
//! fewest live bytes (the oldest base LSN among equals). We chose lowest-utilization-first over
//! LFS's cost-benefit rule `(1 - u) * age / (1 + u)` because the age term changes with every
//! write, so cost-benefit needs a periodic rescan of all segments, while lowest-live-bytes is
//! kept exactly in an ordered index at O(log n) per change; and for uniform updates (the case the
//! accountant is sized for) greedy selection is what cost-benefit reduces to. The tie-break on
//! age keeps the part of cost-benefit that is cheap. [`SegmentAccountant::cleaning_wanted`]
//! says when to clean: while the segments in use exceed `target_space_amplification` times the
//! live bytes.
//!
//! # How callers use it without a global lock per page write
//!
//! The accountant is single-threaded data: the caller keeps it behind one mutex. That mutex is
//! taken once per IO buffer and once per segment, never once per page write:
//!
//! - A page write records its change (`link`, `replace`, `free`) in the
//!   [`AccountingBatch`] of the IO buffer its frame went into: a `Vec` push, no lock (each
//!   writer may keep its own batch and [`AccountingBatch::append`] them, or the batch can be
//!   rebuilt from the frame headers by the thread that writes the buffer).
//! - The thread that writes the buffer out calls [`SegmentAccountant::apply`] once for the
//!   whole batch. It may do so before or after the segment is deactivated: changes stored in
//!   an already stable segment take effect at once.
//! - The log calls [`SegmentAccountant::next_segment`] when it rolls to a new segment and
//!   [`SegmentAccountant::deactivate`] when the stable LSN passes a segment's end.
//! - A plain log calls [`SegmentAccountant::release_before`] once its release point is durable.
//! - The cleaner asks [`SegmentAccountant::cleaning_wanted`], picks a victim, relocates
//!   [`SegmentAccountant::pages_to_relocate`] as ordinary `replace` writes, and the victim frees
//!   itself when their segment is deactivated.
//!
//! # What it deliberately does not do
//!
//! No IO, no threads, no persistence of its own (its state is rebuilt from the log), no
//! locking, no choice of *when* to write: only the answers.
#![forbid(unsafe_code)]

mod accountant;
mod batch;
mod config;
mod error;
mod facts;
mod geometry;
mod ids;
mod state;
mod stats;

pub use accountant::SegmentAccountant;
pub use batch::{AccountingBatch, PageOp};
pub use config::{AccountantConfig, AccountingMode};
pub use error::SegmentError;
pub use facts::{RecoveredFacts, RecoveredFragment, RecoveredSegment, RecoveredState};
pub use geometry::{Geometry, MAX_SEGMENT_LEN_BYTES, MIN_SEGMENT_LEN_BYTES};
pub use ids::{Lsn, PageId, SegmentId};
pub use state::SegmentState;
pub use stats::{AccountantStats, SegmentStats};
