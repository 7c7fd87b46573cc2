//! [`Traffic`]: which packets an impairment ([`Impairment::only`]) or a
//! firewall rule ([`Firewall`]) applies to, and its check into the
//! alternatives the fault engine, its classic-BPF filter and nf_tables
//! match.
//!
//! [`Impairment::only`]: crate::Impairment::only
//! [`Firewall`]: crate::Firewall

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most alternatives one [`Traffic`] may have (what [`Traffic::or`]
/// and [`Traffic::and`] make).
pub(crate) const MAX_ALTERNATIVES: usize = 64;

/// Which packets something applies to: by IP family, protocol, port and
/// address. A selector of each kind is a constructor
/// ([`Traffic::ipv4`], [`Traffic::udp`], ...) or a method that narrows it
/// ([`Traffic::port`], [`Traffic::to`], ...); [`Traffic::and`] and
/// [`Traffic::or`] combine them.
///
/// ```
/// use netns_test::Traffic;
/// let v6 = Traffic::ipv6();                                   // all IPv6 packets
/// let dns = Traffic::udp().port(53);                          // UDP to or from port 53
/// let https_out = Traffic::tcp().dst_port(443);               // TCP to port 443
/// let lan = Traffic::ipv4().to("192.168.1.0/24");             // IPv4 to a subnet
/// let quic_v6 = Traffic::udp().and(Traffic::ipv6()).port(443); // both must hold
/// let dns_any = Traffic::udp().port(53).or(Traffic::tcp().port(53)); // either
/// let ping = Traffic::icmp();                                 // ICMP and ICMPv6
/// # let _ = (v6, dns, https_out, lan, quic_v6, dns_any, ping);
/// ```
///
/// What a selector matches:
/// - `ipv4()`, `ipv6()`: the IP family;
/// - `tcp()`, `udp()`, `icmp()`: the protocol (`icmp()` is ICMP over IPv4
///   and ICMPv6 over IPv6), found past IPv6 extension headers, in every
///   fragment of a fragmented packet;
/// - `.port(p)` (source or destination), `.src_port(p)`, `.dst_port(p)`:
///   TCP and UDP ports (TCP or UDP when no protocol is given); only the
///   first fragment of a fragmented packet carries them, so only it
///   matches;
/// - `.to(..)`, `.from(..)`: the destination or source address, in an
///   address (`IpAddr`, `Ipv4Addr`, `Ipv6Addr`) or a subnet
///   (`"10.0.0.0/8"`, `"2001:db8::/32"`; an address as text too).
///
/// Selectors chained on one `Traffic` must all hold. A link's own upkeep
/// (ARP, IPv6 neighbour and router discovery, MLD, IGMP) is never
/// selected.
///
/// A combination that makes no sense (a port on ICMP, an IPv4 address on
/// IPv6 traffic, `ipv4().and(ipv6())`, two different ports of one kind)
/// is an [`InvalidInput`](std::io::ErrorKind::InvalidInput) error naming it
/// where the `Traffic` is used.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use = "a Traffic selects nothing until it is given to `Impairment::only` or a `Firewall`"]
pub struct Traffic {
    /// The packets matched are those any alternative matches; never empty.
    alternatives: Vec<Match>,
    /// The first bad combination, reported where the selector is used.
    error: Option<String>,
}

/// Packets that every given field matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Match {
    pub family: Option<Family>,
    pub protocol: Option<Protocol>,
    /// Either end's port.
    pub port: Option<u16>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// The destination's and the source's subnet.
    pub to: Option<Subnet>,
    pub from: Option<Subnet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    /// The selector's name: `ipv4`, `ipv6`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    /// ICMP over IPv4, ICMPv6 over IPv6.
    Icmp,
}

impl Protocol {
    /// The IP protocol number, in `family`.
    pub(crate) fn number(self, family: Family) -> u8 {
        match (self, family) {
            (Protocol::Tcp, _) => 6,
            (Protocol::Udp, _) => 17,
            (Protocol::Icmp, Family::V4) => 1,
            (Protocol::Icmp, Family::V6) => 58,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// An address range: a network address (no bits set past the prefix) and
/// its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Subnet {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    pub(crate) fn family(&self) -> Family {
        match self.network {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn width(&self) -> u8 {
        match self.network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// The network's bits, and the mask of its prefix, as 128-bit numbers
    /// (IPv4 in the low 32 bits).
    pub(crate) fn bits_and_mask(&self) -> (u128, u128) {
        let bits = match self.network {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let width = u32::from(self.width());
        let host = width - u32::from(self.prefix);
        let all = if width == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        let mask = all & !(1u128.checked_shl(host).map_or(u128::MAX, |b| b - 1));
        (bits, mask)
    }

    /// Whether `address` is in the subnet.
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        let bits = match (self.network, address) {
            (IpAddr::V4(_), IpAddr::V4(a)) => u128::from(u32::from(a)),
            (IpAddr::V6(_), IpAddr::V6(a)) => u128::from(a),
            _ => return false,
        };
        let (network, mask) = self.bits_and_mask();
        bits & mask == network
    }

    /// The smaller of two subnets when one holds the other.
    fn intersect(self, other: Subnet) -> Option<Subnet> {
        if self.family() != other.family() {
            return None;
        }
        let (wide, narrow) = if self.prefix <= other.prefix {
            (self, other)
        } else {
            (other, self)
        };
        wide.contains(narrow.network).then_some(narrow)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == self.width() {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An address or a subnet, for [`Traffic::to`] and [`Traffic::from`]: an
/// `IpAddr`, `Ipv4Addr` or `Ipv6Addr`, or text (`"10.0.0.0/8"`,
/// `"2001:db8::/32"`, `"10.0.0.1"`).
pub trait IntoSubnet: sealed::Sealed {
    /// The network address and prefix length, or why the text is not a
    /// subnet.
    #[doc(hidden)]
    fn into_subnet(self) -> Result<(IpAddr, u8), String>;
}

fn host(address: IpAddr) -> (IpAddr, u8) {
    (address, if address.is_ipv4() { 32 } else { 128 })
}

impl sealed::Sealed for IpAddr {}
impl IntoSubnet for IpAddr {
    fn into_subnet(self) -> Result<(IpAddr, u8), String> {
        Ok(host(self))
    }
}

impl sealed::Sealed for Ipv4Addr {}
impl IntoSubnet for Ipv4Addr {
    fn into_subnet(self) -> Result<(IpAddr, u8), String> {
        Ok(host(IpAddr::V4(self)))
    }
}

impl sealed::Sealed for Ipv6Addr {}
impl IntoSubnet for Ipv6Addr {
    fn into_subnet(self) -> Result<(IpAddr, u8), String> {
        Ok(host(IpAddr::V6(self)))
    }
}

impl sealed::Sealed for &str {}
impl IntoSubnet for &str {
    fn into_subnet(self) -> Result<(IpAddr, u8), String> {
        parse_subnet(self)
    }
}

impl sealed::Sealed for String {}
impl IntoSubnet for String {
    fn into_subnet(self) -> Result<(IpAddr, u8), String> {
        parse_subnet(&self)
    }
}

fn parse_subnet(text: &str) -> Result<(IpAddr, u8), String> {
    let usage = || {
        format!(
            "cannot parse {text:?} as an address or a subnet: write \"10.0.0.1\", \
             \"10.0.0.0/8\" or \"2001:db8::/32\""
        )
    };
    let text = text.trim();
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().map_err(|_| usage())?;
    let (network, prefix_length) = host(address);
    let mut subnet = Subnet {
        network,
        prefix: prefix_length,
    };
    if let Some(prefix) = prefix {
        let prefix: u8 = prefix.parse().map_err(|_| usage())?;
        if prefix > subnet.width() {
            return Err(format!(
                "{text:?} has a prefix longer than its {} bits",
                subnet.width()
            ));
        }
        subnet.prefix = prefix;
        let (bits, mask) = subnet.bits_and_mask();
        if bits & !mask != 0 {
            let network = match address {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((bits & mask) as u32)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits & mask)),
            };
            return Err(format!(
                "subnet {text:?} has bits set past its prefix: write {network}/{prefix}"
            ));
        }
    }
    Ok((subnet.network, subnet.prefix))
}

impl Traffic {
    fn one(m: Match) -> Traffic {
        Traffic {
            alternatives: vec![m],
            error: None,
        }
    }

    /// IPv4 packets.
    pub fn ipv4() -> Traffic {
        Traffic::one(Match {
            family: Some(Family::V4),
            ..Match::default()
        })
    }

    /// IPv6 packets.
    pub fn ipv6() -> Traffic {
        Traffic::one(Match {
            family: Some(Family::V6),
            ..Match::default()
        })
    }

    /// TCP segments, over IPv4 and IPv6.
    pub fn tcp() -> Traffic {
        Traffic::one(Match {
            protocol: Some(Protocol::Tcp),
            ..Match::default()
        })
    }

    /// UDP datagrams, over IPv4 and IPv6.
    pub fn udp() -> Traffic {
        Traffic::one(Match {
            protocol: Some(Protocol::Udp),
            ..Match::default()
        })
    }

    /// ICMP over IPv4 and ICMPv6 over IPv6 (but never the neighbour and
    /// router discovery or multicast listener messages a link sends on its
    /// own).
    pub fn icmp() -> Traffic {
        Traffic::one(Match {
            protocol: Some(Protocol::Icmp),
            ..Match::default()
        })
    }

    /// Only packets to or from TCP or UDP port `port` (either end).
    pub fn port(self, port: u16) -> Traffic {
        self.narrow(|m| set_port(&mut m.port, port, "port"))
    }

    /// Only packets from TCP or UDP port `port`.
    pub fn src_port(self, port: u16) -> Traffic {
        self.narrow(|m| set_port(&mut m.src_port, port, "src_port"))
    }

    /// Only packets to TCP or UDP port `port`.
    pub fn dst_port(self, port: u16) -> Traffic {
        self.narrow(|m| set_port(&mut m.dst_port, port, "dst_port"))
    }

    /// Only packets to this address or subnet (an `IpAddr`, or text:
    /// `"10.0.0.0/8"`); its family is the traffic's.
    pub fn to(self, destination: impl IntoSubnet) -> Traffic {
        let subnet = destination.into_subnet();
        self.narrow(|m| set_subnet(m, |m| &mut m.to, subnet.clone(), "to"))
    }

    /// Only packets from this address or subnet (an `IpAddr`, or text:
    /// `"10.0.0.0/8"`); its family is the traffic's.
    pub fn from(self, source: impl IntoSubnet) -> Traffic {
        let subnet = source.into_subnet();
        self.narrow(|m| set_subnet(m, |m| &mut m.from, subnet.clone(), "from"))
    }

    /// Packets that both select: `Traffic::udp().and(Traffic::ipv6())` is
    /// UDP over IPv6.
    pub fn and(self, other: Traffic) -> Traffic {
        let error = self.error.clone().or_else(|| other.error.clone());
        let mut alternatives = Vec::new();
        let mut first_conflict = None;
        for a in &self.alternatives {
            for b in &other.alternatives {
                match merge(*a, *b) {
                    Ok(m) => {
                        if !alternatives.contains(&m) {
                            alternatives.push(m);
                        }
                    }
                    Err(why) => {
                        first_conflict.get_or_insert(why);
                    }
                }
            }
        }
        let error = error.or_else(|| {
            alternatives.is_empty().then(|| {
                format!(
                    "({self}).and({other}) selects nothing: {}",
                    first_conflict.unwrap_or_default()
                )
            })
        });
        if alternatives.is_empty() {
            alternatives = self.alternatives;
        }
        Traffic {
            alternatives,
            error,
        }
        .bounded()
    }

    /// Packets that either selects: `Traffic::udp().port(53).or(Traffic::tcp().port(53))`
    /// is DNS over UDP and TCP.
    #[allow(clippy::should_implement_trait)]
    pub fn or(mut self, other: Traffic) -> Traffic {
        self.error = self.error.or(other.error);
        for m in other.alternatives {
            if !self.alternatives.contains(&m) {
                self.alternatives.push(m);
            }
        }
        self.bounded()
    }

    /// Applies `change` to every alternative; the first error sticks.
    fn narrow(mut self, change: impl Fn(&mut Match) -> Result<(), String>) -> Traffic {
        for m in &mut self.alternatives {
            let changed = change(m).and_then(|()| merge(*m, Match::default()));
            match changed {
                Ok(checked) => *m = checked,
                Err(why) => {
                    self.error.get_or_insert(why);
                }
            }
        }
        self
    }

    fn bounded(mut self) -> Traffic {
        if self.alternatives.len() > MAX_ALTERNATIVES && self.error.is_none() {
            self.error = Some(format!(
                "a Traffic of {} alternatives is too large: at most {MAX_ALTERNATIVES}",
                self.alternatives.len()
            ));
        }
        self
    }

    /// The alternatives, or the first bad combination.
    pub(crate) fn check(&self) -> Result<&[Match], String> {
        match &self.error {
            Some(why) => Err(why.clone()),
            None => Ok(&self.alternatives),
        }
    }
}

fn set_port(slot: &mut Option<u16>, port: u16, name: &str) -> Result<(), String> {
    match *slot {
        Some(p) if p != port => Err(format!(
            "{name}({port}) after {name}({p}): a Traffic has one {name}; for either, write \
             Traffic::udp().{name}({p}).or(Traffic::udp().{name}({port}))"
        )),
        _ => {
            *slot = Some(port);
            Ok(())
        }
    }
}

fn set_subnet(
    m: &mut Match,
    slot: fn(&mut Match) -> &mut Option<Subnet>,
    subnet: Result<(IpAddr, u8), String>,
    name: &str,
) -> Result<(), String> {
    let (network, prefix) = subnet.map_err(|why| format!("{name}(..): {why}"))?;
    let subnet = Subnet { network, prefix };
    if let Some(family) = m.family.filter(|f| *f != subnet.family()) {
        let family = family.name();
        return Err(format!(
            "{name}({subnet}): {subnet} is not an {family} address"
        ));
    }
    let mut wanted = Match {
        family: Some(subnet.family()),
        ..Match::default()
    };
    *slot(&mut wanted) = Some(subnet);
    *m = merge(*m, wanted).map_err(|why| format!("{name}({subnet}): {why}"))?;
    Ok(())
}

/// What both `a` and `b` match, or why nothing does.
fn merge(a: Match, b: Match) -> Result<Match, String> {
    fn same<T: PartialEq + Copy>(
        a: Option<T>,
        b: Option<T>,
        show: impl Fn(T) -> String,
    ) -> Result<Option<T>, String> {
        match (a, b) {
            (Some(x), Some(y)) if x != y => Err(format!("{} and {} contradict", show(x), show(y))),
            (x, y) => Ok(x.or(y)),
        }
    }
    let subnet = |x: Option<Subnet>, y: Option<Subnet>, name: &str| match (x, y) {
        (Some(x), Some(y)) => x
            .intersect(y)
            .map(Some)
            .ok_or_else(|| format!("{name} {x} and {name} {y} contradict: no address is in both")),
        (x, y) => Ok(x.or(y)),
    };
    let m = Match {
        family: same(a.family, b.family, |f| f.name().to_owned())?,
        protocol: same(a.protocol, b.protocol, |p| p.name().to_owned())?,
        port: same(a.port, b.port, |p| format!("port {p}"))?,
        src_port: same(a.src_port, b.src_port, |p| format!("src_port {p}"))?,
        dst_port: same(a.dst_port, b.dst_port, |p| format!("dst_port {p}"))?,
        to: subnet(a.to, b.to, "to")?,
        from: subnet(a.from, b.from, "from")?,
    };
    for subnet in [m.to, m.from].into_iter().flatten() {
        if m.family.is_some_and(|f| f != subnet.family()) {
            return Err(format!(
                "{subnet} is not an {} address",
                m.family.expect("checked").name()
            ));
        }
    }
    if let (Some(to), Some(from)) = (m.to, m.from) {
        if to.family() != from.family() {
            return Err(format!(
                "from {from} to {to}: the two addresses are of different families"
            ));
        }
    }
    let family = m.family.or(m.to.map(|s| s.family()));
    let has_port = m.port.or(m.src_port).or(m.dst_port);
    if let (Some(Protocol::Icmp), Some(port)) = (m.protocol, has_port) {
        return Err(format!(
            "port {port} on ICMP: ICMP has no ports (ports are TCP's and UDP's)"
        ));
    }
    Ok(Match { family, ..m })
}

impl Match {
    /// Whether the alternative needs TCP's or UDP's ports.
    pub(crate) fn needs_ports(&self) -> bool {
        self.port.is_some() || self.src_port.is_some() || self.dst_port.is_some()
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        let implied = self.to.or(self.from).map(|s| s.family());
        match self.family {
            Some(family) if Some(family) != implied => words.push(family.name().into()),
            _ => {}
        }
        if let Some(p) = self.protocol {
            words.push(p.name().into());
        }
        if let Some(p) = self.port {
            words.push(format!("port {p}"));
        }
        if let Some(p) = self.src_port {
            words.push(format!("src_port {p}"));
        }
        if let Some(p) = self.dst_port {
            words.push(format!("dst_port {p}"));
        }
        if let Some(s) = self.from {
            words.push(format!("from {s}"));
        }
        if let Some(s) = self.to {
            words.push(format!("to {s}"));
        }
        if words.is_empty() {
            words.push("ip".into());
        }
        f.write_str(&words.join(" "))
    }
}

/// In words: `udp port 53`, `ipv6`, `tcp dst_port 443 to 10.0.0.0/8`,
/// alternatives joined by `or`.
impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(traffic: Traffic, naming: &str) {
        let why = traffic.check().unwrap_err();
        assert!(why.contains(naming), "{why:?} should name {naming:?}");
    }

    #[test]
    fn bad_combinations_are_named() {
        refused(Traffic::icmp().port(53), "port 53 on ICMP");
        refused(Traffic::icmp().dst_port(7), "ICMP has no ports");
        refused(
            Traffic::ipv4().port(53).and(Traffic::icmp()),
            "port 53 on ICMP",
        );
        refused(
            Traffic::udp().port(53).and(Traffic::icmp()),
            "udp and icmp contradict",
        );
        refused(
            Traffic::ipv4().and(Traffic::ipv6()),
            "ipv4 and ipv6 contradict",
        );
        refused(Traffic::tcp().and(Traffic::udp()), "tcp and udp contradict");
        refused(
            Traffic::ipv6().to("10.0.0.1"),
            "10.0.0.1 is not an ipv6 address",
        );
        refused(
            Traffic::ipv4().to(Ipv6Addr::LOCALHOST),
            "::1 is not an ipv4 address",
        );
        refused(
            Traffic::udp().to("10.0.0.1").from("::1"),
            "from(::1): ::1 is not an ipv4 address",
        );
        refused(
            Traffic::udp().port(80).port(443),
            "port(443) after port(80)",
        );
        refused(Traffic::udp().to("10.0.0.1/8"), "write 10.0.0.0/8");
        refused(Traffic::udp().to("10.0.0.0/33"), "longer than its 32 bits");
        refused(Traffic::udp().from("nonsense"), "cannot parse \"nonsense\"");
        refused(
            Traffic::ipv4()
                .to("10.0.0.0/8")
                .and(Traffic::ipv4().to("192.168.0.0/16")),
            "no address is in both",
        );
        // The first error sticks, whatever comes after.
        refused(Traffic::icmp().port(1).or(Traffic::udp()), "on ICMP");
        let mut many = Traffic::udp().port(1);
        for p in 2..=65 {
            many = many.or(Traffic::udp().port(p));
        }
        refused(many, "at most 64");
    }

    #[test]
    fn selectors_combine() {
        let quic = Traffic::udp().and(Traffic::ipv6()).port(443);
        assert_eq!(
            quic.check().unwrap(),
            [Match {
                family: Some(Family::V6),
                protocol: Some(Protocol::Udp),
                port: Some(443),
                ..Match::default()
            }]
        );
        assert_eq!(quic.to_string(), "ipv6 udp port 443");
        let dns = Traffic::udp().port(53).or(Traffic::tcp().port(53));
        assert_eq!(dns.check().unwrap().len(), 2);
        assert_eq!(dns.to_string(), "udp port 53 or tcp port 53");
        // and() distributes over or().
        let both = dns.clone().and(Traffic::ipv4().or(Traffic::ipv6()));
        assert_eq!(both.check().unwrap().len(), 4);
        // An address implies its family, and narrows a subnet.
        let lan = Traffic::tcp()
            .to("192.168.1.0/24")
            .and(Traffic::ipv4().to(Ipv4Addr::new(192, 168, 1, 7)));
        let m = lan.check().unwrap()[0];
        assert_eq!(m.family, Some(Family::V4));
        assert_eq!(m.to.unwrap().prefix, 32);
        assert_eq!(lan.to_string(), "tcp to 192.168.1.7");
        assert_eq!(
            Traffic::ipv6().from("2001:db8::/32").to_string(),
            "from 2001:db8::/32"
        );
        // The same port twice is the same selector.
        assert!(Traffic::udp().port(53).port(53).check().is_ok());
        assert_eq!(Traffic::udp().or(Traffic::udp()).check().unwrap().len(), 1);
    }

    #[test]
    fn subnets_hold_their_addresses() {
        let subnet = |text: &str| {
            let (network, prefix) = text.into_subnet().unwrap();
            Subnet { network, prefix }
        };
        let s = subnet("10.1.0.0/16");
        assert!(s.contains("10.1.200.3".parse().unwrap()));
        assert!(!s.contains("10.2.0.1".parse().unwrap()));
        assert!(!s.contains("::1".parse().unwrap()));
        let s = subnet("2001:db8::/32");
        assert!(s.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!s.contains("2001:db9::1".parse().unwrap()));
        let all = subnet("0.0.0.0/0");
        assert!(all.contains("255.1.2.3".parse().unwrap()));
        assert_eq!(all.bits_and_mask(), (0, 0));
        let one = subnet("::1");
        assert_eq!(one.bits_and_mask(), (1, u128::MAX));
    }
}
