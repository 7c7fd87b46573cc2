//! The private mount view of a namespace, as `ip netns exec` gives and
//! more: `/sys` showing its network namespace, a private copy of
//! `/etc/hosts`, `/proc/net` showing the network namespace of whichever
//! thread reads it, and a `/run/netns` (and `/var/run/netns`) of its own.

use crate::error::Error;
use crate::os::run_dir;
use crate::os::sys;
use nix::mount::MsFlags;
use std::path::Path;
use std::sync::OnceLock;

const HOSTS: &str = "/etc/hosts";

/// What `/proc/net` becomes: `/proc/self/net` shows the network namespace
/// of the process's main thread, which in a test thread is the host's.
const THREAD_NET: &str = "/proc/thread-self/net";

/// In a mount namespace the calling thread has just unshared, copied from
/// the host's view (`from_template`: from the [`run_dir`] template, already
/// cut off from the host's mount events) or from another private view:
///
/// - stops mount events from propagating back (when the host shares mounts);
/// - in a process that is pid 1 of a pid namespace of its own, mounts a
///   `/proc` of it (unless the template brought one);
/// - bind-mounts a private copy of `/etc/hosts` over the original;
/// - mounts, over the symbolic link `/proc/net` (`self/net`), a symbolic link
///   to `/proc/thread-self/net`: every thread sees its own network namespace
///   there, and a child process (whose main thread it is) its own;
/// - bind-mounts an empty directory of the namespace's own on `/run/netns`
///   (and on `/var/run/netns` where that is another directory);
/// - mounts a sysfs that shows the thread's network namespace on `/sys`.
///
/// The copy, the link and the directory live on a small tmpfs mounted on
/// `/sys` in this mount namespace only, which the fresh sysfs then covers.
/// No file is ever created where the host can see it, so a SIGKILL at any
/// moment leaves nothing, and everything goes away with the mount
/// namespace. (They stay linked: a view copied from this one, or a test
/// that mounts its own `/etc/hosts`, can mount over them.)
pub(crate) fn make_private_view(from_template: bool) -> Result<(), Error> {
    if !from_template && has_shared_mounts() {
        sys::mount_propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_SLAVE)?;
    }
    // Made without the template, which has it: the `/proc` of the
    // process's pid namespace, before `/proc/net` is mounted on it.
    if !from_template && run_dir::needs_own_proc() {
        run_dir::mount_own_proc();
    }
    let sys_dir = Path::new("/sys");
    sys::mount_tmpfs(sys_dir, tmpfs_options())?;
    if let Some(contents) = host_hosts_file() {
        let copy = sys_dir.join("hosts");
        std::fs::write(&copy, contents)
            .map_err(|e| Error::at("write a private copy of /etc/hosts", &copy, e))?;
        sys::bind_mount(&copy, Path::new(HOSTS))?;
    }
    let link = sys_dir.join("net");
    std::os::unix::fs::symlink(THREAD_NET, &link)
        .map_err(|e| Error::at("create a link to /proc/thread-self/net", &link, e))?;
    sys::mount_symlink_over(&link, Path::new("/proc/net"))?;
    let dirs = run_dir::run_dirs();
    if !dirs.is_empty() {
        let own = sys_dir.join("netns");
        std::fs::create_dir(&own).map_err(|e| Error::at("mkdir", &own, e))?;
        for dir in dirs {
            mount_own_netns(&own, dir, from_template)?;
        }
    }
    sys::mount_sysfs(sys_dir)
}

/// Mounts the directory `own` on `netns` in the run directory `dir`.
///
/// Without a template, the view was copied from one that had `dir/netns`
/// when it was looked at: the host's, say. Another process may have
/// removed it since (`netns-test gc` removes the `/run/netns` it made for
/// a kept namespace, a test of the host's state its own), or the process
/// runs one test and made no template: then `dir` is covered here with a
/// mirror of it that has a `netns` of its own, as the template has.
fn mount_own_netns(own: &Path, dir: &Path, from_template: bool) -> Result<(), Error> {
    let netns = run_dir::netns_dir(dir);
    if !from_template {
        // Copied from a view whose `/run/netns` a test's `ip netns add`
        // made shared: what is mounted on it here must not reach there.
        // (Not a mount point on the host: EINVAL.)
        let _ = sys::mount_propagation(&netns, MsFlags::MS_PRIVATE);
    }
    match sys::bind_mount(own, &netns) {
        Err(error) if !from_template && error.raw_os_error() == Some(nix::libc::ENOENT) => {
            run_dir::cover_with_mirror(dir)?;
            sys::bind_mount(own, &netns)
        }
        other => other,
    }
}

/// The tmpfs's options: room for the copy of `/etc/hosts`, and for the
/// files `ip netns add` makes (empty ones), 1 MiB more.
fn tmpfs_options() -> &'static str {
    static OPTIONS: OnceLock<String> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let hosts = host_hosts_file().map_or(0, <[u8]>::len);
        format!("size={},mode=0755", hosts + (1 << 20))
    })
}

/// Reads what [`make_private_view`] reads from the host once per process.
pub(crate) fn read_host_once() {
    has_shared_mounts();
    host_hosts_file();
    run_dir::run_dirs();
}

/// Whether any mount propagates events to peers. Without shared mounts,
/// nothing mounted in a copy of the mount namespace can reach the host, and
/// the recursive `MS_SLAVE` (a cost per test) is not needed. Read once per
/// process; the copies of a mount namespace keep the propagation flags.
/// Read through `/proc/self` (the process's mount namespace, which a test
/// thread copies): a dead thread's `/proc/thread-self` entries cost the
/// kernel dentry pruning when the process is reaped.
pub(crate) fn has_shared_mounts() -> bool {
    static SHARED: OnceLock<bool> = OnceLock::new();
    *SHARED.get_or_init(|| match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(table) => mountinfo_has_shared(&table),
        Err(_) => true,
    })
}

/// Whether a `/proc/PID/mountinfo` table has a `shared:N` optional field.
fn mountinfo_has_shared(table: &str) -> bool {
    table.lines().any(|line| {
        line.split(' ')
            .skip(6)
            .take_while(|field| *field != "-")
            .any(|field| field.starts_with("shared:"))
    })
}

/// The host's `/etc/hosts`, read once per process.
fn host_hosts_file() -> Option<&'static [u8]> {
    static CONTENTS: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    CONTENTS
        .get_or_init(|| std::fs::read(HOSTS).ok())
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::{mount_own_netns, mountinfo_has_shared};
    use std::path::Path;

    /// The host's `netns` directory is removed between the look that
    /// chose no template and the mount: the view gets one of its own all
    /// the same, and the host does not get it back.
    #[test]
    fn a_netns_directory_removed_meanwhile_is_mirrored() {
        if !crate::os::privilege::privileged() || crate::os::userns::rootless() {
            println!("skipped: a mount namespace needs root");
            return;
        }
        let run = tempfile::tempdir().unwrap();
        let own = tempfile::tempdir().unwrap();
        let dir = run.path().to_owned();
        std::fs::create_dir(dir.join("netns")).unwrap();
        std::fs::write(dir.join("entry"), "host's").unwrap();
        std::fs::write(own.path().join("mine"), "").unwrap();
        let seen = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    use nix::mount::MsFlags;
                    crate::os::sys::unshare(nix::sched::CloneFlags::CLONE_NEWNS, "unshare")
                        .unwrap();
                    crate::os::sys::mount_propagation(
                        Path::new("/"),
                        MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    )
                    .unwrap();
                    // Another process removes it (the same file system).
                    std::fs::remove_dir(dir.join("netns")).unwrap();
                    mount_own_netns(own.path(), &dir, false).unwrap();
                    (
                        dir.join("netns/mine").exists(),
                        std::fs::read_to_string(dir.join("entry")).unwrap(),
                    )
                })
                .join()
                .unwrap()
        });
        assert_eq!(seen, (true, "host's".to_owned()), "its own, and the rest");
        assert!(!dir.join("netns").exists(), "the host got it back");
    }

    #[test]
    fn finds_shared_mounts() {
        let private = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n";
        assert!(!mountinfo_has_shared(private));
        let shared = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";
        assert!(mountinfo_has_shared(shared));
        let slave = "27 1 254:0 / / rw,relatime master:1 - ext4 /dev/vda rw\n";
        assert!(!mountinfo_has_shared(slave));
        // A source named like the tag does not count.
        let source = "27 1 254:0 / / rw - ext4 shared:1 rw\n";
        assert!(!mountinfo_has_shared(source));
    }
}
