//! The private mount view of a test: `/sys` showing the test's network
//! namespace and a private copy of `/etc/hosts`, as `ip netns exec` gives.

use crate::error::Error;
use crate::sys;
use nix::mount::MsFlags;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const HOSTS: &str = "/etc/hosts";

/// In a mount namespace the calling thread has just unshared: stops mount
/// events from propagating back to the host, mounts a sysfs that shows the
/// thread's network namespace on `/sys`, and bind-mounts a private copy of
/// `/etc/hosts`.
pub(crate) fn make_private_view() -> Result<(), Error> {
    if has_shared_mounts() {
        sys::mount_propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_SLAVE)?;
    }
    match sys::mount_sysfs(Path::new("/sys")) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {} // no /sys to cover
        other => other?,
    }
    if let Some(contents) = host_hosts_file() {
        bind_private_copy(contents, Path::new(HOSTS))?;
    }
    Ok(())
}

/// Whether any mount propagates events to peers. Without shared mounts,
/// nothing mounted in a copy of the mount namespace can reach the host, and
/// the recursive `MS_SLAVE` (a cost per test) is not needed. Read once per
/// process; the copies of a mount namespace keep the propagation flags.
fn has_shared_mounts() -> bool {
    static SHARED: OnceLock<bool> = OnceLock::new();
    *SHARED.get_or_init(
        || match std::fs::read_to_string("/proc/thread-self/mountinfo") {
            Ok(table) => mountinfo_has_shared(&table),
            Err(_) => true,
        },
    )
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

/// Where the private copies live for the instant before they are unlinked:
/// `/dev/shm` (memory) when it is usable, else the temporary directory.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        match tempfile::tempfile_in(shm) {
            Ok(_) => shm.to_owned(),
            Err(_) => std::env::temp_dir(),
        }
    })
}

/// Writes `contents` to a new file and bind-mounts it over `target`. The file
/// is unlinked as soon as it is mounted: the mount keeps it alive, and it
/// goes away with the mount namespace.
fn bind_private_copy(contents: &[u8], target: &Path) -> Result<(), Error> {
    let dir = scratch_dir();
    let mut copy = tempfile::Builder::new()
        .prefix(".netns-test-")
        .tempfile_in(dir)
        .map_err(|e| Error::at("create a private copy", dir, e))?;
    copy.write_all(contents)
        .map_err(|e| Error::at("write", copy.path(), e))?;
    sys::bind_mount(copy.path(), target)?;
    copy.close()
        .map_err(|e| Error::new("unlink the private copy", e))
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
