//! Containing what a process starts: the process goes on as pid 1 of a pid
//! namespace of its own, so that every process it starts, in whatever
//! session or process group, is in that namespace, and the kernel kills
//! them all when it ends, however it ends ([`enter`]). Between two uses it
//! kills them itself ([`end_all`]).
//!
//! A process cannot move into a pid namespace, and one whose children go
//! into another pid namespace than its own cannot start threads; so the
//! process forks twice (the first child makes the namespace, the second is
//! its pid 1) and that grandchild goes on as the process, on the same
//! memory. The original stays behind as its shim: single-threaded, outside
//! the namespace, it answers the contained process's requests ([`ask`]:
//! forking the holder of kept namespaces, which must outlive the
//! namespace) and ends as the contained process ends, with its status.
//! Killing the shim kills the contained process, and with it the
//! namespace.
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
    // The shim holds the write end: the contained process sees the end
    // when the shim is gone.
    let (lifeline, lifeline_end) = sys::pipe()?;
    sys::become_subreaper().map_err(|e| Error::new("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    let shim = std::process::id() as i32;
    match sys::fork_single_threaded().map_err(|e| Error::new("fork", e))? {
        Forked::Parent(maker) => {
            drop((requests, lifeline));
            // The maker ends at once, after its own fork.
            let made = sys::reap(maker).is_ok_and(|status| status == 0);
            let contained = sys::children_of_this_thread()
                .ok()
                .and_then(|children| children.first().copied());
            match (made, contained) {
                (true, Some(child)) => serve(child, shim_end, lifeline_end, answer),
                _ => {
                    let _ = sys::unbecome_subreaper();
                    Err(Error::detected(
                        "unshare(CLONE_NEWPID)",
                        std::io::ErrorKind::PermissionDenied,
                        "the kernel refused a pid namespace",
                    ))
                }
            }
        }
        Forked::Child => {
            // The maker: the namespace, its pid 1, and gone.
            drop((shim_end, lifeline_end));
            if sys::unshare(
                nix::sched::CloneFlags::CLONE_NEWPID,
                "unshare(CLONE_NEWPID)",
            )
            .is_err()
            {
                sys::exit_now(1);
            }
            match sys::fork_single_threaded() {
                Ok(Forked::Child) => {}
                Ok(Forked::Parent(_)) => sys::exit_now(0),
                Err(_) => sys::exit_now(1),
            }
            // Pid 1. Once the maker is gone and the shim its parent, it
            // dies with the shim (as pid 1 it sees no parent id: it reads
            // the system's).
            for _ in 0..10_000 {
                if sys::parent_in_proc() == Some(shim) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            // SAFETY: prctl with integers.
            let asked = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
            if !asked || sys::parent_in_proc() != Some(shim) || sys::at_end(lifeline.as_fd()) {
                sys::exit_now(1);
            }
            drop(lifeline);
            *lock() = Some(requests);
            CONTAINED.store(true, Ordering::Relaxed);
            Ok(())
        }
    }
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
/// requests, and ends as `child`, the contained process, ends.
fn serve(child: i32, requests: OwnedFd, lifeline_end: OwnedFd, answer: Answer) -> ! {
    let Ok(ended) = sys::pidfd_open(child) else {
        // No pidfd (before Linux 5.3): it waits for the child alone.
        exit_as(sys::reap(child).unwrap_or(0))
    };
    let keep = [
        requests.as_raw_fd(),
        lifeline_end.as_raw_fd(),
        ended.as_raw_fd(),
    ];
    sys::close_all_but(&keep);
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = sys::dup_onto(null.as_fd(), fd);
        }
    }
    let mut requests = Some(requests);
    loop {
        let mut watched = vec![ended.as_fd()];
        watched.extend(requests.as_ref().map(|r| r.as_fd()));
        let Ok(ready) = sys::wait_readable(&watched, None) else {
            exit_as(sys::reap(child).unwrap_or(0));
        };
        if ready[0] {
            exit_as(sys::reap(child).unwrap_or(0));
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
