//! The page cache facade: a lock-free page table of page ids to fragment chains over the log.
//!
//! (Filled in by issue 5.) Nothing is implemented yet; this crate only reserves its place in
//! the layer map.
#![forbid(unsafe_code)]
