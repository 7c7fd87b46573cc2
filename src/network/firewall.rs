//! [`Node::firewall`]: a router's stateful firewall on one link, as
//! nf_tables rules over netlink (no `nft` program).
//!
//! The rules live in the link's table, `inet netns_test_<interface>`,
//! beside its NAT (see `nat/rules.rs`), in a chain of their own on the
//! forward hook at priority `filter`: after the NAT's `filter_in`
//! (priority `filter` - 10), so the NAT's filtering happens first (a drop
//! there is final), and replaced alone, in one transaction, when the
//! firewall changes.
//!
//! ```text
//! chain firewall { type filter hook forward priority filter; policy accept;
//!     iifname != wan oifname != wan return      other links' traffic
//!     ct state established,related accept      replies, ICMP errors about flows
//!     <the last rule given> accept|drop         the last that matches decides:
//!     ...                                       the rules, last first
//!     <the first rule given> accept|drop
//!     iifname wan drop                          inbound blocked (block_inbound, allow_only)
//!     oifname wan drop                          outbound blocked (allow_only)
//! }
//! ```
//!
//! Conntrack reassembles fragments before the forward hook, so every rule
//! sees whole packets with their ports.

use super::nat::rules::{self, ct_state, interface_name, nfproto};
use super::{Link, Node};
use crate::error::Error;
use crate::firewall::{Checked, Firewall, Verdict, Way};
use crate::os::netlink::Message;
use crate::os::nftables::{self, Hook, REG, Rule};
use crate::traffic::{Family, Match, Protocol, Subnet};
use nix::libc;

/// The chain's name in the link's table.
const CHAIN: &str = "firewall";

impl Node {
    /// Sets this router's firewall on `link`, replacing the one the link
    /// had, in one step (also during a test): see [`Firewall`] for what
    /// each preset and rule lets through. It judges the flows the router
    /// forwards through the link, IPv4 and IPv6, after the link's NAT (a
    /// [`Node::nat`] or [`Node::masquerade`] there filters first), with
    /// addresses as they are between the two (after a port forward's
    /// destination NAT, before source NAT); not what the router itself
    /// sends or receives. `Firewall::new()` lets everything through again.
    /// Loaded over netlink, root and rootless: no `nft` program is needed.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// use netns_test::{Firewall, Network, Traffic};
    /// let net = Network::new();
    /// let (laptop, office, internet) = (net.node("laptop")?, net.router("office")?, net.node("internet")?);
    /// net.link(&laptop, &office)?;
    /// let wan = net.link(&office, &internet)?;
    /// office.firewall(&wan, Firewall::allow_only([Traffic::tcp().port(443), Traffic::udp().port(53)]))?;
    /// office.firewall(&wan, Firewall::block_inbound())?; // replaces it
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` naming the router when it is not a router or not on
    /// `link`, or naming the rule whose traffic makes no sense; the router
    /// keeps the firewall it had.
    pub fn firewall(&self, link: &Link, firewall: Firewall) -> Result<(), Error> {
        let operation = "set a firewall";
        let checked = firewall
            .check()
            .map_err(|why| Error::invalid_input(operation, why).in_node(self.name()))?;
        let end = self.end_of(link, operation)?;
        if !self.router {
            return Err(Error::invalid_input(
                operation,
                format!(
                    "{} is a node, not a router (Network::router): a firewall judges what a router forwards",
                    self.name()
                ),
            )
            .in_node(self.name()));
        }
        let messages = ruleset(&end.name, &checked);
        self.netfilter_run(nftables::transaction(messages))
    }
}

/// The messages that make the link's table and firewall chain (kept when
/// there) and replace the chain's rules.
fn ruleset(interface: &str, firewall: &Checked) -> Vec<Message> {
    let table = rules::table(interface);
    let wan = interface_name(interface);
    let hook = Hook {
        kind: "filter",
        number: libc::NF_INET_FORWARD,
        priority: libc::NF_IP_PRI_FILTER,
    };
    let mut messages = vec![
        nftables::add_table(&table),
        nftables::add_chain(&table, CHAIN, Some(hook)),
        nftables::flush_chain(&table, CHAIN),
    ];
    let nothing_to_do = firewall.rules.is_empty()
        && firewall.inbound == Verdict::Allow
        && firewall.outbound == Verdict::Allow;
    if nothing_to_do {
        return messages;
    }
    let mut add = |rule: Rule, text: &str| {
        messages.push(nftables::add_rule(&table, CHAIN, rule, text));
    };
    let not_wan = rules::interface(Rule::new(), libc::NFT_META_IIFNAME, &wan, false);
    add(
        rules::interface(not_wan, libc::NFT_META_OIFNAME, &wan, false).leave(),
        "iifname != wan oifname != wan return",
    );
    add(
        ct_state(
            Rule::new(),
            crate::os::uapi::nft::NF_CT_STATE_ESTABLISHED
                | crate::os::uapi::nft::NF_CT_STATE_RELATED,
        )
        .accept(),
        "ct state established,related accept",
    );
    for rule in firewall.rules.iter().rev() {
        let (start, way) = match rule.way {
            Way::Both => (Rule::new(), ""),
            Way::Outbound => (
                rules::interface(Rule::new(), libc::NFT_META_OIFNAME, &wan, true),
                "oifname wan ",
            ),
        };
        for m in &rule.alternatives {
            for (matched, words) in matches(m, &start) {
                let (rule_end, verdict) = match rule.verdict {
                    Verdict::Allow => (matched.accept(), "accept"),
                    Verdict::Block => (matched.drop(), "drop"),
                };
                add(rule_end, &format!("{} {way}{words} {verdict}", rule.text));
            }
        }
    }
    for (verdict, key, text) in [
        (firewall.inbound, libc::NFT_META_IIFNAME, "iifname wan drop"),
        (
            firewall.outbound,
            libc::NFT_META_OIFNAME,
            "oifname wan drop",
        ),
    ] {
        if verdict == Verdict::Block {
            add(rules::interface(Rule::new(), key, &wan, true).drop(), text);
        }
    }
    messages
}

/// The expressions of a rule that matches `m`, in nft's words: one or
/// more rules (ICMP without a family is two protocols, a port without a
/// protocol is TCP's or UDP's, a port at either end is two checks), each
/// of which matches part of what `m` selects, after what `start` matches.
fn matches(m: &Match, start: &Rule) -> Vec<(Rule, String)> {
    let families: Vec<Option<Family>> = match (m.family, m.protocol) {
        (Some(f), _) => vec![Some(f)],
        (None, Some(Protocol::Icmp)) => vec![Some(Family::V4), Some(Family::V6)],
        (None, _) => vec![None],
    };
    let protocols: Vec<Option<u8>> = match m.protocol {
        Some(Protocol::Tcp) => vec![Some(6)],
        Some(Protocol::Udp) => vec![Some(17)],
        Some(Protocol::Icmp) => vec![None], // by family, below
        None if m.needs_ports() => vec![Some(6), Some(17)],
        None => vec![None],
    };
    // A port at either end: the source's, or the destination's.
    let either: Vec<Option<(u32, u16)>> = match m.port {
        Some(p) => vec![Some((0, p)), Some((2, p))],
        None => vec![None],
    };
    let mut out = Vec::new();
    for family in &families {
        for protocol in &protocols {
            for end in &either {
                let (family, m, end) = (*family, *m, *end);
                let protocol = match (m.protocol, family) {
                    (Some(Protocol::Icmp), Some(f)) => Some(Protocol::Icmp.number(f)),
                    _ => *protocol,
                };
                let mut words = Vec::new();
                if let Some(f) = family {
                    words.push(f.name().to_owned());
                }
                if let Some(p) = protocol {
                    words.push(format!("l4proto {p}"));
                }
                if let Some((offset, p)) = end {
                    let which = if offset == 0 { "sport" } else { "dport" };
                    words.push(format!("th {which} {p}"));
                }
                if let Some(p) = m.src_port {
                    words.push(format!("th sport {p}"));
                }
                if let Some(p) = m.dst_port {
                    words.push(format!("th dport {p}"));
                }
                if let Some(s) = m.from {
                    words.push(format!("saddr {s}"));
                }
                if let Some(s) = m.to {
                    words.push(format!("daddr {s}"));
                }
                let mut rule = start.clone();
                if let Some(f) = family {
                    let proto = match f {
                        Family::V4 => libc::NFPROTO_IPV4,
                        Family::V6 => libc::NFPROTO_IPV6,
                    };
                    rule = nfproto(rule, proto);
                }
                if let Some(p) = protocol {
                    rule = rules::protocol(rule, p);
                }
                let ports = [end, m.src_port.map(|p| (0, p)), m.dst_port.map(|p| (2, p))];
                for (offset, port) in ports.into_iter().flatten() {
                    rule = rule
                        .payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2, REG[0])
                        .equals(REG[0], &port.to_be_bytes());
                }
                for (subnet, v4, v6) in [(m.from, 12, 8), (m.to, 16, 24)] {
                    if let Some(subnet) = subnet {
                        rule = address(rule, &subnet, v4, v6);
                    }
                }
                out.push((rule, words.join(" ")));
            }
        }
    }
    out
}

/// Matches the address at `v4` (IPv4) or `v6` (IPv6) in the network
/// header against `subnet` (whose family the rule has checked).
fn address(rule: Rule, subnet: &Subnet, v4: u32, v6: u32) -> Rule {
    let (bits, mask) = subnet.bits_and_mask();
    if mask == 0 {
        return rule;
    }
    let (offset, len) = match subnet.family() {
        Family::V4 => (v4, 4usize),
        Family::V6 => (v6, 16usize),
    };
    let bytes = |value: u128| value.to_be_bytes()[16 - len..].to_vec();
    let full = subnet.prefix as usize == len * 8;
    let rule = rule.payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len as u32, REG[0]);
    let rule = if full {
        rule
    } else {
        rule.bitwise(REG[0], &bytes(mask), &vec![0; len])
    };
    rule.equals(REG[0], &bytes(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Traffic;

    fn texts(traffic: Traffic) -> Vec<String> {
        traffic.check().unwrap()[..]
            .iter()
            .flat_map(|m| matches(m, &Rule::new()))
            .map(|(_, words)| words)
            .collect()
    }

    #[test]
    fn each_alternative_becomes_the_rules_that_match_it() {
        assert_eq!(
            texts(Traffic::udp().port(53)),
            ["l4proto 17 th sport 53", "l4proto 17 th dport 53"]
        );
        assert_eq!(
            texts(Traffic::icmp()),
            ["ipv4 l4proto 1", "ipv6 l4proto 58"]
        );
        assert_eq!(
            texts(Traffic::ipv6().dst_port(443)),
            [
                "ipv6 l4proto 6 th dport 443",
                "ipv6 l4proto 17 th dport 443"
            ]
        );
        assert_eq!(
            texts(Traffic::tcp().to("10.0.0.0/8").from("10.1.0.1")),
            ["ipv4 l4proto 6 saddr 10.1.0.1 daddr 10.0.0.0/8"]
        );
        assert_eq!(texts(Traffic::ipv4()), ["ipv4"]);
    }

    #[test]
    fn the_rules_are_replaced_in_one_transaction_last_first() {
        let firewall = Firewall::new()
            .block(Traffic::udp())
            .allow(Traffic::udp().port(53))
            .check()
            .unwrap();
        let messages = ruleset("eth1", &firewall);
        // table, chain, flush; our link only; replies; allow (two rules),
        // then block: the last rule given first.
        assert_eq!(messages.len(), 3 + 2 + 2 + 1);
        let nothing = ruleset("eth1", &Firewall::new().check().unwrap());
        assert_eq!(nothing.len(), 3, "Firewall::new() flushes the chain");
        let home = ruleset("eth1", &Firewall::block_inbound().check().unwrap());
        assert_eq!(home.len(), 3 + 2 + 1);
    }
}
