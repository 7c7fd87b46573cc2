//! A link carries its first packet as soon as [`Network::link`],
//! [`Network::attach`] or [`Link::set_up`] returns.
//!
//! Until then the kernel finishes two things on its workers, which a busy
//! machine runs late (1–3 % of fresh links lost their first packet):
//! - a veth just set up drops what it is given, and a bridge port forwards
//!   nothing, until the link watch has handled its carrier. Reading the link
//!   state (ETHTOOL_GLINK) handles an interface's pending event at once.
//! - an IPv6 address takes no packet until the address work has joined its
//!   solicited-node multicast group (where neighbour discovery asks) and
//!   added its local route; and the link-local address, which a router's
//!   neighbour discovery speaks from, comes only with the carrier. So this
//!   waits until an addressed end has its address and a link-local one,
//!   neither tentative, both with their local routes.
//!
//! [`Network::link`]: super::Network::link
//! [`Network::attach`]: super::Network::attach

use super::{End, Link, lock};
use crate::error::Error;
use crate::os::netlink::{self, Netlink};
use crate::os::packet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::route::RouteType;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How long the kernel may take: far longer than it does on a busy
/// machine (milliseconds), so that only a kernel that never gets there
/// fails.
const PATIENCE: Duration = Duration::from_secs(10);

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
                wait_for_ipv6(&mut netlink, end, IpAddr::V6(addresses.ipv6))
                    .map_err(|e| e.in_node(end.node.name()))?;
            }
        }
        Ok(())
    }
}

/// Waits until the end's IPv6 addresses take packets.
fn wait_for_ipv6(netlink: &mut Netlink, end: &End, ours: IpAddr) -> Result<(), Error> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(20);
    while !ipv6_ready(netlink, end.index, ours)? {
        if started.elapsed() > PATIENCE {
            return Err(Error::detected(
                format!(
                    "wait for the IPv6 addresses of {} to take packets",
                    end.name
                ),
                std::io::ErrorKind::TimedOut,
                format!(
                    "the kernel had not set them up after {} s",
                    PATIENCE.as_secs()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_micros(250));
    }
    Ok(())
}

/// Whether the link `index` has `ours` and a link-local address, none of
/// its IPv6 addresses tentative, each with its local route.
fn ipv6_ready(netlink: &mut Netlink, index: i32, ours: IpAddr) -> Result<bool, Error> {
    let mut addresses = Vec::new();
    for answer in netlink.query(netlink::dump_ipv6_addresses())? {
        let RouteNetlinkMessage::NewAddress(message) = answer else {
            continue;
        };
        if message.header.index != index as u32 {
            continue;
        }
        let tentative = message.header.flags.contains(AddressHeaderFlags::Tentative)
            || message.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)),
            );
        if tentative {
            return Ok(false);
        }
        addresses.extend(message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(address) => Some(*address),
            _ => None,
        }));
    }
    let link_local = addresses
        .iter()
        .any(|a| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()));
    if !link_local || !addresses.contains(&ours) {
        return Ok(false);
    }
    for address in addresses {
        let answers = netlink.query(netlink::get_route(address, index))?;
        let local = answers.iter().any(
            |a| matches!(a, RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Local),
        );
        if !local {
            return Ok(false);
        }
    }
    Ok(true)
}
