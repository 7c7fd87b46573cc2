//! NAT as peer-to-peer software meets it (RFC 4787, RFC 5382): mapping and
//! filtering kinds, hole punching between NATs, hairpinning, timeouts,
//! rebinding, IPv6 filtered but not translated, TCP, and bad input. Every
//! test also runs as uid 65534 (rootless) and with no `nft` on PATH.

mod common;

use netns_test::{Link, Nat, NatFiltering, NatMapping, Network, Node, netns_test};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);

/// A UDP socket bound inside `node`.
fn udp(node: &Node, address: impl Into<IpAddr>, port: u16) -> UdpSocket {
    let address = SocketAddr::new(address.into(), port);
    node.netns().run(move || {
        let socket = UdpSocket::bind(address).unwrap();
        socket.set_read_timeout(Some(QUIET)).unwrap();
        socket
    })
}

/// Answers every datagram with the address it came from, until dropped
/// (the socket's owner thread ends with the returned guard).
struct Reflector {
    address: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Reflector {
    fn start(node: &Node, address: IpAddr, port: u16) -> Reflector {
        let socket = udp(node, address, port);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(from.to_string().as_bytes(), from);
                }
            }
        });
        Reflector {
            address: SocketAddr::new(address, port),
            stop,
        }
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The address `socket` is seen from by `reflector` (asked up to 3 times).
fn reflexive(socket: &UdpSocket, reflector: SocketAddr) -> SocketAddr {
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        socket.send_to(b"who am I", reflector).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                if from == reflector {
                    return std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
                }
            }
        }
    }
    panic!("no answer from the reflector at {reflector}");
}

/// Whatever reaches `socket` until it is quiet for `QUIET`: sources.
fn received(socket: &UdpSocket) -> Vec<SocketAddr> {
    let mut buf = [0u8; 64];
    let mut sources = Vec::new();
    while let Ok((_, from)) = socket.recv_from(&mut buf) {
        sources.push(from);
    }
    sources
}

/// The classic lab: an `internet` router with two servers and a stranger,
/// and a home router (NAT on its uplink) with a LAN switch behind it.
/// (It keeps every handle: a namespace whose handles are all dropped is
/// freed.)
struct Lab {
    net: Network,
    internet: Node,
    servers: [(Node, Ipv4Addr); 2],
    stranger: (Node, Ipv4Addr),
    switches: std::sync::Mutex<Vec<netns_test::Switch>>,
}

impl Lab {
    fn new() -> Lab {
        let net = Network::new();
        let internet = net.router("internet").unwrap();
        let server = |name: &str| {
            let node = net.node(name).unwrap();
            let link = net.link(&internet, &node).unwrap();
            let address = node.ipv4_on(&link);
            (node, address)
        };
        let servers = [server("server1"), server("server2")];
        let stranger = server("stranger");
        Lab {
            net,
            internet,
            servers,
            stranger,
            switches: Default::default(),
        }
    }

    /// A home: router `name` behind `nat` on its uplink to the internet,
    /// and a client on a LAN switch. Returns (router, uplink, client).
    fn home(&self, name: &str, nat: Nat) -> (Node, Link, Node) {
        let router = self.net.router(name).unwrap();
        let uplink = self.net.link(&router, &self.internet).unwrap();
        let lan = self.net.switch(&format!("{name}-lan")).unwrap();
        self.net.attach(&router, &lan).unwrap();
        let client = self.net.node(&format!("{name}-pc")).unwrap();
        self.net.attach(&client, &lan).unwrap();
        router.nat(&uplink, nat).unwrap();
        self.switches.lock().unwrap().push(lan);
        (router, uplink, client)
    }
}

#[netns_test]
fn each_mapping_kind_shows_its_reflexive_ports_to_two_addresses_and_two_ports() {
    let lab = Lab::new();
    let [(s1, a1), (s2, a2)] = &lab.servers;
    let reflectors = [
        Reflector::start(s1, IpAddr::V4(*a1), 3478),
        Reflector::start(s1, IpAddr::V4(*a1), 3479),
        Reflector::start(s2, IpAddr::V4(*a2), 3478),
    ];
    for (i, (mapping, expected)) in [
        // (same address other port, other address): same port as the first?
        (NatMapping::EndpointIndependent, [true, true]),
        (NatMapping::AddressDependent, [true, false]),
        (NatMapping::AddressAndPortDependent, [false, false]),
    ]
    .into_iter()
    .enumerate()
    {
        let (router, uplink, client) =
            lab.home(&format!("home{i}"), Nat::new().mapping(mapping));
        let public = router.ipv4_on(&uplink);
        let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
        let seen: Vec<SocketAddr> = reflectors
            .iter()
            .map(|r| reflexive(&socket, r.address))
            .collect();
        assert!(seen.iter().all(|s| s.ip() == IpAddr::V4(public)), "{seen:?}");
        assert_eq!(seen[0].port(), 5000, "{mapping:?}: the inside port, kept");
        let same = [seen[1].port() == seen[0].port(), seen[2].port() == seen[0].port()];
        assert_eq!(same, expected, "{mapping:?}: {seen:?}");
        if mapping == NatMapping::AddressAndPortDependent {
            assert_ne!(seen[1].port(), seen[2].port(), "{seen:?}");
        }
        // Asked again, each mapping is the same.
        let again: Vec<SocketAddr> = reflectors
            .iter()
            .map(|r| reflexive(&socket, r.address))
            .collect();
        assert_eq!(again, seen, "{mapping:?}");
    }
}

#[netns_test]
fn port_preservation_keeps_the_inside_port_only_when_free_and_only_when_on() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (s2, a2) = &lab.servers[1];
    let r1 = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let r2 = Reflector::start(s2, IpAddr::V4(*a2), 3478);
    let (router, _, first) = lab.home("home", Nat::new());
    // A second client on the same LAN, using the same inside port.
    let lan_link = {
        let second = lab.net.node("second").unwrap();
        let lan = lab.net.switch("other-lan").unwrap();
        lab.net.attach(&router, &lan).unwrap();
        lab.net.attach(&second, &lan).unwrap();
        lab.switches.lock().unwrap().push(lan);
        second
    };
    let a = udp(&first, Ipv4Addr::UNSPECIFIED, 6000);
    let b = udp(&lan_link, Ipv4Addr::UNSPECIFIED, 6000);
    let a1_seen = reflexive(&a, r1.address);
    // The second client talks to the *other* server first: the port is
    // taken by the first client's mapping all the same.
    let b2_seen = reflexive(&b, r2.address);
    let b1_seen = reflexive(&b, r1.address);
    let a2_seen = reflexive(&a, r2.address);
    assert_eq!(a1_seen.port(), 6000);
    assert_eq!(a2_seen, a1_seen, "the first keeps its mapping");
    assert_ne!(b2_seen.port(), 6000, "the second gets another port");
    assert_eq!(b1_seen, b2_seen, "and keeps it, endpoint-independent");
    // Port preservation off: never the inside port.
    let (_router, _uplink, client) = lab.home("nopreserve", Nat::new().port_preservation(false));
    let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 7000);
    let seen = reflexive(&socket, r1.address);
    assert_ne!(seen.port(), 7000);
    assert_eq!(reflexive(&socket, r2.address), seen);
}

#[netns_test]
fn each_filtering_kind_lets_in_what_it_should_and_drops_the_rest() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (s2, a2) = &lab.servers[1];
    let (stranger, a3) = &lab.stranger;
    let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let other_port = udp(s1, *a1, 3479);
    let other_address = udp(s2, *a2, 3478);
    let strange = udp(stranger, *a3, 3478);
    for (i, (filtering, expected)) in [
        // (same address other port, other address, stranger) gets in?
        (NatFiltering::EndpointIndependent, [true, true, true]),
        (NatFiltering::AddressDependent, [true, false, false]),
        (NatFiltering::AddressAndPortDependent, [false, false, false]),
    ]
    .into_iter()
    .enumerate()
    {
        let (_router, _uplink, client) = lab.home(&format!("home{i}"), Nat::new().filtering(filtering));
        let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
        let public = reflexive(&socket, reflector.address);
        let mut got = Vec::new();
        for sender in [&other_port, &other_address, &strange] {
            sender.send_to(b"hello", public).unwrap();
            got.push(!received(&socket).is_empty());
        }
        assert_eq!(got, expected, "{filtering:?}");
        // The server the client spoke to always gets through.
        let to = UdpSocket::bind("0.0.0.0:0");
        drop(to);
        reflexive(&socket, reflector.address);
    }
}

/// A peer of a hole-punching exchange: learns its public address from the
/// reflector, then sends to the other's every 50 ms and answers whatever
/// reaches it at its source. Returns whether it heard from the other peer.
fn punch(
    socket: UdpSocket,
    reflector: SocketAddr,
    mine: mpsc::Sender<SocketAddr>,
    theirs: mpsc::Receiver<SocketAddr>,
    delay: Duration,
) -> bool {
    let public = reflexive(&socket, reflector);
    mine.send(public).unwrap();
    let peer = theirs.recv().unwrap();
    std::thread::sleep(delay);
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut heard = false;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        socket.send_to(b"punch", peer).unwrap();
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from == reflector {
                continue;
            }
            if &buf[..n] == b"punch" {
                let _ = socket.send_to(b"answer", from);
            }
            heard = true;
        }
        if heard {
            // Keep answering a little while for the other side.
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(b"answer", from);
                }
            }
            return true;
        }
    }
    false
}

#[netns_test]
fn hole_punching_works_between_any_two_cone_nats_also_staggered() {
    let presets = [
        ("full_cone", Nat::full_cone()),
        ("restricted_cone", Nat::restricted_cone()),
        ("port_restricted_cone", Nat::port_restricted_cone()),
        ("symmetric", Nat::symmetric()),
    ];
    let mut runs = Vec::new();
    for (a_name, a_nat) in &presets {
        for (b_name, b_nat) in &presets {
            let (a_nat, b_nat) = (a_nat.clone(), b_nat.clone());
            let names = (*a_name, *b_name);
            let netns = netns_test::NetNs::current();
            runs.push((
                names,
                netns.spawn(move || {
                    let lab = Lab::new();
                    let (s1, a1) = &lab.servers[0];
                    let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
                    let (_ra, _ua, a) = lab.home("a", a_nat);
                    let (_rb, _ub, b) = lab.home("b", b_nat);
                    let (a_socket, b_socket) = (
                        udp(&a, Ipv4Addr::UNSPECIFIED, 4000),
                        udp(&b, Ipv4Addr::UNSPECIFIED, 4000),
                    );
                    let (to_b, from_a) = mpsc::channel();
                    let (to_a, from_b) = mpsc::channel();
                    let address = reflector.address;
                    let first = std::thread::spawn(move || {
                        punch(a_socket, address, to_b, from_b, Duration::ZERO)
                    });
                    let second = std::thread::spawn(move || {
                        punch(b_socket, address, to_a, from_a, Duration::from_millis(200))
                    });
                    (first.join().unwrap(), second.join().unwrap())
                }),
            ));
        }
    }
    let mut table = String::new();
    let mut wrong = Vec::new();
    for ((a, b), run) in runs {
        let (heard_by_a, heard_by_b) = run.join().unwrap();
        let works = heard_by_a && heard_by_b;
        // Only these fail: a symmetric NAT's new port for the peer meets
        // filtering that lets in only the port it sent to.
        let symmetric_with_port_restricted = matches!(
            (a, b),
            ("symmetric", "symmetric" | "port_restricted_cone")
                | ("port_restricted_cone", "symmetric")
        );
        table.push_str(&format!("{a:>22} x {b:<22} {works}\n"));
        if works == symmetric_with_port_restricted {
            wrong.push(format!("{a} x {b}: {works}"));
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "{wrong:?}\n{table}");
}

#[netns_test]
fn unsolicited_packets_are_dropped_silently_and_take_no_port() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (peer, peer_address) = &lab.stranger;
    let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let (router, uplink, client) = lab.home("home", Nat::new());
    let public = router.ipv4_on(&uplink);
    // The peer probes the client's future mapping first: UDP on a
    // connected socket (an ICMP error would fail a later recv with
    // ECONNREFUSED), and TCP (a RST would refuse the connection at once).
    let probe = udp(peer, *peer_address, 9000);
    probe.connect((public, 5000)).unwrap();
    for _ in 0..5 {
        probe.send(b"early").unwrap();
    }
    let mut buf = [0u8; 16];
    let error = probe.recv(&mut buf).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "an unsolicited datagram was answered: {error}"
    );
    let started = Instant::now();
    let tcp = peer.netns().run(move || {
        TcpStream::connect_timeout(&SocketAddr::from((public, 5000)), Duration::from_millis(1500))
    });
    let error = tcp.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}: answered by a RST?");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // The client's mapping still gets its inside port, and the peer's
    // later datagrams reach it once it has sent to the peer.
    let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
    assert_eq!(reflexive(&socket, reflector.address), SocketAddr::from((public, 5000)));
    socket
        .send_to(b"hello", SocketAddr::from((*peer_address, 9000)))
        .unwrap();
    probe.send(b"late").unwrap();
    assert_eq!(
        received(&socket),
        [SocketAddr::from((*peer_address, 9000))]
    );
}

#[netns_test]
fn hairpinning_shows_the_senders_public_mapping_for_udp_and_tcp_and_is_off_by_default() {
    for hairpin in [true, false] {
        let lab = Lab::new();
        let (s1, a1) = &lab.servers[0];
        let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
        let (router, uplink, a) = lab.home("home", Nat::full_cone().hairpin(hairpin));
        let lan = lab.net.switch("lan2").unwrap();
        lab.net.attach(&router, &lan).unwrap();
        let b = lab.net.node("b").unwrap();
        lab.net.attach(&b, &lan).unwrap();
        lab.switches.lock().unwrap().push(lan);
        let public = router.ipv4_on(&uplink);
        let a_socket = udp(&a, Ipv4Addr::UNSPECIFIED, 5000);
        let b_socket = udp(&b, Ipv4Addr::UNSPECIFIED, 6000);
        let a_public = reflexive(&a_socket, reflector.address);
        let b_public = reflexive(&b_socket, reflector.address);
        a_socket.send_to(b"hairpin", b_public).unwrap();
        let got = received(&b_socket);
        if hairpin {
            assert_eq!(got, [a_public], "UDP: b sees a's public mapping");
        } else {
            assert!(got.is_empty(), "{got:?}");
        }
    }
}
