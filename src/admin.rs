//! What the `netns-test` binary does: list and collect what tests left on
//! purpose (kept namespaces) or by dying (host-side veths). Hidden from the
//! documentation: the binary is its user.

pub use crate::debug::keep::{Kept, list as kept, remove as remove_kept};
pub use crate::veth::remove_stale as remove_stale_veths;
