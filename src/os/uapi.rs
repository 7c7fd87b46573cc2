//! The few kernel uAPI numbers that neither libc nor the netlink-packet
//! crates define (checked against libc 0.2.191, netlink-packet-route 0.34,
//! netlink-packet-netfilter 0.4). Each is part of the kernel's stable ABI;
//! remove one here when a dependency starts to define it.

/// `include/uapi/linux/pkt_sched.h`: the attributes of a tbf qdisc's
/// `TCA_OPTIONS`, and `struct tc_ratespec`'s link layer.
pub(crate) mod tbf {
    pub(crate) const TCA_TBF_PARMS: u16 = 1;
    pub(crate) const TCA_TBF_RATE64: u16 = 4;
    pub(crate) const TCA_TBF_BURST: u16 = 6;
    pub(crate) const TC_LINKLAYER_ETHERNET: u8 = 1;
}

/// `include/uapi/linux/netfilter/nf_tables.h`: the attributes of the two
/// nf_tables expressions that netlink-packet-netfilter has no type for.
pub(crate) mod nft {
    /// `enum nft_ng_attributes` (expression `numgen`).
    pub(crate) const NFTA_NG_DREG: u16 = 1;
    pub(crate) const NFTA_NG_MODULUS: u16 = 2;
    pub(crate) const NFTA_NG_TYPE: u16 = 3;
    /// `enum nft_byteorder_attributes` (expression `byteorder`).
    pub(crate) const NFTA_BYTEORDER_SREG: u16 = 1;
    pub(crate) const NFTA_BYTEORDER_DREG: u16 = 2;
    pub(crate) const NFTA_BYTEORDER_OP: u16 = 3;
    pub(crate) const NFTA_BYTEORDER_LEN: u16 = 4;
    pub(crate) const NFTA_BYTEORDER_SIZE: u16 = 5;
}
