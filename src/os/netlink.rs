//! A minimal, synchronous netlink client: the few rtnetlink messages veth
//! setup and topologies need (new link, set link, delete link, new address,
//! new route, qdiscs), built with netlink-packet-route's types and sent on a
//! netlink-sys socket in batches, each message acknowledged.
//!
//! rtnetlink (the crate) needs a tokio runtime per namespace; the hot path of
//! a veth test needs two round trips and no runtime. So the messages come from
//! the rtnetlink project's message crates, and the batching is ours: several
//! requests in one `send`, the acknowledgements matched by sequence number,
//! the first failure returned naming the message that failed.

use crate::error::Error;
use crate::os::uapi::tc;
use netlink_packet_core::{
    DefaultNla, ErrorBuffer, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST, NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_sys::Socket;
use nix::libc;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// How long [`Netlink::run`] waits for an acknowledgement the kernel has not
/// queued by the time `send` returns. It handles requests while sending, so
/// this only guards against a request it never answers.
const ACK_TIMEOUT_MS: u16 = 10_000;

/// One netlink message, encoded, and what it does (for error messages).
pub(crate) struct Message {
    bytes: Vec<u8>,
    what: String,
    /// Whether the kernel acknowledges it (it asks for an ACK): nf_tables'
    /// batch delimiters do not, and are answered only when they fail.
    acked: bool,
}

impl Message {
    /// A request that the kernel acknowledges.
    fn request(inner: RouteNetlinkMessage, flags: u16, what: String) -> Message {
        Message::encode(inner, flags | NLM_F_ACK, what, true)
    }

    /// Encodes `inner` with `flags` (and `NLM_F_REQUEST`); the sequence
    /// number is set by [`Netlink::run`].
    pub(crate) fn encode<I: NetlinkSerializable>(
        inner: I,
        flags: u16,
        what: String,
        acked: bool,
    ) -> Message {
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        Message { bytes, what, acked }
    }

    /// The encoded message, netlink header first.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn link_message(index: i32, up: Option<bool>, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index as u32;
    if let Some(up) = up {
        link.header.change_mask = LinkFlags::Up;
        if up {
            link.header.flags = LinkFlags::Up;
        }
    }
    link.attributes = attributes;
    link
}

/// Creates a veth pair in the socket's namespace: `name` (index `index`, up)
/// here, `peer_name` (index `peer_index`) in the namespace behind `peer_ns`.
///
/// Each end gets one transmit and one receive queue. A veth gets one of
/// each per possible CPU by default, each with its sysfs entries to create
/// and remove; a test's link needs no more than one.
pub(crate) fn new_veth(
    name: &str,
    index: i32,
    peer_name: &str,
    peer_index: i32,
    peer_ns: BorrowedFd<'_>,
    mtu: u32,
) -> Message {
    // The peer cannot be set up here: the kernel opens it before the pair
    // is joined (ENOTCONN).
    let peer = link_message(
        peer_index,
        None,
        vec![
            LinkAttribute::IfName(peer_name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(peer_ns.as_raw_fd()),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
        ],
    );
    let link = link_message(
        index,
        Some(true),
        vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ],
    );
    Message::request(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("create veth pair {name} / {peer_name}"),
    )
}

/// Sets the link with `index` up.
pub(crate) fn set_up(index: i32, name: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::SetLink(link_message(index, Some(true), Vec::new())),
        0,
        format!("set {name} up"),
    )
}

/// Sets the link with `index` down.
pub(crate) fn set_down(index: i32, name: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::SetLink(link_message(index, Some(false), Vec::new())),
        0,
        format!("set {name} down"),
    )
}

/// Renames the link with `index` (it must be down).
pub(crate) fn rename(index: i32, from: &str, to: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::SetLink(link_message(
            index,
            None,
            vec![LinkAttribute::IfName(to.to_owned())],
        )),
        0,
        format!("rename {from} to {to}"),
    )
}

/// Creates a bridge `name` with `index`, up.
pub(crate) fn new_bridge(name: &str, index: i32) -> Message {
    let bridge = link_message(
        index,
        Some(true),
        vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ],
    );
    Message::request(
        RouteNetlinkMessage::NewLink(bridge),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("create bridge {name}"),
    )
}

/// Makes the link with `index` a port of the bridge `master`, and sets it up.
pub(crate) fn enslave_and_up(index: i32, name: &str, master: i32) -> Message {
    Message::request(
        RouteNetlinkMessage::SetLink(link_message(
            index,
            Some(true),
            vec![LinkAttribute::Controller(master as u32)],
        )),
        0,
        format!("add {name} to its bridge"),
    )
}

/// Deletes the link with `index`.
pub(crate) fn delete_link(index: i32, name: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::DelLink(link_message(index, None, Vec::new())),
        0,
        format!("delete link {name}"),
    )
}

/// Adds `address/prefix` to the link with `index`, usable at once (no DAD).
pub(crate) fn add_address(index: i32, address: IpAddr, prefix: u8) -> Message {
    let mut m = AddressMessage::default();
    m.header.family = family(address);
    m.header.prefix_len = prefix;
    m.header.flags = AddressHeaderFlags::Nodad;
    m.header.scope = AddressScope::Universe;
    m.header.index = index as u32;
    m.attributes = vec![
        AddressAttribute::Local(address),
        AddressAttribute::Address(address),
        AddressAttribute::Flags(AddressFlags::Nodad),
    ];
    Message::request(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add address {address}/{prefix} to link {index}"),
    )
}

fn route_message(destination: IpAddr, prefix: u8, attributes: Vec<RouteAttribute>) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(destination);
    m.header.destination_prefix_length = prefix;
    m.header.table = libc::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes = attributes;
    m
}

/// Adds a route to `destination/prefix` via `gateway`.
pub(crate) fn add_route(destination: IpAddr, prefix: u8, gateway: IpAddr) -> Message {
    let mut attributes = Vec::with_capacity(2);
    if prefix > 0 {
        attributes.push(RouteAttribute::Destination(route_address(destination)));
    }
    attributes.push(RouteAttribute::Gateway(route_address(gateway)));
    Message::request(
        RouteNetlinkMessage::NewRoute(route_message(destination, prefix, attributes)),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add route to {destination}/{prefix} via {gateway}"),
    )
}

/// Adds a default route via `gateway` on the link with `index`.
pub(crate) fn add_default_route(index: i32, gateway: IpAddr) -> Message {
    let attributes = vec![
        RouteAttribute::Gateway(route_address(gateway)),
        RouteAttribute::Oif(index as u32),
    ];
    Message::request(
        RouteNetlinkMessage::NewRoute(route_message(gateway, 0, attributes)),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add default route via {gateway}"),
    )
}

/// Asks which route the kernel takes to `destination` out of the link
/// `index` (answered by one route message: of type local when the address
/// is this namespace's own and takes packets).
pub(crate) fn get_route(destination: IpAddr, index: i32) -> Message {
    let prefix = if destination.is_ipv4() { 32 } else { 128 };
    let attributes = vec![
        RouteAttribute::Destination(route_address(destination)),
        RouteAttribute::Oif(index as u32),
    ];
    let mut m = route_message(destination, prefix, attributes);
    m.header.table = 0;
    m.header.protocol = RouteProtocol::Unspec;
    m.header.kind = RouteType::Unspec;
    Message::request(
        RouteNetlinkMessage::GetRoute(m),
        0,
        format!("look up the route to {destination}"),
    )
}

/// Asks for every IPv6 address of the namespace (a dump).
pub(crate) fn dump_ipv6_addresses() -> Message {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    Message::encode(
        RouteNetlinkMessage::GetAddress(m),
        NLM_F_DUMP,
        "list the IPv6 addresses".into(),
        false,
    )
}

// The fault engine's plumbing: a veth pair inside one namespace that
// carries nothing to its stack, the clsact qdisc, and two classic-BPF
// filters (cls_bpf): one that drops everything in direct-action mode, one
// that redirects what its program takes (everything, or the traffic the
// direction's impairments select) with act_mirred.
// netlink-packet-route has no type for classic BPF programs: the filters'
// options go as raw attributes.

/// Creates a veth pair `name` / `peer_name`, both in the socket's
/// namespace, down, with `mtu`.
/// The first bytes of the names of the fault engine's veth pairs: `f-eth0`,
/// where the redirect sends what `eth0` sends, and `f-eth0e`, where the
/// engine reads it.
pub(crate) const FAULT_ENGINE_PREFIX: &str = "f-";

/// Whether `name` is the end of a fault engine's veth pair that the engine
/// reads (`f-eth0e`): a capture shows what it carries through `f-eth0`.
pub(crate) fn is_fault_engine_reader(name: &str) -> bool {
    name.starts_with(FAULT_ENGINE_PREFIX) && name.ends_with('e')
}

pub(crate) fn new_inner_veth(
    name: &str,
    index: i32,
    peer_name: &str,
    peer_index: i32,
    mtu: u32,
) -> Message {
    let peer = link_message(
        peer_index,
        None,
        vec![
            LinkAttribute::IfName(peer_name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
        ],
    );
    let link = link_message(
        index,
        None,
        vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ],
    );
    Message::request(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("create veth pair {name} / {peer_name}"),
    )
}

/// Sets the link with `index`, still down, to no ARP and no IPv6 address of
/// its own (address generation mode none). A veth pair's second end to go
/// up has its carrier at once, and the kernel makes its link-local address
/// before it reads the address mode of the same message: silence both ends
/// first, then [`set_up_silent`].
pub(crate) fn silence(index: i32, name: &str) -> Message {
    let mut link = link_message(
        index,
        None,
        vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )])],
    );
    link.header.flags = LinkFlags::Noarp;
    link.header.change_mask = LinkFlags::Noarp;
    Message::request(
        RouteNetlinkMessage::SetLink(link),
        0,
        format!("set {name} silent"),
    )
}

/// Sets the link with `index` up with no ARP and no IPv6 address of its
/// own (address generation mode none), so that its stack sends nothing.
pub(crate) fn set_up_silent(index: i32, name: &str) -> Message {
    let mut link = link_message(
        index,
        None,
        vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )])],
    );
    link.header.flags = LinkFlags::Up | LinkFlags::Noarp;
    link.header.change_mask = LinkFlags::Up | LinkFlags::Noarp;
    Message::request(
        RouteNetlinkMessage::SetLink(link),
        0,
        format!("set {name} up, silent"),
    )
}

/// The clsact qdisc of the link with `index`.
fn clsact(index: i32, attributes: Vec<TcAttribute>) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = index;
    m.header.handle = TcHandle {
        major: 0xFFFF,
        minor: 0,
    };
    m.header.parent = TcHandle::CLSACT;
    m.attributes = attributes;
    m
}

/// Adds a clsact qdisc (the hooks for ingress and egress filters) to the
/// link with `index`.
pub(crate) fn add_clsact(index: i32, name: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::NewQueueDiscipline(clsact(
            index,
            vec![TcAttribute::Kind("clsact".into())],
        )),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add a clsact qdisc to {name}"),
    )
}

/// Removes the clsact qdisc of the link with `index`, and its filters.
pub(crate) fn delete_clsact(index: i32, name: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::DelQueueDiscipline(clsact(index, Vec::new())),
        0,
        format!("remove the clsact qdisc of {name}"),
    )
}

/// One netlink attribute, encoded: length, kind, data, padding.
fn raw_attribute(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + data.len() + 3);
    bytes.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(data);
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    bytes
}

/// A cls_bpf filter on a clsact hook (`TcHandle::MIN_INGRESS` or
/// `MIN_EGRESS`), handle 1, for every protocol, running the classic BPF
/// `program`, with `more` options after it. `replace`: the filter with
/// that handle is there, and takes the new program at once (the kernel
/// swaps programs under RCU: no frame goes unfiltered meanwhile).
fn bpf_filter(
    index: i32,
    hook: u16,
    program: &[libc::sock_filter],
    more: &[u8],
    replace: bool,
    what: String,
) -> Message {
    let mut m = TcMessage::default();
    m.header.index = index;
    m.header.handle = TcHandle { major: 0, minor: 1 };
    m.header.parent = TcHandle {
        major: 0xFFFF,
        minor: hook,
    };
    // Priority 1, protocol ETH_P_ALL (in network order).
    m.header.info = (1u32 << 16) | u32::from((libc::ETH_P_ALL as u16).to_be());
    // struct sock_filter: code u16, jt u8, jf u8, k u32.
    let mut code = Vec::with_capacity(program.len() * 8);
    for op in program {
        code.extend_from_slice(&op.code.to_ne_bytes());
        code.push(op.jt);
        code.push(op.jf);
        code.extend_from_slice(&op.k.to_ne_bytes());
    }
    let mut options = raw_attribute(tc::TCA_BPF_OPS_LEN, &(program.len() as u16).to_ne_bytes());
    options.extend(raw_attribute(tc::TCA_BPF_OPS, &code));
    options.extend_from_slice(more);
    m.attributes = vec![
        TcAttribute::Kind("bpf".into()),
        TcAttribute::Other(DefaultNla::new(libc::TCA_OPTIONS | NLA_F_NESTED, options)),
    ];
    let flags = if replace {
        NLM_F_CREATE
    } else {
        NLM_F_CREATE | NLM_F_EXCL
    };
    Message::request(RouteNetlinkMessage::NewTrafficFilter(m), flags, what)
}

/// `ret #k`: a program of one instruction.
fn returns(k: u32) -> [libc::sock_filter; 1] {
    [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }]
}

/// Drops every frame the link with `index` receives, before its stack sees
/// it (cls_bpf in direct-action mode returning TC_ACT_SHOT). Packet
/// sockets still see the frames: they tap in before.
pub(crate) fn drop_ingress(index: i32, name: &str) -> Message {
    let flags = raw_attribute(
        tc::TCA_BPF_FLAGS,
        &tc::TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes(),
    );
    bpf_filter(
        index,
        TcHandle::MIN_INGRESS,
        &returns(tc::TC_ACT_SHOT),
        &flags,
        false,
        format!("add a drop-all ingress filter to {name}"),
    )
}

/// Redirects the frames the link with `index` transmits that `program`
/// (classic BPF) takes, those for which it returns non-zero, to the link
/// with `to`, which transmits them instead (cls_bpf, act_mirred egress
/// redirect); the others go on as before. `replace`: the filter is there
/// and takes this program instead.
pub(crate) fn redirect_egress(
    index: i32,
    name: &str,
    to: i32,
    program: &[libc::sock_filter],
    replace: bool,
) -> Message {
    // struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex.
    let mut parms = [0u8; 28];
    parms[8..12].copy_from_slice(&tc::TC_ACT_STOLEN.to_ne_bytes());
    parms[20..24].copy_from_slice(&tc::TCA_EGRESS_REDIR.to_ne_bytes());
    parms[24..28].copy_from_slice(&(to as u32).to_ne_bytes());
    let mut action = raw_attribute(tc::TCA_ACT_KIND, b"mirred\0");
    action.extend(raw_attribute(
        tc::TCA_ACT_OPTIONS | NLA_F_NESTED,
        &raw_attribute(tc::TCA_MIRRED_PARMS, &parms),
    ));
    let first = raw_attribute(1 | NLA_F_NESTED, &action);
    let actions = raw_attribute(tc::TCA_BPF_ACT | NLA_F_NESTED, &first);
    let verb = if replace { "replace" } else { "add" };
    bpf_filter(
        index,
        TcHandle::MIN_EGRESS,
        program,
        &actions,
        replace,
        format!(
            "{verb} the redirecting egress filter of {name} ({} classic BPF instructions)",
            program.len()
        ),
    )
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_address(address: IpAddr) -> RouteAddress {
    match address {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// A netlink socket (NETLINK_ROUTE unless opened otherwise). It talks to the
/// network namespace of the thread that opened it, forever, whichever thread
/// uses it later.
pub(crate) struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Netlink, Error> {
        Netlink::open_protocol(
            netlink_sys::protocols::NETLINK_ROUTE,
            "socket(AF_NETLINK, NETLINK_ROUTE)",
        )
    }

    pub(crate) fn open_protocol(protocol: isize, what: &'static str) -> Result<Netlink, Error> {
        let socket = Socket::new(protocol).map_err(|e| Error::new(what, e))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends `messages` in one batch and waits for every acknowledgement.
    /// The first failure is returned, naming the message that failed.
    pub(crate) fn run(&mut self, messages: Vec<Message>) -> Result<(), Error> {
        let mut batch = Vec::with_capacity(messages.iter().map(|m| m.bytes.len()).sum());
        // (sequence number, what, whether an ACK was asked for)
        let mut pending = Vec::with_capacity(messages.len());
        for mut message in messages {
            self.seq = self.seq.wrapping_add(1);
            NetlinkBuffer::new(&mut message.bytes[..]).set_sequence_number(self.seq);
            batch.extend_from_slice(&message.bytes);
            pending.push((self.seq, message.what, message.acked));
        }
        self.socket
            .send(&batch, 0)
            .map_err(|e| Error::new("send netlink request", e))?;
        let mut first_error: Option<Error> = None;
        let mut buffer = [0u8; 8192];
        while pending.iter().any(|(_, _, acked)| *acked) {
            // The kernel handles a request while we send it: its answers are
            // queued by now, and waiting is the exception.
            let received =
                self.receive(&mut buffer, &pending, "receive netlink acknowledgement")?;
            let mut rest = &buffer[..received];
            while !rest.is_empty() {
                let Ok(packet) = NetlinkBuffer::new_checked(rest) else {
                    break;
                };
                if packet.message_type() == NLMSG_ERROR {
                    let seq = packet.sequence_number();
                    if let Some(at) = pending.iter().position(|(s, _, _)| *s == seq) {
                        let (_, what, acked) = pending.remove(at);
                        let code = ErrorBuffer::new_checked(packet.payload())
                            .ok()
                            .and_then(|ack| ack.code());
                        if let Some(code) = code {
                            let error = Error::new(what, io::Error::from_raw_os_error(-code.get()));
                            if !acked {
                                // A batch delimiter failed: nothing in the
                                // batch was handled, and nothing else answers.
                                return Err(error);
                            }
                            first_error.get_or_insert(error);
                        }
                    }
                }
                let length = packet.length() as usize;
                rest = rest
                    .get(length.next_multiple_of(NLMSG_ALIGNTO as usize)..)
                    .unwrap_or_default();
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends one request ([`get_route`], [`dump_ipv6_addresses`]) and
    /// returns the messages the kernel answers with: all of a dump's, up to
    /// its end.
    pub(crate) fn query(
        &mut self,
        mut message: Message,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        NetlinkBuffer::new(&mut message.bytes[..]).set_sequence_number(seq);
        self.socket
            .send(&message.bytes, 0)
            .map_err(|e| Error::new("send netlink request", e))?;
        let pending = [(seq, message.what, true)];
        let mut answers = Vec::new();
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let received = self.receive(&mut buffer, &pending, "receive netlink answer")?;
            let mut rest = &buffer[..received];
            while let Ok(packet) = NetlinkBuffer::new_checked(rest) {
                let length = packet.length() as usize;
                if packet.sequence_number() == seq {
                    match packet.message_type() {
                        NLMSG_DONE => return Ok(answers),
                        NLMSG_ERROR => {
                            let code = ErrorBuffer::new_checked(packet.payload())
                                .ok()
                                .and_then(|ack| ack.code());
                            return match code {
                                Some(code) => Err(Error::new(
                                    pending[0].1.clone(),
                                    io::Error::from_raw_os_error(-code.get()),
                                )),
                                None => Ok(answers),
                            };
                        }
                        _ => {
                            let parsed =
                                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..length]);
                            if let Ok(NetlinkMessage {
                                payload: NetlinkPayload::InnerMessage(inner),
                                ..
                            }) = parsed
                            {
                                answers.push(inner);
                            }
                        }
                    }
                }
                rest = rest
                    .get(length.next_multiple_of(NLMSG_ALIGNTO as usize)..)
                    .unwrap_or_default();
            }
        }
    }

    /// Receives what the kernel has queued into `buffer` (its length),
    /// waiting for it while `pending` is unanswered; `what` names a failed
    /// receive.
    fn receive(
        &self,
        buffer: &mut [u8],
        pending: &[(u32, String, bool)],
        what: &'static str,
    ) -> Result<usize, Error> {
        loop {
            let mut free = &mut buffer[..];
            match self.socket.recv(&mut free, libc::MSG_DONTWAIT) {
                Ok(received) => return Ok(received.min(buffer.len())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(pending)?,
                Err(e) => return Err(Error::new(what, e)),
            }
        }
    }

    /// Waits until an answer arrives, or fails naming the first request
    /// still unanswered.
    fn wait(&self, pending: &[(u32, String, bool)]) -> Result<(), Error> {
        use nix::poll::{PollFd, PollFlags, poll};
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ACK_TIMEOUT_MS) {
            Ok(0) => {
                let what = pending
                    .iter()
                    .find(|(_, _, acked)| *acked)
                    .map_or("netlink request", |(_, what, _)| what.as_str());
                Err(Error::detected(
                    what.to_owned(),
                    io::ErrorKind::TimedOut,
                    format!("the kernel did not answer within {ACK_TIMEOUT_MS} ms"),
                ))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(Error::new("wait for a netlink acknowledgement", e.into())),
        }
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
