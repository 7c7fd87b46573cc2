//! nf_tables rulesets spoken over netlink (NETLINK_NETFILTER), so that NAT
//! and random loss need no `nft` program: each ruleset is one transaction,
//! batch begin / table / chain / rule / batch end, sent in one `send` on a
//! socket opened inside the node's namespace.
//!
//! The table, chain and rule messages and the `meta`, `cmp` and `immediate`
//! expressions are netlink-packet-netfilter's types; `masq`, `numgen` and
//! `byteorder` (which it lacks) are its generic expression with raw
//! attributes. The expressions are those `nft` loads for the same rules
//! (`nft --debug=netlink`).

use crate::error::Error;
use crate::os::netlink::{Message, Netlink};
use crate::os::uapi::nft as uapi;
use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Hook, HookNumber, Immediate,
    InetHookNumber, Meta, MetaKey, NfTablesMessage, Operator, Register, RuleAttribute, RuleMessage,
    TableAttribute, TableMessage, Verdict, VerdictAttribute,
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

/// The table of the loss rule for packets arriving on `interface`.
pub(crate) fn loss_table(interface: &str) -> String {
    format!("netns_test_loss_{interface}")
}

/// Random loss where packets arrive: `table inet netns_test_loss_<interface>
/// { chain ingress { type filter hook prerouting priority 0; iifname
/// "<interface>" numgen random mod 1000000 < <per_million> drop } }`. With
/// `replace`, the table loaded before is deleted first, in the same
/// transaction.
pub(crate) fn loss(interface: &str, per_million: u32, replace: bool) -> Vec<Message> {
    let table = loss_table(interface);
    let be = |value: u32| value.to_be_bytes().to_vec();
    let rule = vec![
        Expressions::Meta(vec![
            Meta::Key(MetaKey::Iifname),
            Meta::DestinationRegister(Register::Reg1),
        ]),
        name_equals(interface),
        // A random number in [0, 1000000), in host byte order...
        generic(
            "numgen",
            vec![
                DefaultNla::new(uapi::NFTA_NG_DREG, be(Register::Reg1.into())),
                DefaultNla::new(uapi::NFTA_NG_MODULUS, be(1_000_000)),
                DefaultNla::new(uapi::NFTA_NG_TYPE, be(libc::NFT_NG_RANDOM as u32)),
            ],
        ),
        // ...turned big-endian, as `cmp` compares bytes (memcmp)...
        generic(
            "byteorder",
            vec![
                DefaultNla::new(uapi::NFTA_BYTEORDER_SREG, be(Register::Reg1.into())),
                DefaultNla::new(uapi::NFTA_BYTEORDER_DREG, be(Register::Reg1.into())),
                DefaultNla::new(uapi::NFTA_BYTEORDER_OP, be(libc::NFT_BYTEORDER_HTON as u32)),
                DefaultNla::new(uapi::NFTA_BYTEORDER_LEN, be(4)),
                DefaultNla::new(uapi::NFTA_BYTEORDER_SIZE, be(4)),
            ],
        ),
        // ...below the share to drop: drop.
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::LessThan),
            Cmp::Data(DataAttribute::Value(be(per_million))),
        ]),
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                Verdict::Other(libc::NF_DROP as u32),
            )])),
        ]),
    ];
    let mut messages = Vec::with_capacity(4);
    if replace {
        messages.push(delete_table_message(&table));
    }
    messages.push(new_table(&table));
    messages.push(new_chain(
        &table,
        "ingress",
        "filter",
        InetHookNumber::PreRouting,
        libc::NF_IP_PRI_FILTER,
    ));
    messages.push(new_rule(
        &table,
        "ingress",
        rule,
        format!("iifname \"{interface}\" numgen random mod 1000000 < {per_million} drop"),
    ));
    transaction(messages)
}

/// Deletes the loss rule's table for `interface`.
pub(crate) fn delete_loss(interface: &str) -> Vec<Message> {
    transaction(vec![delete_table_message(&loss_table(interface))])
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
        // Replacing a loss rule that was never loaded: the delete fails, and
        // the transaction's new table goes with it.
        let started = std::time::Instant::now();
        let error = socket.run(loss("eth9", 1000, true)).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "delete nftables table inet netns_test_loss_eth9 failed: No such file or directory"
            ),
            "{error}"
        );
        let error = socket.run(delete_loss("eth9")).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
        // Every answer was there at once: nothing waited for a missing ack.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The socket stays usable.
        socket.run(loss("eth9", 1000, false)).unwrap();
        socket.run(loss("eth9", 2000, true)).unwrap();
        socket.run(delete_loss("eth9")).unwrap();
        socket.run(masquerade("eth9")).unwrap();
        socket.run(masquerade("eth8")).unwrap();
    }
}
