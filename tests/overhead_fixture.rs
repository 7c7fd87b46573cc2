//! 200 trivial tests of each kind, timed side by side by `benches/overhead.rs`,
//! each what a user's network test does: bind a fixed port on 127.0.0.1,
//! connect, echo a byte, close (leaving a TIME_WAIT socket behind, as tests
//! do).
//!
//! - `plain::`: a plain `#[test]` on port 0 (the baseline);
//! - `floor::`: the bare floor, `unshare(CLONE_NEWNET)` and `lo` up with one
//!   ioctl on the test thread, then port 7878;
//! - `view::`: the floor plus what a `#[netns_test]` namespace also has, by
//!   bare system calls: a mount namespace with its own `/sys`,
//!   `/etc/hosts`, `/proc/net` (a link to `/proc/thread-self/net`) and,
//!   where the host has one, `/run/netns`, and `accept_dad = 0` (the
//!   kernel's part of its cost);
//! - `netns::`: `#[netns_test]`, port 7878;
//! - `veth::`: `#[netns_test(veth)]`, port 7878.
//!
//! As a test target it also shows 200 namespaces binding 127.0.0.1:7878 at once.

use netns_test::netns_test;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// Binds `port` on 127.0.0.1 (0: any), connects, sends a byte that the
/// server echoes, and closes: the server first, so its side waits in
/// TIME_WAIT, which the kernel purges when the namespace goes (a plain
/// test's stays on the host for a minute).
fn echo_a_byte(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"x").unwrap();
    let mut byte = [0u8];
    server.read_exact(&mut byte).unwrap();
    server.write_all(&byte).unwrap();
    let mut echoed = [0u8];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"x");
    drop(server);
}

/// The fixed port of the namespaced kinds.
const PORT: u16 = 7878;

/// The least any network namespace per test costs: a new namespace on the
/// test thread and `lo` up with one ioctl (the thread ends with the test).
fn bare_floor() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
    loopback_up();
}

/// `lo` up with one ioctl.
fn loopback_up() {
    use nix::libc;
    // SAFETY: plain socket/ioctl/close on an ifreq we own.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(socket >= 0);
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        request.ifr_ifru.ifru_flags =
            (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        assert_eq!(libc::ioctl(socket, libc::SIOCSIFFLAGS, &request), 0);
        libc::close(socket);
    }
}

/// The floor plus the rest of what a netns-test namespace has, by bare
/// system calls and nothing else: a private mount namespace (propagation to
/// the host cut), a tmpfs holding a copy of `/etc/hosts` bind-mounted over
/// it, a sysfs of the new network namespace on `/sys`, and
/// `net.ipv6.conf.default.accept_dad = 0`.
fn bare_floor_and_view() {
    use nix::mount::{MsFlags, mount};
    use nix::sched::CloneFlags;
    // Read once per process, as netns-test does.
    static HOSTS: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| std::fs::read("/etc/hosts").expect("read /etc/hosts"));
    nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).expect("unshare");
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none).expect("MS_SLAVE");
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        "/sys",
        Some("tmpfs"),
        hidden,
        Some("size=1m"),
    )
    .expect("tmpfs");
    std::fs::write("/sys/hosts", &*HOSTS).expect("write the copy");
    mount(
        Some("/sys/hosts"),
        "/etc/hosts",
        none,
        MsFlags::MS_BIND,
        none,
    )
    .expect("bind");
    // `/proc/net` showing each thread's namespace: a link to
    // `/proc/thread-self/net` mounted over it, and, where the host has
    // `/run/netns`, an empty directory of the test's own bound on it. (A
    // host without one gets netns-test's `/run` template, which this
    // contender does not copy.)
    std::os::unix::fs::symlink("/proc/thread-self/net", "/sys/net").expect("symlink");
    mount_link_over(c"/sys/net", c"/proc/net");
    if std::path::Path::new("/run/netns").is_dir() {
        std::fs::create_dir("/sys/netns").expect("mkdir");
        mount(
            Some("/sys/netns"),
            "/run/netns",
            none,
            MsFlags::MS_BIND,
            none,
        )
        .expect("bind");
    }
    mount(Some("sysfs"), "/sys", Some("sysfs"), hidden, none).expect("sysfs");
    loopback_up();
    std::fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0").expect("accept_dad");
}

/// Mounts the symbolic link `link` over `target` (open_tree + move_mount).
fn mount_link_over(link: &std::ffi::CStr, target: &std::ffi::CStr) {
    use nix::libc;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    // SAFETY: open_tree reads a NUL-terminated path; the result is checked.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, link.as_ptr(), flags) };
    assert!(tree >= 0, "open_tree");
    // SAFETY: move_mount reads two NUL-terminated paths; integer flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    assert_eq!(rc, 0, "move_mount");
    // SAFETY: the descriptor open_tree returned, closed once.
    unsafe { libc::close(tree as i32) };
}

macro_rules! twenty {
    ($case:ident) => {
        $case!(t00);
        $case!(t01);
        $case!(t02);
        $case!(t03);
        $case!(t04);
        $case!(t05);
        $case!(t06);
        $case!(t07);
        $case!(t08);
        $case!(t09);
        $case!(t10);
        $case!(t11);
        $case!(t12);
        $case!(t13);
        $case!(t14);
        $case!(t15);
        $case!(t16);
        $case!(t17);
        $case!(t18);
        $case!(t19);
    };
}

macro_rules! two_hundred {
    ($case:ident) => {
        mod m0 {
            use super::*;
            twenty!($case);
        }
        mod m1 {
            use super::*;
            twenty!($case);
        }
        mod m2 {
            use super::*;
            twenty!($case);
        }
        mod m3 {
            use super::*;
            twenty!($case);
        }
        mod m4 {
            use super::*;
            twenty!($case);
        }
        mod m5 {
            use super::*;
            twenty!($case);
        }
        mod m6 {
            use super::*;
            twenty!($case);
        }
        mod m7 {
            use super::*;
            twenty!($case);
        }
        mod m8 {
            use super::*;
            twenty!($case);
        }
        mod m9 {
            use super::*;
            twenty!($case);
        }
    };
}

macro_rules! plain_case {
    ($name:ident) => {
        #[test]
        fn $name() {
            echo_a_byte(0);
        }
    };
}

macro_rules! floor_case {
    ($name:ident) => {
        #[test]
        fn $name() {
            bare_floor();
            echo_a_byte(PORT);
        }
    };
}

macro_rules! view_case {
    ($name:ident) => {
        #[test]
        fn $name() {
            bare_floor_and_view();
            echo_a_byte(PORT);
        }
    };
}

macro_rules! netns_case {
    ($name:ident) => {
        #[netns_test]
        fn $name() {
            echo_a_byte(PORT);
        }
    };
}

mod plain {
    use super::*;
    two_hundred!(plain_case);
}

mod floor {
    use super::*;
    two_hundred!(floor_case);
}

macro_rules! veth_case {
    ($name:ident) => {
        #[netns_test(veth)]
        fn $name() {
            echo_a_byte(PORT);
        }
    };
}

mod view {
    use super::*;
    two_hundred!(view_case);
}

mod netns {
    use super::*;
    two_hundred!(netns_case);
}

mod veth {
    use super::*;
    two_hundred!(veth_case);
}
