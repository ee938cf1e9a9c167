//! The segment accountant: pure bookkeeping of which segments are free, active, inactive or
//! draining, how many live bytes each holds, and when one may be reused.
//!
//! (Filled in by issue 3.) It decides; it does no IO and starts no threads.
#![forbid(unsafe_code)]
