//! The recovery crate's error type.

use std::io;
use std::sync::Arc;

use iobuf::{LogError, SegmentId};

/// Why a directory could not be opened. Every variant leaves the files as they were: recovery
/// changes nothing on disk until every check has passed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The configuration was refused, or starting the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A storage call failed.
    #[error("io error while {op}: {source}")]
    Io {
        /// What recovery was doing.
        op: &'static str,
        /// The storage's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another opener holds the directory.
    #[error("the log directory is locked by another opener")]
    Locked,
    /// What is on disk contradicts the configuration asked for.
    #[error("configuration mismatch: {field} is {on_disk} on disk but {requested} was requested")]
    ConfigMismatch {
        /// The setting.
        field: &'static str,
        /// Its value on disk.
        on_disk: u64,
        /// Its value in the configuration.
        requested: u64,
    },
    /// Damage before the last point known to be durable: recovering past it would silently
    /// drop acknowledged data, so the open fails instead.
    #[error("corruption in {segment} at offset {offset_in_segment}: {reason}")]
    Corruption {
        /// The physical segment.
        segment: SegmentId,
        /// Where in the segment.
        offset_in_segment: u64,
        /// What check failed and why it is not a torn tail.
        reason: String,
    },
    /// A snapshot payload over the size limit was refused before anything was written.
    #[error(
        "snapshot payload of {payload_len_bytes} bytes is over the limit of {max_payload_len_bytes}"
    )]
    SnapshotTooLarge {
        /// The payload's length.
        payload_len_bytes: u64,
        /// The largest payload accepted.
        max_payload_len_bytes: u64,
    },
    /// A snapshot file with generation `u64::MAX` exists, so no newer one can be named; nothing
    /// was written.
    #[error("snapshot generations exhausted: a snapshot file has generation u64::MAX")]
    SnapshotGenerationsExhausted,
}

impl RecoveryError {
    pub(crate) fn io(op: &'static str, source: io::Error) -> RecoveryError {
        RecoveryError::Io {
            op,
            source: Arc::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SegmentId` prints as "segment N" itself; the message once said "segment segment N".
    #[test]
    fn corruption_names_the_segment_once() {
        let error = RecoveryError::Corruption {
            segment: SegmentId(3),
            offset_in_segment: 4924,
            reason: "frame checksum mismatch".to_string(),
        };
        assert_eq!(
            error.to_string(),
            "corruption in segment 3 at offset 4924: frame checksum mismatch"
        );
        let error = LogError::Corruption {
            segment: SegmentId(3),
            offset_in_segment: 7,
            reason: "x".to_string(),
        };
        assert_eq!(error.to_string(), "corruption in segment 3 at offset 7: x");
    }
}
