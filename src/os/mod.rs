//! The platform layer: system calls, netlink, mounts, privileges, and the
//! texts that explain a refusal. Everything above it is written against
//! this module; nothing here knows about tests or topologies.

pub(crate) mod contain;
pub(crate) mod holder;
pub(crate) mod host_routes;
pub(crate) mod isolation;
pub(crate) mod mounts;
pub(crate) mod netlink;
pub(crate) mod nftables;
pub(crate) mod packet;
pub(crate) mod pid_one;
pub(crate) mod poller;
pub(crate) mod private_dir;
pub(crate) mod privilege;
pub(crate) mod run_dir;
pub(crate) mod settle;
pub(crate) mod sys;
pub(crate) mod uapi;
pub(crate) mod userns;

/// The time since the Unix epoch (zero if the clock is before it).
pub(crate) fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
