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
use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Hook, HookNumber,
    InetHookNumber, Meta, MetaKey, NfTablesMessage, Operator, Register, RuleAttribute, RuleMessage,
    TableAttribute, TableMessage,
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
