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
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// The first descriptor number of the held namespaces in the holder.
pub(crate) const FIRST_HELD_FD: i32 = 3;

/// A holder that waits for [`Holder::confirm`]; dropped without it, the
/// holder ends.
pub(crate) struct Holder {
    pid: i32,
    go: OwnedFd,
}

impl Holder {
    /// Forks a holder named `name` (its `comm`, at most 15 bytes, which
    /// identifies it in `/proc/PID/comm`) that keeps `keep` as descriptors
    /// `FIRST_HELD_FD`, `FIRST_HELD_FD + 1`, ... in order.
    pub(crate) fn fork(name: &str, keep: &[BorrowedFd<'_>]) -> Result<Holder, Error> {
        let name = CString::new(name).map_err(|_| {
            Error::invalid_input("name a holder process", "the name has a NUL byte")
        })?;
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
        Ok(Holder { pid, go })
    }

    /// The holder's process id.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Tells the holder to stay, until it is killed.
    pub(crate) fn confirm(self) -> Result<(), Error> {
        std::fs::File::from(self.go)
            .write_all(b"k")
            .map_err(|e| Error::new("tell the holder process to stay", e))
    }
}

/// In the forked child: a session of its own, the name, `/dev/null` as the
/// standard streams, the kept descriptors in place and nothing else open;
/// then it waits for the go, and holds until killed. Async-signal-safe.
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
        close_from(wait + 1);
        let mut go = 0u8;
        if libc::read(wait, (&mut go as *mut u8).cast(), 1) != 1 {
            libc::_exit(0);
        }
        libc::close(wait);
        loop {
            libc::pause();
        }
    }
}

/// Closes every descriptor from `first` on. Async-signal-safe.
fn close_from(first: i32) {
    // SAFETY: close_range takes integers; on a kernel without it (ENOSYS,
    // before 5.9) each descriptor up to the usual limit is closed instead.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) };
    if closed != 0 {
        for fd in first..4096 {
            // SAFETY: closing a descriptor number that may not be open.
            unsafe { libc::close(fd) };
        }
    }
}
