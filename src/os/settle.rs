//! Waiting until a fresh interface carries its first packet.
//!
//! Until then the kernel finishes two things on its workers, which a busy
//! machine runs late (1–3 % of fresh links lost their first packet):
//! - a veth just set up drops what it is given, and a bridge port forwards
//!   nothing, until the link watch has handled its carrier. Reading the link
//!   state (ETHTOOL_GLINK) handles an interface's pending event at once
//!   ([`packet::settle_link`]).
//! - an IPv6 address takes no packet until the address work has joined its
//!   solicited-node multicast group (where neighbour discovery asks) and
//!   added its local route; and the link-local address, which a router's
//!   neighbour discovery speaks from, comes only with the carrier
//!   ([`wait_for_ipv6`]).

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

/// Returns once the interface `name` (index `index`), in the namespace of
/// `netlink`, carries packets: its carrier handled and, when `ipv6` is
/// given, that address taking packets ([`wait_for_ipv6`]).
pub(crate) fn settle(
    netlink: &mut Netlink,
    index: i32,
    name: &str,
    ipv6: Option<(IpAddr, LinkLocal)>,
) -> Result<(), Error> {
    packet::settle_link(netlink.as_fd(), name)?;
    match ipv6 {
        Some((ours, link_local)) => wait_for_ipv6(netlink, index, name, ours, link_local),
        None => Ok(()),
    }
}

/// Whether an interface's link-local address matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkLocal {
    /// It must be there, not tentative, with its local route (a router's
    /// neighbour discovery speaks from it).
    Needed,
    /// Only the address given counts (the host's end of a veth pair, whose
    /// link-local address stays tentative for the host's duplicate address
    /// detection, and which nothing there speaks from).
    Ignored,
}

/// Waits until the interface `index` has `ours`, not tentative, with its
/// local route (the address work has joined its solicited-node group), and
/// the same of its link-local address and every other when `link_local` is
/// needed.
pub(crate) fn wait_for_ipv6(
    netlink: &mut Netlink,
    index: i32,
    name: &str,
    ours: IpAddr,
    link_local: LinkLocal,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(20);
    while !ipv6_ready(netlink, index, ours, link_local)? {
        if started.elapsed() > PATIENCE {
            return Err(Error::detected(
                format!("wait for the IPv6 addresses of {name} to take packets"),
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

/// Whether the interface `index` is ready as [`wait_for_ipv6`] says.
fn ipv6_ready(
    netlink: &mut Netlink,
    index: i32,
    ours: IpAddr,
    link_local: LinkLocal,
) -> Result<bool, Error> {
    let mut addresses = Vec::new();
    for answer in netlink.query(netlink::dump_ipv6_addresses())? {
        let RouteNetlinkMessage::NewAddress(message) = answer else {
            continue;
        };
        if message.header.index != index as u32 {
            continue;
        }
        let Some(address) = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(address) => Some(*address),
            _ => None,
        }) else {
            continue;
        };
        if link_local == LinkLocal::Ignored && address != ours {
            continue;
        }
        let tentative = message.header.flags.contains(AddressHeaderFlags::Tentative)
            || message.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)),
            );
        if tentative {
            return Ok(false);
        }
        addresses.push(address);
    }
    let has_link_local = addresses
        .iter()
        .any(|a| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()));
    if !addresses.contains(&ours) || (link_local == LinkLocal::Needed && !has_link_local) {
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
