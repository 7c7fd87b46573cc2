//! Rootless mode's fork server: a process forked from the test binary
//! before `main`, in a user namespace of its own, that forks the processes
//! rootless tests run in. No `exec`, no second start of the test harness.
//!
//! `unshare(CLONE_NEWUSER)` needs a single-threaded process, and a fork is
//! only safe from one; a test binary has threads from `main` on. So a
//! constructor ([`START_AT_LOAD`], in `.init_array`) runs while the process
//! still has one thread and, when this process would run netns tests
//! rootless (a binary with `#[netns_test]`s: not the `netns-test` command,
//! say), forks the server. The server enters a new user namespace (uid 0
//! inside is the user outside) and never starts a thread, so the processes
//! it forks may run any code.
//!
//! Those are runners. A runner runs one test at a time, each on a thread
//! named like the test in fresh namespaces entered on that thread, as root
//! mode runs tests in the test process; so a test costs about what it costs
//! as root, not a fork, a process exit and the page faults of a fresh
//! address space (measured: 1.9 times root's CPU with a fork per test).
//! Between two tests a runner has one thread. It leads a process group of
//! its own and goes on as pid 1 of a pid namespace of its own (see
//! `os/contain.rs`: its shim, outside, forks holders of kept namespaces for
//! it), so every process a test starts is in that namespace, in whatever
//! session or process group: after each test the runner kills them all and
//! reaps them, then tells the test process that the test ended; it goes on
//! with the next test unless one survived, the test left descriptors open
//! or a thread running (which would print into the next test's output).
//! When a runner dies, the kernel kills what is left in its namespace.
//!
//! The test process talks to each runner on a socket of their own (the
//! server forks runners and hands those sockets over, one ahead), and keeps
//! the idle ones. A process that runs a single test, as under
//! cargo-nextest, starts no server when it can tell its test is a plain one
//! and moves itself into a user namespace, and then into a pid namespace of
//! its own, when it is a netns test (see [`start`]); when it cannot tell,
//! the server is that test's runner itself. The server kills a runner's
//! process group when the test process asks (a timeout), tells the test
//! process when a runner died (on that socket: it keeps the runner's end),
//! reaps what dying runners leave (it is their subreaper), and kills and
//! reaps every runner when the test process ends (SIGKILL included: it
//! watches the test process through a pidfd). It ignores the signals a
//! terminal or a CI's cancel sends the test process's whole process group,
//! so that it is there to do so. The test process ends it and reaps it when
//! it exits ([`FINISH_AT_EXIT`], in `.fini_array`).
//!
//! A fork keeps the address space, so the test's entry travels as three
//! addresses ([`Call`]), valid in the server and its runners because they
//! are copies of this process's image. The test process sends them with
//! descriptors for the test's stdout, stderr and result and the working
//! directory ([`run_in_forked_child`]), and the environment when it changed
//! since the server was forked (then to a runner that has run no test,
//! which has one thread and may set it; it ends after that test).
//!
//! When the kernel refuses the user namespace, the server says why once and
//! ends; each rootless test then fails (or is skipped) with the refusal.
//! When there is no server (it could not start, or this binary's
//! constructor did not run), rootless tests run the way that needs none:
//! the test binary started again for each one (see `rootless.rs`), which
//! goes on as pid 1 of a pid namespace of its own as well.

use super::rootless::{self, Relay};
use crate::contract::{Ended, FailureKind, TestSpec};
use crate::os::contain;
use crate::os::privilege;
use crate::os::sys::{self, Forked};
use crate::os::userns::IdMaps;
use crate::settings::{self, ModeSetting};
use crate::sync::lock;
use nix::libc;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The constructor: the C runtime calls it before `main`, after Rust's own
/// (which record the arguments at a higher priority), while the process has
/// one thread. Linked into every binary that uses netns-test.
#[used]
#[unsafe(link_section = ".init_array")]
static START_AT_LOAD: extern "C" fn() = start_at_load;

extern "C" fn start_at_load() {
    // Nothing may unwind out of a constructor.
    let _ = std::panic::catch_unwind(start);
}

/// The destructor: the C runtime calls it when the process exits (after
/// `main`, or `exit` from a test). Linked into every binary that uses
/// netns-test.
#[used]
#[unsafe(link_section = ".fini_array")]
static FINISH_AT_EXIT: extern "C" fn() = finish_at_exit;

extern "C" fn finish_at_exit() {
    // Nothing may unwind out of a destructor.
    let _ = std::panic::catch_unwind(finish);
}

/// At the end of the process: the fork server ends (its runners, and what
/// their tests started, with it) and is reaped.
fn finish() {
    if let Some(server) = SERVER.get() {
        server.end();
    }
}

/// The server of this process, when it started one.
static SERVER: OnceLock<Server> = OnceLock::new();

/// The largest request: the call and the environment's changes. A test
/// process whose environment changed by more runs its test by `exec`.
const MAX_REQUEST: usize = 64 * 1024;

/// The test process's side of its fork server.
struct Server {
    /// To the server: requests for runners, and kills; from it: its first
    /// word, then runners, each as its id and a socket to it.
    control: OwnedFd,
    pid: i32,
    runners: Mutex<Runners>,
    /// The environment when the server was forked, which its runners have.
    environment: Vec<(OsString, OsString)>,
    /// Whether to ask for a runner ahead when the last idle one is taken
    /// (not in a process that runs one test, as under cargo-nextest).
    ahead: bool,
}

/// The runners of this process, as the test process sees them.
struct Runners {
    state: State,
    /// Runners waiting for a test.
    idle: Vec<Link>,
    /// Runners asked for (or sent ahead) and not received yet.
    coming: usize,
}

/// The test process's socket to one runner, and the runner's id.
struct Link {
    socket: OwnedFd,
    pid: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The server has not said yet whether it has its user namespace.
    Starting,
    Ready,
    /// The kernel refused the user namespace with this errno.
    Refused(i32),
    /// The server is not there (any more).
    Gone,
}

/// Whether this process would run netns tests rootless, and is not itself
/// a rootless test's process: then it wants a fork server.
fn wanted() -> bool {
    if settings::in_rootless_child() || !settings::fork_server_enabled() {
        return false;
    }
    // Listing tests (`--list`, as cargo-nextest does first) runs none.
    if std::env::args_os().any(|a| a == "--list") {
        return false;
    }
    match settings::mode() {
        Ok(ModeSetting::Auto) => !privilege::privileged(),
        Ok(ModeSetting::Rootless) => true,
        // Root mode, or a mode the tests will report as wrong.
        Ok(ModeSetting::Root) | Err(_) => false,
    }
}

/// The one test a libtest process runs (`--exact NAME`, as cargo-nextest
/// starts it), from the arguments.
fn one_test_named() -> Option<String> {
    const WITH_VALUE: [&str; 7] = [
        "--skip",
        "--test-threads",
        "--format",
        "--color",
        "--logfile",
        "-Z",
        "--shuffle-seed",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--exact") {
        return None;
    }
    let mut names = Vec::new();
    let mut value_next = false;
    for arg in args {
        if value_next {
            value_next = false;
        } else if WITH_VALUE.contains(&arg.as_str()) {
            value_next = true;
        } else if !arg.starts_with('-') {
            names.push(arg);
        }
    }
    match <[String; 1]>::try_from(names) {
        Ok([name]) => Some(name),
        Err(_) => None,
    }
}

/// The `#[netns_test]`s of this binary: their `static` options, found by
/// their [`SPEC_MARKER`](crate::contract::SPEC_MARKER) in the binary's
/// writable data (none in a binary that is no test binary, such as the
/// `netns-test` command). `None` when it cannot tell.
fn netns_tests_in_this_binary() -> Option<Vec<&'static TestSpec>> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut found = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, _, _, _, path] = fields[..] else {
            continue;
        };
        if !perms.starts_with("rw") || std::path::Path::new(path) != exe {
            continue;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        // SAFETY: [start, end) is a readable, writable private mapping of this executable (its data segment), mapped for the life of the process, page-aligned and so aligned for u64; every bit pattern is a valid u64; the process has one thread here, so nothing writes it meanwhile.
        let words = unsafe { std::slice::from_raw_parts(start as *const u64, (end - start) / 8) };
        for (at, pair) in words.windows(2).enumerate() {
            if pair == crate::contract::SPEC_MARKER {
                let address = start + at * 8;
                // SAFETY: these 128 random bits stand first in a `TestSpec` (`#[repr(C)]`), which the attribute puts in a `static` of this executable; they occur nowhere else in its data, so `address` is such a `static`, alive and unmoved for the life of the process.
                found.push(unsafe { &*(address as *const TestSpec) });
            }
        }
    }
    Some(found)
}

/// Whether this process started a fork server (it runs netns tests
/// rootless).
pub(crate) fn started() -> bool {
    SERVER.get().is_some()
}

/// Set when this process moved itself into a user namespace of its own
/// to run its one test (see [`start`]).
static MOVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process moved itself into a user namespace of its own: it
/// runs one netns test, in this process, as root mode would.
pub(crate) fn moved_here() -> bool {
    MOVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts the fork server when this process wants one and has one thread.
///
/// A process that runs one test (cargo-nextest runs each in a process of
/// its own) looks the test up among the binary's netns tests first: when
/// it is one, the process moves itself into a user namespace of its own
/// and runs it as root mode would (it runs nothing else, so no one else
/// sees the move); when it is a plain test, it starts nothing.
fn start() {
    // A process started for one rootless test (the way without a fork
    // server): what the test starts ends with it.
    if settings::rootless_child_of().is_some() {
        let _ = contain::enter(crate::os::holder::answer_in_shim);
        return;
    }
    if !wanted() {
        return;
    }
    // Only a binary with netns tests (one it cannot look into too).
    let specs = netns_tests_in_this_binary();
    if specs.as_ref().is_some_and(Vec::is_empty) {
        return;
    }
    if settings::runs_one_test() {
        if let (Some(name), Some(specs)) = (one_test_named(), &specs) {
            if !specs.iter().any(|spec| spec.libtest_name() == name) {
                return;
            }
            if sys::thread_count().ok() == Some(1)
                && IdMaps::for_this_process().enter().is_ok()
                && sys::become_subreaper().is_ok()
            {
                settings::mark_rootless_child();
                MOVED.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = contain::enter(crate::os::holder::answer_in_shim);
                return;
            }
        }
    }
    let Ok((control, server_end)) = sys::packet_socket_pair() else {
        return;
    };
    let maps = IdMaps::for_this_process();
    let parent = std::process::id() as i32;
    let environment: Vec<_> = std::env::vars_os().collect();
    match sys::fork_single_threaded() {
        Ok(Forked::Child) => {
            drop(control);
            serve(server_end, parent, &maps)
        }
        Ok(Forked::Parent(pid)) => {
            drop(server_end);
            let _ = SERVER.set(Server {
                control,
                pid,
                runners: Mutex::new(Runners {
                    state: State::Starting,
                    idle: Vec::new(),
                    // The server forks the first one at once.
                    coming: 1,
                }),
                environment,
                ahead: !settings::runs_one_test(),
            });
        }
        // More than one thread, or no fork: tests run by `exec` instead.
        Err(_) => {}
    }
}

/// A test's entry as three addresses: a monomorphic trampoline
/// (`run_in_runner::<T>` in `run/mod.rs`), the test's `&'static TestSpec` and
/// its body, `fn() -> T` with the return type erased.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Call {
    run: fn(&'static TestSpec, fn()) -> Ended,
    spec: &'static TestSpec,
    body: fn(),
}

/// [`Call`] as it travels: the addresses as integers.
#[derive(Clone, Copy)]
pub(crate) struct CallWords([usize; 3]);

impl CallWords {
    /// The call of `run(spec, body)`, made in the test process.
    pub(crate) fn new<T>(
        run: fn(&'static TestSpec, fn() -> T) -> Ended,
        spec: &'static TestSpec,
        body: fn() -> T,
    ) -> CallWords {
        CallWords([
            run as usize,
            spec as *const TestSpec as usize,
            body as usize,
        ])
    }

    fn to_bytes(self) -> [u8; 24] {
        let mut bytes = [0u8; 24];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&(word as u64).to_ne_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<CallWords> {
        let mut words = [0usize; 3];
        for (word, chunk) in words.iter_mut().zip(bytes.get(..24)?.chunks_exact(8)) {
            *word = u64::from_ne_bytes(chunk.try_into().ok()?) as usize;
        }
        Some(CallWords(words))
    }

    /// In a runner: the call these words name.
    fn call(self) -> Call {
        let [run, spec, body] = self.0.map(std::ptr::with_exposed_provenance::<()>);
        // SAFETY: the words are `CallWords::new`'s, made by the test process from `run_in_runner::<T>`, a `&'static TestSpec` and the body `fn() -> T`; this process is a runner, a fork of the server, itself a fork of the test process made before `main`, so the executable and libraries are mapped at the same addresses with the same code, and the `static` spec is there (as it was at the fork, holding only constants and a flag this process may set); a `fn` pointer, a `&'static` and a raw pointer have one layout; calling `fn(&TestSpec, fn() -> T) -> Ended` through `fn(&TestSpec, fn()) -> Ended` is allowed, as any two `fn` pointer types of one ABI are ABI-compatible, and the `fn()` passed is that very `fn() -> T`.
        unsafe { std::mem::transmute::<[*const (); 3], Call>([run, spec, body]) }
    }
}

/// In the test process: runs the rootless test `spec` in a runner of the
/// fork server, relays its output (so that libtest captures it as any
/// test's), enforces the timeout and returns how the test ended. `None`
/// when there is no server to ask: the caller runs the test by `exec`.
pub(crate) fn run_in_forked_child(spec: &'static TestSpec, call: CallWords) -> Option<Ended> {
    let server = SERVER.get()?;
    let mut request = call.to_bytes().to_vec();
    request.extend(server.environment_if_changed());
    if request.len() > MAX_REQUEST {
        return None;
    }
    // A changed environment goes to a runner that has not run a test: it
    // has one thread, so it may set it.
    let fresh = request.len() > 24;
    let setup_failed = |what: &str, error: String| {
        Ended::failed(FailureKind::Setup, format!("netns-test: {what}: {error}"))
    };
    let link = match server.link(fresh) {
        Ok(link) => link,
        Err(Unavailable::Refused(errno)) => {
            return Some(Ended::setup_failed(
                spec.name,
                privilege::explain_user_namespace_refusal(std::io::Error::from_raw_os_error(errno)),
            ));
        }
        Err(Unavailable::Gone) => return None,
        Err(Unavailable::ForkFailed(errno)) => {
            return Some(setup_failed(
                &format!("cannot fork a process for test `{}`", spec.name),
                std::io::Error::from_raw_os_error(errno).to_string(),
            ));
        }
    };
    let fds = (|| -> Result<_, crate::error::Error> {
        Ok((sys::pipe()?, sys::pipe()?, sys::pipe()?, sys::open_cwd()?))
    })();
    let ((out, out_w), (err, err_w), (result, result_w), cwd) = match fds {
        Ok(fds) => fds,
        Err(error) => {
            server.give_back(link);
            return Some(setup_failed(
                "cannot make the descriptors of a forked test",
                error.to_string(),
            ));
        }
    };
    let given = [out_w.as_fd(), err_w.as_fd(), result_w.as_fd(), cwd.as_fd()];
    if let Err(error) = sys::send_with_fds(link.socket.as_fd(), &request, &given) {
        return Some(setup_failed(
            &format!("cannot reach the process for test `{}`", spec.name),
            error.to_string(),
        ));
    }
    // Only the runner holds the write ends now (until the test ends).
    drop((out_w, err_w, result_w, cwd));
    let deadline = spec
        .timeout
        .map(|t| Instant::now() + Duration::from_millis(t.millis));
    let end = wait_relaying(&link.socket, [out, err], deadline, || server.kill(link.pid));
    let exited = |status: Option<i32>| {
        use std::os::unix::process::ExitStatusExt;
        let how = status.map_or("was killed".to_owned(), |status| {
            format!("ended ({})", std::process::ExitStatus::from_raw(status))
        });
        Ended::failed(
            FailureKind::Setup,
            format!(
                "netns-test: the process running test `{}` in a user namespace {how} without a result",
                spec.name
            ),
        )
    };
    Some(match end {
        TestEnd::Done { stays } => {
            let ended = rootless::read_result(result).unwrap_or_else(|| exited(Some(0)));
            if stays {
                server.give_back(link);
            }
            ended
        }
        TestEnd::TimedOut => Ended::failed(FailureKind::TimedOut, spec.timed_out_message()),
        TestEnd::Exited(status) => rootless::read_result(result).unwrap_or_else(|| {
            // The server ran the test itself: its status is this process's to read.
            let status = status.or_else(|| {
                (link.pid == server.pid)
                    .then(|| sys::reap(server.pid).ok())
                    .flatten()
            });
            exited(status)
        }),
    })
}

/// Why there is no runner for a test.
enum Unavailable {
    /// The kernel refused the server's user namespace (the errno).
    Refused(i32),
    /// The server could not fork a runner (the errno).
    ForkFailed(i32),
    /// The server is not there (any more).
    Gone,
}

impl Server {
    /// A runner for a test: an idle one, unless `fresh` (one that has run
    /// no test) is asked for; else the next from the server. Asks for one
    /// ahead when none is left idle.
    fn link(&self, fresh: bool) -> Result<Link, Unavailable> {
        let mut runners = lock(&self.runners);
        if runners.state == State::Starting {
            runners.state = self.first_word();
        }
        match runners.state {
            State::Ready => {}
            State::Refused(errno) => return Err(Unavailable::Refused(errno)),
            State::Starting | State::Gone => return Err(Unavailable::Gone),
        }
        let mut idle = None;
        while !fresh && idle.is_none() {
            let Some(link) = runners.idle.pop() else {
                break;
            };
            // A runner that died while idle has the server's word waiting.
            let dead = sys::wait_readable(&[link.socket.as_fd()], Some(Duration::ZERO))
                .map_or(true, |ready| ready[0]);
            if !dead {
                idle = Some(link);
            }
        }
        let link = match idle {
            Some(link) => Ok(link),
            None => {
                if runners.coming == 0 {
                    self.ask(&[NEW_RUNNER], &mut runners)?;
                }
                runners.coming -= 1;
                self.next_runner(&mut runners)
            }
        };
        if self.ahead && runners.idle.is_empty() && runners.coming == 0 {
            // For the next test, while this one runs.
            let _ = self.ask(&[NEW_RUNNER], &mut runners);
        }
        link
    }

    /// The server's first word: whether it has its user namespace.
    fn first_word(&self) -> State {
        let mut word = [0u8; 4];
        match sys::recv_with_fds(self.control.as_fd(), &mut word) {
            Ok((4, _)) => match i32::from_ne_bytes(word) {
                0 => State::Ready,
                errno => {
                    // It ends after saying so.
                    let _ = sys::reap(self.pid);
                    State::Refused(errno)
                }
            },
            _ => State::Gone,
        }
    }

    /// Sends `message` to the server; a server that is gone makes every
    /// later test run by `exec`.
    fn ask(&self, message: &[u8], runners: &mut Runners) -> Result<(), Unavailable> {
        if sys::send_with_fds(self.control.as_fd(), message, &[]).is_err() {
            runners.state = State::Gone;
            return Err(Unavailable::Gone);
        }
        if message[0] == NEW_RUNNER {
            runners.coming += 1;
        }
        Ok(())
    }

    /// The next runner the server sends: its id and a socket to it.
    fn next_runner(&self, runners: &mut Runners) -> Result<Link, Unavailable> {
        let mut word = [0u8; 4];
        match sys::recv_with_fds(self.control.as_fd(), &mut word) {
            Ok((4, fds)) => {
                let number = i32::from_ne_bytes(word);
                match fds.into_iter().next() {
                    Some(socket) if number > 0 => Ok(Link {
                        socket,
                        pid: number,
                    }),
                    _ => Err(Unavailable::ForkFailed(-number)),
                }
            }
            _ => {
                runners.state = State::Gone;
                Err(Unavailable::Gone)
            }
        }
    }

    /// At the end of the test process: tells the server (its end of the
    /// control socket sees the end), which ends every runner, reaps them
    /// and ends; reaps it, waiting two seconds at most.
    fn end(&self) {
        let reaped = self
            .runners
            .try_lock()
            .map_or(true, |runners| matches!(runners.state, State::Refused(_)));
        sys::shut_down(self.control.as_fd());
        if !reaped {
            sys::reap_within(self.pid, Duration::from_secs(2));
        }
    }

    /// A runner whose test ended and which goes on: idle again.
    fn give_back(&self, link: Link) {
        lock(&self.runners).idle.push(link);
    }

    /// Asks the server to kill runner `pid` and everything its test started
    /// (kills the server, its own child, when it runs the test itself).
    fn kill(&self, pid: i32) {
        if pid == self.pid {
            sys::kill_process_group(pid as u32);
            sys::kill_process(pid);
            return;
        }
        let mut message = [KILL, 0, 0, 0, 0];
        message[1..].copy_from_slice(&pid.to_ne_bytes());
        let _ = sys::send_with_fds(self.control.as_fd(), &message, &[]);
    }

    /// The whole environment, `KEY=VALUE\0` each, when it is no longer the
    /// one the server has (a test changed it); nothing otherwise.
    fn environment_if_changed(&self) -> Vec<u8> {
        if std::env::vars_os().eq(self.environment.iter().cloned()) {
            return Vec::new();
        }
        let mut encoded = Vec::new();
        for (key, value) in std::env::vars_os() {
            encoded.extend_from_slice(key.as_bytes());
            encoded.push(b'=');
            encoded.extend_from_slice(value.as_bytes());
            encoded.push(0);
        }
        encoded
    }
}

/// How a test in a runner ended.
enum TestEnd {
    /// The runner says so; `stays`: it goes on with the next test.
    Done { stays: bool },
    /// Killed at the deadline.
    TimedOut,
    /// The runner died during the test: its raw wait status, when the
    /// server could tell it.
    Exited(Option<i32>),
}

/// The test process to the server: a runner, please.
const NEW_RUNNER: u8 = b'n';
/// The test process to the server: kill this runner (a timeout).
const KILL: u8 = b'k';
/// A runner to the test process: the test is over (then: whether the
/// runner stays).
const DONE: u8 = b'd';
/// The server to the test process, on a runner's socket: the runner died
/// (then: its raw wait status).
const EXITED: u8 = b'x';

/// Waits for the end of the test in the runner behind `link`, relaying the
/// test's stdout and stderr to this thread's; at `deadline` calls `kill`.
/// Once the test has ended, its output is drained for
/// [`rootless::RELAY_GRACE`] at most.
fn wait_relaying(
    link: &OwnedFd,
    [out, err]: [OwnedFd; 2],
    deadline: Option<Instant>,
    kill: impl Fn(),
) -> TestEnd {
    let mut relays = [
        (Some(out), Relay::new(None, true)),
        (Some(err), Relay::new(None, false)),
    ];
    let mut end: Option<TestEnd> = None;
    let mut killed = false;
    let mut drain_until = None;
    let mut chunk = [0u8; 8192];
    loop {
        if end.is_some() && relays.iter().all(|(fd, _)| fd.is_none()) {
            break;
        }
        let now = Instant::now();
        let until = match (&end, deadline) {
            (None, Some(deadline)) if !killed => Some(deadline),
            (None, _) => None,
            (Some(_), _) => Some(*drain_until.get_or_insert(now + rootless::RELAY_GRACE)),
        };
        if until.is_some_and(|until| now >= until) {
            if end.is_some() {
                break;
            }
            // Time is up: the server kills the runner, then says it died.
            killed = true;
            kill();
            continue;
        }
        let mut watched: Vec<BorrowedFd<'_>> = Vec::with_capacity(3);
        if end.is_none() {
            watched.push(link.as_fd());
        }
        watched.extend(
            relays
                .iter()
                .filter_map(|(fd, _)| fd.as_ref().map(|fd| fd.as_fd())),
        );
        let ready =
            match sys::wait_readable(&watched, until.map(|u| u.saturating_duration_since(now))) {
                Ok(ready) => ready,
                Err(_) => {
                    end.get_or_insert(TestEnd::Exited(None));
                    break;
                }
            };
        let mut ready = ready.into_iter();
        if end.is_none() && ready.next() == Some(true) {
            let mut message = [0u8; 5];
            end = Some(match sys::recv_with_fds(link.as_fd(), &mut message) {
                Ok((2, _)) if message[0] == DONE => TestEnd::Done {
                    stays: message[1] == 1,
                },
                Ok((5, _)) if message[0] == EXITED && killed => TestEnd::TimedOut,
                Ok((5, _)) if message[0] == EXITED => TestEnd::Exited(Some(i32::from_ne_bytes([
                    message[1], message[2], message[3], message[4],
                ]))),
                _ if killed => TestEnd::TimedOut,
                _ => TestEnd::Exited(None),
            });
        }
        for (fd, relay) in relays.iter_mut().filter(|(fd, _)| fd.is_some()) {
            if ready.next() != Some(true) {
                continue;
            }
            match fd.as_ref().map(|fd| sys::read_some(fd.as_fd(), &mut chunk)) {
                Some(Ok(0)) | Some(Err(_)) | None => {
                    *fd = None;
                    relay.finish();
                }
                Some(Ok(n)) => relay.push(&chunk[..n]),
            }
        }
    }
    for (fd, relay) in &mut relays {
        if fd.take().is_some() {
            relay.finish();
        }
    }
    end.unwrap_or(TestEnd::Exited(None))
}

// The server's side.

/// A runner, as the server sees it.
struct Runner {
    pid: i32,
    /// Readable when the runner has ended.
    pidfd: OwnedFd,
    /// The runner's end of its socket to the test process, kept to tell the
    /// test process when the runner died.
    socket: OwnedFd,
}

/// The fork server: enters its user namespace, says whether it could, then
/// forks a runner for each request (and one ahead at once), kills runners
/// on request, and tells the test process when one dies, until the test
/// process ends.
fn serve(control: OwnedFd, parent: i32, maps: &IdMaps) -> ! {
    sys::ignore_sigpipe();
    // It shares the test process's process group: Ctrl-C, a CI's cancel or
    // `kill -- -PGID` reaches it too. It ends when the test process ends
    // (below), after ending its runners.
    sys::ignore_signals(&GROUP_SIGNALS);
    // The test process's standard streams are not the server's to hold: a
    // harness waits for their end (cargo-nextest, to see the test is over).
    let _ = sys::null_standard_streams();
    // Watches the test process: readable when it ends, however it ends.
    let parent_fd = match sys::pidfd_open(parent) {
        Ok(fd) if sys::parent_pid() == parent => fd,
        _ => sys::exit_now(0),
    };
    let errno = match maps.enter() {
        Ok(()) => 0,
        Err(error) => error.raw_os_error().unwrap_or(nix::libc::EINVAL),
    };
    if sys::send_with_fds(control.as_fd(), &errno.to_ne_bytes(), &[]).is_err() || errno != 0 {
        sys::exit_now(0);
    }
    // The runners run rootless tests, and find what every test reads from
    // the host read already.
    settings::mark_rootless_child();
    crate::os::isolation::read_host_once();
    let own = [control.as_raw_fd(), parent_fd.as_raw_fd()];
    if settings::runs_one_test() {
        // The server runs the one test itself (it has one thread, and
        // forks nothing after it): no runner to fork, to fault in and to
        // end for each test process of cargo-nextest.
        let Ok((link, socket)) = sys::packet_socket_pair() else {
            sys::exit_now(1);
        };
        let me = std::process::id() as i32;
        let _ = sys::send_with_fds(control.as_fd(), &me.to_ne_bytes(), &[link.as_fd()]);
        drop(link);
        run_tests(socket, parent, &own)
    }
    // Orphans of runners that died (the contained halves of their shims)
    // come here to be reaped.
    let children = match (
        sys::become_subreaper(),
        sys::block_signals(&[libc::SIGCHLD]),
    ) {
        (Ok(()), Ok(_)) => sys::signalfd(&[libc::SIGCHLD]).ok(),
        _ => None,
    };
    let own: Vec<i32> = own
        .into_iter()
        .chain(children.as_ref().map(|c| c.as_raw_fd()))
        .collect();
    let mut runners: Vec<Runner> = Vec::new();
    send_runner(&control, fork_runner(&own, &runners), &mut runners);
    loop {
        let mut watched = vec![control.as_fd(), parent_fd.as_fd()];
        watched.extend(children.as_ref().map(|c| c.as_fd()));
        let first_runner = watched.len();
        watched.extend(runners.iter().map(|r| r.pidfd.as_fd()));
        let Ok(ready) = sys::wait_readable(&watched, None) else {
            end_all(&runners);
        };
        if ready[1] {
            end_all(&runners);
        }
        if let Some(children) = children.as_ref().filter(|_| ready[2]) {
            let _ = sys::read_signal(children.as_fd());
            reap_orphans(&runners, false);
        }
        let mut still = Vec::with_capacity(runners.len());
        for (runner, ended) in runners.drain(..).zip(ready[first_runner..].iter()) {
            if !*ended {
                still.push(runner);
                continue;
            }
            // Killed while still unreaped, so that the group's id cannot
            // have been reused.
            sys::kill_process_group(runner.pid as u32);
            let status = sys::reap(runner.pid).unwrap_or(0);
            let mut message = [EXITED, 0, 0, 0, 0];
            message[1..].copy_from_slice(&status.to_ne_bytes());
            let _ = sys::send_with_fds(runner.socket.as_fd(), &message, &[]);
        }
        runners = still;
        if ready[0] {
            let mut message = [0u8; 5];
            match sys::recv_with_fds(control.as_fd(), &mut message) {
                Ok((1, _)) if message[0] == NEW_RUNNER => {
                    send_runner(&control, fork_runner(&own, &runners), &mut runners);
                }
                Ok((5, _)) if message[0] == KILL => {
                    let pid = i32::from_ne_bytes([message[1], message[2], message[3], message[4]]);
                    // Only a runner of ours, still unreaped: the group is
                    // the runner's and everything its test left in it.
                    if runners.iter().any(|r| r.pid == pid) {
                        sys::kill_process_group(pid as u32);
                    }
                }
                Ok((0, _)) | Err(_) => end_all(&runners),
                Ok(_) => {}
            }
        }
    }
}

/// Sends a forked runner (its id and the test process's socket to it) to
/// the test process, or the errno of the failed fork.
fn send_runner(
    control: &OwnedFd,
    forked: std::io::Result<(Runner, OwnedFd)>,
    runners: &mut Vec<Runner>,
) {
    match forked {
        Ok((runner, link)) => {
            let _ = sys::send_with_fds(control.as_fd(), &runner.pid.to_ne_bytes(), &[link.as_fd()]);
            runners.push(runner);
        }
        Err(error) => {
            let errno = error.raw_os_error().unwrap_or(nix::libc::EAGAIN);
            let _ = sys::send_with_fds(control.as_fd(), &(-errno).to_ne_bytes(), &[]);
        }
    }
}

/// Forks a runner: the runner, and the test process's end of its socket.
/// `own` and the other runners' descriptors are closed in it.
fn fork_runner(own: &[i32], runners: &[Runner]) -> std::io::Result<(Runner, OwnedFd)> {
    let (link, socket) =
        sys::packet_socket_pair().map_err(|e| std::io::Error::other(e.to_string()))?;
    let server = std::process::id() as i32;
    match sys::fork_single_threaded()? {
        Forked::Child => {
            let mut close: Vec<i32> = own.to_vec();
            close.extend(
                runners
                    .iter()
                    .flat_map(|r| [r.pidfd.as_raw_fd(), r.socket.as_raw_fd()]),
            );
            close.push(link.as_raw_fd());
            run_tests(socket, server, &close)
        }
        Forked::Parent(pid) => {
            sys::put_in_own_process_group(pid);
            match sys::pidfd_open(pid).map_err(std::io::Error::from) {
                Ok(pidfd) => Ok((Runner { pid, pidfd, socket }, link)),
                Err(error) => {
                    sys::kill_process_group(pid as u32);
                    let _ = sys::reap(pid);
                    Err(error)
                }
            }
        }
    }
}

/// The test process ended: every runner's process group goes with it
/// (and with each runner, its pid namespace); all are reaped.
fn end_all(runners: &[Runner]) -> ! {
    for runner in runners {
        sys::kill_process_group(runner.pid as u32);
    }
    for runner in runners {
        let _ = sys::reap(runner.pid);
    }
    reap_orphans(runners, true);
    sys::exit_now(0)
}

/// Reaps the children of the server that are not runners: the orphans of
/// runners that died. With `all`, kills those still running and waits for
/// them; holders of kept namespaces (in a session of their own) stay.
fn reap_orphans(runners: &[Runner], all: bool) {
    // Reaping one may make its own children ours: again until none is left.
    for _ in 0..100 {
        let Ok(children) = sys::children_of_this_thread() else {
            return;
        };
        let orphans: Vec<i32> = children
            .into_iter()
            .filter(|pid| !runners.iter().any(|r| r.pid == *pid))
            .filter(|pid| sys::session_of(*pid) != Some(*pid))
            .collect();
        if orphans.is_empty() || !all {
            for pid in orphans {
                sys::reap_if_ended(pid);
            }
            return;
        }
        for pid in orphans {
            sys::kill_process(pid);
            let _ = sys::reap(pid);
        }
    }
}

/// The signals a terminal or a CI's cancel sends a whole process group.
const GROUP_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// A runner: a process group of its own, death with the server, the
/// server's descriptors closed, orphans of its tests' processes its own
/// children (so that it finds them); then one test after another, each
/// from the test process on `socket`, until a test leaves something behind
/// or the test process is gone.
fn run_tests(socket: OwnedFd, server: i32, close: &[i32]) -> ! {
    if sys::own_process_group().is_err()
        || sys::die_with_parent(server).is_err()
        || sys::become_subreaper().is_err()
    {
        sys::exit_now(1);
    }
    // What a test and the programs it runs expect, not what the server
    // set for itself.
    sys::default_signals(&GROUP_SIGNALS);
    sys::default_signals(&[libc::SIGCHLD]);
    sys::unblock_all_signals();
    sys::close_all(close);
    // Between tests, output goes nowhere.
    let Ok(null) = sys::null_standard_streams() else {
        sys::exit_now(1);
    };
    // This process goes on as pid 1 of a pid namespace of its own: what
    // tests start ends with it (and after each test), in whatever session.
    // Without one (a kernel that refuses), in its process group only.
    let _ = contain::enter(crate::os::holder::answer_in_shim);
    let mut first = true;
    crate::os::run_dir::watch_from_this_process();
    // Its tests' `/proc` shows that namespace: the template they copy
    // their mounts from gets one now, before the first test.
    crate::os::run_dir::make_ahead();
    // A test that leaves descriptors open (up to running out of them) ends
    // its runner: the next test would find them taken.
    let free = sys::lowest_free_fd().unwrap_or(-1);
    loop {
        // A buffer of the request's size: a larger one costs page faults.
        let length = match sys::next_message_len(socket.as_fd()) {
            Ok(0) | Err(_) => sys::exit_now(0),
            Ok(length) => length.min(MAX_REQUEST),
        };
        let mut request = vec![0u8; length];
        let Ok((length, fds)) = sys::recv_with_fds(socket.as_fd(), &mut request) else {
            sys::exit_now(0);
        };
        let Ok([out, err, result, cwd]) = <[OwnedFd; 4]>::try_from(fds) else {
            sys::exit_now(1);
        };
        let Some(call) = CallWords::from_bytes(&request[..length]) else {
            sys::exit_now(1);
        };
        if sys::dup_onto(out.as_fd(), 1).is_err() || sys::dup_onto(err.as_fd(), 2).is_err() {
            sys::exit_now(1);
        }
        drop((out, err));
        let _ = sys::fchdir(cwd.as_fd());
        drop(cwd);
        // The test process sends a changed environment to a runner that has
        // run no test, which has one thread; it ends after that test.
        let environment = &request[24..length];
        let changed = !environment.is_empty();
        if changed {
            if !first || sys::thread_count().ok() != Some(1) {
                sys::exit_now(1);
            }
            apply_environment(environment);
        }
        first = false;
        let call = call.call();
        let ended = std::panic::catch_unwind(move || (call.run)(call.spec, call.body))
            .unwrap_or_else(|panic| Ended::of_panic(panic.as_ref()));
        let _ = std::fs::File::from(result).write_all(ended.encode().as_bytes());
        let _ = std::io::stdout().lock().flush();
        // The test's stdout and stderr close here; what it left running
        // ends (and closes its copies) before the test process is told.
        let _ = sys::dup_onto(null.as_fd(), 1);
        let _ = sys::dup_onto(null.as_fd(), 2);
        // A thread the test left running would print into the next test's
        // output.
        let stays = end_what_the_test_left()
            && !changed
            && sys::lowest_free_fd().ok() == Some(free)
            && no_thread_left();
        let _ = sys::send_with_fds(socket.as_fd(), &[DONE, u8::from(stays)], &[]);
        if !stays {
            sys::exit_now(0);
        }
    }
}

/// The id `/proc` knows the thread of the runner's current test by.
static TEST_THREAD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// On a runner's test thread, first: remembers it, to tell it from threads
/// the test leaves running ([`no_thread_left`]).
pub(crate) fn note_test_thread() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| link.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0);
    TEST_THREAD.store(tid, std::sync::atomic::Ordering::Relaxed);
}

/// After the test's thread was joined: whether no other thread is left
/// than the runner's own. The joined thread may still be finishing its
/// exit (it counts until it has, and then it is no longer there), and so
/// may threads the test joined: a thread left running is there a
/// millisecond later still.
fn no_thread_left() -> bool {
    let only_the_test_thread_exiting = || match sys::thread_count() {
        Ok(1) => true,
        Ok(2) => {
            let tid = TEST_THREAD.load(std::sync::atomic::Ordering::Relaxed);
            tid != 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
        }
        _ => false,
    };
    if only_the_test_thread_exiting() {
        return true;
    }
    let until = Instant::now() + Duration::from_millis(1);
    while Instant::now() < until {
        std::thread::yield_now();
        if only_the_test_thread_exiting() {
            return true;
        }
    }
    false
}

/// In a runner (or a process that runs one test) after a test: kills every
/// process the test started (all in this process's pid namespace, in
/// whatever session or process group), and reaps them. Without a pid
/// namespace of its own, kills the processes the test left in the runner's
/// process group (its children, and orphans of theirs, which come to the
/// runner as the subreaper), and reaps them; processes that left the group
/// (a holder of kept namespaces) stay. Whether none of the test's
/// processes survived.
pub(crate) fn end_what_the_test_left() -> bool {
    if let Some(clean) = contain::end_all() {
        return clean;
    }
    if !sys::has_children() {
        return true;
    }
    let group = sys::own_process_group_id();
    for _ in 0..50 {
        let Ok(children) = sys::children_of_this_thread() else {
            return false;
        };
        let in_group: Vec<i32> = children
            .into_iter()
            .filter(|pid| sys::process_group_of(*pid) == Some(group))
            .collect();
        if in_group.is_empty() {
            break;
        }
        for pid in &in_group {
            sys::kill_process(*pid);
        }
        for pid in &in_group {
            let _ = sys::reap(*pid);
        }
    }
    sys::reap_exited_children();
    sys::children_of_this_thread().is_ok_and(|children| {
        children
            .iter()
            .all(|pid| sys::process_group_of(*pid) != Some(group))
    })
}

/// Makes this process's environment the test process's, sent as
/// `KEY=VALUE\0` entries. The caller has one thread.
fn apply_environment(encoded: &[u8]) {
    let wanted: Vec<(OsString, OsString)> = encoded
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let at = entry.iter().skip(1).position(|b| *b == b'=')? + 1;
            Some((
                OsString::from_vec(entry[..at].to_vec()),
                OsString::from_vec(entry[at + 1..].to_vec()),
            ))
        })
        .collect();
    for (key, _) in std::env::vars_os() {
        if !wanted.iter().any(|(k, _)| *k == key) {
            // SAFETY: the caller has one thread (a runner just forked from the single-threaded server, checked), so nothing reads the environment meanwhile.
            unsafe { std::env::remove_var(&key) };
        }
    }
    for (key, value) in wanted {
        if std::env::var_os(&key).as_ref() != Some(&value) {
            // SAFETY: as above, one thread.
            unsafe { std::env::set_var(&key, &value) };
        }
    }
}
