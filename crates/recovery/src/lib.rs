//! Opening what is on disk: scanning segments, finding the durable prefix, cutting torn
//! tails, and handing a running [`iobuf::Log`] back to the caller.
//!
//! ```
//! use std::sync::Arc;
//! use iobuf::{LogConfig, Lsn, storage::SimStorage};
//!
//! let storage = Arc::new(SimStorage::new());
//! let config = LogConfig { flush_every: None, ..LogConfig::default() };
//! let (log, report) = recovery::open_log(storage.clone(), config.clone())?;
//! assert!(report.created);
//! let location = log.write(b"survives a restart")?;
//! log.make_stable(location.lsn)?;
//! log.close()?;
//!
//! let (log, report) = recovery::open_log(storage, config)?;
//! assert_eq!(report.messages_recovered, 1);
//! let (_, bytes) = log.iter_from(Lsn(0))?.next().unwrap()?;
//! assert_eq!(bytes, b"survives a restart");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Promises
//!
//! * **Prefix recovery**: the recovered log is exactly a prefix of the completed messages in
//!   LSN order, holding at least everything that was stable. Aborted messages never appear; a
//!   batch comes back whole or not at all (the frame scanner checks a batch entirely before
//!   yielding any of it).
//! * **No silent loss**: a torn tail past the last durable point is cut and reported in the
//!   [`RecoveryReport`]. Damage before it (every IO buffer starts with a marker recording the
//!   stable LSN when it was written, and a clean close writes one final marker) is a
//!   [`RecoveryError::Corruption`] naming the segment and offset, and nothing on disk is
//!   changed.
//! * **Nothing is overwritten before it is understood**: all checks run before the first write;
//!   a configuration that contradicts the files ([`RecoveryError::ConfigMismatch`]) or a
//!   directory held by another opener ([`RecoveryError::Locked`]) leaves every byte as it was.
//! * **Verification where it is needed** ([`open_log_with`], [`OpenOptions::scan_from`]): a
//!   caller that holds its own checksummed record that the log was durable up to some LSN
//!   (the page cache's snapshot) may have frames verified only from the segment holding it
//!   on; the segments below are checked by their header only. No legitimate torn tail can lie
//!   below a durable point, no stable marker there can claim more than it, and every frame
//!   below is still verified when it is read ([`iobuf::Log::read`], [`iobuf::Log::iter_from`]),
//!   so damage there becomes a typed error at read time instead of at open. The claim itself
//!   is checked: a log that ends before it is [`RecoveryError::Corruption`]. Plain
//!   [`open_log`] verifies everything.
//! * **Safe restart**: the torn tail and the headers of segments written past it are erased and
//!   synced before the log writes again, so a stale frame can never be mistaken for a new one,
//!   and the segment accountant is rebuilt with the true end of the file (the original reused
//!   the file's first segment after a reopen).
//!
//! # Snapshot files
//!
//! [`SnapshotStore`] owns the files of page-table snapshots, which bound the restart cost of
//! the page cache; their payload is opaque bytes to this crate. A snapshot is written as
//! `snapshot-{generation:020}.tmp`, synced, renamed to `snapshot-{generation:020}` and the
//! directory synced before older snapshots are removed, so a crash leaves the old or the new
//! one, whole. Loading is read-only, checks magic, version, both CRC-32s, the length and the
//! generation, never loads a temporary, and falls back to the next older snapshot when the
//! newest does not verify.
//!
//! # What this crate does not do
//!
//! It does not interpret message contents: replaying them is the caller's job (iterate with
//! [`iobuf::Log::iter_from`] from [`RecoveryReport::log_start`]); nor does it know what a
//! snapshot payload holds.
#![forbid(unsafe_code)]

mod error;
mod open;
mod report;
mod snapshot;

pub use error::RecoveryError;
pub use open::{OpenOptions, open_log, open_log_dir, open_log_with};
pub use report::RecoveryReport;
pub use snapshot::{
    LoadedSnapshot, MAX_SNAPSHOT_PAYLOAD_LEN_BYTES, RejectedSnapshot, SnapshotInfo, SnapshotStore,
};
