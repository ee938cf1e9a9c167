//! Opening what is on disk: scanning segments, finding the durable prefix, cutting torn tails,
//! and snapshots so restart cost stays bounded.
//!
//! (Filled in by issue 4.)
