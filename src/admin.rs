//! What the `netns-test` binary (the `netns-test-cli` package) does: run a
//! command in a fresh network namespace (`exec`), and list and collect what
//! tests and commands left on purpose (kept namespaces) or by dying
//! (host-side veths). Hidden from the documentation: the binary is its
//! user.

pub use crate::debug::keep::{Kept, interfaces, list as kept, remove as remove_kept};
pub use crate::exec::{ExecEnd, ExecOptions, Policy, exec};
pub use crate::veth::remove_stale as remove_stale_veths;

/// Whether this process may remove host-side veths: only root's tests make
/// them, and only root removes them.
pub fn removes_host_veths() -> bool {
    nix::unistd::geteuid().is_root()
}
