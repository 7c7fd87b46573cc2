//! Rootless mode: without CAP_SYS_ADMIN, each netns test runs in a child
//! process of its own, started from the test binary itself inside a new user
//! namespace where it is uid 0 with every capability; there it takes the
//! ordinary path. Plain tests in the same binary are untouched: only the
//! child enters the user namespace.
//!
//! `unshare(CLONE_NEWUSER)` refuses a multi-threaded process, and a test
//! binary always is one; a freshly forked child is not, so the user namespace
//! is made in the child between `fork` and `exec`.

use crate::runner::TestSpec;
use nix::libc;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio, Termination};
use std::time::{Duration, Instant};

/// Set in the child's environment to the test it runs.
const INSIDE: &str = "NETNS_TEST_INSIDE";
/// Lines the child prints around the body's output, and before its result.
const BEGIN: &str = "\u{1e}netns-test:begin";
const END: &str = "\u{1e}netns-test:end";
const RESULT: &str = "\u{1e}netns-test:result ";

/// How this process runs netns tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// With CAP_SYS_ADMIN: on the test thread.
    Root,
    /// Without: in a child process in a user namespace.
    Rootless,
}

/// `NETNS_TEST_MODE=auto|root|rootless`, default `auto`: root when the
/// process has CAP_SYS_ADMIN and CAP_NET_ADMIN, rootless otherwise.
pub(crate) fn mode() -> Result<Mode, String> {
    match std::env::var("NETNS_TEST_MODE").as_deref() {
        Err(_) | Ok("") | Ok("auto") => Ok(if crate::privileged() {
            Mode::Root
        } else {
            Mode::Rootless
        }),
        Ok("root") => Ok(Mode::Root),
        Ok("rootless") => Ok(Mode::Rootless),
        Ok(other) => Err(format!(
            "netns-test: NETNS_TEST_MODE={other:?} is not one of auto, root, rootless"
        )),
    }
}

/// Whether this process is the child started for the test `spec`.
pub(crate) fn is_child_for(spec: &TestSpec) -> bool {
    std::env::var_os(INSIDE).is_some_and(|name| name == spec.name)
}

/// Whether this process is a child started for some test.
pub(crate) fn is_child() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// A test's return type, which the parent process rebuilds when the child
/// reports a pass.
#[diagnostic::on_unimplemented(
    message = "a #[netns_test] function must return (), Result<(), E> or ExitCode, not `{Self}`",
    label = "this return type"
)]
pub trait TestReturn: Termination {
    /// The value of a passing test.
    fn passed() -> Self;
    /// Whether this value fails the test (keep and capture policies ask).
    fn is_failure(&self) -> bool;
}

impl TestReturn for () {
    fn passed() {}
    fn is_failure(&self) -> bool {
        false
    }
}

impl<T: TestReturn, E: std::fmt::Debug> TestReturn for Result<T, E> {
    fn passed() -> Self {
        Ok(T::passed())
    }
    fn is_failure(&self) -> bool {
        self.as_ref().map_or(true, T::is_failure)
    }
}

impl TestReturn for ExitCode {
    fn passed() -> Self {
        ExitCode::SUCCESS
    }
    fn is_failure(&self) -> bool {
        *self != ExitCode::SUCCESS
    }
}

/// How the child's test ended.
pub(crate) enum ChildResult {
    Passed,
    /// The body panicked with this message.
    Panicked(String),
    /// It could not run, or returned a failure (already printed).
    Failed(String),
}

/// In the child: runs the test (`run` takes the ordinary path, so the body's
/// panic unwinds out of it), reports how it ended on stdout, and ends the
/// process: the child exists for this one test.
pub(crate) fn run_as_child<T: Termination>(run: impl FnOnce() -> Result<T, String>) -> ! {
    use std::io::Write;
    println!("{BEGIN}");
    eprintln!("{BEGIN}");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
    let (kind, text) = match result {
        Ok(Ok(value)) => {
            if value.report() == ExitCode::SUCCESS {
                ("passed", String::new())
            } else {
                (
                    "failed",
                    "the test returned a failure (printed above)".to_owned(),
                )
            }
        }
        Ok(Err(failure)) => ("failed", failure),
        Err(payload) => ("panicked", payload_text(payload.as_ref())),
    };
    eprintln!("{END}");
    println!("{END}\n{RESULT}{kind} {}", hex(text.as_bytes()));
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(0)
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> String {
    let bytes: Vec<u8> = (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// In the parent: runs the test `spec` in a child process in a new user
/// namespace, relays the body's output (so that libtest captures it as any
/// test's), enforces the timeout by killing the child, and returns how the
/// test ended.
pub(crate) fn run_in_child(spec: &TestSpec) -> Result<ChildResult, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("netns-test: cannot find the test binary to re-run: {e}"))?;
    let test_name = crate::runner::libtest_name(spec);
    let mut command = Command::new(exe);
    command
        .args([
            test_name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(INSIDE, spec.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let maps = IdMaps::for_this_process();
    // SAFETY: the hook makes system calls only (unshare, open, write, close)
    // on buffers prepared before the fork; it does not allocate or lock.
    unsafe {
        command.pre_exec(move || maps.enter_new_user_namespace());
    }
    let mut child = command
        .spawn()
        .map_err(|e| explain_user_namespace_refusal(&e))?;

    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let relay_err = std::thread::spawn(move || relay(stderr, false));
    let relay_out = std::thread::spawn(move || relay(stdout, true));

    let deadline = spec
        .timeout
        .map(|t| Instant::now() + Duration::from_millis(t.millis));
    let status = loop {
        if deadline.is_none() {
            match child.wait() {
                Ok(status) => break Some(status),
                Err(e) => return Err(format!("netns-test: waiting for the test's process: {e}")),
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(format!("netns-test: waiting for the test's process: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let result_line = relay_out.join().unwrap_or(None);
    let _ = relay_err.join();
    let Some(status) = status else {
        let timeout = spec.timeout.expect("a deadline comes from a timeout");
        return Ok(ChildResult::Failed(crate::runner::timed_out_message(
            spec, timeout,
        )));
    };
    match result_line {
        Some(line) => {
            let (kind, text) = line.split_once(' ').unwrap_or((&line, ""));
            let text = unhex(text);
            Ok(match kind {
                "passed" => ChildResult::Passed,
                "panicked" => ChildResult::Panicked(text),
                _ => ChildResult::Failed(text),
            })
        }
        None => Err(format!(
            "netns-test: the process running test `{}` in a user namespace ended ({status}) without a result",
            spec.name
        )),
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

/// The user and group maps of the child's user namespace: uid and gid 0
/// inside are the real user and group outside.
struct IdMaps {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// The process that starts the child, which must not outlive it.
    parent: libc::pid_t,
}

impl IdMaps {
    fn for_this_process() -> IdMaps {
        IdMaps {
            uid_map: format!("0 {} 1\n", nix::unistd::geteuid()).into_bytes(),
            gid_map: format!("0 {} 1\n", nix::unistd::getegid()).into_bytes(),
            parent: std::process::id() as libc::pid_t,
        }
    }

    /// In the forked child: a new user namespace, and the maps written.
    /// Async-signal-safe.
    fn enter_new_user_namespace(&self) -> std::io::Result<()> {
        // Killed with the thread that started it: a SIGKILLed test process
        // leaves no test running. If the parent is already gone, stop here.
        // SAFETY: prctl and getppid take plain integers.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != self.parent {
                libc::_exit(1);
            }
        }
        // SAFETY: unshare takes flags only; the child has one thread.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        write_proc_file(c"/proc/self/setgroups", b"deny")?;
        write_proc_file(c"/proc/self/uid_map", &self.uid_map)?;
        write_proc_file(c"/proc/self/gid_map", &self.gid_map)
    }
}

/// Writes `data` to a `/proc` file with open/write/close only.
fn write_proc_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: writes our buffer to the fd we opened.
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let error = std::io::Error::last_os_error();
    // SAFETY: closes the fd we opened.
    unsafe { libc::close(fd) };
    if written < 0 {
        return Err(error);
    }
    Ok(())
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Why the kernel refused a user namespace, and what to do about it.
fn explain_user_namespace_refusal(error: &std::io::Error) -> String {
    let reason = user_namespace_refusal(
        error.raw_os_error(),
        read_sysctl("/proc/sys/user/max_user_namespaces").as_deref(),
        read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref(),
    );
    format!(
        "netns-test: rootless mode (no CAP_SYS_ADMIN) cannot create a user namespace for this test: {error}.\n{reason}\n\
         Or run the tests as root (`sudo -E cargo test`). NETNS_TEST_UNSUPPORTED=skip turns this failure into a skipped test."
    )
}

/// The refusal's cause from the errno and the kernel's settings.
pub(crate) fn user_namespace_refusal(
    errno: Option<i32>,
    max_user_namespaces: Option<&str>,
    unprivileged_userns_clone: Option<&str>,
) -> String {
    if max_user_namespaces == Some("0") || errno == Some(libc::ENOSPC) {
        "The kernel allows no more user namespaces here: user.max_user_namespaces is 0 or exhausted. \
         Raise it: `sudo sysctl -w user.max_user_namespaces=10000`."
            .into()
    } else if unprivileged_userns_clone == Some("0") {
        "This kernel forbids unprivileged user namespaces: kernel.unprivileged_userns_clone = 0 (Debian). \
         Allow them: `sudo sysctl -w kernel.unprivileged_userns_clone=1`."
            .into()
    } else if errno == Some(libc::EPERM) {
        "The kernel settings allow user namespaces, so a security policy refused the call: a seccomp filter \
         (Docker's default profile blocks unshare; run with `--security-opt seccomp=unconfined`) or an LSM."
            .into()
    } else {
        "This kernel may lack user namespaces (CONFIG_USER_NS).".into()
    }
}

/// Inside the child's user namespace, when setting up the test's namespace
/// failed for lack of privilege: the user namespace holds no capabilities,
/// which is what AppArmor does on Ubuntu 23.10+ and GitHub's ubuntu-24.04.
/// Words that mark the AppArmor refusal in a child's failure message.
pub(crate) const APPARMOR: &str = "AppArmor restricts unprivileged user namespaces";

pub(crate) fn apparmor_hint() -> Option<String> {
    if !is_child() {
        return None;
    }
    (read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1"))
        .then(|| {
            format!("netns-test: the user namespace was created but holds no capabilities: {APPARMOR} \
             (kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10+ and \
             GitHub's ubuntu-24.04 runners). Allow them: `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, \
             or run the tests with sudo.")
        })
}

/// `NETNS_TEST_UNSUPPORTED=skip`: a refusal becomes a pass with one line.
pub(crate) fn skip_unsupported() -> bool {
    std::env::var("NETNS_TEST_UNSUPPORTED").as_deref() == Ok("skip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_refusal() {
        let max = user_namespace_refusal(Some(libc::ENOSPC), Some("0"), None);
        assert!(max.contains("user.max_user_namespaces"), "{max}");
        let debian = user_namespace_refusal(Some(libc::EPERM), Some("1000"), Some("0"));
        assert!(
            debian.contains("kernel.unprivileged_userns_clone = 0"),
            "{debian}"
        );
        let seccomp = user_namespace_refusal(Some(libc::EPERM), Some("1000"), Some("1"));
        assert!(seccomp.contains("seccomp"), "{seccomp}");
        assert!(user_namespace_refusal(Some(libc::EINVAL), None, None).contains("CONFIG_USER_NS"));
    }

    #[test]
    fn results_survive_the_trip() {
        let text = "multi\nline \u{1e} payload";
        assert_eq!(unhex(&hex(text.as_bytes())), text);
    }
}
