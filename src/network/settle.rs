//! A link carries its first packet as soon as [`Network::link`],
//! [`Network::attach`] or [`Link::set_up`] returns: each addressed end
//! waits as `os/settle.rs` says, its link-local address included (a
//! router's neighbour discovery speaks from it).
//!
//! [`Network::link`]: super::Network::link
//! [`Network::attach`]: super::Network::attach

use super::Link;
use crate::error::Error;
use crate::os::packet;
use crate::os::settle::{self, LinkLocal};
use crate::sync::lock;
use std::net::IpAddr;
use std::os::fd::AsFd;

impl Link {
    /// Returns once both ends carry packets, in both families.
    pub(super) fn settle(&self) -> Result<(), Error> {
        if !crate::settings::settle_links() {
            return Ok(());
        }
        for end in &self.inner.ends {
            let netlink = lock(&end.node.inner.netlink);
            packet::settle_link(netlink.as_fd(), &end.name)
                .map_err(|e| e.in_node(end.node.name()))?;
        }
        for end in &self.inner.ends {
            if let Some(addresses) = &end.addresses {
                let mut netlink = lock(&end.node.inner.netlink);
                settle::wait_for_ipv6(
                    &mut netlink,
                    end.index,
                    &end.name,
                    IpAddr::V6(addresses.ipv6),
                    LinkLocal::Needed,
                )
                .map_err(|e| e.in_node(end.node.name()))?;
            }
        }
        Ok(())
    }
}
