//! The log: a ring of IO buffers with lock-free reservations, group commit, checksummed
//! frames, large values and reading back.
//!
//! (Filled in by issue 4.)
