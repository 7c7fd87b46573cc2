//! nf_tables rulesets spoken over netlink (NETLINK_NETFILTER), so that NAT
//! needs no `nft` program: each ruleset is one transaction,
//! batch begin / table / chain / rule / batch end, sent in one `send` on a
//! socket opened inside the node's namespace.
//!
//! The table, chain and rule messages and the `meta`, `cmp` and `immediate`
//! expressions are netlink-packet-netfilter's types; `masq` (which it
//! lacks) is its generic expression with raw attributes. (Random loss is
//! the fault engine's, `src/network/engine.rs`, since nf_tables' `numgen`
//! cannot replay from a seed.) The expressions are those `nft` loads for the same rules
//! (`nft --debug=netlink`).

use crate::error::Error;
use crate::os::netlink::{Message, Netlink};
use crate::os::uapi::nft as uapi;
use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Hook, HookNumber, Immediate,
    InetHookNumber, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute,
    RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use nix::libc;

/// Opens a NETLINK_NETFILTER socket in the calling thread's namespace.
pub(crate) fn open() -> Result<Netlink, Error> {
    Netlink::open_protocol(
        netlink_sys::protocols::NETLINK_NETFILTER,
        "socket(AF_NETLINK, NETLINK_NETFILTER)",
    )
}

/// The table netns-test's NAT lives in.
const NAT_TABLE: &str = "netns_test_nat";

/// Source NAT: `table inet netns_test_nat { chain postrouting { type nat
/// hook postrouting priority srcnat; oifname "<interface>" masquerade } }`,
/// IPv4 and IPv6. Calling it again adds a rule to the same chain.
pub(crate) fn masquerade(interface: &str) -> Vec<Message> {
    let rule = vec![
        Expressions::Meta(vec![
            Meta::Key(MetaKey::Oifname),
            Meta::DestinationRegister(Register::Reg1),
        ]),
        name_equals(interface),
        generic("masq", Vec::new()),
    ];
    transaction(vec![
        new_table(NAT_TABLE),
        new_chain(
            NAT_TABLE,
            "postrouting",
            "nat",
            InetHookNumber::PostRouting,
            libc::NF_IP_PRI_NAT_SRC,
        ),
        new_rule(
            NAT_TABLE,
            "postrouting",
            rule,
            format!("oifname \"{interface}\" masquerade"),
        ),
    ])
}

/// Destination NAT, in one transaction: TCP and UDP arriving on
/// `interface` for `port` go to each of `targets` of its family: `table
/// inet netns_test_nat { chain prerouting { type nat hook prerouting
/// priority dstnat; iifname "<interface>" meta l4proto tcp th dport <port>
/// dnat ip to <address>:<port> } }`, the same for UDP, and `dnat ip6` for an
/// IPv6 target. Calling it again adds rules.
pub(crate) fn forward_port(
    interface: &str,
    port: u16,
    targets: &[std::net::SocketAddr],
) -> Vec<Message> {
    let be = |value: u32| value.to_be_bytes().to_vec();
    let rule = |protocol: u8, to: &std::net::SocketAddr| {
        let (family, address) = match to.ip() {
            std::net::IpAddr::V4(a) => (libc::NFPROTO_IPV4, a.octets().to_vec()),
            std::net::IpAddr::V6(a) => (libc::NFPROTO_IPV6, a.octets().to_vec()),
        };
        vec![
            Expressions::Meta(vec![
                Meta::Key(MetaKey::Iifname),
                Meta::DestinationRegister(Register::Reg1),
            ]),
            name_equals(interface),
            Expressions::Meta(vec![
                Meta::Key(MetaKey::L4Proto),
                Meta::DestinationRegister(Register::Reg1),
            ]),
            Expressions::Cmp(vec![
                Cmp::SourceRegister(Register::Reg1),
                Cmp::Op(Operator::Equal),
                Cmp::Data(DataAttribute::Value(vec![protocol])),
            ]),
            // The destination port: 2 bytes at offset 2 of the transport header.
            Expressions::Payload(vec![
                Payload::DestinationRegister(Register::Reg1),
                Payload::Base(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32),
                Payload::Offset(2),
                Payload::Len(2),
            ]),
            Expressions::Cmp(vec![
                Cmp::SourceRegister(Register::Reg1),
                Cmp::Op(Operator::Equal),
                Cmp::Data(DataAttribute::Value(port.to_be_bytes().to_vec())),
            ]),
            Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Reg1),
                Immediate::Data(DataAttribute::Value(address)),
            ]),
            Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Reg2),
                Immediate::Data(DataAttribute::Value(to.port().to_be_bytes().to_vec())),
            ]),
            generic(
                "nat",
                vec![
                    DefaultNla::new(uapi::NFTA_NAT_TYPE, be(libc::NFT_NAT_DNAT as u32)),
                    DefaultNla::new(uapi::NFTA_NAT_FAMILY, be(family as u32)),
                    DefaultNla::new(uapi::NFTA_NAT_REG_ADDR_MIN, be(Register::Reg1.into())),
                    DefaultNla::new(uapi::NFTA_NAT_REG_PROTO_MIN, be(Register::Reg2.into())),
                    DefaultNla::new(uapi::NFTA_NAT_FLAGS, be(uapi::NF_NAT_RANGE_PROTO_SPECIFIED)),
                ],
            ),
        ]
    };
    let mut messages = vec![
        new_table(NAT_TABLE),
        new_chain(
            NAT_TABLE,
            "prerouting",
            "nat",
            InetHookNumber::PreRouting,
            libc::NF_IP_PRI_NAT_DST,
        ),
    ];
    for to in targets {
        for (protocol, name) in [
            (libc::IPPROTO_TCP as u8, "tcp"),
            (libc::IPPROTO_UDP as u8, "udp"),
        ] {
            messages.push(new_rule(
                NAT_TABLE,
                "prerouting",
                rule(protocol, to),
                format!("iifname \"{interface}\" meta l4proto {name} th dport {port} dnat to {to}"),
            ));
        }
    }
    transaction(messages)
}

/// `meta ... => reg 1` compared with an interface name, NUL-padded to
/// IFNAMSIZ as the kernel keeps it.
fn name_equals(interface: &str) -> Expressions {
    let mut name = interface.as_bytes().to_vec();
    name.resize(libc::IFNAMSIZ, 0);
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(name)),
    ])
}

/// An expression netlink-packet-netfilter has no type for.
fn generic(name: &str, attributes: Vec<DefaultNla>) -> Expressions {
    Expressions::Other {
        expression_type: name.to_owned(),
        attributes,
    }
}

/// `messages` between batch begin and batch end: one transaction, applied
/// whole or not at all.
fn transaction(messages: Vec<Message>) -> Vec<Message> {
    let delimiter = |control: ControlMessage, what: &str| {
        let header = NetfilterHeader::new(
            NetfilterProtoFamily::Unspec,
            libc::NFNETLINK_V0 as u8,
            libc::NFNL_SUBSYS_NFTABLES as u16,
        );
        // No ACK asked for: the kernel answers a delimiter only on failure.
        Message::encode(
            NetfilterMessage::new(header, control),
            0,
            what.to_owned(),
            false,
        )
    };
    let mut batch = Vec::with_capacity(messages.len() + 2);
    batch.push(delimiter(
        ControlMessage::BatchBegin,
        "begin an nftables transaction",
    ));
    batch.extend(messages);
    batch.push(delimiter(
        ControlMessage::BatchEnd,
        "commit an nftables transaction",
    ));
    batch
}

fn nft_message(message: NfTablesMessage, flags: u16, what: String) -> Message {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, libc::NFNETLINK_V0 as u8, 0);
    Message::encode(
        NetfilterMessage::new(header, message),
        flags | NLM_F_ACK,
        what,
        true,
    )
}

fn new_table(table: &str) -> Message {
    // Without NLM_F_EXCL: an existing table is fine (as `nft add table`).
    nft_message(
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_owned())],
        }),
        NLM_F_CREATE,
        format!("add nftables table inet {table}"),
    )
}

#[cfg(test)]
fn delete_table_message(table: &str) -> Message {
    nft_message(
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_owned())],
        }),
        0,
        format!("delete nftables table inet {table}"),
    )
}

fn new_chain(
    table: &str,
    chain: &str,
    kind: &str,
    hook: InetHookNumber,
    priority: libc::c_int,
) -> Message {
    nft_message(
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table.to_owned()),
                ChainAttribute::Name(chain.to_owned()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(hook)),
                    Hook::Priority(priority as u32),
                ]),
                ChainAttribute::Type(kind.to_owned()),
            ],
        }),
        NLM_F_CREATE,
        format!("add nftables chain {table} {chain} (type {kind})"),
    )
}

fn new_rule(table: &str, chain: &str, expressions: Vec<Expressions>, text: String) -> Message {
    nft_message(
        NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_owned()),
                RuleAttribute::Chain(chain.to_owned()),
                RuleAttribute::Expressions(expressions.into_iter().map(Into::into).collect()),
            ],
        }),
        NLM_F_CREATE | NLM_F_APPEND,
        format!("add nftables rule `{text}` to {table} {chain}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_transaction_applies_nothing_and_names_its_message() {
        if !crate::privileged() {
            eprintln!("skipped: a namespace of its own needs CAP_SYS_ADMIN");
            return;
        }
        let (_ns, mut socket) = crate::netns::NetNs::new_with(|_| open()).unwrap();
        // Deleting a table that was never loaded fails, and the
        // transaction's new table goes with it.
        let started = std::time::Instant::now();
        let failing = || {
            transaction(vec![
                delete_table_message("netns_test_nothing"),
                new_table("netns_test_other"),
            ])
        };
        let error = socket.run(failing()).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "delete nftables table inet netns_test_nothing failed: No such file or directory"
            ),
            "{error}"
        );
        let error = socket
            .run(transaction(vec![delete_table_message("netns_test_other")]))
            .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
        // Every answer was there at once: nothing waited for a missing ack.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The socket stays usable.
        socket.run(masquerade("eth9")).unwrap();
        socket.run(masquerade("eth8")).unwrap();
    }
}
