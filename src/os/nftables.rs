//! nf_tables and conntrack spoken over netlink (NETLINK_NETFILTER), so that
//! NAT needs no `nft` or `conntrack` program.
//!
//! An encoder of our own: [`Attributes`] (netlink attributes, nested as the
//! kernel reads them), [`Rule`] (a rule's expressions, in registers), and
//! the messages a ruleset is made of (table, chain, set, rule, set
//! elements, flushes), sent as one transaction ([`transaction`]: batch
//! begin, the messages, batch end, applied whole or not at all). The
//! netlink header around each message is netlink-packet-core's (it
//! replaced netlink-packet-netfilter, which lacked the set, dynset,
//! lookup, ct and nat expressions NAT needs; see the commit that dropped
//! it for the build time saved). The
//! expressions are those `nft` loads for the same rules
//! (`nft --debug=netlink`); the unit tests below compare the bytes with
//! what `nft` 1.0.6 sends (`nft --debug=mnl`) for a few of them.
//!
//! Registers: nf_tables has sixteen 4-byte data registers
//! ([`REG`]`[0..16]`). A value longer than 4 bytes spans several; a
//! concatenation (a set key of several fields) puts each field in the
//! next free register, padded to 4 bytes, as `nft` does.

use crate::error::Error;
use crate::os::netlink::{Message, Netlink};
use crate::os::uapi::nft as uapi;
use netlink_packet_core::{
    NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NetlinkSerializable,
};
use nix::libc;

/// Opens a NETLINK_NETFILTER socket in the calling thread's namespace.
pub(crate) fn open() -> Result<Netlink, Error> {
    Netlink::open_protocol(
        netlink_sys::protocols::NETLINK_NETFILTER,
        "socket(AF_NETLINK, NETLINK_NETFILTER)",
    )
}

/// The 4-byte data registers, `NFT_REG32_00` to `NFT_REG32_15`.
pub(crate) const REG: [u32; 16] = {
    let mut registers = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        registers[i] = libc::NFT_REG32_00 as u32 + i as u32;
        i += 1;
    }
    registers
};

/// A sequence of netlink attributes: type, length, value, padded to 4.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub(crate) struct Attributes(Vec<u8>);

impl Attributes {
    pub(crate) fn new() -> Attributes {
        Attributes(Vec::new())
    }

    /// An attribute of `kind` holding `data` as it is.
    pub(crate) fn bytes(mut self, kind: u16, data: &[u8]) -> Attributes {
        let length = u16::try_from(4 + data.len()).expect("a netlink attribute fits 64 KiB");
        self.0.extend_from_slice(&length.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// A NUL-terminated string, as the kernel's NLA_STRING policy expects.
    pub(crate) fn string(self, kind: u16, value: &str) -> Attributes {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.bytes(kind, &data)
    }

    /// A 32-bit number in network byte order (nf_tables' NLA_BE32).
    pub(crate) fn be32(self, kind: u16, value: u32) -> Attributes {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A 64-bit number in network byte order (NLA_BE64).
    pub(crate) fn be64(self, kind: u16, value: u64) -> Attributes {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Attributes inside an attribute (flagged NLA_F_NESTED).
    pub(crate) fn nested(self, kind: u16, inner: Attributes) -> Attributes {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }

    /// `NFTA_DATA_VALUE` holding `value`, as a nested `nft_data` attribute.
    fn data(self, kind: u16, value: &[u8]) -> Attributes {
        self.nested(kind, Attributes::new().bytes(uapi::NFTA_DATA_VALUE, value))
    }

    #[cfg(test)]
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The direction of a conntrack key: the tuple of the packet that opened
/// the flow, or of its replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Original = 0,
    Reply = 1,
}

/// What a set lookup asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The key is in the set.
    In,
    /// The key is not in the set.
    NotIn,
}

/// A rule's expressions, evaluated in order: the rule stops at the first
/// that does not match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rule {
    expressions: Attributes,
}

impl Rule {
    pub(crate) fn new() -> Rule {
        Rule::default()
    }

    fn expression(mut self, name: &str, data: Attributes) -> Rule {
        let element = Attributes::new()
            .string(uapi::NFTA_EXPR_NAME, name)
            .nested(uapi::NFTA_EXPR_DATA, data);
        self.expressions = self.expressions.nested(uapi::NFTA_LIST_ELEM, element);
        self
    }

    /// `meta <key>` into `register`.
    pub(crate) fn meta(self, key: libc::c_int, register: u32) -> Rule {
        self.expression(
            "meta",
            Attributes::new()
                .be32(uapi::NFTA_META_KEY, key as u32)
                .be32(uapi::NFTA_META_DREG, register),
        )
    }

    /// `ct [direction] <key>` into `register`.
    pub(crate) fn ct(self, key: libc::c_int, direction: Option<Direction>, register: u32) -> Rule {
        let mut data = Attributes::new()
            .be32(uapi::NFTA_CT_DREG, register)
            .be32(uapi::NFTA_CT_KEY, key as u32);
        if let Some(direction) = direction {
            data = data.bytes(uapi::NFTA_CT_DIRECTION, &[direction as u8]);
        }
        self.expression("ct", data)
    }

    /// `ct <key> set` from `register` (the key is `NFT_CT_MARK`, say).
    pub(crate) fn ct_set(self, key: libc::c_int, register: u32) -> Rule {
        self.expression(
            "ct",
            Attributes::new()
                .be32(uapi::NFTA_CT_KEY, key as u32)
                .be32(uapi::NFTA_CT_SREG, register),
        )
    }

    /// `len` bytes at `offset` of the packet's header `base`
    /// (`NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`).
    pub(crate) fn payload(self, base: libc::c_int, offset: u32, len: u32, register: u32) -> Rule {
        self.expression(
            "payload",
            Attributes::new()
                .be32(uapi::NFTA_PAYLOAD_DREG, register)
                .be32(uapi::NFTA_PAYLOAD_BASE, base as u32)
                .be32(uapi::NFTA_PAYLOAD_OFFSET, offset)
                .be32(uapi::NFTA_PAYLOAD_LEN, len),
        )
    }

    /// Compares `register` (as many bytes as `value` has) with `value`.
    pub(crate) fn cmp(self, op: libc::c_int, register: u32, value: &[u8]) -> Rule {
        self.expression(
            "cmp",
            Attributes::new()
                .be32(uapi::NFTA_CMP_SREG, register)
                .be32(uapi::NFTA_CMP_OP, op as u32)
                .data(uapi::NFTA_CMP_DATA, value),
        )
    }

    /// Matches when `register` holds `value`.
    pub(crate) fn equals(self, register: u32, value: &[u8]) -> Rule {
        self.cmp(libc::NFT_CMP_EQ, register, value)
    }

    /// Matches when `register` does not hold `value`.
    pub(crate) fn differs(self, register: u32, value: &[u8]) -> Rule {
        self.cmp(libc::NFT_CMP_NEQ, register, value)
    }

    /// `register = (register & mask) ^ xor`, over `mask.len()` bytes.
    pub(crate) fn bitwise(self, register: u32, mask: &[u8], xor: &[u8]) -> Rule {
        assert_eq!(mask.len(), xor.len(), "bitwise operands of one length");
        self.expression(
            "bitwise",
            Attributes::new()
                .be32(uapi::NFTA_BITWISE_SREG, register)
                .be32(uapi::NFTA_BITWISE_DREG, register)
                .be32(uapi::NFTA_BITWISE_OP, uapi::NFT_BITWISE_MASK_XOR)
                .be32(uapi::NFTA_BITWISE_LEN, mask.len() as u32)
                .data(uapi::NFTA_BITWISE_MASK, mask)
                .data(uapi::NFTA_BITWISE_XOR, xor),
        )
    }

    /// Loads `value` into `register` (and the registers after it).
    pub(crate) fn immediate(self, register: u32, value: &[u8]) -> Rule {
        self.expression(
            "immediate",
            Attributes::new()
                .be32(uapi::NFTA_IMMEDIATE_DREG, register)
                .data(uapi::NFTA_IMMEDIATE_DATA, value),
        )
    }

    /// Ends the rule with a verdict: `NF_ACCEPT`, `NF_DROP`, `NFT_RETURN`,
    /// or `NFT_JUMP` to `chain`.
    fn verdict(self, code: i32, chain: Option<&str>) -> Rule {
        let mut verdict = Attributes::new().be32(uapi::NFTA_VERDICT_CODE, code as u32);
        if let Some(chain) = chain {
            verdict = verdict.string(uapi::NFTA_VERDICT_CHAIN, chain);
        }
        self.expression(
            "immediate",
            Attributes::new()
                .be32(uapi::NFTA_IMMEDIATE_DREG, libc::NFT_REG_VERDICT as u32)
                .nested(
                    uapi::NFTA_IMMEDIATE_DATA,
                    Attributes::new().nested(uapi::NFTA_DATA_VERDICT, verdict),
                ),
        )
    }

    pub(crate) fn accept(self) -> Rule {
        self.verdict(libc::NF_ACCEPT, None)
    }

    pub(crate) fn drop(self) -> Rule {
        self.verdict(libc::NF_DROP, None)
    }

    /// Leaves the chain (a base chain: its policy applies).
    pub(crate) fn leave(self) -> Rule {
        self.verdict(libc::NFT_RETURN, None)
    }

    pub(crate) fn jump(self, chain: &str) -> Rule {
        self.verdict(libc::NFT_JUMP, Some(chain))
    }

    /// Looks the key in `register` (and after) up in `set`; for a map,
    /// loads the data into `data`.
    pub(crate) fn lookup(self, set: &str, register: u32, data: Option<u32>, what: Lookup) -> Rule {
        let mut attributes = Attributes::new()
            .string(uapi::NFTA_LOOKUP_SET, set)
            .be32(uapi::NFTA_LOOKUP_SREG, register);
        if let Some(data) = data {
            attributes = attributes.be32(uapi::NFTA_LOOKUP_DREG, data);
        }
        if what == Lookup::NotIn {
            attributes = attributes.be32(uapi::NFTA_LOOKUP_FLAGS, libc::NFT_LOOKUP_F_INV as u32);
        }
        self.expression("lookup", attributes)
    }

    /// `update @set { key timeout .. [: data] }`: adds the key in
    /// `register` (with the data in `data`, for a map) to `set`, or
    /// refreshes its timeout when it is there.
    pub(crate) fn update(
        self,
        set: &str,
        register: u32,
        data: Option<u32>,
        timeout_ms: u64,
    ) -> Rule {
        let mut attributes = Attributes::new()
            .string(uapi::NFTA_DYNSET_SET_NAME, set)
            .be32(uapi::NFTA_DYNSET_OP, libc::NFT_DYNSET_OP_UPDATE as u32)
            .be32(uapi::NFTA_DYNSET_SREG_KEY, register);
        if let Some(data) = data {
            attributes = attributes.be32(uapi::NFTA_DYNSET_SREG_DATA, data);
        }
        attributes = attributes.be64(uapi::NFTA_DYNSET_TIMEOUT, timeout_ms);
        self.expression("dynset", attributes)
    }

    /// Source or destination NAT (`libc::NFT_NAT_SNAT`, `NFT_NAT_DNAT`) of
    /// IPv4 to the address in `address` and the port in `port` (with
    /// `NF_NAT_RANGE_PROTO_SPECIFIED`), or the ports from `port` to
    /// `port_max`.
    pub(crate) fn nat(
        self,
        kind: libc::c_int,
        address: u32,
        port: Option<u32>,
        port_max: Option<u32>,
        flags: u32,
    ) -> Rule {
        let mut attributes = Attributes::new()
            .be32(uapi::NFTA_NAT_TYPE, kind as u32)
            .be32(uapi::NFTA_NAT_FAMILY, libc::NFPROTO_IPV4 as u32)
            .be32(uapi::NFTA_NAT_REG_ADDR_MIN, address);
        if let Some(port) = port {
            attributes = attributes.be32(uapi::NFTA_NAT_REG_PROTO_MIN, port);
        }
        if let Some(port_max) = port_max {
            attributes = attributes.be32(uapi::NFTA_NAT_REG_PROTO_MAX, port_max);
        }
        if flags != 0 {
            attributes = attributes.be32(uapi::NFTA_NAT_FLAGS, flags);
        }
        self.expression("nat", attributes)
    }

    /// Destination NAT to a target of either family: address in
    /// `address`, port in `port`.
    pub(crate) fn dnat(self, family: libc::c_int, address: u32, port: u32) -> Rule {
        self.expression(
            "nat",
            Attributes::new()
                .be32(uapi::NFTA_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
                .be32(uapi::NFTA_NAT_FAMILY, family as u32)
                .be32(uapi::NFTA_NAT_REG_ADDR_MIN, address)
                .be32(uapi::NFTA_NAT_REG_PROTO_MIN, port)
                .be32(uapi::NFTA_NAT_FLAGS, uapi::NF_NAT_RANGE_PROTO_SPECIFIED),
        )
    }

    /// `masquerade`: source NAT to the outgoing interface's address.
    pub(crate) fn masquerade(self) -> Rule {
        self.expression("masq", Attributes::new())
    }
}

/// An nf_tables or conntrack message: nfnetlink's `struct nfgenmsg`
/// (family, version, resource id) and attributes, with its netlink type.
struct NfMessage {
    message_type: u16,
    family: u8,
    resource: u16,
    attributes: Attributes,
}

impl NetlinkSerializable for NfMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        4 + self.attributes.0.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = libc::NFNETLINK_V0 as u8;
        buffer[2..4].copy_from_slice(&self.resource.to_be_bytes());
        buffer[4..].copy_from_slice(&self.attributes.0);
    }
}

/// An nf_tables message of `table`'s family (inet), acknowledged.
fn nft(kind: libc::c_int, flags: u16, attributes: Attributes, what: String) -> Message {
    let message = NfMessage {
        message_type: ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | kind as u16,
        family: libc::NFPROTO_INET as u8,
        resource: 0,
        attributes,
    };
    Message::encode(message, flags | NLM_F_ACK, what, true)
}

/// `messages` between batch begin and batch end: one transaction, applied
/// whole or not at all.
pub(crate) fn transaction(messages: Vec<Message>) -> Vec<Message> {
    let delimiter = |kind: libc::c_int, what: &str| {
        let message = NfMessage {
            message_type: kind as u16,
            family: libc::AF_UNSPEC as u8,
            resource: libc::NFNL_SUBSYS_NFTABLES as u16,
            attributes: Attributes::new(),
        };
        // No ACK asked for: the kernel answers a delimiter only on failure.
        Message::encode(message, 0, what.to_owned(), false)
    };
    let mut batch = Vec::with_capacity(messages.len() + 2);
    batch.push(delimiter(
        libc::NFNL_MSG_BATCH_BEGIN,
        "begin an nftables transaction",
    ));
    batch.extend(messages);
    batch.push(delimiter(
        libc::NFNL_MSG_BATCH_END,
        "commit an nftables transaction",
    ));
    batch
}

/// `add table inet <table>` (an existing one is kept, as `nft add` does).
pub(crate) fn add_table(table: &str) -> Message {
    nft(
        libc::NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        Attributes::new().string(uapi::NFTA_TABLE_NAME, table),
        format!("add nftables table inet {table}"),
    )
}

/// `delete table inet <table>`, and everything in it.
#[cfg(test)]
fn delete_table(table: &str) -> Message {
    nft(
        libc::NFT_MSG_DELTABLE,
        0,
        Attributes::new().string(uapi::NFTA_TABLE_NAME, table),
        format!("delete nftables table inet {table}"),
    )
}

/// A base chain's hook: where in the stack its rules run, and what they do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hook {
    /// `"filter"` or `"nat"`.
    pub(crate) kind: &'static str,
    /// `NF_INET_PRE_ROUTING`, ...
    pub(crate) number: libc::c_int,
    pub(crate) priority: i32,
}

/// `add chain inet <table> <chain>`, a base chain on `hook` (policy
/// accept) or a regular chain (jumped to), kept when it exists.
pub(crate) fn add_chain(table: &str, chain: &str, hook: Option<Hook>) -> Message {
    let mut attributes = Attributes::new()
        .string(uapi::NFTA_CHAIN_TABLE, table)
        .string(uapi::NFTA_CHAIN_NAME, chain);
    let mut what = format!("add nftables chain {table} {chain}");
    if let Some(hook) = hook {
        attributes = attributes
            .nested(
                uapi::NFTA_CHAIN_HOOK,
                Attributes::new()
                    .be32(uapi::NFTA_HOOK_HOOKNUM, hook.number as u32)
                    .be32(uapi::NFTA_HOOK_PRIORITY, hook.priority as u32),
            )
            .be32(uapi::NFTA_CHAIN_POLICY, libc::NF_ACCEPT as u32)
            .string(uapi::NFTA_CHAIN_TYPE, hook.kind);
        what.push_str(&format!(
            " (type {} hook {} priority {})",
            hook.kind, hook.number, hook.priority
        ));
    }
    nft(libc::NFT_MSG_NEWCHAIN, NLM_F_CREATE, attributes, what)
}

/// `flush chain`: deletes every rule of `chain`.
pub(crate) fn flush_chain(table: &str, chain: &str) -> Message {
    nft(
        libc::NFT_MSG_DELRULE,
        0,
        Attributes::new()
            .string(uapi::NFTA_RULE_TABLE, table)
            .string(uapi::NFTA_RULE_CHAIN, chain),
        format!("flush nftables chain {table} {chain}"),
    )
}

/// `add rule inet <table> <chain> ...`, at the end of the chain; `text`
/// says what it does in `nft` words, for error messages.
pub(crate) fn add_rule(table: &str, chain: &str, rule: Rule, text: &str) -> Message {
    nft(
        libc::NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        Attributes::new()
            .string(uapi::NFTA_RULE_TABLE, table)
            .string(uapi::NFTA_RULE_CHAIN, chain)
            .bytes(
                uapi::NFTA_RULE_EXPRESSIONS | NLA_F_NESTED,
                &rule.expressions.0,
            ),
        format!("add nftables rule `{text}` to {table} {chain}"),
    )
}

/// A set (or map) whose elements time out, updated from the packet path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Set {
    pub(crate) name: &'static str,
    /// The key's length in bytes (each field padded to 4) and its `nft`
    /// type (informational: what `nft list` shows).
    pub(crate) key_len: u32,
    pub(crate) key_type: u32,
    /// A map's data: length and type.
    pub(crate) data: Option<(u32, u32)>,
}

/// `add set` / `add map`, kept when it exists.
pub(crate) fn add_set(table: &str, set: &Set, id: u32) -> Message {
    // The flags `nft` gives a set or map that `update` statements fill.
    let flags = match set.data {
        None => uapi::NFT_SET_TIMEOUT | uapi::NFT_SET_EVAL,
        Some(_) => uapi::NFT_SET_MAP | uapi::NFT_SET_TIMEOUT,
    };
    let mut attributes = Attributes::new()
        .string(uapi::NFTA_SET_TABLE, table)
        .string(uapi::NFTA_SET_NAME, set.name)
        .be32(uapi::NFTA_SET_FLAGS, flags)
        .be32(uapi::NFTA_SET_KEY_TYPE, set.key_type)
        .be32(uapi::NFTA_SET_KEY_LEN, set.key_len);
    if let Some((len, kind)) = set.data {
        attributes = attributes
            .be32(uapi::NFTA_SET_DATA_TYPE, kind)
            .be32(uapi::NFTA_SET_DATA_LEN, len);
    }
    // No size: the kernel then starts the hash table small and grows it,
    // and the first `update` statement bound to the set caps it at 65535
    // elements all the same. A size is also the table's initial size
    // (131,072 buckets, 1 MiB for each set), which every map lookup bound
    // to the set walks: 0.2 ms for each, 1.9 ms against 0.5 ms for a NAT.
    attributes = attributes.be32(uapi::NFTA_SET_ID, id);
    nft(
        libc::NFT_MSG_NEWSET,
        NLM_F_CREATE,
        attributes,
        format!("add nftables set {table} {}", set.name),
    )
}

/// `flush set`: deletes every element of `set`.
pub(crate) fn flush_set(table: &str, set: &str) -> Message {
    nft(
        libc::NFT_MSG_DELSETELEM,
        0,
        Attributes::new()
            .string(uapi::NFTA_SET_ELEM_LIST_TABLE, table)
            .string(uapi::NFTA_SET_ELEM_LIST_SET, set),
        format!("flush nftables set {table} {set}"),
    )
}

/// `add element`: `keys` into `set` (a set, not a map), for good (no
/// timeout); a key that is there already is kept.
pub(crate) fn add_elements(table: &str, set: &str, keys: &[Vec<u8>]) -> Message {
    let mut elements = Attributes::new();
    for key in keys {
        elements = elements.nested(
            uapi::NFTA_LIST_ELEM,
            Attributes::new().data(uapi::NFTA_SET_ELEM_KEY, key),
        );
    }
    nft(
        libc::NFT_MSG_NEWSETELEM,
        NLM_F_CREATE,
        Attributes::new()
            .string(uapi::NFTA_SET_ELEM_LIST_TABLE, table)
            .string(uapi::NFTA_SET_ELEM_LIST_SET, set)
            .nested(uapi::NFTA_SET_ELEM_LIST_ELEMENTS, elements),
        format!("add {} elements to nftables set {table} {set}", keys.len()),
    )
}

/// Deletes the conntrack entries of `family` (`AF_INET`, ...) whose mark,
/// under `mask`, is `mark` (ctnetlink's flush with a mark filter): the
/// flows forget their NAT bindings, and their next packet starts anew.
pub(crate) fn flush_conntrack(family: libc::c_int, mark: u32, mask: u32) -> Message {
    let message = NfMessage {
        message_type: ((libc::NFNL_SUBSYS_CTNETLINK as u16) << 8) | uapi::IPCTNL_MSG_CT_DELETE,
        family: family as u8,
        resource: 0,
        attributes: Attributes::new()
            .be32(uapi::CTA_MARK, mark)
            .be32(uapi::CTA_MARK_MASK, mask),
    };
    Message::encode(
        message,
        NLM_F_ACK,
        format!("delete the conntrack entries marked {mark:#x}/{mask:#x}"),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute tree: attribute type (with NLA_F_NESTED) and either
    /// its bytes or its children. Children are sorted (the kernel reads
    /// attributes by type), except a list's elements, whose order counts.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
    enum Tree {
        Bytes(u16, Vec<u8>),
        Nested(u16, Vec<Tree>),
    }

    fn parse(mut bytes: &[u8]) -> Vec<Tree> {
        let mut out = Vec::new();
        while bytes.len() >= 4 {
            let length = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
            let kind = u16::from_ne_bytes([bytes[2], bytes[3]]);
            assert!(
                length >= 4 && length <= bytes.len(),
                "attribute length {length}"
            );
            let value = &bytes[4..length];
            out.push(if kind & NLA_F_NESTED != 0 {
                Tree::Nested(kind, parse(value))
            } else {
                Tree::Bytes(kind, value.to_vec())
            });
            bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
        }
        let list = uapi::NFTA_LIST_ELEM | NLA_F_NESTED;
        if !out
            .iter()
            .all(|t| matches!(t, Tree::Nested(k, _) if *k == list))
        {
            out.sort();
        }
        out
    }

    /// Removes what `nft` sends beside the attributes that make a rule:
    /// ids and user data (for its own listing), and defaults spelled out.
    fn normalize(trees: Vec<Tree>, expression: Option<&str>) -> Vec<Tree> {
        let name = |children: &[Tree]| {
            children.iter().find_map(|c| match c {
                Tree::Bytes(k, v) if *k == uapi::NFTA_EXPR_NAME => {
                    Some(String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
                }
                _ => None,
            })
        };
        trees
            .into_iter()
            .filter(|t| match (t, expression) {
                (Tree::Bytes(4, _), Some("lookup")) => false, // NFTA_LOOKUP_SET_ID
                (Tree::Bytes(2, _), Some("dynset")) => false, // NFTA_DYNSET_SET_ID
                // NFTA_BITWISE_OP mask-and-xor, the default (nft sends it or not)
                (Tree::Bytes(6, v), Some("bitwise")) => v != &[0; 4],
                _ => true,
            })
            .map(|t| match t {
                Tree::Nested(k, children) => {
                    let element = k == uapi::NFTA_LIST_ELEM | NLA_F_NESTED;
                    let inner = if element { name(&children) } else { None };
                    let inner = inner.as_deref().or(expression);
                    Tree::Nested(k, normalize(children, inner))
                }
                other => other,
            })
            .collect()
    }

    /// Whether `ours` says what `nft` said (`theirs`, the hex of its
    /// message after the netlink header), but for the top-level attribute
    /// types in `skip`.
    /// What `nft` sends that we leave out: a set's size (see [`add_set`])
    /// and its user data.
    const NFTA_SET_DESC: u16 = 9;
    const NFTA_SET_USERDATA: u16 = 13;

    fn same(ours: &Message, theirs: &str, skip: &[u16]) {
        let theirs: Vec<u8> = (0..theirs.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&theirs[i..i + 2], 16).unwrap())
            .collect();
        let ours = &ours.bytes()[16..];
        assert_eq!(ours[..4], theirs[..4], "nfgenmsg");
        let keep = |trees: Vec<Tree>| -> Vec<Tree> {
            normalize(trees, None)
                .into_iter()
                .filter(|t| {
                    let (Tree::Bytes(k, _) | Tree::Nested(k, _)) = t;
                    !skip.contains(&(k & !NLA_F_NESTED))
                })
                .collect()
        };
        assert_eq!(keep(parse(&ours[4..])), keep(parse(&theirs[4..])));
    }

    #[test]
    fn attributes_are_padded_to_four_and_nested_with_the_flag() {
        let a = Attributes::new().string(1, "ab").be32(2, 7);
        // Length 7 ("ab" and its NUL after the 4-byte header), padded to 8.
        assert_eq!(
            a.as_bytes(),
            [7, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0, 0, 0, 0, 7]
        );
        let nested = Attributes::new().nested(3, Attributes::new().be64(1, 1));
        assert_eq!(nested.as_bytes()[..4], [16, 0, 3, 0x80]);
        assert_eq!(
            parse(nested.as_bytes()),
            vec![Tree::Nested(
                3 | NLA_F_NESTED,
                vec![Tree::Bytes(1, vec![0, 0, 0, 0, 0, 0, 0, 1])]
            )]
        );
    }

    // What `nft --debug=mnl` 1.0.6 sent for each (table `t`, interface
    // `eth1`, public address 203.0.113.1), payload after the netlink header.

    #[test]
    fn tables_chains_and_sets_as_nft_sends_them() {
        // add table inet t (nft also sends NFTA_TABLE_FLAGS 0)
        same(
            &add_table("t"),
            "0100000006000100740000000800020000000000",
            &[2],
        );
        // chain pre { type nat hook prerouting priority dstnat; policy accept; }
        let hook = Hook {
            kind: "nat",
            number: libc::NF_INET_PRE_ROUTING,
            priority: libc::NF_IP_PRI_NAT_DST,
        };
        same(
            &add_chain("t", "pre", Some(hook)),
            "0100000006000100740000000800030070726500080007006e617400080005000000000114000480080001000000000008000200ffffff9c",
            &[],
        );
        // chain m { }
        same(
            &add_chain("t", "m", None),
            "010000000600010074000000060003006d000000",
            &[],
        );
        // set used { type inet_proto . inet_service; flags timeout; }
        // (nft adds user data, and may add a size; we leave the size to the
        // kernel: see add_set)
        let used = Set {
            name: "used",
            key_len: 8,
            key_type: 0x30d,
            data: None,
        };
        same(
            &add_set("t", &used, 1),
            "0100000006000100740000000900020075736564000000000800030000000030080004000000030d080005000000000808000a000000000114000d00000400000000030800040d0000000100",
            &[NFTA_SET_DESC, NFTA_SET_USERDATA],
        );
        // map owner { type inet_proto . inet_service : ipv4_addr . inet_service; flags timeout; }
        let owner = Set {
            name: "owner",
            key_len: 8,
            key_type: 0x30d,
            data: Some((8, 0x1cd)),
        };
        same(
            &add_set("t", &owner, 1),
            "0100000006000100740000000a0002006f776e65720000000800030000000018080004000000030d080005000000000808000600000001cd080007000000000808000a00000000012a000d00000400000000010400000000030800040d0000000100040800040d00000001000604000000000000",
            &[NFTA_SET_DESC, NFTA_SET_USERDATA],
        );
    }

    const ETH1: [u8; 16] = *b"eth1\0\0\0\0\0\0\0\0\0\0\0\0";

    #[test]
    fn rules_as_nft_sends_them() {
        // nft's registers: its `reg 1` is our REG[0], its `reg 9` REG[1]...
        let (r1, r2, r9, r13) = (1, 2, 9, 13);
        let public = [203, 0, 113, 1];
        // oifname "eth1" ct mark & 0xffff0000 == 0x10000 jump m
        let rule = Rule::new()
            .meta(libc::NFT_META_OIFNAME, r1)
            .equals(r1, &ETH1)
            .ct(libc::NFT_CT_MARK, None, r1)
            .bitwise(r1, &0xffff_0000u32.to_ne_bytes(), &[0; 4])
            .equals(r1, &0x10000u32.to_ne_bytes())
            .jump("m");
        same(
            &add_rule("t", "post", rule, ""),
            "01000000060001007400000009000200706f7374000000003001048024000180090001006d6574610000000014000280080002000000000708000100000000013800018008000100636d70002c0002800800010000000001080002000000000018000380140001006574683100000000000000000000000020000180070001006374000014000280080002000000000308000100000000014c0001800c00010062697477697365003c00028008000100000000010800020000000001080006000000000008000300000000040c000480080001000000ffff0c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000000c0003800800010000000100380001800e000100696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffd060002006d000000",
            &[],
        );
        // meta l4proto udp meta l4proto . ct reply proto-dst != @used
        //   snat ip to 203.0.113.1 : 1024-65535 random
        let rule = Rule::new()
            .meta(libc::NFT_META_L4PROTO, r1)
            .equals(r1, &[libc::IPPROTO_UDP as u8])
            .meta(libc::NFT_META_L4PROTO, r1)
            .ct(libc::NFT_CT_PROTO_DST, Some(Direction::Reply), r9)
            .lookup("used", r1, None, Lookup::NotIn)
            .immediate(r1, &public)
            .immediate(r2, &1024u16.to_be_bytes())
            .immediate(3, &65535u16.to_be_bytes())
            .nat(
                libc::NFT_NAT_SNAT,
                r1,
                Some(r2),
                Some(3),
                uapi::NF_NAT_RANGE_PROTO_SPECIFIED | uapi::NF_NAT_RANGE_PROTO_RANDOM,
            );
        same(
            &add_rule("t", "m", rule, ""),
            "010000000600010074000000060002006d0000009c01048024000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c000380050001001100000024000180090001006d6574610000000014000280080002000000001008000100000000012800018007000100637400001c000280080002000000000c08000100000000090500030001000000380001800b0001006c6f6f6b75700000280002800800020000000001090001007573656400000000080004000000000108000500000000012c0001800e000100696d6d6564696174650000001800028008000100000000010c00028008000100cb0071012c0001800e000100696d6d6564696174650000001800028008000100000000020c00028006000100040000002c0001800e000100696d6d6564696174650000001800028008000100000000030c00028006000100ffff000040000180080001006e61740034000280080001000000000008000200000000020800030000000001080005000000000208000600000000030800070000000006",
            &[],
        );
        // meta l4proto udp update @owner { meta l4proto . ct reply proto-dst
        //   timeout 2s : ct original ip saddr . ct original proto-src }
        let rule = Rule::new()
            .meta(libc::NFT_META_L4PROTO, r1)
            .equals(r1, &[libc::IPPROTO_UDP as u8])
            .meta(libc::NFT_META_L4PROTO, r1)
            .ct(libc::NFT_CT_PROTO_DST, Some(Direction::Reply), r9)
            .ct(libc::NFT_CT_SRC_IP, Some(Direction::Original), r2)
            .ct(libc::NFT_CT_PROTO_SRC, Some(Direction::Original), r13)
            .update("owner", r1, Some(r2), 2000);
        same(
            &add_rule("t", "forw", rule, ""),
            "01000000060001007400000009000200666f7277000000003c01048024000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c000380050001001100000024000180090001006d6574610000000014000280080002000000001008000100000000012800018007000100637400001c000280080002000000000c080001000000000905000300010000002800018007000100637400001c0002800800020000000013080001000000000205000300000000002800018007000100637400001c000280080002000000000b080001000000000d05000300000000004c0001800b00010064796e73657400003c0002800800040000000001080005000000000208000300000000010c00060000000000000007d00a0001006f776e65720000000800020000000001",
            &[],
        );
        // iifname "eth1" meta nfproto ipv4 ip daddr 203.0.113.1 meta l4proto udp
        //   ct mark set 0x10004 dnat ip to meta l4proto . th dport map @owner
        let rule = Rule::new()
            .meta(libc::NFT_META_IIFNAME, r1)
            .equals(r1, &ETH1)
            .meta(libc::NFT_META_NFPROTO, r1)
            .equals(r1, &[libc::NFPROTO_IPV4 as u8])
            .payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 16, 4, r1)
            .equals(r1, &public)
            .meta(libc::NFT_META_L4PROTO, r1)
            .equals(r1, &[libc::IPPROTO_UDP as u8])
            .immediate(r1, &0x10004u32.to_ne_bytes())
            .ct_set(libc::NFT_CT_MARK, r1)
            .meta(libc::NFT_META_L4PROTO, r1)
            .payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, r9)
            .lookup("owner", r1, Some(r1), Lookup::In)
            .nat(libc::NFT_NAT_DNAT, r1, Some(r9), None, 0);
        same(
            &add_rule("t", "pre", rule, ""),
            "01000000060001007400000008000200707265006c02048024000180090001006d6574610000000014000280080002000000000608000100000000013800018008000100636d70002c0002800800010000000001080002000000000018000380140001006574683100000000000000000000000024000180090001006d6574610000000014000280080002000000000f08000100000000012c00018008000100636d700020000280080001000000000108000200000000000c0003800500010002000000340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000001008000400000000042c00018008000100636d700020000280080001000000000108000200000000000c00038008000100cb00710124000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c00038005000100110000002c0001800e000100696d6d6564696174650000001800028008000100000000010c0002800800010004000100200001800700010063740000140002800800020000000003080004000000000124000180090001006d657461000000001400028008000200000000100800010000000001340001800c0001007061796c6f616400240002800800010000000009080002000000000208000300000000020800040000000002380001800b0001006c6f6f6b7570000028000280080002000000000108000300000000010a0001006f776e6572000000080004000000000130000180080001006e617400240002800800010000000001080002000000000208000300000000010800050000000009",
            &[],
        );
        // ct state established,related accept
        let rule = Rule::new()
            .ct(libc::NFT_CT_STATE, None, r1)
            .bitwise(r1, &6u32.to_ne_bytes(), &[0; 4])
            .differs(r1, &[0; 4])
            .accept();
        same(
            &add_rule("t", "forw", rule, ""),
            "01000000060001007400000009000200666f727700000000c40004802000018007000100637400001400028008000200000000000800010000000001440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c00048008000100060000000c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000010c0003800800010000000000300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c0002800800010000000001",
            &[],
        );
        // oifname "eth1" masquerade; drop
        let rule = Rule::new()
            .meta(libc::NFT_META_OIFNAME, r1)
            .equals(r1, &ETH1)
            .masquerade();
        same(
            &add_rule("t", "post", rule, ""),
            "01000000060001007400000009000200706f7374000000007400048024000180090001006d6574610000000014000280080002000000000708000100000000013800018008000100636d70002c0002800800010000000001080002000000000018000380140001006574683100000000000000000000000014000180090001006d6173710000000004000280",
            &[],
        );
        same(
            &add_rule("t", "forw", Rule::new().drop(), ""),
            "01000000060001007400000009000200666f72770000000034000480300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c0002800800010000000000",
            &[],
        );
        // A difference is seen: the same rule with another mark fails.
        let rule = Rule::new()
            .ct(libc::NFT_CT_STATE, None, r1)
            .bitwise(r1, &2u32.to_ne_bytes(), &[0; 4])
            .differs(r1, &[0; 4])
            .accept();
        let result = std::panic::catch_unwind(|| {
            same(
                &add_rule("t", "forw", rule, ""),
                "01000000060001007400000009000200666f727700000000c40004802000018007000100637400001400028008000200000000000800010000000001440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c00048008000100060000000c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000010c0003800800010000000000300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c0002800800010000000001",
                &[],
            )
        });
        assert!(result.is_err(), "the comparison sees a changed mask");
    }

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
                delete_table("netns_test_nothing"),
                add_table("netns_test_other"),
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
            .run(transaction(vec![delete_table("netns_test_other")]))
            .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
        // Every answer was there at once: nothing waited for a missing ack.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The socket stays usable, and what is added again is kept.
        for _ in 0..2 {
            socket
                .run(transaction(vec![
                    add_table("t"),
                    add_chain("t", "m", None),
                    add_rule("t", "m", Rule::new().accept(), "accept"),
                ]))
                .unwrap();
        }
        // A rule naming a set that does not exist fails, naming the rule.
        let error = socket
            .run(transaction(vec![add_rule(
                "t",
                "m",
                Rule::new().lookup("nothing", REG[0], None, Lookup::In),
                "lookup @nothing",
            )]))
            .unwrap_err();
        assert!(error.to_string().contains("`lookup @nothing`"), "{error}");
        // A conntrack flush by mark with nothing to flush succeeds.
        socket
            .run(vec![flush_conntrack(libc::AF_INET, 0x10000, 0xffff0000)])
            .unwrap();
    }
}
