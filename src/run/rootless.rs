//! Rootless mode without a fork server (see `fork_server.rs`, which runs
//! rootless tests when it could start): each netns test runs in a child
//! process of the test binary, started for that one test in a new user
//! namespace where it has the capabilities to make its network namespace.
//! Also the relay of a child's output, which both ways use.
//!
//! `unshare(CLONE_NEWUSER)` refuses a multi-threaded process, and a test
//! binary always is one; a freshly forked child is not, so the user
//! namespace is made in the child between `fork` and `exec`
//! ([`IdMaps::enter_new_user_namespace`]), which also joins a process group
//! of its own. Before `main` the child then goes on as pid 1 of a pid
//! namespace of its own (see `fork_server.rs` and `os/contain.rs`), so that
//! everything the test started goes with it, in whatever process group.
//!
//! Two sides: [`run_in_child_process`] in the test's process starts the
//! child, relays its output and reads how it ended; [`report_to_parent`] in
//! the child runs the test and writes that.

use crate::contract::{Ended, FailureKind, TestSpec};
use crate::os::privilege;
use crate::os::sys;
use crate::os::userns::IdMaps;
use crate::settings;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines the child prints around the body's output, so that libtest's
/// own lines in the child are not relayed; the nonce, new for each child,
/// keeps the body from printing them by chance. How the test ended travels
/// on a descriptor of its own, which the body cannot write to by printing.
fn markers(nonce: &str) -> (Vec<u8>, Vec<u8>) {
    (
        format!("\u{1e}netns-test:begin {nonce}\n").into_bytes(),
        format!("\u{1e}netns-test:end {nonce}\n").into_bytes(),
    )
}

/// A word no one can guess: 64 bits from the hasher keys the OS gives std.
fn new_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// How long the relays may go on after the child ended: its own children
/// (killed with its process group) may still flush, or hold a pipe from
/// another session.
pub(super) const RELAY_GRACE: Duration = Duration::from_secs(2);

/// In the child: runs the test, reports how it ended on the result
/// descriptor and ends the process, which exists for this one test.
pub(crate) fn report_to_parent(run: impl FnOnce() -> Ended) -> ! {
    let (fd, nonce) = settings::result_fd().unwrap_or((-1, ""));
    // Programs the body starts do not get it.
    let result = sys::set_cloexec(fd).ok().map(|()| {
        // SAFETY: the parent passed this open descriptor for the child's
        // result alone (NETNS_TEST_RESULT_FD); nothing else here owns it.
        unsafe { std::fs::File::from_raw_fd(fd) }
    });
    let (begin, end) = markers(nonce);
    print_raw(&begin, true);
    print_raw(&begin, false);
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|panic| Ended::of_panic(panic.as_ref()));
    print_raw(&end, true);
    print_raw(&end, false);
    if let Some(mut result) = result {
        let _ = result.write_all(ended.encode().as_bytes());
    }
    std::process::exit(0)
}

fn print_raw(bytes: &[u8], to_stdout: bool) {
    let _ = if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).and_then(|()| out.flush())
    } else {
        std::io::stderr().write_all(bytes)
    };
}

/// In the test's process: runs the test `spec` in a child process in a new
/// user namespace, relays the body's output (so that libtest captures it as
/// any test's), enforces the timeout by killing the child's process group,
/// and returns how the test ended.
pub(crate) fn run_in_child_process(spec: &TestSpec) -> Ended {
    let nonce = new_nonce();
    let (mut child, result) = match spawn_child(spec, &nonce) {
        Ok(spawned) => spawned,
        Err(ended) => return ended,
    };
    let (done, relays_done) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    for (stream, to_stdout) in [
        (Box::new(stdout) as Box<dyn Read + Send>, true),
        (Box::new(stderr), false),
    ] {
        let done = done.clone();
        let markers = markers(&nonce);
        // A thread spawned from the test's thread prints to the test's
        // captured output, as libtest captures it.
        std::thread::spawn(move || {
            relay(stream, markers, to_stdout);
            let _ = done.send(());
        });
    }
    let deadline = spec
        .timeout
        .map(|t| Instant::now() + Duration::from_millis(t.millis));
    let status = wait_until(&mut child, deadline);
    // Whatever the body left running in the child's process group goes with it.
    sys::kill_process_group(child.id());
    let relays_until = Instant::now() + RELAY_GRACE;
    for _ in 0..2 {
        let left = relays_until.saturating_duration_since(Instant::now());
        if relays_done.recv_timeout(left).is_err() {
            break;
        }
    }
    match status {
        Err(error) => Ended::failed(
            FailureKind::Setup,
            format!("netns-test: waiting for the process of test `{}`: {error}", spec.name),
        ),
        Ok(None) => Ended::failed(FailureKind::TimedOut, spec.timed_out_message()),
        Ok(Some(status)) => read_result(result).unwrap_or_else(|| {
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

/// Starts this test binary again for the one test, in a new user namespace
/// and a process group of its own; returns it and the read end of its
/// result descriptor.
fn spawn_child(spec: &TestSpec, nonce: &str) -> Result<(Child, OwnedFd), Ended> {
    let setup_failed = |what: &str, error: String| {
        Ended::failed(FailureKind::Setup, format!("netns-test: {what}: {error}"))
    };
    let exe = std::env::current_exe()
        .map_err(|e| setup_failed("cannot find the test binary to re-run", e.to_string()))?;
    let (result_read, result_write) =
        sys::pipe().map_err(|e| setup_failed("cannot make the result pipe", e.to_string()))?;
    let result_fd = result_write.as_raw_fd();
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
        .env(settings::RESULT_FD, format!("{result_fd} {nonce}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let maps = IdMaps::for_this_process();
    // SAFETY: the hook makes system calls only (setpgid, fcntl, prctl,
    // unshare, open, write, close) on buffers prepared before the fork; it
    // does not allocate or lock.
    unsafe {
        command.pre_exec(move || {
            sys::own_process_group()?;
            sys::inherit_across_exec(result_fd)?;
            maps.enter_new_user_namespace()
        });
    }
    let child = command.spawn().map_err(|error| {
        Ended::setup_failed(spec.name, privilege::explain_user_namespace_refusal(error))
    })?;
    // Only the child writes a result: reading stops at what it wrote.
    drop(result_write);
    Ok((child, result_read))
}

/// What the child wrote on its result descriptor before it ended. The
/// descriptor is read without waiting: a process the body started without
/// `exec` may still hold its write end.
pub(super) fn read_result(result: OwnedFd) -> Option<Ended> {
    sys::set_nonblocking(result.as_fd()).ok()?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(read @ 1..) = sys::read_some(result.as_fd(), &mut chunk) {
        text.extend_from_slice(&chunk[..read]);
    }
    Ended::decode(std::str::from_utf8(&text).ok()?)
}

/// Waits for the child until `deadline`, then kills it and its process
/// group: `Ok(None)` when the time ran out.
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
    let Some(deadline) = deadline else {
        return child.wait().map(Some);
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            sys::kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Copies the child's output between the markers to this thread's stdout
/// or stderr, byte for byte (text that is not UTF-8 is shown with
/// replacement characters).
fn relay(mut stream: impl Read, markers: (Vec<u8>, Vec<u8>), to_stdout: bool) {
    let mut relay = Relay::new(Some(markers), to_stdout);
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => relay.push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    relay.finish();
}

/// What a child process writes, shown on this thread's stdout or stderr
/// (so that libtest captures it as any test's) line by line, byte for byte
/// (text that is not UTF-8 with replacement characters); with markers,
/// only what stands between them.
pub(super) struct Relay {
    pending: Vec<u8>,
    inside: bool,
    markers: Option<(Vec<u8>, Vec<u8>)>,
    to_stdout: bool,
}

/// A line longer than this is shown as it comes.
const LONG_LINE: usize = 8192;

impl Relay {
    pub(super) fn new(markers: Option<(Vec<u8>, Vec<u8>)>, to_stdout: bool) -> Relay {
        Relay {
            pending: Vec::new(),
            inside: markers.is_none(),
            markers,
            to_stdout,
        }
    }

    /// Shows the whole lines of what came so far.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        // Whole lines, each a marker or the body's output.
        let mut start = 0;
        while let Some(newline) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + newline + 1;
            let line = &self.pending[start..end];
            match &self.markers {
                Some((begin, _)) if line == begin.as_slice() => self.inside = true,
                Some((_, end)) if line == end.as_slice() => self.inside = false,
                _ if self.inside => show(line, self.to_stdout),
                _ => {}
            }
            start = end;
        }
        self.pending.drain(..start);
        // A long line without an end is shown as it comes.
        if self.inside && self.pending.len() >= LONG_LINE {
            show(&std::mem::take(&mut self.pending), self.to_stdout);
        }
    }

    /// The end of the stream: shows what is left.
    pub(super) fn finish(&mut self) {
        if self.inside && !self.pending.is_empty() {
            show(&std::mem::take(&mut self.pending), self.to_stdout);
        }
    }
}

fn show(bytes: &[u8], to_stdout: bool) {
    let text = String::from_utf8_lossy(bytes);
    if to_stdout {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
}
