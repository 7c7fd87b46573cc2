//! The address pools: where every address netns-test hands out comes from.
//!
//! - IPv4: 198.18.0.0/15 (RFC 2544, reserved for benchmarking), never the
//!   private ranges hosts use. Veth pairs to the host take a /30 each out of
//!   the whole /15; inside a [`Network`](crate::Network), links take /30s
//!   from 198.18.0.0/16 and switches /24s from 198.19.0.0/16 (those live in
//!   the test's own namespaces, never on the host).
//! - IPv6: one fixed random 48-bit ULA prefix (RFC 4193), fdc7:3a59:41e2::/48.
//!   Its 16-bit subnet field is split the same way: veth pairs
//!   `0000`–`7fff`, links `8000`–`bfff`, switches `c000`–`ffff`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv4 pool, 198.18.0.0/15.
pub(crate) const IPV4: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// The IPv6 pool's 48-bit prefix.
const ULA_PREFIX: [u16; 3] = [0xfdc7, 0x3a59, 0x41e2];

/// Veth slots: 198.18.0.0/15 holds 32768 /30 subnets.
pub(crate) const VETH_SLOTS: u32 = 32768;
/// Links of a network: /30s from 198.18.0.0/16.
pub(crate) const MAX_LINKS: u32 = 16384;
/// Switches of a network: /24s from 198.19.0.0/16.
pub(crate) const MAX_SWITCHES: u32 = 256;

const LINK_SUBNETS_V6: u16 = 0x8000;
const SWITCH_SUBNETS_V6: u16 = 0xc000;
const SWITCHES_V4: u32 = u32::from_be_bytes([198, 19, 0, 0]);

/// An address in the ULA prefix: `fdc7:3a59:41e2:<subnet>::<host>`.
pub(crate) fn ula(subnet: u16, host: u16) -> Ipv6Addr {
    let [a, b, c] = ULA_PREFIX;
    Ipv6Addr::new(a, b, c, subnet, 0, 0, 0, host)
}

/// Host `host` (1 or 2) of the /30 and the /64 of veth slot `slot`.
pub(crate) fn veth_end(slot: u32, host: u8) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::from(IPV4 + slot * 4 + u32::from(host)),
        ula(slot as u16, host.into()),
    )
}

/// Host `host` (1 or 2) of the /30 and the /64 of a network's link `k`.
pub(crate) fn link_end(k: u32, host: u8) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::from(IPV4 + 4 * k + u32::from(host)),
        ula(LINK_SUBNETS_V6 + k as u16, host.into()),
    )
}

/// Host `host` (1–254) of the /24 and the /64 of a network's switch `k`.
pub(crate) fn switch_member(k: u32, host: u32) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::from(SWITCHES_V4 + (k << 8) + host),
        ula(SWITCH_SUBNETS_V6 + k as u16, host as u16),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_do_not_overlap_and_end_where_documented() {
        assert_eq!(
            veth_end(VETH_SLOTS - 1, 2).0,
            Ipv4Addr::new(198, 19, 255, 254)
        );
        assert_eq!(
            veth_end(0, 1).1,
            "fdc7:3a59:41e2::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            veth_end(VETH_SLOTS - 1, 1).1,
            "fdc7:3a59:41e2:7fff::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            link_end(0, 2).1,
            "fdc7:3a59:41e2:8000::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            link_end(MAX_LINKS - 1, 2).0,
            Ipv4Addr::new(198, 18, 255, 254)
        );
        assert_eq!(
            switch_member(MAX_SWITCHES - 1, 254).0,
            Ipv4Addr::new(198, 19, 255, 254)
        );
        assert_eq!(
            switch_member(0, 1).1,
            "fdc7:3a59:41e2:c000::1".parse::<Ipv6Addr>().unwrap()
        );
    }
}
