//! The background cleaner: a thread that relocates pages out of the oldest segment while the
//! log spans more than half a segment below what the space target allows, so that writes,
//! which clean only past the target, do not have to.
//!
//! Cleaning is the largest cost of a write under steady overwrites that a writer does not
//! need to pay itself: in `bench_pages`' B mix on one thread it was about 11 % of the
//! writer's time, while the second core sat idle. The thread keeps the span [`LEAD_STEPS`]
//! below what the space target allows. Writes pace themselves exactly as without it
//! ([`Inner::maybe_clean`]: they clean from the target on), so while the thread keeps up
//! they find nothing to do, and when it falls behind (every core busy, a slow disk) they
//! take their shares and slow down instead of letting the file grow; past the pacing limit a
//! write waits a moment (20 ms at most) for pages the thread has out rather than go on. The
//! bound is the writes', as without the thread, with one caveat shared with several writers:
//! a thread descheduled while it holds the cleaner's lock lets writes below the limit go on,
//! which can cost a segment or two of span when threads outnumber cores (`tests/space.rs`:
//! file/live 1.33 to 1.37 against 1.33 with the writes alone).
//!
//! Waking. The thread sleeps on a condvar while the span is within its aim. A write that
//! finds the span over it and the thread idle marks it busy and wakes it: while the thread
//! works, a write pays a comparison it made anyway and one relaxed load; each wake costs one
//! lock and one notify. The thread marks itself idle only after it found the span within its
//! aim, then looks once more. A write racing with that may still see it busy and not wake
//! it; the next write over the aim does. So only writes already in flight at that moment can
//! pass without a wake, and the writers' own share bounds the span whatever the thread does.
//!
//! The last pages of a segment may be out with a write: the thread then waits for them like
//! a write past the pacing limit does ([`Inner::clean_some`]). When it cannot go on (the
//! oldest segment is not durable yet, so nothing can be cleaned by anyone, or the pages out
//! were given up on as stalled), it sleeps for a doubling time (1 to 50 ms) instead of
//! spinning, and looks again; nothing wakes it early, so it may start up to 50 ms after the
//! sync that made the segment durable (writes past the target clean meanwhile). Without a
//! flusher the segment becomes durable at the caller's next flush, and until then the thread
//! wakes at most 20 times a second; the same while a batch stalls, or if the log was
//! poisoned (whose error the writes report).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::cache::{Inner, lock};
use crate::materializer::Materializer;

/// How far below the target's span (in [`Inner::cleaning_step_bytes`], a quarter segment
/// each) the thread brings the log: half a segment, so that a burst of writes uses up that
/// room before the writes themselves have to clean.
pub(crate) const LEAD_STEPS: u64 = 2;

/// The thread's first and longest sleep when cleaning is wanted but the oldest segment is not
/// durable yet.
const FIRST_RETRY: Duration = Duration::from_millis(1);
const LONGEST_RETRY: Duration = Duration::from_millis(50);

/// What one pass of the thread found.
pub(crate) enum Pass {
    /// It relocated or examined something; it goes on at once.
    Cleaned,
    /// The span is within the thread's aim: nothing to do until writes push it over.
    WithinTarget,
    /// Cleaning is wanted but cannot go on yet: the oldest segment is not durable, or the
    /// last pages of the loaded one are out with a batch taken as stalled.
    Blocked,
}

/// What the writes and the thread share to pass work and stop.
#[derive(Debug, Default)]
pub(crate) struct BackgroundCleaner {
    /// Whether the thread runs: set before it starts, cleared when it ends (by an error, a
    /// panic or a stop). Writes wake it only while set.
    running: AtomicBool,
    /// Set while the thread is cleaning or about to look again by itself; a write that finds
    /// it clear sets it and wakes the thread.
    busy: AtomicBool,
    signal: Mutex<Signal>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Signal {
    /// A write asked for cleaning since the thread last waited.
    wanted: bool,
    /// The page cache is closing.
    stopped: bool,
}

impl BackgroundCleaner {
    /// Marks the thread as running and busy, with a look pending; called just before it is
    /// started. The first look is its own: a store opened with its span over the target
    /// (written under a looser target, or with the thread off) is cleaned without waiting for
    /// a write.
    pub(crate) fn starting(&self) {
        self.busy.store(true, Ordering::Relaxed);
        lock(&self.signal).wanted = true;
        self.running.store(true, Ordering::Release);
    }

    /// Whether the thread runs.
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// A write found the span over what the thread aims at: wakes the thread unless it is
    /// busy already.
    pub(crate) fn wake(&self) {
        if self.busy.load(Ordering::Relaxed) || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.signal).wanted = true;
        self.wake.notify_one();
    }

    /// Tells the thread to end (the page cache is closing).
    pub(crate) fn stop(&self) {
        lock(&self.signal).stopped = true;
        self.wake.notify_all();
    }

    /// Sleeps until a write asks for cleaning; `false` when the thread is to end instead.
    fn wait_for_work(&self) -> bool {
        let mut signal = lock(&self.signal);
        while !signal.wanted && !signal.stopped {
            signal = self
                .wake
                .wait(signal)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        signal.wanted = false;
        !signal.stopped
    }

    /// Sleeps for `duration` (less if stopped); `false` when the thread is to end.
    fn sleep(&self, duration: Duration) -> bool {
        let signal = lock(&self.signal);
        if signal.stopped {
            return false;
        }
        let (signal, _) = self
            .wake
            .wait_timeout(signal, duration)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !signal.stopped
    }
}

/// Clears [`BackgroundCleaner::running`] however the thread ends, unwinding included, so
/// writes stop waking a thread that is gone (their own shares go on as always).
struct RunningGuard<'a>(&'a AtomicBool);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The thread's body: cleans while writes push the span over what it aims at, until the
/// page cache closes. An error (the log is poisoned, the disk is full) is kept for
/// [`crate::PageCache::background_error`] and ends the thread; writes then do all the
/// cleaning, as with the thread off, and report the same error to their callers anyway.
pub(crate) fn run<M: Materializer>(inner: Arc<Inner<M>>) {
    let cleaner = &inner.background_cleaner;
    let _running = RunningGuard(&cleaner.running);
    while cleaner.wait_for_work() {
        let mut retry_after = FIRST_RETRY;
        while !inner.closed.load(Ordering::Acquire) {
            match inner.clean_in_background() {
                Ok(Pass::Cleaned) => retry_after = FIRST_RETRY,
                Ok(Pass::WithinTarget) => {
                    cleaner.busy.store(false, Ordering::SeqCst);
                    // A write may have pushed the span over while it still saw the thread
                    // busy: look once more, and go on if no write took `busy` meanwhile
                    // (one that did has signalled, and the wait returns at once).
                    if inner.background_cleaning_wanted()
                        && !cleaner.busy.swap(true, Ordering::AcqRel)
                    {
                        continue;
                    }
                    break;
                }
                Ok(Pass::Blocked) => {
                    if !cleaner.sleep(retry_after) {
                        return;
                    }
                    retry_after = (retry_after * 2).min(LONGEST_RETRY);
                }
                Err(error) => {
                    *lock(&inner.background_error) = Some(error);
                    return;
                }
            }
        }
    }
}
