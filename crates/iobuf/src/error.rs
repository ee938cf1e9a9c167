//! The log's error type.

use std::io;
use std::sync::Arc;

use segment::{Lsn, SegmentError, SegmentId};

use crate::config::ConfigError;

/// Everything the log can report. Expected operating conditions (a full disk, a locked
/// directory, a poisoned log) have their own variants; a lost race is never an error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The configuration was refused.
    #[error("invalid log configuration: {0}")]
    Config(#[from] ConfigError),
    /// A storage call failed. A failed write or sync poisons the log from then on (see
    /// [`LogError::Poisoned`]); a failed read is reported to its caller only.
    #[error("io error while {op}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The error the storage returned.
        #[source]
        source: Arc<io::Error>,
    },
    /// An earlier write or sync failed. Nothing is acknowledged after such a failure: every
    /// later call returns this error. Reopening the directory recovers the durable prefix.
    #[error("the log is poisoned by an earlier failure ({first_failure}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned the log.
        first_failure: Arc<LogError>,
    },
    /// `make_stable` was asked for an LSN the log never handed out.
    #[error("lsn {lsn} was never reserved: the log's tip is {tip}")]
    NotReserved {
        /// The LSN asked for.
        lsn: Lsn,
        /// The next LSN the log will hand out.
        tip: Lsn,
    },
    /// A batch does not fit in one IO buffer (it must, to be written atomically).
    #[error(
        "a batch of {frames_len_bytes} bytes of frames exceeds the {max_bytes}-byte limit of one IO buffer"
    )]
    BatchTooLarge {
        /// Bytes the batch needs in the log.
        frames_len_bytes: u64,
        /// The most one buffer can take.
        max_bytes: u64,
    },
    /// A batch must hold at least one message.
    #[error("a batch must hold at least one message")]
    EmptyBatch,
    /// A message is longer than this process can hold in memory (its buffer could not be
    /// allocated).
    #[error("a message of {len_bytes} bytes cannot be held in memory")]
    MessageTooLarge {
        /// Length asked for.
        len_bytes: u64,
    },
    /// Bytes on disk are not what the log wrote there.
    #[error("corruption in {segment} at offset {offset_in_segment}: {reason}")]
    Corruption {
        /// The physical segment.
        segment: SegmentId,
        /// The offset of the damage within the segment.
        offset_in_segment: u64,
        /// What check failed.
        reason: String,
    },
    /// A blob file is missing or damaged.
    #[error("blob of message {lsn} is unreadable: {reason}")]
    BlobCorruption {
        /// The LSN of the pointer frame.
        lsn: Lsn,
        /// What check failed.
        reason: String,
    },
    /// A location does not name a message of this log (it was released, or never existed).
    #[error("no message at lsn {lsn}: {reason}")]
    NoMessage {
        /// The LSN asked for.
        lsn: Lsn,
        /// Why.
        reason: String,
    },
    /// The segment accountant refused an operation: an internal invariant broke.
    #[error("segment accounting: {0}")]
    Segment(#[from] SegmentError),
    /// Another process (or another log in this one) holds the directory.
    #[error("the log directory is locked by another opener")]
    Locked,
    /// `create` found an existing log.
    #[error("the directory already holds a log; open it with recovery instead")]
    AlreadyExists,
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

impl LogError {
    /// Wraps an IO error with what the log was doing.
    pub(crate) fn io(op: &'static str, source: io::Error) -> LogError {
        LogError::Io {
            op,
            source: Arc::new(source),
        }
    }

    /// The raw OS error code behind this error, if it came from the storage (for example 28,
    /// ENOSPC, for a full disk).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            LogError::Io { source, .. } => source.raw_os_error(),
            LogError::Poisoned { first_failure } => first_failure.raw_os_error(),
            _ => None,
        }
    }
}

/// The log's result type.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
