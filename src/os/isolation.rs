//! Moving the calling thread into a fresh network namespace with a private
//! mount namespace, and back.
//!
//! The hot path of every test: one `unshare` (from the `/run` template's
//! mount namespace where the host has no `/run/netns`), five mounts, one
//! ioctl, one or two sysctl writes. Nothing here deletes links or namespaces: the kernel
//! frees them when the last thread and file descriptor let go.

use crate::error::Error;
use crate::os::mounts;
use crate::os::privilege;
use crate::os::run_dir::{self, Template};
use crate::os::sys::{self, NsId, NsKind};
use nix::sched::CloneFlags;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

/// Unshares the calling thread into a new network and mount namespace and
/// sets them up; returns the network namespace's identity. The thread stays
/// there; see [`Home`] to come back.
pub(crate) fn isolate_this_thread() -> Result<NsId, Error> {
    let template = run_dir::template_if_needed()?;
    let cwd = template.as_deref().map(Template::enter).transpose()?;
    sys::unshare(
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS,
        "unshare(CLONE_NEWNET | CLONE_NEWNS)",
    )
    .map_err(privilege::explain_unshare)?;
    if let Some(cwd) = cwd {
        cwd.restore()?;
    }
    mounts::make_private_view(template.is_some())?;
    // The identity is read off the socket that set `lo` up: no second one.
    let socket = sys::set_loopback_up()?;
    disable_duplicate_address_detection()?;
    sys::net_ns_id_of_socket(socket.as_fd())
}

/// Unshares the calling thread into a new network namespace only and sets
/// it up (`lo` up, no duplicate address detection): a namespace made ahead
/// of its test, which [`isolate_into`] enters.
pub(crate) fn new_network_namespace_here() -> Result<(), Error> {
    sys::unshare(CloneFlags::CLONE_NEWNET, "unshare(CLONE_NEWNET)")
        .map_err(privilege::explain_unshare)?;
    sys::set_loopback_up()?;
    disable_duplicate_address_detection()
}

/// Moves the calling thread into the network namespace `net`, made ahead
/// by [`new_network_namespace_here`], and into a new mount namespace with
/// its private view: the same as [`isolate_this_thread`] from then on.
pub(crate) fn isolate_into(net: std::os::fd::BorrowedFd<'_>) -> Result<NsId, Error> {
    let template = run_dir::template_if_needed()?;
    let cwd = template.as_deref().map(Template::enter).transpose()?;
    sys::setns(net, NsKind::Net)?;
    sys::unshare(CloneFlags::CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        .map_err(privilege::explain_unshare)?;
    if let Some(cwd) = cwd {
        cwd.restore()?;
    }
    mounts::make_private_view(template.is_some())?;
    sys::ns_id(net)
}

/// Reads now what isolating a thread reads from the host once per process
/// (mount propagation, `/etc/hosts`, how new namespaces start) and makes the
/// `/run` template when the host needs one: a process that forks a child
/// per test reads and makes it once for all of them.
pub(crate) fn read_host_once() {
    mounts::read_host_once();
    new_namespaces_may_start_with_dad_on();
    run_dir::make_ahead();
}

/// Writes 0 to `net.ipv6.conf.default.accept_dad` in the calling thread's
/// namespace, and to `conf.all` too when a new namespace may not start at 0,
/// so that IPv6 addresses are usable the moment they are added.
fn disable_duplicate_address_detection() -> Result<(), Error> {
    const DEFAULT: &str = "/proc/sys/net/ipv6/conf/default/accept_dad";
    const ALL: &str = "/proc/sys/net/ipv6/conf/all/accept_dad";
    let write = |path: &str| match sys::write_existing(Path::new(path), b"0") {
        // A kernel without IPv6 has no such file and no DAD.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| Error::at("write 0", Path::new(path), e)),
    };
    write(DEFAULT)?;
    if new_namespaces_may_start_with_dad_on() {
        write(ALL)?;
    }
    Ok(())
}

/// Whether a new namespace's `conf.all.accept_dad` may be non-zero. The
/// kernel's default is 0; it is copied from the host instead when
/// `net.core.devconf_inherit_init_net` is 1 or 3. Read once per process, on
/// the host's side.
fn new_namespaces_may_start_with_dad_on() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        all_accept_dad_may_be_inherited(
            sys::read_sysctl("net/core/devconf_inherit_init_net").as_deref(),
            || sys::read_sysctl("net/ipv6/conf/all/accept_dad"),
        )
    })
}

/// `host_all` is read only when new namespaces copy the host's settings.
fn all_accept_dad_may_be_inherited(
    inherit: Option<&str>,
    host_all: impl FnOnce() -> Option<String>,
) -> bool {
    match inherit {
        // Fresh defaults (all.accept_dad = 0) in new namespaces.
        None | Some("0") | Some("2") => false,
        _ => host_all().as_deref() != Some("0"),
    }
}

/// The namespaces and working directory a thread had before it isolated
/// itself, to return to them.
pub(crate) struct Home {
    net: OwnedFd,
    mnt: OwnedFd,
    cwd: OwnedFd,
}

impl Home {
    /// Remembers where the calling thread is.
    pub(crate) fn here() -> Result<Home, Error> {
        Ok(Home {
            net: sys::open_thread_ns(NsKind::Net)?,
            mnt: sys::open_thread_ns(NsKind::Mount)?,
            cwd: sys::open_cwd()?,
        })
    }

    /// Moves the calling thread back. The mount namespace cannot be left
    /// while threads the test spawned still share this thread's filesystem
    /// context (EINVAL); the network namespace always can.
    pub(crate) fn go_back(&self) -> Result<(), Error> {
        sys::setns_net_and_mount(self.net.as_fd(), self.mnt.as_fd())?;
        sys::fchdir(self.cwd.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::all_accept_dad_may_be_inherited as may;

    #[test]
    fn accept_dad_inheritance_rules() {
        fn host(value: Option<&'static str>) -> impl FnOnce() -> Option<String> {
            move || value.map(str::to_owned)
        }
        let unread = || -> Option<String> { panic!("read although not inherited") };
        assert!(!may(Some("0"), unread));
        assert!(!may(Some("2"), unread));
        assert!(!may(None, unread));
        assert!(may(Some("1"), host(Some("1"))));
        assert!(may(Some("3"), host(None)));
        assert!(!may(Some("1"), host(Some("0"))));
    }
}
