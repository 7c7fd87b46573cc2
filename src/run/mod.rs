//! What `#[netns_test]` expands to: one call, [`run`], generic over the
//! test's return type only, then `.finish()`. An async test is a sync body
//! that calls [`block_on`](crate::contract::block_on).
//!
//! Not a public API: the macro and this module change together (the runtime
//! crate pins the macro crate's exact version).

mod fork_server;
mod rootless;
pub(crate) mod test_ns;
mod timeout;

use crate::contract::{Ended, FailureKind, Outcome, TestReturn, TestSpec};
use crate::settings::{self, ModeSetting};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use test_ns::{HostSide, TestNamespace};

/// Runs the test `spec` with the body `body` in fresh namespaces: on the
/// calling thread (as root), on a thread of its own (with a timeout), or in
/// another process in a user namespace (rootless: a runner of the fork
/// server, or a child process started for the test).
pub fn run<T: TestReturn + 'static>(spec: &'static TestSpec, body: fn() -> T) -> Outcome<T> {
    match route(spec) {
        Err(ended) => Outcome::ended(spec.name, ended),
        Ok(Route::ThisProcess) if fork_server::moved_here() => {
            let outcome = run_in_this_process(spec, body);
            // As in a runner: what the test left running ends with it.
            fork_server::end_what_the_test_left();
            outcome
        }
        Ok(Route::ThisProcess) => run_in_this_process(spec, body),
        Ok(Route::ChildProcess) => {
            let call = fork_server::CallWords::new(run_in_runner, spec, body);
            let ended = fork_server::run_in_forked_child(spec, call)
                .unwrap_or_else(|| rootless::run_in_child_process(spec));
            Outcome::ended(spec.name, ended)
        }
        Ok(Route::ReportToParent) => {
            rootless::report_to_parent(|| run_in_child_process(spec, body))
        }
    }
}

/// Where a test runs.
enum Route {
    /// In this process: on the calling thread, or on a thread of its own
    /// for a timeout (root mode, or this is a rootless test's child).
    ThisProcess,
    /// Rootless mode, in the test's process: run it in a runner of the
    /// fork server, or else in a child process started for it.
    ChildProcess,
    /// This process is the child process started for this rootless test:
    /// run it and report to the parent.
    ReportToParent,
}

fn route(spec: &TestSpec) -> Result<Route, Ended> {
    match settings::rootless_child_of() {
        Some(test) if test == spec.name => return Ok(Route::ReportToParent),
        Some(_) => return Ok(Route::ThisProcess),
        None => {}
    }
    let rootless = fork_server::moved_here()
        || match settings::mode() {
            // A fork server started: this process decided it runs rootless.
            Ok(ModeSetting::Auto) if fork_server::started() => true,
            Ok(ModeSetting::Auto) => !crate::os::privilege::privileged(),
            Ok(ModeSetting::Root) => false,
            Ok(ModeSetting::Rootless) => true,
            Err(message) => return Err(Ended::failed(FailureKind::Setup, message.to_owned())),
        };
    if !rootless {
        return Ok(Route::ThisProcess);
    }
    if spec.veth.is_some() {
        return Err(Ended::failed(
            FailureKind::Setup,
            format!(
                "netns-test: test `{}` asks for a veth pair to the host, which needs real root (CAP_NET_ADMIN in the \
                 host's network namespace); this process runs netns tests rootless, in user namespaces. Run it with \
                 sudo, or link namespaces to each other inside the test instead of to the host.",
                spec.name
            ),
        ));
    }
    if fork_server::moved_here() {
        // This process runs this one test, in its own user namespace.
        return Ok(Route::ThisProcess);
    }
    Ok(Route::ChildProcess)
}

/// Root mode, or a rootless test's child: the test runs in this process.
fn run_in_this_process<T: TestReturn + 'static>(
    spec: &'static TestSpec,
    body: fn() -> T,
) -> Outcome<T> {
    let host = match HostSide::prepare(spec) {
        Ok(host) => host,
        Err(ended) => return Outcome::ended(spec.name, ended),
    };
    if spec.timeout.is_none() {
        return match run_in_namespace(spec, host, body) {
            Ok(value) => Outcome::value(spec.name, value),
            Err(ended) => Outcome::ended(spec.name, ended),
        };
    }
    // The value is reported on the test's own thread; only its meaning
    // comes back. `T` is then rebuilt, so it need not be `Send`.
    let ended = timeout::run_with_timeout(spec, host, move |host| {
        run_in_namespace(spec, host, body).map_or_else(|ended| ended, Ended::of_value)
    });
    Outcome::ended(spec.name, ended)
}

/// A rootless test's child process (forked, or started for the test): the
/// test runs on the calling thread and only its meaning is reported. The
/// parent enforces the timeout, by killing this process.
fn run_in_child_process<T: TestReturn + 'static>(
    spec: &'static TestSpec,
    body: fn() -> T,
) -> Ended {
    HostSide::prepare(spec)
        .and_then(|host| run_in_namespace(spec, host, body))
        .map_or_else(|ended| ended, Ended::of_value)
}

/// A rootless test in a runner of the fork server: on a thread named like
/// the test, as libtest runs it, in fresh namespaces entered there (as in
/// root mode); only its meaning comes back, so `T` need not be `Send`. The
/// test process enforces the timeout.
///
/// The thread starts on the runner's CPU and may then run on any: on a
/// virtual machine, starting it on an idle CPU, and waking the runner there
/// when it ends, costs far more than the test's own work.
fn run_in_runner<T: TestReturn + 'static>(spec: &'static TestSpec, body: fn() -> T) -> Ended {
    let cpus = crate::os::sys::stay_on_this_cpu().ok();
    let thread = std::thread::Builder::new()
        .name(spec.libtest_name().to_owned())
        .spawn(move || {
            fork_server::note_test_thread();
            if let Some(cpus) = &cpus {
                let _ = crate::os::sys::set_cpu_affinity(cpus);
            }
            run_in_child_process(spec, body)
        });
    if let Some(cpus) = &cpus {
        let _ = crate::os::sys::set_cpu_affinity(cpus);
    }
    match thread {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|panic| Ended::of_panic(panic.as_ref())),
        Err(error) => Ended::failed(
            FailureKind::Setup,
            format!(
                "netns-test: cannot spawn the thread of test `{}`: {error}",
                spec.name
            ),
        ),
    }
}

/// Enters the test's namespaces, runs the body, and leaves them (keep and
/// capture policies included), also when the body panics; the body's panic
/// goes on unwinding. `Err` when the namespaces could not be set up.
fn run_in_namespace<T: TestReturn>(
    spec: &TestSpec,
    host: HostSide,
    body: fn() -> T,
) -> Result<T, Ended> {
    let namespace = TestNamespace::enter(spec, host)?;
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => {
            // A network of the test failed under it: the test fails.
            let failure = namespace.network_failure();
            namespace.leave(value.is_failure() || failure.is_some());
            match failure {
                None => Ok(value),
                Some(why) => Err(Ended::failed(FailureKind::Setup, why)),
            }
        }
        Err(panic) => {
            if let Some(why) = namespace.network_failure() {
                eprintln!("{why}");
            }
            namespace.leave(true);
            resume_unwind(panic)
        }
    }
}
