//! `netns-test exec`: any command in a fresh network namespace, set up as a
//! `#[netns_test]`'s is (private `/sys`, `/etc/hosts`, `/proc/net` and
//! `/run/netns`, `lo` up,
//! `accept_dad = 0`, optionally a veth pair to the host, keep and capture),
//! in a pid namespace of its own so that nothing it starts outlives it.
//!
//! The process, from the top:
//!
//! - the main thread: parses nothing (the binary did), enters a user
//!   namespace of its own when rootless (it is the only thread then),
//!   blocks the signals it passes on, and then only waits: for a signal to
//!   pass on, for the command's end, or for its time to be up;
//! - a thread for the command (named like it, as a test's harness thread):
//!   takes a veth slot, enters fresh namespaces as a test's thread does
//!   ([`TestNamespace`]), clones pid 1 of a new pid namespace
//!   ([`pid_one`]), which starts the command, and waits for it; then keeps
//!   and captures what the policies ask for, as for a test;
//! - pid 1, the command, and whatever the command starts: killed by the
//!   kernel when pid 1 ends, which it does when the command ends, or when
//!   the command thread dies (a SIGKILL of netns-test).

mod command;
mod options;

use crate::contract::{Flavor, TestSpec};
use crate::error::Error;
use crate::os::pid_one;
use crate::os::privilege;
use crate::os::sys;
use crate::os::userns::IdMaps;
use crate::settings::{self, ModeSetting};
use crate::veth_pair::VethSpec;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use options::{ExecEnd, ExecOptions, Policy};

/// Runs `options.command` in a fresh network namespace and returns how it
/// ended; `Err` when the namespace could not be set up (netns-test's own
/// failure). Call it from a single-threaded process, as the binary's
/// `main` does: without CAP_SYS_ADMIN it moves the process into a user
/// namespace of its own, which a process with more threads cannot enter.
pub fn exec(options: ExecOptions) -> Result<ExecEnd, Error> {
    let Some(program) = options.command.first() else {
        return Err(Error::invalid_input("netns-test exec", "no command given"));
    };
    let path = match command::resolve(program) {
        Ok(path) => path,
        Err(not_started) => return Ok(not_started),
    };
    // One namespace in this process: no `/run` template to copy it from.
    settings::mark_one_test();
    if rootless()? {
        if options.veth {
            return Err(Error::detected(
                "create a veth pair to the host",
                std::io::ErrorKind::PermissionDenied,
                "`--veth` needs real root (CAP_NET_ADMIN in the host's network namespace), and this runs rootless, \
                 in a user namespace of its own (no CAP_SYS_ADMIN). Run it with sudo, or leave `--veth` out.",
            ));
        }
        IdMaps::for_this_process()
            .enter_here()
            .map_err(privilege::explain_user_namespace_refusal_for_command)?;
    }
    let command_mask = sys::block_signals(&pid_one::waited_signals())?;
    let signals = sys::signalfd(&pid_one::FORWARDED)?;
    let spec = spec_for(&options, program);
    let timed_out = Arc::new(AtomicBool::new(false));
    let started = command::start(command::Start {
        spec,
        path,
        args: options.command.clone(),
        // The terminal's signals reach a command in netns-test's process
        // group directly; elsewhere the command gets a group of its own.
        own_process_group: !sys::in_terminal_foreground(),
        command_mask,
        timed_out: Arc::clone(&timed_out),
    })?;
    supervise(&started, &signals, &options, &timed_out)?;
    started.finish()
}

/// Whether to run rootless, from `NETNS_TEST_MODE` and the capabilities.
fn rootless() -> Result<bool, Error> {
    match settings::mode() {
        Ok(ModeSetting::Auto) => Ok(!privilege::privileged()),
        Ok(ModeSetting::Root) => Ok(false),
        Ok(ModeSetting::Rootless) => Ok(true),
        Err(message) => Err(Error::detected(
            "read NETNS_TEST_MODE",
            std::io::ErrorKind::InvalidInput,
            message.to_owned(),
        )),
    }
}

/// The options as a test's, which the namespace's setup, keep and capture
/// take. The name (`exec-<program>`) names a kept namespace and the thread.
fn spec_for(options: &ExecOptions, program: &OsString) -> &'static TestSpec {
    let base = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = crate::debug::file_safe(&format!("exec-{base}"));
    Box::leak(Box::new(TestSpec {
        // Not a test's: no process looks it up in the binary's data.
        marker: [0; 2],
        name: Box::leak(name.into_boxed_str()),
        timeout: None,
        flavor: Flavor::CurrentThread,
        worker_threads: None,
        added_test_attribute: false,
        started: AtomicBool::new(false),
        veth: options.veth.then_some(VethSpec {
            mtu: 1500,
            ipv4: None,
            ipv6: None,
        }),
        keep: options.keep,
        capture: options.capture,
    }))
}

/// Until pid 1 ends: passes signals on, and stops everything when the time
/// is up (SIGTERM to every process of the namespace, SIGKILL to pid 1
/// `kill_after` later).
fn supervise(
    started: &command::Started,
    signals: &std::os::fd::OwnedFd,
    options: &ExecOptions,
    timed_out: &AtomicBool,
) -> Result<(), Error> {
    let pid_one = started.pidfd();
    // A zero timeout is no limit, as timeout(1) has it.
    let mut deadline = options
        .timeout
        .filter(|t| !t.is_zero())
        .map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    loop {
        let next = kill_at.or(deadline);
        let wait = next.map(|at| at.saturating_duration_since(Instant::now()));
        // An interrupted wait counts as nothing ready: the loop waits again.
        let ready = sys::wait_readable(&[signals.as_fd(), pid_one], wait)
            .map_err(|e| Error::new("poll", e))?;
        if ready[1] {
            return Ok(());
        }
        if ready[0] {
            let (signal, code) = sys::read_signal(signals.as_fd())?;
            // What the terminal sent reached the command too, unless it is
            // in a process group of its own.
            if code != nix::libc::SI_KERNEL || started.own_process_group() {
                sys::pidfd_send_signal(pid_one, signal)?;
            }
        }
        let now = Instant::now();
        if deadline.is_some_and(|at| now >= at) {
            deadline = None;
            timed_out.store(true, Ordering::SeqCst);
            let limit = options.timeout.unwrap_or_default();
            if options.kill_after.is_zero() {
                eprintln!(
                    "netns-test: {} timed out after {}: killing it and everything it started",
                    started.subject(),
                    seconds(limit)
                );
                sys::pidfd_send_signal(pid_one, nix::libc::SIGKILL)?;
            } else {
                eprintln!(
                    "netns-test: {} timed out after {}: sending SIGTERM to it and everything it started (SIGKILL in {})",
                    started.subject(),
                    seconds(limit),
                    seconds(options.kill_after)
                );
                sys::pidfd_send_signal(pid_one, pid_one::STOP_ALL)?;
                kill_at = Some(now + options.kill_after);
            }
        }
        if kill_at.is_some_and(|at| now >= at) {
            kill_at = None;
            sys::pidfd_send_signal(pid_one, nix::libc::SIGKILL)?;
        }
    }
}

/// `30 s`, `1.5 s`, `250 ms`.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{} s", duration.as_secs_f64())
    }
}
