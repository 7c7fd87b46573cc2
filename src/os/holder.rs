//! A holder: a process forked from the calling thread that holds some
//! namespaces (by being in the thread's, and by descriptors) after the
//! process that made them has ended, until it is killed.
//!
//! It holds nothing else: its standard streams are `/dev/null` (closed if
//! that cannot be opened), every other descriptor is closed, and it stays
//! only once its maker confirms (the maker writes its notes first; if that
//! fails, the holder ends by itself).

use crate::error::Error;
use nix::libc;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The first descriptor number of the held namespaces in the holder.
pub(crate) const FIRST_HELD_FD: i32 = 3;

/// A holder that waits for [`Holder::confirm`]; dropped without it, the
/// holder ends.
pub(crate) struct Holder {
    pid: i32,
    /// Its start time, as `/proc/PID/stat` gives it (field 22).
    start: Option<String>,
    go: OwnedFd,
}

impl Holder {
    /// Forks a holder named `name` (its `comm`, at most 15 bytes, which
    /// identifies it in `/proc/PID/comm`) that keeps `keep` as descriptors
    /// `FIRST_HELD_FD`, `FIRST_HELD_FD + 1`, ... in order.
    ///
    /// A [contained](crate::os::contain) process (a rootless test's) has
    /// its shim fork the holder, outside its pid namespace, which ends with
    /// it; the holder is in the calling thread's network and mount
    /// namespaces all the same.
    pub(crate) fn fork(name: &str, keep: &[BorrowedFd<'_>]) -> Result<Holder, Error> {
        let name = CString::new(name).map_err(|_| {
            Error::invalid_input("name a holder process", "the name has a NUL byte")
        })?;
        if let Some(forked) = fork_in_shim(&name, keep) {
            return forked;
        }
        let keep: Vec<i32> = keep.iter().map(|fd| fd.as_raw_fd()).collect();
        // Room for the child to move descriptors, made before the fork.
        let mut moved = vec![0i32; keep.len() + 1];
        let (wait, go) = crate::os::sys::pipe()?;
        let (started, starting) = crate::os::sys::pipe()?;
        // SAFETY: the child runs only async-signal-safe system calls on
        // memory prepared before the fork (`hold`), and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::new(
                "fork a holder process",
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            hold(
                &name,
                &keep,
                wait.as_raw_fd(),
                starting.as_raw_fd(),
                &mut moved,
            );
        }
        drop(wait);
        drop(starting);
        // Until the holder has a session of its own, it would die with its
        // maker's process group (a rootless test's child is killed with its).
        let mut word = [0u8; 1];
        std::fs::File::from(started)
            .read_exact(&mut word)
            .map_err(|e| Error::new("wait for the holder process to start", e))?;
        Ok(Holder {
            pid,
            start: process_start(pid),
            go,
        })
    }

    /// The holder's process id.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// The holder's start time (field 22 of `/proc/PID/stat`), which tells
    /// it from a later process with the same id. (A contained process's
    /// `/proc` does not show the holder: its shim reads it.)
    pub(crate) fn start(&self) -> Option<&str> {
        self.start.as_deref()
    }

    /// Tells the holder to stay, until it is killed.
    pub(crate) fn confirm(self) -> Result<(), Error> {
        std::fs::File::from(self.go)
            .write_all(b"k")
            .map_err(|e| Error::new("tell the holder process to stay", e))
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`), to tell it from
/// a later process with the same id.
pub(crate) fn process_start(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19).map(str::to_owned)
}

/// Has the shim of this contained process fork the holder (see
/// [`answer_in_shim`]), with its id and start time as the system sees
/// them. `None` when this process is not contained.
fn fork_in_shim(name: &CString, keep: &[BorrowedFd<'_>]) -> Option<Result<Holder, Error>> {
    use crate::os::sys::{self, NsKind};
    if !crate::os::contain::contained() {
        return None;
    }
    let namespaces = sys::open_thread_ns(NsKind::Net)
        .and_then(|net| sys::open_thread_ns(NsKind::Mount).map(|mnt| (net, mnt)));
    let (net, mnt) = match namespaces {
        Ok(namespaces) => namespaces,
        Err(error) => return Some(Err(error)),
    };
    let mut fds = vec![net.as_fd(), mnt.as_fd()];
    fds.extend_from_slice(keep);
    let asked = crate::os::contain::ask(name.as_bytes(), &fds, 64)?;
    let failed = |e: std::io::Error| Error::new("fork a holder process", e);
    Some(asked.map_err(failed).and_then(|(reply, fds)| {
        let number = reply
            .get(..4)
            .map_or(-libc::EIO, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let start = std::str::from_utf8(&reply[4.min(reply.len())..])
            .ok()
            .filter(|start| !start.is_empty())
            .map(str::to_owned);
        match fds.into_iter().next() {
            Some(go) if number > 0 => Ok(Holder {
                pid: number,
                start,
                go,
            }),
            _ => Err(failed(std::io::Error::from_raw_os_error(-number))),
        }
    }))
}

/// In the shim of a contained process (see [`crate::os::contain`]), which
/// has one thread: forks a holder named `name` in the network and mount
/// namespaces `fds[0]` and `fds[1]` (the test's), holding the rest of
/// `fds`, outside the contained process's pid namespace; once it has a
/// session of its own, replies with its id and start time and the write
/// end of its go pipe (or a negative errno).
pub(crate) fn answer_in_shim(name: &[u8], fds: Vec<OwnedFd>) -> (Vec<u8>, Vec<OwnedFd>) {
    match fork_here(name, fds) {
        Ok((pid, go)) => {
            let mut reply = pid.to_ne_bytes().to_vec();
            reply.extend(process_start(pid).unwrap_or_default().bytes());
            (reply, vec![go])
        }
        Err(errno) => ((-errno).to_ne_bytes().to_vec(), Vec::new()),
    }
}

fn fork_here(name: &[u8], fds: Vec<OwnedFd>) -> Result<(i32, OwnedFd), i32> {
    use crate::os::sys::{self, Forked};
    let name = CString::new(name).map_err(|_| libc::EINVAL)?;
    if fds.len() < 2 {
        return Err(libc::EINVAL);
    }
    let errno = |e: Error| e.raw_os_error().unwrap_or(libc::EIO);
    let (wait, go) = sys::pipe().map_err(errno)?;
    let (started, starting) = sys::pipe().map_err(errno)?;
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let keep = &raw[2..];
    let mut moved = vec![0i32; keep.len() + 1];
    match sys::fork_single_threaded() {
        Ok(Forked::Child) => {
            drop((go, started));
            if sys::setns_net_and_mount(fds[0].as_fd(), fds[1].as_fd()).is_err() {
                sys::exit_now(1);
            }
            show_the_systems_proc();
            hold(
                &name,
                keep,
                wait.as_raw_fd(),
                starting.as_raw_fd(),
                &mut moved,
            )
        }
        Ok(Forked::Parent(pid)) => {
            drop((wait, starting, fds));
            let mut word = [0u8; 1];
            match sys::read_some(started.as_fd(), &mut word) {
                Ok(1) => Ok((pid, go)),
                _ => {
                    let _ = sys::reap(pid);
                    Err(libc::ECHILD)
                }
            }
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EAGAIN)),
    }
}

/// In a holder forked by a shim, in the test's mount namespace: a rootless
/// test's `/proc` is one of its runner's pid namespace (see
/// `os/run_dir.rs`), which ends with the runner, and in which the holder
/// is not (`/proc/self` does not resolve). The holder moves to a copy of
/// the mount namespace (the one `nsenter -m` then enters) and unmounts it
/// there, which shows the system's `/proc` below it. (The shim has one
/// thread: its child may allocate.)
fn show_the_systems_proc() {
    use crate::os::sys;
    if std::fs::read_link("/proc/self").is_ok() {
        return;
    }
    if sys::unshare(nix::sched::CloneFlags::CLONE_NEWNS, "unshare(CLONE_NEWNS)").is_ok() {
        let _ = sys::detach_mount(std::path::Path::new("/proc"));
    }
}

/// In the forked child: a session of its own, the name, `/dev/null` as the
/// standard streams, the kept descriptors in place and nothing else open;
/// then it waits for the go on `wait`, and holds until killed.
/// Async-signal-safe.
fn hold(name: &CString, keep: &[i32], wait: i32, started: i32, moved: &mut [i32]) -> ! {
    // SAFETY (whole block): system calls with integers and pointers to
    // memory made before the fork; no allocation, no lock, no return.
    unsafe {
        libc::setsid();
        libc::write(started, b"s".as_ptr().cast(), 1);
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        // A maker out of descriptors (EMFILE) still gets its holder: the
        // soft limit goes up to the hard one.
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        // First out of the way, above every source and destination, then
        // in place.
        let count = keep.len();
        let mut high = FIRST_HELD_FD + count as i32 + 1;
        for fd in keep.iter().chain([&wait]) {
            high = high.max(*fd + 1);
        }
        for (slot, fd) in moved.iter_mut().zip(keep.iter().chain([&wait])) {
            *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, high);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            if null >= 0 {
                libc::dup2(null, fd);
            } else {
                libc::close(fd);
            }
        }
        for (i, fd) in moved.iter().take(count).enumerate() {
            libc::dup2(*fd, FIRST_HELD_FD + i as i32);
        }
        let wait = FIRST_HELD_FD + count as i32;
        libc::dup2(moved[count], wait);
        crate::os::sys::close_from(wait + 1);
        let mut go = 0u8;
        if libc::read(wait, (&mut go as *mut u8).cast(), 1) != 1 {
            libc::_exit(0);
        }
        libc::close(wait);
        // Whatever signals its maker blocked.
        let none = crate::os::sys::signal_set(&[]);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        loop {
            libc::pause();
        }
    }
}
