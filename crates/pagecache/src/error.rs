//! The page cache's error type.

use std::io;
use std::sync::Arc;

use iobuf::{LogError, Lsn, PageId};
use recovery::RecoveryError;

use crate::config::ConfigError;

/// Why a page cache operation failed. Losing a compare-and-swap is not an error: those
/// methods return [`crate::Stale`] inside `Ok`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The log failed (an IO error poisons it; every later write reports it, and reopening
    /// recovers the durable prefix).
    #[error(transparent)]
    Log(#[from] LogError),
    /// Opening the log or a snapshot failed.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// A storage call of the page cache itself (its configuration file) failed.
    #[error("io error while {op}: {source}")]
    Io {
        /// What the page cache was doing.
        op: &'static str,
        /// The storage's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another opener holds the directory.
    #[error("the directory is locked by another opener")]
    Locked,
    /// The directory was created with settings that differ from the ones asked for. Nothing
    /// was changed on disk.
    #[error("configuration mismatch: {field} is {on_disk} on disk but {requested} was requested")]
    ConfigMismatch {
        /// The setting.
        field: &'static str,
        /// Its value on disk.
        on_disk: u64,
        /// Its value in the configuration.
        requested: u64,
    },
    /// The persisted configuration file is damaged (the original only logged a warning and
    /// carried on with whatever it read). Nothing was changed on disk.
    #[error("the persisted configuration file {file_name} is corrupt: {reason}")]
    CorruptConfig {
        /// The file.
        file_name: &'static str,
        /// The check that failed.
        reason: String,
    },
    /// The directory holds a log that the page cache did not create (no configuration file
    /// next to a non-empty log). Nothing was changed on disk.
    #[error("the directory holds a log that is not a page cache (no {file_name})")]
    NotAPageCache {
        /// The configuration file that is missing.
        file_name: &'static str,
    },
    /// A record read from the log or a snapshot does not make sense.
    #[error("corruption at lsn {lsn:?} (page {page:?}): {reason}")]
    Corruption {
        /// The page concerned, if known.
        page: Option<PageId>,
        /// The LSN of the record, if known.
        lsn: Option<Lsn>,
        /// What was wrong.
        reason: String,
    },
    /// Every page id the table can hold is in use.
    #[error("page id space exhausted (limit {limit})")]
    PageIdsExhausted {
        /// The number of page ids the table can hold.
        limit: u64,
    },
    /// The id generator reached `u64::MAX`.
    #[error("the id generator is exhausted")]
    IdsExhausted,
    /// A root name longer than [`crate::MAX_ROOT_NAME_LEN_BYTES`].
    #[error("root name is {len_bytes} bytes long; the limit is {max} bytes")]
    RootNameTooLong {
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A record (a 9-byte header and a fragment's encoding, or a page's merged value for a
    /// consolidation) is longer than [`crate::MAX_RECORD_LEN_BYTES`], the most a page's
    /// chain can hold the length of. Nothing was written.
    #[error(
        "a record of {len_bytes} bytes exceeds the {max_len_bytes}-byte limit of a page's record"
    )]
    RecordTooLarge {
        /// The record's length.
        len_bytes: u64,
        /// The limit.
        max_len_bytes: u64,
    },
    /// The data file grew past the 2^32 segments a page's chain can address (at least a
    /// terabyte, at the smallest segment length). Nothing was written.
    #[error("the data file reached segment {segment}, beyond the 2^32 a page's chain can address")]
    DataFileTooLarge {
        /// The segment the record would have gone to.
        segment: u64,
    },
    /// The page cache was closed.
    #[error("the page cache is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Error {
        Error::Io {
            op,
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(
        page: Option<PageId>,
        lsn: Option<Lsn>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            page,
            lsn,
            reason: reason.into(),
        }
    }
}

/// The page cache's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
