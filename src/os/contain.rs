//! Containing what a process starts: the process goes on as pid 1 of a pid
//! namespace of its own, so that every process it starts, in whatever
//! session or process group, is in that namespace, and the kernel kills
//! them all when it ends, however it ends ([`enter`]). Between two uses it
//! kills them itself ([`end_all`]).
//!
//! A process cannot move into a pid namespace, and one whose children go
//! into another pid namespace than its own cannot start threads; so the
//! process forks twice (the first child, the maker, makes the namespace;
//! the second is its pid 1) and that grandchild goes on as the process, on
//! the same memory. The maker waits for it and ends as it ends. The
//! original stays behind as the shim: single-threaded, outside the
//! namespace, it answers the contained process's requests ([`ask`]:
//! forking the holder of kept namespaces, which must outlive the
//! namespace) and ends as the maker ends, with its status. Each dies with
//! its parent: killing the shim kills the contained process, and with it
//! the namespace.
//!
//! Being pid 1 shows: `std::process::id()` is 1, and the processes it
//! starts see their ids in the namespace (`getpid`, `$$`), while `/proc`
//! stays the system's, with the ids the shim sees. Signals from inside the
//! namespace that the process does not handle do not reach it.

use crate::error::Error;
use crate::os::sys::{self, Forked};
use nix::libc;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the contained process.
static CONTAINED: AtomicBool = AtomicBool::new(false);
/// The contained process's socket to its shim.
static SHIM: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// What the shim does with a request (its bytes and descriptors): the
/// reply. It runs in the shim, which has one thread.
pub(crate) type Answer = fn(&[u8], Vec<OwnedFd>) -> (Vec<u8>, Vec<OwnedFd>);

/// Makes the calling process, which must have one thread, pid 1 of a pid
/// namespace of its own (see the module's documentation), whose shim
/// answers requests with `answer`. Returns in the contained process; the
/// process it was becomes its shim and never returns. `Err` when the
/// namespace could not be made (the process goes on as it was).
pub(crate) fn enter(answer: Answer) -> Result<(), Error> {
    let (requests, shim_end) = sys::packet_socket_pair()?;
    // The maker writes a byte on it once the contained process is made.
    let (made, made_end) = sys::pipe()?;
    let shim = std::process::id() as i32;
    match sys::fork_single_threaded().map_err(|e| Error::new("fork", e))? {
        Forked::Parent(maker) => {
            drop((requests, made_end));
            let mut word = [0u8; 1];
            if sys::read_some(made.as_fd(), &mut word).ok() == Some(1) {
                drop(made);
                serve(maker, shim_end, answer)
            }
            let _ = sys::reap(maker);
            Err(Error::detected(
                "unshare(CLONE_NEWPID)",
                std::io::ErrorKind::PermissionDenied,
                "the kernel refused a pid namespace",
            ))
        }
        Forked::Child => {
            // The maker: dies with the shim, makes the namespace and its
            // pid 1, then waits for it and ends as it ends.
            drop((shim_end, made));
            if sys::die_with_parent(shim).is_err()
                || sys::unshare(
                    nix::sched::CloneFlags::CLONE_NEWPID,
                    "unshare(CLONE_NEWPID)",
                )
                .is_err()
            {
                sys::exit_now(1);
            }
            let Ok((lifeline, lifeline_end)) = sys::pipe() else {
                sys::exit_now(1);
            };
            match sys::fork_single_threaded() {
                Ok(Forked::Parent(contained)) => {
                    drop((requests, lifeline));
                    let _ = sys::write_all(made_end.as_fd(), b"m");
                    drop(made_end);
                    hold_nothing(&[lifeline_end.as_raw_fd()]);
                    exit_as(sys::reap(contained).unwrap_or(0))
                }
                Ok(Forked::Child) => {}
                Err(_) => sys::exit_now(1),
            }
            // Pid 1: dies with the maker (as pid 1 it sees no parent id:
            // the maker is gone when the lifeline's other end is).
            drop((lifeline_end, made_end));
            // SAFETY: prctl with integers.
            let asked = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
            if !asked || sys::at_end(lifeline.as_fd()) {
                sys::exit_now(1);
            }
            drop(lifeline);
            *lock() = Some(requests);
            CONTAINED.store(true, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// In the shim and the maker: no descriptor of the process but `keep`, and
/// `/dev/null` for the standard streams (a harness waits for their end).
fn hold_nothing(keep: &[i32]) {
    sys::close_all_but(keep);
    let _ = sys::null_standard_streams();
}

fn lock() -> std::sync::MutexGuard<'static, Option<OwnedFd>> {
    SHIM.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this process is pid 1 of a pid namespace [`enter`] made.
pub(crate) fn contained() -> bool {
    CONTAINED.load(Ordering::Relaxed) && nix::unistd::getpid().as_raw() == 1
}

/// Kills every other process of this process's namespace and reaps them:
/// whether none is left (a process stuck in the kernel may take its time).
/// `None` when this process is not contained.
pub(crate) fn end_all() -> Option<bool> {
    if !contained() {
        return None;
    }
    for _ in 0..100 {
        // SAFETY: kill with integers: from pid 1 of a pid namespace (checked
        // above), -1 is every other process of it and of the namespaces
        // inside it, and none outside.
        let found = unsafe { libc::kill(-1, libc::SIGKILL) } == 0;
        // Its children, and the orphans that came to it as pid 1: all
        // killed, so waiting for each ends.
        sys::reap_all_children();
        if !found {
            return Some(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Some(false)
}

/// Asks the shim (see [`Answer`]): its reply, of at most `reply_size`
/// bytes, and the descriptors with it. `None` when this process is not
/// contained.
pub(crate) fn ask(
    request: &[u8],
    fds: &[BorrowedFd<'_>],
    reply_size: usize,
) -> Option<std::io::Result<(Vec<u8>, Vec<OwnedFd>)>> {
    if !contained() {
        return None;
    }
    let shim = lock();
    let socket = shim.as_ref()?;
    Some((|| {
        sys::send_with_fds(socket.as_fd(), request, fds)?;
        let mut reply = vec![0u8; reply_size];
        let (length, fds) = sys::recv_with_fds(socket.as_fd(), &mut reply)?;
        if length == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the process's shim is gone",
            ));
        }
        reply.truncate(length);
        Ok((reply, fds))
    })())
}

// The shim's side.

/// The shim: holds nothing of the process but what it needs, answers
/// requests, and ends as `maker`, and so the contained process, ends.
fn serve(maker: i32, requests: OwnedFd, answer: Answer) -> ! {
    let Ok(ended) = sys::pidfd_open(maker) else {
        // No pidfd (before Linux 5.3): it waits for the maker alone.
        exit_as(sys::reap(maker).unwrap_or(0))
    };
    hold_nothing(&[requests.as_raw_fd(), ended.as_raw_fd()]);
    let mut requests = Some(requests);
    loop {
        let mut watched = vec![ended.as_fd()];
        watched.extend(requests.as_ref().map(|r| r.as_fd()));
        let Ok(ready) = sys::wait_readable(&watched, None) else {
            exit_as(sys::reap(maker).unwrap_or(0));
        };
        if ready[0] {
            exit_as(sys::reap(maker).unwrap_or(0));
        }
        if ready.get(1) != Some(&true) {
            continue;
        }
        let socket = requests.as_ref().expect("watched");
        let mut request = [0u8; 256];
        match sys::recv_with_fds(socket.as_fd(), &mut request) {
            Ok((length @ 1.., fds)) => {
                let (reply, fds) = answer(&request[..length], fds);
                let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
                let _ = sys::send_with_fds(socket.as_fd(), &reply, &fds);
            }
            // The contained process closed its end.
            _ => requests = None,
        }
    }
}

/// Ends the shim as the contained process ended: the same exit code, or
/// killed by the same signal.
fn exit_as(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        sys::default_signals(&[signal]);
        sys::unblock_all_signals();
        // SAFETY: raise with a signal number the kernel reported.
        unsafe { libc::raise(signal) };
        sys::exit_now(128 + signal);
    }
    sys::exit_now(libc::WEXITSTATUS(status))
}
