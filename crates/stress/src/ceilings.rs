//! What the target directory's disk and this CPU can do at best, so each workload figure can
//! be printed as a fraction of its ceiling. The loops are `bench-support`'s, the same the
//! benchmarks (`bench_log`, `bench_pages`) measure C1 to C3 with, run here for one second
//! each.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bench_support::{ceiling_cas, ceiling_sequential_write, ceiling_sync_writes};

use crate::error::Error;

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
    let c1_path = fresh(dir.join("stress-ceiling-c1.data"))?;
    let c1 = ceiling_sync_writes(&c1_path, LOOP_DURATION)
        .map_err(|e| Error::io("measuring C1 (4 KiB write + fdatasync)", e))?;
    let c2_path = fresh(dir.join("stress-ceiling-c2.data"))?;
    let c2 = ceiling_sequential_write(&c2_path, SEQUENTIAL_MAX_BYTES, Some(LOOP_DURATION))
        .map_err(|e| Error::io("measuring C2 (sequential write)", e))?;
    let c3 = ceiling_cas(LOOP_DURATION);
    Ok(Ceilings {
        sync_writes_per_second: c1.per_second(),
        sequential_bytes_per_second: c2.bytes_per_second(),
        cas_per_second: c3.per_second(),
    })
}

/// `path`, after removing a file of that name a killed earlier run may have left in a kept
/// `--dir` (the ceilings create their files new).
fn fresh(path: PathBuf) -> Result<PathBuf, Error> {
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(
            format!("removing the leftover {}", path.display()),
            e,
        )),
        _ => Ok(path),
    }
}
