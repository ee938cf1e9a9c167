//! The log: a ring of IO buffers with lock-free reservations, group commit, checksummed
//! frames, large values, and reading back.
//!
//! Many threads append to one log at once. A message's bytes are copied straight into an IO
//! buffer at a range claimed by one compare-and-swap on the buffer's 64-bit header word (the
//! `header-bits` crate); no lock is taken per message. Full buffers are written to the data
//! file by whichever thread releases them last, possibly out of order; the *stable LSN*
//! advances only over a contiguous run of written and synced buffers. `make_stable(lsn)`
//! groups concurrent durability requests: one write and one `fdatasync` serve every waiter
//! whose message was in the buffers it covers.
//!
//! ```
//! use std::sync::Arc;
//! use iobuf::{Log, LogConfig, storage::SimStorage};
//!
//! let storage = Arc::new(SimStorage::new());
//! let log = Log::create(storage, LogConfig { flush_every: None, ..LogConfig::default() })?;
//! let location = log.write(b"hello")?;
//! log.make_stable(location.lsn)?;
//! assert_eq!(log.read(location)?, b"hello");
//! let messages: Vec<_> = log.iter_from(location.lsn)?.collect::<Result<_, _>>()?;
//! assert_eq!(messages[0].1, b"hello");
//! log.close()?;
//! # Ok::<(), iobuf::LogError>(())
//! ```
//!
//! # Invariants
//!
//! * **LSNs** are byte positions in an endless logical log, strictly increasing in reservation
//!   order, never reused. A frame's LSN is under its checksum and must equal its position
//!   (segment base LSN + offset), so zeroed or stale bytes never read as a valid frame.
//! * **Durability**: when `make_stable(lsn)` or `flush()` returns `Ok`, every message completed
//!   at or below that LSN survives a crash. Exactly one `fdatasync` per durable point (the
//!   segment is closed by a padding frame in the same write, not by a second sync).
//! * **Prefix**: on disk, what recovery finds is a prefix of the completed messages in LSN
//!   order; aborted messages are marked and skipped; a batch is one reservation, whole or
//!   nothing; a large value's blob file is durable before its pointer frame can be.
//! * **Fail-stop**: the first failed write or sync poisons the log; every later call returns
//!   [`LogError::Poisoned`] and nothing is acknowledged after it.
//! * **Safe reuse**: a release point is written into each new segment header and applied to
//!   the segment accountant only once that header is stable, so no segment is reused while a
//!   crash could still make recovery need it. Starting a segment whose header records a new
//!   release wakes the background flusher (if any) at once, so released segments are
//!   reusable after one sync rather than after the flusher's interval.
//!
//! # What this crate does not do
//!
//! It does not open an existing directory: the `recovery` crate scans what is on disk, cuts a
//! torn tail and hands the log its start point ([`Log::start`]). It does not know about pages
//! or cleaning (the `pagecache` crate does), and it never reads through the data file on the
//! append path.
//!
//! # Module map
//!
//! `config` (validated settings), `format` (every on-disk byte), `storage` (the file trait,
//! real and simulated), `slot` (one IO buffer), `ring` (the reservation protocol, writing,
//! group commit), `log` (the public API), `blob` (large values), `metrics`, `waiters`.

mod blob;
mod config;
mod error;
pub mod format;
mod log;
mod metrics;
mod ring;
mod slot;
pub mod storage;
mod waiters;

pub use config::{ConfigError, LogConfig, MAX_IO_BUFS, MIN_IO_BUF_LEN_BYTES, ValidLogConfig};
pub use error::{LogError, Result};
pub use log::{DATA_FILE_NAME, Location, Log, LogIter, Reservation, Stored};
pub use metrics::{LatencyHistogram, LogMetrics};
pub use ring::{ContinuedSegment, StartPoint};
pub use segment::{Geometry, Lsn, PageId, SegmentId};

/// With the `debug-delay` feature, sleeps or yields at random at the CAS points of the
/// reservation protocol, so ordinary tests explore more interleavings. Free otherwise.
#[inline(always)]
pub(crate) fn debug_delay() {
    #[cfg(feature = "debug-delay")]
    {
        use std::cell::Cell;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT_SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        thread_local!(static STATE: Cell<u64> = Cell::new(
            NEXT_SEED.fetch_add(0x6A09_E667_F3BC_C909, Ordering::Relaxed) | 1
        ));
        let roll = STATE.with(|state| {
            let mut x = state.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            x
        });
        match roll % 64 {
            0 => std::thread::sleep(std::time::Duration::from_micros(roll % 50)),
            1..=7 => std::thread::yield_now(),
            _ => {}
        }
    }
}
