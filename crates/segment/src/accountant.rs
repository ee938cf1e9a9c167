//! The accountant proper: segment states, live bytes, safe reuse and cleaning choices.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::batch::{AccountingBatch, PageOp};
use crate::config::{AccountantConfig, AccountingMode};
use crate::error::SegmentError;
use crate::facts::{RecoveredFacts, RecoveredFragment, RecoveredSegment, RecoveredState};
use crate::ids::{Lsn, PageId, SegmentId};
use crate::state::SegmentState;
use crate::stats::{AccountantStats, SegmentStats};

/// A multiplicative hasher for page ids. The default SipHash costs more than the rest of a
/// page change; page ids are dense integers chosen by the page cache, not by an adversary.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; the high bits are well mixed, fold them down for the table index.
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<IdHasher>>;

/// What the accountant knows about one physical segment.
#[derive(Clone, Debug)]
struct SegmentMeta {
    state: SegmentState,
    /// The first LSN of the logical segment held; meaningless (kept at 0) when Free.
    base_lsn: Lsn,
    /// Bytes of current page fragments stored here.
    live_bytes: u64,
    /// Bytes stored here whose page was replaced or freed by a write that is not yet stable.
    /// They keep the segment from being reused until that write's segment is deactivated.
    dying_bytes: u64,
    /// The pages with current fragments here: what cleaning must relocate.
    pages: HashSet<PageId>,
    /// Deaths caused by writes stored in *this* segment, as `(segment holding the old bytes,
    /// bytes)`. They become final when this segment is deactivated (its contents are stable).
    deaths_when_stable: Vec<(SegmentId, u64)>,
    /// Among the last `n_recent_protected` handed out: not reused even when Free.
    protected: bool,
}

impl SegmentMeta {
    fn free() -> SegmentMeta {
        SegmentMeta {
            state: SegmentState::Free,
            base_lsn: Lsn(0),
            live_bytes: 0,
            dying_bytes: 0,
            pages: HashSet::default(),
            deaths_when_stable: Vec::new(),
            protected: false,
        }
    }
}

/// The segment accountant. See the crate documentation for how callers are meant to use it.
///
/// Every operation is O(1) amortized or O(log n) in the number of segments, except those that
/// by nature touch many items (applying a batch is linear in its length, rebuilding in the
/// facts, deactivation in the deaths it makes final, relocation lists in the pages listed).
#[derive(Clone, Debug)]
pub struct SegmentAccountant {
    config: AccountantConfig,
    threshold_live_bytes: u64,
    /// Indexed by segment id; its length is the number of segments in the file.
    segments: Vec<SegmentMeta>,
    /// The segments in use, by base LSN.
    by_base_lsn: BTreeMap<Lsn, SegmentId>,
    /// Free segments that may be handed out (not protected). Lowest id first, so the file's
    /// tail tends to empty out and can be cut off.
    reusable: BTreeSet<SegmentId>,
    /// The last `n_recent_protected` segments handed out, oldest first.
    recent: VecDeque<SegmentId>,
    /// Inactive segments below the cleaning threshold, by (live bytes, base LSN, id): the
    /// first is the emptiest, the oldest among equals.
    candidates: BTreeSet<(u64, Lsn, SegmentId)>,
    /// Each page's current fragments: (segment, bytes), one entry per segment.
    pages: HashMap<PageId, Vec<(SegmentId, u64)>>,
    release_point: Lsn,
    live_bytes_total: u64,
    dying_bytes_total: u64,
    /// Number of segments in each state, indexed by `state_idx`.
    n_by_state: [u64; 4],
    /// Segments whose freeing must be checked at the end of a batch.
    scratch_touched: Vec<SegmentId>,
    /// Reused buffer for a replaced page's old fragments.
    scratch_fragments: Vec<(SegmentId, u64)>,
}

fn state_idx(state: SegmentState) -> usize {
    match state {
        SegmentState::Free => 0,
        SegmentState::Active => 1,
        SegmentState::Inactive => 2,
        SegmentState::Draining => 3,
    }
}

impl SegmentAccountant {
    /// An accountant for an empty data file.
    ///
    /// # Errors
    ///
    /// [`SegmentError::BadConfig`] if a field is out of range.
    pub fn new(config: AccountantConfig) -> Result<SegmentAccountant, SegmentError> {
        config.validate()?;
        Ok(SegmentAccountant {
            threshold_live_bytes: config.threshold_live_bytes(),
            config,
            segments: Vec::new(),
            by_base_lsn: BTreeMap::new(),
            reusable: BTreeSet::new(),
            recent: VecDeque::new(),
            candidates: BTreeSet::new(),
            pages: HashMap::default(),
            release_point: Lsn(0),
            live_bytes_total: 0,
            dying_bytes_total: 0,
            n_by_state: [0; 4],
            scratch_touched: Vec::new(),
            scratch_fragments: Vec::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &AccountantConfig {
        &self.config
    }

    // ----- segments and LSNs -------------------------------------------------------------

    /// The log starts writing the logical segment whose first LSN is `base_lsn`. Returns the
    /// physical segment to write it to, now Active: the lowest-numbered Free segment that is
    /// not among the last `n_recent_protected` handed out, otherwise a new segment at the end
    /// of the file.
    ///
    /// # Errors
    ///
    /// [`SegmentError::MisalignedLsn`] if `base_lsn` is not a multiple of the segment length;
    /// [`SegmentError::DuplicateLsn`] if a segment in use already holds it.
    pub fn next_segment(&mut self, base_lsn: Lsn) -> Result<SegmentId, SegmentError> {
        let geometry = self.config.geometry;
        if !geometry.is_segment_aligned(base_lsn) {
            return Err(SegmentError::MisalignedLsn {
                lsn: base_lsn,
                segment_len_bytes: geometry.segment_len_bytes(),
            });
        }
        if let Some(&held_by) = self.by_base_lsn.get(&base_lsn) {
            return Err(SegmentError::DuplicateLsn { base_lsn, held_by });
        }
        let segment = match self.reusable.pop_first() {
            Some(segment) => segment,
            None => {
                let segment = SegmentId(self.segments.len() as u64);
                self.segments.push(SegmentMeta::free());
                self.n_by_state[state_idx(SegmentState::Free)] += 1;
                segment
            }
        };
        let idx = segment.0 as usize;
        debug_assert_eq!(self.segments[idx].state, SegmentState::Free);
        debug_assert!(
            !self.segments[idx].protected,
            "{segment} handed out while protected"
        );
        debug_assert_eq!(
            self.segments[idx].live_bytes + self.segments[idx].dying_bytes,
            0
        );
        self.segments[idx].base_lsn = base_lsn;
        self.set_state(segment, SegmentState::Active)?;
        self.by_base_lsn.insert(base_lsn, segment);
        self.protect(segment);
        Ok(segment)
    }

    /// Puts `segment` at the back of the recently-handed-out queue, releasing the oldest one
    /// beyond `n_recent_protected`.
    fn protect(&mut self, segment: SegmentId) {
        if self.config.n_recent_protected == 0 {
            return;
        }
        self.segments[segment.0 as usize].protected = true;
        self.recent.push_back(segment);
        while self.recent.len() > self.config.n_recent_protected as usize {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            let meta = &mut self.segments[old.0 as usize];
            meta.protected = false;
            if meta.state == SegmentState::Free {
                self.reusable.insert(old);
            }
        }
    }

    /// The stable LSN has passed the end of this Active segment: everything in it is durable.
    /// Active → Inactive. Deaths caused by writes stored in it become final, which may free
    /// other segments; the segment itself becomes Free at once if it holds nothing needed
    /// (entirely below the release point of a plain log, or no live bytes in a page store).
    ///
    /// # Errors
    ///
    /// [`SegmentError::UnknownSegment`], or [`SegmentError::IllegalTransition`] naming the
    /// segment and its state if it is not Active.
    pub fn deactivate(&mut self, segment: SegmentId) -> Result<(), SegmentError> {
        let idx = self.idx(segment)?;
        let from = self.segments[idx].state;
        if from != SegmentState::Active {
            return Err(SegmentError::IllegalTransition {
                segment,
                from,
                to: SegmentState::Inactive,
            });
        }
        self.set_state(segment, SegmentState::Inactive)?;
        let deaths = std::mem::take(&mut self.segments[idx].deaths_when_stable);
        for &(victim, bytes) in &deaths {
            self.settle_death(victim, bytes);
        }
        for &(victim, _) in &deaths {
            self.free_if_unneeded(victim);
        }
        self.free_if_unneeded(segment);
        // Hand the (empty) allocation back so the next use of this segment starts small.
        let mut deaths = deaths;
        deaths.clear();
        if self.segments[idx].state.is_in_use() {
            self.segments[idx].deaths_when_stable = deaths;
        }
        Ok(())
    }

    /// Plain log: nothing below `lsn` is needed any more. Every Inactive segment whose whole LSN
    /// range lies below `lsn` becomes Free (Active ones become Free when deactivated). A value
    /// lower than an earlier one is ignored. The caller must make the release point itself
    /// durable before calling this.
    ///
    /// For a page store the point is recorded (and reported by [`Self::stats`]) but frees
    /// nothing: page data is freed by replacement, never by position.
    pub fn release_before(&mut self, lsn: Lsn) {
        if lsn <= self.release_point {
            return;
        }
        self.release_point = lsn;
        if self.config.mode != AccountingMode::PlainLog {
            return;
        }
        let len = self.config.geometry.segment_len_bytes();
        let Some(last_base) = lsn.0.checked_sub(len) else {
            return;
        };
        let released: Vec<SegmentId> = self
            .by_base_lsn
            .range(..=Lsn(last_base))
            .map(|(_, &segment)| segment)
            .filter(|s| self.segments[s.0 as usize].state == SegmentState::Inactive)
            .collect();
        for segment in released {
            self.free_if_unneeded(segment);
        }
    }

    /// The plain log's release point (`Lsn(0)` if none).
    pub fn release_point(&self) -> Lsn {
        self.release_point
    }

    /// The physical segment holding the logical segment that contains `lsn`, if that segment is
    /// Active, Inactive or Draining.
    pub fn segment_for_lsn(&self, lsn: Lsn) -> Option<SegmentId> {
        self.by_base_lsn
            .get(&self.config.geometry.segment_base_lsn(lsn))
            .copied()
    }

    /// The number of segments the data file holds (its length is this times the segment
    /// length).
    pub fn n_segments_in_file(&self) -> u64 {
        self.segments.len() as u64
    }

    /// The state of `segment`.
    ///
    /// # Errors
    ///
    /// [`SegmentError::UnknownSegment`] if it lies beyond the end of the file.
    pub fn segment_state(&self, segment: SegmentId) -> Result<SegmentState, SegmentError> {
        Ok(self.segments[self.idx(segment)?].state)
    }

    // ----- pages -------------------------------------------------------------------------

    /// Applies the accounting of one IO buffer's writes, all stored in `batch.segment()`.
    ///
    /// Fragments linked or written there become live at once. Fragments made dead (replaced or
    /// freed) stop counting as live but keep their segment from reuse until `batch.segment()`
    /// is deactivated; if it already is Inactive (stable), they are final at once.
    ///
    /// The batch is checked before anything changes, so an error leaves the accountant as it
    /// was.
    ///
    /// # Errors
    ///
    /// [`SegmentError::PagesNotTracked`] for a plain log; [`SegmentError::UnknownSegment`];
    /// [`SegmentError::NotWritable`] if the segment is Free or Draining;
    /// [`SegmentError::UnknownPage`] if a page is freed that has no live fragments.
    pub fn apply(&mut self, batch: &AccountingBatch) -> Result<(), SegmentError> {
        if self.config.mode != AccountingMode::Pages {
            return Err(SegmentError::PagesNotTracked);
        }
        let segment = batch.segment();
        let idx = self.idx(segment)?;
        let state = self.segments[idx].state;
        if !matches!(state, SegmentState::Active | SegmentState::Inactive) {
            return Err(SegmentError::NotWritable { segment, state });
        }
        self.check_frees(batch)?;
        for op in batch.ops() {
            match *op {
                PageOp::Link { page, len_bytes } => self.link_fragment(page, segment, len_bytes),
                PageOp::Replace { page, len_bytes } => {
                    // Swap the old fragments out through a scratch vector so neither the page's
                    // vector nor the scratch one is reallocated on the hot path.
                    let mut old = std::mem::take(&mut self.scratch_fragments);
                    if let Some(fragments) = self.pages.get_mut(&page) {
                        old.append(fragments);
                    }
                    self.link_fragment(page, segment, len_bytes);
                    for &(holder, bytes) in &old {
                        if holder != segment {
                            self.segments[holder.0 as usize].pages.remove(&page);
                        }
                        self.kill(holder, bytes, segment);
                    }
                    old.clear();
                    self.scratch_fragments = old;
                }
                PageOp::Free { page } => {
                    let old = self.pages.remove(&page).unwrap_or_default();
                    for (holder, bytes) in old {
                        self.segments[holder.0 as usize].pages.remove(&page);
                        self.kill(holder, bytes, segment);
                    }
                }
            }
        }
        // Freeing waits for the end of the batch: a later change in the same batch may store
        // new live bytes in a segment an earlier one emptied.
        let mut touched = std::mem::take(&mut self.scratch_touched);
        for &s in &touched {
            self.free_if_unneeded(s);
        }
        touched.clear();
        self.scratch_touched = touched;
        Ok(())
    }

    /// Refuses a batch that frees a page with no live fragments at that point of the batch.
    fn check_frees(&self, batch: &AccountingBatch) -> Result<(), SegmentError> {
        if !batch
            .ops()
            .iter()
            .any(|op| matches!(op, PageOp::Free { .. }))
        {
            return Ok(());
        }
        let mut exists_in_batch: HashMap<PageId, bool> = HashMap::default();
        for op in batch.ops() {
            match *op {
                PageOp::Link { page, .. } | PageOp::Replace { page, .. } => {
                    exists_in_batch.insert(page, true);
                }
                PageOp::Free { page } => {
                    let exists = exists_in_batch
                        .get(&page)
                        .copied()
                        .unwrap_or_else(|| self.pages.contains_key(&page));
                    if !exists {
                        return Err(SegmentError::UnknownPage { page });
                    }
                    exists_in_batch.insert(page, false);
                }
            }
        }
        Ok(())
    }

    /// Adds `len_bytes` of `page` as live in `segment`.
    fn link_fragment(&mut self, page: PageId, segment: SegmentId, len_bytes: u64) {
        let fragments = self.pages.entry(page).or_default();
        match fragments.iter_mut().find(|(s, _)| *s == segment) {
            Some((_, bytes)) => *bytes += len_bytes,
            None => fragments.push((segment, len_bytes)),
        }
        let idx = segment.0 as usize;
        self.segments[idx].pages.insert(page);
        self.update_live(segment, |m| m.live_bytes += len_bytes);
        self.live_bytes_total += len_bytes;
    }

    /// `bytes` in `holder` died because of a write stored in `cause`.
    fn kill(&mut self, holder: SegmentId, bytes: u64, cause: SegmentId) {
        self.update_live(holder, |m| {
            debug_assert!(
                m.live_bytes >= bytes,
                "live bytes of a segment went negative"
            );
            m.live_bytes -= bytes;
            m.dying_bytes += bytes;
        });
        self.live_bytes_total -= bytes;
        self.dying_bytes_total += bytes;
        let cause_meta = &mut self.segments[cause.0 as usize];
        if cause_meta.state == SegmentState::Active {
            cause_meta.deaths_when_stable.push((holder, bytes));
        } else {
            // The write that killed them is already stable.
            self.settle_death(holder, bytes);
            self.scratch_touched.push(holder);
        }
    }

    /// The replacement of `bytes` dying bytes in `holder` is stable: they are gone.
    fn settle_death(&mut self, holder: SegmentId, bytes: u64) {
        let meta = &mut self.segments[holder.0 as usize];
        debug_assert!(
            meta.dying_bytes >= bytes,
            "{holder}: dying bytes went negative"
        );
        meta.dying_bytes -= bytes;
        self.dying_bytes_total -= bytes;
    }

    /// Changes a segment's live bytes, keeping the cleaning-candidate index in step.
    fn update_live(&mut self, segment: SegmentId, change: impl FnOnce(&mut SegmentMeta)) {
        self.unindex(segment);
        change(&mut self.segments[segment.0 as usize]);
        self.index(segment);
    }

    fn candidate_key(&self, segment: SegmentId) -> (u64, Lsn, SegmentId) {
        let meta = &self.segments[segment.0 as usize];
        (meta.live_bytes, meta.base_lsn, segment)
    }

    /// Whether `segment` belongs in the candidate index (the index holds exactly these).
    fn is_candidate(&self, segment: SegmentId) -> bool {
        let meta = &self.segments[segment.0 as usize];
        self.config.mode == AccountingMode::Pages
            && meta.state == SegmentState::Inactive
            && meta.live_bytes < self.threshold_live_bytes
    }

    fn unindex(&mut self, segment: SegmentId) {
        // Skipping the tree search for non-candidates (most changes land in Active segments)
        // is what keeps applying a batch cheap.
        if self.is_candidate(segment) {
            let key = self.candidate_key(segment);
            self.candidates.remove(&key);
        }
    }

    fn index(&mut self, segment: SegmentId) {
        if self.is_candidate(segment) {
            let key = self.candidate_key(segment);
            self.candidates.insert(key);
        }
    }

    /// The segments holding `page`'s current fragments, with the bytes in each, or `None` if
    /// the page has none.
    pub fn page_fragments(&self, page: PageId) -> Option<&[(SegmentId, u64)]> {
        self.pages.get(&page).map(Vec::as_slice)
    }

    /// The number of pages with live fragments.
    pub fn n_pages(&self) -> u64 {
        self.pages.len() as u64
    }

    // ----- cleaning ----------------------------------------------------------------------

    /// Whether the cleaner should free a segment now: the segments in use take more than
    /// `target_space_amplification` times the live bytes, and a candidate exists. Always
    /// `false` for a plain log.
    pub fn cleaning_wanted(&self) -> bool {
        if self.config.mode != AccountingMode::Pages || self.candidates.is_empty() {
            return false;
        }
        let in_use_bytes = self.in_use_segments() * self.config.geometry.segment_len_bytes();
        in_use_bytes as f64 > self.config.target_space_amplification * self.live_bytes_total as f64
    }

    /// The number of cleaning candidates: Inactive segments below the live-fraction threshold.
    pub fn n_cleaning_candidates(&self) -> u64 {
        self.candidates.len() as u64
    }

    /// Chooses the candidate with the fewest live bytes (the oldest among equals), marks it
    /// Draining and returns it; `None` if there is no candidate (always, for a plain log).
    ///
    /// The caller then relocates every page [`Self::pages_to_relocate`] lists by writing a new
    /// copy (a [`PageOp::Replace`]); the segment becomes Free once those copies are stable.
    pub fn pick_cleaning_victim(&mut self) -> Option<SegmentId> {
        let &(_, _, segment) = self.candidates.first()?;
        match self.set_state(segment, SegmentState::Draining) {
            Ok(()) => Some(segment),
            Err(error) => {
                debug_assert!(false, "a cleaning candidate was not Inactive: {error}");
                None
            }
        }
    }

    /// Marks a chosen Inactive segment Draining (for callers with their own policy).
    ///
    /// # Errors
    ///
    /// [`SegmentError::PagesNotTracked`] for a plain log, [`SegmentError::UnknownSegment`], or
    /// [`SegmentError::IllegalTransition`] if it is not Inactive.
    pub fn mark_draining(&mut self, segment: SegmentId) -> Result<(), SegmentError> {
        if self.config.mode != AccountingMode::Pages {
            return Err(SegmentError::PagesNotTracked);
        }
        self.idx(segment)?;
        self.set_state(segment, SegmentState::Draining)
    }

    /// The pages with current fragments in `segment`, in ascending order: exactly what must be
    /// rewritten elsewhere for the segment to become Free.
    ///
    /// # Errors
    ///
    /// [`SegmentError::PagesNotTracked`] for a plain log, [`SegmentError::UnknownSegment`].
    pub fn pages_to_relocate(&self, segment: SegmentId) -> Result<Vec<PageId>, SegmentError> {
        if self.config.mode != AccountingMode::Pages {
            return Err(SegmentError::PagesNotTracked);
        }
        let mut pages: Vec<PageId> = self.segments[self.idx(segment)?]
            .pages
            .iter()
            .copied()
            .collect();
        pages.sort_unstable();
        Ok(pages)
    }

    // ----- the end of the file -----------------------------------------------------------

    /// If Free segments that are not protected end the file, the number of segments the file
    /// can be cut down to. Cut it with [`Self::truncate_file`] *before* shrinking the file, so
    /// the segments are never handed out in between.
    pub fn truncatable_to(&self) -> Option<u64> {
        let keep = self
            .segments
            .iter()
            .rposition(|m| m.state != SegmentState::Free || m.protected)
            .map_or(0, |last_kept| last_kept + 1);
        (keep < self.segments.len()).then_some(keep as u64)
    }

    /// Forgets the segments at and beyond `new_n_segments`: the caller cuts the file there.
    ///
    /// # Errors
    ///
    /// [`SegmentError::CannotTruncate`] naming the first segment that is in use or protected;
    /// [`SegmentError::UnknownSegment`] if `new_n_segments` exceeds the file.
    pub fn truncate_file(&mut self, new_n_segments: u64) -> Result<(), SegmentError> {
        let n_segments_in_file = self.n_segments_in_file();
        if new_n_segments > n_segments_in_file {
            return Err(SegmentError::UnknownSegment {
                segment: SegmentId(new_n_segments),
                n_segments_in_file,
            });
        }
        for s in new_n_segments..n_segments_in_file {
            let meta = &self.segments[s as usize];
            if meta.state != SegmentState::Free || meta.protected {
                return Err(SegmentError::CannotTruncate {
                    new_n_segments,
                    segment: SegmentId(s),
                    state: meta.state,
                    protected: meta.protected,
                });
            }
        }
        for s in new_n_segments..n_segments_in_file {
            self.reusable.remove(&SegmentId(s));
        }
        self.n_by_state[state_idx(SegmentState::Free)] -= n_segments_in_file - new_n_segments;
        self.segments.truncate(new_n_segments as usize);
        Ok(())
    }

    // ----- state changes -----------------------------------------------------------------

    fn idx(&self, segment: SegmentId) -> Result<usize, SegmentError> {
        if segment.0 < self.n_segments_in_file() {
            Ok(segment.0 as usize)
        } else {
            Err(SegmentError::UnknownSegment {
                segment,
                n_segments_in_file: self.n_segments_in_file(),
            })
        }
    }

    /// The one place a segment's state changes.
    fn set_state(&mut self, segment: SegmentId, to: SegmentState) -> Result<(), SegmentError> {
        let from = self.segments[segment.0 as usize].state;
        if !from.can_become(to) {
            return Err(SegmentError::IllegalTransition { segment, from, to });
        }
        self.unindex(segment);
        self.segments[segment.0 as usize].state = to;
        self.n_by_state[state_idx(from)] -= 1;
        self.n_by_state[state_idx(to)] += 1;
        self.index(segment);
        Ok(())
    }

    /// Frees `segment` if it is stable and holds nothing needed.
    fn free_if_unneeded(&mut self, segment: SegmentId) {
        let meta = &self.segments[segment.0 as usize];
        let unneeded = match self.config.mode {
            AccountingMode::PlainLog => {
                let end_lsn = meta
                    .base_lsn
                    .0
                    .saturating_add(self.config.geometry.segment_len_bytes());
                meta.state == SegmentState::Inactive && end_lsn <= self.release_point.0
            }
            AccountingMode::Pages => {
                matches!(meta.state, SegmentState::Inactive | SegmentState::Draining)
                    && meta.live_bytes == 0
                    && meta.dying_bytes == 0
            }
        };
        if !unneeded {
            return;
        }
        debug_assert!(
            meta.pages.is_empty(),
            "{segment}: freed while listing pages"
        );
        debug_assert!(
            meta.deaths_when_stable.is_empty(),
            "{segment}: freed with deaths pending"
        );
        let base_lsn = meta.base_lsn;
        let protected = meta.protected;
        if let Err(error) = self.set_state(segment, SegmentState::Free) {
            debug_assert!(false, "freeing: {error}");
            return;
        }
        self.by_base_lsn.remove(&base_lsn);
        let meta = &mut self.segments[segment.0 as usize];
        meta.base_lsn = Lsn(0);
        // Keep the (empty) allocations: the segment will be reused and refilled.
        meta.pages.clear();
        meta.deaths_when_stable.clear();
        if !protected {
            self.reusable.insert(segment);
        }
    }

    fn in_use_segments(&self) -> u64 {
        self.n_segments_in_file() - self.n_by_state[state_idx(SegmentState::Free)]
    }

    // ----- stats -------------------------------------------------------------------------

    /// Whole-file figures, in O(1).
    pub fn stats(&self) -> AccountantStats {
        let len = self.config.geometry.segment_len_bytes();
        AccountantStats {
            mode: self.config.mode,
            n_segments_in_file: self.n_segments_in_file(),
            n_free: self.n_by_state[state_idx(SegmentState::Free)],
            n_active: self.n_by_state[state_idx(SegmentState::Active)],
            n_inactive: self.n_by_state[state_idx(SegmentState::Inactive)],
            n_draining: self.n_by_state[state_idx(SegmentState::Draining)],
            live_bytes: self.live_bytes_total,
            dying_bytes: self.dying_bytes_total,
            file_bytes: self.n_segments_in_file() * len,
            in_use_bytes: self.in_use_segments() * len,
            release_point: self.release_point,
        }
    }

    /// One segment's figures.
    ///
    /// # Errors
    ///
    /// [`SegmentError::UnknownSegment`] if it lies beyond the end of the file.
    pub fn segment_stats(&self, segment: SegmentId) -> Result<SegmentStats, SegmentError> {
        let meta = &self.segments[self.idx(segment)?];
        Ok(SegmentStats {
            segment,
            state: meta.state,
            base_lsn: meta.state.is_in_use().then_some(meta.base_lsn),
            live_bytes: meta.live_bytes,
            dying_bytes: meta.dying_bytes,
        })
    }

    /// Every segment's figures, in id order.
    pub fn all_segment_stats(&self) -> impl Iterator<Item = SegmentStats> + '_ {
        (0..self.n_segments_in_file()).filter_map(|s| self.segment_stats(SegmentId(s)).ok())
    }

    // ----- restart -----------------------------------------------------------------------

    /// What recovery would find if the process stopped now with everything written durable:
    /// the segments in use, the current page fragments and the release point. Only the segment
    /// with the newest base LSN can be reported Active (the log has moved past the others, so
    /// recovery finds them fully written), and Draining is reported as Inactive (cleaning is not persisted).
    /// Sorted by segment, and fragments by page then segment.
    pub fn recovered_facts(&self) -> RecoveredFacts {
        let newest_active = self
            .by_base_lsn
            .values()
            .next_back()
            .filter(|s| self.segments[s.0 as usize].state == SegmentState::Active)
            .copied();
        let segments = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state.is_in_use())
            .map(|(s, m)| RecoveredSegment {
                segment: SegmentId(s as u64),
                base_lsn: m.base_lsn,
                state: if Some(SegmentId(s as u64)) == newest_active {
                    RecoveredState::Active
                } else {
                    RecoveredState::Inactive
                },
            })
            .collect();
        let mut fragments: Vec<RecoveredFragment> = self
            .pages
            .iter()
            .flat_map(|(&page, fragments)| {
                fragments
                    .iter()
                    .map(move |&(segment, len_bytes)| RecoveredFragment {
                        page,
                        segment,
                        len_bytes,
                    })
            })
            .collect();
        fragments.sort_unstable();
        RecoveredFacts {
            n_segments_in_file: self.n_segments_in_file(),
            segments,
            fragments,
            release_point: self.release_point,
        }
    }

    /// Rebuilds the state a running process had from what recovery found.
    ///
    /// Listed segments get their base LSN and state; the others are Free. Fragments make their
    /// segments' live bytes. Then every Inactive segment that holds nothing needed is freed
    /// (below the release point of a plain log; no live fragment in a page store, since the
    /// newer copies recovery found are durable). The listed segments with the highest base
    /// LSNs count as the most recently handed out. The end of the file is
    /// `facts.n_segments_in_file`, so writing continues past it, never over data.
    ///
    /// # Errors
    ///
    /// [`SegmentError::BadConfig`]; [`SegmentError::MisalignedLsn`] and
    /// [`SegmentError::DuplicateLsn`] for bad base LSNs; [`SegmentError::UnknownSegment`] for a
    /// segment beyond the file; [`SegmentError::InconsistentFacts`] for a segment listed twice,
    /// more than one Active segment or one that is not the newest, fragments in a segment not
    /// listed, or fragments given for a plain log.
    pub fn rebuild(
        config: AccountantConfig,
        facts: &RecoveredFacts,
    ) -> Result<SegmentAccountant, SegmentError> {
        let mut acct = SegmentAccountant::new(config)?;
        let n_segments_in_file = facts.n_segments_in_file;
        let geometry = config.geometry;
        let inconsistent = |reason: String| Err(SegmentError::InconsistentFacts { reason });

        // Validate everything before building anything.
        let mut by_segment: BTreeMap<SegmentId, &RecoveredSegment> = BTreeMap::new();
        let mut by_base: BTreeMap<Lsn, SegmentId> = BTreeMap::new();
        for rs in &facts.segments {
            if rs.segment.0 >= n_segments_in_file {
                return Err(SegmentError::UnknownSegment {
                    segment: rs.segment,
                    n_segments_in_file,
                });
            }
            if !geometry.is_segment_aligned(rs.base_lsn) {
                return Err(SegmentError::MisalignedLsn {
                    lsn: rs.base_lsn,
                    segment_len_bytes: geometry.segment_len_bytes(),
                });
            }
            if by_segment.insert(rs.segment, rs).is_some() {
                return inconsistent(format!("{} is listed twice", rs.segment));
            }
            if let Some(held_by) = by_base.insert(rs.base_lsn, rs.segment) {
                return Err(SegmentError::DuplicateLsn {
                    base_lsn: rs.base_lsn,
                    held_by,
                });
            }
        }
        let actives: Vec<&RecoveredSegment> = facts
            .segments
            .iter()
            .filter(|rs| rs.state == RecoveredState::Active)
            .collect();
        if actives.len() > 1 {
            return inconsistent(format!(
                "{} segments are Active; at most one may be",
                actives.len()
            ));
        }
        if let (Some(active), Some((&newest, _))) = (actives.first(), by_base.last_key_value())
            && active.base_lsn != newest
        {
            return inconsistent(format!(
                "the Active {} holds base {} but {} is newer",
                active.segment, active.base_lsn, newest
            ));
        }
        if config.mode == AccountingMode::PlainLog && !facts.fragments.is_empty() {
            return inconsistent("page fragments were given for a plain log".to_string());
        }
        for fragment in &facts.fragments {
            if !by_segment.contains_key(&fragment.segment) {
                return inconsistent(format!(
                    "{} has a fragment in {}, which is not in use",
                    fragment.page, fragment.segment
                ));
            }
        }

        // Build.
        let n_segments =
            usize::try_from(n_segments_in_file).map_err(|_| SegmentError::InconsistentFacts {
                reason: format!("{n_segments_in_file} segments do not fit in memory"),
            })?;
        acct.segments = vec![SegmentMeta::free(); n_segments];
        acct.n_by_state[state_idx(SegmentState::Free)] = n_segments_in_file;
        for rs in by_segment.values() {
            let to = match rs.state {
                RecoveredState::Active => SegmentState::Active,
                RecoveredState::Inactive => SegmentState::Inactive,
            };
            acct.segments[rs.segment.0 as usize].base_lsn = rs.base_lsn;
            acct.set_state(rs.segment, SegmentState::Active)?;
            if to == SegmentState::Inactive {
                acct.set_state(rs.segment, SegmentState::Inactive)?;
            }
            acct.by_base_lsn.insert(rs.base_lsn, rs.segment);
        }
        for fragment in &facts.fragments {
            acct.link_fragment(fragment.page, fragment.segment, fragment.len_bytes);
        }
        acct.release_point = facts.release_point;
        // The newest segments in use count as the most recently handed out.
        let n_protected = config.n_recent_protected as usize;
        let newest: Vec<SegmentId> = by_base
            .values()
            .rev()
            .take(n_protected)
            .rev()
            .copied()
            .collect();
        for segment in newest {
            acct.protect(segment);
        }
        for rs in by_segment.values() {
            acct.free_if_unneeded(rs.segment);
        }
        for s in 0..n_segments_in_file {
            let meta = &acct.segments[s as usize];
            if meta.state == SegmentState::Free && !meta.protected {
                acct.reusable.insert(SegmentId(s));
            }
        }
        Ok(acct)
    }

    // ----- self-check --------------------------------------------------------------------

    /// Checks every internal invariant by recomputing all derived data, panicking with a
    /// description on the first violation. Linear in the state: for tests and debugging.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut live = vec![0u64; self.segments.len()];
        let mut page_sets: Vec<HashSet<PageId>> = vec![HashSet::default(); self.segments.len()];
        for (&page, fragments) in &self.pages {
            assert!(!fragments.is_empty(), "{page} is listed with no fragments");
            for &(s, bytes) in fragments {
                live[s.0 as usize] += bytes;
                assert!(
                    page_sets[s.0 as usize].insert(page),
                    "{page} lists {s} twice"
                );
            }
        }
        let mut dying = vec![0u64; self.segments.len()];
        let mut n_by_state = [0u64; 4];
        for (s, meta) in self.segments.iter().enumerate() {
            n_by_state[state_idx(meta.state)] += 1;
            for &(victim, bytes) in &meta.deaths_when_stable {
                assert_eq!(
                    meta.state,
                    SegmentState::Active,
                    "segment {s} is not Active but has deaths pending"
                );
                dying[victim.0 as usize] += bytes;
            }
        }
        let mut n_protected = 0;
        for (s, meta) in self.segments.iter().enumerate() {
            let id = SegmentId(s as u64);
            assert_eq!(meta.live_bytes, live[s], "{id}: live bytes");
            assert_eq!(meta.dying_bytes, dying[s], "{id}: dying bytes");
            assert_eq!(meta.pages, page_sets[s], "{id}: page set");
            n_protected += u64::from(meta.protected);
            assert_eq!(
                self.reusable.contains(&id),
                meta.state == SegmentState::Free && !meta.protected,
                "{id}: reusable set"
            );
            if meta.state == SegmentState::Free {
                assert_eq!(
                    meta.live_bytes + meta.dying_bytes,
                    0,
                    "{id}: Free but holds bytes"
                );
            } else {
                assert_eq!(
                    self.by_base_lsn.get(&meta.base_lsn),
                    Some(&id),
                    "{id}: base LSN index"
                );
            }
            let indexed = self.candidates.contains(&self.candidate_key(id));
            assert_eq!(indexed, self.is_candidate(id), "{id}: candidate index");
        }
        assert_eq!(
            self.candidates
                .iter()
                .filter(|c| self.candidate_key(c.2) == **c)
                .count(),
            self.candidates.len()
        );
        assert_eq!(
            n_protected,
            self.recent.len() as u64,
            "protected flags vs queue"
        );
        assert!(self.recent.len() <= self.config.n_recent_protected as usize);
        assert_eq!(
            self.by_base_lsn.len() as u64,
            self.in_use_segments(),
            "base LSN index size"
        );
        assert_eq!(self.n_by_state, n_by_state, "state counters");
        assert_eq!(
            self.live_bytes_total,
            live.iter().sum::<u64>(),
            "live total"
        );
        assert_eq!(
            self.dying_bytes_total,
            dying.iter().sum::<u64>(),
            "dying total"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Geometry;

    fn paged() -> SegmentAccountant {
        SegmentAccountant::new(AccountantConfig::new(Geometry::new(256).unwrap(), 2).with_pages())
            .unwrap()
    }

    #[test]
    fn illegal_transitions_name_segment_and_states() {
        let mut acct = paged();
        let s = acct.next_segment(Lsn(0)).unwrap();
        acct.deactivate(s).unwrap_or_else(|e| panic!("{e}"));
        // Empty in a page store: Free at once; deactivating again is illegal.
        let err = acct.deactivate(s).unwrap_err();
        assert_eq!(
            err,
            SegmentError::IllegalTransition {
                segment: s,
                from: SegmentState::Free,
                to: SegmentState::Inactive
            }
        );
        assert_eq!(
            err.to_string(),
            "segment 0: illegal transition from Free to Inactive"
        );
        assert_eq!(
            acct.mark_draining(s),
            Err(SegmentError::IllegalTransition {
                segment: s,
                from: SegmentState::Free,
                to: SegmentState::Draining
            })
        );
        assert!(matches!(
            acct.deactivate(SegmentId(5)),
            Err(SegmentError::UnknownSegment { .. })
        ));
    }

    #[test]
    fn a_refused_batch_changes_nothing() {
        let mut acct = paged();
        let s = acct.next_segment(Lsn(0)).unwrap();
        let mut b = AccountingBatch::new(s);
        b.replace(PageId(1), 10);
        b.free(PageId(1));
        b.free(PageId(1));
        assert_eq!(
            acct.apply(&b),
            Err(SegmentError::UnknownPage { page: PageId(1) })
        );
        assert_eq!(acct.stats().live_bytes, 0);
        assert_eq!(acct.n_pages(), 0);
        acct.check_invariants();
    }

    #[test]
    fn plain_log_refuses_page_changes_and_cleaning() {
        let mut acct =
            SegmentAccountant::new(AccountantConfig::new(Geometry::new(256).unwrap(), 0)).unwrap();
        let s = acct.next_segment(Lsn(0)).unwrap();
        assert_eq!(
            acct.apply(&AccountingBatch::new(s)),
            Err(SegmentError::PagesNotTracked)
        );
        assert_eq!(acct.pick_cleaning_victim(), None);
        assert!(!acct.cleaning_wanted());
        // Released while Active: freed only when deactivated.
        acct.release_before(Lsn(256));
        assert_eq!(acct.segment_state(s).unwrap(), SegmentState::Active);
        acct.deactivate(s).unwrap();
        assert_eq!(acct.segment_state(s).unwrap(), SegmentState::Free);
        assert_eq!(acct.truncatable_to(), Some(0));
        acct.truncate_file(0).unwrap();
        assert_eq!(acct.n_segments_in_file(), 0);
    }

    #[test]
    fn rebuild_refuses_inconsistent_facts() {
        let config = AccountantConfig::new(Geometry::new(256).unwrap(), 0);
        let seg = |s, b, state| RecoveredSegment {
            segment: SegmentId(s),
            base_lsn: Lsn(b),
            state,
        };
        let facts = |segments| RecoveredFacts {
            n_segments_in_file: 4,
            segments,
            fragments: Vec::new(),
            release_point: Lsn(0),
        };
        let bad = [
            facts(vec![seg(4, 0, RecoveredState::Inactive)]),
            facts(vec![seg(0, 1, RecoveredState::Inactive)]),
            facts(vec![
                seg(0, 0, RecoveredState::Inactive),
                seg(1, 0, RecoveredState::Inactive),
            ]),
            facts(vec![
                seg(0, 0, RecoveredState::Inactive),
                seg(0, 256, RecoveredState::Inactive),
            ]),
            facts(vec![
                seg(0, 0, RecoveredState::Active),
                seg(1, 256, RecoveredState::Active),
            ]),
            facts(vec![
                seg(0, 256, RecoveredState::Active),
                seg(1, 512, RecoveredState::Inactive),
            ]),
        ];
        for f in &bad {
            assert!(SegmentAccountant::rebuild(config, f).is_err(), "{f:?}");
        }
        let mut with_fragment = facts(vec![seg(0, 0, RecoveredState::Active)]);
        with_fragment.fragments.push(RecoveredFragment {
            page: PageId(1),
            segment: SegmentId(0),
            len_bytes: 5,
        });
        assert!(matches!(
            SegmentAccountant::rebuild(config, &with_fragment),
            Err(SegmentError::InconsistentFacts { .. })
        ));
        with_fragment.fragments[0].segment = SegmentId(2);
        assert!(matches!(
            SegmentAccountant::rebuild(config.with_pages(), &with_fragment),
            Err(SegmentError::InconsistentFacts { .. })
        ));
    }
}
