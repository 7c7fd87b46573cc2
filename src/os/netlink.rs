//! A minimal, synchronous rtnetlink client: the few messages veth setup needs
//! (new link, set link, delete link, new address, new route), built by hand
//! and sent in batches, each message acknowledged.
//!
//! rtnetlink (the crate) needs a tokio runtime per namespace; the hot path of
//! a veth test needs two round trips and no runtime.

use crate::error::Error;
use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_NET_NS_FD: u16 = 28;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_MASTER: u16 = 10;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const RTA_DST: u16 = 1;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;

/// One netlink message under construction: header, fixed part, attributes.
pub(crate) struct Message {
    bytes: Vec<u8>,
    /// What the message does, for error messages.
    what: String,
    /// Offsets of open nested attributes.
    nests: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16, what: String) -> Message {
        let mut bytes = vec![0u8; NLMSG_HDRLEN];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Message {
            bytes,
            what,
            nests: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) {
        let mut info = [0u8; 16];
        info[4..8].copy_from_slice(&index.to_ne_bytes());
        info[8..12].copy_from_slice(&flags.to_ne_bytes());
        info[12..16].copy_from_slice(&change.to_ne_bytes());
        self.push(&info);
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        let mut header = [0u8; 4];
        header[0..2].copy_from_slice(&len.to_ne_bytes());
        header[2..4].copy_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&header);
        self.push(data);
    }

    /// One transmit and one receive queue. A veth gets one of each per
    /// possible CPU by default, each with its sysfs entries to create and
    /// remove; a test's link needs no more than one.
    fn one_queue_each_way(&mut self) {
        self.attr(IFLA_NUM_TX_QUEUES, &1u32.to_ne_bytes());
        self.attr(IFLA_NUM_RX_QUEUES, &1u32.to_ne_bytes());
    }

    fn attr_str(&mut self, kind: u16, value: &str) {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn begin_nest(&mut self, kind: u16) {
        self.nests.push(self.bytes.len());
        self.attr(kind | NLA_F_NESTED, &[]);
    }

    fn end_nest(&mut self) {
        let start = self.nests.pop().expect("nest opened");
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> (Vec<u8>, String) {
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        (self.bytes, self.what)
    }
}

/// Creates a veth pair in the socket's namespace: `name` (index `index`, up)
/// here, `peer_name` (index `peer_index`) in the namespace behind `peer_ns`.
pub(crate) fn new_veth(
    name: &str,
    index: i32,
    peer_name: &str,
    peer_index: i32,
    peer_ns: std::os::fd::BorrowedFd<'_>,
    mtu: u32,
) -> Message {
    let up = libc::IFF_UP as u32;
    let mut m = Message::new(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("create veth pair {name} / {peer_name}"),
    );
    m.ifinfo(index, up, up);
    m.attr_str(IFLA_IFNAME, name);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    m.one_queue_each_way();
    m.begin_nest(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "veth");
    m.begin_nest(IFLA_INFO_DATA);
    m.begin_nest(VETH_INFO_PEER);
    // The peer's ifinfomsg, then its attributes. It cannot be set up here:
    // the kernel opens it before the pair is joined (ENOTCONN).
    m.ifinfo(peer_index, 0, 0);
    m.attr_str(IFLA_IFNAME, peer_name);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    m.attr(IFLA_NET_NS_FD, &peer_ns.as_raw_fd().to_ne_bytes());
    m.one_queue_each_way();
    m.end_nest();
    m.end_nest();
    m.end_nest();
    m
}

/// Sets the link with `index` up.
pub(crate) fn set_up(index: i32, name: &str) -> Message {
    let up = libc::IFF_UP as u32;
    let mut m = Message::new(RTM_NEWLINK, 0, format!("set {name} up"));
    m.ifinfo(index, up, up);
    m
}

/// Sets the link with `index` down.
pub(crate) fn set_down(index: i32, name: &str) -> Message {
    let mut m = Message::new(RTM_NEWLINK, 0, format!("set {name} down"));
    m.ifinfo(index, 0, libc::IFF_UP as u32);
    m
}

/// Renames the link with `index` (it must be down).
pub(crate) fn rename(index: i32, from: &str, to: &str) -> Message {
    let mut m = Message::new(RTM_NEWLINK, 0, format!("rename {from} to {to}"));
    m.ifinfo(index, 0, 0);
    m.attr_str(IFLA_IFNAME, to);
    m
}

/// Creates a bridge `name` with `index`, up.
pub(crate) fn new_bridge(name: &str, index: i32) -> Message {
    let up = libc::IFF_UP as u32;
    let mut m = Message::new(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("create bridge {name}"),
    );
    m.ifinfo(index, up, up);
    m.attr_str(IFLA_IFNAME, name);
    m.begin_nest(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "bridge");
    m.end_nest();
    m
}

/// Makes the link with `index` a port of the bridge `master`, and sets it up.
pub(crate) fn enslave_and_up(index: i32, name: &str, master: i32) -> Message {
    let up = libc::IFF_UP as u32;
    let mut m = Message::new(RTM_NEWLINK, 0, format!("add {name} to its bridge"));
    m.ifinfo(index, up, up);
    m.attr(IFLA_MASTER, &(master as u32).to_ne_bytes());
    m
}

/// Adds a route to `destination/prefix` via `gateway`.
pub(crate) fn add_route(
    destination: std::net::IpAddr,
    prefix: u8,
    gateway: std::net::IpAddr,
) -> Message {
    let (family, dst) = family_and_octets(destination);
    let (_, via) = family_and_octets(gateway);
    let mut m = Message::new(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add route to {destination}/{prefix} via {gateway}"),
    );
    let mut rtm = [0u8; 12];
    rtm[0] = family;
    rtm[1] = prefix;
    rtm[4] = libc::RT_TABLE_MAIN;
    rtm[5] = libc::RTPROT_BOOT;
    rtm[6] = libc::RT_SCOPE_UNIVERSE;
    rtm[7] = libc::RTN_UNICAST;
    m.push(&rtm);
    if prefix > 0 {
        m.attr(RTA_DST, &dst);
    }
    m.attr(RTA_GATEWAY, &via);
    m
}

/// Deletes the link with `index`.
pub(crate) fn delete_link(index: i32, name: &str) -> Message {
    let mut m = Message::new(RTM_DELLINK, 0, format!("delete link {name}"));
    m.ifinfo(index, 0, 0);
    m
}

/// Adds `address/prefix` to the link with `index`, usable at once (no DAD).
pub(crate) fn add_address(index: i32, address: std::net::IpAddr, prefix: u8) -> Message {
    let (family, octets) = family_and_octets(address);
    let mut m = Message::new(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add address {address}/{prefix} to link {index}"),
    );
    let mut ifa = [0u8; 8];
    ifa[0] = family;
    ifa[1] = prefix;
    ifa[2] = IFA_F_NODAD as u8;
    ifa[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    m.push(&ifa);
    m.attr(IFA_LOCAL, &octets);
    m.attr(IFA_ADDRESS, &octets);
    m.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    m
}

/// Adds a default route via `gateway` on the link with `index`.
pub(crate) fn add_default_route(index: i32, gateway: std::net::IpAddr) -> Message {
    let (family, octets) = family_and_octets(gateway);
    let mut m = Message::new(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add default route via {gateway}"),
    );
    let mut rtm = [0u8; 12];
    rtm[0] = family;
    rtm[4] = libc::RT_TABLE_MAIN;
    rtm[5] = libc::RTPROT_BOOT;
    rtm[6] = libc::RT_SCOPE_UNIVERSE;
    rtm[7] = libc::RTN_UNICAST;
    m.push(&rtm);
    m.attr(RTA_GATEWAY, &octets);
    m.attr(RTA_OIF, &(index as u32).to_ne_bytes());
    m
}

// The fault engine's plumbing: a veth pair inside one namespace that
// carries nothing to its stack, the clsact qdisc, and two classic-BPF
// filters (cls_bpf): one that drops everything in direct-action mode, one
// that matches everything and redirects it with act_mirred.

const RTM_NEWTFILTER: u16 = 44;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_CLSACT_HANDLE: u32 = 0xFFFF_0000;
const TC_H_MIN_INGRESS: u32 = 0xFFF2;
const TC_H_MIN_EGRESS: u32 = 0xFFF3;
const TCA_BPF_ACT: u16 = 1;
const TCA_BPF_OPS_LEN: u16 = 4;
const TCA_BPF_OPS: u16 = 5;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
const ETH_P_ALL: u16 = 0x0003;
/// Classic BPF `ret #k`.
const BPF_RET_K: u16 = 0x06;

/// Creates a veth pair `name` / `peer_name`, both in the socket's
/// namespace, down, with `mtu`.
pub(crate) fn new_inner_veth(
    name: &str,
    index: i32,
    peer_name: &str,
    peer_index: i32,
    mtu: u32,
) -> Message {
    let mut m = Message::new(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("create veth pair {name} / {peer_name}"),
    );
    m.ifinfo(index, 0, 0);
    m.attr_str(IFLA_IFNAME, name);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    m.one_queue_each_way();
    m.begin_nest(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "veth");
    m.begin_nest(IFLA_INFO_DATA);
    m.begin_nest(VETH_INFO_PEER);
    m.ifinfo(peer_index, 0, 0);
    m.attr_str(IFLA_IFNAME, peer_name);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    m.one_queue_each_way();
    m.end_nest();
    m.end_nest();
    m.end_nest();
    m
}

/// Sets the link with `index` up with no ARP and no IPv6 address of its
/// own (address generation mode none), so that its stack sends nothing.
pub(crate) fn set_up_silent(index: i32, name: &str) -> Message {
    let flags = (libc::IFF_UP | libc::IFF_NOARP) as u32;
    let mut m = Message::new(RTM_NEWLINK, 0, format!("set {name} up, silent"));
    m.ifinfo(index, flags, flags);
    m.begin_nest(IFLA_AF_SPEC);
    m.begin_nest(libc::AF_INET6 as u16);
    m.attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
    m.end_nest();
    m.end_nest();
    m
}

fn tcmsg_with(m: &mut Message, index: i32, handle: u32, parent: u32, info: u32) {
    // struct tcmsg: family, pad[3], ifindex, handle, parent, info.
    let mut tc = [0u8; 20];
    tc[4..8].copy_from_slice(&index.to_ne_bytes());
    tc[8..12].copy_from_slice(&handle.to_ne_bytes());
    tc[12..16].copy_from_slice(&parent.to_ne_bytes());
    tc[16..20].copy_from_slice(&info.to_ne_bytes());
    m.push(&tc);
}

/// Adds a clsact qdisc (the hooks for ingress and egress filters) to the
/// link with `index`.
pub(crate) fn add_clsact(index: i32, name: &str) -> Message {
    let mut m = Message::new(
        RTM_NEWQDISC,
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add a clsact qdisc to {name}"),
    );
    tcmsg_with(&mut m, index, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0);
    m.attr_str(TCA_KIND, "clsact");
    m
}

/// Removes the clsact qdisc of the link with `index`, and its filters.
pub(crate) fn delete_clsact(index: i32, name: &str) -> Message {
    let mut m = Message::new(
        RTM_DELQDISC,
        0,
        format!("remove the clsact qdisc of {name}"),
    );
    tcmsg_with(&mut m, index, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0);
    m
}

/// A cls_bpf filter on a clsact hook, for every protocol, running the
/// one-instruction classic BPF program `ret #k`.
fn bpf_filter(index: i32, hook: u32, k: u32, what: String) -> Message {
    let mut m = Message::new(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, what);
    let info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
    tcmsg_with(&mut m, index, 1, TC_H_CLSACT_HANDLE | hook, info);
    m.attr_str(TCA_KIND, "bpf");
    m.begin_nest(TCA_OPTIONS);
    // struct sock_filter: code u16, jt u8, jf u8, k u32.
    let mut program = [0u8; 8];
    program[0..2].copy_from_slice(&BPF_RET_K.to_ne_bytes());
    program[4..8].copy_from_slice(&k.to_ne_bytes());
    m.attr(TCA_BPF_OPS_LEN, &1u16.to_ne_bytes());
    m.attr(TCA_BPF_OPS, &program);
    m
}

/// Drops every frame the link with `index` receives, before its stack sees
/// it (cls_bpf in direct-action mode returning TC_ACT_SHOT). Packet
/// sockets still see the frames: they tap in before.
pub(crate) fn drop_ingress(index: i32, name: &str) -> Message {
    let mut m = bpf_filter(
        index,
        TC_H_MIN_INGRESS,
        TC_ACT_SHOT,
        format!("add a drop-all ingress filter to {name}"),
    );
    m.attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
    m.end_nest();
    m
}

/// Redirects every frame the link with `index` transmits to the link with
/// `to`, which transmits it instead (cls_bpf matching all, act_mirred
/// egress redirect).
pub(crate) fn redirect_egress(index: i32, name: &str, to: i32) -> Message {
    let mut m = bpf_filter(
        index,
        TC_H_MIN_EGRESS,
        u32::MAX,
        format!("add a redirecting egress filter to {name}"),
    );
    m.begin_nest(TCA_BPF_ACT);
    m.begin_nest(1);
    m.attr_str(TCA_ACT_KIND, "mirred");
    m.begin_nest(TCA_ACT_OPTIONS);
    // struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex.
    let mut parms = [0u8; 28];
    parms[8..12].copy_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    parms[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    parms[24..28].copy_from_slice(&(to as u32).to_ne_bytes());
    m.attr(TCA_MIRRED_PARMS, &parms);
    m.end_nest();
    m.end_nest();
    m.end_nest();
    m.end_nest();
    m
}

fn family_and_octets(address: std::net::IpAddr) -> (u8, Vec<u8>) {
    match address {
        std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

/// A NETLINK_ROUTE socket. It talks to the network namespace of the thread
/// that opened it, forever, whichever thread uses it later.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Netlink, Error> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(Error::new(
                "socket(AF_NETLINK, NETLINK_ROUTE)",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends `messages` in one batch and waits for every acknowledgement.
    /// The first failure is returned, naming the message that failed.
    pub(crate) fn run(&mut self, messages: Vec<Message>) -> Result<(), Error> {
        let mut batch = Vec::new();
        let mut pending = Vec::new();
        for message in messages {
            self.seq = self.seq.wrapping_add(1);
            let (bytes, what) = message.finish(self.seq);
            batch.extend_from_slice(&bytes);
            pending.push((self.seq, what));
        }
        // SAFETY: sends our buffer to the kernel (destination: the default
        // peer of a netlink socket, pid 0).
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), batch.as_ptr().cast(), batch.len(), 0) };
        if sent < 0 {
            return Err(Error::new(
                "send netlink request",
                io::Error::last_os_error(),
            ));
        }
        let mut first_error: Option<Error> = None;
        let mut buffer = vec![0u8; 16384];
        while !pending.is_empty() {
            // SAFETY: receives into our buffer, at most its length.
            let received = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if received < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::new("receive netlink acknowledgement", error));
            }
            let mut rest = &buffer[..received as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > rest.len() {
                    break;
                }
                if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                    let errno = i32::from_ne_bytes(rest[16..20].try_into().unwrap());
                    if let Some(at) = pending.iter().position(|(s, _)| *s == seq) {
                        let (_, what) = pending.remove(at);
                        if errno != 0 && first_error.is_none() {
                            first_error =
                                Some(Error::new(what, io::Error::from_raw_os_error(-errno)));
                        }
                    }
                }
                rest = &rest[((len + 3) & !3).min(rest.len())..];
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
