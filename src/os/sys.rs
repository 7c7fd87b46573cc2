//! Each system call the crate makes, wrapped once, with errors that carry the
//! operation and the path.

use crate::error::Error;
use nix::libc;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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
    if let NsKind::Net = kind {
        if let Some(id) = net_ns_id_of_a_socket() {
            return Ok(id);
        }
    }
    let path = kind.thread_path();
    let meta = std::fs::metadata(path).map_err(|e| Error::at("stat", Path::new(path), e))?;
    Ok(NsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The calling thread's network namespace, through a socket made in it
/// (`SIOCGSKNS`) rather than `/proc/thread-self`: a dead thread's entries
/// there cost the kernel milliseconds of dentry pruning when its process is
/// reaped. `None` without CAP_NET_ADMIN over the namespace.
fn net_ns_id_of_a_socket() -> Option<NsId> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    net_ns_id_of(socket.as_fd())
}

/// The network namespace `socket` belongs to (`SIOCGSKNS`), which is the
/// calling thread's when the socket was made on it; through `/proc` when
/// the ioctl is refused.
pub(crate) fn net_ns_id_of_socket(socket: BorrowedFd<'_>) -> Result<NsId> {
    match net_ns_id_of(socket) {
        Some(id) => Ok(id),
        None => thread_ns_id(NsKind::Net),
    }
}

/// The network namespace `socket` belongs to (`SIOCGSKNS`).
fn net_ns_id_of(socket: BorrowedFd<'_>) -> Option<NsId> {
    use std::os::fd::FromRawFd;
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let fd = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGSKNS) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    let ns = unsafe { OwnedFd::from_raw_fd(fd) };
    ns_id(ns.as_fd()).ok()
}

/// Changes the propagation of the mount at `target` (`MS_SLAVE`,
/// `MS_PRIVATE`, recursively with `MS_REC`).
pub(crate) fn mount_propagation(target: &Path, flags: MsFlags) -> Result<()> {
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|e| {
        let operation = if flags.contains(MsFlags::MS_PRIVATE) {
            "mount(MS_PRIVATE)"
        } else {
            "mount(MS_SLAVE)"
        };
        Error::at(operation, target, io_error(e))
    })
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

/// Mounts a procfs of the calling thread's pid namespace on `target`.
pub(crate) fn mount_proc(target: &Path) -> Result<()> {
    nix::mount::mount(
        Some("proc"),
        target,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| Error::at("mount proc", target, io_error(e)))
}

/// Mounts a tmpfs on `target` with `options` (`size=1m,mode=0755`).
pub(crate) fn mount_tmpfs(target: &Path, options: &str) -> Result<()> {
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options),
    )
    .map_err(|e| Error::at("mount tmpfs", target, io_error(e)))
}

/// Opens `path` with `O_PATH` (a handle to the file itself, whatever its
/// type); a symbolic link at the end is followed only when `follow`.
pub(crate) fn open_path(path: &Path, follow: bool) -> Result<OwnedFd> {
    let mut flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
    if !follow {
        flags |= nix::fcntl::OFlag::O_NOFOLLOW;
    }
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::at("open", path, io_error(e)))
}

/// The `/proc/self/fd/N` path of `fd`, which path lookup turns into the
/// file `fd` refers to (a symbolic link itself, for an `O_PATH` handle).
fn magic_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Bind-mounts what `source` refers to (a file, a directory with what is
/// mounted below it, a socket) over `target`. `source` must be in the
/// calling thread's mount namespace.
pub(crate) fn bind_mount_fd(source: BorrowedFd<'_>, target: &Path) -> Result<()> {
    nix::mount::mount(
        Some(magic_path(source).as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::at("bind mount", target, io_error(e)))
}

/// Mounts the symbolic link `link` itself over the symbolic link `target`:
/// neither is followed, so `target` then reads as `link` does. With
/// `open_tree(2)` and `move_mount(2)` (Linux 5.2), else through `O_PATH`
/// handles, whose `/proc/self/fd` paths end at the links themselves.
pub(crate) fn mount_symlink_over(link: &Path, target: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |path: &Path| std::ffi::CString::new(path.as_os_str().as_bytes()).ok();
    let (Some(c_link), Some(c_target)) = (c(link), c(target)) else {
        return Err(Error::invalid_input(
            "mount a link",
            "a path has a NUL byte",
        ));
    };
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    // SAFETY: open_tree reads a NUL-terminated path; the result is checked.
    let tree =
        unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_link.as_ptr(), flags) };
    if tree >= 0 {
        use std::os::fd::FromRawFd;
        // SAFETY: a new descriptor that nothing else owns.
        let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
        // SAFETY: move_mount reads two NUL-terminated paths; integer flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                c_target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        return Err(Error::at(
            format!("mount the link {} over", link.display()),
            target,
            io::Error::last_os_error(),
        ));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::ENOSYS) {
        return Err(Error::at("open_tree", link, error));
    }
    let source = open_path(link, false)?;
    let over = open_path(target, false)?;
    nix::mount::mount(
        Some(magic_path(source.as_fd()).as_str()),
        magic_path(over.as_fd()).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::at(
            format!("mount the link {} over", link.display()),
            target,
            io_error(e),
        )
    })
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

/// Sets `lo` up in the calling thread's network namespace with one ioctl;
/// returns the socket it used (a socket of that namespace).
pub(crate) fn set_loopback_up() -> Result<OwnedFd> {
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
    Ok(socket)
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

/// A sysctl's value, trimmed, from `/proc/sys/<key>` (`key` in the path form,
/// `user/max_user_namespaces`); `None` when it cannot be read.
pub(crate) fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The effective capability set of the calling thread (`capget`). One
/// system call: reading `/proc/thread-self/status` instead costs the kernel
/// a page of text and leaves dentries to prune when the thread ends.
pub(crate) fn effective_capabilities() -> Option<u64> {
    use crate::os::uapi::capability::{CapData, CapHeader, LINUX_CAPABILITY_VERSION_3};
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget reads the header and writes two data structs (version 3), both ours and live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    (rc == 0).then(|| u64::from(data[1].effective) << 32 | u64::from(data[0].effective))
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

/// SIGKILL to the process `pid` (a child not yet reaped, so that the id is
/// still its own); one that has ended is not an error.
pub(crate) fn kill_process(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The names of the calling thread's network namespace's interfaces, in the
/// order of their indexes.
pub(crate) fn interface_names() -> Result<Vec<String>> {
    // SAFETY: if_nameindex takes no arguments; it returns a list it allocated, or null.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(Error::new("if_nameindex", io::Error::last_os_error()));
    }
    let mut found: Vec<(u32, String)> = Vec::new();
    for at in 0.. {
        // SAFETY: the list ends with an entry of index 0, which this reads last.
        let entry = unsafe { &*list.add(at) };
        if entry.if_index == 0 {
            break;
        }
        // SAFETY: a listed entry's name is a NUL-terminated string the list owns.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.if_name) };
        found.push((entry.if_index, name.to_string_lossy().into_owned()));
    }
    // SAFETY: the list came from if_nameindex, is freed once, and nothing borrows from it now.
    unsafe { libc::if_freenameindex(list) };
    found.sort();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// The name of the interface with `index` in the network namespace of
/// `socket` (`SIOCGIFNAME`).
pub(crate) fn interface_name_of(socket: BorrowedFd<'_>, index: i32) -> Option<String> {
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    request.ifr_ifru.ifru_ifindex = index;
    // SAFETY: SIOCGIFNAME reads the index and writes the name into the
    // ifreq, which lives across the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFNAME, &mut request) };
    if rc != 0 {
        return None;
    }
    let name: Vec<u8> = request
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(name).ok()
}

/// Eight random bytes from the kernel (`getrandom`), or the clock's
/// nanoseconds when it will not give them.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into our buffer.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        crate::os::unix_time().as_nanos() as u64
    }
}

/// An anonymous file in memory (`memfd_create`), closed on exec.
pub(crate) fn memfd(name: &str) -> Result<File> {
    nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map(File::from)
        .map_err(|e| Error::new("memfd_create", io_error(e)))
}

/// Whether the calling thread's network namespace has an interface `name`.
pub(crate) fn interface_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// The IPv4 and IPv6 addresses of the calling thread's network namespace:
/// interface name, address and prefix length, from getifaddrs(3).
pub(crate) fn interface_addresses() -> Result<Vec<(String, std::net::IpAddr, u8)>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes into `list` a list it allocated, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(Error::new("getifaddrs", io::Error::last_os_error()));
    }
    let mut found = Vec::new();
    let mut next = list;
    while !next.is_null() {
        // SAFETY: a non-null entry of the list, which lives until freeifaddrs.
        let entry = unsafe { &*next };
        next = entry.ifa_next;
        let Some(address) = socket_address_ip(entry.ifa_addr) else {
            continue;
        };
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match socket_address_ip(entry.ifa_netmask) {
            Some(std::net::IpAddr::V4(mask)) => mask.to_bits().count_ones(),
            Some(std::net::IpAddr::V6(mask)) => mask.to_bits().count_ones(),
            None => width,
        };
        // SAFETY: an entry's name is a NUL-terminated string the list owns.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        found.push((name.to_string_lossy().into_owned(), address, prefix as u8));
    }
    // SAFETY: the list came from getifaddrs, is freed once, and nothing borrows from it now.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// The IP address in a socket address of getifaddrs(3), if it is one.
fn socket_address_ip(address: *const libc::sockaddr) -> Option<std::net::IpAddr> {
    if address.is_null() {
        return None;
    }
    // SAFETY: a non-null socket address starts with its family.
    let family = unsafe { (*address).sa_family };
    match i32::from(family) {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in; read unaligned, as the list may pack it.
            let v4 = unsafe { address.cast::<libc::sockaddr_in>().read_unaligned() };
            Some(std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6; read unaligned, as the list may pack it.
            let v6 = unsafe { address.cast::<libc::sockaddr_in6>().read_unaligned() };
            Some(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
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

/// The set of `signals`.
pub(crate) fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value; sigemptyset initializes it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset writes into the set we own.
    unsafe { libc::sigemptyset(&mut set) };
    for signal in signals {
        // SAFETY: sigaddset writes into the set we own; a bad number gives EINVAL.
        unsafe { libc::sigaddset(&mut set, *signal) };
    }
    set
}

/// Blocks `signals` in the calling thread (the threads and children it
/// starts inherit the mask); returns the mask it had.
pub(crate) fn block_signals(signals: &[i32]) -> Result<libc::sigset_t> {
    let set = signal_set(signals);
    // SAFETY: an all-zero sigset_t is a valid value for pthread_sigmask to fill.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads `set` and writes `old`, both ours.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(Error::new(
            "pthread_sigmask(SIG_BLOCK)",
            io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(old)
}

/// A descriptor that reads the `signals` sent to the process, which must
/// be blocked in every thread.
pub(crate) fn signalfd(signals: &[i32]) -> Result<OwnedFd> {
    let set = signal_set(signals);
    // SAFETY: signalfd reads the set; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::new("signalfd", io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Reads one signal from a [`signalfd`]: its number and how it was sent
/// (`si_code`: `SI_USER` for `kill`, `SI_KERNEL` from the terminal).
pub(crate) fn read_signal(fd: BorrowedFd<'_>) -> Result<(i32, i32)> {
    // SAFETY: an all-zero signalfd_siginfo is a valid value to read into.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    loop {
        // SAFETY: reads at most `size` bytes into `info`, which we own.
        let read = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if read == size as isize {
            return Ok((info.ssi_signo as i32, info.ssi_code));
        }
        let error = io::Error::last_os_error();
        if read < 0 && error.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(Error::new("read a signal from signalfd", error));
    }
}

/// `pidfd_open(2)`: a descriptor for the process `pid` (a child not yet
/// reaped), readable once it has ended. Linux 5.3 and later.
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::new("pidfd_open", io::Error::last_os_error())
            .with_hint("netns-test exec needs Linux 5.3 or later".into()));
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`: `signal` to the process behind `pidfd`, which
/// cannot be another process that reused its id. A process that has ended
/// is not an error.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> Result<()> {
    // SAFETY: integers and a null siginfo (the kernel fills one like kill's).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(Error::new("pidfd_send_signal", error));
        }
    }
    Ok(())
}

/// Waits for the child `pid` to end and returns its `wait` status.
pub(crate) fn wait_for(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status we own.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(Error::new("waitpid", error));
        }
    }
}

/// Whether this process is in the foreground process group of the terminal
/// on its standard input: an interactive command must stay in that group to
/// read the terminal.
pub(crate) fn in_terminal_foreground() -> bool {
    // SAFETY: tcgetpgrp and getpgrp take and return integers.
    let (foreground, own) = unsafe { (libc::tcgetpgrp(0), libc::getpgrp()) };
    foreground >= 0 && foreground == own
}

// Processes forked from a single-threaded process, and what they talk over.

/// The number of threads of this process: `/proc/self/task` links two
/// entries (`.` and `..`) and one per thread.
pub(crate) fn thread_count() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/task")?
        .nlink()
        .saturating_sub(2))
}

/// What [`fork_single_threaded`] returns in each process.
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the calling process: the new process's id.
    Parent(i32),
}

/// `fork(2)`, only from a process that has one thread (else
/// `ErrorKind::Unsupported`): a fork of a single-threaded process holds no
/// lock another thread took, so the child may run any code.
pub(crate) fn fork_single_threaded() -> io::Result<Forked> {
    if thread_count()? != 1 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "fork from a process with more than one thread",
        ));
    }
    // SAFETY: the process has one thread (checked above), so the child's
    // copy of memory has no lock held by a thread that is not there.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends the calling process at once, without running exit handlers or
/// destructors (`_exit(2)`).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and does not return.
    unsafe { libc::_exit(code) }
}

/// The id of the calling process's parent.
pub(crate) fn parent_pid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// Asks the kernel to SIGKILL the calling process when the thread that
/// forked it ends; ends the process at once if its parent is no longer
/// `parent` (it died before the request took effect).
pub(crate) fn die_with_parent(parent: i32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if parent_pid() != parent {
        exit_now(1);
    }
    Ok(())
}

/// Ignores SIGPIPE, as Rust's runtime does before `main`: a write to a
/// closed pipe or socket fails with EPIPE instead of killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: sets a signal's disposition to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ignores `signals` (SIG_IGN), which the processes it starts inherit.
pub(crate) fn ignore_signals(signals: &[i32]) {
    for signal in signals {
        // SAFETY: sets a signal's disposition to SIG_IGN; no handler runs.
        unsafe { libc::signal(*signal, libc::SIG_IGN) };
    }
}

/// Gives `signals` their default action back.
pub(crate) fn default_signals(signals: &[i32]) {
    for signal in signals {
        // SAFETY: sets a signal's disposition to SIG_DFL; no handler runs.
        unsafe { libc::signal(*signal, libc::SIG_DFL) };
    }
}

/// Blocks no signal in the calling thread.
pub(crate) fn unblock_all_signals() {
    let none = signal_set(&[]);
    // SAFETY: reads the empty set we own.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) };
}

/// `shutdown(2)` both ways: the peer sees the end, whoever else holds the
/// socket.
pub(crate) fn shut_down(socket: BorrowedFd<'_>) {
    // SAFETY: shutdown with a borrowed descriptor and a constant.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Reaps the child `pid` if it has ended, without waiting.
pub(crate) fn reap_if_ended(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our integer.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Puts process `pid` (a child of the caller) into a process group of its
/// own, as the child itself does: whichever runs first wins, so the group
/// exists before either side goes on.
pub(crate) fn put_in_own_process_group(pid: i32) {
    // SAFETY: setpgid with plain integers; a child that exited already is
    // not an error worth reporting.
    unsafe { libc::setpgid(pid, pid) };
}

/// Makes the calling process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`): they become its children, so it can find them.
pub(crate) fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling process's process group.
pub(crate) fn own_process_group_id() -> i32 {
    nix::unistd::getpgrp().as_raw()
}

/// The process group of process `pid`, from `/proc/PID/stat`; `None` when
/// it is gone.
pub(crate) fn process_group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name in parentheses: state, ppid, pgrp.
    stat.rsplit_once(") ")?.1.split(' ').nth(2)?.parse().ok()
}

/// The children of the calling thread, from
/// `/proc/thread-self/children` (a single-threaded process's children
/// are all its main thread's).
pub(crate) fn children_of_this_thread() -> io::Result<Vec<i32>> {
    // Not by `gettid`: in a pid namespace of its own (a contained
    // process) that is not the id `/proc` knows it by.
    let list = std::fs::read_to_string("/proc/thread-self/children")?;
    Ok(list
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// Whether the calling process has a child (ended or not): one `waitid`.
pub(crate) fn has_children() -> bool {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into our siginfo_t; WNOWAIT leaves any child as it is.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // ECHILD: none at all.
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD)
}

/// Gives the free memory the allocator keeps back to the system (glibc
/// keeps what many small blocks freed; other C libraries give it back by
/// themselves).
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes an integer and only walks the allocator's own lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reaps every child, waiting for each to end (they have been killed).
pub(crate) fn reap_all_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        let rc = unsafe { libc::waitpid(-1, &mut status, 0) };
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return; // ECHILD: none left
        }
    }
}

/// The calling process's id as `/proc` shows it: the same as
/// `std::process::id()` but in a pid namespace of its own (a contained
/// process, pid 1 there).
pub(crate) fn pid_in_proc() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str()?.parse().ok())
        .unwrap_or_else(std::process::id)
}

/// Whether the pipe or socket `fd` reads is at its end (its writers gone).
pub(crate) fn at_end(fd: BorrowedFd<'_>) -> bool {
    let mut polled = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd that lives across the call.
    unsafe { libc::poll(&mut polled, 1, 0) };
    polled.revents & libc::POLLHUP != 0
}

/// Closes every descriptor but `keep`: descriptor numbers the calling
/// process holds no `OwnedFd` for, or whose owner never runs again (a
/// frame that never returns).
pub(crate) fn close_all_but(keep: &[i32]) {
    let Ok(entries) = std::fs::read_dir("/proc/thread-self/fd") else {
        return;
    };
    let open: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: as the caller promises; the directory's own descriptor is
        // closed already and EBADF is harmless.
        unsafe { libc::close(fd) };
    }
}

/// Reaps every child that has ended, without waiting for the others.
pub(crate) fn reap_exited_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// The CPUs the calling thread may run on.
pub(crate) fn cpu_affinity() -> io::Result<nix::sched::CpuSet> {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map_err(io_error)
}

/// Lets the calling thread run on `cpus` only.
pub(crate) fn set_cpu_affinity(cpus: &nix::sched::CpuSet) -> io::Result<()> {
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), cpus).map_err(io_error)
}

/// Keeps the calling thread on the CPU it runs on now; its previous CPUs.
/// A thread it then starts starts on that CPU too.
pub(crate) fn stay_on_this_cpu() -> io::Result<nix::sched::CpuSet> {
    let before = cpu_affinity()?;
    // SAFETY: sched_getcpu takes no argument.
    let cpu = unsafe { libc::sched_getcpu() };
    let mut here = nix::sched::CpuSet::new();
    if cpu < 0 || here.set(cpu as usize).is_err() {
        return Err(io::Error::last_os_error());
    }
    set_cpu_affinity(&here)?;
    Ok(before)
}

/// The lowest descriptor number the calling process has free.
pub(crate) fn lowest_free_fd() -> io::Result<i32> {
    // SAFETY: F_DUPFD_CLOEXEC on descriptor 0 (open in every process this
    // is used in) returns a new descriptor, closed at once.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: closes the descriptor just made.
    unsafe { libc::close(fd) };
    Ok(fd)
}

/// Makes `target` a copy of `fd` (`dup2(2)`), without close-on-exec.
pub(crate) fn dup_onto(fd: BorrowedFd<'_>, target: i32) -> io::Result<()> {
    // SAFETY: dup2 on a borrowed descriptor and a descriptor number.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `/dev/null` on the standard streams (0, 1 and 2, each tried) and
/// returns it; the first error otherwise.
pub(crate) fn null_standard_streams() -> io::Result<OwnedFd> {
    let null = OwnedFd::from(File::options().read(true).write(true).open("/dev/null")?);
    let mut result = Ok(());
    for fd in 0..3 {
        let done = dup_onto(null.as_fd(), fd);
        if result.is_ok() {
            result = done;
        }
    }
    result.map(|()| null)
}

/// Reaps the child `pid` if it ends within `time`: whether it did.
pub(crate) fn reap_within(pid: i32, time: std::time::Duration) -> bool {
    if let Ok(pidfd) = pidfd_open(pid) {
        let _ = wait_readable(&[pidfd.as_fd()], Some(time));
    }
    let mut status = 0;
    // SAFETY: waitpid writes the status into our integer.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// Closes every descriptor from `first` on. Async-signal-safe.
pub(crate) fn close_from(first: i32) {
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

/// The session of process `pid`, from `/proc/PID/stat`; `None` when it is
/// gone.
pub(crate) fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name in parentheses: state, ppid, pgrp, session.
    stat.rsplit_once(") ")?.1.split(' ').nth(3)?.parse().ok()
}

/// Reaps the child `pid`, waiting for it to end: its raw wait status.
pub(crate) fn reap(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our integer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A pair of connected `SOCK_SEQPACKET` unix sockets (each message arrives
/// whole), close-on-exec.
pub(crate) fn packet_socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::new("socketpair(AF_UNIX, SOCK_SEQPACKET)", io_error(e)))
}

/// Sends one message with `fds` attached (`SCM_RIGHTS`); a peer that is
/// gone is EPIPE, not SIGPIPE.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[io::IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// Receives one message into `buffer`, and the descriptors attached to it
/// (close-on-exec): `(0, [])` when the peer is gone.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    use std::os::fd::FromRawFd;
    // As many as one message may carry (SCM_MAX_FD): a holder request
    // carries a kept test's nodes.
    let mut space = nix::cmsg_space!([i32; 253]);
    loop {
        let mut iov = [io::IoSliceMut::new(buffer)];
        let message = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => message,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_error(e)),
        };
        let mut fds = Vec::new();
        for cmsg in message.cmsgs().map_err(io_error)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // SAFETY: the kernel installed this descriptor for us
                    // with the message; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if message.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other("descriptors of a message were cut off"));
        }
        return Ok((message.bytes, fds));
    }
}

/// The length of the next message waiting on a `SOCK_SEQPACKET` socket
/// (it stays queued), waiting for one; 0 when the peer is gone.
pub(crate) fn next_message_len(socket: BorrowedFd<'_>) -> io::Result<usize> {
    loop {
        // SAFETY: recv with no buffer; MSG_TRUNC makes it return the
        // message's real length, MSG_PEEK leaves the message queued.
        let length = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        };
        if length >= 0 {
            return Ok(length as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Waits until one of `fds` can be read (or is at its end or broken), at
/// most `timeout` (`None`: no limit): for each descriptor, whether it is.
/// Interrupted waits count as nothing ready.
pub(crate) fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<std::time::Duration>,
) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = timeout.map_or(-1, |t| {
        // Round up: a wait must not end before its deadline.
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    // SAFETY: poll reads and writes `polled`, an array of the length given.
    let rc = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, millis) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(polled.iter().map(|p| rc > 0 && p.revents != 0).collect())
}

/// Writes all of `bytes` to `fd`.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(())
}

/// Reads what `fd` has now, at most `buffer.len()` bytes; `Ok(0)` at the end.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buffer) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io_error),
        }
    }
}

/// Closes each of `fds`: descriptor numbers the calling process holds no
/// `OwnedFd` for, as a forked child inherits them.
pub(crate) fn close_all(fds: &[i32]) {
    for fd in fds {
        // SAFETY: closes a descriptor number; the caller owns it and never
        // uses it again (its `OwnedFd` lives in a frame that never returns).
        unsafe { libc::close(*fd) };
    }
}

#[cfg(test)]
mod tests {
    /// What `ip -o address` and `ip -o link` say of the same namespace: a
    /// fresh one (the host's interfaces change while other tests run),
    /// with an IPv4 and an IPv6 address added to `lo`.
    #[test]
    fn interfaces_and_addresses_are_those_ip_lists() {
        if !crate::os::privilege::privileged() {
            eprintln!("skipped: needs CAP_SYS_ADMIN and CAP_NET_ADMIN");
            return;
        }
        let ns = crate::netns::NetNs::new().unwrap();
        ns.run(|| {
            let ip = |args: &[&str]| {
                let output = std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(output.status.success(), "ip {args:?}");
                String::from_utf8(output.stdout).unwrap()
            };
            ip(&["address", "add", "192.0.2.1/24", "dev", "lo"]);
            ip(&["address", "add", "2001:db8::1/64", "dev", "lo", "nodad"]);
            let mut listed: Vec<(String, std::net::IpAddr, u8)> = ip(&["-o", "address"])
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (address, prefix) = fields.get(3)?.split_once('/')?;
                    Some((
                        fields[1].to_owned(),
                        address.parse().ok()?,
                        prefix.parse().ok()?,
                    ))
                })
                .collect();
            let mut found = super::interface_addresses().unwrap();
            listed.sort();
            found.sort();
            assert_eq!(found, listed);
            for address in [
                ("lo".to_owned(), [127, 0, 0, 1].into(), 8),
                ("lo".to_owned(), [192, 0, 2, 1].into(), 24),
                ("lo".to_owned(), "2001:db8::1".parse().unwrap(), 64),
            ] {
                assert!(found.contains(&address), "{address:?} in {found:?}");
            }
            assert_eq!(super::interface_names().unwrap(), ["lo"]);
            assert!(super::interface_exists("lo"));
            assert!(!super::interface_exists("ntnosuch0"));
            assert!(!super::interface_exists("bad\0name"));
        });
    }

    #[test]
    fn capabilities_are_those_the_kernel_reports() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        let reported = u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap();
        assert_eq!(super::effective_capabilities(), Some(reported));
    }
}
