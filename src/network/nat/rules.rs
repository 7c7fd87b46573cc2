//! The nf_tables ruleset of one link's NAT, in the router's namespace.
//!
//! Each link a router translates on has a table of its own, `inet
//! netns_test_<interface>`, so that setting one link's NAT again replaces
//! exactly its rules in one transaction (flush its chains, add the new
//! rules), leaving other links' tables alone. Its sets hold what the NAT
//! has learnt, and outlive a change of rules: what an inside endpoint
//! sent, and which public ports are taken.
//!
//! A per-link firewall fits beside it: a chain of its own in the same table
//! on the forward hook at priority `filter`, after `filter_in` (`filter -
//! 10`), so the NAT's filtering happens first (a drop is final; an accept
//! in one base chain still lets the next one judge), replaced by flushing
//! that chain alone.
//!
//! ```text
//! prerouting  nat    dstnat     iif wan: port forwards, then inbound to a
//!                               mapping: DNAT to its owner (EIF, ADF; and
//!                               from inside when hairpinning)
//! postrouting nat    srcnat     oif wan (and hairpinned): choose_port
//! choose_port                   the mapping's port: the endpoint's (EIM) or
//!                               the endpoint and address's (ADM), else the
//!                               inside port when free, else a second choice
//!                               when free, else a random one
//! remember    filter srcnat + 1 every outgoing packet refreshes its
//!                               mapping in the sets; hairpin filtering
//! filter_in   filter filter - 10  iif wan: replies, forwarded ports and
//!                               what the filtering lets in pass; the rest
//!                               is dropped, IPv4 and IPv6
//! input       filter filter - 10  iif wan: new TCP and UDP to the router
//!                               itself dropped, so that nothing unsolicited
//!                               is answered or takes a port
//! ```
//!
//! A flow the NAT maps carries a conntrack mark: the link (its interface
//! index, bits 16-31), the mapping generation (bits 4-15, one more after
//! each rebind), and whether it went out (bit 0; bit 1 when its port was
//! drawn at random) or came in to a mapping (bit 2). [`super::Node::rebind`]
//! deletes the conntrack entries of the link's current generation by mark.

use crate::nat::{NatFiltering, NatMapping, NatSettings};
use crate::os::netlink::Message;
use crate::os::nftables::{self, Direction, Hook, Lookup, REG, Rule, Set};
use nix::libc;
use std::net::Ipv4Addr;

/// The conntrack mark bits (see the module documentation).
const OUT: u32 = 0x1;
const RANDOM: u32 = 0x2;
const IN: u32 = 0x4;
const GENERATION_MASK: u32 = 0xfff0;
const LINK_MASK: u32 = 0xffff_0000;

/// `nft` data types, for what `nft list` shows of the sets.
const PROTO: u32 = 12;
const SERVICE: u32 = 13;
const IPV4: u32 = 7;
const IPV6: u32 = 8;

/// The sets every table has (see `remember`).
const USED: Set = set("used", &[PROTO, SERVICE], None);
const EIM_OUT: Set = set("eim_out", &[PROTO, IPV4, SERVICE], Some(&[IPV4, SERVICE]));
const ADM_OUT: Set = set(
    "adm_out",
    &[PROTO, IPV4, SERVICE, IPV4],
    Some(&[IPV4, SERVICE]),
);
const OWNER: Set = set("owner", &[PROTO, SERVICE], Some(&[IPV4, SERVICE]));
/// Each public port with its owner, as one key (see [`claim`]).
const OWNED: Set = set("owned", &[PROTO, SERVICE, IPV4, SERVICE], None);
const SEEN4: Set = set("seen4", &[PROTO, SERVICE, IPV4], None);
const SEEN4P: Set = set("seen4p", &[PROTO, SERVICE, IPV4, SERVICE], None);
const OUT6: Set = set("out6", &[PROTO, IPV6, SERVICE], None);
const SEEN6: Set = set("seen6", &[PROTO, IPV6, SERVICE, IPV6], None);
const SETS: [Set; 9] = [
    USED, EIM_OUT, ADM_OUT, OWNER, OWNED, SEEN4, SEEN4P, OUT6, SEEN6,
];
/// What a rebind forgets: every IPv4 mapping.
const MAPPINGS: [Set; 6] = [EIM_OUT, ADM_OUT, OWNER, OWNED, SEEN4, SEEN4P];

/// A set of `key` fields (and a map's `data` fields), each padded to 4 bytes.
const fn set(name: &'static str, key: &[u32], data: Option<&[u32]>) -> Set {
    const fn describe(fields: &[u32]) -> (u32, u32) {
        let (mut len, mut kind, mut i) = (0, 0, 0);
        while i < fields.len() {
            len += if fields[i] == IPV6 { 16 } else { 4 };
            kind = (kind << 6) | fields[i];
            i += 1;
        }
        (len, kind)
    }
    let (key_len, key_type) = describe(key);
    Set {
        name,
        key_len,
        key_type,
        data: match data {
            Some(fields) => Some(describe(fields)),
            None => None,
        },
    }
}

const PREROUTING: &str = "prerouting";
const FORWARDS: &str = "forwards";
const POSTROUTING: &str = "postrouting";
const CHOOSE_PORT: &str = "choose_port";
const REMEMBER: &str = "remember";
const REMEMBER_TCP: &str = "remember_tcp";
const REMEMBER_UDP: &str = "remember_udp";
const HAIRPIN: &str = "hairpin";
const FILTER_IN: &str = "filter_in";
const INPUT: &str = "input";

/// The chains whose rules the NAT's settings make (all but `forwards`).
const RULE_CHAINS: [&str; 9] = [
    PREROUTING,
    POSTROUTING,
    CHOOSE_PORT,
    REMEMBER,
    REMEMBER_TCP,
    REMEMBER_UDP,
    HAIRPIN,
    FILTER_IN,
    INPUT,
];

const PROTOCOLS: [(u8, &str); 2] = [
    (libc::IPPROTO_TCP as u8, "tcp"),
    (libc::IPPROTO_UDP as u8, "udp"),
];

/// What a link's NAT does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Nothing yet (a port forward made the table).
    None,
    /// Linux's `masquerade`, IPv4 and IPv6, with conntrack's filtering.
    Masquerade,
    /// A [`Nat`](crate::Nat).
    Nat(NatSettings),
}

/// One link of a router, as its NAT sees it.
pub(super) struct Link<'a> {
    /// The router's interface on the link, and its index.
    pub(super) interface: &'a str,
    pub(super) index: i32,
    /// The router's address on the link: the mappings' public address.
    pub(super) public: Ipv4Addr,
    /// Counts rebinds.
    pub(super) generation: u32,
}

impl Link<'_> {
    pub(super) fn table(&self) -> String {
        table(self.interface)
    }

    /// The mark of the link's flows: its index, in bits 16-31.
    fn link_mark(&self) -> u32 {
        (self.index as u32) << 16
    }

    /// The mark of the current generation's outgoing flows.
    fn out_mark(&self) -> u32 {
        self.link_mark() | ((self.generation << 4) & GENERATION_MASK) | OUT
    }

    /// What [`flush_conntrack`](nftables::flush_conntrack) takes to delete
    /// the current generation's flows: mark and mask.
    pub(super) fn generation_mark(&self) -> (u32, u32) {
        (
            self.link_mark() | ((self.generation << 4) & GENERATION_MASK),
            LINK_MASK | GENERATION_MASK,
        )
    }

    /// The interface name as the kernel compares it.
    fn name(&self) -> [u8; libc::IFNAMSIZ] {
        interface_name(self.interface)
    }
}

/// An interface name as the kernel compares it: NUL-padded to 16 bytes.
pub(in crate::network) fn interface_name(interface: &str) -> [u8; libc::IFNAMSIZ] {
    let mut name = [0u8; libc::IFNAMSIZ];
    name[..interface.len()].copy_from_slice(interface.as_bytes());
    name
}

/// The table of the link whose router interface is `interface`: its NAT's
/// and its firewall's.
pub(in crate::network) fn table(interface: &str) -> String {
    format!("netns_test_{interface}")
}

/// The table, its chains and sets, made when missing (kept when there).
pub(super) fn create(link: &Link) -> Vec<Message> {
    let table = link.table();
    let hook = |kind, number, priority| {
        Some(Hook {
            kind,
            number,
            priority,
        })
    };
    let mut messages = vec![nftables::add_table(&table)];
    for (chain, hook) in [
        (
            PREROUTING,
            hook("nat", libc::NF_INET_PRE_ROUTING, libc::NF_IP_PRI_NAT_DST),
        ),
        (
            POSTROUTING,
            hook("nat", libc::NF_INET_POST_ROUTING, libc::NF_IP_PRI_NAT_SRC),
        ),
        (
            REMEMBER,
            hook(
                "filter",
                libc::NF_INET_POST_ROUTING,
                libc::NF_IP_PRI_NAT_SRC + 1,
            ),
        ),
        (
            FILTER_IN,
            hook("filter", libc::NF_INET_FORWARD, libc::NF_IP_PRI_FILTER - 10),
        ),
        (
            INPUT,
            hook(
                "filter",
                libc::NF_INET_LOCAL_IN,
                libc::NF_IP_PRI_FILTER - 10,
            ),
        ),
        (FORWARDS, None),
        (CHOOSE_PORT, None),
        (REMEMBER_TCP, None),
        (REMEMBER_UDP, None),
        (HAIRPIN, None),
    ] {
        messages.push(nftables::add_chain(&table, chain, hook));
    }
    for (id, set) in SETS.iter().enumerate() {
        messages.push(nftables::add_set(&table, set, id as u32 + 1));
    }
    messages
}

/// Replaces the rules of every chain but `forwards` with what `mode` makes.
pub(super) fn replace(link: &Link, mode: &Mode) -> Vec<Message> {
    let table = link.table();
    let mut messages: Vec<Message> = RULE_CHAINS
        .iter()
        .map(|chain| nftables::flush_chain(&table, chain))
        .collect();
    let mut rules = Rules {
        table: &table,
        messages: &mut messages,
    };
    let wan = link.name();
    // Port forwards first, whatever the mode.
    rules.add(
        PREROUTING,
        Rule::new()
            .meta(libc::NFT_META_IIFNAME, REG[0])
            .equals(REG[0], &wan)
            .jump(FORWARDS),
        "iifname wan jump forwards",
    );
    match mode {
        Mode::None => {}
        Mode::Masquerade => rules.add(
            POSTROUTING,
            Rule::new()
                .meta(libc::NFT_META_OIFNAME, REG[0])
                .equals(REG[0], &wan)
                .masquerade(),
            "oifname wan masquerade",
        ),
        Mode::Nat(settings) => nat(&mut rules, link, settings),
    }
    messages
}

/// Forgets every IPv4 mapping (the sets that hold them).
pub(super) fn forget_mappings(link: &Link) -> Vec<Message> {
    let table = link.table();
    MAPPINGS
        .iter()
        .map(|set| nftables::flush_set(&table, set.name))
        .collect()
}

/// A port forward: TCP and UDP arriving for `port` go to `to` (IPv4 or
/// IPv6), and the NAT never maps `port` for anything else.
pub(super) fn forward_port(
    link: &Link,
    port: u16,
    targets: &[std::net::SocketAddr],
) -> Vec<Message> {
    let table = link.table();
    let mut messages = Vec::new();
    let mut rules = Rules {
        table: &table,
        messages: &mut messages,
    };
    for to in targets {
        let (family, address) = match to.ip() {
            std::net::IpAddr::V4(a) => (libc::NFPROTO_IPV4, a.octets().to_vec()),
            std::net::IpAddr::V6(a) => (libc::NFPROTO_IPV6, a.octets().to_vec()),
        };
        for (protocol, name) in PROTOCOLS {
            let rule = Rule::new()
                .meta(libc::NFT_META_NFPROTO, REG[0])
                .equals(REG[0], &[family as u8])
                .meta(libc::NFT_META_L4PROTO, REG[0])
                .equals(REG[0], &[protocol])
                .payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG[0])
                .equals(REG[0], &port.to_be_bytes())
                .immediate(REG[0], &address)
                .immediate(REG[4], &to.port().to_be_bytes())
                .dnat(family, REG[0], REG[4]);
            rules.add(
                FORWARDS,
                rule,
                &format!("meta l4proto {name} th dport {port} dnat to {to}"),
            );
        }
    }
    let keys: Vec<Vec<u8>> = PROTOCOLS
        .iter()
        .map(|(protocol, _)| key(&[&[*protocol], &port.to_be_bytes()]))
        .collect();
    messages.push(nftables::add_elements(&table, USED.name, &keys));
    messages
}

/// A set key of fields, each padded to 4 bytes.
fn key(fields: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::new();
    for field in fields {
        key.extend_from_slice(field);
        key.resize(key.len().next_multiple_of(4), 0);
    }
    key
}

struct Rules<'a> {
    table: &'a str,
    messages: &'a mut Vec<Message>,
}

impl Rules<'_> {
    fn add(&mut self, chain: &str, rule: Rule, text: &str) {
        self.messages
            .push(nftables::add_rule(self.table, chain, rule, text));
    }
}

/// A field of a set key, loaded into registers.
#[derive(Clone, Copy)]
enum Field {
    /// `meta l4proto`.
    Protocol,
    /// The packet's ports and addresses, as they are at this hook.
    SourcePort,
    DestinationPort,
    Source4,
    Source6,
    Destination6,
    /// The flow's, from conntrack.
    CtSource4(Direction),
    CtDestination4(Direction),
    CtSourcePort(Direction),
    CtDestinationPort(Direction),
}

impl Field {
    fn registers(self) -> usize {
        match self {
            Field::Source6 | Field::Destination6 => 4,
            _ => 1,
        }
    }

    fn load(self, rule: Rule, register: u32) -> Rule {
        match self {
            Field::Protocol => rule.meta(libc::NFT_META_L4PROTO, register),
            Field::SourcePort => rule.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, register),
            Field::DestinationPort => {
                rule.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, register)
            }
            Field::Source4 => rule.payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 12, 4, register),
            Field::Source6 => rule.payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 8, 16, register),
            Field::Destination6 => rule.payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 24, 16, register),
            Field::CtSource4(d) => rule.ct(libc::NFT_CT_SRC_IP, Some(d), register),
            Field::CtDestination4(d) => rule.ct(libc::NFT_CT_DST_IP, Some(d), register),
            Field::CtSourcePort(d) => rule.ct(libc::NFT_CT_PROTO_SRC, Some(d), register),
            Field::CtDestinationPort(d) => rule.ct(libc::NFT_CT_PROTO_DST, Some(d), register),
        }
    }
}

/// Loads `fields` into the registers from `REG[first]` on; returns the
/// rule and the first free register index.
fn load(mut rule: Rule, first: usize, fields: &[Field]) -> (Rule, usize) {
    let mut at = first;
    for field in fields {
        rule = field.load(rule, REG[at]);
        at += field.registers();
    }
    (rule, at)
}

/// `ct state` has any of `states`.
pub(in crate::network) fn ct_state(rule: Rule, states: u32) -> Rule {
    rule.ct(libc::NFT_CT_STATE, None, REG[0])
        .bitwise(REG[0], &states.to_ne_bytes(), &[0; 4])
        .differs(REG[0], &[0; 4])
}

/// The flow's first packet: its conntrack entry is not confirmed yet (a
/// later packet may still be in state new, before any reply).
fn unconfirmed(rule: Rule) -> Rule {
    rule.ct(libc::NFT_CT_STATUS, None, REG[0])
        .bitwise(
            REG[0],
            &crate::os::uapi::nft::IPS_CONFIRMED.to_ne_bytes(),
            &[0; 4],
        )
        .equals(REG[0], &[0; 4])
}

/// `ct mark & mask == value`.
fn ct_mark(rule: Rule, mask: u32, value: u32) -> Rule {
    let rule = rule.ct(libc::NFT_CT_MARK, None, REG[0]);
    let rule = if mask == u32::MAX {
        rule
    } else {
        rule.bitwise(REG[0], &mask.to_ne_bytes(), &[0; 4])
    };
    rule.equals(REG[0], &value.to_ne_bytes())
}

fn set_mark(rule: Rule, mark: u32) -> Rule {
    rule.immediate(REG[0], &mark.to_ne_bytes())
        .ct_set(libc::NFT_CT_MARK, REG[0])
}

pub(in crate::network) fn nfproto(rule: Rule, family: libc::c_int) -> Rule {
    rule.meta(libc::NFT_META_NFPROTO, REG[0])
        .equals(REG[0], &[family as u8])
}

pub(in crate::network) fn protocol(rule: Rule, protocol: u8) -> Rule {
    rule.meta(libc::NFT_META_L4PROTO, REG[0])
        .equals(REG[0], &[protocol])
}

pub(in crate::network) fn interface(
    rule: Rule,
    key: libc::c_int,
    name: &[u8],
    equal: bool,
) -> Rule {
    let rule = rule.meta(key, REG[0]);
    if equal {
        rule.equals(REG[0], name)
    } else {
        rule.differs(REG[0], name)
    }
}

/// A packet of a hairpinned flow: in from inside, back out inside, sent to
/// the public address.
fn hairpinned(rule: Rule, wan: &[u8], public: Ipv4Addr) -> Rule {
    let rule = interface(rule, libc::NFT_META_IIFNAME, wan, false);
    let rule = interface(rule, libc::NFT_META_OIFNAME, wan, false);
    nfproto(rule, libc::NFPROTO_IPV4)
        .ct(libc::NFT_CT_DST_IP, Some(Direction::Original), REG[0])
        .equals(REG[0], &public.octets())
}

/// Claims the public port in `REG[1]` (of the protocol in `REG[0]`) for
/// the inside endpoint `endpoint` (address and port, loaded into `REG[2]`
/// and `REG[3]`); the rule goes on when the claim holds (`Lookup::In`),
/// or when it does not (`Lookup::NotIn`).
///
/// `@owner` maps each public port to its endpoint. An `update` of a map
/// adds the element only when the key is missing, atomically, and never
/// changes the data of one that is there: of two endpoints that claim a
/// port at once, exactly one is its owner. nf_tables cannot compare two
/// registers, so the owner read back is written as one key (port and
/// owner) into `@owned`, and the claim holds when (port, endpoint) is in
/// `@owned`.
fn claim(rule: Rule, endpoint: [Field; 2], ms: u64, holds: Lookup) -> Rule {
    let (rule, _) = load(rule, 2, &endpoint);
    let rule = rule
        .update(OWNER.name, REG[0], Some(REG[2]), ms)
        .lookup(OWNER.name, REG[0], Some(REG[2]), Lookup::In)
        .update(OWNED.name, REG[0], None, ms);
    let (rule, _) = load(rule, 2, &endpoint);
    rule.lookup(OWNED.name, REG[0], None, holds)
}

/// The second choice of a port when the inside port is taken (or not to
/// be kept): the inside port with some bits flipped, never the inside port
/// itself nor below 1024. Which bits depends on the public address, so
/// that two NATs differ.
fn second_choice(public: Ipv4Addr) -> ([u8; 2], [u8; 2]) {
    let [.., c, d] = public.octets();
    let spread = u16::from_be_bytes([c, d]).wrapping_mul(0x9e37);
    // Bit 10 is forced on (so >= 1024); at least bit 15 flips as well.
    let flip = 0x8000 | (spread & 0x7bff) | 0x0400;
    ((!0x0400u16).to_be_bytes(), flip.to_be_bytes())
}

fn nat(rules: &mut Rules, link: &Link, settings: &NatSettings) {
    use Direction::{Original, Reply};
    let wan = link.name();
    let public = link.public.octets();
    let out = link.out_mark();
    let inbound = link.link_mark() | ((link.generation << 4) & GENERATION_MASK) | IN;
    let eif = settings.filtering == NatFiltering::EndpointIndependent;
    let adf = settings.filtering == NatFiltering::AddressDependent;
    let apdf = settings.filtering == NatFiltering::AddressAndPortDependent;

    // prerouting: inbound to a mapping goes to its owner (EIF, ADF; from
    // inside too when hairpinning).
    for (proto, name) in PROTOCOLS {
        for (from_wan, wanted) in [(true, !apdf), (false, settings.hairpin)] {
            if !wanted {
                continue;
            }
            let rule = interface(Rule::new(), libc::NFT_META_IIFNAME, &wan, from_wan);
            let rule = nfproto(rule, libc::NFPROTO_IPV4)
                .payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 16, 4, REG[0])
                .equals(REG[0], &public);
            let rule = protocol(rule, proto);
            let (rule, _) = load(rule, 0, &[Field::Protocol, Field::DestinationPort]);
            let rule = rule.lookup(OWNER.name, REG[0], Some(REG[0]), Lookup::In);
            let rule = rule
                .immediate(REG[2], &inbound.to_ne_bytes())
                .ct_set(libc::NFT_CT_MARK, REG[2])
                .nat(libc::NFT_NAT_DNAT, REG[0], Some(REG[1]), None, 0);
            let from = if from_wan {
                "iifname wan"
            } else {
                "iifname != wan"
            };
            rules.add(
                PREROUTING,
                rule,
                &format!("{from} ip daddr public {name} dnat to {name} dport map @owner"),
            );
        }
    }

    // postrouting: what leaves through the link (and what hairpins) gets
    // its mapping's port.
    for (proto, name) in PROTOCOLS {
        let rule = interface(Rule::new(), libc::NFT_META_OIFNAME, &wan, true);
        let rule = nfproto(rule, libc::NFPROTO_IPV4)
            .payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 12, 4, REG[0])
            .differs(REG[0], &public);
        rules.add(
            POSTROUTING,
            protocol(rule, proto).jump(CHOOSE_PORT),
            &format!("oifname wan ip saddr != public {name} jump choose_port"),
        );
        if settings.hairpin {
            rules.add(
                POSTROUTING,
                protocol(hairpinned(Rule::new(), &wan, link.public), proto).jump(CHOOSE_PORT),
                &format!("hairpinned {name} jump choose_port"),
            );
        }
    }
    let rule = interface(Rule::new(), libc::NFT_META_OIFNAME, &wan, true);
    let rule = nfproto(rule, libc::NFPROTO_IPV4)
        .payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 12, 4, REG[0])
        .differs(REG[0], &public);
    rules.add(
        POSTROUTING,
        set_mark(rule, out).masquerade(),
        "oifname wan ip saddr != public (not tcp, udp) masquerade",
    );

    // choose_port
    rules.add(CHOOSE_PORT, set_mark(Rule::new(), out), "ct mark set out");
    let (mapped, set) = match settings.mapping {
        NatMapping::EndpointIndependent => (
            vec![Field::Protocol, Field::Source4, Field::SourcePort],
            Some(EIM_OUT.name),
        ),
        NatMapping::AddressDependent => (
            vec![
                Field::Protocol,
                Field::Source4,
                Field::SourcePort,
                Field::CtDestination4(Original),
            ],
            Some(ADM_OUT.name),
        ),
        NatMapping::AddressAndPortDependent => (Vec::new(), None),
    };
    if let Some(set) = set {
        let (rule, _) = load(Rule::new(), 0, &mapped);
        let rule = rule.lookup(set, REG[0], Some(REG[0]), Lookup::In).nat(
            libc::NFT_NAT_SNAT,
            REG[0],
            Some(REG[1]),
            None,
            crate::os::uapi::nft::NF_NAT_RANGE_PROTO_SPECIFIED,
        );
        rules.add(
            CHOOSE_PORT,
            rule,
            &format!("snat to the endpoint's mapping in @{set}"),
        );
    }
    // The inside port, or a second choice: each only when it is not
    // @used and this endpoint's claim on it holds (two endpoints choosing
    // the same port at once, on two CPUs, see each other's claim).
    let specified = crate::os::uapi::nft::NF_NAT_RANGE_PROTO_SPECIFIED;
    let (mask, flip) = second_choice(link.public);
    for (proto, name) in PROTOCOLS {
        let ms = if name == "tcp" {
            settings.tcp_seconds
        } else {
            settings.udp_seconds
        } * 1000;
        for flipped in [false, true] {
            if !flipped && !settings.port_preservation {
                continue;
            }
            let rule = protocol(Rule::new(), proto);
            let (mut rule, _) = load(rule, 0, &[Field::Protocol, Field::SourcePort]);
            if flipped {
                rule = rule.bitwise(REG[1], &mask, &flip);
            }
            let rule = rule.lookup(USED.name, REG[0], None, Lookup::NotIn);
            let rule = claim(rule, [Field::Source4, Field::SourcePort], ms, Lookup::In)
                .immediate(REG[4], &public)
                .nat(libc::NFT_NAT_SNAT, REG[4], Some(REG[1]), None, specified);
            let port = if flipped {
                "(sport with bits flipped)"
            } else {
                "sport"
            };
            rules.add(
                CHOOSE_PORT,
                rule,
                &format!("{name}: snat to public:{port} when that is not @used and claimed"),
            );
        }
    }
    let rule = set_mark(Rule::new(), out | RANDOM)
        .immediate(REG[0], &public)
        .immediate(REG[1], &1024u16.to_be_bytes())
        .immediate(REG[2], &65535u16.to_be_bytes())
        .nat(
            libc::NFT_NAT_SNAT,
            REG[0],
            Some(REG[1]),
            Some(REG[2]),
            specified | crate::os::uapi::nft::NF_NAT_RANGE_PROTO_RANDOM,
        );
    rules.add(CHOOSE_PORT, rule, "snat to public:1024-65535 random");

    // remember: a random port that another mapping has is given up (the
    // flow's first packet is dropped; its retry draws again).
    let rule = unconfirmed(ct_mark(Rule::new(), u32::MAX, out | RANDOM));
    let (rule, _) = load(rule, 0, &[Field::Protocol, Field::CtDestinationPort(Reply)]);
    rules.add(
        REMEMBER,
        rule.lookup(USED.name, REG[0], None, Lookup::In).drop(),
        "first packet, random port already @used: drop",
    );
    // Outgoing IPv4 of this generation's mappings refreshes them.
    for (proto, name) in PROTOCOLS {
        let rule = interface(Rule::new(), libc::NFT_META_OIFNAME, &wan, true);
        let rule = nfproto(rule, libc::NFPROTO_IPV4)
            .ct(libc::NFT_CT_DIRECTION, None, REG[0])
            .equals(REG[0], &[Original as u8]);
        let rule = ct_mark(rule, LINK_MASK | GENERATION_MASK | OUT, out);
        let chain = if name == "tcp" {
            REMEMBER_TCP
        } else {
            REMEMBER_UDP
        };
        rules.add(
            REMEMBER,
            protocol(rule, proto).jump(chain),
            &format!("oifname wan ct direction original, ours: {name} jump {chain}"),
        );
    }
    if settings.hairpin {
        rules.add(
            REMEMBER,
            hairpinned(Rule::new(), &wan, link.public).jump(HAIRPIN),
            "hairpinned jump hairpin",
        );
    }
    // IPv6 is not translated: remember what the filtering needs.
    if !apdf {
        for (proto, name) in PROTOCOLS {
            let seconds = if name == "tcp" {
                settings.tcp_seconds
            } else {
                settings.udp_seconds
            };
            let rule = interface(Rule::new(), libc::NFT_META_OIFNAME, &wan, true);
            let rule = nfproto(rule, libc::NFPROTO_IPV6)
                .ct(libc::NFT_CT_DIRECTION, None, REG[0])
                .equals(REG[0], &[Original as u8]);
            let rule = protocol(rule, proto);
            let (set, fields) = if eif {
                (
                    OUT6,
                    vec![Field::Protocol, Field::Source6, Field::SourcePort],
                )
            } else {
                (
                    SEEN6,
                    vec![
                        Field::Protocol,
                        Field::Source6,
                        Field::SourcePort,
                        Field::Destination6,
                    ],
                )
            };
            let (rule, _) = load(rule, 0, &fields);
            rules.add(
                REMEMBER,
                rule.update(set.name, REG[0], None, seconds * 1000),
                &format!("oifname wan ip6 {name} update @{}", set.name),
            );
        }
    }

    // remember_tcp, remember_udp: the flow's mapping in every set the NAT
    // reads, with the protocol's timeout.
    for (chain, seconds) in [
        (REMEMBER_TCP, settings.tcp_seconds),
        (REMEMBER_UDP, settings.udp_seconds),
    ] {
        let ms = seconds * 1000;
        let proto_port = [Field::Protocol, Field::CtDestinationPort(Reply)];
        let endpoint = [Field::CtSource4(Original), Field::CtSourcePort(Original)];
        // A flow's first packet whose public port another endpoint holds
        // (a random draw, or a port two endpoints chose at once) is
        // dropped before the sets learn anything of it: its retry
        // chooses again. (Conntrack would drop it anyway, when the reply
        // tuple clashes, but only after the sets had mapped the endpoint
        // to a port it can never have.)
        let (rule, _) = load(unconfirmed(Rule::new()), 0, &proto_port);
        rules.add(
            chain,
            claim(rule, endpoint, ms, Lookup::NotIn).drop(),
            "first packet, the public port claimed by another endpoint: drop",
        );
        let (rule, _) = load(Rule::new(), 0, &proto_port);
        rules.add(
            chain,
            rule.update(USED.name, REG[0], None, ms),
            "update @used",
        );
        let public_end = [
            Field::CtDestination4(Reply),
            Field::CtDestinationPort(Reply),
        ];
        let mut map = |set: Set, key: &[Field], data: &[Field]| {
            let (rule, next) = load(Rule::new(), 0, key);
            let (rule, _) = load(rule, next, data);
            rules.add(
                chain,
                rule.update(set.name, REG[0], Some(REG[next]), ms),
                &format!("update @{}", set.name),
            );
        };
        match settings.mapping {
            NatMapping::EndpointIndependent => map(
                EIM_OUT,
                &[Field::Protocol, endpoint[0], endpoint[1]],
                &public_end,
            ),
            NatMapping::AddressDependent => map(
                ADM_OUT,
                &[
                    Field::Protocol,
                    endpoint[0],
                    endpoint[1],
                    Field::CtDestination4(Original),
                ],
                &public_end,
            ),
            NatMapping::AddressAndPortDependent => {}
        }
        map(OWNER, &proto_port, &endpoint);
        let mut remember = |set: Set, key: &[Field]| {
            let (rule, _) = load(Rule::new(), 0, key);
            rules.add(
                chain,
                rule.update(set.name, REG[0], None, ms),
                &format!("update @{}", set.name),
            );
        };
        if adf {
            remember(
                SEEN4,
                &[
                    Field::Protocol,
                    Field::CtDestinationPort(Reply),
                    Field::CtDestination4(Original),
                ],
            );
        }
        if apdf && settings.hairpin {
            remember(
                SEEN4P,
                &[
                    Field::Protocol,
                    Field::CtDestinationPort(Reply),
                    Field::CtDestination4(Original),
                    Field::CtDestinationPort(Original),
                ],
            );
        }
    }

    // hairpin: the sender's mapping is remembered, then the receiver's
    // filtering applies to what reaches it (after SNAT: the source is the
    // sender's public address and port).
    if settings.hairpin {
        for (proto, name) in PROTOCOLS {
            let rule = ct_mark(Rule::new(), LINK_MASK | GENERATION_MASK | OUT, out);
            let chain = if name == "tcp" {
                REMEMBER_TCP
            } else {
                REMEMBER_UDP
            };
            rules.add(
                HAIRPIN,
                protocol(rule, proto).jump(chain),
                &format!("ours: {name} jump {chain}"),
            );
        }
        let rule = Rule::new()
            .ct(libc::NFT_CT_STATUS, None, REG[0])
            .bitwise(
                REG[0],
                &crate::os::uapi::nft::IPS_CONFIRMED.to_ne_bytes(),
                &[0; 4],
            )
            .differs(REG[0], &[0; 4])
            .leave();
        rules.add(HAIRPIN, rule, "ct status confirmed return");
        let receiver = match settings.filtering {
            NatFiltering::EndpointIndependent => None,
            NatFiltering::AddressDependent => Some((
                SEEN4,
                vec![
                    Field::Protocol,
                    Field::CtDestinationPort(Original),
                    Field::Source4,
                ],
            )),
            NatFiltering::AddressAndPortDependent => Some((
                SEEN4P,
                vec![
                    Field::Protocol,
                    Field::CtDestinationPort(Original),
                    Field::Source4,
                    Field::SourcePort,
                ],
            )),
        };
        if let Some((set, fields)) = receiver {
            let (rule, _) = load(Rule::new(), 0, &fields);
            rules.add(
                HAIRPIN,
                rule.lookup(set.name, REG[0], None, Lookup::In).leave(),
                &format!("the receiver sent to the sender: @{} return", set.name),
            );
            rules.add(HAIRPIN, Rule::new().drop(), "drop");
        }
    }

    // filter_in: what arrives through the link.
    rules.add(
        FILTER_IN,
        interface(Rule::new(), libc::NFT_META_IIFNAME, &wan, false).leave(),
        "iifname != wan return",
    );
    rules.add(
        FILTER_IN,
        ct_state(
            Rule::new(),
            crate::os::uapi::nft::NF_CT_STATE_ESTABLISHED
                | crate::os::uapi::nft::NF_CT_STATE_RELATED,
        )
        .accept(),
        "ct state established,related accept",
    );
    let rule = Rule::new()
        .ct(libc::NFT_CT_STATUS, None, REG[0])
        .bitwise(
            REG[0],
            &crate::os::uapi::nft::IPS_DST_NAT.to_ne_bytes(),
            &[0; 4],
        )
        .differs(REG[0], &[0; 4]);
    rules.add(
        FILTER_IN,
        ct_mark(rule, u32::MAX, 0).accept(),
        "ct status dnat ct mark 0 accept (port forwards)",
    );
    let to_mapping = |rule: Rule| ct_mark(rule, LINK_MASK | IN, link.link_mark() | IN);
    if eif {
        rules.add(
            FILTER_IN,
            to_mapping(Rule::new()).accept(),
            "to a mapping: accept",
        );
    }
    if adf {
        let rule = nfproto(to_mapping(Rule::new()), libc::NFPROTO_IPV4);
        let (rule, _) = load(
            rule,
            0,
            &[
                Field::Protocol,
                Field::CtDestinationPort(Original),
                Field::Source4,
            ],
        );
        rules.add(
            FILTER_IN,
            rule.lookup(SEEN4.name, REG[0], None, Lookup::In).accept(),
            "to a mapping that sent to this address: accept",
        );
    }
    if !apdf {
        let (set, fields) = if eif {
            (
                OUT6,
                vec![Field::Protocol, Field::Destination6, Field::DestinationPort],
            )
        } else {
            (
                SEEN6,
                vec![
                    Field::Protocol,
                    Field::Destination6,
                    Field::DestinationPort,
                    Field::Source6,
                ],
            )
        };
        let rule = nfproto(Rule::new(), libc::NFPROTO_IPV6);
        let (rule, _) = load(rule, 0, &fields);
        rules.add(
            FILTER_IN,
            rule.lookup(set.name, REG[0], None, Lookup::In).accept(),
            &format!("ip6 to an endpoint in @{}: accept", set.name),
        );
    }
    rules.add(FILTER_IN, Rule::new().drop(), "drop");

    // input: nothing unsolicited reaches the router itself.
    for (proto, name) in PROTOCOLS {
        let rule = interface(Rule::new(), libc::NFT_META_IIFNAME, &wan, true);
        let rule = ct_state(protocol(rule, proto), crate::os::uapi::nft::NF_CT_STATE_NEW);
        rules.add(
            INPUT,
            rule.drop(),
            &format!("iifname wan {name} ct state new drop"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_choice_is_never_the_inside_port_nor_below_1024() {
        for public in [
            Ipv4Addr::new(203, 0, 113, 1),
            Ipv4Addr::new(198, 18, 0, 6),
            Ipv4Addr::new(100, 64, 0, 1),
        ] {
            let (mask, flip) = second_choice(public);
            let (mask, flip) = (u16::from_be_bytes(mask), u16::from_be_bytes(flip));
            for port in 0..=u16::MAX {
                let chosen = (port & mask) ^ flip;
                assert_ne!(chosen, port);
                assert!(chosen >= 1024, "{port} -> {chosen}");
            }
        }
    }

    #[test]
    fn sets_are_sized_as_nft_would() {
        assert_eq!((USED.key_len, USED.key_type), (8, 0x30d));
        assert_eq!(OWNER.data, Some((8, 0x1cd)));
        assert_eq!(SEEN6.key_len, 40);
    }
}
