//! Pid 1 of a new pid namespace, for `netns-test exec`: a child cloned from
//! the calling thread (so in its network and mount namespaces) that starts
//! the command as its own child, passes on the signals sent to it from
//! outside, reaps what the command leaves behind, and ends with the
//! command's status. When it ends, the kernel kills every other process of
//! the namespace: nothing the command started outlives it. It dies with the
//! thread that made it (`PR_SET_PDEATHSIG`), so a SIGKILL of netns-test
//! ends it all too.
//!
//! The child is cloned from a multi-threaded process without `exec`: it
//! runs only system calls on memory prepared before the clone, allocates
//! nothing and takes no lock. Both clones are raw `clone` system calls,
//! which run no `fork` handlers of the C library.

use crate::error::Error;
use crate::os::sys;
use nix::libc;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The signals passed on to the command when sent from outside the
/// namespace.
pub(crate) const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Sent from outside to pid 1: send SIGTERM to every process of the
/// namespace (the command's time is up).
pub(crate) const STOP_ALL: i32 = libc::SIGALRM;

/// Every signal pid 1 waits for: those to forward, [`STOP_ALL`], and
/// SIGCHLD. They must be blocked in the thread that clones it.
pub(crate) fn waited_signals() -> Vec<i32> {
    let mut signals = FORWARDED.to_vec();
    signals.extend([STOP_ALL, libc::SIGCHLD]);
    signals
}

/// Pid 1's exit status when the thread that made it was gone before it
/// could tie its life to it.
const PARENT_GONE: i32 = 125;

/// A command, ready for `execve`: the program's path, the arguments and the
/// environment as C strings and pointer arrays, made before the clone.
pub(crate) struct Program {
    path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Program {
    /// `path` runs with `args` (the first is its `argv[0]`) and exactly the
    /// environment `env`.
    pub(crate) fn new(
        path: &OsStr,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<Program, Error> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                Error::invalid_input("prepare the command", "an argument has a NUL byte")
            })
        };
        let path = c(path.as_bytes())?;
        let mut strings = Vec::with_capacity(args.len() + env.len());
        for arg in args {
            strings.push(c(arg.as_bytes())?);
        }
        for (key, value) in env {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            strings.push(c(&pair)?);
        }
        let pointers = |range: std::ops::Range<usize>| {
            strings[range]
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = pointers(0..args.len());
        let envp = pointers(args.len()..strings.len());
        Ok(Program {
            path,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// The value pid 1 writes to its namespace's `ns_last_pid` before it
/// starts the command, so that the command's process id (the next one)
/// is not 2 in every run: names made from it ("unique" temporary files
/// and namespaces, say) would meet those of earlier runs in places the
/// runs share. Decimal text, made before the clone.
pub(crate) struct LastPid {
    text: [u8; 12],
    len: usize,
}

impl LastPid {
    /// A random value from 1000 to the host's `pid_max` less 1000.
    pub(crate) fn random() -> LastPid {
        let pid_max: u64 = sys::read_sysctl("kernel/pid_max")
            .and_then(|max| max.parse().ok())
            .unwrap_or(32768);
        let span = pid_max.saturating_sub(2000).max(1);
        let value = 1000 + sys::random_u64() % span;
        let digits = value.to_string();
        let mut text = [0u8; 12];
        text[..digits.len()].copy_from_slice(digits.as_bytes());
        LastPid {
            text,
            len: digits.len(),
        }
    }
}

/// What pid 1 needs, all made before the clone.
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Program,
    /// Where its namespace's process ids start.
    pub(crate) last_pid: LastPid,
    /// Put pid 1 and the command in a process group of their own (when
    /// netns-test does not run in the terminal's foreground, where the
    /// command must stay to read the terminal).
    pub(crate) own_process_group: bool,
    /// The signal mask the command starts with.
    pub(crate) command_mask: libc::sigset_t,
    /// The read end of a pipe whose write end only netns-test holds:
    /// readable (at its end) once netns-test is gone.
    pub(crate) lifeline: BorrowedFd<'a>,
    /// The write end of that pipe, which pid 1 closes.
    pub(crate) lifeline_writer: BorrowedFd<'a>,
    /// The write end of a close-on-exec pipe on which the command's child
    /// writes `errno` when `execve` fails.
    pub(crate) exec_error: BorrowedFd<'a>,
}

/// Clones pid 1 of a new pid namespace from the calling thread and returns
/// its process id. The signals it waits for (the forwarded ones, STOP_ALL
/// and SIGCHLD) must be blocked in the calling thread.
pub(crate) fn spawn(launch: &Launch<'_>) -> Result<i32, Error> {
    let waited = sys::signal_set(&waited_signals());
    let pipes = [
        launch.lifeline.as_raw_fd(),
        launch.lifeline_writer.as_raw_fd(),
        launch.exec_error.as_raw_fd(),
    ];
    // SAFETY: a fork-like clone (no new stack, no shared memory): the child
    // runs `be_pid_one` on its copy of this stack, which only makes system
    // calls on memory made before the clone and never returns.
    let pid = unsafe { clone_process(libc::CLONE_NEWPID) };
    if pid < 0 {
        return Err(Error::new(
            "clone(CLONE_NEWPID) for the command's pid namespace",
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        be_pid_one(launch, &waited, pipes);
    }
    Ok(pid)
}

/// `clone` with `flags` and SIGCHLD, like `fork`. Returns 0 in the child.
///
/// # Safety
///
/// The child must only make async-signal-safe calls and never return
/// from the caller's frame.
unsafe fn clone_process(flags: libc::c_int) -> i32 {
    // SAFETY: the arguments are flags and null pointers (no new stack, no
    // tids); the caller keeps the child to system calls.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        ) as i32
    }
}

/// Pid 1: ties its life to netns-test's, gets a `/proc` of its namespace,
/// starts the command, then waits for signals until the command ends.
fn be_pid_one(
    launch: &Launch<'_>,
    waited: &libc::sigset_t,
    [lifeline, writer, exec_error]: [RawFd; 3],
) -> ! {
    // SAFETY: prctl takes integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: closes our copy of the write end, a descriptor we own.
    unsafe { libc::close(writer) };
    let mut alive = libc::pollfd {
        fd: lifeline,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd that lives across the call.
    // Nothing ever writes to the pipe: any event is its end, netns-test gone.
    if unsafe { libc::poll(&mut alive, 1, 0) } != 0 {
        // SAFETY: _exit takes an integer and does not return.
        unsafe { libc::_exit(PARENT_GONE) };
    }
    if launch.own_process_group {
        // SAFETY: setpgid with integers.
        unsafe { libc::setpgid(0, 0) };
    }
    mount_own_proc();
    set_last_pid(&launch.last_pid);
    // SAFETY: as in `spawn`; the child runs `exec_command`, which execs or exits.
    let command = unsafe { clone_process(0) };
    if command == 0 {
        exec_command(launch, exec_error);
    }
    // SAFETY: closes our copy of the write end: only the command reports.
    unsafe { libc::close(exec_error) };
    if command < 0 {
        // SAFETY: _exit takes an integer and does not return.
        unsafe { libc::_exit(PARENT_GONE) };
    }
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for the kernel to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigwaitinfo reads the set and writes the siginfo, both ours.
        let signal = unsafe { libc::sigwaitinfo(waited, &mut info) };
        if signal < 0 {
            continue; // EINTR
        }
        if signal == libc::SIGCHLD {
            reap(command);
            continue;
        }
        // Only what a process outside the namespace sent (netns-test passing
        // a signal on), not what the terminal sent its whole foreground
        // process group, the command included.
        // SAFETY: si_pid is valid to read for signals sent by kill and by the kernel.
        let from_outside = unsafe { info.si_pid() } == 0 && info.si_code != libc::SI_KERNEL;
        if !from_outside {
            continue;
        }
        if signal == STOP_ALL {
            // SAFETY: kill with integers: every process of this namespace but pid 1.
            unsafe { libc::kill(-1, libc::SIGTERM) };
        } else {
            // SAFETY: kill with integers.
            unsafe { libc::kill(command, signal) };
        }
    }
}

/// Mounts a `/proc` of the new pid namespace in a mount namespace of pid
/// 1's own (a copy of the one it was cloned into), so that the process ids
/// the command sees there are the ones it can signal. Where the kernel
/// refuses (a rootless run in a container whose `/proc` is partly masked),
/// the command sees the `/proc` it was cloned with.
fn mount_own_proc() {
    // SAFETY: unshare takes flags; pid 1 has one thread and its own file
    // system context.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return;
    }
    // SAFETY: mount with NUL-terminated literals and a null data pointer.
    unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
}

/// Writes `last_pid` to `ns_last_pid`, which sets the process id the
/// kernel gave last in pid 1's namespace (pid 1 holds the capability for
/// it there, rootless too). Where it cannot, the command is pid 2.
fn set_last_pid(last_pid: &LastPid) {
    // SAFETY: open with a NUL-terminated literal and integer flags.
    let fd = unsafe {
        libc::open(
            c"/proc/sys/kernel/ns_last_pid".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: writes `len` bytes of a buffer made before the clone to a
    // descriptor we own, then closes it.
    unsafe {
        libc::write(fd, last_pid.text.as_ptr().cast(), last_pid.len);
        libc::close(fd);
    }
}

/// Reaps every child that ended; when the command did, ends pid 1 with its
/// status (128 + N for signal N), which ends the namespace.
fn reap(command: i32) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status we own.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if pid == command {
            let code = if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            };
            // SAFETY: _exit takes an integer and does not return.
            unsafe { libc::_exit(code) };
        }
    }
}

/// The command's child: the signal state a program expects (no signal
/// blocked, SIGPIPE at its default, which Rust's runtime ignores), then
/// `execve`; on failure, `errno` on the pipe and exit 127.
fn exec_command(launch: &Launch<'_>, exec_error: RawFd) -> ! {
    let program = launch.program;
    // SAFETY: signal with a valid signal number and SIG_DFL.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // SAFETY: sets the mask from a sigset_t made before the clone.
    unsafe {
        libc::sigprocmask(
            libc::SIG_SETMASK,
            &launch.command_mask,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: NUL-terminated path; argv and envp are null-terminated arrays
    // of pointers to C strings that live in this process's copy of memory.
    unsafe {
        libc::execve(
            program.path.as_ptr(),
            program.argv.as_ptr(),
            program.envp.as_ptr(),
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: writes 4 bytes of ours to a descriptor we hold.
    unsafe { libc::write(exec_error, errno.to_ne_bytes().as_ptr().cast(), 4) };
    // SAFETY: _exit takes an integer and does not return.
    unsafe { libc::_exit(127) }
}
