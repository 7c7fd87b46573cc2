//! The few kernel uAPI numbers that neither libc nor the netlink-packet
//! crates define (checked against libc 0.2.191, netlink-packet-route 0.34,
//! netlink-packet-netfilter 0.4). Each is part of the kernel's stable ABI;
//! remove one here when a dependency starts to define it.

/// The fault engine's filters: `include/uapi/linux/pkt_cls.h` (cls_bpf's
/// options, actions, verdicts), `tc_act/tc_mirred.h`, `if_ether.h`,
/// `filter.h` (classic BPF).
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
    pub(crate) const ETH_P_ALL: u16 = 0x0003;
    /// Classic BPF `ret #k` (BPF_RET | BPF_K).
    pub(crate) const BPF_RET_K: u16 = 0x06;
}
