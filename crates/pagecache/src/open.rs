//! Opening a directory: the persisted configuration, the log, the newest snapshot, replay.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;
use iobuf::storage::{FsStorage, Storage};
use iobuf::{Geometry, Location, Lsn};
use recovery::{OpenOptions, RecoveryError, RecoveryReport, SnapshotInfo, SnapshotStore};

use crate::bases::{BaseIndex, MAX_INDEXED_BASES_PER_STRIPE};
use crate::cache::{CleanerState, Inner, MetaState, PageCache};
use crate::cleaner_thread::{self, BackgroundCleaner};
use crate::config::Config;
use crate::entry::{Chain, Entry, PageState, Resident};
use crate::error::{Error, Result};
use crate::home::HomeCells;
use crate::location::{PackedLocation, Unpackable};
use crate::materializer::Materializer;
use crate::metrics::Metrics;
use crate::persisted::{FORMAT_VERSION, PersistedConfig};
use crate::record::{self, Meta, RecordKind, SnapshotPage, SnapshotView};
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
        // The snapshot first (read-only): its replay point tells recovery where frame
        // verification must start. Reading it before recovery takes the directory's lock is
        // safe: snapshot files appear whole (renamed into place), and should another opener
        // write a newer one meanwhile, this older one is still a correct starting point, the
        // same one the fallback to an older snapshot relies on.
        let snapshots = SnapshotStore::new(Arc::clone(&storage));
        let loaded = snapshots.load_newest()?;
        let snapshot = match &loaded {
            Some(loaded) => Some(
                SnapshotView::parse(&loaded.payload)
                    .map_err(|reason| snapshot_corruption(&loaded.info, reason))?,
            ),
            None => None,
        };
        // Everything below the snapshot's replay point that the page cache still uses is
        // reached through a location in the snapshot and checksummed when read, so recovery
        // verifies frames only from there on (see `recovery::OpenOptions::scan_from`).
        let scan_from = loaded
            .as_ref()
            .map_or(Lsn(0), |loaded| loaded.info.replay_from);
        let (log, log_report) = recovery::open_log_with(
            Arc::clone(&storage),
            config.log.config().clone(),
            OpenOptions::new().scan_from(scan_from),
        )
        .map_err(|error| match error {
            RecoveryError::Locked => Error::Locked,
            RecoveryError::Log(iobuf::LogError::Locked) => Error::Locked,
            other => Error::Recovery(other),
        })?;
        if on_disk.is_none() {
            if log_report.tip > log_report.log_start && !log_report.created {
                return Err(Error::NotAPageCache {
                    file_name: crate::persisted::CONFIG_FILE_NAME,
                });
            }
            requested.write(&*storage)?;
        }
        let log_start = log_report.log_start;
        let geometry = log.config().geometry();

        let mut rebuild = Rebuild::default();
        let mut meta = Meta::default();
        let mut meta_location: Option<Location> = None;
        let mut meta_lsn = Lsn(0);
        let mut replay_from = log_start;
        let mut snapshot_info = None;
        let mut rejected_snapshots = Vec::new();
        if let (Some(loaded), Some(snapshot)) = (&loaded, &snapshot) {
            rebuild
                .load_snapshot(snapshot)
                .map_err(|reason| snapshot_corruption(&loaded.info, reason))?;
            meta = snapshot.meta.clone();
            meta_lsn = snapshot.meta_lsn;
            replay_from = replay_from.max(loaded.info.replay_from);
            rejected_snapshots = loaded
                .rejected
                .iter()
                .map(|rejected| (rejected.file_name.clone(), rejected.reason.clone()))
                .collect();
            snapshot_info = Some(loaded.info.clone());
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
            let packed = PackedLocation::pack(location, geometry).map_err(|unpackable| {
                Error::corruption(Some(pid), Some(location.lsn), unpackable.to_string())
            })?;
            if rebuild.replay(pid.0, kind, packed) {
                records_replayed += 1;
            } else {
                records_skipped += 1;
            }
        }

        // Each page's chain is laid out once, at its final length, and copied into its entry.
        let table = PageTable::new();
        let mut live_bytes = 0u64;
        let mut n_pages = 0u64;
        let mut n_pages_dropped_as_freed = 0u64;
        let next_pid = rebuild.next_pid;
        let mut free_ids: VecDeque<(u64, Lsn)> = VecDeque::new();
        {
            let guard = epoch::pin();
            let laid_out = rebuild.for_each_chain(geometry, |pid, chain| {
                let Some(chain) = chain else {
                    free_ids.push_back((pid, Lsn(0)));
                    return;
                };
                // A page still pointing below the log's start was freed: had it been live
                // when its segment was cleaned, the cleaner would have rewritten it above the
                // start first. Its free record was cleaned away after the snapshot that
                // still lists it.
                if chain.iter().any(|location| location.lsn() < log_start) {
                    n_pages_dropped_as_freed += 1;
                    free_ids.push_back((pid, Lsn(0)));
                    return;
                }
                let chain = Chain::from_slice(chain);
                let entry = Entry::new(1, PageState::Live(chain, Resident::Nothing));
                live_bytes += entry.live_bytes();
                n_pages += 1;
                let current = table.load(pid, &guard);
                if table
                    .cas(pid, current, crossbeam_epoch::Owned::new(entry), &guard)
                    .is_err()
                {
                    unreachable!("no other thread touches the table during open");
                }
            });
            // Only the snapshot's locations can fail to pack here (the replayed ones were
            // packed as they were read).
            laid_out.map_err(|unpackable| match &loaded {
                Some(loaded) => snapshot_corruption(&loaded.info, unpackable.to_string()),
                None => Error::corruption(None, None, unpackable.to_string()),
            })?;
        }
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

        let id_high_water = meta.id_high_water;
        let n_free_ids = free_ids.len();
        let background_snapshots = config.background_snapshots;
        let background_cleaning = config.background_cleaning;
        // Every base record from now on is reserved through `Inner::reserve_record`, which
        // notes it; the segment holding the tip may have older records and is not indexed.
        let bases = BaseIndex::new(
            geometry.segment_len_bytes(),
            log.tip(),
            MAX_INDEXED_BASES_PER_STRIPE,
        );
        let inner = Arc::new(Inner {
            materializer,
            log,
            table,
            home: HomeCells::new(config.home_cells),
            next_pid: AtomicU64::new(next_pid),
            free_ids: Mutex::new(free_ids),
            n_free_ids: AtomicUsize::new(n_free_ids),
            resident_bytes: AtomicI64::new(0),
            live_bytes: AtomicI64::new(live_bytes as i64),
            clock_hand: Mutex::new(()),
            resident_ring: Mutex::new(VecDeque::new()),
            evict_blocked_at: AtomicU64::new(0),
            cleaner: Mutex::new(CleanerState::new()),
            batches_back: Condvar::new(),
            bases,
            clean_cursor: AtomicU64::new(log_start.0),
            clean_progress: AtomicU64::new(log_start.0),
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
            background_cleaner: BackgroundCleaner::default(),
            config,
        });
        // The threads are started into the cache itself, so that if one cannot start, the
        // cache dropped on the way out stops and joins the ones that did.
        let mut cache = PageCache {
            inner,
            background: None,
            cleaner_thread: None,
        };
        if background_snapshots {
            let for_thread = Arc::clone(&cache.inner);
            cache.background = Some(
                std::thread::Builder::new()
                    .name("pagecache-snapshot".to_string())
                    .spawn(move || run_background(for_thread))
                    .map_err(|error| Error::io("starting the snapshot thread", error))?,
            );
        }
        if background_cleaning {
            cache.inner.background_cleaner.starting();
            let for_thread = Arc::clone(&cache.inner);
            cache.cleaner_thread = Some(
                std::thread::Builder::new()
                    .name("pagecache-cleaner".to_string())
                    .spawn(move || cleaner_thread::run(for_thread))
                    .map_err(|error| Error::io("starting the cleaner thread", error))?,
            );
        }
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
        Ok((cache, report))
    }
}

fn snapshot_corruption(info: &SnapshotInfo, reason: String) -> Error {
    Error::corruption(None, None, format!("snapshot {}: {reason}", info.file_name))
}

/// What opening knows of one page id while it reads the snapshot and replays the log.
#[derive(Clone, Copy, Default)]
struct PageFacts<'a> {
    /// The page's chain in the snapshot, if it is there.
    snapshot: Option<SnapshotPage<'a>>,
    /// Replay skips this page's records at or below this LSN: the snapshot holds them.
    /// (Records come in LSN order, so once one is replayed, every later one is newer.)
    snapshot_last_lsn: Lsn,
    /// The index in [`Rebuild::records`] of the last base or free record replayed; the
    /// chain is rebuilt from there. `None` when the chain still starts with the snapshot's.
    restart: Option<usize>,
    /// How long the chain is after everything replayed so far (0: no page).
    n_slots: usize,
}

/// The page table as it is rebuilt at open: the snapshot's chains, read in place, and the
/// replayed records in one flat list, so that each page's final chain is laid out once.
#[derive(Default)]
struct Rebuild<'a> {
    /// By page id, up to `next_pid`.
    pages: Vec<PageFacts<'a>>,
    /// (page, kind, location) of every record replayed, in LSN order.
    records: Vec<(u64, RecordKind, PackedLocation)>,
    /// The first page id never handed out.
    next_pid: u64,
}

impl<'a> Rebuild<'a> {
    fn load_snapshot(&mut self, snapshot: &SnapshotView<'a>) -> Result<(), String> {
        if snapshot.next_pid > PAGE_ID_LIMIT {
            return Err(format!(
                "next page id {} is beyond the table's limit",
                snapshot.next_pid
            ));
        }
        self.next_pid = snapshot.next_pid;
        self.pages = vec![PageFacts::default(); snapshot.next_pid as usize];
        for page in snapshot.pages() {
            let page = page?;
            let Some(facts) = self.pages.get_mut(page.pid.0 as usize) else {
                return Err(format!(
                    "page {} is not below the next page id {}",
                    page.pid.0, snapshot.next_pid
                ));
            };
            if facts.snapshot.is_some() {
                return Err(format!("page {} is listed twice", page.pid.0));
            }
            *facts = PageFacts {
                snapshot: Some(page),
                snapshot_last_lsn: page.last_lsn(),
                restart: None,
                n_slots: page.n_slots(),
            };
        }
        Ok(())
    }

    /// Applies one page record (`pid` below the table's limit); whether it was replayed
    /// (`false`: skipped, the snapshot already holds it).
    fn replay(&mut self, pid: u64, kind: RecordKind, location: PackedLocation) -> bool {
        let index = pid as usize;
        if index >= self.pages.len() {
            self.pages.resize(index + 1, PageFacts::default());
        }
        self.next_pid = self.next_pid.max(pid + 1);
        let facts = &mut self.pages[index];
        if facts.snapshot.is_some() && location.lsn() <= facts.snapshot_last_lsn {
            return false;
        }
        match kind {
            RecordKind::Base => {
                facts.restart = Some(self.records.len());
                facts.n_slots = 1;
            }
            RecordKind::Delta => facts.n_slots += 1,
            RecordKind::Free => {
                facts.restart = Some(self.records.len());
                facts.n_slots = 0;
            }
            RecordKind::Meta => unreachable!("metadata records are not page records"),
        }
        self.records.push((pid, kind, location));
        true
    }

    /// Calls `f` with every page id below `next_pid` and its chain (oldest first), `None` for
    /// an id with no page. Each page's final length is known (`n_slots`), so the chains are
    /// laid out in one list: one allocation for the whole table, not one per page.
    ///
    /// Fails, before calling `f`, if a location in the snapshot has no packed form for a
    /// log of `geometry` (only a damaged snapshot has one).
    fn for_each_chain(
        self,
        geometry: Geometry,
        mut f: impl FnMut(u64, Option<&[PackedLocation]>),
    ) -> Result<(), Unpackable> {
        // `ends[pid]`: where the chain of `pid` ends in `flat` (it starts at the previous
        // page's end); `filled[pid]`: where its next location goes.
        let ends: Vec<usize> = self
            .pages
            .iter()
            .scan(0, |end, facts| {
                *end += facts.n_slots;
                Some(*end)
            })
            .collect();
        let mut filled: Vec<usize> = (ends.iter().zip(&self.pages))
            .map(|(end, facts)| end - facts.n_slots)
            .collect();
        let mut flat = vec![PackedLocation::PLACEHOLDER; ends.last().copied().unwrap_or(0)];
        let mut put = |pid: usize, location: PackedLocation| {
            flat[filled[pid]] = location;
            filled[pid] += 1;
        };
        for (pid, facts) in self.pages.iter().enumerate() {
            if facts.n_slots > 0
                && facts.restart.is_none()
                && let Some(page) = &facts.snapshot
            {
                for location in page.locations() {
                    put(pid, PackedLocation::pack(location, geometry)?);
                }
            }
        }
        for (index, (pid, kind, location)) in self.records.iter().enumerate() {
            let pid = *pid as usize;
            let from = self.pages[pid].restart.unwrap_or(0);
            if index >= from && *kind != RecordKind::Free {
                put(pid, *location);
            }
        }
        assert_eq!(filled, ends, "every chain is filled to its counted length");
        let mut start = 0;
        for (pid, &end) in (0..self.next_pid).zip(&ends) {
            f(pid, (end > start).then(|| &flat[start..end]));
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::MAX_RECORD_LEN_BYTES;
    use crate::materializer::DecodeError;
    use crate::record::SnapshotWriter;
    use iobuf::PageId;
    use iobuf::storage::SimStorage;

    /// Values are byte strings; a chain merges by concatenation.
    struct Bytes;

    impl Materializer for Bytes {
        type Fragment = Vec<u8>;

        fn encode(&self, fragment: &Vec<u8>, out: &mut Vec<u8>) {
            out.extend_from_slice(fragment);
        }

        fn decode(&self, bytes: &[u8]) -> std::result::Result<Vec<u8>, DecodeError> {
            Ok(bytes.to_vec())
        }

        fn merge(&self, chain: &[&Vec<u8>]) -> Vec<u8> {
            chain
                .iter()
                .flat_map(|fragment| fragment.iter().copied())
                .collect()
        }

        fn size_in_bytes(&self, fragment: &Vec<u8>) -> usize {
            fragment.len()
        }
    }

    fn config() -> Config {
        Config::builder()
            .segment_len_bytes(64 << 10)
            .io_buf_len_bytes(8 << 10)
            .n_io_bufs(2)
            .blob_threshold_bytes(4 << 10)
            .flush_every(None)
            .background_snapshots(false)
            .build()
            .expect("valid")
    }

    /// A store of one page with a snapshot of it; returns the snapshot's replay point and
    /// the page's location in it.
    fn store_with_a_snapshot(storage: &Arc<SimStorage>) -> (Lsn, Location) {
        let (cache, _) = PageCache::open(storage.clone(), config(), Bytes).expect("open");
        cache.allocate(b"page".to_vec()).expect("allocate");
        cache.flush().expect("flush");
        cache.snapshot().expect("snapshot");
        cache.close().expect("close");
        let loaded = SnapshotStore::new(storage.clone())
            .load_newest()
            .expect("load")
            .expect("a snapshot");
        let view = SnapshotView::parse(&loaded.payload).expect("parse");
        let page = view.pages().next().expect("one page").expect("valid");
        let location = page.locations().next().expect("one location");
        (loaded.info.replay_from, location)
    }

    /// A snapshot whose checksum is right but whose location has no packed form is
    /// corruption of that snapshot: open names the file and the reason, and builds nothing
    /// from it.
    #[test]
    fn a_snapshot_location_that_cannot_be_packed_is_corruption_of_that_snapshot() {
        type Spoil = fn(&mut Location);
        // Each case: its name, what the error's reason must say, and how it spoils.
        let cases: [(&str, &str, Spoil); 4] = [
            ("too long", "longer than", |location| {
                location.len_bytes = MAX_RECORD_LEN_BYTES + 1;
            }),
            ("offset disagrees", "does not agree", |location| {
                location.file_offset += 1;
            }),
            ("lsn at the limit", "u64::MAX", |location| {
                location.lsn = Lsn(u64::MAX);
            }),
            (
                "segment beyond the limit",
                "beyond the 2^32 segments",
                |location| {
                    // Segment 2^32 of 64 KiB segments, at the same offset within it.
                    location.file_offset += (1u64 << 32) * (64 << 10);
                },
            ),
        ];
        for (name, expected, spoil) in cases {
            let storage = Arc::new(SimStorage::new());
            let (replay_from, mut location) = store_with_a_snapshot(&storage);
            spoil(&mut location);
            let mut writer = SnapshotWriter::new(1, Lsn(0), &Meta::default());
            writer.page(PageId(0), std::iter::once(location));
            let written = SnapshotStore::new(storage.clone())
                .write(replay_from, &writer.finish())
                .expect("write the spoiled snapshot");
            let error = PageCache::open(storage.clone(), config(), Bytes)
                .err()
                .unwrap_or_else(|| panic!("{name}: opened"));
            let Error::Corruption {
                page: None,
                lsn: None,
                reason,
            } = &error
            else {
                panic!("{name}: {error:?}");
            };
            assert!(
                reason.contains(&written.file_name),
                "{name}: {reason} does not name {}",
                written.file_name
            );
            assert!(reason.contains(expected), "{name}: {reason}");
        }
    }
}
