//! [`Firewall`]: what a router lets cross one of its links, and its check
//! into the rules nf_tables runs.

use crate::traffic::{Match, Traffic};

/// A stateful firewall on one link of a router:
/// [`Node::firewall`](crate::Node::firewall). It judges each new flow (a
/// TCP connection, a UDP or ICMP exchange) by its first packet; replies
/// to a flow it let through, and ICMP errors about it, always pass.
///
/// *Inbound* flows come in through the link (from the outside, for the
/// link to the outside); *outbound* flows leave through it.
///
/// | preset | inbound | outbound |
/// |---|---|---|
/// | [`Firewall::new()`] | allowed | allowed |
/// | [`Firewall::block_inbound()`] | blocked | allowed |
/// | [`Firewall::allow_only(..)`](Firewall::allow_only) | blocked | only what it lists |
///
/// [`Firewall::block`] and [`Firewall::allow`] add rules for new flows in
/// both directions, over the preset; where rules overlap, **the last one
/// that matches decides**, so each call amends what came before it for
/// the traffic it names:
///
/// ```
/// use netns_test::{Firewall, Traffic};
/// // Home router (RFC 6092): nothing unsolicited comes in.
/// let home = Firewall::block_inbound();
/// // Corporate: only web and DNS get out.
/// let corporate = Firewall::allow_only([Traffic::tcp().port(80), Traffic::tcp().port(443), Traffic::udp().port(53)]);
/// // Relay only: UDP blocked, except DNS.
/// let relay_only = Firewall::new().block(Traffic::udp()).allow(Traffic::udp().port(53));
/// // A home router that lets SSH in.
/// let ssh = Firewall::block_inbound().allow(Traffic::tcp().dst_port(22));
/// # let _ = (home, corporate, relay_only, ssh);
/// ```
///
/// Blocked packets are dropped silently (no ICMP error, no TCP reset),
/// as most firewalls do: a blocked client waits for its timeout.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use = "a Firewall does nothing until it is given to `Node::firewall`"]
pub struct Firewall {
    inbound: Verdict,
    outbound: Verdict,
    /// In the order given: the last that matches decides.
    rules: Vec<Rule>,
}

/// What happens to a new flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Verdict {
    #[default]
    Allow,
    Block,
}

/// Which new flows a rule judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    /// Both ways.
    Both,
    /// Those that leave through the link.
    Outbound,
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    verdict: Verdict,
    way: Way,
    traffic: Traffic,
    /// How the user wrote it, for errors: `allow`, `block`, `allow_only`.
    call: &'static str,
}

/// A checked rule: the alternatives of its traffic.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CheckedRule {
    pub verdict: Verdict,
    pub way: Way,
    pub alternatives: Vec<Match>,
    /// `block(udp)`, for nft's rule texts.
    pub text: String,
}

/// A checked [`Firewall`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Checked {
    pub inbound: Verdict,
    pub outbound: Verdict,
    /// In the order given: the last that matches decides.
    pub rules: Vec<CheckedRule>,
}

impl Firewall {
    /// A firewall that lets everything through, to which
    /// [`Firewall::block`] adds rules. Given to a link, it removes that
    /// link's firewall.
    pub fn new() -> Firewall {
        Firewall::default()
    }

    /// A home router's firewall (RFC 6092): nothing unsolicited comes in
    /// (no new flow from outside, IPv4 or IPv6); everything may go out, and
    /// its replies come back.
    pub fn block_inbound() -> Firewall {
        Firewall {
            inbound: Verdict::Block,
            ..Firewall::default()
        }
    }

    /// A corporate firewall: only the new flows `traffic` lists may go
    /// out (and their replies come back); nothing unsolicited comes in.
    /// `allow_only([])` lets nothing through.
    ///
    /// ```
    /// use netns_test::{Firewall, Traffic};
    /// let web_and_dns = Firewall::allow_only([
    ///     Traffic::tcp().dst_port(80),
    ///     Traffic::tcp().dst_port(443),
    ///     Traffic::udp().dst_port(53),
    /// ]);
    /// # let _ = web_and_dns;
    /// ```
    pub fn allow_only(traffic: impl IntoIterator<Item = Traffic>) -> Firewall {
        Firewall {
            inbound: Verdict::Block,
            outbound: Verdict::Block,
            rules: traffic
                .into_iter()
                .map(|traffic| Rule {
                    verdict: Verdict::Allow,
                    way: Way::Outbound,
                    traffic,
                    call: "allow_only",
                })
                .collect(),
        }
    }

    /// Blocks new flows that `traffic` selects, in both directions (over
    /// what came before for that traffic).
    pub fn block(mut self, traffic: Traffic) -> Firewall {
        self.rules.push(Rule {
            verdict: Verdict::Block,
            way: Way::Both,
            traffic,
            call: "block",
        });
        self
    }

    /// Allows new flows that `traffic` selects, in both directions (over
    /// what came before for that traffic).
    pub fn allow(mut self, traffic: Traffic) -> Firewall {
        self.rules.push(Rule {
            verdict: Verdict::Allow,
            way: Way::Both,
            traffic,
            call: "allow",
        });
        self
    }

    /// Checks every rule's traffic: the error names the rule.
    pub(crate) fn check(&self) -> Result<Checked, String> {
        let rules = self
            .rules
            .iter()
            .map(|rule| {
                let text = format!("{}({})", rule.call, rule.traffic);
                let alternatives = rule
                    .traffic
                    .check()
                    .map_err(|why| format!("{text}: {why}"))?
                    .to_vec();
                Ok(CheckedRule {
                    verdict: rule.verdict,
                    way: rule.way,
                    alternatives,
                    text,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Checked {
            inbound: self.inbound,
            outbound: self.outbound,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_rules_check_into_their_defaults_and_order() {
        let relay_only = Firewall::new()
            .block(Traffic::udp())
            .allow(Traffic::udp().port(53))
            .check()
            .unwrap();
        assert_eq!(
            (relay_only.inbound, relay_only.outbound),
            (Verdict::Allow, Verdict::Allow)
        );
        let texts: Vec<&str> = relay_only.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["block(udp)", "allow(udp port 53)"]);
        let corporate = Firewall::allow_only([Traffic::tcp().port(443)])
            .check()
            .unwrap();
        assert_eq!(
            (corporate.inbound, corporate.outbound),
            (Verdict::Block, Verdict::Block)
        );
        assert_eq!(corporate.rules[0].way, Way::Outbound);
        let home = Firewall::block_inbound().check().unwrap();
        assert_eq!(
            (home.inbound, home.outbound),
            (Verdict::Block, Verdict::Allow)
        );
        assert!(home.rules.is_empty());
    }

    #[test]
    fn a_bad_selector_is_named_with_its_rule() {
        let why = Firewall::new()
            .allow(Traffic::tcp())
            .block(Traffic::icmp().port(53))
            .check()
            .unwrap_err();
        assert!(
            why.starts_with("block(icmp port 53): port 53 on ICMP"),
            "{why}"
        );
        let why = Firewall::allow_only([Traffic::ipv6().to("10.0.0.1")])
            .check()
            .unwrap_err();
        assert!(why.contains("allow_only("), "{why}");
        assert!(why.contains("10.0.0.1 is not an ipv6 address"), "{why}");
    }
}
