//! The page cache: a lock-free map from page ids to chains of fragments, persisted through the
//! log, merged by the caller's [`Materializer`], cached within a byte budget, cleaned so the
//! file stays small, and reopened quickly from snapshots.
//!
//! (Crate documentation with a runnable example is written below.)
#![deny(unsafe_code)]

mod cache;
mod config;
mod entry;
mod error;
mod materializer;
mod metrics;
mod open;
mod persisted;
mod record;
mod snapshot;
mod table;

pub use cache::{MAX_ROOT_NAME_LEN_BYTES, Page, PageCache, Stale, Stats, Written};
pub use config::{Config, ConfigBuilder, ConfigError};
pub use entry::Version;
pub use error::{Error, Result};
pub use iobuf::{Lsn, PageId};
pub use materializer::{DecodeError, Materializer};
pub use metrics::{Counter, LatencyHistogram, Metrics};
pub use open::OpenReport;
pub use persisted::{CONFIG_FILE_NAME, FORMAT_VERSION};
