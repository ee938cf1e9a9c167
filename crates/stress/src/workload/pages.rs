//! The `pages` workload: threads doing a mix of get, link, replace, allocate and free on a page
//! cache with self-checking values (see [`crate::page`]), each thread making its writes durable
//! every `--flush-every-ops` operations; then a final flush, a close, a timed reopen, and a
//! check of every page against the exact state the run left.
//!
//! Thread `t` writes the page keys with `key % threads == t`, so each key's ops are ordered
//! and its final state is known exactly; every thread reads any key (concurrent reads of pages
//! being written, evicted, paged in and relocated). A get of one of the thread's own keys must
//! return exactly the value the thread last wrote; a get of another thread's key must return a
//! value that is intact. First every key without a live page is allocated (the load phase,
//! reported on its own), then the mix runs for `--duration-secs` or `--ops`.
//!
//! The same threads run in a crash-loop child (`crash.rs`), which prints what each flush made
//! durable and announces each free before it calls `free`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
#[cfg(test)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iobuf::LogMetrics;
use pagecache::{Config, Lsn, Metrics, OpenReport, PageCache, PageId, Version};
use serde_json::json;

use crate::ceilings::Ceilings;
use crate::cli::{Cli, Mix};
use crate::crash::Rng;
use crate::error::Error;
use crate::page::{PageMaterializer, PageValue};
use crate::page_check::{self, Found, Life, Scan};
use crate::progress::{Goal, Progress};
use crate::report::{PageCacheOpen, Ratio, RunReport, Unit, Verification};
use crate::stats::{Latencies, OpStats};
use crate::workload::{Out, Target, dir_size};

/// The page cache every `pages` run uses.
pub type Cache = PageCache<PageMaterializer>;

/// Marks a key without a live page in the shared key-to-pid table.
const NO_PAGE: u64 = u64::MAX;

/// A run's op seqs start at its id (from `generate_id`, never repeated in a directory) shifted
/// by this much, so a life begun by a later run always has a larger allocate seq than any op
/// of an earlier run. A key takes fewer than 2^32 ops per life.
const SEQ_BASE_SHIFT: u32 = 32;

/// The page cache's configuration from the command line.
pub fn page_config(cli: &Cli) -> Result<Config, Error> {
    let segment_len_bytes = cli.segment_len_bytes;
    // An IO buffer no longer than a segment; the default (1 MiB) otherwise.
    let io_buf_len_bytes = u32::try_from(segment_len_bytes.min(1 << 20)).unwrap_or(1 << 20);
    Config::builder()
        .segment_len_bytes(segment_len_bytes)
        .io_buf_len_bytes(io_buf_len_bytes)
        .blob_threshold_bytes((io_buf_len_bytes / 4).min(64 << 10))
        .cache_budget_bytes(cli.cache_budget_bytes)
        .snapshot_every_bytes(segment_len_bytes.max(32 << 20))
        // One id per run: make each durable at once, so ids (and op seqs) stay small.
        .id_persist_interval(1)
        .build()
        .map_err(|e| Error::Usage(format!("the page cache refused the settings: {e}")))
}

/// Opens the page cache in `dir`.
pub fn open_cache(dir: &Path, config: Config) -> Result<(Cache, OpenReport), Error> {
    PageCache::open_dir(dir, config, PageMaterializer).map_err(|source| Error::OpenCache {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Scans an opened cache whose contents nobody here remembers (a kept `--dir`, a crash-loop
/// child's start): every page must be intact and every key below `n_keys`.
pub fn scan_existing(cache: &Cache, dir: &Path, n_keys: u64) -> Result<Scan, Error> {
    let scan = page_check::scan(cache, n_keys)?;
    if scan.problems.count > 0 {
        return Err(Error::Verification(format!(
            "the pages already in {} are not intact (or were not written by stress pages): {}",
            dir.display(),
            scan.problems.line()
        )));
    }
    Ok(scan)
}

/// The first op seq of a run, from a fresh id of the directory.
pub fn seq_base(cache: &Cache) -> Result<u64, Error> {
    let id = cache
        .generate_id()
        .map_err(|e| Error::cache("generating the run's id", e))?;
    id.checked_shl(SEQ_BASE_SHIFT)
        .filter(|base| base >> SEQ_BASE_SHIFT == id)
        .ok_or(Error::Internal("the directory's id generator is past 2^32"))
}

/// How the threads run.
#[derive(Clone, Copy, Debug)]
pub struct PagesPlan {
    /// Threads.
    pub n_threads: u32,
    /// Page keys.
    pub n_keys: u64,
    /// Encoded bytes of each fragment written.
    pub fragment_len_bytes: usize,
    /// The operation weights.
    pub mix: Mix,
    /// Each thread calls `make_stable` every this many operations.
    pub flush_every_ops: u64,
    /// How long (or how many operations) the mix runs, after the load.
    pub goal: Goal,
    /// The first op seq of a new life in this run.
    pub seq_base: u64,
    /// Seed of the threads' choices.
    pub seed: u64,
}

/// Where a crash-loop child reports what is durable (its stdout, the parent's pipe); a plain
/// run reports nowhere; tests collect the lines.
#[derive(Debug)]
pub enum Reporter {
    /// No reports.
    Quiet,
    /// Lines on stdout.
    Stdout,
    /// Lines collected in memory.
    #[cfg(test)]
    Buffer(Mutex<String>),
}

impl Reporter {
    fn is_quiet(&self) -> bool {
        matches!(self, Reporter::Quiet)
    }

    /// Writes complete lines in one write, so threads' lines never interleave mid-line.
    fn write(&self, lines: &str) -> Result<(), Error> {
        if lines.is_empty() {
            return Ok(());
        }
        match self {
            Reporter::Quiet => Ok(()),
            Reporter::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(lines.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|e| Error::io("writing a report to the parent", e))
            }
            #[cfg(test)]
            Reporter::Buffer(buffer) => {
                buffer
                    .lock()
                    .map_err(|_| Error::Internal("a pages thread panicked while reporting"))?
                    .push_str(lines);
                Ok(())
            }
        }
    }
}

/// Operation kinds with their own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Load,
    Get,
    Link,
    Replace,
    Allocate,
    Free,
    Flush,
}

const N_KINDS: usize = 7;

/// Report names, indexed by `Kind as usize`.
const KIND_NAMES: [&str; N_KINDS] = [
    "load (allocate)",
    "get",
    "link",
    "replace",
    "allocate",
    "free",
    "make_stable",
];

/// What the threads did.
#[derive(Debug)]
pub struct Worked {
    /// Wall time of the load phase.
    pub load_elapsed: Duration,
    /// Wall time of the mix.
    pub elapsed: Duration,
    latencies: Vec<Latencies>,
    /// Encoded fragment bytes written (load and mix).
    pub payload_bytes: u64,
    /// Operations of the mix (gets included), over all threads.
    pub n_ops: u64,
    /// Each key's final state (`None`: no live page).
    pub expected: BTreeMap<u64, Option<Life>>,
}

impl Worked {
    /// Figures per operation kind (kinds that never ran are left out).
    pub fn op_stats(&self) -> Vec<OpStats> {
        let mut ops = Vec::new();
        for (idx, latencies) in self.latencies.iter().enumerate() {
            if latencies.count() == 0 {
                continue;
            }
            // Loads happen in the load phase and flushes in both; every other kind in the mix.
            let over = if idx == Kind::Load as usize {
                self.load_elapsed
            } else if idx == Kind::Flush as usize {
                self.load_elapsed + self.elapsed
            } else {
                self.elapsed
            };
            ops.push(OpStats::new(KIND_NAMES[idx], latencies, over));
        }
        ops
    }

    /// `make_stable` calls.
    pub fn n_flushes(&self) -> u64 {
        self.latencies[Kind::Flush as usize].count()
    }
}

/// What the threads share.
struct Shared {
    /// Each key's pid, or [`NO_PAGE`]; readers use it to pick pages.
    pids: Vec<AtomicU64>,
    stop: AtomicBool,
    n_loaded_threads: AtomicU32,
    loaded: Vec<AtomicU64>,
    done: Vec<AtomicU64>,
}

struct LiveKey {
    pid: PageId,
    version: Version,
    alloc_seq: u64,
    value: PageValue,
}

struct KeyState {
    key: u64,
    live: Option<LiveKey>,
    next_seq: u64,
    /// The seq of the free that ended the last life, while the key has no live page.
    freed_seq: Option<u64>,
    touched: bool,
    /// Its index in `Worker::live` or `Worker::absent`.
    pos: usize,
}

struct Worker<'a> {
    cache: &'a Cache,
    plan: PagesPlan,
    thread: u32,
    shared: &'a Shared,
    reporter: &'a Reporter,
    keys: Vec<KeyState>,
    /// Indexes into `keys` of live keys and of keys without a page.
    live: Vec<usize>,
    absent: Vec<usize>,
    touched: Vec<usize>,
    last_lsn: Option<Lsn>,
    rng: Rng,
    latencies: Vec<Latencies>,
    payload_bytes: u64,
}

struct WorkerResult {
    latencies: Vec<Latencies>,
    payload_bytes: u64,
    n_ops: u64,
    finals: Vec<(u64, Option<Life>)>,
}

impl<'a> Worker<'a> {
    fn new(
        cache: &'a Cache,
        plan: PagesPlan,
        thread: u32,
        shared: &'a Shared,
        reporter: &'a Reporter,
        found: &BTreeMap<u64, Found>,
    ) -> Worker<'a> {
        let mut worker = Worker {
            cache,
            plan,
            thread,
            shared,
            reporter,
            keys: Vec::new(),
            live: Vec::new(),
            absent: Vec::new(),
            touched: Vec::new(),
            last_lsn: None,
            rng: Rng::new(plan.seed ^ (u64::from(thread) + 1).wrapping_mul(0x9E37_79B9)),
            latencies: (0..N_KINDS).map(|_| Latencies::default()).collect(),
            payload_bytes: 0,
        };
        let mut key = u64::from(thread);
        while key < plan.n_keys {
            let idx = worker.keys.len();
            let (live, next_seq) = match found.get(&key) {
                Some(found) => {
                    worker.live.push(idx);
                    shared.pids[key as usize].store(found.life.pid, Ordering::Relaxed);
                    let live = LiveKey {
                        pid: PageId(found.life.pid),
                        version: found.version,
                        alloc_seq: found.life.alloc_seq,
                        value: found.value.clone(),
                    };
                    // The life goes on: its ops stay consecutive.
                    (Some(live), found.life.last_seq + 1)
                }
                None => {
                    worker.absent.push(idx);
                    (None, plan.seq_base)
                }
            };
            let pos = if live.is_some() {
                worker.live.len() - 1
            } else {
                worker.absent.len() - 1
            };
            worker.keys.push(KeyState {
                key,
                live,
                next_seq,
                freed_seq: None,
                touched: false,
                pos,
            });
            key += u64::from(plan.n_threads);
        }
        worker
    }

    fn record(&mut self, kind: Kind, started: Instant) {
        self.latencies[kind as usize].record(started.elapsed());
    }

    fn touch(&mut self, idx: usize, lsn: Lsn) {
        self.last_lsn = Some(self.last_lsn.map_or(lsn, |last| last.max(lsn)));
        if !self.keys[idx].touched {
            self.keys[idx].touched = true;
            self.touched.push(idx);
        }
    }

    /// Moves key `idx` from one of `live`/`absent` to the other.
    fn move_key(&mut self, idx: usize, to_live: bool) {
        let (from, to) = if to_live {
            (&mut self.absent, &mut self.live)
        } else {
            (&mut self.live, &mut self.absent)
        };
        let pos = self.keys[idx].pos;
        debug_assert_eq!(from[pos], idx);
        from.swap_remove(pos);
        if let Some(&moved) = from.get(pos) {
            self.keys[moved].pos = pos;
        }
        to.push(idx);
        self.keys[idx].pos = to.len() - 1;
    }

    fn stale(&self, idx: usize, op: &str) -> Error {
        let key = &self.keys[idx];
        Error::Verification(format!(
            "page key {} (pid {:?}): the cache refused a {op} as stale, although only this \
             thread writes the page",
            key.key,
            key.live.as_ref().map(|l| l.pid.0)
        ))
    }

    fn allocate(&mut self, idx: usize, kind: Kind) -> Result<(), Error> {
        let len = self.plan.fragment_len_bytes;
        let (key, seq) = (self.keys[idx].key, self.keys[idx].next_seq);
        let value = PageValue::op(key, seq, len);
        let started = Instant::now();
        let (pid, written) = self
            .cache
            .allocate(value.clone())
            .map_err(|e| Error::cache("allocating a page", e))?;
        self.record(kind, started);
        self.payload_bytes += len as u64;
        self.shared.pids[key as usize].store(pid.0, Ordering::Relaxed);
        let state = &mut self.keys[idx];
        state.live = Some(LiveKey {
            pid,
            version: written.version,
            alloc_seq: seq,
            value,
        });
        state.next_seq += 1;
        state.freed_seq = None;
        self.move_key(idx, true);
        self.touch(idx, written.lsn);
        Ok(())
    }

    fn link_or_replace(&mut self, idx: usize, replace: bool) -> Result<(), Error> {
        let len = self.plan.fragment_len_bytes;
        let state = &self.keys[idx];
        let (key, seq) = (state.key, state.next_seq);
        let live = state
            .live
            .as_ref()
            .ok_or(Error::Internal("a live key has no page"))?;
        let (pid, version) = (live.pid, live.version);
        let new_value = live.value.then(seq, len);
        let started = Instant::now();
        let outcome = if replace {
            self.cache.replace(pid, version, new_value.clone())
        } else {
            self.cache.link(pid, version, PageValue::op(key, seq, len))
        };
        let written = outcome
            .map_err(|e| Error::cache("writing a page", e))?
            .map_err(|_| self.stale(idx, if replace { "replace" } else { "link" }))?;
        self.record(if replace { Kind::Replace } else { Kind::Link }, started);
        self.payload_bytes += len as u64;
        let state = &mut self.keys[idx];
        state.next_seq += 1;
        if let Some(live) = state.live.as_mut() {
            live.version = written.version;
            live.value = new_value;
        }
        self.touch(idx, written.lsn);
        Ok(())
    }

    fn free(&mut self, idx: usize) -> Result<(), Error> {
        let state = &self.keys[idx];
        let (key, seq) = (state.key, state.next_seq);
        let live = state
            .live
            .as_ref()
            .ok_or(Error::Internal("a live key has no page"))?;
        let (pid, version) = (live.pid, live.version);
        // Announced before the call: if the free happened, the parent has heard of it.
        self.reporter.write(&format!("freeing {key} {seq}\n"))?;
        self.shared.pids[key as usize].store(NO_PAGE, Ordering::Relaxed);
        let started = Instant::now();
        let lsn = self
            .cache
            .free(pid, version)
            .map_err(|e| Error::cache("freeing a page", e))?
            .map_err(|_| self.stale(idx, "free"))?;
        self.record(Kind::Free, started);
        let state = &mut self.keys[idx];
        state.live = None;
        state.freed_seq = Some(seq);
        state.next_seq += 1;
        self.move_key(idx, false);
        self.touch(idx, lsn);
        Ok(())
    }

    fn get(&mut self) -> Result<(), Error> {
        // A key with a page, if one is found in a few tries.
        let mut pick = None;
        for _ in 0..8 {
            let key = self.rng.next_u64() % self.plan.n_keys;
            let pid = self.shared.pids[key as usize].load(Ordering::Relaxed);
            if pid != NO_PAGE {
                pick = Some((key, pid));
                break;
            }
        }
        let Some((key, pid)) = pick else {
            return Ok(());
        };
        let started = Instant::now();
        let page = self
            .cache
            .get(PageId(pid))
            .map_err(|e| Error::cache("reading a page", e))?;
        self.record(Kind::Get, started);
        let own = key % u64::from(self.plan.n_threads) == u64::from(self.thread);
        if own {
            let idx = (key / u64::from(self.plan.n_threads)) as usize;
            let live = self.keys[idx].live.as_ref();
            let matches = match (&page, live) {
                (Some(page), Some(live)) => {
                    page.value == live.value && page.version == live.version
                }
                _ => false,
            };
            if !matches {
                return Err(Error::Verification(format!(
                    "get of page key {key} (pid {pid}) returned {}, but this thread last wrote {}",
                    page.as_ref()
                        .map_or("no page".to_owned(), |p| describe(&p.value)),
                    live.map_or("nothing".to_owned(), |l| describe(&l.value))
                )));
            }
        } else if let Some(page) = page
            && page.value.key == key
        {
            // Another thread's page: intact, whatever its state (the full check is linear in
            // the page's op count, so reads of other pages check the body only).
            let mut body = vec![0u8; page.value.body.len()];
            crate::page::fill_body(key, page.value.last_seq, &mut body);
            if body != page.value.body {
                return Err(Error::Verification(format!(
                    "get of page key {key} (pid {pid}) returned a damaged value: {}",
                    describe(&page.value)
                )));
            }
        }
        Ok(())
    }

    /// Makes this thread's writes durable and reports the keys it touched since the last
    /// flush (in a crash-loop child).
    fn flush(&mut self) -> Result<(), Error> {
        let Some(lsn) = self.last_lsn.take() else {
            return Ok(());
        };
        let started = Instant::now();
        self.cache
            .make_stable(lsn)
            .map_err(|e| Error::cache("making writes durable", e))?;
        self.record(Kind::Flush, started);
        let mut lines = String::new();
        for idx in std::mem::take(&mut self.touched) {
            let state = &mut self.keys[idx];
            state.touched = false;
            if self.reporter.is_quiet() {
                continue;
            }
            match (&state.live, state.freed_seq) {
                (Some(live), _) => {
                    let _ = writeln!(
                        lines,
                        "live {} {} {} {}",
                        state.key, live.pid.0, live.alloc_seq, live.value.last_seq
                    );
                }
                (None, Some(freed)) => {
                    let _ = writeln!(lines, "freed {} {freed}", state.key);
                }
                (None, None) => {}
            }
        }
        self.reporter.write(&lines)
    }

    fn pick(&mut self) -> Kind {
        let mix = self.plan.mix;
        let mut roll = (self.rng.next_u64() % u64::from(mix.total())) as u32;
        let mut kind = Kind::Get;
        for (weight, candidate) in [
            (mix.get, Kind::Get),
            (mix.link, Kind::Link),
            (mix.replace, Kind::Replace),
            (mix.allocate, Kind::Allocate),
            (mix.free, Kind::Free),
        ] {
            if roll < weight {
                kind = candidate;
                break;
            }
            roll -= weight;
        }
        // Writes need a key in the right state; fall back to the nearest possible op.
        match kind {
            Kind::Link | Kind::Replace | Kind::Free if self.live.is_empty() => {
                if self.absent.is_empty() {
                    Kind::Get
                } else {
                    Kind::Allocate
                }
            }
            Kind::Allocate if self.absent.is_empty() => {
                if self.live.is_empty() {
                    Kind::Get
                } else {
                    Kind::Link
                }
            }
            other => other,
        }
    }

    fn run_op(&mut self, kind: Kind) -> Result<(), Error> {
        let pick_live = |worker: &mut Worker<'_>| {
            let at = (worker.rng.next_u64() % worker.live.len() as u64) as usize;
            worker.live[at]
        };
        match kind {
            Kind::Get => self.get(),
            Kind::Link => {
                let idx = pick_live(self);
                self.link_or_replace(idx, false)
            }
            Kind::Replace => {
                let idx = pick_live(self);
                self.link_or_replace(idx, true)
            }
            Kind::Free => {
                let idx = pick_live(self);
                self.free(idx)
            }
            Kind::Allocate => {
                let at = (self.rng.next_u64() % self.absent.len() as u64) as usize;
                let idx = self.absent[at];
                self.allocate(idx, Kind::Allocate)
            }
            Kind::Load | Kind::Flush => Err(Error::Internal("not a mix operation")),
        }
    }

    fn run(mut self, quota: Option<u64>) -> Result<WorkerResult, Error> {
        let shared = self.shared;
        let thread = self.thread as usize;
        let stopped = || shared.stop.load(Ordering::Relaxed);
        let flush_every = self.plan.flush_every_ops.max(1);
        let to_load = self.absent.clone();
        let mut n_loaded = 0u64;
        for idx in to_load {
            if stopped() {
                break;
            }
            self.allocate(idx, Kind::Load)?;
            n_loaded += 1;
            if n_loaded.is_multiple_of(flush_every) {
                self.flush()?;
            }
            if n_loaded.is_multiple_of(64) {
                shared.loaded[thread].store(n_loaded, Ordering::Relaxed);
            }
        }
        shared.loaded[thread].store(n_loaded, Ordering::Relaxed);
        self.flush()?;
        shared.n_loaded_threads.fetch_add(1, Ordering::AcqRel);
        // The mix starts when every thread has loaded, so it is measured on its own.
        while shared.n_loaded_threads.load(Ordering::Acquire) < self.plan.n_threads && !stopped() {
            thread::sleep(Duration::from_millis(1));
        }
        let mut n_ops = 0u64;
        while !stopped() && quota.is_none_or(|q| n_ops < q) {
            let kind = self.pick();
            self.run_op(kind)?;
            n_ops += 1;
            if n_ops.is_multiple_of(flush_every) {
                self.flush()?;
            }
            if n_ops.is_multiple_of(64) {
                shared.done[thread].store(n_ops, Ordering::Relaxed);
            }
        }
        self.flush()?;
        shared.done[thread].store(n_ops, Ordering::Relaxed);
        let finals = self
            .keys
            .iter()
            .map(|state| {
                let life = state.live.as_ref().map(|live| Life {
                    pid: live.pid.0,
                    alloc_seq: live.alloc_seq,
                    last_seq: live.value.last_seq,
                });
                (state.key, life)
            })
            .collect();
        Ok(WorkerResult {
            latencies: self.latencies,
            payload_bytes: self.payload_bytes,
            n_ops,
            finals,
        })
    }
}

fn describe(value: &PageValue) -> String {
    format!(
        "page key {} at op seq {} ({} ops in its life, checksum {:#x})",
        value.key, value.last_seq, value.n_ops, value.checksum
    )
}

/// Runs the threads: load, then the mix until the goal or the first error.
pub fn run_workers(
    cache: &Cache,
    plan: PagesPlan,
    found: &BTreeMap<u64, Found>,
    reporter: &Reporter,
    show_progress: bool,
) -> Result<Worked, Error> {
    let n_keys = usize::try_from(plan.n_keys).map_err(|_| Error::Internal("too many keys"))?;
    let shared = Shared {
        pids: (0..n_keys).map(|_| AtomicU64::new(NO_PAGE)).collect(),
        stop: AtomicBool::new(false),
        n_loaded_threads: AtomicU32::new(0),
        loaded: (0..plan.n_threads).map(|_| AtomicU64::new(0)).collect(),
        done: (0..plan.n_threads).map(|_| AtomicU64::new(0)).collect(),
    };
    let workers: Vec<Worker<'_>> = (0..plan.n_threads)
        .map(|thread| Worker::new(cache, plan, thread, &shared, reporter, found))
        .collect();
    let n_to_load: u64 = workers.iter().map(|w| w.absent.len() as u64).sum();
    let quota = |thread: u32| match plan.goal {
        Goal::Time(_) => None,
        Goal::Count(n) => {
            let base = n / u64::from(plan.n_threads);
            Some(base + u64::from(u64::from(thread) < n % u64::from(plan.n_threads)))
        }
    };
    let started = Instant::now();
    let mut load_elapsed = Duration::ZERO;
    let mut mix_started = None;
    let results = thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(thread, worker)| {
                let shared = &shared;
                scope.spawn(move || {
                    let result = worker.run(quota(thread as u32));
                    if result.is_err() {
                        // One failure ends the run for everyone.
                        shared.stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        let mut load_progress = Some(Progress::start(
            "pages: load",
            Goal::Count(n_to_load.max(1)),
            show_progress,
        ));
        let mut mix_progress = None;
        loop {
            thread::sleep(Duration::from_millis(20));
            let sum = |counters: &[AtomicU64]| -> u64 {
                counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
            };
            if mix_started.is_none() {
                if let Some(progress) = load_progress.as_mut() {
                    progress.update(sum(&shared.loaded));
                }
                if shared.n_loaded_threads.load(Ordering::Acquire) == plan.n_threads {
                    load_elapsed = started.elapsed();
                    mix_started = Some(Instant::now());
                    if let Some(progress) = load_progress.take() {
                        progress.finish();
                    }
                    mix_progress = Some(Progress::start("pages: mix", plan.goal, show_progress));
                }
            } else if let Some(progress) = mix_progress.as_mut() {
                progress.update(sum(&shared.done));
            }
            let time_up = matches!((plan.goal, mix_started),
                (Goal::Time(d), Some(at)) if at.elapsed() >= d);
            if time_up
                || shared.stop.load(Ordering::Relaxed)
                || handles.iter().all(|h| h.is_finished())
            {
                break;
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or(Err(Error::Internal("a pages thread panicked")))
            })
            .collect();
        for progress in [load_progress, mix_progress].into_iter().flatten() {
            progress.finish();
        }
        results
    });
    let elapsed = mix_started.map_or(Duration::ZERO, |at| at.elapsed());
    if mix_started.is_none() {
        load_elapsed = started.elapsed();
    }
    let mut worked = Worked {
        load_elapsed,
        elapsed,
        latencies: (0..N_KINDS).map(|_| Latencies::default()).collect(),
        payload_bytes: 0,
        n_ops: 0,
        expected: BTreeMap::new(),
    };
    for result in results {
        let result = result?;
        for (total, latencies) in worked.latencies.iter_mut().zip(&result.latencies) {
            total.merge(latencies);
        }
        worked.payload_bytes += result.payload_bytes;
        worked.n_ops += result.n_ops;
        worked.expected.extend(result.finals);
    }
    Ok(worked)
}

/// A seed from `--seed` or the clock.
pub fn seed(cli: &Cli) -> u64 {
    cli.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id()) << 32
    })
}

/// The settings a `pages` run reports.
pub fn settings(cli: &Cli) -> Vec<(&'static str, serde_json::Value)> {
    let mut settings = vec![
        ("threads", json!(cli.threads)),
        ("pages", json!(cli.pages)),
        ("fragment_len_bytes", json!(cli.fragment_len_bytes)),
        ("mix", json!(cli.mix.to_string())),
        ("cache_budget_bytes", json!(cli.cache_budget_bytes)),
        ("segment_len_bytes", json!(cli.segment_len_bytes)),
        ("flush_every_ops", json!(cli.flush_every_ops)),
    ];
    match cli.ops {
        Some(ops) => settings.push(("ops", json!(ops))),
        None => settings.push(("duration_secs", json!(cli.duration_secs))),
    }
    settings
}

/// Runs the workload on `target` and verifies it.
pub fn run(
    cli: &Cli,
    target: &Target,
    ceilings: Option<Ceilings>,
    out: Out,
) -> Result<RunReport, Error> {
    let config = page_config(cli)?;
    let (cache, opened) = open_cache(&target.dir, config.clone())?;
    let existing = scan_existing(&cache, &target.dir, cli.pages)?;
    let seq_base = seq_base(&cache)?;
    let seed = seed(cli);
    let mut settings = settings(cli);
    settings.push(("seed", json!(seed)));
    out.say(&format!(
        "stress pages: {} thread(s), {} pages ({} live at start) of {}-byte fragments, mix {}, \
         cache budget {} bytes, segment {} bytes, make_stable every {} ops per thread, {}; in {}",
        cli.threads,
        cli.pages,
        existing.found.len(),
        cli.fragment_len_bytes,
        cli.mix,
        cli.cache_budget_bytes,
        cli.segment_len_bytes,
        cli.flush_every_ops,
        match cli.ops {
            Some(ops) => format!("{ops} operations"),
            None => format!("{:.1} s", cli.duration_secs),
        },
        target.dir.display(),
    ));
    let plan = PagesPlan {
        n_threads: cli.threads,
        n_keys: cli.pages,
        fragment_len_bytes: cli.fragment_len_bytes as usize,
        mix: cli.mix,
        flush_every_ops: cli.flush_every_ops,
        goal: match cli.ops {
            Some(ops) => Goal::Count(ops),
            None => Goal::Time(cli.duration()),
        },
        seq_base,
        seed,
    };
    // The run's own figures: counters as they were after the scan.
    let gets_before = cache.metrics().n_gets.get();
    let hits_before = cache.metrics().n_cache_hits.get();
    let reporter = Reporter::Quiet;
    let worked = match run_workers(&cache, plan, &existing.found, &reporter, true) {
        Ok(worked) => worked,
        Err(error) => {
            let _ = cache.close();
            return Err(error);
        }
    };
    let flush_started = Instant::now();
    if let Err(e) = cache.flush() {
        let _ = cache.close();
        return Err(Error::cache("flushing at the end of the run", e));
    }
    let final_flush = flush_started.elapsed();
    let metrics = cache.metrics();
    let n_gets = metrics.n_gets.get() - gets_before;
    let n_hits = metrics.n_cache_hits.get() - hits_before;
    let counter = |c: &std::sync::atomic::AtomicU64| Metrics::get(c) as f64;
    let figures_from_cache = vec![
        (
            "pages_loaded",
            worked.latencies[Kind::Load as usize].count() as f64,
        ),
        ("load_secs", worked.load_elapsed.as_secs_f64()),
        ("final_flush_secs", final_flush.as_secs_f64()),
        ("pages_paged_in", counter(&metrics.n_page_ins)),
        ("fragments_evicted", counter(&metrics.n_fragments_evicted)),
        ("consolidations", counter(&metrics.n_consolidations)),
        ("pages_relocated", counter(&metrics.n_relocations)),
        ("segments_cleaned", counter(&metrics.n_segments_cleaned)),
        ("snapshots", counter(&metrics.n_snapshots)),
        ("write_retries", counter(&metrics.n_write_retries)),
    ];
    let stats = cache.stats();
    let log_metrics = cache.log_metrics();
    let bytes_written = LogMetrics::get(&log_metrics.written_bytes);
    let n_syncs = LogMetrics::get(&log_metrics.n_syncs);
    let sync_secs = log_metrics.sync_latency.total().as_secs_f64();
    cache
        .close()
        .map_err(|e| Error::cache("closing the page cache after the run", e))?;

    out.say("stress pages: verifying: reopening the directory and reading every page back");
    let (cache, reopened) = open_cache(&target.dir, config)?;
    let scan = page_check::scan(&cache, cli.pages);
    let closed = cache.close();
    let scan = scan?;
    closed.map_err(|e| Error::cache("closing the verified page cache", e))?;
    let problems = page_check::check_exact(&scan, &worked.expected);
    let verification = Verification {
        passed: problems.count == 0,
        unit: "pages",
        messages_checked: scan.n_checked,
        durable_expected: worked.expected.len() as u64,
        recovery: reopened.log.clone(),
        page_cache_open: Some(PageCacheOpen::new(&reopened)),
        problems: problems.kept.clone(),
        problems_line: problems.line(),
    };

    let mix_secs = worked.elapsed.as_secs_f64().max(1e-9);
    // The fragment bytes, flushes and syncs are counted over the load and the mix, so the
    // rates of them (here and in the report) are over both; the mix's operations over the mix.
    let run_secs = mix_secs + worked.load_elapsed.as_secs_f64();
    let mut figures = figures_from_cache;
    figures.push((
        "live_pages_at_end",
        worked.expected.values().filter(|l| l.is_some()).count() as f64,
    ));
    figures.push(("resident_bytes_at_end", stats.resident_bytes as f64));
    // The files above include the snapshots; the data file alone is what cleaning bounds.
    figures.push(("data_file_bytes_at_end", stats.file_len_bytes as f64));
    figures.push((
        "data_file_over_live",
        // Two decimals are what the ratio means; the raw float prints 16.
        (stats.file_len_bytes as f64 * 100.0 / stats.live_bytes.max(1) as f64).round() / 100.0,
    ));
    figures.push(("verify_open_secs", reopened.elapsed.as_secs_f64()));
    let ratios = ceilings.map(|c| {
        let ratios = vec![
            Ratio {
                figure: "operations/s (whole mix)".to_owned(),
                value: worked.n_ops as f64 / mix_secs,
                ceiling: "C3 uncontended CAS",
                ceiling_value: c.cas_per_second,
                unit: Unit::Rate,
            },
            Ratio {
                figure: "durable flushes/s (make_stable)".to_owned(),
                value: worked.n_flushes() as f64 / run_secs,
                ceiling: "C1 4 KiB write + fdatasync",
                ceiling_value: c.sync_writes_per_second,
                unit: Unit::Rate,
            },
            Ratio {
                figure: "fdatasyncs/s".to_owned(),
                value: n_syncs as f64 / run_secs,
                ceiling: "C1 4 KiB write + fdatasync",
                ceiling_value: c.sync_writes_per_second,
                unit: Unit::Rate,
            },
            Ratio {
                figure: "data file bytes/s".to_owned(),
                value: bytes_written as f64 / run_secs,
                ceiling: "C2 sequential write + sync",
                ceiling_value: c.sequential_bytes_per_second,
                unit: Unit::BytesPerSecond,
            },
        ];
        (c, ratios)
    });
    let mut ops = worked.op_stats();
    // The whole mix as one row, then each kind.
    let mut all = Latencies::default();
    for kind in [
        Kind::Get,
        Kind::Link,
        Kind::Replace,
        Kind::Allocate,
        Kind::Free,
    ] {
        all.merge(&worked.latencies[kind as usize]);
    }
    let insert_at = usize::from(ops.first().is_some_and(|o| o.name == KIND_NAMES[0]));
    ops.insert(
        insert_at,
        OpStats::new("mix (all kinds)", &all, worked.elapsed),
    );
    Ok(RunReport {
        workload: "pages",
        settings,
        dir: target.dir.display().to_string(),
        dir_kept: target.kept(),
        opened: opened.log.clone(),
        opened_page_cache: Some(PageCacheOpen::new(&opened)),
        elapsed_secs: run_secs,
        ops,
        bytes_written,
        payload_bytes: worked.payload_bytes,
        file_bytes: dir_size(&target.dir)?,
        live_bytes: stats.live_bytes,
        cache_hit_ratio: Some(if n_gets == 0 {
            1.0
        } else {
            n_hits as f64 / n_gets as f64
        }),
        n_syncs,
        sync_secs,
        figures,
        ceilings: ratios,
        verification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn cli(args: &[&str]) -> Cli {
        crate::cli::parse(std::iter::once("stress").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn a_short_run_verifies_and_a_second_run_continues_it() {
        let target = Target::prepare(None).unwrap();
        let cli = cli(&[
            "pages",
            "--pages",
            "300",
            "--threads",
            "3",
            "--ops",
            "3000",
            "--fragment-len-bytes",
            "60",
            "--cache-budget-bytes",
            "8KiB",
            "--segment-len-bytes",
            "64KiB",
            "--flush-every-ops",
            "50",
            "--mix",
            "get=40,link=20,replace=10,allocate=15,free=15",
            "--seed",
            "7",
        ]);
        let out = Out { json: true };
        let report = run(&cli, &target, None, out).unwrap();
        assert!(
            report.verification.passed,
            "{:?}",
            report.verification.problems
        );
        assert_eq!(report.verification.durable_expected, 300);
        let names: Vec<&str> = report.ops.iter().map(|o| o.name).collect();
        for name in [
            "load (allocate)",
            "get",
            "link",
            "replace",
            "allocate",
            "free",
        ] {
            assert!(names.contains(&name), "{names:?}");
        }
        let mix_count: u64 = report
            .ops
            .iter()
            .find(|o| o.name == "mix (all kinds)")
            .unwrap()
            .count;
        assert!(mix_count > 2500 && mix_count <= 3000, "{mix_count}");
        // A kept directory is continued: the live pages are adopted, their lives go on.
        let second = run(&cli, &target, None, out).unwrap();
        assert!(
            second.verification.passed,
            "{:?}",
            second.verification.problems
        );
        assert!(second.opened_page_cache.unwrap().n_pages > 0);
    }

    /// The crash check's model in-process, on the simulated disk: seeded power losses after a
    /// run that reported what each flush made durable. Every outcome must pass the model, and
    /// a report claiming more than was written must fail it. (The run ends with a flush, so
    /// this checks the reports and the model against recovery, not a loss in the middle of
    /// writes: the crash loop and the page cache's own crash tests do that.)
    #[test]
    fn power_loss_keeps_every_reported_state() {
        use iobuf::storage::SimStorage;
        use std::sync::Arc;

        let cli = cli(&[
            "pages",
            "--pages",
            "200",
            "--threads",
            "2",
            "--fragment-len-bytes",
            "48",
            "--cache-budget-bytes",
            "4KiB",
            "--segment-len-bytes",
            "64KiB",
            "--flush-every-ops",
            "40",
            "--mix",
            "get=30,link=30,replace=10,allocate=15,free=15",
        ]);
        let config = page_config(&cli).unwrap();
        let storage = Arc::new(SimStorage::new());
        let (cache, _) =
            PageCache::open(storage.clone(), config.clone(), PageMaterializer).unwrap();
        let start = page_check::scan(&cache, 200).unwrap();
        let below = seq_base(&cache).unwrap();
        let mut model = page_check::CrashModel::from_scan(&start, 200, below);
        let plan = PagesPlan {
            n_threads: 2,
            n_keys: 200,
            fragment_len_bytes: 48,
            mix: cli.mix,
            flush_every_ops: 40,
            goal: Goal::Count(4000),
            seq_base: seq_base(&cache).unwrap(),
            seed: 11,
        };
        let reporter = Reporter::Buffer(Mutex::default());
        run_workers(&cache, plan, &start.found, &reporter, false).unwrap();
        let Reporter::Buffer(lines) = reporter else {
            unreachable!()
        };
        let lines = lines.into_inner().unwrap();
        assert!(model.apply_text(&lines).unwrap() > 200, "{lines}");
        for seed in 0..6 {
            let crashed = Arc::new(storage.crash(seed));
            let (reopened, _) = PageCache::open(crashed, config.clone(), PageMaterializer).unwrap();
            let scan = page_check::scan(&reopened, 200).unwrap();
            let check = model.check(&scan);
            assert_eq!(check.problems.count, 0, "seed {seed}: {:?}", check.problems);
            // A report of a state nobody wrote is caught as a loss.
            let (&key, found) = scan.found.iter().next().unwrap();
            let mut lying = model.clone();
            lying
                .apply_line(&format!(
                    "live {key} {} {} {}\n",
                    found.life.pid,
                    found.life.alloc_seq,
                    found.life.last_seq + 1
                ))
                .unwrap();
            assert_eq!(lying.check(&scan).lost, 1);
            drop(reopened);
        }
        // The old handles are dead after the crash: closing reports it, and that is all.
        let _ = cache.close();
    }

    #[test]
    fn more_threads_than_pages_still_run() {
        let target = Target::prepare(None).unwrap();
        let cli = cli(&["pages", "--pages", "2", "--threads", "4", "--ops", "400"]);
        let report = run(&cli, &target, None, Out { json: true }).unwrap();
        assert!(
            report.verification.passed,
            "{:?}",
            report.verification.problems
        );
    }
}
