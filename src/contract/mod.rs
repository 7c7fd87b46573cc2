//! The platform-independent half of what `#[netns_test]` expands to: the
//! test's options ([`TestSpec`]), how it ended ([`Outcome`]) and the tokio
//! runtime of an async test ([`block_on`]). The other half, `run`, is the
//! platform's.
//!
//! Not a public API: the macro and this module change together (the runtime
//! crate pins the macro crate's exact version).

mod outcome;
mod spec;

pub(crate) use outcome::{Ended, FailureKind};
pub use outcome::{Outcome, TestReturn};
pub use spec::{Flavor, SPEC_MARKER, TestSpec, Timeout};

use std::future::Future;

/// Runs an async test's future on the tokio runtime its attribute asks for,
/// built on the calling thread, which is in the test's namespace: its
/// worker threads start there too.
pub fn block_on<F: Future>(spec: &TestSpec, future: F) -> F::Output {
    let mut builder = match spec.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(threads) = spec.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build().unwrap_or_else(|e| {
        panic!(
            "netns-test: cannot build the tokio runtime of test `{}`: {e}",
            spec.name
        )
    });
    runtime.block_on(future)
}
