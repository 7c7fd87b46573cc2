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
use crate::os::uapi::tbf;
use netlink_packet_core::{
    DefaultNla, ErrorBuffer, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NLMSG_ALIGNTO, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
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

/// The root qdisc of the link with `index`, handle `1:`.
fn root_qdisc(index: i32, attributes: Vec<TcAttribute>) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = index;
    m.header.handle = TcHandle { major: 1, minor: 0 };
    m.header.parent = TcHandle::ROOT;
    m.attributes = attributes;
    m
}

/// Replaces the root qdisc of the link with `index` by a token bucket
/// filter: `rate` bytes per second, bursts of `burst` bytes, at most
/// `limit` bytes queued.
pub(crate) fn tbf(index: i32, name: &str, rate: u64, burst: u32, limit: u32) -> Message {
    // netlink-packet-route has no tbf options: they go as raw attributes.
    // struct tc_tbf_qopt: rate and peakrate (struct tc_ratespec: cell_log u8,
    // linklayer u8, overhead u16, cell_align i16, mpu u16, rate u32), then
    // limit, buffer, mtu. Linklayer ethernet needs no rate table; the burst
    // attribute stands for the buffer.
    let mut qopt = [0u8; 36];
    qopt[1] = tbf::TC_LINKLAYER_ETHERNET;
    qopt[8..12].copy_from_slice(&(rate.min(u32::MAX as u64) as u32).to_ne_bytes());
    qopt[24..28].copy_from_slice(&limit.to_ne_bytes());
    let options = vec![
        TcOption::Other(DefaultNla::new(tbf::TCA_TBF_PARMS, qopt.to_vec())),
        TcOption::Other(DefaultNla::new(
            tbf::TCA_TBF_RATE64,
            rate.to_ne_bytes().to_vec(),
        )),
        TcOption::Other(DefaultNla::new(
            tbf::TCA_TBF_BURST,
            burst.to_ne_bytes().to_vec(),
        )),
    ];
    Message::request(
        RouteNetlinkMessage::NewQueueDiscipline(root_qdisc(
            index,
            vec![
                TcAttribute::Kind("tbf".into()),
                TcAttribute::Options(options),
            ],
        )),
        NLM_F_CREATE | NLM_F_REPLACE,
        format!("set a tbf qdisc ({rate} B/s) on {name}"),
    )
}

/// Replaces the root qdisc of the link with `index` by netem with these
/// options (struct tc_netem_qopt: latency and jitter in microseconds here
/// converted by the caller to ticks, limit, loss, gap, duplicate).
pub(crate) fn netem(index: i32, name: &str, qopt: [u32; 6]) -> Message {
    // netem's options are the bare struct, not nested attributes, and
    // netlink-packet-route has no type for them.
    let bytes: Vec<u8> = qopt.iter().flat_map(|v| v.to_ne_bytes()).collect();
    Message::request(
        RouteNetlinkMessage::NewQueueDiscipline(root_qdisc(
            index,
            vec![
                TcAttribute::Kind("netem".into()),
                TcAttribute::Other(DefaultNla::new(libc::TCA_OPTIONS, bytes)),
            ],
        )),
        NLM_F_CREATE | NLM_F_REPLACE,
        format!("set a netem qdisc on {name}"),
    )
}

/// Deletes the root qdisc of the link with `index` (back to the default).
pub(crate) fn delete_root_qdisc(index: i32, name: &str) -> Message {
    Message::request(
        RouteNetlinkMessage::DelQueueDiscipline(root_qdisc(index, Vec::new())),
        0,
        format!("remove the qdisc of {name}"),
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
            let received = {
                let mut free = &mut buffer[..];
                match self.socket.recv(&mut free, libc::MSG_DONTWAIT) {
                    Ok(received) => received.min(buffer.len()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.wait(&pending)?;
                        continue;
                    }
                    Err(e) => return Err(Error::new("receive netlink acknowledgement", e)),
                }
            };
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
