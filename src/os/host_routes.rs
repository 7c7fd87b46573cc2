//! What the host's routing uses: its addresses and their subnets, its
//! routes and its gateways, read from `getifaddrs`, `/proc/net/route` and
//! `/proc/net/ipv6_route` in the calling thread's network namespace. A veth
//! pair to the host must overlap none of them, or the host would send its
//! own traffic into a test.

use crate::error::Error;
use crate::os::sys;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Net {
    pub(crate) address: IpAddr,
    pub(crate) prefix: u8,
}

impl Net {
    pub(crate) fn new(address: IpAddr, prefix: u8) -> Net {
        Net { address, prefix }
    }

    fn bits(&self) -> (u128, u32) {
        match self.address {
            IpAddr::V4(a) => (u32::from(a).into(), 32),
            IpAddr::V6(a) => (a.into(), 128),
        }
    }

    /// Whether the two networks share an address.
    pub(crate) fn overlaps(&self, other: &Net) -> bool {
        let ((a, width), (b, other_width)) = (self.bits(), other.bits());
        if width != other_width {
            return false;
        }
        let shortest = u32::from(self.prefix.min(other.prefix));
        shortest == 0 || a >> (width - shortest) == b >> (width - shortest)
    }

    /// Whether `other` lies inside this network.
    pub(crate) fn contains(&self, other: &Net) -> bool {
        self.prefix <= other.prefix && self.overlaps(other)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Something of the host's that a network must not overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostUse {
    pub(crate) net: Net,
    /// What it is, for messages: "the route to 10.0.0.0/8 on eth0".
    pub(crate) what: String,
}

/// The host's addresses, subnets, routes (all but default routes) and
/// gateways, leaving out interfaces whose name starts with one of `ours`.
pub(crate) fn host_uses(ours: &[&str]) -> Result<Vec<HostUse>, Error> {
    let foreign = |interface: &str| !ours.iter().any(|p| interface.starts_with(p));
    let mut uses = Vec::new();
    for (on, ip, prefix) in sys::interface_addresses()? {
        if !foreign(&on) {
            continue;
        }
        uses.push(HostUse {
            net: Net::new(ip, if ip.is_ipv4() { 32 } else { 128 }),
            what: format!("the host's address {ip} on {on}"),
        });
        uses.push(HostUse {
            net: Net::new(ip, prefix),
            what: format!("the host's subnet of {ip}/{prefix} on {on}"),
        });
    }
    if let Ok(table) = std::fs::read_to_string("/proc/net/route") {
        uses.extend(
            ipv4_routes(&table)
                .into_iter()
                .filter(|(on, _)| foreign(on))
                .map(|(_, u)| u),
        );
    }
    if let Ok(table) = std::fs::read_to_string("/proc/net/ipv6_route") {
        uses.extend(
            ipv6_routes(&table)
                .into_iter()
                .filter(|(on, _)| foreign(on))
                .map(|(_, u)| u),
        );
    }
    Ok(uses)
}

/// Routes and gateways from `/proc/net/route`, with their interface.
fn ipv4_routes(table: &str) -> Vec<(String, HostUse)> {
    let address = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|raw| Ipv4Addr::from(raw.to_ne_bytes()))
    };
    let mut uses = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [on, destination, gateway, _flags, _, _, _, mask, ..] = fields[..] else {
            continue;
        };
        let (Some(destination), Some(gateway), Some(mask)) =
            (address(destination), address(gateway), address(mask))
        else {
            continue;
        };
        let prefix = mask.to_bits().count_ones() as u8;
        if prefix > 0 {
            uses.push((
                on.to_owned(),
                HostUse {
                    net: Net::new(IpAddr::V4(destination), prefix),
                    what: format!("the host's route to {destination}/{prefix} on {on}"),
                },
            ));
        }
        if !gateway.is_unspecified() {
            uses.push((
                on.to_owned(),
                HostUse {
                    net: Net::new(IpAddr::V4(gateway), 32),
                    what: format!("the host's gateway {gateway} on {on}"),
                },
            ));
        }
    }
    uses
}

/// Routes and gateways from `/proc/net/ipv6_route`, with their interface.
fn ipv6_routes(table: &str) -> Vec<(String, HostUse)> {
    let address = |hex: &str| u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from);
    let mut uses = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [destination, prefix, _, _, next_hop, _, _, _, _, on] = fields[..] else {
            continue;
        };
        let (Some(destination), Ok(prefix), Some(next_hop)) = (
            address(destination),
            u8::from_str_radix(prefix, 16),
            address(next_hop),
        ) else {
            continue;
        };
        // Multicast routes are on every interface and carry no unicast.
        if prefix > 0 && !destination.is_multicast() {
            uses.push((
                on.to_owned(),
                HostUse {
                    net: Net::new(IpAddr::V6(destination), prefix),
                    what: format!("the host's route to {destination}/{prefix} on {on}"),
                },
            ));
        }
        if !next_hop.is_unspecified() {
            uses.push((
                on.to_owned(),
                HostUse {
                    net: Net::new(IpAddr::V6(next_hop), 128),
                    what: format!("the host's gateway {next_hop} on {on}"),
                },
            ));
        }
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Net {
        let (a, p) = text.split_once('/').unwrap();
        Net::new(a.parse().unwrap(), p.parse().unwrap())
    }

    #[test]
    fn networks_overlap_in_both_directions() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.0.0.0/30")));
        assert!(net("10.0.0.0/30").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.0.0.0/30").overlaps(&net("10.0.0.4/30")));
        assert!(net("128.0.0.0/1").overlaps(&net("200.1.2.3/32")));
        assert!(!net("10.0.0.0/8").overlaps(&net("fd00::/8")));
        assert!(net("fdc7:3a59:41e2::/48").overlaps(&net("fdc7:3a59:41e2:5::/64")));
        assert!(net("0.0.0.0/0").overlaps(&net("1.2.3.4/32")));
        assert!(net("10.0.0.0/8").contains(&net("10.1.0.0/16")));
        assert!(!net("10.1.0.0/16").contains(&net("10.0.0.0/8")));
    }

    #[test]
    fn routes_and_gateways_are_read_from_proc() {
        // A default route via 192.0.2.1 and the connected 192.0.2.0/24, as
        // a little-endian host prints them.
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            let uses: Vec<String> = ipv4_routes(v4)
                .into_iter()
                .map(|(_, u)| u.net.to_string())
                .collect();
            assert_eq!(uses, ["192.0.2.1/32", "192.0.2.0/24"]);
        }
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                  ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        let uses: Vec<String> = ipv6_routes(v6)
            .into_iter()
            .map(|(_, u)| u.net.to_string())
            .collect();
        assert_eq!(uses, ["fd00::/64", "fd00::1/128"]);
    }
}
