//! The command's side of `netns-test exec`: finding the program, and the
//! thread that enters the namespaces, starts pid 1 and waits for it.

use super::options::ExecEnd;
use crate::contract::TestSpec;
use crate::debug::capture;
use crate::error::Error;
use crate::os::pid_one::{self, Launch, Program};
use crate::os::sys;
use crate::run::test_ns::{HostSide, Occupant, TestNamespace};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Where `program` is, as `execvp` looks for it: itself when it has a `/`,
/// else the first executable file of that name in `PATH`.
pub(super) fn resolve(program: &OsStr) -> Result<PathBuf, ExecEnd> {
    let shown = program.to_string_lossy();
    if program.is_empty() {
        return Err(ExecEnd::NotStarted {
            code: 127,
            message: "netns-test: the command is empty".into(),
        });
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    let mut denied = None;
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        let meta = match std::fs::metadata(&candidate) {
            Ok(meta) => meta,
            // A directory of PATH this user may not search: as execvp
            // does, go on, and say so when nothing else is found.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.get_or_insert(candidate);
                continue;
            }
            Err(_) => continue,
        };
        use std::os::unix::fs::PermissionsExt;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    Err(match (not_executable, denied) {
        (Some(found), _) => ExecEnd::NotStarted {
            code: 126,
            message: format!(
                "netns-test: cannot run `{shown}`: {} is not an executable file",
                found.display()
            ),
        },
        (None, Some(denied)) => ExecEnd::NotStarted {
            code: 126,
            message: format!(
                "netns-test: cannot run `{shown}`: permission denied: {} cannot be searched by this user",
                denied.parent().unwrap_or(&denied).display()
            ),
        },
        (None, None) => ExecEnd::NotStarted {
            code: 127,
            message: format!(
                "netns-test: `{shown}`: command not found (PATH={})",
                path.to_string_lossy()
            ),
        },
    })
}

/// What the command's thread needs.
pub(super) struct Start {
    pub(super) spec: &'static TestSpec,
    pub(super) path: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) own_process_group: bool,
    pub(super) command_mask: nix::libc::sigset_t,
    pub(super) timed_out: Arc<AtomicBool>,
}

/// The command, started: pid 1 of its namespace is running.
pub(super) struct Started {
    pidfd: OwnedFd,
    own_process_group: bool,
    subject: String,
    thread: JoinHandle<Result<ExecEnd, Error>>,
}

impl Started {
    /// A descriptor for pid 1: readable once it has ended, and the way to
    /// signal it without ever reaching another process.
    pub(super) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    pub(super) fn own_process_group(&self) -> bool {
        self.own_process_group
    }

    /// How messages name the command.
    pub(super) fn subject(&self) -> &str {
        &self.subject
    }

    /// Waits for the thread to keep, capture and leave, and returns how the
    /// command ended.
    pub(super) fn finish(self) -> Result<ExecEnd, Error> {
        self.thread.join().unwrap_or_else(|panic| {
            std::panic::resume_unwind(panic);
        })
    }
}

/// Starts the command's thread, and returns once pid 1 runs (or setting up
/// failed).
pub(super) fn start(start: Start) -> Result<Started, Error> {
    let subject = format!("command `{}`", shown(&start.args));
    let own_process_group = start.own_process_group;
    let (sender, receiver) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        // Named as the harness names a test's thread, which ends with it:
        // it need not move back to the host's namespaces.
        .name(start.spec.libtest_name().to_owned())
        .spawn({
            let subject = subject.clone();
            move || run(start, subject, sender)
        })
        .map_err(|e| Error::new("spawn the command's thread", e))?;
    match receiver.recv() {
        Ok(pidfd) => Ok(Started {
            pidfd,
            own_process_group,
            subject,
            thread,
        }),
        // The thread ended without starting pid 1: its error.
        Err(_) => Err(match thread.join() {
            Ok(Err(error)) => error,
            Ok(Ok(_)) => Error::detected(
                "start the command",
                std::io::ErrorKind::Other,
                "the command's thread ended without starting it",
            ),
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// The command's thread: namespaces, pid 1, its end, keep and capture.
fn run(
    start: Start,
    subject: String,
    started: mpsc::SyncSender<OwnedFd>,
) -> Result<ExecEnd, Error> {
    let spec = start.spec;
    let host = HostSide::prepare_for(spec)?;
    let occupant = Occupant {
        subject,
        capture_dir: Some(capture_dir(spec)),
        announce_failure: false,
    };
    let namespace = TestNamespace::enter_as(spec, host, occupant)?;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    if let Some(veth) = namespace.veth() {
        let mut set = |key: &str, value: String| {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), value.into()));
        };
        set("NETNS_TEST_VETH", veth.ns_name().to_owned());
        set("NETNS_TEST_NS_IPV4", veth.ns_ipv4().to_string());
        set("NETNS_TEST_HOST_IPV4", veth.host_ipv4().to_string());
        if let (Some(ns), Some(host)) = (veth.ns_ipv6(), veth.host_ipv6()) {
            set("NETNS_TEST_NS_IPV6", ns.to_string());
            set("NETNS_TEST_HOST_IPV6", host.to_string());
        }
    }
    let program = Program::new(start.path.as_os_str(), &start.args, &env)?;
    let (lifeline, lifeline_writer) = sys::pipe()?;
    let (exec_error, exec_error_writer) = sys::pipe()?;
    let pid = pid_one::spawn(&Launch {
        program: &program,
        last_pid: pid_one::LastPid::random(),
        own_process_group: start.own_process_group,
        command_mask: start.command_mask,
        lifeline: lifeline.as_fd(),
        lifeline_writer: lifeline_writer.as_fd(),
        exec_error: exec_error_writer.as_fd(),
    })?;
    drop(exec_error_writer);
    let pidfd = match sys::pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(error) => {
            sys::kill_process(pid);
            let _ = sys::wait_for(pid);
            return Err(error);
        }
    };
    // The main thread gone (it does not go before this thread ends) would
    // leave nothing to pass signals on or to time out: stop here too.
    if started.send(pidfd).is_err() {
        sys::kill_process(pid);
    }
    let status = sys::wait_for(pid)?;
    // Pid 1 has ended, and with it every process of its namespace.
    drop((lifeline, lifeline_writer));
    let end = if start.timed_out.load(Ordering::SeqCst) {
        ExecEnd::TimedOut
    } else if let Some(errno) = exec_errno(exec_error) {
        let error = std::io::Error::from_raw_os_error(errno);
        ExecEnd::NotStarted {
            code: if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
            message: format!("netns-test: cannot run `{}`: {error}", start.path.display()),
        }
    } else {
        ExecEnd::Exited(exit_code(status))
    };
    namespace.leave(end != ExecEnd::Exited(0));
    Ok(end)
}

/// Pid 1's `wait` status as an exit code: its own (the command's), or
/// 128 + N when signal N killed it.
fn exit_code(status: i32) -> u8 {
    if nix::libc::WIFSIGNALED(status) {
        (128 + nix::libc::WTERMSIG(status)) as u8
    } else {
        nix::libc::WEXITSTATUS(status) as u8
    }
}

/// The `errno` of a failed `execve`, if the command's child wrote one.
fn exec_errno(pipe: OwnedFd) -> Option<i32> {
    sys::set_nonblocking(pipe.as_fd()).ok()?;
    let mut bytes = [0u8; 4];
    std::fs::File::from(pipe).read_exact(&mut bytes).ok()?;
    Some(i32::from_ne_bytes(bytes))
}

/// `netns-test/<name>-<pid>/` in the target directory cargo would use
/// here (`CARGO_TARGET_DIR`, the workspace's), where tests' captures go
/// too; the process id keeps two runs of the same command apart.
fn capture_dir(spec: &TestSpec) -> capture::Location {
    capture::location_for_command(format!("{}-{}", spec.name, std::process::id()))
}

/// The command line as messages show it.
fn shown(args: &[OsString]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = words.join(" ");
    if line.chars().count() > 60 {
        let short: String = line.chars().take(57).collect();
        format!("{short}...")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn finds_programs_as_execvp_does() {
        assert!(resolve(OsStr::new("sh")).unwrap().ends_with("sh"));
        assert_eq!(
            resolve(OsStr::new("./x")).unwrap(),
            Path::new("./x").to_path_buf()
        );
        match resolve(OsStr::new("netns-test-no-such-program")) {
            Err(ExecEnd::NotStarted { code: 127, message }) => {
                assert!(message.contains("command not found"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exit_codes_pass_signals_on_as_128_plus_n() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(15), 143);
        assert_eq!(shown(&["a".into(), "b c".into()]), "a b c");
        assert!(shown(&["x".repeat(100).into()]).ends_with("..."));
    }
}
