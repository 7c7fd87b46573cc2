//! Rootless mode: without CAP_SYS_ADMIN, each netns test runs in a child
//! process of the test binary, started for that one test in a new user
//! namespace where it has the capabilities to make its network namespace.
//!
//! `unshare(CLONE_NEWUSER)` refuses a multi-threaded process, and a test
//! binary always is one; a freshly forked child is not, so the user
//! namespace is made in the child between `fork` and `exec`
//! ([`IdMaps::enter_new_user_namespace`]).
//!
//! Two sides: [`run_in_child_process`] in the test's process starts the
//! child, relays its output and reads how it ended; [`report_to_parent`] in
//! the child runs the test and writes that.

use crate::contract::{Ended, FailureKind, TestSpec};
use crate::os::privilege;
use crate::os::userns::IdMaps;
use crate::settings;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Lines the child prints around the body's output, and before its result.
const BEGIN: &str = "\u{1e}netns-test:begin";
const END: &str = "\u{1e}netns-test:end";
const RESULT: &str = "\u{1e}netns-test:result ";

/// In the child: reports how the test ended on stdout and ends the process,
/// which exists for this one test.
pub(crate) fn report_to_parent(run: impl FnOnce() -> Ended) -> ! {
    use std::io::Write;
    println!("{BEGIN}");
    eprintln!("{BEGIN}");
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|panic| Ended::of_panic(panic.as_ref()));
    eprintln!("{END}");
    println!("{END}\n{RESULT}{}", ended.encode());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(0)
}

/// In the test's process: runs the test `spec` in a child process in a new
/// user namespace, relays the body's output (so that libtest captures it as
/// any test's), enforces the timeout by killing the child, and returns how
/// the test ended.
pub(crate) fn run_in_child_process(spec: &TestSpec) -> Ended {
    let mut child = match spawn_child(spec) {
        Ok(child) => child,
        Err(ended) => return ended,
    };
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let relay_err = std::thread::spawn(move || relay(stderr, false));
    let relay_out = std::thread::spawn(move || relay(stdout, true));
    let deadline = spec
        .timeout
        .map(|t| Instant::now() + Duration::from_millis(t.millis));
    let status = wait_until(&mut child, deadline);
    let result_line = relay_out.join().unwrap_or(None);
    let _ = relay_err.join();
    match status {
        Err(error) => Ended::failed(
            FailureKind::Setup,
            format!("netns-test: waiting for the process of test `{}`: {error}", spec.name),
        ),
        Ok(None) => Ended::failed(FailureKind::TimedOut, spec.timed_out_message()),
        Ok(Some(status)) => result_line.as_deref().and_then(Ended::decode).unwrap_or_else(|| {
            Ended::failed(
                FailureKind::Setup,
                format!(
                    "netns-test: the process running test `{}` in a user namespace ended ({status}) without a result",
                    spec.name
                ),
            )
        }),
    }
}

/// Starts this test binary again for the one test, in a new user namespace.
fn spawn_child(spec: &TestSpec) -> Result<Child, Ended> {
    let exe = std::env::current_exe().map_err(|e| {
        Ended::failed(
            FailureKind::Setup,
            format!("netns-test: cannot find the test binary to re-run: {e}"),
        )
    })?;
    let mut command = Command::new(exe);
    command
        .args([
            spec.libtest_name(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(settings::INSIDE, spec.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let maps = IdMaps::for_this_process();
    // SAFETY: the hook makes system calls only (prctl, unshare, open, write,
    // close) on buffers prepared before the fork; it does not allocate or lock.
    unsafe {
        command.pre_exec(move || maps.enter_new_user_namespace());
    }
    command.spawn().map_err(|error| {
        Ended::setup_failed(spec.name, privilege::explain_user_namespace_refusal(error))
    })
}

/// Waits for the child until `deadline`, then kills it: `Ok(None)` when
/// the time ran out.
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
    let Some(deadline) = deadline else {
        return child.wait().map(Some);
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Copies the child's output between the markers to this thread's stdout or
/// stderr (which libtest captures), and returns the result line.
fn relay(stream: impl Read, to_stdout: bool) -> Option<String> {
    let mut inside = false;
    let mut result = None;
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        if line == BEGIN {
            inside = true;
        } else if line == END {
            inside = false;
        } else if let Some(rest) = line.strip_prefix(RESULT) {
            result = Some(rest.to_owned());
        } else if inside {
            if to_stdout {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    result
}
