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
/// worker threads start there too. `configure` sets what the attribute's
/// tokio options ask for (`start_paused`) on the builder; the macro writes
/// it in the user's crate, whose tokio features (`test-util`) apply.
#[cfg(feature = "tokio")]
pub fn block_on<F: Future>(
    spec: &TestSpec,
    configure: impl FnOnce(&mut tokio::runtime::Builder),
    future: F,
) -> F::Output {
    let mut builder = match spec.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(threads) = spec.worker_threads {
        builder.worker_threads(threads);
    }
    builder.enable_all();
    configure(&mut builder);
    let runtime = builder.build().unwrap_or_else(|e| {
        panic!(
            "netns-test: cannot build the tokio runtime of test `{}`: {e}",
            spec.name
        )
    });
    runtime.block_on(future)
}

/// Without the `tokio` feature an `async fn` test cannot run, and the
/// bound says so at compile time.
#[cfg(not(feature = "tokio"))]
pub fn block_on<F>(
    _spec: &TestSpec,
    _configure: impl FnOnce(&mut NoRuntime),
    _future: F,
) -> F::Output
where
    F: Future + AsyncTestNeedsTokio,
{
    unreachable!("no type implements AsyncTestNeedsTokio")
}

/// What `configure` of [`block_on`] gets without the `tokio` feature, so
/// that the only error is the missing feature.
#[cfg(not(feature = "tokio"))]
pub struct NoRuntime;

#[cfg(not(feature = "tokio"))]
impl NoRuntime {
    /// Does nothing: there is no runtime.
    pub fn start_paused(&mut self, _paused: bool) -> &mut NoRuntime {
        self
    }
}

/// Implemented by no type: the bound of an `async fn` test when the
/// `tokio` feature is off, so that the compiler says what is missing.
#[cfg(not(feature = "tokio"))]
#[diagnostic::on_unimplemented(
    message = "an `async fn` #[netns_test] needs netns-test's `tokio` feature, which is off",
    label = "this async test needs a tokio runtime",
    note = "turn the feature back on in Cargo.toml: `netns-test = {{ version = \"0.1\", features = [\"tokio\"] }}` (it is a default feature), or make the test a plain `fn`"
)]
pub trait AsyncTestNeedsTokio {}

/// Implemented by no type: the bound of `NetNs::block_on` when the
/// `tokio` feature is off.
#[cfg(not(feature = "tokio"))]
#[diagnostic::on_unimplemented(
    message = "`NetNs::block_on` needs netns-test's `tokio` feature, which is off",
    label = "this future needs a tokio runtime inside the namespace",
    note = "turn the feature back on in Cargo.toml: `netns-test = {{ version = \"0.1\", features = [\"tokio\"] }}` (it is a default feature), or use `NetNs::run` with blocking code"
)]
pub trait BlockOnNeedsTokio {}

/// Implemented by no type: the bound of `NetNs::spawn_async` when the
/// `tokio` feature is off.
#[cfg(not(feature = "tokio"))]
#[diagnostic::on_unimplemented(
    message = "`NetNs::spawn_async` needs netns-test's `tokio` feature, which is off",
    label = "this future needs a tokio runtime inside the namespace",
    note = "turn the feature back on in Cargo.toml: `netns-test = {{ version = \"0.1\", features = [\"tokio\"] }}` (it is a default feature), or use `NetNs::spawn` with blocking code"
)]
pub trait SpawnAsyncNeedsTokio {}
