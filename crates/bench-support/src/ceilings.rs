//! The ceilings: what the disk and this CPU do at best with plain `std` calls, so each
//! workload figure can be printed as a fraction of one measured on the same machine, in the
//! same run.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::scratch::with_path;
use crate::timing::{Measured, Written};

const MIB: u64 = 1 << 20;

/// C1's file: a preallocated region its writes cycle over.
const SYNC_REGION_LEN_BYTES: u64 = MIB;
/// C1's writes.
const SYNC_WRITE_LEN_BYTES: u64 = 4 << 10;
/// C2's writes.
const SEQUENTIAL_CHUNK_LEN_BYTES: u64 = MIB;

/// C1: 4 KiB positional writes (`write_all_at`), each followed by `sync_data` (fdatasync),
/// cycling over the 1 MiB region of a preallocated, synced file, so the syncs need no size or
/// block-allocation metadata. Loops until `duration` has passed; creating and preallocating
/// the file are not timed.
///
/// Creates `path`, which must not exist yet, and removes it before returning `Ok`.
pub fn ceiling_sync_writes(path: &Path, duration: Duration) -> io::Result<Measured> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| with_path("creating", path, e))?;
    file.write_all_at(&vec![0x5Au8; SYNC_REGION_LEN_BYTES as usize], 0)
        .map_err(|e| with_path("writing", path, e))?;
    file.sync_all().map_err(|e| with_path("syncing", path, e))?;
    let block = [0xC3u8; SYNC_WRITE_LEN_BYTES as usize];
    let n_slots = SYNC_REGION_LEN_BYTES / SYNC_WRITE_LEN_BYTES;
    let start = Instant::now();
    let mut n_ops = 0u64;
    while start.elapsed() < duration {
        file.write_all_at(&block, (n_ops % n_slots) * SYNC_WRITE_LEN_BYTES)
            .map_err(|e| with_path("writing", path, e))?;
        file.sync_data()
            .map_err(|e| with_path("syncing", path, e))?;
        n_ops += 1;
    }
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(path).map_err(|e| with_path("removing", path, e))?;
    Ok(Measured { n_ops, elapsed })
}

/// C2: a new file written sequentially in 1 MiB chunks (`write_all`), then one `sync_data`,
/// all timed, creating the file included. Writes chunks until `max_total_bytes` are written
/// or, when given, `max_duration` has passed, whichever comes first; the last chunk may pass
/// `max_total_bytes` by less than 1 MiB.
///
/// Creates `path`, which must not exist yet, and removes it before returning `Ok`.
pub fn ceiling_sequential_write(
    path: &Path,
    max_total_bytes: u64,
    max_duration: Option<Duration>,
) -> io::Result<Written> {
    let chunk: Vec<u8> = (0..SEQUENTIAL_CHUNK_LEN_BYTES)
        .map(|i| (i % 251) as u8)
        .collect();
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| with_path("creating", path, e))?;
    let mut total_bytes = 0u64;
    while total_bytes < max_total_bytes && max_duration.is_none_or(|d| start.elapsed() < d) {
        file.write_all(&chunk)
            .map_err(|e| with_path("writing", path, e))?;
        total_bytes += SEQUENTIAL_CHUNK_LEN_BYTES;
    }
    file.sync_data()
        .map_err(|e| with_path("syncing", path, e))?;
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(path).map_err(|e| with_path("removing", path, e))?;
    Ok(Written {
        total_bytes,
        elapsed,
    })
}

/// C3: one thread incrementing one `AtomicU64` with `compare_exchange`, the way a log
/// reservation claims its range, with nothing else in the loop (the clock is read once per
/// 65 536 operations). Loops until `duration` has passed.
pub fn ceiling_cas(duration: Duration) -> Measured {
    const OPS_PER_CLOCK_CHECK: u64 = 1 << 16;
    let word = AtomicU64::new(0);
    let word = black_box(&word);
    let start = Instant::now();
    let mut current = word.load(Ordering::Acquire);
    let mut n_ops = 0u64;
    loop {
        for _ in 0..OPS_PER_CLOCK_CHECK {
            match word.compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => current += 1,
                Err(actual) => current = actual,
            }
        }
        n_ops += OPS_PER_CLOCK_CHECK;
        if start.elapsed() >= duration {
            break;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(word.load(Ordering::Acquire), n_ops, "every CAS succeeded");
    Measured { n_ops, elapsed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScratchDir;

    #[test]
    fn ceilings_run_briefly_and_leave_nothing_behind() {
        let scratch = ScratchDir::create(&std::env::temp_dir(), "bench-support-test").unwrap();
        let c1 = ceiling_sync_writes(&scratch.sub("c1"), Duration::from_millis(20)).unwrap();
        assert!(c1.n_ops > 0 && c1.elapsed >= Duration::from_millis(20));
        let c2 = ceiling_sequential_write(&scratch.sub("c2"), 3 * MIB, None).unwrap();
        assert_eq!(c2.total_bytes, 3 * MIB);
        let capped =
            ceiling_sequential_write(&scratch.sub("c2"), 1 << 40, Some(Duration::ZERO)).unwrap();
        assert_eq!(capped.total_bytes, 0);
        assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 0);
        let c3 = ceiling_cas(Duration::from_millis(5));
        assert!(c3.n_ops >= 1 << 16 && c3.per_second() > 0.0);
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let scratch = ScratchDir::create(&std::env::temp_dir(), "bench-support-test").unwrap();
        let path = scratch.sub("taken");
        fs::write(&path, b"someone's data").unwrap();
        let error = ceiling_sync_writes(&path, Duration::ZERO).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(error.to_string().contains("taken"), "{error}");
        assert!(ceiling_sequential_write(&path, MIB, None).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"someone's data");
    }
}
