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
    sys::mount_propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_SLAVE)?;
    match sys::mount_sysfs(Path::new("/sys")) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {} // no /sys to cover
        other => other?,
    }
    if let Some(contents) = host_hosts_file() {
        bind_private_copy(contents, Path::new(HOSTS))?;
    }
    Ok(())
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
