//! The segment state machine.
//!
//! ```text
//!            next_segment           deactivate              pick / mark_draining
//!   Free ─────────────────▶ Active ────────────▶ Inactive ─────────────────────▶ Draining
//!    ▲                                              │                              │
//!    └──────────────────────────────────────────────┴──────────────────────────────┘
//!        released (plain log) or no live and no dying bytes left (paged log)
//! ```

use std::fmt;

/// Where a physical segment is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentState {
    /// Holds nothing anyone needs; may be handed out (unless it was handed out recently).
    Free,
    /// Being written by the log: its LSN range is not yet entirely stable.
    Active,
    /// Fully written and stable. Holds live data (or, for a plain log, data above the release
    /// point).
    Inactive,
    /// Chosen for cleaning: its live pages are being relocated; it becomes Free once they all
    /// have stable newer copies.
    Draining,
}

impl SegmentState {
    /// Whether the transition `self -> to` is one the state machine allows.
    pub fn can_become(self, to: SegmentState) -> bool {
        use SegmentState::*;
        matches!(
            (self, to),
            (Free, Active)
                | (Active, Inactive)
                | (Inactive, Draining)
                | (Inactive, Free)
                | (Draining, Free)
        )
    }

    /// Whether the segment holds a logical segment (everything but Free).
    pub fn is_in_use(self) -> bool {
        self != SegmentState::Free
    }
}

impl fmt::Display for SegmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SegmentState::Free => "Free",
            SegmentState::Active => "Active",
            SegmentState::Inactive => "Inactive",
            SegmentState::Draining => "Draining",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::SegmentState::{self, *};

    #[test]
    fn only_the_drawn_transitions_are_legal() {
        let all = [Free, Active, Inactive, Draining];
        let legal = [
            (Free, Active),
            (Active, Inactive),
            (Inactive, Draining),
            (Inactive, Free),
            (Draining, Free),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_become(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert!(!SegmentState::Free.is_in_use());
        assert!(Draining.is_in_use());
    }
}
