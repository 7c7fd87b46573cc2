//! The subnets of a network's links and switches: those a user gives
//! ([`Network::link_with`](super::Network::link_with),
//! [`Network::switch_with`](super::Network::switch_with)) and those from
//! netns-test's pools, none overlapping another.

use crate::error::Error;
use crate::sync::lock;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

/// An IPv4 or IPv6 subnet: a network address (host bits zero) and a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    pub(super) fn v4(network: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet {
            network: IpAddr::V4(network),
            prefix,
        }
    }

    pub(super) fn v6(network: Ipv6Addr, prefix: u8) -> Subnet {
        Subnet {
            network: IpAddr::V6(network),
            prefix,
        }
    }

    pub(super) fn prefix(&self) -> u8 {
        self.prefix
    }

    fn width(&self) -> u32 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    fn bits(address: IpAddr) -> u128 {
        match address {
            IpAddr::V4(a) => u32::from(a).into(),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// Parses `"192.168.1.0/24"` or `"2001:db8::/64"`; `operation` names
    /// what the error is about.
    fn parse(text: &str, operation: &'static str) -> Result<Subnet, Error> {
        let invalid = |why: String| Error::invalid_input(operation, why);
        let usage = || {
            invalid(format!(
                "cannot parse subnet {text:?}: write an address and a prefix length, like \
                 \"192.168.1.0/24\" or \"2001:db8:1::/64\""
            ))
        };
        let (address, prefix) = text.trim().split_once('/').ok_or_else(usage)?;
        let network: IpAddr = address.parse().map_err(|_| usage())?;
        let prefix: u8 = prefix.parse().map_err(|_| usage())?;
        let subnet = Subnet { network, prefix };
        // Room for two hosts at least (network and broadcast excluded).
        let longest = subnet.width() as u8 - 2;
        if prefix > longest {
            return Err(invalid(format!(
                "subnet {text:?} is too small: give a prefix of at most /{longest}, with room for \
                 two hosts"
            )));
        }
        let host_bits = Subnet::bits(network) & subnet.host_mask();
        if host_bits != 0 {
            let network = subnet.nth(0).expect("in range");
            return Err(invalid(format!(
                "subnet {text:?} has host bits set: write {}/{prefix}",
                Subnet { network, prefix }.network
            )));
        }
        Ok(subnet)
    }

    fn host_mask(&self) -> u128 {
        let host_bits = self.width() - u32::from(self.prefix);
        1u128.checked_shl(host_bits).map_or(u128::MAX, |b| b - 1)
    }

    /// The `n`-th address of the subnet (0: the network itself), when it
    /// is a host address (not IPv4's broadcast).
    pub(super) fn host(&self, n: u128) -> Option<IpAddr> {
        if n == 0 || n > self.capacity() {
            return None;
        }
        self.nth(n)
    }

    fn nth(&self, n: u128) -> Option<IpAddr> {
        let bits = (Subnet::bits(self.network) & !self.host_mask()) | (n & self.host_mask());
        Some(match self.network {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
        })
    }

    /// How many hosts it holds.
    pub(super) fn capacity(&self) -> u128 {
        if self.network.is_ipv4() {
            self.host_mask() - 1
        } else {
            self.host_mask()
        }
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        let range = |s: &Subnet| {
            let first = Subnet::bits(s.network);
            (first, first | s.host_mask())
        };
        let ((a, b), (c, d)) = (range(self), range(other));
        self.network.is_ipv4() == other.network.is_ipv4() && a <= d && c <= b
    }
}

/// The user's subnets for a link or switch: at most one of each family.
pub(super) fn parse(
    subnets: &[&str],
    operation: &'static str,
) -> Result<(Option<Subnet>, Option<Subnet>), Error> {
    let (mut v4, mut v6) = (None, None);
    for text in subnets {
        let subnet = Subnet::parse(text, operation)?;
        let slot = if subnet.network.is_ipv4() {
            &mut v4
        } else {
            &mut v6
        };
        if let Some(first) = slot.replace(subnet) {
            return Err(Error::invalid_input(
                operation,
                format!(
                    "two subnets of one family, {first} and {subnet}: give one IPv4 and one IPv6 at most"
                ),
            ));
        }
    }
    Ok((v4, v6))
}

/// Every subnet in use in a network, with what uses it.
#[derive(Default)]
pub(super) struct Registry {
    taken: Mutex<Vec<(Subnet, String)>>,
}

impl Registry {
    /// Takes `subnets` for `owner`, or fails naming the subnet and user
    /// each overlaps (taking none).
    pub(super) fn claim(
        &self,
        subnets: &[Subnet],
        owner: &str,
        operation: &'static str,
    ) -> Result<(), Error> {
        let mut taken = lock(&self.taken);
        for subnet in subnets {
            if let Some((other, user)) = taken.iter().find(|(t, _)| t.overlaps(subnet)) {
                return Err(Error::invalid_input(
                    operation,
                    format!("subnet {subnet} of {owner} overlaps {other} of {user}"),
                ));
            }
        }
        taken.extend(subnets.iter().map(|s| (*s, owner.to_owned())));
        Ok(())
    }

    /// Whether `subnet` overlaps one in use.
    pub(super) fn is_taken(&self, subnet: &Subnet) -> bool {
        let taken = lock(&self.taken);
        taken.iter().any(|(t, _)| t.overlaps(subnet))
    }

    /// Gives back `subnets`, which `owner` took (after a failure to make it).
    pub(super) fn release(&self, owner: &str, subnets: &[Subnet]) {
        let mut taken = lock(&self.taken);
        taken.retain(|(subnet, user)| user != owner || !subnets.contains(subnet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_name_what_is_wrong() {
        let (v4, v6) = parse(&["192.168.1.0/24", "2001:db8:1::/64"], "link").unwrap();
        let (v4, v6) = (v4.unwrap(), v6.unwrap());
        assert_eq!(v4.host(1), Some("192.168.1.1".parse().unwrap()));
        assert_eq!(v4.host(254), Some("192.168.1.254".parse().unwrap()));
        assert_eq!(v4.host(255), None, "broadcast");
        assert_eq!(v4.capacity(), 254);
        assert_eq!(v6.host(2), Some("2001:db8:1::2".parse().unwrap()));
        for (bad, says) in [
            ("192.168.1.1/24", "host bits set: write 192.168.1.0/24"),
            ("192.168.1.0", "cannot parse"),
            ("10.0.0.0/31", "at most /30"),
            ("fd00::/127", "at most /126"),
        ] {
            let error = parse(&[bad], "link").unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
            assert!(error.to_string().contains(says), "{error}");
        }
        let error = parse(&["10.0.0.0/8", "10.1.0.0/16"], "link").unwrap_err();
        assert!(
            error.to_string().contains("two subnets of one family"),
            "{error}"
        );
    }

    #[test]
    fn overlaps_are_refused_naming_both() {
        let registry = Registry::default();
        let (lan, _) = parse(&["192.168.0.0/16"], "switch").unwrap();
        registry
            .claim(&[lan.unwrap()], "switch lan", "switch")
            .unwrap();
        let (inner, _) = parse(&["192.168.1.0/24"], "link").unwrap();
        let error = registry
            .claim(&[inner.unwrap()], "link a-b", "link")
            .unwrap_err();
        assert!(
            error.to_string().contains(
                "subnet 192.168.1.0/24 of link a-b overlaps 192.168.0.0/16 of switch lan"
            ),
            "{error}"
        );
        let (apart, v6) = parse(&["192.169.0.0/16", "fd00::/64"], "link").unwrap();
        registry
            .claim(&[apart.unwrap(), v6.unwrap()], "link c-d", "link")
            .unwrap();
        assert!(registry.is_taken(&Subnet::v4(Ipv4Addr::new(192, 169, 3, 0), 30)));
        assert!(!registry.is_taken(&Subnet::v4(Ipv4Addr::new(10, 0, 0, 0), 30)));
        registry.release("link c-d", &[apart.unwrap()]);
        assert!(!registry.is_taken(&Subnet::v4(Ipv4Addr::new(192, 169, 3, 0), 30)));
    }
}
