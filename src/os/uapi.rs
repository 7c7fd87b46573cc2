//! The few kernel uAPI numbers and structs that neither libc nor
//! netlink-packet-route define (checked against libc 0.2.191 and
//! netlink-packet-route 0.34). Each is part of the kernel's stable ABI;
//! remove one here when a dependency starts to define it.

/// The fault engine's filters: `include/uapi/linux/pkt_cls.h` (cls_bpf's
/// options, actions, verdicts) and `tc_act/tc_mirred.h`.
pub(crate) mod tc {
    pub(crate) const TCA_BPF_ACT: u16 = 1;
    pub(crate) const TCA_BPF_OPS_LEN: u16 = 4;
    pub(crate) const TCA_BPF_OPS: u16 = 5;
    pub(crate) const TCA_BPF_FLAGS: u16 = 8;
    pub(crate) const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
    pub(crate) const TCA_ACT_KIND: u16 = 1;
    pub(crate) const TCA_ACT_OPTIONS: u16 = 2;
    pub(crate) const TCA_MIRRED_PARMS: u16 = 2;
    pub(crate) const TC_ACT_SHOT: u32 = 2;
    pub(crate) const TC_ACT_STOLEN: i32 = 4;
    pub(crate) const TCA_EGRESS_REDIR: i32 = 1;
}

/// `include/uapi/linux/ethtool.h`: the two legacy ethtool commands the
/// fault engine sends.
pub(crate) mod ethtool {
    pub(crate) const ETHTOOL_GLINK: u32 = 0x0a;
    pub(crate) const ETHTOOL_STXCSUM: u32 = 0x17;
}

/// `include/uapi/linux/netfilter/nf_tables.h`, `nf_nat.h` and
/// `nfnetlink_conntrack.h`: the netlink attributes of the nf_tables objects
/// and expressions netns-test loads, and of the conntrack flush (libc
/// names the message types and enum values, not these).
pub(crate) mod nft {
    pub(crate) const NFTA_LIST_ELEM: u16 = 1;
    pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;
    pub(crate) const NFTA_TABLE_NAME: u16 = 1;
    pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
    pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
    pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
    pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
    pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
    pub(crate) const NFTA_RULE_TABLE: u16 = 1;
    pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
    pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub(crate) const NFTA_SET_TABLE: u16 = 1;
    pub(crate) const NFTA_SET_NAME: u16 = 2;
    pub(crate) const NFTA_SET_FLAGS: u16 = 3;
    pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
    pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
    pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
    pub(crate) const NFTA_SET_DATA_LEN: u16 = 7;
    pub(crate) const NFTA_SET_ID: u16 = 10;
    pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
    pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub(crate) const NFTA_DATA_VALUE: u16 = 1;
    pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
    pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
    pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;
    pub(crate) const NFTA_EXPR_NAME: u16 = 1;
    pub(crate) const NFTA_EXPR_DATA: u16 = 2;
    pub(crate) const NFTA_IMMEDIATE_DREG: u16 = 1;
    pub(crate) const NFTA_IMMEDIATE_DATA: u16 = 2;
    pub(crate) const NFTA_BITWISE_SREG: u16 = 1;
    pub(crate) const NFTA_BITWISE_DREG: u16 = 2;
    pub(crate) const NFTA_BITWISE_LEN: u16 = 3;
    pub(crate) const NFTA_BITWISE_MASK: u16 = 4;
    pub(crate) const NFTA_BITWISE_XOR: u16 = 5;
    pub(crate) const NFTA_BITWISE_OP: u16 = 6;
    /// `enum nft_bitwise_ops`: `(reg & mask) ^ xor`.
    pub(crate) const NFT_BITWISE_MASK_XOR: u32 = 0;
    pub(crate) const NFTA_CMP_SREG: u16 = 1;
    pub(crate) const NFTA_CMP_OP: u16 = 2;
    pub(crate) const NFTA_CMP_DATA: u16 = 3;
    pub(crate) const NFTA_LOOKUP_SET: u16 = 1;
    pub(crate) const NFTA_LOOKUP_SREG: u16 = 2;
    pub(crate) const NFTA_LOOKUP_DREG: u16 = 3;
    pub(crate) const NFTA_LOOKUP_FLAGS: u16 = 5;
    pub(crate) const NFTA_DYNSET_SET_NAME: u16 = 1;
    pub(crate) const NFTA_DYNSET_OP: u16 = 3;
    pub(crate) const NFTA_DYNSET_SREG_KEY: u16 = 4;
    pub(crate) const NFTA_DYNSET_SREG_DATA: u16 = 5;
    pub(crate) const NFTA_DYNSET_TIMEOUT: u16 = 6;
    pub(crate) const NFTA_PAYLOAD_DREG: u16 = 1;
    pub(crate) const NFTA_PAYLOAD_BASE: u16 = 2;
    pub(crate) const NFTA_PAYLOAD_OFFSET: u16 = 3;
    pub(crate) const NFTA_PAYLOAD_LEN: u16 = 4;
    pub(crate) const NFTA_META_DREG: u16 = 1;
    pub(crate) const NFTA_META_KEY: u16 = 2;
    pub(crate) const NFTA_CT_DREG: u16 = 1;
    pub(crate) const NFTA_CT_KEY: u16 = 2;
    pub(crate) const NFTA_CT_DIRECTION: u16 = 3;
    pub(crate) const NFTA_CT_SREG: u16 = 4;
    pub(crate) const NFTA_NAT_TYPE: u16 = 1;
    pub(crate) const NFTA_NAT_FAMILY: u16 = 2;
    pub(crate) const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
    pub(crate) const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
    pub(crate) const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
    pub(crate) const NFTA_NAT_FLAGS: u16 = 7;
    /// `enum nft_set_flags`.
    pub(crate) const NFT_SET_MAP: u32 = 0x8;
    pub(crate) const NFT_SET_TIMEOUT: u32 = 0x10;
    pub(crate) const NFT_SET_EVAL: u32 = 0x20;
    /// `nf_nat.h`: the range gives the port; a random one in it.
    pub(crate) const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
    pub(crate) const NF_NAT_RANGE_PROTO_RANDOM: u32 = 1 << 2;
    /// `nf_conntrack_common.h`: `ct state` bits, and `ct status` DNAT.
    pub(crate) const NF_CT_STATE_ESTABLISHED: u32 = 1 << 1;
    pub(crate) const NF_CT_STATE_RELATED: u32 = 1 << 2;
    pub(crate) const NF_CT_STATE_NEW: u32 = 1 << 3;
    pub(crate) const IPS_CONFIRMED: u32 = 1 << 3;
    pub(crate) const IPS_DST_NAT: u32 = 1 << 5;
    /// `nfnetlink_conntrack.h`: delete (flush) conntrack entries, those
    /// whose mark matches under a mask.
    pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = 2;
    pub(crate) const CTA_MARK: u16 = 8;
    pub(crate) const CTA_MARK_MASK: u16 = 21;
}

/// `include/uapi/linux/capability.h`: what `capget(2)` reads and writes.
pub(crate) mod capability {
    /// 64-bit capability sets, in two [`CapData`].
    pub(crate) const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

    /// `struct __user_cap_header_struct`.
    #[repr(C)]
    pub(crate) struct CapHeader {
        pub(crate) version: u32,
        /// 0: the calling thread.
        pub(crate) pid: i32,
    }

    /// `struct __user_cap_data_struct`: 32 bits of each set.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub(crate) struct CapData {
        pub(crate) effective: u32,
        pub(crate) permitted: u32,
        pub(crate) inheritable: u32,
    }
}
