//! Entering a new user namespace from a single-threaded process (a freshly
//! forked child, the fork server before `main`, or the `netns-test` binary
//! at its start for `netns-test exec`): `unshare(CLONE_NEWUSER)` fails with
//! EINVAL in a multi-threaded process, and a running test binary always is
//! one.

use crate::error::Error;
use crate::settings;
use nix::libc;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once this process has entered a user namespace of its own
/// ([`IdMaps::enter_here`]).
static ENTERED_HERE: AtomicBool = AtomicBool::new(false);

/// Whether this process runs rootless, in a user namespace netns-test made:
/// the child process of a rootless test, or `netns-test exec` without
/// CAP_SYS_ADMIN.
pub(crate) fn rootless() -> bool {
    settings::in_rootless_child() || ENTERED_HERE.load(Ordering::Relaxed)
}

/// The user's id outside any user namespace this process is in (a rootless
/// test is uid 0 inside its own): from `/proc/self/uid_map`.
pub(crate) fn outside_uid() -> Result<u32, Error> {
    let path = Path::new("/proc/self/uid_map");
    let map = std::fs::read_to_string(path).map_err(|e| Error::at("read", path, e))?;
    let fields: Vec<u32> = map
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect();
    Ok(match fields.as_slice() {
        // A rootless test's map: uid 0 inside is the one user outside. (The
        // initial namespace's map is "0 0 4294967295".)
        [0, outside, 1] => *outside,
        _ => nix::unistd::getuid().as_raw(),
    })
}

/// The user and group maps of a child's user namespace: uid and gid 0
/// inside are the real user and group outside.
pub(crate) struct IdMaps {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// The process that starts the child, which must not outlive it.
    parent: libc::pid_t,
}

impl IdMaps {
    /// Maps for a child of the calling process, prepared before the fork.
    pub(crate) fn for_this_process() -> IdMaps {
        IdMaps {
            uid_map: format!("0 {} 1\n", nix::unistd::geteuid()).into_bytes(),
            gid_map: format!("0 {} 1\n", nix::unistd::getegid()).into_bytes(),
            parent: std::process::id() as libc::pid_t,
        }
    }

    /// In the forked child: dies with the parent, enters a new user
    /// namespace and writes the maps. Async-signal-safe: system calls on
    /// buffers prepared before the fork, no allocation, no lock.
    pub(crate) fn enter_new_user_namespace(&self) -> std::io::Result<()> {
        // Killed with the thread that started it: a SIGKILLed test process
        // leaves no test running. If the parent is already gone, stop here.
        crate::os::sys::die_with_parent(self.parent)?;
        self.enter()
    }

    /// Moves the calling process, which must have one thread, into a new
    /// user namespace where it is uid and gid 0 (the user outside), with
    /// every capability there, and remembers it ([`rootless`]).
    pub(crate) fn enter_here(&self) -> std::io::Result<()> {
        self.enter()?;
        ENTERED_HERE.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the calling process, which must have one thread, into a new
    /// user namespace and writes the maps: uid and gid 0 inside are the
    /// user and group outside. Async-signal-safe.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        // SAFETY: unshare takes flags only; the caller has one thread.
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
