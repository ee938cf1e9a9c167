//! Many threads appending at once with tiny buffers and segments, some waiting for
//! durability: every acknowledged message reads back exactly, LSNs are unique, the stable
//! LSN never moves back, and iteration returns exactly what was written.
//!
//! Runs for `STRESS_SECONDS` (default 2; `PAGELOG_LONG=1` makes it 20). Meant to be run in
//! release mode too: `cargo test -p iobuf --release --test stress_concurrent`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iobuf::storage::{FsStorage, SimStorage, Storage};
use iobuf::{Location, Log, LogConfig, Lsn};

fn stress_duration() -> Duration {
    let default = if std::env::var_os("PAGELOG_LONG").is_some() {
        20
    } else {
        2
    };
    let seconds = std::env::var("STRESS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(seconds)
}

fn run_stress(storage: Arc<dyn Storage>, n_threads: usize) {
    let config = LogConfig {
        segment_len_bytes: 4096,
        io_buf_len_bytes: 512,
        n_io_bufs: 4,
        blob_threshold_bytes: 300,
        flush_every: Some(Duration::from_millis(5)),
    };
    let log = Log::create(storage, config).unwrap();
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + stress_duration();
    let written: Vec<Vec<(Location, Vec<u8>)>> = std::thread::scope(|scope| {
        let monitor = scope.spawn(|| {
            let mut last = Lsn(0);
            while !stop.load(Ordering::Relaxed) {
                let stable = log.stable_lsn();
                assert!(
                    stable >= last,
                    "stable LSN moved back from {last} to {stable}"
                );
                last = stable;
                std::thread::yield_now();
            }
        });
        let workers: Vec<_> = (0..n_threads)
            .map(|thread_idx| {
                let log = &log;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut i = 0usize;
                    while Instant::now() < deadline {
                        let len = (i * 31 + thread_idx * 7) % 350;
                        let bytes: Vec<u8> =
                            (0..len).map(|j| (thread_idx * 131 + i + j) as u8).collect();
                        let location = if i.is_multiple_of(17) {
                            let second = vec![thread_idx as u8; 5];
                            let locations = log.write_batch(&[&bytes, &second]).unwrap();
                            mine.push((locations[1], second));
                            locations[0]
                        } else {
                            log.write(&bytes).unwrap()
                        };
                        if thread_idx % 4 == 0 && i.is_multiple_of(8) {
                            log.make_stable(location.lsn).unwrap();
                            assert!(log.stable_lsn() > location.lsn);
                        }
                        mine.push((location, bytes));
                        i += 1;
                    }
                    mine
                })
            })
            .collect();
        let written = workers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        monitor.join().unwrap();
        written
    });
    log.flush().unwrap();
    let mut by_lsn: BTreeMap<Lsn, (Location, Vec<u8>)> = BTreeMap::new();
    for (location, bytes) in written.into_iter().flatten() {
        assert_eq!(log.read(location).unwrap(), bytes, "{location:?}");
        let previous = by_lsn.insert(location.lsn, (location, bytes));
        assert!(previous.is_none(), "LSN {} handed out twice", location.lsn);
    }
    let iterated: Vec<(Location, Vec<u8>)> = log
        .iter_from(Lsn(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(Location, Vec<u8>)> = by_lsn.into_values().collect();
    assert_eq!(iterated.len(), expected.len());
    assert!(
        iterated == expected,
        "iteration differs from what was written"
    );
    eprintln!(
        "{} messages, {} buffer writes, {} syncs, {} reserve waits",
        expected.len(),
        log.metrics().n_buffer_writes.load(Ordering::Relaxed),
        log.metrics().n_syncs.load(Ordering::Relaxed),
        log.metrics().n_reserve_waits.load(Ordering::Relaxed),
    );
    log.close().unwrap();
}

#[test]
fn sixteen_threads_on_simulated_storage() {
    run_stress(Arc::new(SimStorage::new()), 16);
}

#[test]
fn sixteen_threads_on_real_files() {
    let dir = std::env::temp_dir().join(format!("iobuf-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run_stress(Arc::new(FsStorage::open_dir(&dir).unwrap()), 16);
    std::fs::remove_dir_all(&dir).unwrap();
}
