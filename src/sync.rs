//! Locking that outlives a panic: what a lock guards stays usable after a
//! thread panicked holding it (a test's panic must not break the network
//! or the runner that other tests share).

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, whether or not a thread panicked holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
