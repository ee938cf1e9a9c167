//! The page cache against a model, with crashes and clean reopens as ordinary operations.
//!
//! A random sequence of allocations, links, replaces, frees, stale writes, reads, id
//! generations, root changes, durability points, snapshots, crashes (the simulated disk keeps
//! what was synced plus an arbitrary, possibly torn, part of the rest) and clean reopens runs
//! against a `PageCache` on a tiny configuration (4 KiB segments, two 1 KiB buffers, a 1 KiB
//! cache, chains consolidated at 3 fragments) and against a `BTreeMap` model.
//!
//! The model keeps every successful write since the last recovery in LSN order, with its
//! effect (a page's whole new value, or a root's new target), and how many of them were made
//! durable (by `flush`, `make_stable` on a write's LSN, or a snapshot, which flushes). After a
//! crash the recovered pages and roots must equal the model applied to SOME prefix of that
//! history that holds every durable write: nothing durable lost, nothing refused (a stale
//! write) or unwritten present, and no write present without every write before it. After a
//! clean reopen the prefix is the whole history. Generated ids never repeat, across restarts
//! and crashes.
//!
//! Cases: `PROPTEST_CASES` (default 64; the long mode runs 10 000).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Concat, cases, count, read_all, tiny_config};
use iobuf::storage::SimStorage;
use pagecache::{Config, Lsn, PageCache, PageId, Version};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Allocate a page with a fragment of this length.
    Allocate(usize),
    /// Link a fragment of this length to the known page at this index.
    Link(usize, usize),
    /// Replace the known page at this index with a fragment of this length.
    Replace(usize, usize),
    Free(usize),
    /// Write with a version older than the page's current one: must change nothing.
    StaleLink(usize),
    StaleFree(usize),
    Get(usize),
    GenerateId,
    /// Point root (index mod 3) at the known page at this index, or remove it; `true` passes
    /// a wrong expected value, which must change nothing.
    SetRoot(usize, Option<usize>, bool),
    Flush,
    /// Make the write at this index (mod the history's length) stable.
    MakeStable(usize),
    Snapshot,
    Crash(u64),
    Reopen,
}

fn fragment_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..60,
        2 => 60usize..240,
        // Above the blob threshold (256 bytes): the fragment goes to a file of its own.
        1 => 240usize..600,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => fragment_len().prop_map(Op::Allocate),
        20 => (any::<usize>(), fragment_len()).prop_map(|(page, len)| Op::Link(page, len)),
        8 => (any::<usize>(), fragment_len()).prop_map(|(page, len)| Op::Replace(page, len)),
        3 => any::<usize>().prop_map(Op::Free),
        2 => any::<usize>().prop_map(Op::StaleLink),
        1 => any::<usize>().prop_map(Op::StaleFree),
        6 => any::<usize>().prop_map(Op::Get),
        2 => Just(Op::GenerateId),
        2 => (any::<usize>(), proptest::option::of(any::<usize>()), any::<bool>())
            .prop_map(|(name, page, stale)| Op::SetRoot(name, page, stale)),
        2 => Just(Op::Flush),
        4 => any::<usize>().prop_map(Op::MakeStable),
        1 => Just(Op::Snapshot),
        2 => any::<u64>().prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

/// What one successful write did.
#[derive(Clone, Debug)]
enum Effect {
    /// The page's whole value after the write (`None`: freed).
    Page(PageId, Option<Vec<u8>>),
    /// The root's target after the write (`None`: removed).
    Root(String, Option<PageId>),
}

/// Pages and roots: the state both the model and a recovered cache are compared on.
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

    fn read(cache: &PageCache<Concat>) -> State {
        State {
            pages: read_all(cache),
            roots: cache.roots().into_iter().collect(),
        }
    }
}

/// The model and the system under test.
struct Harness {
    config: Config,
    storage: Arc<SimStorage>,
    cache: Option<PageCache<Concat>>,
    /// The state at the last recovery.
    base: State,
    /// The state now.
    current: State,
    /// Successful writes since the last recovery, in LSN order.
    history: Vec<(Lsn, Effect)>,
    /// How many writes of `history` are known durable.
    n_durable: usize,
    /// Every page id seen, with the last version the model knows for it (for a free page,
    /// the version it had when freed, or nothing after a restart).
    versions: BTreeMap<PageId, Option<Version>>,
    /// A version older than the current one, per live page, for stale writes.
    old_versions: BTreeMap<PageId, Version>,
    /// The largest id generated so far, across restarts.
    max_id: Option<u64>,
    /// Distinguishes every fragment's bytes.
    n_fragments: u64,
    n_recoveries: u64,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let storage = Arc::new(SimStorage::new());
        let (cache, _) = PageCache::open(storage.clone(), config.clone(), Concat).expect("create");
        Harness {
            config,
            storage,
            cache: Some(cache),
            base: State::default(),
            current: State::default(),
            history: Vec::new(),
            n_durable: 0,
            versions: BTreeMap::new(),
            old_versions: BTreeMap::new(),
            max_id: None,
            n_fragments: 0,
            n_recoveries: 0,
        }
    }

    fn cache(&self) -> &PageCache<Concat> {
        self.cache.as_ref().expect("open")
    }

    fn fragment(&mut self, len: usize) -> Vec<u8> {
        self.n_fragments += 1;
        let tag = self.n_fragments;
        (0..len)
            .map(|i| (tag.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
            .collect()
    }

    fn known(&self, idx: usize) -> Option<PageId> {
        if self.versions.is_empty() {
            return None;
        }
        self.versions.keys().nth(idx % self.versions.len()).copied()
    }

    fn record(&mut self, lsn: Lsn, effect: Effect) {
        if let Some((last, _)) = self.history.last() {
            assert!(lsn > *last, "writes of one thread come in LSN order");
        }
        self.current.apply(&effect);
        self.history.push((lsn, effect));
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Allocate(len) => {
                let fragment = self.fragment(*len);
                let (pid, written) = self.cache().allocate(fragment.clone()).expect("allocate");
                assert!(
                    !self.current.pages.contains_key(&pid),
                    "allocate handed out live page {pid:?}"
                );
                self.versions.insert(pid, Some(written.version));
                self.old_versions.remove(&pid);
                self.record(written.lsn, Effect::Page(pid, Some(fragment)));
            }
            Op::Link(idx, len) | Op::Replace(idx, len) => {
                let Some(pid) = self.known(*idx) else { return };
                let Some(version) = self.versions[&pid] else {
                    return;
                };
                let fragment = self.fragment(*len);
                let outcome = if matches!(op, Op::Link(..)) {
                    self.cache().link(pid, version, fragment.clone())
                } else {
                    self.cache().replace(pid, version, fragment.clone())
                }
                .expect("write");
                match (self.current.pages.get(&pid).cloned(), outcome) {
                    (Some(mut value), Ok(written)) => {
                        assert!(written.version != version);
                        self.old_versions.insert(pid, version);
                        self.versions.insert(pid, Some(written.version));
                        if matches!(op, Op::Link(..)) {
                            value.extend_from_slice(&fragment);
                        } else {
                            value = fragment;
                        }
                        self.record(written.lsn, Effect::Page(pid, Some(value)));
                    }
                    (None, Err(stale)) => {
                        assert_eq!(stale.current, None, "page {pid:?} is free");
                        assert_eq!(stale.fragment, fragment, "the fragment comes back");
                    }
                    (model, outcome) => {
                        panic!("page {pid:?}: model {model:?}, cache {outcome:?}")
                    }
                }
            }
            Op::Free(idx) => {
                let Some(pid) = self.known(*idx) else { return };
                let Some(version) = self.versions[&pid] else {
                    return;
                };
                let outcome = self.cache().free(pid, version).expect("free");
                match (self.current.pages.contains_key(&pid), outcome) {
                    (true, Ok(lsn)) => {
                        self.old_versions.remove(&pid);
                        self.record(lsn, Effect::Page(pid, None));
                    }
                    (false, Err(stale)) => assert_eq!(stale.current, None),
                    (model, outcome) => {
                        panic!("free {pid:?}: live in model {model}, cache {outcome:?}")
                    }
                }
            }
            Op::StaleLink(idx) | Op::StaleFree(idx) => {
                let Some(pid) = self.known(*idx) else { return };
                let Some(&old) = self.old_versions.get(&pid) else {
                    return;
                };
                let current = self.versions[&pid];
                let refused = if matches!(op, Op::StaleLink(_)) {
                    self.cache()
                        .link(pid, old, vec![0xEE; 5])
                        .expect("link")
                        .map(|_| ())
                        .map_err(|stale| stale.current)
                } else {
                    self.cache()
                        .free(pid, old)
                        .expect("free")
                        .map(|_| ())
                        .map_err(|stale| stale.current)
                };
                assert_eq!(refused, Err(current), "a stale write on {pid:?} is refused");
                let page = self.cache().get(pid).expect("get").expect("still live");
                assert_eq!(page.value, self.current.pages[&pid]);
            }
            Op::Get(idx) => {
                let Some(pid) = self.known(*idx) else { return };
                let page = self.cache().get(pid).expect("get");
                match (self.current.pages.get(&pid), page) {
                    (Some(value), Some(page)) => {
                        assert_eq!(&page.value, value, "page {pid:?}");
                        if let Some(version) = self.versions[&pid] {
                            assert_eq!(page.version, version, "page {pid:?}");
                        }
                    }
                    (None, None) => {}
                    (model, page) => panic!("page {pid:?}: model {model:?}, cache {page:?}"),
                }
            }
            Op::GenerateId => {
                let id = self.cache().generate_id().expect("generate id");
                if let Some(max) = self.max_id {
                    assert!(id > max, "id {id} after {max}: ids never repeat");
                }
                self.max_id = Some(id);
            }
            Op::SetRoot(name_idx, target, stale) => {
                let name = format!("root-{}", name_idx % 3);
                let target = target.and_then(|idx| self.known(idx));
                let expected = self.current.roots.get(&name).copied();
                if *stale {
                    let wrong = match expected {
                        Some(pid) => Some(PageId(pid.0 + 1)),
                        None => Some(PageId(u64::MAX >> 8)),
                    };
                    let outcome = self.cache().set_root(&name, wrong, target).expect("root");
                    assert_eq!(outcome, Err(expected), "a stale root change is refused");
                } else {
                    let lsn = self
                        .cache()
                        .set_root(&name, expected, target)
                        .expect("root")
                        .expect("expected is current");
                    self.record(lsn, Effect::Root(name, target));
                }
            }
            Op::Flush => {
                self.cache().flush().expect("flush");
                self.n_durable = self.history.len();
            }
            Op::MakeStable(idx) => {
                if self.history.is_empty() {
                    return;
                }
                let idx = idx % self.history.len();
                self.cache()
                    .make_stable(self.history[idx].0)
                    .expect("make stable");
                self.n_durable = self.n_durable.max(idx + 1);
            }
            Op::Snapshot => {
                self.cache().snapshot().expect("snapshot");
                // A snapshot makes the whole log durable before it is written.
                self.n_durable = self.history.len();
            }
            Op::Crash(seed) => {
                let survivor = self.storage.crash(*seed);
                // Dropped after the crash: its closing flush fails on the dead disk and
                // cannot make anything more durable.
                drop(self.cache.take());
                self.storage = Arc::new(survivor);
                self.recover(false);
            }
            Op::Reopen => {
                self.cache.take().expect("open").close().expect("close");
                self.recover(true);
            }
        }
    }

    /// Opens the store again and checks it against the history (the whole history after a
    /// clean close, some prefix holding every durable write after a crash).
    fn recover(&mut self, clean: bool) {
        let (cache, report) = PageCache::open(self.storage.clone(), self.config.clone(), Concat)
            .unwrap_or_else(|error| panic!("reopen: {error}"));
        self.n_recoveries += 1;
        let recovered = State::read(&cache);
        let mut state = self.base.clone();
        let mut matched = None;
        for k in 0..=self.history.len() {
            if k > 0 {
                state.apply(&self.history[k - 1].1);
            }
            if k >= self.n_durable && (!clean || k == self.history.len()) && state == recovered {
                matched = Some(k);
                break;
            }
        }
        assert!(
            matched.is_some(),
            "recovered state is no prefix of the history holding every durable write \
             ({} durable of {}; clean {clean})\nrecovered {recovered:?}\nmodel {:?}\n\
             history {:?}\n{report}",
            self.n_durable,
            self.history.len(),
            self.current,
            self.history,
        );
        // Versions restart after an open: read them back.
        for pid in recovered.pages.keys() {
            let page = cache.get(*pid).expect("get").expect("live");
            self.versions.insert(*pid, Some(page.version));
        }
        for (pid, version) in self.versions.iter_mut() {
            if !recovered.pages.contains_key(pid) {
                *version = None;
            }
        }
        self.old_versions.clear();
        self.base = recovered.clone();
        self.current = recovered;
        self.history.clear();
        self.n_durable = 0;
        self.cache = Some(cache);
    }

    /// Reads every page and root and compares them with the model.
    fn check_all(&self) {
        let state = State::read(self.cache());
        assert_eq!(state, self.current);
    }
}

fn run_ops(config: Config, ops: &[Op]) {
    let mut harness = Harness::new(config);
    for op in ops {
        harness.run(op);
    }
    harness.check_all();
    harness.run(&Op::Crash(0x5eed));
    harness.run(&Op::Reopen);
    harness.check_all();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn model_with_snapshots_on_demand(ops in prop::collection::vec(op(), 1..200)) {
        run_ops(tiny_config(false), &ops);
    }

    #[test]
    fn model_with_background_threads(ops in prop::collection::vec(op(), 1..200)) {
        run_ops(tiny_config(true), &ops);
    }
}

/// A fixed, longer workload on the tiny configuration, to prove that the machinery the model
/// test relies on actually runs: eviction, page-ins, consolidation, relocation, cleaning and
/// snapshots all happen, and the store still matches the model after a crash and a reopen.
#[test]
fn tiny_config_exercises_eviction_cleaning_and_snapshots() {
    let mut harness = Harness::new(tiny_config(false));
    let mut ops = Vec::new();
    for i in 0..48 {
        ops.push(Op::Allocate(20 + i % 30));
    }
    for round in 0..3000usize {
        let page = round * 7;
        ops.push(match round % 10 {
            0..=3 => Op::Link(page, 10 + round % 40),
            4 => Op::Replace(page, 30 + round % 50),
            5 | 6 => Op::Get(page),
            7 => Op::MakeStable(round),
            8 => Op::StaleLink(page),
            _ if round % 100 == 9 => Op::Snapshot,
            _ if round % 20 == 9 => Op::Flush,
            _ => Op::Get(page + 3),
        });
    }
    for op in &ops {
        harness.run(op);
    }
    harness.check_all();
    let metrics = harness.cache().metrics();
    let figures = [
        ("evicted", count(&metrics.n_fragments_evicted)),
        ("page-ins", count(&metrics.n_page_ins)),
        ("consolidations", count(&metrics.n_consolidations)),
        ("relocations", count(&metrics.n_relocations)),
        ("segments cleaned", count(&metrics.n_segments_cleaned)),
        ("snapshots", count(&metrics.n_snapshots)),
    ];
    eprintln!("{figures:?} {:?}", harness.cache().stats());
    for (name, figure) in figures {
        assert!(figure > 0, "no {name} happened: {figures:?}");
    }
    harness.run(&Op::Crash(42));
    harness.check_all();
    harness.run(&Op::Reopen);
    harness.check_all();
}
