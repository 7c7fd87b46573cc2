//! The private mount view of a test: `/sys` showing the test's network
//! namespace and a private copy of `/etc/hosts`, as `ip netns exec` gives.

use crate::error::Error;
use crate::os::sys;
use nix::mount::MsFlags;
use std::path::Path;
use std::sync::OnceLock;

const HOSTS: &str = "/etc/hosts";

/// In a mount namespace the calling thread has just unshared: stops mount
/// events from propagating back to the host (when the host shares mounts),
/// bind-mounts a private copy of `/etc/hosts`, and mounts a sysfs that shows
/// the thread's network namespace on `/sys`.
///
/// The copy lives on a small tmpfs mounted on `/sys` in this mount namespace
/// only, and the fresh sysfs then covers that tmpfs. No file is ever created
/// where the host can see it, so a SIGKILL at any moment leaves nothing, and
/// everything goes away with the mount namespace.
pub(crate) fn make_private_view() -> Result<(), Error> {
    if has_shared_mounts() {
        sys::mount_propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_SLAVE)?;
    }
    let sys_dir = Path::new("/sys");
    if let Some(contents) = host_hosts_file() {
        sys::mount_tmpfs(sys_dir)?;
        let copy = sys_dir.join("hosts");
        std::fs::write(&copy, contents)
            .map_err(|e| Error::at("write a private copy of /etc/hosts", &copy, e))?;
        sys::bind_mount(&copy, Path::new(HOSTS))?;
    }
    sys::mount_sysfs(sys_dir)
}

/// Reads what [`make_private_view`] reads from the host once per process.
pub(crate) fn read_host_once() {
    has_shared_mounts();
    host_hosts_file();
}

/// Whether any mount propagates events to peers. Without shared mounts,
/// nothing mounted in a copy of the mount namespace can reach the host, and
/// the recursive `MS_SLAVE` (a cost per test) is not needed. Read once per
/// process; the copies of a mount namespace keep the propagation flags.
/// Read through `/proc/self` (the process's mount namespace, which a test
/// thread copies): a dead thread's `/proc/thread-self` entries cost the
/// kernel dentry pruning when the process is reaped.
fn has_shared_mounts() -> bool {
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
    use super::mountinfo_has_shared;

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
