//! Opening a directory: the persisted configuration, the log, the newest snapshot, replay.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;
use iobuf::storage::{FsStorage, Storage};
use iobuf::{Location, Lsn};
use recovery::{RecoveryError, RecoveryReport, SnapshotInfo, SnapshotStore};

use crate::cache::{CleanerState, Inner, MetaState, PageCache};
use crate::config::Config;
use crate::entry::{Entry, PageState, Slot};
use crate::error::{Error, Result};
use crate::materializer::Materializer;
use crate::metrics::Metrics;
use crate::persisted::{FORMAT_VERSION, PersistedConfig};
use crate::record::{self, Meta, RecordKind, SnapshotContent};
use crate::snapshot::run_background;
use crate::table::{PAGE_ID_LIMIT, PageTable};

/// What opening found and did.
#[derive(Clone, Debug)]
pub struct OpenReport {
    /// What the log's recovery found and did (torn tail cut, bytes scanned, ...).
    pub log: RecoveryReport,
    /// The snapshot loaded, if any.
    pub snapshot: Option<SnapshotInfo>,
    /// Newer snapshot files that did not verify and were skipped, with the reason.
    pub rejected_snapshots: Vec<(String, String)>,
    /// Log records replayed after the snapshot.
    pub records_replayed: u64,
    /// Records skipped because the snapshot already held them.
    pub records_skipped: u64,
    /// Live pages after opening.
    pub n_pages: u64,
    /// Pages whose last record lay in released log (they were freed before a crash whose
    /// free record was cleaned away), dropped.
    pub n_pages_dropped_as_freed: u64,
    /// Time the whole open took.
    pub elapsed: Duration,
}

impl std::fmt::Display for OpenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.log)?;
        match &self.snapshot {
            Some(info) => writeln!(
                f,
                "snapshot {} (generation {}, replay from lsn {})",
                info.file_name, info.generation, info.replay_from.0
            )?,
            None => writeln!(f, "no snapshot")?,
        }
        for (name, reason) in &self.rejected_snapshots {
            writeln!(f, "skipped snapshot {name}: {reason}")?;
        }
        write!(
            f,
            "replayed {} records (skipped {}), {} pages, opened in {:.1?}",
            self.records_replayed, self.records_skipped, self.n_pages, self.elapsed
        )
    }
}

impl<M: Materializer> PageCache<M> {
    /// Opens (or creates) the page cache in directory `path` on the real file system.
    pub fn open_dir(
        path: impl AsRef<Path>,
        config: Config,
        materializer: M,
    ) -> Result<(PageCache<M>, OpenReport)> {
        let storage = FsStorage::open_dir(path.as_ref())
            .map_err(|error| Error::io("opening the directory", error))?;
        PageCache::open(Arc::new(storage), config, materializer)
    }

    /// Opens (or creates) the page cache in `storage`.
    ///
    /// Checks the persisted configuration first (read-only: a mismatch or a damaged file
    /// changes nothing on disk), then recovers the log, loads the newest valid snapshot and
    /// replays the log written after it.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: Config,
        materializer: M,
    ) -> Result<(PageCache<M>, OpenReport)> {
        let started = Instant::now();
        let requested = PersistedConfig {
            format_version: FORMAT_VERSION,
            segment_len_bytes: config.log.segment_len_bytes(),
        };
        let on_disk = PersistedConfig::read(&*storage)?;
        if let Some(on_disk) = &on_disk {
            on_disk.check(&requested)?;
        }
        let snapshots = SnapshotStore::new(Arc::clone(&storage));
        let (log, log_report) =
            recovery::open_log(Arc::clone(&storage), config.log.config().clone()).map_err(
                |error| match error {
                    RecoveryError::Locked => Error::Locked,
                    RecoveryError::Log(iobuf::LogError::Locked) => Error::Locked,
                    other => Error::Recovery(other),
                },
            )?;
        if on_disk.is_none() {
            if log_report.tip > log_report.log_start && !log_report.created {
                return Err(Error::NotAPageCache {
                    file_name: crate::persisted::CONFIG_FILE_NAME,
                });
            }
            requested.write(&*storage)?;
        }
        let loaded = snapshots.load_newest()?;
        let log_start = log_report.log_start;

        let mut pages: HashMap<u64, Vec<Location>> = HashMap::new();
        let mut next_pid = 0u64;
        let mut meta = Meta::default();
        let mut meta_location: Option<Location> = None;
        let mut meta_lsn = Lsn(0);
        let mut replay_from = log_start;
        let mut snapshot_info = None;
        let mut rejected_snapshots = Vec::new();
        if let Some(loaded) = loaded {
            let content = SnapshotContent::decode(&loaded.payload).map_err(|reason| {
                Error::corruption(
                    None,
                    None,
                    format!("snapshot {}: {reason}", loaded.info.file_name),
                )
            })?;
            next_pid = content.next_pid;
            meta = content.meta;
            meta_lsn = content.meta_lsn;
            for (pid, chain) in content.pages {
                pages.insert(pid.0, chain);
            }
            replay_from = replay_from.max(loaded.info.replay_from);
            rejected_snapshots = loaded
                .rejected
                .iter()
                .map(|rejected| (rejected.file_name.clone(), rejected.reason.clone()))
                .collect();
            snapshot_info = Some(loaded.info);
        }

        let mut records_replayed = 0u64;
        let mut records_skipped = 0u64;
        for item in log.iter_from(replay_from)? {
            let (location, bytes) = item?;
            let (kind, pid, body) = record::decode_record(&bytes)
                .map_err(|reason| Error::corruption(None, Some(location.lsn), reason))?;
            if kind == RecordKind::Meta {
                if location.lsn > meta_lsn {
                    meta = Meta::decode(body)
                        .map_err(|reason| Error::corruption(None, Some(location.lsn), reason))?;
                    meta_lsn = location.lsn;
                    meta_location = Some(location);
                    records_replayed += 1;
                } else {
                    records_skipped += 1;
                }
                continue;
            }
            if pid.0 >= PAGE_ID_LIMIT {
                return Err(Error::corruption(
                    Some(pid),
                    Some(location.lsn),
                    "page id beyond the table's limit",
                ));
            }
            next_pid = next_pid.max(pid.0 + 1);
            let chain = pages.get(&pid.0);
            if chain.is_some_and(|chain| chain.last().is_some_and(|last| location.lsn <= last.lsn))
            {
                records_skipped += 1;
                continue;
            }
            records_replayed += 1;
            match kind {
                RecordKind::Base => {
                    pages.insert(pid.0, vec![location]);
                }
                RecordKind::Delta => pages.entry(pid.0).or_default().push(location),
                RecordKind::Free => {
                    pages.remove(&pid.0);
                }
                RecordKind::Meta => unreachable!("handled above"),
            }
        }

        // A page still pointing below the log's start was freed: had it been live when its
        // segment was cleaned, the cleaner would have rewritten it above the start first.
        // Its free record was cleaned away after the snapshot that still lists it.
        let n_before = pages.len();
        pages.retain(|_, chain| chain.iter().all(|location| location.lsn >= log_start));
        let n_pages_dropped_as_freed = (n_before - pages.len()) as u64;

        let table = PageTable::new();
        let mut live_bytes = 0u64;
        {
            let guard = epoch::pin();
            for (&pid, chain) in &pages {
                let slots: Vec<Slot<M::Fragment>> = chain
                    .iter()
                    .map(|location| Slot::on_disk(*location))
                    .collect();
                let entry = Entry::new(1, PageState::Live(slots));
                live_bytes += entry.live_bytes();
                let current = table.load(pid, &guard);
                if table
                    .cas(pid, current, crossbeam_epoch::Owned::new(entry), &guard)
                    .is_err()
                {
                    unreachable!("no other thread touches the table during open");
                }
            }
        }
        let free_ids: VecDeque<(u64, Lsn)> = (0..next_pid)
            .filter(|pid| !pages.contains_key(pid))
            .map(|pid| (pid, Lsn(0)))
            .collect();
        let meta_frame_len = match meta_location {
            Some(location) => location.frame_len_bytes(),
            // From the snapshot: its exact frame length is not recorded; the record is small.
            None if meta_lsn > Lsn(0) => {
                let mut body = vec![0u8; record::RECORD_HEADER_LEN];
                meta.encode(&mut body);
                config.log.frame_len_for_message(body.len())
            }
            None => 0,
        };
        live_bytes += meta_frame_len;
        let n_pages = pages.len() as u64;
        drop(pages);

        let id_high_water = meta.id_high_water;
        let n_free_ids = free_ids.len();
        let background_snapshots = config.background_snapshots;
        let inner = Arc::new(Inner {
            materializer,
            log,
            table,
            next_pid: AtomicU64::new(next_pid),
            free_ids: Mutex::new(free_ids),
            n_free_ids: AtomicUsize::new(n_free_ids),
            resident_bytes: AtomicI64::new(0),
            live_bytes: AtomicI64::new(live_bytes as i64),
            clock_hand: Mutex::new(()),
            resident_ring: Mutex::new(VecDeque::new()),
            evict_blocked_at: AtomicU64::new(0),
            cleaner: Mutex::new(CleanerState::new()),
            clean_cursor: AtomicU64::new(log_start.0),
            meta: Mutex::new(MetaState {
                meta,
                lsn: meta_lsn,
                frame_len_bytes: meta_frame_len,
            }),
            next_id: AtomicU64::new(id_high_water),
            id_high_water: AtomicU64::new(id_high_water),
            snapshots,
            snapshot_state: Mutex::new(replay_from),
            metrics: Metrics::default(),
            closed: AtomicBool::new(false),
            shutdown: (Mutex::new(false), Condvar::new()),
            background_error: Mutex::new(None),
            config,
        });
        let background = if background_snapshots {
            let for_thread = Arc::clone(&inner);
            Some(
                std::thread::Builder::new()
                    .name("pagecache-snapshot".to_string())
                    .spawn(move || run_background(for_thread))
                    .map_err(|error| Error::io("starting the snapshot thread", error))?,
            )
        } else {
            None
        };
        let report = OpenReport {
            log: log_report,
            snapshot: snapshot_info,
            rejected_snapshots,
            records_replayed,
            records_skipped,
            n_pages,
            n_pages_dropped_as_freed,
            elapsed: started.elapsed(),
        };
        Ok((PageCache { inner, background }, report))
    }
}
