//! Waiting for many descriptors and a deadline at once, for the fault
//! engine: an epoll set (whose size no descriptor limit bounds, unlike
//! poll's), a timerfd for nanosecond deadlines on the monotonic clock, and
//! an eventfd another thread bumps to wake the waiter.

use crate::error::Error;
use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `fd` from a system call that returns a new descriptor or -1.
fn owned(fd: libc::c_int, operation: &'static str) -> Result<OwnedFd, Error> {
    if fd < 0 {
        return Err(Error::last_os(operation));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The monotonic clock (what `Instant` reads), in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    // SAFETY: an all-zero timespec is a valid value of this plain C struct.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The most ready descriptors one wait reports (the others, still ready,
/// the next).
const EVENTS: usize = 64;

/// An epoll set: descriptors registered with a key, readable ones reported
/// by key.
pub(crate) struct Poller {
    epoll: OwnedFd,
}

impl Poller {
    /// An empty set.
    pub(crate) fn new() -> Result<Poller, Error> {
        // SAFETY: epoll_create1 takes flags; the result is checked.
        let epoll = owned(
            unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
            "epoll_create1",
        )?;
        Ok(Poller { epoll })
    }

    /// Reports `fd` as `key` while it is readable (or has an error). Any
    /// thread may add while another waits. A descriptor leaves the set when
    /// it is closed.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, key: u64) -> Result<(), Error> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: epoll_ctl reads the event, which lives across the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if rc != 0 {
            return Err(Error::last_os("epoll_ctl(EPOLL_CTL_ADD)"));
        }
        Ok(())
    }

    /// Waits until a registered descriptor is ready, then appends the keys
    /// of the ready ones to `ready`. An interrupted wait reports nothing.
    pub(crate) fn wait(&self, ready: &mut Vec<u64>) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: epoll_wait writes at most `EVENTS` events into `events`.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                -1,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(error),
            };
        }
        ready.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// A timer on the monotonic clock, readable once its time has come.
pub(crate) struct Timer {
    fd: OwnedFd,
    armed: Option<u64>,
}

impl Timer {
    pub(crate) fn new() -> Result<Timer, Error> {
        // SAFETY: timerfd_create takes a clock id and flags; the result is checked.
        let fd = owned(
            unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
                )
            },
            "timerfd_create",
        )?;
        Ok(Timer { fd, armed: None })
    }

    /// Makes the timer readable at `at` ([`monotonic_ns`]), or never: a
    /// system call only when that changes.
    pub(crate) fn set(&mut self, at: Option<u64>) -> io::Result<()> {
        if at == self.armed {
            return Ok(());
        }
        // SAFETY: an all-zero itimerspec (disarmed) is a valid value of this plain C struct.
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        if let Some(at) = at {
            // 0 would disarm it: a time already past is 1 ns.
            let at = at.max(1);
            spec.it_value.tv_sec = (at / 1_000_000_000) as libc::time_t;
            spec.it_value.tv_nsec = (at % 1_000_000_000) as libc::c_long;
        }
        // SAFETY: timerfd_settime reads the itimerspec, which lives across the call.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            self.armed = None;
            return Err(io::Error::last_os_error());
        }
        self.armed = at;
        Ok(())
    }

    /// Clears the timer's readiness after it fired (it stays disarmed).
    pub(crate) fn clear(&mut self) {
        drain(self.as_fd());
        self.armed = None;
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

/// An eventfd: a counter another thread bumps to wake a waiting one.
pub(crate) fn event() -> Result<OwnedFd, Error> {
    // SAFETY: eventfd(2) with constant arguments; the result is checked.
    owned(
        unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) },
        "eventfd",
    )
}

/// Bumps an eventfd.
pub(crate) fn notify(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: write reads the 8 bytes of `one`, which lives across the call.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Resets an eventfd after a wake-up (or a timerfd after it fired).
pub(crate) fn drain(fd: BorrowedFd<'_>) {
    let mut count = [0u8; 8];
    // SAFETY: read writes at most 8 bytes into `count`, which we own.
    unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_timer_and_an_event_wake_the_poller_by_key() {
        let poller = Poller::new().unwrap();
        let mut timer = Timer::new().unwrap();
        let wake = event().unwrap();
        poller.add(timer.as_fd(), 1).unwrap();
        poller.add(wake.as_fd(), 2).unwrap();
        let start = monotonic_ns();
        timer.set(Some(start + 2_000_000)).unwrap();
        let mut ready = Vec::new();
        poller.wait(&mut ready).unwrap();
        assert_eq!(ready, [1]);
        assert!(monotonic_ns() >= start + 2_000_000);
        timer.clear();
        // A time already past fires at once.
        timer.set(Some(start)).unwrap();
        ready.clear();
        poller.wait(&mut ready).unwrap();
        assert_eq!(ready, [1]);
        timer.clear();
        timer.set(None).unwrap();
        notify(wake.as_fd());
        ready.clear();
        poller.wait(&mut ready).unwrap();
        assert_eq!(ready, [2]);
        drain(wake.as_fd());
    }
}
