//! [`Nat`]: how a router's NAT maps and filters (RFC 4787), plain data
//! checked when [`Node::nat`](crate::Node::nat) loads it.

use crate::error::Error;
use std::time::Duration;

/// The shortest and longest idle timeout of a mapping.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 24 * 3600);

/// When a NAT gives an inside endpoint (address and port) the same public
/// port again: RFC 4787 §4.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatMapping {
    /// One public port per inside endpoint, whatever it sends to (a cone).
    EndpointIndependent,
    /// One public port per inside endpoint and remote address.
    AddressDependent,
    /// One public port per inside endpoint, remote address and remote
    /// port (a symmetric NAT).
    AddressAndPortDependent,
}

/// What a NAT lets in to a mapping: RFC 4787 §5. What it does not let
/// in, it drops silently (no ICMP, no TCP RST), and it remembers nothing
/// of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatFiltering {
    /// Anyone who sends to the public port (full cone).
    EndpointIndependent,
    /// Any port of an address the inside endpoint has sent to (restricted
    /// cone).
    AddressDependent,
    /// Only the addresses and ports the inside endpoint has sent to (port
    /// restricted cone).
    AddressAndPortDependent,
}

/// A router's NAT, as peer-to-peer software meets it: give it to
/// [`Node::nat`](crate::Node::nat).
///
/// IPv4 is translated to the router's address on the NAT's link; IPv6 is
/// not translated but filtered the same way, as home routers do (RFC 6092).
///
/// | preset | mapping | filtering |
/// |---|---|---|
/// | [`Nat::full_cone`] | endpoint-independent | endpoint-independent |
/// | [`Nat::restricted_cone`] | endpoint-independent | address-dependent |
/// | [`Nat::port_restricted_cone`] (= [`Nat::new`]) | endpoint-independent | address-and-port-dependent |
/// | [`Nat::symmetric`] | address-and-port-dependent | address-and-port-dependent |
///
/// ```
/// use netns_test::{Nat, NatFiltering, NatMapping};
/// use std::time::Duration;
/// let home = Nat::port_restricted_cone();
/// let odd = Nat::new()
///     .mapping(NatMapping::AddressDependent)
///     .filtering(NatFiltering::AddressDependent)
///     .hairpin(true)
///     .port_preservation(false)
///     .udp_timeout(Duration::from_secs(5));
/// assert_eq!(home, Nat::new());
/// # let _ = odd;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct Nat {
    mapping: NatMapping,
    filtering: NatFiltering,
    hairpin: bool,
    port_preservation: bool,
    udp_timeout: Duration,
    tcp_timeout: Duration,
}

impl Default for Nat {
    fn default() -> Nat {
        Nat::new()
    }
}

impl Nat {
    /// Endpoint-independent mapping, address-and-port-dependent filtering
    /// (a port restricted cone, what most home routers are), no
    /// hairpinning, port preservation, and the shortest idle timeouts the
    /// RFCs allow: 120 s for UDP (RFC 4787 REQ-5), 7440 s for established
    /// TCP (RFC 5382 REQ-5).
    pub fn new() -> Nat {
        Nat {
            mapping: NatMapping::EndpointIndependent,
            filtering: NatFiltering::AddressAndPortDependent,
            hairpin: false,
            port_preservation: true,
            udp_timeout: Duration::from_secs(120),
            tcp_timeout: Duration::from_secs(7440),
        }
    }

    /// Endpoint-independent mapping and filtering: once an inside
    /// endpoint has sent anything out, anyone reaches it at its public
    /// address and port.
    pub fn full_cone() -> Nat {
        Nat::new().filtering(NatFiltering::EndpointIndependent)
    }

    /// Endpoint-independent mapping, address-dependent filtering.
    pub fn restricted_cone() -> Nat {
        Nat::new().filtering(NatFiltering::AddressDependent)
    }

    /// Endpoint-independent mapping, address-and-port-dependent filtering:
    /// the same as [`Nat::new`].
    pub fn port_restricted_cone() -> Nat {
        Nat::new()
    }

    /// Address-and-port-dependent mapping and filtering: each remote
    /// address and port sees another public port.
    pub fn symmetric() -> Nat {
        Nat::new().mapping(NatMapping::AddressAndPortDependent)
    }

    /// How mappings are shared (default endpoint-independent).
    pub fn mapping(mut self, mapping: NatMapping) -> Nat {
        self.mapping = mapping;
        self
    }

    /// What reaches a mapping from outside (default
    /// address-and-port-dependent).
    pub fn filtering(mut self, filtering: NatFiltering) -> Nat {
        self.filtering = filtering;
        self
    }

    /// Hairpinning (RFC 4787 §6; default off): an inside node that sends to
    /// the public address and port of another inside node's mapping
    /// reaches it, which sees the sender's public address and port.
    /// Off, such packets reach only the router.
    pub fn hairpin(mut self, hairpin: bool) -> Nat {
        self.hairpin = hairpin;
        self
    }

    /// Port preservation (default on): a new mapping keeps the inside
    /// port when no other mapping has it. Off, a mapping's public port
    /// always differs from its inside port.
    pub fn port_preservation(mut self, port_preservation: bool) -> Nat {
        self.port_preservation = port_preservation;
        self
    }

    /// How long a UDP mapping lives without an outgoing packet (default
    /// 120 s; 1 s to 24 days, counted in whole seconds, rounded up).
    pub fn udp_timeout(mut self, timeout: Duration) -> Nat {
        self.udp_timeout = timeout;
        self
    }

    /// How long an established TCP mapping lives without an outgoing
    /// packet (default 7440 s; 1 s to 24 days, counted in whole seconds,
    /// rounded up).
    pub fn tcp_timeout(mut self, timeout: Duration) -> Nat {
        self.tcp_timeout = timeout;
        self
    }

    /// The checked settings, or an `InvalidInput` error naming the knob
    /// that is out of range.
    pub(crate) fn check(&self) -> Result<NatSettings, Error> {
        let seconds = |knob: &str, timeout: Duration| {
            if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
                return Err(Error::invalid_input(
                    "set a NAT",
                    format!(
                        "{knob}({timeout:?}) is out of range: give 1 s to 24 days ({} s)",
                        MAX_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0))
        };
        Ok(NatSettings {
            mapping: self.mapping,
            filtering: self.filtering,
            hairpin: self.hairpin,
            port_preservation: self.port_preservation,
            udp_seconds: seconds("udp_timeout", self.udp_timeout)?,
            tcp_seconds: seconds("tcp_timeout", self.tcp_timeout)?,
        })
    }
}

/// A [`Nat`] checked: timeouts in whole seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NatSettings {
    pub(crate) mapping: NatMapping,
    pub(crate) filtering: NatFiltering,
    pub(crate) hairpin: bool,
    pub(crate) port_preservation: bool,
    pub(crate) udp_seconds: u64,
    pub(crate) tcp_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_the_rfc_kinds() {
        use NatFiltering as F;
        use NatMapping as M;
        for (nat, mapping, filtering) in [
            (
                Nat::full_cone(),
                M::EndpointIndependent,
                F::EndpointIndependent,
            ),
            (
                Nat::restricted_cone(),
                M::EndpointIndependent,
                F::AddressDependent,
            ),
            (
                Nat::port_restricted_cone(),
                M::EndpointIndependent,
                F::AddressAndPortDependent,
            ),
            (
                Nat::symmetric(),
                M::AddressAndPortDependent,
                F::AddressAndPortDependent,
            ),
        ] {
            let settings = nat.check().unwrap();
            assert_eq!((settings.mapping, settings.filtering), (mapping, filtering));
            assert!(!settings.hairpin && settings.port_preservation);
        }
        assert_eq!(Nat::default(), Nat::port_restricted_cone());
    }

    #[test]
    fn timeouts_are_whole_seconds_in_range() {
        let settings = Nat::new()
            .udp_timeout(Duration::from_millis(1500))
            .tcp_timeout(Duration::from_secs(60))
            .check()
            .unwrap();
        assert_eq!((settings.udp_seconds, settings.tcp_seconds), (2, 60));
        for (nat, knob) in [
            (Nat::new().udp_timeout(Duration::ZERO), "udp_timeout"),
            (
                Nat::new().udp_timeout(Duration::from_millis(999)),
                "udp_timeout",
            ),
            (
                Nat::new().tcp_timeout(MAX_TIMEOUT + Duration::from_secs(1)),
                "tcp_timeout",
            ),
        ] {
            let error = nat.check().unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
            let text = error.to_string();
            assert!(
                text.contains(knob) && text.contains("1 s to 24 days"),
                "{text}"
            );
        }
    }
}
