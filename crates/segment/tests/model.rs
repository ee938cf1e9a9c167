//! Property test: random sequences of segment and page operations run against the accountant
//! and against a deliberately naive model (linear scans, no indexes), compared after every
//! step, with the safety properties checked directly.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use segment::{
    AccountantConfig, AccountingBatch, AccountingMode, Geometry, Lsn, PageId, RecoveredFacts,
    RecoveredFragment, RecoveredSegment, RecoveredState, SegmentAccountant, SegmentError,
    SegmentId, SegmentState, SegmentStats,
};

const SEGMENT_LEN_BYTES: u64 = 256;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[derive(Clone, Debug)]
enum Op {
    Next,
    /// Deactivate the i-th Active segment (by base LSN).
    Deactivate(usize),
    /// Deactivate any segment, legal or not.
    DeactivateAny(usize),
    Batch {
        to_newest_active: bool,
        target: usize,
        ops: Vec<(u8, u8, u8)>,
    },
    Release(u16),
    Clean,
    /// Restart; with `true`, the log first makes everything stable (deactivating every Active
    /// segment but the newest).
    Rebuild(bool),
    Truncate,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Next),
        4 => (0usize..4).prop_map(Op::Deactivate),
        1 => (0usize..64).prop_map(Op::DeactivateAny),
        8 => (any::<bool>(), 0usize..64, prop::collection::vec((0u8..3, 0u8..24, 1u8..60), 1..8))
            .prop_map(|(to_newest_active, target, ops)| Op::Batch { to_newest_active, target, ops }),
        2 => any::<u16>().prop_map(Op::Release),
        2 => Just(Op::Clean),
        1 => any::<bool>().prop_map(Op::Rebuild),
        1 => Just(Op::Truncate),
    ]
}

#[derive(Clone, Debug)]
struct MSeg {
    state: SegmentState,
    base: u64,
    protected: bool,
}

#[derive(Clone, Debug)]
struct Model {
    mode: AccountingMode,
    n_protected: usize,
    threshold_bytes: u64,
    segs: Vec<MSeg>,
    recent: VecDeque<usize>,
    /// page -> fragments (segment, bytes), one per segment, in first-write order.
    pages: BTreeMap<u64, Vec<(usize, u64)>>,
    /// (cause segment, holder segment, bytes): dead once the cause is Inactive.
    pending: Vec<(usize, usize, u64)>,
    release: u64,
    next_base: u64,
}

impl Model {
    fn live(&self, s: usize) -> u64 {
        self.pages
            .values()
            .flatten()
            .filter(|f| f.0 == s)
            .map(|f| f.1)
            .sum()
    }
    fn dying(&self, s: usize) -> u64 {
        self.pending.iter().filter(|p| p.1 == s).map(|p| p.2).sum()
    }
    fn unneeded(&self, s: usize) -> bool {
        let seg = &self.segs[s];
        match self.mode {
            AccountingMode::PlainLog => {
                seg.state == SegmentState::Inactive && seg.base + SEGMENT_LEN_BYTES <= self.release
            }
            _ => {
                matches!(seg.state, SegmentState::Inactive | SegmentState::Draining)
                    && self.live(s) == 0
                    && self.dying(s) == 0
            }
        }
    }
    fn free_unneeded(&mut self) {
        for s in 0..self.segs.len() {
            if self.unneeded(s) {
                self.segs[s].state = SegmentState::Free;
            }
        }
    }
    fn protect(&mut self, s: usize) {
        if self.n_protected == 0 {
            return;
        }
        self.segs[s].protected = true;
        self.recent.push_back(s);
        while self.recent.len() > self.n_protected {
            let old = self.recent.pop_front().unwrap();
            self.segs[old].protected = false;
        }
    }
    fn actives(&self) -> Vec<usize> {
        let mut a: Vec<usize> = (0..self.segs.len())
            .filter(|&s| self.segs[s].state == SegmentState::Active)
            .collect();
        a.sort_by_key(|&s| self.segs[s].base);
        a
    }
    /// The in-use segment with the highest base LSN, if it is Active.
    fn newest_active(&self) -> Option<usize> {
        (0..self.segs.len())
            .filter(|&s| self.segs[s].state != SegmentState::Free)
            .max_by_key(|&s| self.segs[s].base)
            .filter(|&s| self.segs[s].state == SegmentState::Active)
    }
    fn stats(&self, s: usize) -> SegmentStats {
        let seg = &self.segs[s];
        SegmentStats {
            segment: SegmentId(s as u64),
            state: seg.state,
            base_lsn: (seg.state != SegmentState::Free).then_some(Lsn(seg.base)),
            live_bytes: self.live(s),
            dying_bytes: self.dying(s),
        }
    }
    fn facts(&self) -> RecoveredFacts {
        let newest_active = self.newest_active();
        let segments = (0..self.segs.len())
            .filter(|&s| self.segs[s].state != SegmentState::Free)
            .map(|s| RecoveredSegment {
                segment: SegmentId(s as u64),
                base_lsn: Lsn(self.segs[s].base),
                state: if Some(s) == newest_active {
                    RecoveredState::Active
                } else {
                    RecoveredState::Inactive
                },
            })
            .collect();
        let mut fragments: Vec<RecoveredFragment> = self
            .pages
            .iter()
            .flat_map(|(&p, fs)| {
                fs.iter().map(move |&(s, b)| RecoveredFragment {
                    page: PageId(p),
                    segment: SegmentId(s as u64),
                    len_bytes: b,
                })
            })
            .collect();
        fragments.sort();
        RecoveredFacts {
            n_segments_in_file: self.segs.len() as u64,
            segments,
            fragments,
            release_point: Lsn(self.release),
        }
    }
    /// Kill every current fragment of `page` because of a write stored in `cause`.
    fn kill_page(&mut self, page: u64, cause: usize) {
        for (holder, bytes) in self.pages.remove(&page).unwrap_or_default() {
            if self.segs[cause].state == SegmentState::Active {
                self.pending.push((cause, holder, bytes));
            }
        }
    }
}

fn check(acct: &SegmentAccountant, model: &Model) -> Result<(), TestCaseError> {
    acct.check_invariants();
    prop_assert_eq!(acct.n_segments_in_file(), model.segs.len() as u64);
    for s in 0..model.segs.len() {
        prop_assert_eq!(
            acct.segment_stats(SegmentId(s as u64)).unwrap(),
            model.stats(s)
        );
    }
    prop_assert_eq!(acct.recovered_facts(), model.facts());
    let live_total: u64 = model.pages.values().flatten().map(|f| f.1).sum();
    prop_assert_eq!(acct.stats().live_bytes, live_total);
    // Every segment in use has a distinct base LSN, and segment_for_lsn finds it.
    let mut bases = BTreeMap::new();
    for (s, seg) in model.segs.iter().enumerate() {
        if seg.state != SegmentState::Free {
            prop_assert!(
                bases.insert(seg.base, s).is_none(),
                "two segments hold base {}",
                seg.base
            );
            prop_assert_eq!(
                acct.segment_for_lsn(Lsn(seg.base + 7)),
                Some(SegmentId(s as u64))
            );
        }
    }
    Ok(())
}

fn run(mode: AccountingMode, n_protected: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let geometry = Geometry::new(SEGMENT_LEN_BYTES).unwrap();
    let config = AccountantConfig {
        mode,
        ..AccountantConfig::new(geometry, n_protected)
    };
    let mut acct = SegmentAccountant::new(config).unwrap();
    let mut model = Model {
        mode,
        n_protected: n_protected as usize,
        threshold_bytes: (config.cleaning_threshold_live_fraction * SEGMENT_LEN_BYTES as f64)
            as u64,
        segs: Vec::new(),
        recent: VecDeque::new(),
        pages: BTreeMap::new(),
        pending: Vec::new(),
        release: 0,
        next_base: 0,
    };
    for op in ops {
        match op {
            Op::Next => next(&mut acct, &mut model)?,
            Op::Deactivate(i) => {
                let actives = model.actives();
                if actives.is_empty() {
                    continue;
                }
                deactivate(&mut acct, &mut model, actives[i % actives.len()])?;
            }
            Op::DeactivateAny(i) => {
                if model.segs.is_empty() {
                    prop_assert!(
                        matches!(
                            acct.deactivate(SegmentId(0)),
                            Err(SegmentError::UnknownSegment { .. })
                        ),
                        "unexpected result"
                    );
                    continue;
                }
                let s = i % model.segs.len();
                if model.segs[s].state == SegmentState::Active {
                    deactivate(&mut acct, &mut model, s)?;
                } else {
                    let err = acct.deactivate(SegmentId(s as u64)).unwrap_err();
                    prop_assert_eq!(
                        err,
                        SegmentError::IllegalTransition {
                            segment: SegmentId(s as u64),
                            from: model.segs[s].state,
                            to: SegmentState::Inactive
                        }
                    );
                }
            }
            Op::Batch {
                to_newest_active,
                target,
                ops,
            } => {
                let actives = model.actives();
                let target = match (to_newest_active, actives.last()) {
                    (true, Some(&s)) => s,
                    _ if model.segs.is_empty() => continue,
                    _ => target % model.segs.len(),
                };
                let ops = ops
                    .into_iter()
                    .map(|(k, p, l)| (k, u64::from(p), u64::from(l)))
                    .collect();
                batch(&mut acct, &mut model, target, ops)?;
            }
            Op::Release(r) => {
                let lsn = u64::from(r) * 16 % (model.next_base + 1);
                acct.release_before(Lsn(lsn));
                model.release = model.release.max(lsn);
                if mode == AccountingMode::PlainLog {
                    model.free_unneeded();
                }
            }
            Op::Clean => clean(&mut acct, &mut model)?,
            Op::Rebuild(flush_first) => {
                if flush_first {
                    let actives = model.actives();
                    for &s in actives.iter().rev().skip(1) {
                        deactivate(&mut acct, &mut model, s)?;
                    }
                }
                rebuild(&mut acct, &mut model, config)?
            }
            Op::Truncate => {
                let keep = model
                    .segs
                    .iter()
                    .rposition(|s| s.state != SegmentState::Free || s.protected)
                    .map_or(0, |i| i + 1);
                let expected = (keep < model.segs.len()).then_some(keep as u64);
                prop_assert_eq!(acct.truncatable_to(), expected);
                if let Some(n) = expected {
                    if n > 0 {
                        // Cutting one segment further must be refused.
                        prop_assert!(
                            matches!(
                                acct.truncate_file(n - 1),
                                Err(SegmentError::CannotTruncate { .. })
                            ),
                            "unexpected result"
                        );
                    }
                    acct.truncate_file(n).unwrap();
                    model.segs.truncate(n as usize);
                }
            }
        }
        check(&acct, &model)?;
    }
    Ok(())
}

fn next(acct: &mut SegmentAccountant, model: &mut Model) -> Result<(), TestCaseError> {
    let base = model.next_base;
    let expected = (0..model.segs.len())
        .find(|&s| model.segs[s].state == SegmentState::Free && !model.segs[s].protected)
        .unwrap_or(model.segs.len());
    // Safety, checked directly on the model's facts: what is handed out holds no live
    // fragment and no bytes whose replacement is not yet stable, and nothing above the
    // release point of a plain log.
    if expected < model.segs.len() {
        prop_assert!(!model.pages.values().flatten().any(|f| f.0 == expected));
        prop_assert!(!model.pending.iter().any(|p| p.1 == expected));
        if model.mode == AccountingMode::PlainLog {
            prop_assert!(model.segs[expected].base + SEGMENT_LEN_BYTES <= model.release);
        }
        prop_assert!(!model.recent.contains(&expected));
    }
    // A misaligned or duplicate base LSN is refused.
    prop_assert!(
        matches!(
            acct.next_segment(Lsn(base + 1)),
            Err(SegmentError::MisalignedLsn { .. })
        ),
        "unexpected result"
    );
    if let Some(&held) = model.actives().last() {
        let held_base = model.segs[held].base;
        prop_assert_eq!(
            acct.next_segment(Lsn(held_base)),
            Err(SegmentError::DuplicateLsn {
                base_lsn: Lsn(held_base),
                held_by: SegmentId(held as u64)
            })
        );
    }
    let got = acct.next_segment(Lsn(base)).unwrap();
    prop_assert_eq!(got, SegmentId(expected as u64));
    if expected == model.segs.len() {
        model.segs.push(MSeg {
            state: SegmentState::Free,
            base: 0,
            protected: false,
        });
    }
    model.segs[expected].state = SegmentState::Active;
    model.segs[expected].base = base;
    model.protect(expected);
    model.next_base += SEGMENT_LEN_BYTES;
    Ok(())
}

fn deactivate(
    acct: &mut SegmentAccountant,
    model: &mut Model,
    s: usize,
) -> Result<(), TestCaseError> {
    acct.deactivate(SegmentId(s as u64)).unwrap();
    model.segs[s].state = SegmentState::Inactive;
    model.pending.retain(|p| p.0 != s);
    model.free_unneeded();
    Ok(())
}

fn batch(
    acct: &mut SegmentAccountant,
    model: &mut Model,
    target: usize,
    ops: Vec<(u8, u64, u64)>,
) -> Result<(), TestCaseError> {
    let mut b = AccountingBatch::new(SegmentId(target as u64));
    for &(kind, page, len) in &ops {
        match kind {
            0 => b.link(PageId(page), len),
            1 => b.replace(PageId(page), len),
            _ => b.free(PageId(page)),
        }
    }
    let result = acct.apply(&b);
    if model.mode == AccountingMode::PlainLog {
        prop_assert_eq!(result, Err(SegmentError::PagesNotTracked));
        return Ok(());
    }
    let state = model.segs[target].state;
    if !matches!(state, SegmentState::Active | SegmentState::Inactive) {
        prop_assert_eq!(
            result,
            Err(SegmentError::NotWritable {
                segment: SegmentId(target as u64),
                state
            })
        );
        return Ok(());
    }
    // Validity: every freed page exists at that point of the batch.
    let mut exists: BTreeMap<u64, bool> = BTreeMap::new();
    for &(kind, page, _) in &ops {
        if kind == 2 {
            let e = exists
                .get(&page)
                .copied()
                .unwrap_or_else(|| model.pages.contains_key(&page));
            if !e {
                prop_assert_eq!(
                    result,
                    Err(SegmentError::UnknownPage { page: PageId(page) })
                );
                return Ok(());
            }
            exists.insert(page, false);
        } else {
            exists.insert(page, true);
        }
    }
    prop_assert_eq!(result, Ok(()));
    for (kind, page, len) in ops {
        match kind {
            0 => {
                let fs = model.pages.entry(page).or_default();
                match fs.iter_mut().find(|f| f.0 == target) {
                    Some(f) => f.1 += len,
                    None => fs.push((target, len)),
                }
            }
            1 => {
                model.kill_page(page, target);
                model.pages.insert(page, vec![(target, len)]);
            }
            _ => model.kill_page(page, target),
        }
    }
    model.free_unneeded();
    Ok(())
}

fn clean(acct: &mut SegmentAccountant, model: &mut Model) -> Result<(), TestCaseError> {
    let expected = if model.mode == AccountingMode::Pages {
        (0..model.segs.len())
            .filter(|&s| {
                model.segs[s].state == SegmentState::Inactive
                    && model.live(s) < model.threshold_bytes
            })
            .min_by_key(|&s| (model.live(s), model.segs[s].base, s))
    } else {
        None
    };
    let got = acct.pick_cleaning_victim();
    prop_assert_eq!(got, expected.map(|s| SegmentId(s as u64)));
    let Some(victim) = expected else {
        return Ok(());
    };
    model.segs[victim].state = SegmentState::Draining;
    let pages: Vec<PageId> = model
        .pages
        .iter()
        .filter(|(_, fs)| fs.iter().any(|f| f.0 == victim))
        .map(|(&p, _)| PageId(p))
        .collect();
    prop_assert_eq!(
        acct.pages_to_relocate(SegmentId(victim as u64)).unwrap(),
        pages.clone()
    );
    check(acct, model)?;
    // Relocate exactly what we were told, as full copies into the newest Active segment.
    if model.actives().is_empty() {
        next(acct, model)?;
    }
    let target = *model.actives().last().unwrap();
    let ops = pages
        .iter()
        .map(|p| {
            let total: u64 = model.pages[&p.0].iter().map(|f| f.1).sum();
            (1u8, p.0, total)
        })
        .collect();
    batch(acct, model, target, ops)?;
    prop_assert!(
        acct.pages_to_relocate(SegmentId(victim as u64))
            .unwrap()
            .is_empty()
    );
    Ok(())
}

fn rebuild(
    acct: &mut SegmentAccountant,
    model: &mut Model,
    config: AccountantConfig,
) -> Result<(), TestCaseError> {
    let facts = model.facts();
    let quiet = model.pending.is_empty()
        && model.actives().len() == usize::from(model.newest_active().is_some())
        && !model.segs.iter().any(|s| s.state == SegmentState::Draining);
    let rebuilt = SegmentAccountant::rebuild(config, &facts).unwrap();
    // Rebuilding twice is the identity.
    let again = SegmentAccountant::rebuild(config, &rebuilt.recovered_facts()).unwrap();
    prop_assert_eq!(again.recovered_facts(), rebuilt.recovered_facts());
    if quiet {
        // Nothing the restart cannot know was pending: the rebuilt state is identical.
        let before: Vec<SegmentStats> = acct.all_segment_stats().collect();
        let after: Vec<SegmentStats> = rebuilt.all_segment_stats().collect();
        prop_assert_eq!(before, after);
        prop_assert_eq!(acct.stats(), rebuilt.stats());
        prop_assert_eq!(acct.recovered_facts(), rebuilt.recovered_facts());
    }
    *acct = rebuilt;
    // What a restart changes: recovery found the newer copies durable (pending deaths are
    // final), cleaning is not persisted (Draining is Inactive again), and the newest segments
    // in use count as the most recently handed out.
    model.pending.clear();
    let newest_active = model.newest_active();
    for (s, seg) in model.segs.iter_mut().enumerate() {
        if seg.state == SegmentState::Draining
            || (seg.state == SegmentState::Active && Some(s) != newest_active)
        {
            seg.state = SegmentState::Inactive;
        }
        seg.protected = false;
    }
    model.recent.clear();
    let mut in_use: Vec<usize> = (0..model.segs.len())
        .filter(|&s| model.segs[s].state != SegmentState::Free)
        .collect();
    in_use.sort_by_key(|&s| model.segs[s].base);
    let n = in_use.len();
    for &s in &in_use[n.saturating_sub(model.n_protected)..] {
        model.protect(s);
    }
    model.free_unneeded();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn accountant_matches_model(
        pages_mode in any::<bool>(),
        n_protected in 0u32..4,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mode = if pages_mode { AccountingMode::Pages } else { AccountingMode::PlainLog };
        run(mode, n_protected, ops)?;
    }
}
