//! The log's configuration and its validation.

use std::time::Duration;

use segment::{Geometry, SegmentError};

use crate::format::{
    BATCH_START_FRAME_LEN, BLOB_POINTER_FRAME_LEN, BUFFER_START_FRAME_LEN, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

/// The smallest IO buffer the log accepts. Tests use buffers this small so that buffer rolls,
/// segment rolls and ring laps happen constantly.
pub const MIN_IO_BUF_LEN_BYTES: u32 = 256;

/// The most IO buffers a ring may have.
pub const MAX_IO_BUFS: u32 = 1024;

/// What a caller asks for. Turn it into a [`ValidLogConfig`] with [`LogConfig::validate`]; the
/// log only ever runs on a validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Length of one segment of the data file: a power of two, at least
    /// `segment::MIN_SEGMENT_LEN_BYTES`, and at least `io_buf_len_bytes`. It is written into
    /// every segment header and cannot change for an existing log. Default 2 MiB: a data
    /// file carries a few segments beyond the live log (the one being written, the one being
    /// cleaned, released ones waiting for a durable header), so smaller segments keep it
    /// closer to the live data (a page store with 13 MiB live: file 22 MiB with 2 MiB
    /// segments, 40 MiB with 8 MiB ones), while a segment still holds two buffers' worth of
    /// writes.
    pub segment_len_bytes: u64,
    /// Length of one IO buffer. A message (with its frame header) must fit in one buffer, so
    /// this bounds the largest message stored inline; larger ones go to blob files.
    pub io_buf_len_bytes: u32,
    /// Number of IO buffers in the ring (at least 2). More buffers let more writes be in
    /// flight at once.
    pub n_io_bufs: u32,
    /// Messages longer than this many bytes are stored in a file of their own (a blob), with a
    /// small pointer frame in the log. At most [`ValidLogConfig::max_inline_message_len_bytes`].
    pub blob_threshold_bytes: u32,
    /// How often the background flusher makes everything written durable. `None` disables
    /// the flusher: only explicit `make_stable`/`flush` calls sync.
    pub flush_every: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_len_bytes: 2 << 20,
            io_buf_len_bytes: 1 << 20,
            n_io_bufs: 8,
            blob_threshold_bytes: 64 << 10,
            flush_every: Some(Duration::from_millis(200)),
        }
    }
}

/// A configuration the log can run on; every limit has been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidLogConfig {
    config: LogConfig,
    geometry: Geometry,
}

/// Why a [`LogConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The segment length is not usable (not a power of two, or out of bounds).
    #[error("segment length: {0}")]
    SegmentLength(#[from] SegmentError),
    /// The IO buffer is too small to hold the per-buffer headers and a message.
    #[error("io_buf_len_bytes {io_buf_len_bytes} is below the minimum of {min}")]
    IoBufTooSmall {
        /// What was asked for.
        io_buf_len_bytes: u32,
        /// The smallest accepted value.
        min: u32,
    },
    /// The IO buffer is larger than the header word can describe.
    #[error("io_buf_len_bytes {io_buf_len_bytes} is above the maximum of {max}")]
    IoBufTooLarge {
        /// What was asked for.
        io_buf_len_bytes: u32,
        /// The largest accepted value.
        max: u32,
    },
    /// An IO buffer never spans two segments, so it cannot be longer than one.
    #[error(
        "io_buf_len_bytes {io_buf_len_bytes} is larger than segment_len_bytes {segment_len_bytes}"
    )]
    IoBufLargerThanSegment {
        /// What was asked for.
        io_buf_len_bytes: u32,
        /// The segment length asked for.
        segment_len_bytes: u64,
    },
    /// The ring needs at least two buffers (one filling while another is written) and at most
    /// [`MAX_IO_BUFS`].
    #[error("n_io_bufs {n_io_bufs} is outside 2..={max}")]
    BufferCount {
        /// What was asked for.
        n_io_bufs: u32,
        /// The largest accepted value.
        max: u32,
    },
    /// Messages up to the blob threshold are stored inline, so it cannot exceed what fits in
    /// one buffer.
    #[error(
        "blob_threshold_bytes {blob_threshold_bytes} exceeds the largest inline message ({max} bytes for this buffer size)"
    )]
    BlobThresholdTooLarge {
        /// What was asked for.
        blob_threshold_bytes: u32,
        /// The largest accepted value for this buffer size.
        max: u32,
    },
    /// A flush interval of zero would make the flusher spin.
    #[error("flush_every must be longer than zero (use None to disable the flusher)")]
    ZeroFlushInterval,
}

impl LogConfig {
    /// Checks every limit and returns a configuration the log can run on.
    pub fn validate(self) -> Result<ValidLogConfig, ConfigError> {
        let geometry = Geometry::new(self.segment_len_bytes)?;
        if self.io_buf_len_bytes < MIN_IO_BUF_LEN_BYTES {
            return Err(ConfigError::IoBufTooSmall {
                io_buf_len_bytes: self.io_buf_len_bytes,
                min: MIN_IO_BUF_LEN_BYTES,
            });
        }
        // The buffer array carries one frame header of slack past its end (for the padding
        // header that closes a segment), and offsets must stay describable by the header word.
        let max_io_buf = header_bits::MAX_OFFSET - FRAME_HEADER_LEN as u32;
        if self.io_buf_len_bytes > max_io_buf {
            return Err(ConfigError::IoBufTooLarge {
                io_buf_len_bytes: self.io_buf_len_bytes,
                max: max_io_buf,
            });
        }
        if u64::from(self.io_buf_len_bytes) > self.segment_len_bytes {
            return Err(ConfigError::IoBufLargerThanSegment {
                io_buf_len_bytes: self.io_buf_len_bytes,
                segment_len_bytes: self.segment_len_bytes,
            });
        }
        if !(2..=MAX_IO_BUFS).contains(&self.n_io_bufs) {
            return Err(ConfigError::BufferCount {
                n_io_bufs: self.n_io_bufs,
                max: MAX_IO_BUFS,
            });
        }
        let max_inline = max_inline_message_len(self.io_buf_len_bytes);
        if self.blob_threshold_bytes > max_inline {
            return Err(ConfigError::BlobThresholdTooLarge {
                blob_threshold_bytes: self.blob_threshold_bytes,
                max: max_inline,
            });
        }
        if self.flush_every == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroFlushInterval);
        }
        Ok(ValidLogConfig {
            config: self,
            geometry,
        })
    }
}

/// The largest frame (header included) one buffer can take: a buffer that starts a segment
/// carries the segment header and its buffer-start frame before any message.
const fn max_frame_len(io_buf_len_bytes: u32) -> u32 {
    io_buf_len_bytes - (SEGMENT_HEADER_LEN + BUFFER_START_FRAME_LEN) as u32
}

/// The largest message stored inline: it must fit in one frame, and also inside a batch of
/// one (a batch-start frame precedes it).
const fn max_inline_message_len(io_buf_len_bytes: u32) -> u32 {
    max_frame_len(io_buf_len_bytes) - (BATCH_START_FRAME_LEN + FRAME_HEADER_LEN) as u32
}

impl ValidLogConfig {
    /// The configuration as asked for.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    /// The segment geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
    /// Length of one segment.
    pub fn segment_len_bytes(&self) -> u64 {
        self.config.segment_len_bytes
    }
    /// Length of one IO buffer.
    pub fn io_buf_len_bytes(&self) -> u32 {
        self.config.io_buf_len_bytes
    }
    /// Number of IO buffers in the ring.
    pub fn n_io_bufs(&self) -> u32 {
        self.config.n_io_bufs
    }
    /// How many segments the ring's buffers can have writes in flight to at once: the
    /// segments `n_io_bufs` buffers can span, plus one because the buffers in flight may
    /// begin and end partway through a segment, and never more than one per buffer. The
    /// segment accountant protects this many of the most recently handed-out segments from
    /// reuse.
    ///
    /// Fix: the log used to protect `n_io_bufs` segments, as if every buffer could be in a
    /// segment of its own; with the defaults of the time (8 buffers of 1 MiB, 8 MiB segments)
    /// that kept 64 MiB of free segments out of reuse, and the data file of a store with
    /// 20 MiB live stayed above 100 MiB.
    pub fn segments_in_flight(&self) -> u32 {
        let ring_bytes = u64::from(self.config.n_io_bufs) * u64::from(self.config.io_buf_len_bytes);
        let spanned = ring_bytes.div_ceil(self.config.segment_len_bytes) + 1;
        spanned.min(u64::from(self.config.n_io_bufs)) as u32
    }
    /// Messages longer than this go to blob files.
    pub fn blob_threshold_bytes(&self) -> u32 {
        self.config.blob_threshold_bytes
    }
    /// The background flush interval, if any.
    pub fn flush_every(&self) -> Option<Duration> {
        self.config.flush_every
    }
    /// The largest frame, header included, that fits in one buffer.
    pub fn max_frame_len_bytes(&self) -> u32 {
        max_frame_len(self.config.io_buf_len_bytes)
    }
    /// The largest message stored inline in the log for this buffer size.
    pub fn max_inline_message_len_bytes(&self) -> u32 {
        max_inline_message_len(self.config.io_buf_len_bytes)
    }
    /// How many bytes a message of `len` bytes takes in the log: an inline frame, or a blob
    /// pointer frame when it is longer than the blob threshold.
    pub fn frame_len_for_message(&self, len_bytes: usize) -> u64 {
        if len_bytes > self.config.blob_threshold_bytes as usize {
            BLOB_POINTER_FRAME_LEN
        } else {
            FRAME_HEADER_LEN + len_bytes as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LogConfig {
        LogConfig {
            segment_len_bytes: 4096,
            io_buf_len_bytes: 512,
            n_io_bufs: 4,
            blob_threshold_bytes: 128,
            flush_every: None,
        }
    }

    #[test]
    fn default_and_tiny_are_valid() {
        LogConfig::default().validate().unwrap();
        tiny().validate().unwrap();
    }

    #[test]
    fn every_limit_is_a_typed_error() {
        type IsExpected = fn(&ConfigError) -> bool;
        let cases: Vec<(LogConfig, IsExpected)> = vec![
            (
                LogConfig {
                    segment_len_bytes: 5000,
                    ..tiny()
                },
                |e| matches!(e, ConfigError::SegmentLength(_)),
            ),
            (
                LogConfig {
                    io_buf_len_bytes: 100,
                    ..tiny()
                },
                |e| matches!(e, ConfigError::IoBufTooSmall { .. }),
            ),
            (
                LogConfig {
                    io_buf_len_bytes: 8192,
                    ..tiny()
                },
                |e| matches!(e, ConfigError::IoBufLargerThanSegment { .. }),
            ),
            (
                LogConfig {
                    n_io_bufs: 1,
                    ..tiny()
                },
                |e| matches!(e, ConfigError::BufferCount { .. }),
            ),
            (
                LogConfig {
                    blob_threshold_bytes: 500,
                    ..tiny()
                },
                |e| matches!(e, ConfigError::BlobThresholdTooLarge { .. }),
            ),
            (
                LogConfig {
                    flush_every: Some(Duration::ZERO),
                    ..tiny()
                },
                |e| matches!(e, ConfigError::ZeroFlushInterval),
            ),
        ];
        for (config, is_expected) in cases {
            let err = config.clone().validate().unwrap_err();
            assert!(is_expected(&err), "{config:?} gave {err:?}");
        }
    }
}
