//! The few kernel uAPI numbers and structs that neither libc nor the netlink-packet
//! crates define (checked against libc 0.2.191, netlink-packet-route 0.34,
//! netlink-packet-netfilter 0.4). Each is part of the kernel's stable ABI;
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

/// `include/uapi/linux/netfilter/nf_tables.h` and `nf_nat.h`: the attributes
/// of the nf_tables `nat` expression, which netlink-packet-netfilter has no
/// type for.
pub(crate) mod nft {
    /// `enum nft_nat_attributes`.
    pub(crate) const NFTA_NAT_TYPE: u16 = 1;
    pub(crate) const NFTA_NAT_FAMILY: u16 = 2;
    pub(crate) const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
    pub(crate) const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
    pub(crate) const NFTA_NAT_FLAGS: u16 = 7;
    /// The range gives the port.
    pub(crate) const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
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
