//! Newtypes for the three quantities that are easy to confuse: a logical log position, a
//! physical segment index and a page id. Each wraps a fixed-width `u64` so it can be persisted
//! as-is (little-endian) by the crates that own files.

use std::fmt;

/// A logical sequence number: the byte position of a message in the endless logical log.
/// Strictly increasing in reservation order and never reused, unlike file offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// The index of a physical segment in the data file: its file offset is
/// `id * segment_len_bytes`. Physical segments are reused after cleaning; their ids therefore
/// say nothing about age.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

/// The identifier of a page in the page cache built above the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {}", self.0)
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_kind() {
        assert_eq!(Lsn(7).to_string(), "lsn 7");
        assert_eq!(SegmentId(3).to_string(), "segment 3");
        assert_eq!(PageId(9).to_string(), "page 9");
    }
}
