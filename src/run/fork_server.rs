//! Rootless mode's fork server: a process forked from the test binary
//! before `main`, in a user namespace of its own, that forks the processes
//! rootless tests run in. No `exec`, no second start of the test harness.
//!
//! `unshare(CLONE_NEWUSER)` needs a single-threaded process, and a fork is
//! only safe from one; a test binary has threads from `main` on. So a
//! constructor ([`START_AT_LOAD`], in `.init_array`) runs while the process
//! still has one thread and, when this process would run netns tests
//! rootless, forks the server. The server enters a new user namespace
//! (uid 0 inside is the user outside) and never starts a thread, so the
//! processes it forks may run any code.
//!
//! Those are runners. A runner runs one test at a time, each on a thread
//! named like the test in fresh namespaces entered on that thread, as root
//! mode runs tests in the test process; so a test costs what it costs as
//! root, not a fork, a process exit and the page faults of a fresh address
//! space (measured: 1.9 times root's CPU with a fork per test). Between two
//! tests a runner has one thread. It leads a process group of its own and
//! is the subreaper of its tests' processes: after each test it kills the
//! processes the test left in its group and then tells the test process
//! that the test ended. It goes on with the next test unless a test left
//! one of them alive; the server kills it (and its group) when the test
//! process asks (a timeout), and every runner's group when the test process
//! ends (SIGKILL included: it watches the test process through a pidfd).
//! The server hands each request to an idle runner, forking a new one (one
//! ahead, except in a process that runs a single test, as under
//! cargo-nextest) when none is idle.
//!
//! A fork keeps the address space, so the test's entry travels as three
//! addresses ([`Call`]), valid in the server and its runners because they
//! are copies of this process's image. The test process sends them with
//! descriptors for the test's stdout, stderr and result, its socket, and
//! the working directory ([`run_in_forked_child`]), and the environment
//! when it changed since the server was forked (then a fresh runner, which
//! has one thread, takes the test and sets it, and ends after it).
//!
//! When the kernel refuses the user namespace, the server says why once and
//! ends; each rootless test then fails (or is skipped) with the refusal.
//! When there is no server (it could not start, or this binary's
//! constructor did not run), rootless tests run the way that needs none:
//! the test binary started again for each one (see `rootless.rs`).

use super::rootless::{self, Relay};
use crate::contract::{Ended, FailureKind, TestSpec};
use crate::os::privilege;
use crate::os::sys::{self, Forked};
use crate::os::userns::IdMaps;
use crate::settings::{self, ModeSetting};
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

/// The server of this process, when it started one.
static SERVER: OnceLock<Server> = OnceLock::new();

/// The largest request: the call and the environment's changes. A test
/// process whose environment changed by more runs its test by `exec`.
const MAX_REQUEST: usize = 64 * 1024;

/// The test process's side of its fork server.
struct Server {
    /// Where requests go: one message each, descriptors attached.
    requests: OwnedFd,
    pid: i32,
    state: Mutex<State>,
    /// The environment when the server was forked, which its children have.
    environment: Vec<(OsString, OsString)>,
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

/// Starts the fork server when this process wants one and has one thread.
fn start() {
    if !wanted() {
        return;
    }
    let Ok((requests, server_end)) = sys::packet_socket_pair() else {
        return;
    };
    let maps = IdMaps::for_this_process();
    let parent = std::process::id() as i32;
    let environment: Vec<_> = std::env::vars_os().collect();
    match sys::fork_single_threaded() {
        Ok(Forked::Child) => {
            drop(requests);
            serve(server_end, parent, &maps)
        }
        Ok(Forked::Parent(pid)) => {
            drop(server_end);
            let _ = SERVER.set(Server {
                requests,
                pid,
                state: Mutex::new(State::Starting),
                environment,
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
    match server.state() {
        State::Ready => {}
        State::Refused(errno) => {
            return Some(Ended::setup_failed(
                spec.name,
                privilege::explain_user_namespace_refusal(std::io::Error::from_raw_os_error(
                    errno,
                )),
            ));
        }
        State::Starting | State::Gone => return None,
    }
    let mut request = call.to_bytes().to_vec();
    request.extend(server.environment_if_changed());
    if request.len() > MAX_REQUEST {
        return None;
    }
    let setup_failed = |what: &str, error: String| {
        Ended::failed(FailureKind::Setup, format!("netns-test: {what}: {error}"))
    };
    let fds = (|| -> Result<_, crate::error::Error> {
        Ok((
            sys::pipe()?,
            sys::pipe()?,
            sys::pipe()?,
            sys::packet_socket_pair()?,
            sys::open_cwd()?,
        ))
    })();
    let ((out, out_w), (err, err_w), (result, result_w), (channel, child_end), cwd) = match fds {
        Ok(fds) => fds,
        Err(error) => {
            return Some(setup_failed(
                "cannot make the descriptors of a forked test",
                error.to_string(),
            ));
        }
    };
    let sent = sys::send_with_fds(
        server.requests.as_fd(),
        &request,
        &[
            out_w.as_fd(),
            err_w.as_fd(),
            result_w.as_fd(),
            child_end.as_fd(),
            cwd.as_fd(),
        ],
    );
    if sent.is_err() {
        server.set_state(State::Gone);
        return None;
    }
    // Only the runner holds the write ends now (until the test ends).
    drop((out_w, err_w, result_w, child_end, cwd));
    let deadline = spec
        .timeout
        .map(|t| Instant::now() + Duration::from_millis(t.millis));
    let end = wait_relaying(&channel, [out, err], deadline);
    Some(match end {
        ChildEnd::ForkFailed(errno) => setup_failed(
            &format!("cannot fork a process for test `{}`", spec.name),
            std::io::Error::from_raw_os_error(errno).to_string(),
        ),
        ChildEnd::TimedOut => Ended::failed(FailureKind::TimedOut, spec.timed_out_message()),
        ChildEnd::Unknown => setup_failed(
            &format!("the fork server ended while test `{}` ran", spec.name),
            "its process was killed".to_owned(),
        ),
        ChildEnd::Exited(status) => rootless::read_result(result).unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            Ended::failed(
                FailureKind::Setup,
                format!(
                    "netns-test: the process running test `{}` in a user namespace ended ({}) without a result",
                    spec.name,
                    std::process::ExitStatus::from_raw(status)
                ),
            )
        }),
    })
}

impl Server {
    /// The server's state; the first call waits for its first word.
    fn state(&self) -> State {
        let mut state = lock(&self.state);
        if *state == State::Starting {
            let mut word = [0u8; 4];
            *state = match sys::recv_with_fds(self.requests.as_fd(), &mut word) {
                Ok((4, _)) => match i32::from_ne_bytes(word) {
                    0 => State::Ready,
                    errno => {
                        // It ends after saying so.
                        let _ = sys::reap(self.pid);
                        State::Refused(errno)
                    }
                },
                _ => State::Gone,
            };
        }
        *state
    }

    fn set_state(&self, new: State) {
        *lock(&self.state) = new;
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a forked test's process ended, as the server reports it.
enum ChildEnd {
    /// Its raw wait status.
    Exited(i32),
    /// Killed at the deadline.
    TimedOut,
    /// The server could not fork it: the errno.
    ForkFailed(i32),
    /// The server went away without saying.
    Unknown,
}

/// What the server says on a test's own socket: a tag and a number.
const EXITED: u8 = b'x';
const FORK_FAILED: u8 = b'f';
/// What the test process says: kill the test's process group now.
const KILL: u8 = b'k';

/// Waits for the end of the test's process, relaying its stdout and stderr
/// to this thread's; at `deadline` asks the server to kill it. Once it has
/// ended, its output is drained for [`rootless::RELAY_GRACE`] at most.
fn wait_relaying(channel: &OwnedFd, [out, err]: [OwnedFd; 2], deadline: Option<Instant>) -> ChildEnd {
    let mut relays = [(Some(out), Relay::new(None, true)), (Some(err), Relay::new(None, false))];
    let mut end: Option<ChildEnd> = None;
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
            // Time is up: the server kills the group, then says it ended.
            killed = true;
            if sys::send_with_fds(channel.as_fd(), &[KILL], &[]).is_err() {
                end = Some(ChildEnd::Unknown);
            }
            continue;
        }
        let mut watched: Vec<BorrowedFd<'_>> = Vec::with_capacity(3);
        if end.is_none() {
            watched.push(channel.as_fd());
        }
        watched.extend(relays.iter().filter_map(|(fd, _)| fd.as_ref().map(|fd| fd.as_fd())));
        let ready = match sys::wait_readable(&watched, until.map(|u| u.saturating_duration_since(now))) {
            Ok(ready) => ready,
            Err(_) => {
                end.get_or_insert(ChildEnd::Unknown);
                break;
            }
        };
        let mut ready = ready.into_iter();
        if end.is_none() && ready.next() == Some(true) {
            let mut message = [0u8; 5];
            let ended = match sys::recv_with_fds(channel.as_fd(), &mut message) {
                Ok((5, _)) => {
                    let number = i32::from_ne_bytes([message[1], message[2], message[3], message[4]]);
                    match message[0] {
                        EXITED if killed => ChildEnd::TimedOut,
                        EXITED => ChildEnd::Exited(number),
                        FORK_FAILED => ChildEnd::ForkFailed(number),
                        _ => ChildEnd::Unknown,
                    }
                }
                _ => ChildEnd::Unknown,
            };
            end = Some(ended);
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
    end.unwrap_or(ChildEnd::Unknown)
}

// The server's side.

/// A runner: a process forked from the server that runs tests one at a
/// time, each on a thread of its own in fresh namespaces (as root mode
/// runs them in the test process), for as long as its tests leave nothing
/// behind.
struct Runner {
    pid: i32,
    /// Readable when the runner has ended.
    pidfd: OwnedFd,
    /// Where requests go, and where the runner says it is idle again.
    socket: OwnedFd,
    /// The test process's socket for the test it runs, if it runs one.
    channel: Option<OwnedFd>,
    /// Its process group was killed (a timeout), or it said it retires.
    ending: bool,
}

/// What a runner says to the server after each test, before it tells the
/// test process: ready for the next one, or it ends (its test left a
/// thread, the environment or the working directory changed).
const IDLE: u8 = b'i';
const RETIRING: u8 = b'r';

/// The fork server: enters its user namespace, says whether it could, then
/// hands each request to an idle runner (forking one when none is idle)
/// until the test process ends.
fn serve(requests: OwnedFd, parent: i32, maps: &IdMaps) -> ! {
    sys::ignore_sigpipe();
    // Watches the test process: readable when it ends, however it ends.
    let parent_fd = match sys::pidfd_open(parent) {
        Ok(fd) if sys::parent_pid() == parent => fd,
        _ => sys::exit_now(0),
    };
    let errno = match maps.enter() {
        Ok(()) => 0,
        Err(error) => error.raw_os_error().unwrap_or(nix::libc::EINVAL),
    };
    if sys::send_with_fds(requests.as_fd(), &errno.to_ne_bytes(), &[]).is_err() || errno != 0 {
        sys::exit_now(0);
    }
    // The runners run rootless tests, and find what every test reads from
    // the host read already.
    settings::mark_rootless_child();
    crate::os::isolation::read_host_once();
    let own = [requests.as_raw_fd(), parent_fd.as_raw_fd()];
    // A process that runs one test (cargo-nextest runs each in a process
    // of its own) needs no runner beyond the first.
    let ahead = std::env::var_os("NEXTEST_EXECUTION_MODE")
        .is_none_or(|mode| mode != "process-per-test");
    let mut runners: Vec<Runner> = fork_runner(&own, &[]).into_iter().collect();
    let mut buffer = vec![0u8; MAX_REQUEST];
    loop {
        let mut watched = vec![requests.as_fd(), parent_fd.as_fd()];
        for runner in &runners {
            watched.push(runner.pidfd.as_fd());
            watched.push(runner.socket.as_fd());
            watched.push(match &runner.channel {
                Some(channel) if !runner.ending => channel.as_fd(),
                _ => runner.pidfd.as_fd(),
            });
        }
        let Ok(ready) = sys::wait_readable(&watched, None) else {
            end_all(&runners);
        };
        if ready[1] {
            end_all(&runners);
        }
        let mut still = Vec::with_capacity(runners.len());
        for (i, mut runner) in runners.drain(..).enumerate() {
            let (ended, said, spoke) = (ready[2 + 3 * i], ready[3 + 3 * i], ready[4 + 3 * i]);
            if said {
                let mut word = [0u8; 1];
                match sys::recv_with_fds(runner.socket.as_fd(), &mut word) {
                    // Its test is over: the runner told the test process.
                    Ok((1, _)) if word[0] == IDLE => runner.channel = None,
                    Ok((1, _)) if word[0] == RETIRING => {
                        runner.channel = None;
                        runner.ending = true;
                    }
                    // It is ending: its pidfd says when it is gone.
                    _ => runner.ending = true,
                }
            }
            if spoke && runner.channel.is_some() && !runner.ending {
                // A kill request (a timeout), or the test's waiter is gone:
                // the runner and everything its test started end now.
                let mut word = [0u8; 1];
                if let Some(channel) = &runner.channel {
                    let _ = sys::recv_with_fds(channel.as_fd(), &mut word);
                }
                sys::kill_process_group(runner.pid as u32);
                runner.ending = true;
            }
            if ended {
                // Killed while still unreaped, so that the group's id
                // cannot have been reused.
                sys::kill_process_group(runner.pid as u32);
                let status = sys::reap(runner.pid).unwrap_or(0);
                if let Some(channel) = runner.channel.take() {
                    send_end(&channel, EXITED, status);
                }
            } else {
                still.push(runner);
            }
        }
        runners = still;
        if ready[0] {
            let length = match sys::next_message_len(requests.as_fd()) {
                Ok(0) | Err(_) => end_all(&runners),
                Ok(length) => length.min(MAX_REQUEST),
            };
            let Ok((length, fds)) = sys::recv_with_fds(requests.as_fd(), &mut buffer[..length]) else {
                end_all(&runners);
            };
            let busy: Vec<i32> = runners
                .iter()
                .flat_map(Runner::fds)
                .chain(fds.iter().map(|fd| fd.as_raw_fd()))
                .collect();
            // A request that changes the environment goes to a fresh runner:
            // only a process known to have one thread may change it.
            let changes_environment = length > 24;
            let idle = runners
                .iter()
                .position(Runner::idle)
                .filter(|_| !changes_environment);
            let runner = match idle {
                Some(index) => Ok(runners.swap_remove(index)),
                None => fork_runner(&own, &busy),
            };
            if let Some(runner) = hand_over(runner, &buffer[..length], fds) {
                runners.push(runner);
            }
            if ahead && !runners.iter().any(Runner::idle) {
                let busy: Vec<i32> = runners.iter().flat_map(Runner::fds).collect();
                runners.extend(fork_runner(&own, &busy).ok());
            }
        }
    }
}

impl Runner {
    fn idle(&self) -> bool {
        self.channel.is_none() && !self.ending
    }

    fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        [
            Some(self.pidfd.as_raw_fd()),
            Some(self.socket.as_raw_fd()),
            self.channel.as_ref().map(|c| c.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
    }
}

/// Forks a runner. `own` and `busy` (the server's and the other runners'
/// descriptors) are closed in it.
fn fork_runner(own: &[i32], busy: &[i32]) -> std::io::Result<Runner> {
    let (socket, runner_end) =
        sys::packet_socket_pair().map_err(|e| std::io::Error::other(e.to_string()))?;
    let server = std::process::id() as i32;
    match sys::fork_single_threaded()? {
        Forked::Child => {
            let mut close: Vec<i32> = own.to_vec();
            close.extend_from_slice(busy);
            close.push(socket.as_raw_fd());
            run_tests(runner_end, server, &close)
        }
        Forked::Parent(pid) => {
            sys::put_in_own_process_group(pid);
            match sys::pidfd_open(pid) {
                Ok(pidfd) => Ok(Runner {
                    pid,
                    pidfd,
                    socket,
                    channel: None,
                    ending: false,
                }),
                Err(error) => {
                    sys::kill_process_group(pid as u32);
                    let _ = sys::reap(pid);
                    Err(error)
                }
            }
        }
    }
}

/// Gives the request (the call, the environment's changes, and the
/// descriptors: stdout, stderr, result, the test's socket, the working
/// directory) to `runner`; says on the test's socket when there is none.
fn hand_over(runner: std::io::Result<Runner>, request: &[u8], fds: Vec<OwnedFd>) -> Option<Runner> {
    let [out, err, result, channel, cwd]: [OwnedFd; 5] = fds.try_into().ok()?;
    let mut runner = match runner {
        Ok(runner) => runner,
        Err(error) => {
            send_end(&channel, FORK_FAILED, error.raw_os_error().unwrap_or(0));
            return None;
        }
    };
    let given = [out.as_fd(), err.as_fd(), result.as_fd(), channel.as_fd(), cwd.as_fd()];
    if let Err(error) = sys::send_with_fds(runner.socket.as_fd(), request, &given) {
        sys::kill_process_group(runner.pid as u32);
        let _ = sys::reap(runner.pid);
        send_end(&channel, FORK_FAILED, error.raw_os_error().unwrap_or(0));
        return None;
    }
    runner.channel = Some(channel);
    Some(runner)
}

/// One message on a test's socket: a tag and a number.
fn send_end(channel: &OwnedFd, tag: u8, number: i32) {
    let mut message = [tag, 0, 0, 0, 0];
    message[1..].copy_from_slice(&number.to_ne_bytes());
    let _ = sys::send_with_fds(channel.as_fd(), &message, &[]);
}

/// The test process ended: every runner's process group goes with it.
fn end_all(runners: &[Runner]) -> ! {
    for runner in runners {
        sys::kill_process_group(runner.pid as u32);
    }
    sys::exit_now(0)
}

/// A runner: a process group of its own, death with the server, the
/// server's descriptors closed, orphans of its tests' processes its own
/// children (so that it finds them); then one test after another, until a
/// test leaves something behind or the server is gone.
fn run_tests(socket: OwnedFd, server: i32, close: &[i32]) -> ! {
    if sys::own_process_group().is_err()
        || sys::die_with_parent(server).is_err()
        || sys::become_subreaper().is_err()
    {
        sys::exit_now(1);
    }
    sys::close_all(close);
    let Ok(null) = std::fs::File::options().read(true).write(true).open("/dev/null") else {
        sys::exit_now(1);
    };
    let null = OwnedFd::from(null);
    // Between tests, output goes nowhere.
    for fd in 0..3 {
        if sys::dup_onto(null.as_fd(), fd).is_err() {
            sys::exit_now(1);
        }
    }
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
        let Ok([out, err, result, channel, cwd]) = <[OwnedFd; 5]>::try_from(fds) else {
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
        // The server sends a changed environment to a fresh runner only,
        // which has one thread; it ends after that test.
        let environment = &request[24..length];
        let changed = !environment.is_empty();
        if changed {
            if sys::thread_count().ok() != Some(1) {
                sys::exit_now(1);
            }
            apply_environment(environment);
        }
        let call = call.call();
        let ended = std::panic::catch_unwind(move || (call.run)(call.spec, call.body))
            .unwrap_or_else(|panic| Ended::of_panic(panic.as_ref()));
        let _ = std::fs::File::from(result).write_all(ended.encode().as_bytes());
        let _ = std::io::stdout().lock().flush();
        // The test's stdout and stderr close here; what it left running
        // ends (and closes its copies) before the test process is told.
        let _ = sys::dup_onto(null.as_fd(), 1);
        let _ = sys::dup_onto(null.as_fd(), 2);
        let stays = end_what_the_test_left() && !changed;
        let word = if stays { IDLE } else { RETIRING };
        let _ = sys::send_with_fds(socket.as_fd(), &[word], &[]);
        send_end(&channel, EXITED, 0);
        drop(channel);
        if !stays {
            sys::exit_now(0);
        }
    }
}

/// In a runner after a test: kills the processes the test left in the
/// runner's process group (its children, and orphans of theirs, which
/// come to the runner as the subreaper), and reaps them; processes that
/// left the group (a holder of kept namespaces) stay. Whether none of the
/// test's processes survived.
fn end_what_the_test_left() -> bool {
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
