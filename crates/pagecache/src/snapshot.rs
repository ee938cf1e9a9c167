//! Taking snapshots of the page table, and the background thread that takes them.
//!
//! A snapshot is fuzzy: page writes go on while the table is walked. It stays correct
//! because of three rules.
//!
//! 1. `replay_from` is the stable LSN read *before* the walk. A record below it was
//!    completed, and a write completes only after its CAS, so the walk sees its effect.
//! 2. The whole log is made durable *after* the walk and before the file is written. Every
//!    effect the walk saw was reserved before it was seen, so nothing in the snapshot can be
//!    missing from the durable log after a crash.
//! 3. Replay skips a record whose LSN is not above the last LSN the snapshot holds for that
//!    page, so a write the walk already saw is not applied twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;
use iobuf::PageId;
use recovery::SnapshotInfo;

use crate::cache::{Inner, lock};
use crate::entry::entry_ref;
use crate::error::Result;
use crate::materializer::Materializer;
use crate::metrics::Metrics;
use crate::record::SnapshotWriter;

/// How often the background thread checks whether a snapshot is due.
const CHECK_EVERY: Duration = Duration::from_millis(20);

impl<M: Materializer> Inner<M> {
    pub(crate) fn take_snapshot(&self) -> Result<SnapshotInfo> {
        let mut last_snapshot_tip = lock(&self.snapshot_state);
        let started = Instant::now();
        let tip_at_start = self.log.tip();
        let replay_from = self.log.stable_lsn();
        let (meta, meta_lsn) = {
            let state = lock(&self.meta);
            (state.meta.clone(), state.lsn)
        };
        let next_pid = self.next_pid.load(Ordering::Acquire);
        let mut writer = SnapshotWriter::new(next_pid, meta_lsn, &meta);
        {
            let guard = epoch::pin();
            let geometry = self.geometry();
            self.table.for_each_in(0, next_pid, &guard, |pid, shared| {
                if let Some(entry) = entry_ref(shared).filter(|entry| entry.is_live()) {
                    let chain = entry.locations().iter();
                    writer.page(PageId(pid), chain.map(|location| location.unpack(geometry)));
                }
            });
        }
        let payload = writer.finish();
        self.log.flush()?;
        let info = self.snapshots.write(replay_from, &payload)?;
        *last_snapshot_tip = tip_at_start;
        Metrics::bump(&self.metrics.n_snapshots, 1);
        self.metrics.snapshot_latency.record(started.elapsed());
        Ok(info)
    }

    /// Whether enough log was written since the last snapshot.
    fn snapshot_due(&self) -> bool {
        let last = *lock(&self.snapshot_state);
        self.log.tip().0.saturating_sub(last.0) >= self.config.snapshot_every_bytes
    }
}

/// The background thread: a snapshot each time enough log was written, until shutdown. An
/// error (the log is poisoned, the disk is full) is kept for
/// [`crate::PageCache::background_error`] and ends the thread: every later write reports the
/// same error to its caller anyway.
pub(crate) fn run_background<M: Materializer>(inner: Arc<Inner<M>>) {
    let (stop, wake) = &inner.shutdown;
    loop {
        {
            let stopped = lock(stop);
            if *stopped {
                return;
            }
            let (stopped, _) = wake
                .wait_timeout(stopped, CHECK_EVERY)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        if inner.snapshot_due()
            && let Err(error) = inner.take_snapshot()
        {
            *lock(&inner.background_error) = Some(error);
            return;
        }
    }
}
