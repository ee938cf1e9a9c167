//! Page-level accounting changes, recorded without any lock and applied once per IO buffer.

use crate::ids::{PageId, SegmentId};

/// One accounting change. Public so a caller can inspect or rebuild a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageOp {
    /// A fragment of `len_bytes` (a delta) was appended to the page; its older fragments stay
    /// live.
    Link {
        /// The page.
        page: PageId,
        /// The fragment's length on disk, frame header included.
        len_bytes: u64,
    },
    /// A complete new copy of the page (`len_bytes` long) was written; all its older fragments
    /// die once this copy is stable. Relocation by the cleaner is a `Replace`.
    Replace {
        /// The page.
        page: PageId,
        /// The new copy's length on disk, frame header included.
        len_bytes: u64,
    },
    /// The page was freed; all its fragments die once the free record is stable. The free
    /// record itself holds no live bytes.
    Free {
        /// The page.
        page: PageId,
    },
}

/// The accounting changes of the writes that went into one IO buffer, all stored in one
/// physical segment.
///
/// A batch is plain data owned by whoever fills it (the IO buffer, or each writer thread), so
/// recording costs one `Vec` push and takes no lock. The thread that writes the buffer out
/// applies the whole batch with one call to
/// [`SegmentAccountant::apply`](crate::SegmentAccountant::apply).
///
/// Changes to the *same* page must be recorded in the order the page's updates took effect
/// (the order of the page table's successful CASes), because a `Link` after a `Replace` keeps
/// both fragments while a `Replace` after a `Link` keeps one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountingBatch {
    segment: SegmentId,
    ops: Vec<PageOp>,
}

impl AccountingBatch {
    /// An empty batch for writes stored in `segment`.
    pub fn new(segment: SegmentId) -> AccountingBatch {
        AccountingBatch {
            segment,
            ops: Vec::new(),
        }
    }

    /// An empty batch with room for `capacity` changes.
    pub fn with_capacity(segment: SegmentId, capacity: usize) -> AccountingBatch {
        AccountingBatch {
            segment,
            ops: Vec::with_capacity(capacity),
        }
    }

    /// The segment the batch's writes are stored in.
    pub fn segment(&self) -> SegmentId {
        self.segment
    }

    /// Records that a fragment of `len_bytes` was appended to `page`.
    pub fn link(&mut self, page: PageId, len_bytes: u64) {
        self.ops.push(PageOp::Link { page, len_bytes });
    }

    /// Records that a full new copy of `page`, `len_bytes` long, replaced its older fragments.
    pub fn replace(&mut self, page: PageId, len_bytes: u64) {
        self.ops.push(PageOp::Replace { page, len_bytes });
    }

    /// Records that `page` was freed.
    pub fn free(&mut self, page: PageId) {
        self.ops.push(PageOp::Free { page });
    }

    /// Appends another batch's changes after this one's (for per-thread batches of the same
    /// buffer). Returns `false`, changing nothing, if `other` is for a different segment.
    #[must_use]
    pub fn append(&mut self, other: &mut AccountingBatch) -> bool {
        if other.segment != self.segment {
            return false;
        }
        self.ops.append(&mut other.ops);
        true
    }

    /// The recorded changes, in order.
    pub fn ops(&self) -> &[PageOp] {
        &self.ops
    }

    /// The number of recorded changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Empties the batch and points it at `segment`, keeping its allocation (IO buffers are
    /// reused, so are their batches).
    pub fn reset(&mut self, segment: SegmentId) {
        self.segment = segment;
        self.ops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order_and_appends_same_segment_only() {
        let mut a = AccountingBatch::new(SegmentId(1));
        a.replace(PageId(1), 10);
        a.link(PageId(1), 3);
        let mut b = AccountingBatch::with_capacity(SegmentId(1), 4);
        b.free(PageId(2));
        let mut c = AccountingBatch::new(SegmentId(2));
        c.free(PageId(3));
        assert!(a.append(&mut b));
        assert!(!a.append(&mut c));
        assert!(b.is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(
            a.ops(),
            &[
                PageOp::Replace {
                    page: PageId(1),
                    len_bytes: 10
                },
                PageOp::Link {
                    page: PageId(1),
                    len_bytes: 3
                },
                PageOp::Free { page: PageId(2) }
            ]
        );
        a.reset(SegmentId(9));
        assert!(a.is_empty());
        assert_eq!(a.segment(), SegmentId(9));
    }
}
