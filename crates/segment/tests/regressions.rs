//! Regression tests for the original accountant's defects, in their segment-level form
//! (weak points 1 and 16 of `known-weak-points.md`).

use segment::{
    AccountantConfig, AccountingBatch, Geometry, Lsn, PageId, RecoveredFacts, RecoveredSegment,
    RecoveredState, SegmentAccountant, SegmentId, SegmentState,
};

const LEN: u64 = 1024;

fn geometry() -> Geometry {
    Geometry::new(LEN).unwrap()
}

/// Weak point 1. A plain log reopened after a restart, once it wrote past the recovered last
/// segment, was handed the file's first segment again and overwrote the oldest data: the
/// accountant's end of file was never rebuilt for a log without pages, so it believed the file
/// empty. Here a plain log fills six segments, restarts, and keeps writing: every segment it is
/// handed must be new (past the recovered end of file) or released, never one holding data.
#[test]
fn plain_log_after_restart_never_reuses_segments_holding_data() {
    let config = AccountantConfig::new(geometry(), 2);
    let mut acct = SegmentAccountant::new(config).unwrap();
    for k in 0..6 {
        let s = acct.next_segment(Lsn(k * LEN)).unwrap();
        assert_eq!(s, SegmentId(k));
        if k < 5 {
            acct.deactivate(s).unwrap();
        }
    }
    // What recovery finds: six segments in use, the last one still being written.
    let facts = acct.recovered_facts();
    assert_eq!(facts.n_segments_in_file, 6);
    assert_eq!(facts.segments.len(), 6);
    assert_eq!(facts.segments[5].state, RecoveredState::Active);

    let mut reopened = SegmentAccountant::rebuild(config, &facts).unwrap();
    assert_eq!(reopened.n_segments_in_file(), 6);
    for k in 0..6 {
        assert_eq!(
            reopened.segment_for_lsn(Lsn(k * LEN + 1)),
            Some(SegmentId(k))
        );
    }
    reopened.deactivate(SegmentId(5)).unwrap();
    // Writing past the recovered last segment grows the file; it does not wrap to segment 0.
    for k in 6..10 {
        let s = reopened.next_segment(Lsn(k * LEN)).unwrap();
        assert_eq!(
            s,
            SegmentId(k),
            "logical segment {k} must not overwrite older data"
        );
        reopened.deactivate(s).unwrap();
    }
    // Only released segments come back, and only those below the release point.
    reopened.release_before(Lsn(2 * LEN));
    assert_eq!(
        reopened.segment_state(SegmentId(0)).unwrap(),
        SegmentState::Free
    );
    assert_eq!(
        reopened.segment_state(SegmentId(1)).unwrap(),
        SegmentState::Free
    );
    assert_eq!(
        reopened.segment_state(SegmentId(2)).unwrap(),
        SegmentState::Inactive
    );
    assert_eq!(reopened.next_segment(Lsn(10 * LEN)).unwrap(), SegmentId(0));
    assert_eq!(reopened.next_segment(Lsn(11 * LEN)).unwrap(), SegmentId(1));
    assert_eq!(reopened.next_segment(Lsn(12 * LEN)).unwrap(), SegmentId(10));
    reopened.check_invariants();
}

/// Weak point 1, second form: the release point and the free segments in the middle of the
/// file survive the restart, and the recovered end of file is honoured even when the segments
/// in use are not the last ones.
#[test]
fn rebuild_knows_the_end_of_file_even_when_its_tail_is_free() {
    let config = AccountantConfig::new(geometry(), 1);
    let facts = RecoveredFacts {
        n_segments_in_file: 8,
        segments: vec![
            RecoveredSegment {
                segment: SegmentId(3),
                base_lsn: Lsn(20 * LEN),
                state: RecoveredState::Inactive,
            },
            RecoveredSegment {
                segment: SegmentId(1),
                base_lsn: Lsn(21 * LEN),
                state: RecoveredState::Active,
            },
            // Fully below the release point: recovery found it, but nobody needs it.
            RecoveredSegment {
                segment: SegmentId(6),
                base_lsn: Lsn(19 * LEN),
                state: RecoveredState::Inactive,
            },
        ],
        fragments: Vec::new(),
        release_point: Lsn(20 * LEN),
    };
    let mut acct = SegmentAccountant::rebuild(config, &facts).unwrap();
    assert_eq!(
        acct.segment_state(SegmentId(6)).unwrap(),
        SegmentState::Free
    );
    let mut handed_out = Vec::new();
    for k in 22..30 {
        let s = acct.next_segment(Lsn(k * LEN)).unwrap();
        handed_out.push(s.0);
        acct.deactivate(s).unwrap();
    }
    assert!(
        !handed_out.contains(&1) && !handed_out.contains(&3),
        "{handed_out:?}"
    );
    assert_eq!(&handed_out[..6], &[0, 2, 4, 5, 6, 7]);
    assert_eq!(&handed_out[6..], &[8, 9]);
    acct.check_invariants();
}

fn paged() -> SegmentAccountant {
    SegmentAccountant::new(AccountantConfig::new(geometry(), 0).with_pages()).unwrap()
}

/// Weak point 16. Cleaning counted live *pages*, not bytes: a segment holding one large live
/// page looked emptier than one holding ten small ones, so it was cleaned first, copying far
/// more. Victims are chosen by live bytes.
#[test]
fn cleaning_chooses_by_live_bytes_not_live_pages() {
    let mut acct = paged();
    // Segment 0: one large live page (500 B) and dead small ones.
    let s0 = acct.next_segment(Lsn(0)).unwrap();
    let mut b = AccountingBatch::new(s0);
    b.replace(PageId(0), 500);
    for p in 1..=10 {
        b.replace(PageId(p), 40);
    }
    acct.apply(&b).unwrap();
    // Segment 1: ten small live pages (20 B each), the dead ones of segment 0 overwritten here.
    let s1 = acct.next_segment(Lsn(LEN)).unwrap();
    let mut b = AccountingBatch::new(s1);
    for p in 1..=10 {
        b.replace(PageId(p), 20);
    }
    acct.apply(&b).unwrap();
    acct.deactivate(s0).unwrap();
    acct.deactivate(s1).unwrap();
    assert_eq!(acct.segment_stats(s0).unwrap().live_bytes, 500);
    assert_eq!(acct.segment_stats(s1).unwrap().live_bytes, 200);
    // By pages, s0 (1 page) looks emptier than s1 (10 pages); by bytes s1 is the cheaper victim.
    assert_eq!(acct.n_cleaning_candidates(), 2);
    assert_eq!(acct.pick_cleaning_victim(), Some(s1));
    assert_eq!(acct.pick_cleaning_victim(), Some(s0));
    assert_eq!(acct.pick_cleaning_victim(), None);
}

/// Weak point 16, continued: victims were picked round-robin and at most one page moved per
/// user write, so cleaning fell behind. One answer lists every page to move, relocating them
/// frees the victim as soon as the copies are stable, and the emptiest segment goes first.
#[test]
fn one_victim_is_freed_by_relocating_everything_it_lists() {
    let mut acct = paged();
    let mut segments = Vec::new();
    for k in 0..4u64 {
        let s = acct.next_segment(Lsn(k * LEN)).unwrap();
        let mut b = AccountingBatch::new(s);
        for p in 0..8 {
            b.replace(PageId(k * 8 + p), 100);
        }
        acct.apply(&b).unwrap();
        acct.deactivate(s).unwrap();
        segments.push(s);
    }
    // Overwrite 6 pages of segment 2 and 3 of segment 1: segment 2 is the emptiest, not the next
    // in round-robin order (segment 0).
    let s4 = acct.next_segment(Lsn(4 * LEN)).unwrap();
    let mut b = AccountingBatch::new(s4);
    for p in (16..22).chain(8..11) {
        b.replace(PageId(p), 100);
    }
    acct.apply(&b).unwrap();
    // Not yet stable: segment 2's overwritten bytes still block reuse.
    assert_eq!(acct.segment_stats(segments[2]).unwrap().dying_bytes, 600);
    acct.deactivate(s4).unwrap();
    let victim = acct.pick_cleaning_victim().unwrap();
    assert_eq!(victim, segments[2]);
    let to_move = acct.pages_to_relocate(victim).unwrap();
    assert_eq!(to_move, vec![PageId(22), PageId(23)]);
    let s5 = acct.next_segment(Lsn(5 * LEN)).unwrap();
    let mut b = AccountingBatch::new(s5);
    for &p in &to_move {
        b.replace(p, 100);
    }
    acct.apply(&b).unwrap();
    // The copies are not stable yet: the victim must not be reused.
    assert_eq!(acct.segment_state(victim).unwrap(), SegmentState::Draining);
    acct.deactivate(s5).unwrap();
    assert_eq!(acct.segment_state(victim).unwrap(), SegmentState::Free);
    assert_eq!(acct.next_segment(Lsn(6 * LEN)).unwrap(), victim);
    acct.check_invariants();
}
