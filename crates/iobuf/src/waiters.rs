//! Sleeping until the ring makes progress.
//!
//! Threads that must wait (for a buffer slot to be written, for the current buffer to roll, for
//! the written or stable LSN to pass a point) sleep on one condition variable instead of
//! spinning while IO is in flight. Notifiers only touch the mutex when someone is waiting, so
//! the common path (nobody waiting) costs one atomic load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How long a waiter sleeps before re-checking its condition even without a notification. A
/// safety net only: every state change that a waiter can wait for calls [`Waiters::notify`].
const RECHECK_INTERVAL: Duration = Duration::from_millis(20);

/// A condition variable for "some state changed; re-check your condition".
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    lock: Mutex<()>,
    condvar: Condvar,
    n_waiting: AtomicUsize,
}

impl Waiters {
    /// Blocks until `done()` returns true. `done` is re-evaluated after every notification.
    pub(crate) fn wait_until(&self, mut done: impl FnMut() -> bool) {
        while !done() {
            // Announce ourselves before the last check, so a notifier that changes the state
            // after that check sees `n_waiting > 0` and takes the lock (SeqCst on both sides).
            self.n_waiting.fetch_add(1, Ordering::SeqCst);
            let guard = self
                .lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !done() {
                let _ = self.condvar.wait_timeout(guard, RECHECK_INTERVAL);
            }
            self.n_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes every waiter so it re-checks its condition. Call it after the state change.
    pub(crate) fn notify(&self) {
        if self.n_waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.condvar.notify_all();
        }
    }
}
