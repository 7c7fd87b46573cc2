//! Each system call the crate makes, wrapped once, with errors that carry the
//! operation and the path.

use crate::error::Error;
use nix::libc;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub(crate) type Result<T> = std::result::Result<T, Error>;

fn io_error(errno: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

/// Identifies a namespace: the device and inode of its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// The kinds of namespace the crate handles, with their `/proc/*/ns/` names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NsKind {
    Net,
    Mount,
}

impl NsKind {
    fn thread_path(self) -> &'static str {
        match self {
            NsKind::Net => "/proc/thread-self/ns/net",
            NsKind::Mount => "/proc/thread-self/ns/mnt",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Mount => CloneFlags::CLONE_NEWNS,
        }
    }
}

/// `unshare(2)` for the calling thread.
pub(crate) fn unshare(flags: CloneFlags, operation: &'static str) -> Result<()> {
    nix::sched::unshare(flags).map_err(|e| Error::new(operation, io_error(e)))
}

/// `setns(2)`: moves the calling thread into the namespace behind `fd`.
pub(crate) fn setns(fd: BorrowedFd<'_>, kind: NsKind) -> Result<()> {
    nix::sched::setns(fd, kind.clone_flag()).map_err(|e| {
        let operation = match kind {
            NsKind::Net => "setns(CLONE_NEWNET)",
            NsKind::Mount => "setns(CLONE_NEWNS)",
        };
        Error::new(operation, io_error(e))
    })
}

/// Moves the calling thread into a network and a mount namespace. The mount
/// namespace comes second and moves the thread's root and working directory
/// to its root: the caller restores the directory. It needs a filesystem
/// context of the thread's own (`unshare(CLONE_FS)`), else EINVAL.
pub(crate) fn setns_net_and_mount(net: BorrowedFd<'_>, mnt: BorrowedFd<'_>) -> Result<()> {
    setns(net, NsKind::Net)?;
    setns(mnt, NsKind::Mount)
}

/// Opens the calling thread's namespace of `kind` (`/proc/thread-self/ns/...`).
pub(crate) fn open_thread_ns(kind: NsKind) -> Result<OwnedFd> {
    open_ns(Path::new(kind.thread_path()))
}

/// Opens a namespace file, such as `/proc/self/ns/net`.
pub(crate) fn open_ns(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::at("open", path, e))
}

/// The identity of the namespace behind `fd`.
pub(crate) fn ns_id(fd: BorrowedFd<'_>) -> Result<NsId> {
    let stat =
        nix::sys::stat::fstat(fd).map_err(|e| Error::new("fstat namespace fd", io_error(e)))?;
    Ok(NsId {
        dev: stat.st_dev,
        ino: stat.st_ino,
    })
}

/// The identity of the calling thread's namespace of `kind`.
pub(crate) fn thread_ns_id(kind: NsKind) -> Result<NsId> {
    let path = kind.thread_path();
    let meta = std::fs::metadata(path).map_err(|e| Error::at("stat", Path::new(path), e))?;
    Ok(NsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Changes the propagation of the mount at `target` (not recursively).
pub(crate) fn mount_propagation(target: &Path, flags: MsFlags) -> Result<()> {
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::at("mount(MS_SLAVE)", target, io_error(e)))
}

/// Detaches the mount at `target` and everything below it (`MNT_DETACH`).
pub(crate) fn detach_mount(target: &Path) -> Result<()> {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::at("umount2(MNT_DETACH)", target, io_error(e)))
}

/// Mounts a new sysfs instance on `target`; it shows the calling thread's network namespace.
pub(crate) fn mount_sysfs(target: &Path) -> Result<()> {
    nix::mount::mount(
        Some("sysfs"),
        target,
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| Error::at("mount sysfs", target, io_error(e)))
}

/// Mounts a small tmpfs (1 MiB at most) on `target`.
pub(crate) fn mount_tmpfs(target: &Path) -> Result<()> {
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=1m,mode=0755"),
    )
    .map_err(|e| Error::at("mount tmpfs", target, io_error(e)))
}

/// Bind-mounts `source` over `target`.
pub(crate) fn bind_mount(source: &Path, target: &Path) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::at(
            format!("bind mount of {}", source.display()),
            target,
            io_error(e),
        )
    })
}

/// Sets `lo` up in the calling thread's network namespace with one ioctl.
pub(crate) fn set_loopback_up() -> Result<()> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::new("socket(AF_INET, SOCK_DGRAM)", io_error(e)))?;
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    // SAFETY: SIOCSIFFLAGS reads an ifreq; `request` is initialized and outlives the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if rc != 0 {
        return Err(Error::new(
            "ioctl(SIOCSIFFLAGS) to set lo up",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Opens the calling thread's working directory, to return to it later.
pub(crate) fn open_cwd() -> Result<OwnedFd> {
    File::open(".")
        .map(OwnedFd::from)
        .map_err(|e| Error::at("open working directory", Path::new("."), e))
}

/// `fchdir(2)`.
pub(crate) fn fchdir(dir: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::fchdir(dir).map_err(|e| Error::new("fchdir", io_error(e)))
}

/// `chdir(2)`.
pub(crate) fn chdir(dir: &Path) -> Result<()> {
    nix::unistd::chdir(dir).map_err(|e| Error::at("chdir", dir, io_error(e)))
}

/// Writes `value` to an existing file, such as a sysctl under `/proc/sys`.
pub(crate) fn write_existing(path: &Path, value: &[u8]) -> io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value)
}

/// Creates `dir` and its missing parents with mode 0700 (existing ones are
/// left as they are).
pub(crate) fn create_private_dir_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::at("create directory", dir, e))
}

/// Opens `path` for writing, truncated, readable by its owner only (0600,
/// also when it existed), and not through a symbolic link.
pub(crate) fn create_private_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::at("create", path, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::at("chmod 0600", path, e))?;
    Ok(file)
}

/// A sysctl's value, trimmed, from `/proc/sys/<key>` (`key` in the path form,
/// `user/max_user_namespaces`); `None` when it cannot be read.
pub(crate) fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The effective capability set of the calling thread, from `/proc/thread-self/status`.
pub(crate) fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Moves a freshly forked child into the namespaces behind `net` and `mnt`
/// and back into the working directory it had, whose path is read into
/// `cwd_buffer` first. Async-signal-safe: system calls only, no allocation,
/// for use in [`std::os::unix::process::CommandExt::pre_exec`].
pub(crate) fn enter_in_child(
    net: BorrowedFd<'_>,
    mnt: BorrowedFd<'_>,
    cwd_buffer: &mut [u8],
) -> io::Result<()> {
    // SAFETY: getcwd writes at most `len` bytes into the buffer it is given, which we own.
    let have_cwd =
        unsafe { !libc::getcwd(cwd_buffer.as_mut_ptr().cast(), cwd_buffer.len()).is_null() };
    // SAFETY: setns takes a valid fd (borrowed for this call) and a namespace type.
    if unsafe { libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; a forked child does not share its fs_struct, as setns(CLONE_NEWNS) requires.
    if unsafe { libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if have_cwd {
        // SAFETY: getcwd NUL-terminated the path in the buffer. A cwd missing in the
        // namespace is not an error: the child starts in `/` then, like `nsenter`.
        unsafe { libc::chdir(cwd_buffer.as_ptr().cast()) };
    }
    Ok(())
}

/// A pipe whose both ends close on exec: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::new("pipe2(O_CLOEXEC)", io_error(e)))
}

/// Makes reads from `fd` return at once when there is nothing to read.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: fcntl on a descriptor borrowed for the call, integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(Error::new(
            "fcntl(F_SETFL, O_NONBLOCK)",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Marks `fd` close-on-exec, so that programs the process starts do not get it.
pub(crate) fn set_cloexec(fd: i32) -> Result<()> {
    // SAFETY: fcntl on an integer descriptor with an integer argument; a
    // descriptor that is not open gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(Error::new(
            format!("fcntl({fd}, F_SETFD, FD_CLOEXEC)"),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// In a forked child: keeps `fd` open across `exec`. Async-signal-safe.
pub(crate) fn inherit_across_exec(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor with an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a forked child: makes it the leader of a process group of its own,
/// which its own children join. Async-signal-safe.
pub(crate) fn own_process_group() -> io::Result<()> {
    // SAFETY: setpgid with plain integers.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIGKILL to every process of the process group `group`; a group that is
/// gone already is not an error.
pub(crate) fn kill_process_group(group: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(group as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether the calling thread's network namespace has an interface `name`.
pub(crate) fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// The driver of the interface `name` (`veth`, `bridge`, ...), from the
/// ethtool ioctl; `None` when there is no such interface.
pub(crate) fn link_driver(name: &str) -> Option<String> {
    /// struct ethtool_drvinfo of <linux/ethtool.h>: the command, then
    /// driver, version, fw_version, bus_info, erom_version, reserved2 and
    /// five counters.
    #[repr(C)]
    struct DriverInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let mut info = DriverInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 32 * 4 + 12 + 4 * 5],
    };
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return None;
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut info as *mut DriverInfo).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and writes the drvinfo it points
    // to, both alive and of the kernel's layout for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
