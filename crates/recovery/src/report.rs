//! What an open found and did.

use std::time::Duration;

use iobuf::Lsn;

/// The facts of one recovery, for logs, metrics and the stress program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether the directory held no log (a new one was created).
    pub created: bool,
    /// Bytes read from the data file.
    pub bytes_scanned: u64,
    /// Segments whose frames were scanned.
    pub segments_scanned: u64,
    /// Messages (data frames and blob pointers) in the recovered log, from its release point
    /// (or from `verified_from`, when that is later) on.
    pub messages_recovered: u64,
    /// Frames were verified from here on, a segment at a time: the first LSN of the segment
    /// holding `log_start`, unless the open was asked to verify only from a later point
    /// ([`crate::OpenOptions::scan_from`]), then of the segment holding that point. Segments
    /// of the log below it were checked by their header only, and `messages_recovered`
    /// counts only the messages from here on.
    pub verified_from: Lsn,
    /// Where the recovered log ends: the next LSN the log hands out.
    pub tip: Lsn,
    /// The durable release point: the log needs nothing below it.
    pub log_start: Lsn,
    /// The largest LSN below which, by the markers on disk, everything had been durable.
    pub known_stable: Lsn,
    /// Where a torn tail was cut, if one was: the log ended at a frame header that carries this
    /// position's LSN but does not verify. That is a write that did not fully land, or (after
    /// an earlier crash) a frame of an earlier incarnation of the same logical segment, which
    /// the per-segment salt keeps from ever verifying again.
    pub cut_at: Option<Lsn>,
    /// Bytes erased past the end of the log in its last segment (a torn tail, or stale
    /// bytes from an earlier use of a reused segment): up to the segment's last non-zero byte.
    pub bytes_erased: u64,
    /// Segments past the cut (written out of order before the crash) whose headers were erased.
    pub segments_discarded: u64,
    /// Blob files no recovered message refers to, deleted.
    pub orphan_blobs_deleted: u64,
    /// Wall time of the open.
    pub elapsed: Duration,
}

impl RecoveryReport {
    /// Scan speed in bytes per second (0 when nothing was scanned).
    pub fn scan_bytes_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.bytes_scanned as f64 / seconds
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.created {
            return write!(f, "created a new log in {:?}", self.elapsed);
        }
        write!(
            f,
            "recovered {} messages from {} segments ({} bytes scanned, {:.0} MB/s) in {:?}; \
             log spans [{}, {}), stable marker {}; ",
            self.messages_recovered,
            self.segments_scanned,
            self.bytes_scanned,
            self.scan_bytes_per_second() / 1e6,
            self.elapsed,
            self.log_start,
            self.tip,
            self.known_stable,
        )?;
        if self.verified_from > self.log_start {
            write!(f, "frames verified from {}; ", self.verified_from)?;
        }
        match self.cut_at {
            Some(cut) => write!(f, "torn tail cut at {cut}")?,
            None => write!(f, "no torn tail")?,
        }
        write!(f, ", {} bytes erased past the end", self.bytes_erased)?;
        write!(
            f,
            ", {} later segments discarded, {} orphan blobs deleted",
            self.segments_discarded, self.orphan_blobs_deleted
        )
    }
}
