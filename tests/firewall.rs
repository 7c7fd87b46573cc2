//! A router's stateful firewall on a link: every preset for TCP and UDP
//! in both families, checked from both sides (what an inside client may
//! start, what the outside may start), the relay-only case (UDP blocked,
//! DNS passes), replacement, composition with the NAT, and bad input.
//! Every test also runs as uid 65534 (rootless) and with no `nft` on PATH.

mod common;

use netns_test::{Firewall, Link, Nat, Network, Node, Traffic, netns_test};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a blocked attempt is given before it counts as blocked.
const WAIT: Duration = Duration::from_millis(300);

/// An office: `client` — router `fw` — `wan` — `server`, no NAT: both ends
/// can reach each other by address, in both families, unless the firewall
/// on `wan` says no.
struct Office {
    _net: Network,
    client: Node,
    router: Node,
    wan: Link,
    lan: Link,
    server: Node,
    servers: Vec<Server>,
}

impl Office {
    fn new() -> Office {
        let net = Network::new();
        let client = net.node("client").unwrap();
        let router = net.router("fw").unwrap();
        let server = net.node("server").unwrap();
        let lan = net.link(&client, &router).unwrap();
        let wan = net.link(&router, &server).unwrap();
        Office {
            _net: net,
            client,
            router,
            wan,
            lan,
            server,
            servers: Vec::new(),
        }
    }

    /// The server's address on the wan, of `family` (4 or 6).
    fn server_address(&self, family: u8) -> IpAddr {
        match family {
            4 => IpAddr::V4(self.server.ipv4_on(&self.wan)),
            _ => IpAddr::V6(self.server.ipv6_on(&self.wan)),
        }
    }

    /// The client's address on the lan, of `family`.
    fn client_address(&self, family: u8) -> IpAddr {
        match family {
            4 => IpAddr::V4(self.client.ipv4_on(&self.lan)),
            _ => IpAddr::V6(self.client.ipv6_on(&self.lan)),
        }
    }

    /// Listens (TCP, and UDP echo) on `port` of `node`, both families.
    fn serve(&mut self, outside: bool, port: u16) {
        let node = if outside { &self.server } else { &self.client };
        self.servers.push(Server::start(node, port));
    }

    /// Whether a new flow from inside (`outbound`) or from outside
    /// gets through, and its replies come back: a TCP connection and a
    /// UDP echo to `port`, in `family`.
    fn tcp(&self, outbound: bool, family: u8, port: u16) -> bool {
        let (from, to) = self.ends(outbound, family);
        tcp_connects(from, SocketAddr::new(to, port))
    }

    fn udp(&self, outbound: bool, family: u8, port: u16) -> bool {
        let (from, to) = self.ends(outbound, family);
        udp_echoes(from, SocketAddr::new(to, port))
    }

    fn ends(&self, outbound: bool, family: u8) -> (&Node, IpAddr) {
        if outbound {
            (&self.client, self.server_address(family))
        } else {
            (&self.server, self.client_address(family))
        }
    }
}

/// A TCP listener that accepts and answers, and a UDP echo, on a port
/// of a node, both families, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(node: &Node, port: u16) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        for any in ["0.0.0.0", "::"] {
            let address: SocketAddr = SocketAddr::new(any.parse().unwrap(), port);
            let (tcp, udp) = node.netns().run(move || {
                let tcp = TcpListener::from(bind(address, true));
                let udp = UdpSocket::from(bind(address, false));
                (tcp, udp)
            });
            tcp.set_nonblocking(true).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let done = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !done.load(Ordering::Relaxed) {
                    if let Ok((mut stream, _)) = tcp.accept() {
                        stream.set_nonblocking(false).unwrap();
                        let _ = stream.write_all(b"hello");
                    }
                    if let Ok((n, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(&buf[..n], from);
                    }
                }
            });
        }
        Server { stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A TCP listener (`stream`) or a UDP socket on `address`, IPv6 only for
/// `::` (so that `0.0.0.0` has IPv4).
fn bind(address: SocketAddr, stream: bool) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, listen, setsockopt, socket,
        sockopt,
    };
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let kind = if stream {
        SockType::Stream
    } else {
        SockType::Datagram
    };
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    if address.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).unwrap();
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    nix::sys::socket::bind(raw, &SockaddrStorage::from(address)).unwrap();
    if stream {
        listen(&fd, Backlog::new(16).unwrap()).unwrap();
    }
    fd
}

/// Whether `from` connects to `to` and reads the server's hello.
fn tcp_connects(from: &Node, to: SocketAddr) -> bool {
    from.netns().run(move || {
        let Ok(mut stream) = TcpStream::connect_timeout(&to, WAIT) else {
            return false;
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).is_ok() && &hello == b"hello"
    })
}

/// Whether a datagram from `from` to `to` comes back (three tries).
fn udp_echoes(from: &Node, to: SocketAddr) -> bool {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = from.netns().run(move || UdpSocket::bind(any).unwrap());
    socket.set_read_timeout(Some(WAIT / 3)).unwrap();
    (0..3).any(|_| {
        socket.send_to(b"ping", to).unwrap();
        let mut buf = [0u8; 8];
        matches!(socket.recv_from(&mut buf), Ok((4, source)) if source == to)
    })
}

/// `(what, expected)` checked for TCP and UDP, both families, both ways,
/// on `port`: `expected[outbound][tcp/udp]`.
fn check(office: &Office, port: u16, outbound: [bool; 2], inbound: [bool; 2], what: &str) {
    for family in [4, 6] {
        assert_eq!(
            [
                office.tcp(true, family, port),
                office.udp(true, family, port)
            ],
            outbound,
            "{what}: out to port {port}, IPv{family} (tcp, udp)"
        );
        assert_eq!(
            [
                office.tcp(false, family, port),
                office.udp(false, family, port)
            ],
            inbound,
            "{what}: in to port {port}, IPv{family} (tcp, udp)"
        );
    }
}

#[netns_test]
fn without_a_firewall_everything_crosses_both_ways() {
    let mut office = Office::new();
    office.serve(true, 8000);
    office.serve(false, 8000);
    check(&office, 8000, [true, true], [true, true], "no firewall");
    // Firewall::new() is none.
    office
        .router
        .firewall(&office.wan, Firewall::new())
        .unwrap();
    check(&office, 8000, [true, true], [true, true], "Firewall::new()");
}

#[netns_test]
fn block_inbound_lets_flows_out_and_their_replies_in_and_nothing_unsolicited() {
    let mut office = Office::new();
    office.serve(true, 8000);
    office.serve(false, 8000);
    office
        .router
        .firewall(&office.wan, Firewall::block_inbound())
        .unwrap();
    check(&office, 8000, [true, true], [false, false], "block_inbound");
    // A client port that sent out gets the replies from where it sent,
    // and nothing from another port of the same server.
    let client = SocketAddr::new(office.client_address(4), 9100);
    let server = SocketAddr::new(office.server_address(4), 9102);
    let socket = office
        .client
        .netns()
        .run(move || UdpSocket::bind(client).unwrap());
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let replier = office
        .server
        .netns()
        .run(move || UdpSocket::bind(server).unwrap());
    let stranger = office
        .server
        .netns()
        .run(move || UdpSocket::bind(SocketAddr::new(server.ip(), 9101)).unwrap());
    socket.send_to(b"out", server).unwrap();
    replier.send_to(b"reply", client).unwrap();
    stranger.send_to(b"stranger", client).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"reply"[..], server));
    assert!(socket.recv_from(&mut buf).is_err(), "the stranger got in");
}

#[netns_test]
fn allow_only_lets_out_what_it_lists_and_nothing_in() {
    let mut office = Office::new();
    for port in [53, 443, 8000] {
        office.serve(true, port);
        office.serve(false, port);
    }
    let corporate = Firewall::allow_only([
        Traffic::tcp().port(80),
        Traffic::tcp().port(443),
        Traffic::udp().port(53),
    ]);
    office.router.firewall(&office.wan, corporate).unwrap();
    check(
        &office,
        443,
        [true, false],
        [false, false],
        "allow_only: 443",
    );
    check(&office, 53, [false, true], [false, false], "allow_only: 53");
    check(
        &office,
        8000,
        [false, false],
        [false, false],
        "allow_only: 8000",
    );
    // Nothing listed: nothing crosses.
    office
        .router
        .firewall(&office.wan, Firewall::allow_only([]))
        .unwrap();
    check(
        &office,
        443,
        [false, false],
        [false, false],
        "allow_only([])",
    );
}

#[netns_test]
fn relay_only_blocks_udp_but_dns_and_lets_tcp_through() {
    let mut office = Office::new();
    for port in [53, 3478, 443] {
        office.serve(true, port);
        office.serve(false, port);
    }
    let relay_only = Firewall::new()
        .block(Traffic::udp())
        .allow(Traffic::udp().port(53));
    office.router.firewall(&office.wan, relay_only).unwrap();
    check(
        &office,
        3478,
        [true, false],
        [true, false],
        "relay only: 3478",
    );
    check(
        &office,
        443,
        [true, false],
        [true, false],
        "relay only: 443 (QUIC)",
    );
    check(&office, 53, [true, true], [true, true], "relay only: DNS");
    // The other order means the other thing: the last rule decides.
    let no_udp = Firewall::new()
        .allow(Traffic::udp().port(53))
        .block(Traffic::udp());
    office.router.firewall(&office.wan, no_udp).unwrap();
    check(
        &office,
        53,
        [true, false],
        [true, false],
        "allow then block",
    );
}

#[netns_test]
fn rules_amend_a_preset_and_calling_firewall_again_replaces_it() {
    let mut office = Office::new();
    office.serve(true, 8000);
    office.serve(false, 22);
    office.serve(false, 8000);
    let ssh_in = Firewall::block_inbound().allow(Traffic::tcp().dst_port(22));
    office.router.firewall(&office.wan, ssh_in).unwrap();
    for family in [4, 6] {
        assert!(office.tcp(false, family, 22), "ssh in, IPv{family}");
        assert!(!office.tcp(false, family, 8000), "8000 in, IPv{family}");
        assert!(office.tcp(true, family, 8000), "out, IPv{family}");
    }
    // Selectors narrow by address: only IPv6 to the server may leave.
    let server6 = office.server_address(6);
    let narrow = Firewall::allow_only([Traffic::ipv6().to(server6)]);
    office.router.firewall(&office.wan, narrow).unwrap();
    assert!(office.tcp(true, 6, 8000));
    assert!(!office.tcp(true, 4, 8000));
    // Replaced: everything again.
    office
        .router
        .firewall(&office.wan, Firewall::new())
        .unwrap();
    check(&office, 8000, [true, true], [true, true], "replaced");
}

#[netns_test]
fn the_nat_filters_first_and_the_firewall_after() {
    // A full cone NAT lets anyone reach a mapping; a firewall after it
    // that blocks inbound does not.
    let office = Office::new();
    office.router.nat(&office.wan, Nat::full_cone()).unwrap();
    let public = office.router.ipv4_on(&office.wan);
    let server_address = SocketAddr::new(office.server_address(4), 3478);
    // The client opens a mapping by sending out from port 5000.
    let client = office
        .client
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:5000").unwrap());
    client.set_read_timeout(Some(WAIT)).unwrap();
    let server = office
        .server
        .netns()
        .run(move || UdpSocket::bind(server_address).unwrap());
    server.set_read_timeout(Some(WAIT)).unwrap();
    let stranger = office
        .server
        .netns()
        .run(move || UdpSocket::bind(SocketAddr::new(server_address.ip(), 4000)).unwrap());
    let mapped = |expect: bool, what: &str| {
        client.send_to(b"out", server_address).unwrap();
        let (_, seen) = server.recv_from(&mut [0u8; 8]).unwrap();
        assert_eq!(seen, SocketAddr::new(IpAddr::V4(public), 5000), "{what}");
        stranger.send_to(b"in", seen).unwrap();
        let got = client.recv_from(&mut [0u8; 8]).is_ok();
        assert_eq!(got, expect, "{what}: a stranger's datagram to the mapping");
    };
    mapped(true, "full cone alone");
    office
        .router
        .firewall(&office.wan, Firewall::block_inbound())
        .unwrap();
    mapped(false, "full cone, then block_inbound");
    // The NAT's own filtering still drops first: with a port-restricted
    // cone and a firewall that allows everything, the stranger stays out.
    office
        .router
        .nat(&office.wan, Nat::port_restricted_cone())
        .unwrap();
    office
        .router
        .firewall(&office.wan, Firewall::new())
        .unwrap();
    mapped(false, "port restricted cone, Firewall::new()");
}

#[netns_test]
fn bad_input_is_refused_and_the_router_keeps_its_firewall() {
    let office = Office::new();
    office
        .router
        .firewall(&office.wan, Firewall::block_inbound())
        .unwrap();
    let error = office
        .router
        .firewall(&office.wan, Firewall::new().block(Traffic::icmp().port(53)))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(
        error
            .to_string()
            .contains("block(icmp port 53): port 53 on ICMP"),
        "{error}"
    );
    let error = office
        .router
        .firewall(
            &office.wan,
            Firewall::allow_only([Traffic::ipv4().and(Traffic::ipv6())]),
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("ipv4 and ipv6 contradict"),
        "{error}"
    );
    // A node that does not forward, and a link the router is not on.
    let error = office
        .client
        .firewall(&office.lan, Firewall::block_inbound())
        .unwrap_err();
    assert!(error.to_string().contains("not a router"), "{error}");
    let other = Network::new();
    let (x, y) = (other.router("x").unwrap(), other.node("y").unwrap());
    let foreign = other.link(&x, &y).unwrap();
    let error = office
        .router
        .firewall(&foreign, Firewall::new())
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    // Still blocking inbound.
    let mut office = office;
    office.serve(false, 8000);
    office.serve(true, 8000);
    check(&office, 8000, [true, true], [false, false], "kept");
}

/// Every firewall test again, as uid 65534 in rootless mode (when root),
/// with no `nft` on PATH.
#[test]
fn firewalls_work_rootless_and_without_nft() {
    common::rerun(
        &["--skip", "firewalls_work_rootless_and_without_nft"],
        common::Rerun::AsNobodyWithoutNft,
        "7 passed",
    );
}
