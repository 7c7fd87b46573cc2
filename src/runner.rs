#![allow(missing_docs)]
//! What `#[netns_test]` expands to: one call into this module, generic over
//! the test's return type, then `.finish()`.
//!
//! Not a public API: the macro and this module change together (the runtime
//! crate pins the macro crate's exact version).

use crate::capture::Capture;
use crate::isolation::{self, Home};
use crate::namespace::{NetNs, Registration, TestState};
use crate::rootless::{self, ChildResult, Mode};
use crate::trace;
use crate::veth::{self, VethSetup, VethSpec};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub use crate::rootless::TestReturn;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

pub use std::sync::atomic::AtomicBool;

/// A timeout as the user wrote it, and its value.
#[derive(Clone, Copy, Debug)]
pub struct Timeout {
    pub millis: u64,
    pub text: &'static str,
}

/// The tokio runtime of an async test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

/// One test function's options, in a `static` inside the generated function.
#[derive(Debug)]
pub struct TestSpec {
    /// `module_path!()::name`.
    pub name: &'static str,
    pub timeout: Option<Timeout>,
    pub flavor: Flavor,
    pub worker_threads: Option<usize>,
    /// The macro added `#[test]` because it saw none; a `#[test]` above the
    /// macro is invisible to it and would register the test a second time.
    pub added_test_attribute: bool,
    /// Set when the test starts, to catch that second registration.
    pub started: AtomicBool,
    /// `#[netns_test(veth)]`: a veth pair to the host.
    pub veth: Option<VethSpec>,
    /// `#[netns_test(keep = "..")]`; `NETNS_TEST_KEEP` when absent.
    pub keep: Option<Policy>,
    /// `#[netns_test(capture)]`; `NETNS_TEST_CAPTURE` when absent.
    pub capture: Option<Policy>,
}

/// For which tests to keep namespaces or captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Failed tests only.
    Failed,
    /// Every test.
    All,
}

impl Policy {
    /// The attribute's choice, else the environment variable's
    /// (`failed` or `all`; anything else is ignored with a warning).
    fn resolve(attribute: Option<Policy>, variable: &'static str) -> Option<Policy> {
        attribute.or_else(|| Policy::from_environment(variable))
    }

    /// The variable's policy, read once per process (off the per-test path).
    fn from_environment(variable: &'static str) -> Option<Policy> {
        static KEEP: OnceLock<Option<Policy>> = OnceLock::new();
        static CAPTURE: OnceLock<Option<Policy>> = OnceLock::new();
        let cell = if variable == "NETNS_TEST_KEEP" {
            &KEEP
        } else {
            &CAPTURE
        };
        *cell.get_or_init(|| match std::env::var(variable).as_deref() {
            Err(_) | Ok("") | Ok("never") => None,
            Ok("failed") => Some(Policy::Failed),
            Ok("all") => Some(Policy::All),
            Ok(other) => {
                eprintln!("netns-test: ignoring {variable}={other:?}: use failed or all");
                None
            }
        })
    }

    fn applies(self, failed: bool) -> bool {
        self == Policy::All || failed
    }
}

/// Why a test could not run its body.
struct Failure(String);

/// The result of running a test body in its namespace.
#[must_use]
pub struct Outcome<T>(Result<T, Failure>);

impl<T> Outcome<T> {
    fn into_result(self) -> Result<T, String> {
        self.0.map_err(|Failure(message)| message)
    }

    /// The body's value; panics (failing the test) when it could not run.
    #[track_caller]
    pub fn finish(self) -> T {
        match self.0 {
            Ok(value) => value,
            Err(Failure(message)) => panic!("{message}"),
        }
    }
}

impl Outcome<()> {
    /// For `#[should_panic]` tests: a failure to run must not count as the
    /// expected panic, so it is printed and the test returns normally, which
    /// libtest reports as "did not panic as expected".
    pub fn finish_should_panic(self) {
        if let Err(Failure(message)) = self.0 {
            eprintln!(
                "{message}\n(the test expects a panic, so this failure is reported by returning without one)"
            );
        }
    }
}

/// What a test takes from the host before its thread leaves it.
struct Prepared {
    veth: Option<VethSetup>,
}

impl Prepared {
    /// Runs on the thread that will enter the namespace, or on the test
    /// thread for a test with a timeout; both are in the host's namespace.
    fn new(spec: &TestSpec) -> Result<Prepared, Failure> {
        if spec.added_test_attribute && spec.started.swap(true, Ordering::Relaxed) {
            return Err(Failure(format!(
                "netns-test: test `{}` started a second time in this process: it has a #[test] attribute above \
                 #[netns_test], which adds its own, so the test is registered twice. Remove that #[test] or put it below #[netns_test].",
                spec.name
            )));
        }
        let veth = spec
            .veth
            .as_ref()
            .map(VethSetup::prepare)
            .transpose()
            .map_err(|error| setup_failure(spec, error))?;
        Ok(Prepared { veth })
    }
}

fn setup_failure(spec: &TestSpec, error: crate::Error) -> Failure {
    Failure(format!(
        "netns-test: cannot set up the network namespace of test `{}`: {error}",
        spec.name
    ))
}

/// The calling thread, moved into a fresh namespace for the time of a test.
/// Dropping it (also while unwinding) moves the thread back, unless it is
/// the harness's own thread for this test, which ends with the test.
struct Inside {
    test: &'static str,
    /// Whether the body returned a failure (a panic is seen while unwinding).
    failed: bool,
    keep: Option<Policy>,
    capture: Option<(Policy, Capture)>,
    /// The test's topology nodes.
    state: Arc<TestState>,
    _registration: Registration,
    /// The veth lease and host-side socket, held until the test ends.
    veth: Option<VethSetup>,
    home: Option<Home>,
}

impl Inside {
    fn enter(spec: &TestSpec, prepared: Prepared) -> Result<Inside, Failure> {
        let Prepared { mut veth } = prepared;
        let mut setup = || -> Result<Inside, crate::Error> {
            let trace = trace::Steps::new(spec.name);
            let home = if on_own_harness_thread(spec) {
                None
            } else {
                Some(Home::here()?)
            };
            isolation::isolate_this_thread()?;
            trace.step("new network and mount namespace, lo up, accept_dad=0");
            let capture_policy = Policy::resolve(spec.capture, "NETNS_TEST_CAPTURE");
            let capture_dir =
                capture_policy.map(|_| crate::capture::directory_for(libtest_name(spec)));
            let capture = match (capture_policy, &capture_dir) {
                (Some(policy), Some(dir)) => {
                    let capture = Capture::start(dir.join("test.pcap"))?;
                    trace.step("capture started");
                    Some((policy, capture))
                }
                _ => None,
            };
            let state = Arc::new(TestState {
                capture_dir,
                nodes: Default::default(),
            });
            if let Some(veth) = &mut veth {
                veth.create()?;
                trace.step("veth pair created");
            }
            let inside = Inside {
                test: spec.name,
                failed: false,
                keep: Policy::resolve(spec.keep, "NETNS_TEST_KEEP"),
                capture,
                _registration: Registration::this_thread(
                    veth.as_ref().map(|v| v.veth().clone()),
                    Arc::clone(&state),
                )?,
                state,
                veth: veth.take(),
                home,
            };
            trace.step("registered");
            Ok(inside)
        };
        setup().map_err(|error| setup_failure(spec, error))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let trace = trace::Steps::new(self.test);
        let failed = self.failed || std::thread::panicking();
        if failed {
            if let Ok(id) = crate::sys::thread_ns_id(crate::sys::NsKind::Net) {
                eprintln!(
                    "netns-test: test `{}` ran in network namespace net:[{}]",
                    self.test, id.ino
                );
            }
        }
        let mut nodes =
            std::mem::take(&mut *self.state.nodes.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some((policy, capture)) = self.capture.take() {
            let mut files = vec![capture.finish()];
            files.extend(
                nodes
                    .iter_mut()
                    .filter_map(|n| n.capture.take().map(Capture::finish)),
            );
            report_captures(policy.applies(failed), &files);
            trace.step("captures stopped");
        }
        if self.keep.is_some_and(|p| p.applies(failed)) {
            let veth = self.veth.as_ref().map(|v| v.veth().clone());
            let own = NetNs::try_current()
                .ok_or_else(|| {
                    crate::Error::new(
                        "find the test's namespace",
                        std::io::ErrorKind::NotFound.into(),
                    )
                })
                .and_then(|ns| crate::keep::keep(&ns, self.test, None, veth.as_ref()));
            let mut results = vec![own];
            for node in &nodes {
                results.push(crate::keep::keep(
                    &node.ns,
                    self.test,
                    Some(&node.name),
                    None,
                ));
            }
            for result in results {
                match result {
                    Ok(message) => eprintln!("{message}"),
                    Err(error) => eprintln!(
                        "netns-test: cannot keep a namespace of `{}`: {error}",
                        self.test
                    ),
                }
            }
            trace.step("namespaces kept");
        }
        drop(nodes);
        // Leaving the mount namespace fails with EINVAL while threads that the
        // test spawned still share this thread's filesystem context; the
        // thread then stays in it, which is harmless for a test harness
        // thread about to end. Nothing else can fail here.
        let Some(home) = &self.home else { return };
        if let Err(error) = home.go_back() {
            if error.raw_os_error() != Some(nix::libc::EINVAL) {
                eprintln!(
                    "netns-test: cannot move the test thread back to its namespaces: {error}"
                );
            }
        }
    }
}

/// Prints where the captures are, or removes them (and their directory).
fn report_captures(keep: bool, files: &[PathBuf]) {
    for file in files {
        if keep {
            eprintln!("netns-test: packets captured in {}", file.display());
        } else {
            let _ = std::fs::remove_file(file);
        }
    }
    if !keep {
        if let Some(dir) = files.first().and_then(|f| f.parent()) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Whether the calling thread is the one libtest (or cargo-nextest, which runs
/// libtest) spawned for this test: it carries the test's name, and it ends
/// when the test does, so it need not move back to the host's namespaces.
fn on_own_harness_thread(spec: &TestSpec) -> bool {
    std::thread::current().name() == Some(libtest_name(spec))
}

/// The test's name as libtest knows it: `module_path!()` starts with the
/// crate's name, libtest's names do not.
pub(crate) fn libtest_name(spec: &TestSpec) -> &'static str {
    spec.name
        .split_once("::")
        .map_or(spec.name, |(_crate, rest)| rest)
}

/// Where a test runs.
enum Route {
    /// On this thread (root mode, or inside the rootless child).
    Here,
    /// This process is the rootless child started for this test.
    AsChild,
    /// Rootless mode: in a child process in a new user namespace.
    InChild,
}

fn route(spec: &TestSpec) -> Result<Route, Failure> {
    if rootless::is_child_for(spec) {
        return Ok(Route::AsChild);
    }
    if rootless::is_child() {
        return Ok(Route::Here);
    }
    match rootless::mode().map_err(Failure)? {
        Mode::Root => Ok(Route::Here),
        Mode::Rootless if spec.veth.is_some() => Err(Failure(format!(
            "netns-test: test `{}` asks for a veth pair to the host, which needs real root (CAP_NET_ADMIN in the \
             host's network namespace); this process runs netns tests rootless, in user namespaces. Run it with \
             sudo, or link namespaces to each other inside the test instead of to the host.",
            spec.name
        ))),
        Mode::Rootless => Ok(Route::InChild),
    }
}

/// Runs the test where [`route`] says. `run(timed)` runs it in this
/// process; `timed` is false in a rootless test's child, whose parent
/// enforces the timeout by killing it.
fn routed<T: TestReturn>(spec: &TestSpec, run: impl FnOnce(bool) -> Outcome<T>) -> Outcome<T> {
    match route(spec) {
        Err(failure) => Outcome(Err(failure)),
        Ok(Route::Here) => run(true),
        Ok(Route::AsChild) => rootless::run_as_child(|| run(false).into_result()),
        Ok(Route::InChild) => in_child(spec),
    }
}

/// Rootless mode, in the parent: the test's outcome from its child process.
fn in_child<T: TestReturn>(spec: &TestSpec) -> Outcome<T> {
    let unsupported = |reason: String| {
        if rootless::skip_unsupported() {
            use std::io::Write;
            // Written to the real stderr, past libtest's capture, so that the
            // skip shows although the test passes.
            let first = reason.lines().next().unwrap_or_default().to_owned();
            let _ = writeln!(std::io::stderr(), "skipped: {} ({first})", spec.name);
            Outcome(Ok(T::passed()))
        } else {
            Outcome(Err(Failure(reason)))
        }
    };
    match rootless::run_in_child(spec) {
        Ok(ChildResult::Passed) => Outcome(Ok(T::passed())),
        Ok(ChildResult::Panicked(message)) => resume_unwind(Box::new(message)),
        Ok(ChildResult::Failed(message)) if message.contains(rootless::APPARMOR) => {
            unsupported(message)
        }
        Ok(ChildResult::Failed(message)) => Outcome(Err(Failure(message))),
        Err(refusal) => unsupported(refusal),
    }
}

/// Runs a sync test body in a fresh namespace: on the calling thread, or in
/// rootless mode in a child process.
pub fn run_sync<T: TestReturn>(spec: &TestSpec, body: impl FnOnce() -> T) -> Outcome<T> {
    routed(spec, |_| run_sync_here(spec, body))
}

fn run_sync_here<T: TestReturn>(spec: &TestSpec, body: impl FnOnce() -> T) -> Outcome<T> {
    match Prepared::new(spec) {
        Ok(prepared) => run_sync_prepared(spec, prepared, body),
        Err(failure) => Outcome(Err(failure)),
    }
}

fn run_sync_prepared<T: TestReturn>(
    spec: &TestSpec,
    prepared: Prepared,
    body: impl FnOnce() -> T,
) -> Outcome<T> {
    let mut inside = match Inside::enter(spec, prepared) {
        Ok(inside) => inside,
        Err(failure) => return Outcome(Err(failure)),
    };
    let value = body();
    inside.failed = value.is_failure();
    Outcome(Ok(value))
}

/// Runs an async test body in a fresh namespace on the calling thread, on a
/// tokio runtime built inside it (so its worker threads are inside too).
pub fn run_async<T, F, Fut>(spec: &TestSpec, body: F) -> Outcome<T>
where
    T: TestReturn,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    routed(spec, |_| run_async_here(spec, body))
}

fn run_async_here<T, F, Fut>(spec: &TestSpec, body: F) -> Outcome<T>
where
    T: TestReturn,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    match Prepared::new(spec) {
        Ok(prepared) => run_async_prepared(spec, prepared, body),
        Err(failure) => Outcome(Err(failure)),
    }
}

fn run_async_prepared<T, F, Fut>(spec: &TestSpec, prepared: Prepared, body: F) -> Outcome<T>
where
    T: TestReturn,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let mut inside = match Inside::enter(spec, prepared) {
        Ok(inside) => inside,
        Err(failure) => return Outcome(Err(failure)),
    };
    let runtime = match build_runtime(spec) {
        Ok(runtime) => runtime,
        Err(failure) => return Outcome(Err(failure)),
    };
    let value = runtime.block_on(body());
    drop(runtime);
    inside.failed = value.is_failure();
    Outcome(Ok(value))
}

fn build_runtime(spec: &TestSpec) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = match spec.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(threads) = spec.worker_threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().map_err(|e| {
        Failure(format!(
            "netns-test: cannot build the tokio runtime of test `{}`: {e}",
            spec.name
        ))
    })
}

/// [`run_sync`] on a thread of its own, failing the test when `timeout` passes.
pub fn run_sync_with_timeout<T, F>(spec: &'static TestSpec, body: F) -> Outcome<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: TestReturn + Send + 'static,
{
    routed(spec, move |timed| {
        if timed {
            with_timeout(spec, move |prepared| {
                run_sync_prepared(spec, prepared, body)
            })
        } else {
            run_sync_here(spec, body)
        }
    })
}

/// [`run_async`] on a thread of its own, failing the test when `timeout` passes.
pub fn run_async_with_timeout<T, F, Fut>(spec: &'static TestSpec, body: F) -> Outcome<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: TestReturn + Send + 'static,
{
    routed(spec, move |timed| {
        if timed {
            with_timeout(spec, move |prepared| {
                run_async_prepared(spec, prepared, body)
            })
        } else {
            run_async_here(spec, body)
        }
    })
}

/// Runs `run` on a new thread named like the test and waits at most the
/// spec's timeout. On a timeout the thread is abandoned: it keeps its
/// namespace until it ends, at the latest with the test process, but its
/// veth pair is deleted at once, so a hung test holds nothing on the host.
fn with_timeout<T: Send + 'static>(
    spec: &'static TestSpec,
    run: impl FnOnce(Prepared) -> Outcome<T> + Send + 'static,
) -> Outcome<T> {
    let timeout = spec
        .timeout
        .expect("netns-test: a timeout entry point without a timeout");
    let prepared = match Prepared::new(spec) {
        Ok(prepared) => prepared,
        Err(failure) => return Outcome(Err(failure)),
    };
    let veth = prepared.veth.as_ref().map(|v| v.veth().clone());
    let (sender, receiver) = mpsc::sync_channel(1);
    let name = std::thread::current()
        .name()
        .unwrap_or(spec.name)
        .to_owned();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| run(prepared)));
        let _ = sender.send(result);
    });
    if let Err(error) = spawned {
        return Outcome(Err(Failure(format!(
            "netns-test: cannot spawn the thread of test `{}`: {error}",
            spec.name
        ))));
    }
    match receiver.recv_timeout(Duration::from_millis(timeout.millis)) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut message = timed_out_message(spec, timeout);
            if let Some(veth) = &veth {
                if let Err(error) = veth::delete_now(veth) {
                    message.push_str(&format!("; deleting its veth pair failed: {error}"));
                }
            }
            Outcome(Err(Failure(message)))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Outcome(Err(Failure(format!(
            "netns-test: the thread of test `{}` ended without a result",
            spec.name
        )))),
    }
}

pub(crate) fn timed_out_message(spec: &TestSpec, timeout: Timeout) -> String {
    format!(
        "netns-test: test `{}` timed out after {} (#[netns_test(timeout = \"{}\")])",
        spec.name,
        humanize(timeout.millis),
        timeout.text
    )
}

fn humanize(millis: u64) -> String {
    if millis % 1000 == 0 {
        format!("{} s", millis / 1000)
    } else {
        format!("{millis} ms")
    }
}
