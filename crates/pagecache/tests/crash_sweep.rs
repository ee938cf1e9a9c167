//! A deterministic crash sweep over every storage call of a fixed page-cache workload.
//!
//! The workload (allocations, links, replaces, frees and reallocations, reads, root changes,
//! id generation, `make_stable`, `flush`, one explicit snapshot and a final `close`, on the
//! tiny configuration so eviction, page-ins, consolidation and cleaning all happen) runs once
//! on a clean [`SimStorage`] to count its storage calls. Then, for each call index `n`, it runs
//! again on a fresh disk on which every call from `n` on fails (a device that broke for good),
//! the disk crashes (a seeded random survival of unsynced writes, and one that keeps only
//! synced data), and the store is reopened. Checked at every crash point:
//!
//! * the failed run returns errors, never panics;
//! * reopening never fails;
//! * the recovered pages and roots equal the model after SOME prefix of the LSN-ordered history
//!   of acknowledged writes that holds every write known durable (the rule of `tests/model.rs`),
//!   or, past the whole history, that history plus the one write that failed (it is in doubt:
//!   its record may have reached the disk before the failure);
//! * `generate_id` after the reopen returns more than every id handed out before the crash;
//! * a clean close and second open give back the same state.
//!
//! The default run checks every call index (about 1 450) with two surviving disks each, in a few
//! seconds of a debug build; should the workload grow to 2 000 calls or more, a stride keeps the
//! default run near 1 000 crash points.
//! With `PAGELOG_LONG` set every call index is checked whatever the count, against six seeded
//! crashes, the synced-only one and one that keeps every unsynced write.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use common::{Concat, count, read_all, tiny_config};
use iobuf::storage::{FaultKind, SimStorage};
use pagecache::{Config, Lsn, PageCache, PageId, Version};

/// Rounds of the workload loop after the initial allocations.
const N_ROUNDS: usize = 800;
/// Pages allocated up front.
const N_PAGES: usize = 5;
/// The round at which the explicit snapshot is taken.
const SNAPSHOT_ROUND: usize = 70;
/// The default run's stride is the call count over this (the long mode checks every call).
const DEFAULT_N_CRASH_POINTS: u64 = 1000;

fn long_mode() -> bool {
    std::env::var_os("PAGELOG_LONG").is_some()
}

/// What one acknowledged write did.
#[derive(Clone, Debug)]
enum Effect {
    /// The page's whole value after the write (`None`: freed).
    Page(PageId, Option<Vec<u8>>),
    /// The root's target after the write (`None`: removed).
    Root(String, Option<PageId>),
}

/// The write that failed: its record may or may not have reached the disk.
#[derive(Clone, Debug)]
enum InDoubt {
    /// A link, replace, free or root change whose effect is known.
    Effect(Effect),
    /// An allocation: the page id it would have had is unknown, the value is this fragment.
    Allocate(Vec<u8>),
}

/// Pages and roots: what the model and a recovered cache are compared on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    pages: BTreeMap<PageId, Vec<u8>>,
    roots: BTreeMap<String, PageId>,
}

impl State {
    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Page(pid, Some(value)) => {
                self.pages.insert(*pid, value.clone());
            }
            Effect::Page(pid, None) => {
                self.pages.remove(pid);
            }
            Effect::Root(name, Some(pid)) => {
                self.roots.insert(name.clone(), *pid);
            }
            Effect::Root(name, None) => {
                self.roots.remove(name);
            }
        }
    }

    /// A short rendering for failure messages: each page as its length and a hash of its
    /// bytes, so a message stays readable with hundred-byte values.
    fn summary(&self) -> String {
        let pages: Vec<String> = self
            .pages
            .iter()
            .map(|(pid, value)| format!("{}:{}b#{:08x}", pid.0, value.len(), fnv(value)))
            .collect();
        format!("pages [{}] roots {:?}", pages.join(" "), self.roots)
    }

    fn read(cache: &PageCache<Concat>) -> State {
        State {
            pages: read_all(cache),
            roots: cache.roots().into_iter().collect(),
        }
    }
}

/// FNV-1a, 32 bits: enough to tell values apart in a failure message.
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// A short rendering of the write in doubt for failure messages.
fn in_doubt_summary(in_doubt: &Option<InDoubt>) -> String {
    match in_doubt {
        None => "none".to_string(),
        Some(InDoubt::Allocate(fragment)) => {
            format!("allocate {}b#{:08x}", fragment.len(), fnv(fragment))
        }
        Some(InDoubt::Effect(Effect::Page(pid, Some(value)))) => {
            format!("page {} = {}b#{:08x}", pid.0, value.len(), fnv(value))
        }
        Some(InDoubt::Effect(effect)) => format!("{effect:?}"),
    }
}

/// What the workload saw before its first error (or the end).
#[derive(Default)]
struct Outcome {
    /// Acknowledged writes in LSN order.
    history: Vec<(Lsn, Effect)>,
    /// How many of `history` (a prefix) were acknowledged durable.
    n_durable: usize,
    /// The write that failed, if the first error came from a write.
    in_doubt: Option<InDoubt>,
    /// The largest id `generate_id` handed out.
    max_id: Option<u64>,
    /// The first error, as text.
    first_error: Option<String>,
    /// The cache, still open, when the run did not close it.
    cache: Option<PageCache<Concat>>,
    /// The model's state after the whole history.
    current: State,
    /// Live pages with the version the model knows, in allocation order.
    live: Vec<(PageId, Version)>,
    /// Distinguishes every fragment's bytes.
    n_fragments: u64,
}

impl Outcome {
    fn fragment(&mut self, len_bytes: usize) -> Vec<u8> {
        self.n_fragments += 1;
        let tag = self.n_fragments;
        (0..len_bytes)
            .map(|i| (tag.wrapping_mul(37).wrapping_add(i as u64 * 11)) as u8)
            .collect()
    }

    fn record(&mut self, lsn: Lsn, effect: Effect) {
        if let Some((last, _)) = self.history.last() {
            assert!(lsn > *last, "writes of one thread come in LSN order");
        }
        self.current.apply(&effect);
        self.history.push((lsn, effect));
        self.in_doubt = None;
    }

    /// Every write with an LSN at or below `lsn` is durable.
    fn acknowledge_through(&mut self, lsn: Lsn) {
        let n = self
            .history
            .iter()
            .take_while(|(write_lsn, _)| *write_lsn <= lsn)
            .count();
        self.n_durable = self.n_durable.max(n);
    }

    fn acknowledge_all(&mut self) {
        self.n_durable = self.history.len();
    }
}

type Run = Result<(), pagecache::Error>;

fn allocate(outcome: &mut Outcome, cache: &PageCache<Concat>, len_bytes: usize) -> Run {
    let fragment = outcome.fragment(len_bytes);
    outcome.in_doubt = Some(InDoubt::Allocate(fragment.clone()));
    let (pid, written) = cache.allocate(fragment.clone())?;
    assert!(
        !outcome.current.pages.contains_key(&pid),
        "allocate handed out live page {pid:?}"
    );
    outcome.live.push((pid, written.version));
    outcome.record(written.lsn, Effect::Page(pid, Some(fragment)));
    Ok(())
}

fn link_or_replace(
    outcome: &mut Outcome,
    cache: &PageCache<Concat>,
    idx: usize,
    len_bytes: usize,
    replace: bool,
) -> Run {
    let live_idx = idx % outcome.live.len();
    let (pid, version) = outcome.live[live_idx];
    let fragment = outcome.fragment(len_bytes);
    let mut value = outcome.current.pages[&pid].clone();
    if replace {
        value = fragment.clone();
    } else {
        value.extend_from_slice(&fragment);
    }
    let effect = Effect::Page(pid, Some(value));
    outcome.in_doubt = Some(InDoubt::Effect(effect.clone()));
    let written = if replace {
        cache.replace(pid, version, fragment)?
    } else {
        cache.link(pid, version, fragment)?
    }
    .unwrap_or_else(|stale| panic!("page {pid:?}: a lone writer was stale: {stale:?}"));
    outcome.live[live_idx].1 = written.version;
    outcome.record(written.lsn, effect);
    Ok(())
}

fn free(outcome: &mut Outcome, cache: &PageCache<Concat>, idx: usize) -> Run {
    let (pid, version) = outcome.live.remove(idx % outcome.live.len());
    let effect = Effect::Page(pid, None);
    outcome.in_doubt = Some(InDoubt::Effect(effect.clone()));
    let lsn = cache
        .free(pid, version)?
        .unwrap_or_else(|stale| panic!("page {pid:?}: a lone free was stale: {stale:?}"));
    outcome.record(lsn, effect);
    Ok(())
}

fn set_root(outcome: &mut Outcome, cache: &PageCache<Concat>, name: &str, idx: usize) -> Run {
    let expected = outcome.current.roots.get(name).copied();
    // Every fourth change removes the root; the others point it at a live page.
    let target = if idx % 4 == 3 {
        None
    } else {
        Some(outcome.live[idx % outcome.live.len()].0)
    };
    let effect = Effect::Root(name.to_string(), target);
    outcome.in_doubt = Some(InDoubt::Effect(effect.clone()));
    let lsn = cache
        .set_root(name, expected, target)?
        .unwrap_or_else(|current| panic!("root {name}: expected {expected:?}, is {current:?}"));
    outcome.record(lsn, effect);
    Ok(())
}

/// The fixed workload, until its first error.
fn workload(outcome: &mut Outcome, cache: &PageCache<Concat>) -> Run {
    for page_idx in 0..N_PAGES {
        // Page 3 starts as a blob (over the 256-byte threshold).
        let len_bytes = if page_idx == 3 {
            300
        } else {
            20 + 13 * page_idx
        };
        allocate(outcome, cache, len_bytes)?;
    }
    set_root(outcome, cache, "tree", 0)?;
    for round in 0..N_ROUNDS {
        let idx = round * 7 + round / 5;
        match round % 12 {
            0..=4 => link_or_replace(outcome, cache, idx, 8 + round % 45, false)?,
            5 => {
                // One replace in four writes a blob.
                let len_bytes = if round % 48 == 5 {
                    280
                } else {
                    30 + round % 60
                };
                link_or_replace(outcome, cache, idx, len_bytes, true)?;
            }
            6 => {
                let id = cache.generate_id()?;
                if let Some(max) = outcome.max_id {
                    assert!(id > max, "id {id} after {max}");
                }
                outcome.max_id = Some(id);
            }
            7 => {
                let (lsn, _) = *outcome.history.last().expect("pages were allocated");
                cache.make_stable(lsn)?;
                outcome.acknowledge_through(lsn);
            }
            8 => {
                // A free then an allocation, which reuses the id once the free is durable.
                if round % 24 == 8 {
                    free(outcome, cache, idx)?;
                }
                allocate(outcome, cache, 15 + round % 70)?;
            }
            9 => {
                let name = if round % 36 == 9 { "aux" } else { "tree" };
                set_root(outcome, cache, name, idx)?;
            }
            10 => {
                let (pid, _) = outcome.live[idx % outcome.live.len()];
                let page = cache.get(pid)?.expect("a live page");
                assert_eq!(page.value, outcome.current.pages[&pid], "page {pid:?}");
            }
            _ => {
                cache.flush()?;
                outcome.acknowledge_all();
            }
        }
        if round == SNAPSHOT_ROUND {
            cache.snapshot()?;
            outcome.acknowledge_all();
        }
    }
    Ok(())
}

/// Opens the store on `storage`, runs the workload and closes the store, stopping at the
/// first error (the cache is then left open in the outcome, for a crash).
fn run(storage: &SimStorage, config: &Config) -> Outcome {
    let mut outcome = Outcome::default();
    let cache = match PageCache::open(Arc::new(storage.clone()), config.clone(), Concat) {
        Ok((cache, _)) => cache,
        Err(error) => {
            outcome.first_error = Some(format!("open: {error}"));
            return outcome;
        }
    };
    if let Err(error) = workload(&mut outcome, &cache) {
        outcome.first_error = Some(error.to_string());
        outcome.cache = Some(cache);
        return outcome;
    }
    outcome.in_doubt = None;
    match cache.close() {
        Ok(()) => outcome.acknowledge_all(),
        Err(error) => outcome.first_error = Some(format!("close: {error}")),
    }
    outcome
}

/// Whether `recovered` is `state` plus exactly one page holding `fragment`.
fn is_state_plus_allocation(recovered: &State, state: &State, fragment: &[u8]) -> bool {
    if recovered.roots != state.roots || recovered.pages.len() != state.pages.len() + 1 {
        return false;
    }
    let mut extra = recovered
        .pages
        .iter()
        .filter(|(pid, _)| !state.pages.contains_key(pid));
    match (extra.next(), extra.next()) {
        (Some((_, value)), None) => {
            value.as_slice() == fragment
                && state
                    .pages
                    .iter()
                    .all(|(pid, value)| recovered.pages.get(pid) == Some(value))
        }
        _ => false,
    }
}

/// Which state a recovery matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Matched {
    /// The model after this many writes of the history (at least every durable one).
    Prefix(usize),
    /// The model after the whole history and the write that failed.
    InDoubt,
}

/// How the recoveries of a sweep came out, to show the sweep covers the interesting cases.
#[derive(Debug, Default)]
struct Tally {
    /// Recoveries that gave back the whole history.
    n_whole_history: u64,
    /// Recoveries that cut acknowledged but not durable writes (a strict prefix).
    n_cut_tail: u64,
    /// Recoveries in which the write that failed turned up.
    n_in_doubt_present: u64,
    /// Recoveries after a run that had made something durable.
    n_with_durable_writes: u64,
}

impl Tally {
    fn add(&mut self, matched: Matched, outcome: &Outcome) {
        match matched {
            Matched::Prefix(k) if k == outcome.history.len() => self.n_whole_history += 1,
            Matched::Prefix(_) => self.n_cut_tail += 1,
            Matched::InDoubt => self.n_in_doubt_present += 1,
        }
        if outcome.n_durable > 0 {
            self.n_with_durable_writes += 1;
        }
    }
}

/// Which state `recovered` is: the model after some prefix of the history holding every
/// durable write (the longest such, as a cut tail is the interesting case to count), or after
/// the whole history and the write in doubt. `None`: neither.
fn match_history(recovered: &State, outcome: &Outcome) -> Option<Matched> {
    let mut state = State::default();
    let mut matched = None;
    for k in 0..=outcome.history.len() {
        if k > 0 {
            state.apply(&outcome.history[k - 1].1);
        }
        if k >= outcome.n_durable && state == *recovered {
            matched = Some(Matched::Prefix(k));
        }
    }
    if matched.is_some() {
        return matched;
    }
    let in_doubt_matches = match &outcome.in_doubt {
        Some(InDoubt::Effect(effect)) => {
            state.apply(effect);
            state == *recovered
        }
        Some(InDoubt::Allocate(fragment)) => is_state_plus_allocation(recovered, &state, fragment),
        None => false,
    };
    in_doubt_matches.then_some(Matched::InDoubt)
}

/// Reopens the crashed disk and checks it against the outcome; `Err` says what is wrong.
fn check_reopen(
    survivor: &SimStorage,
    config: &Config,
    outcome: &Outcome,
) -> Result<Matched, String> {
    let storage = Arc::new(survivor.clone());
    let (cache, report) = PageCache::open(storage.clone(), config.clone(), Concat)
        .map_err(|error| format!("reopen failed: {error}"))?;
    let recovered = State::read(&cache);
    let matched = match_history(&recovered, outcome).ok_or_else(|| {
        format!(
            "recovered state is no prefix of the history holding every durable write \
             ({} durable of {}, in doubt: {})\nrecovered {}\nmodel     {}\n{report}",
            outcome.n_durable,
            outcome.history.len(),
            in_doubt_summary(&outcome.in_doubt),
            recovered.summary(),
            outcome.current.summary(),
        )
    })?;
    let id = cache
        .generate_id()
        .map_err(|error| format!("generate_id after reopen: {error}"))?;
    if let Some(max) = outcome.max_id
        && id <= max
    {
        return Err(format!(
            "generate_id after reopen gave {id}, but {max} was handed out before the crash"
        ));
    }
    cache
        .close()
        .map_err(|error| format!("closing the reopened store: {error}"))?;
    let (cache, _) = PageCache::open(storage, config.clone(), Concat)
        .map_err(|error| format!("second reopen failed: {error}"))?;
    let again = State::read(&cache);
    if again != recovered {
        return Err(format!(
            "a clean close and reopen changed the state\nfirst {}\nthen  {}",
            recovered.summary(),
            again.summary()
        ));
    }
    let next = cache
        .generate_id()
        .map_err(|error| format!("generate_id after the second reopen: {error}"))?;
    if next <= id {
        return Err(format!(
            "generate_id after the second reopen gave {next}, after {id}"
        ));
    }
    cache
        .close()
        .map_err(|error| format!("closing after the second reopen: {error}"))?;
    Ok(matched)
}

/// The surviving disks checked per crash point: a seeded random survival of unsynced writes
/// and one that keeps only synced data; the long mode adds more seeds and one that keeps
/// every unsynced write.
fn survivors(storage: &SimStorage, call_idx: u64) -> Vec<(String, SimStorage)> {
    let n_seeds = if long_mode() { 6 } else { 1 };
    let mut crashed: Vec<(String, SimStorage)> = (0..n_seeds)
        .map(|k| {
            let seed = (call_idx * 8 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed;
            (format!("crash({seed:#x})"), storage.crash(seed))
        })
        .collect();
    crashed.push(("crash_drop_all".to_string(), storage.crash_drop_all()));
    if long_mode() {
        crashed.push(("crash_keep_all".to_string(), storage.crash_keep_all()));
    }
    crashed
}

/// Runs the workload failing every call from `call_idx` on, crashes, reopens and checks.
fn check_crash_point(call_idx: u64, config: &Config, tally: &mut Tally) -> Result<(), String> {
    let kind = if call_idx % 3 == 2 {
        FaultKind::Enospc
    } else {
        FaultKind::Eio
    };
    let storage = SimStorage::new();
    storage.fail_all_from(call_idx, kind);
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let mut outcome = run(&storage, config);
        let crashed = survivors(&storage, call_idx);
        // Dropped after the crash: its closing flush fails on the dead disk.
        drop(outcome.cache.take());
        (outcome, crashed)
    }));
    let (outcome, crashed) = ran.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("call {call_idx} failing ({kind:?}): the failed run panicked: {message}")
    })?;
    for (crash, survivor) in crashed {
        let checked = catch_unwind(AssertUnwindSafe(|| {
            check_reopen(&survivor, config, &outcome)
        }))
        .unwrap_or_else(|_| Err("reopening panicked".to_string()));
        let matched = checked.map_err(|failure| {
            format!(
                "call {call_idx} failing ({kind:?}, first error {:?}), {crash}: {failure}",
                outcome.first_error
            )
        })?;
        tally.add(matched, &outcome);
    }
    Ok(())
}

/// The sweep: a clean run counts the calls (and proves cleaning, eviction and snapshots
/// happen), then every call index (or a stride of them) is a crash point.
#[test]
fn crash_at_every_storage_call_recovers_a_durable_prefix() {
    let config = tiny_config(false);
    let clean = SimStorage::new();
    let outcome = run(&clean, &config);
    assert!(outcome.first_error.is_none(), "{:?}", outcome.first_error);
    let n_calls = clean.n_calls();
    {
        // Without a fault, a clean reopen gives back the whole history.
        let (cache, _) =
            PageCache::open(Arc::new(clean.clone()), config.clone(), Concat).expect("reopen");
        let recovered = State::read(&cache);
        assert!(
            recovered == outcome.current,
            "after a clean close: {}\nmodel {}",
            recovered.summary(),
            outcome.current.summary()
        );
        cache.close().expect("close");
    }
    let stride = if long_mode() {
        1
    } else {
        (n_calls / DEFAULT_N_CRASH_POINTS).max(1)
    };
    let mut failures = Vec::new();
    let mut n_checked = 0u64;
    let mut tally = Tally::default();
    // The last index (no call fails) is the clean run followed by a crash.
    let mut call_idx = 0;
    while call_idx <= n_calls {
        if let Err(failure) = check_crash_point(call_idx, &config, &mut tally) {
            failures.push(failure);
        }
        n_checked += 1;
        call_idx += if call_idx + stride > n_calls && call_idx < n_calls {
            n_calls - call_idx
        } else {
            stride
        };
    }
    eprintln!(
        "crash sweep: the workload makes {n_calls} storage calls; checked {n_checked} crash \
         points (stride {stride}); recoveries: {tally:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {n_checked} crash points failed; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n\n")
    );
}

/// The clean run of the workload does exercise what the sweep means to cover.
#[test]
fn the_workload_exercises_cleaning_eviction_and_snapshots() {
    let config = tiny_config(false);
    let storage = SimStorage::new();
    let (cache, _) =
        PageCache::open(Arc::new(storage.clone()), config, Concat).expect("create the store");
    let mut outcome = Outcome::default();
    workload(&mut outcome, &cache).expect("the workload on a healthy disk");
    let metrics = cache.metrics();
    let figures = [
        ("evicted", count(&metrics.n_fragments_evicted)),
        ("page-ins", count(&metrics.n_page_ins)),
        ("consolidations", count(&metrics.n_consolidations)),
        ("segments cleaned", count(&metrics.n_segments_cleaned)),
        ("snapshots", count(&metrics.n_snapshots)),
    ];
    eprintln!("{figures:?} {:?}", cache.stats());
    for (name, figure) in figures {
        assert!(figure > 0, "no {name} happened: {figures:?}");
    }
    cache.close().expect("close");
}
