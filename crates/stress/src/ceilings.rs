//! What the target directory's disk and this CPU can do at best, measured with `std` only, so
//! each workload figure can be printed as a fraction of its ceiling. Taken from the project's
//! `crates/recovery/examples/bench_log.rs` (C1 to C3), with shorter loops.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;

const MIB: u64 = 1 << 20;

/// How long each ceiling loop runs.
const LOOP_DURATION: Duration = Duration::from_secs(1);

/// The sequential-write ceiling stops after this many bytes even if a second has not passed.
const SEQUENTIAL_MAX_BYTES: u64 = 1 << 30;

/// The three ceilings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ceilings {
    /// C1: 4 KiB positional write + `fdatasync` per second, on a preallocated region.
    pub sync_writes_per_second: f64,
    /// C2: sequential 1 MiB writes then one `fdatasync`, bytes per second.
    pub sequential_bytes_per_second: f64,
    /// C3: uncontended compare-and-swap increments per second, one thread.
    pub cas_per_second: f64,
}

/// Measures all three on `dir` (files are created there and removed).
pub fn measure(dir: &Path) -> Result<Ceilings, Error> {
    Ok(Ceilings {
        sync_writes_per_second: sync_writes(dir)?,
        sequential_bytes_per_second: sequential_write(dir)?,
        cas_per_second: cas(),
    })
}

/// C1: 4 KiB positional writes, each followed by `fdatasync`, cycling over a 1 MiB region of a
/// preallocated file (so the syncs need no size or block-allocation metadata).
fn sync_writes(dir: &Path) -> Result<f64, Error> {
    const WRITE_LEN_BYTES: u64 = 4096;
    let path = dir.join("stress-ceiling-c1.data");
    let io = |what: &str| {
        let shown = format!("{what} {}", path.display());
        move |e| Error::io(shown, e)
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io("creating"))?;
    file.write_all_at(&vec![0x5Au8; MIB as usize], 0)
        .map_err(io("writing"))?;
    file.sync_all().map_err(io("syncing"))?;
    let block = [0xC3u8; WRITE_LEN_BYTES as usize];
    let n_slots = MIB / WRITE_LEN_BYTES;
    let start = Instant::now();
    let mut n_ops = 0u64;
    while start.elapsed() < LOOP_DURATION {
        file.write_all_at(&block, (n_ops % n_slots) * WRITE_LEN_BYTES)
            .map_err(io("writing"))?;
        file.sync_data().map_err(io("syncing"))?;
        n_ops += 1;
    }
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(&path).map_err(io("removing"))?;
    Ok(n_ops as f64 / elapsed.as_secs_f64())
}

/// C2: a new file written sequentially in 1 MiB chunks for about a second, then one
/// `sync_data`, all timed.
fn sequential_write(dir: &Path) -> Result<f64, Error> {
    let path = dir.join("stress-ceiling-c2.data");
    let io = |what: &str| {
        let shown = format!("{what} {}", path.display());
        move |e| Error::io(shown, e)
    };
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io("creating"))?;
    let mut written_bytes = 0u64;
    while start.elapsed() < LOOP_DURATION && written_bytes < SEQUENTIAL_MAX_BYTES {
        file.write_all(&chunk).map_err(io("writing"))?;
        written_bytes += MIB;
    }
    file.sync_data().map_err(io("syncing"))?;
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(&path).map_err(io("removing"))?;
    Ok(written_bytes as f64 / elapsed.as_secs_f64())
}

/// C3: one thread incrementing one atomic with `compare_exchange`, the way a reservation
/// claims its range, with nothing else in the loop.
fn cas() -> f64 {
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
        if start.elapsed() >= LOOP_DURATION {
            break;
        }
    }
    n_ops as f64 / start.elapsed().as_secs_f64()
}
