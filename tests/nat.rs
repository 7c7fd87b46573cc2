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
        let (router, uplink, client) = lab.home(&format!("home{i}"), Nat::new().mapping(mapping));
        let public = router.ipv4_on(&uplink);
        let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
        let seen: Vec<SocketAddr> = reflectors
            .iter()
            .map(|r| reflexive(&socket, r.address))
            .collect();
        assert!(
            seen.iter().all(|s| s.ip() == IpAddr::V4(public)),
            "{seen:?}"
        );
        assert_eq!(seen[0].port(), 5000, "{mapping:?}: the inside port, kept");
        let same = [
            seen[1].port() == seen[0].port(),
            seen[2].port() == seen[0].port(),
        ];
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
        let (_router, _uplink, client) =
            lab.home(&format!("home{i}"), Nat::new().filtering(filtering));
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
/// reaches it at its source. Returns where it heard the other peer from.
fn punch(
    socket: UdpSocket,
    reflector: SocketAddr,
    mine: mpsc::Sender<SocketAddr>,
    theirs: mpsc::Receiver<SocketAddr>,
    delay: Duration,
) -> Option<SocketAddr> {
    let public = reflexive(&socket, reflector);
    mine.send(public).unwrap();
    let peer = theirs.recv().unwrap();
    std::thread::sleep(delay);
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut heard = None;
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
            heard.get_or_insert(from);
        }
        if heard.is_some() {
            // Keep answering a little while for the other side.
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(b"answer", from);
                }
            }
            return heard;
        }
    }
    None
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
        let works = heard_by_a.is_some() && heard_by_b.is_some();
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
        TcpStream::connect_timeout(
            &SocketAddr::from((public, 5000)),
            Duration::from_millis(1500),
        )
    });
    let error = tcp.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::TimedOut,
        "{error}: answered by a RST?"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // The client's mapping still gets its inside port, and the peer's
    // later datagrams reach it once it has sent to the peer.
    let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
    assert_eq!(
        reflexive(&socket, reflector.address),
        SocketAddr::from((public, 5000))
    );
    socket
        .send_to(b"hello", SocketAddr::from((*peer_address, 9000)))
        .unwrap();
    probe.send(b"late").unwrap();
    assert_eq!(received(&socket), [SocketAddr::from((*peer_address, 9000))]);
}

#[netns_test]
fn hairpinning_shows_the_senders_public_mapping_for_udp_and_tcp_and_is_off_by_default() {
    for hairpin in [true, false] {
        let lab = Lab::new();
        let (s1, a1) = &lab.servers[0];
        let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
        let (router, _uplink, a) = lab.home("home", Nat::full_cone().hairpin(hairpin));
        let lan = lab.net.switch("lan2").unwrap();
        lab.net.attach(&router, &lan).unwrap();
        let b = lab.net.node("b").unwrap();
        lab.net.attach(&b, &lan).unwrap();
        lab.switches.lock().unwrap().push(lan);
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

/// A TCP socket of `node` bound to `port` with SO_REUSEADDR and
/// SO_REUSEPORT (as hole-punching TCP stacks bind: a listener and
/// connections from one port), connected to `to`, or listening.
fn tcp_from(
    node: &Node,
    port: u16,
    to: Option<SocketAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    node.netns().run(move || {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket,
            sockopt,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(0, 0, 0, 0, port),
        )?;
        let to = to.expect("a destination");
        let SocketAddr::V4(to) = to else {
            panic!("IPv4")
        };
        // connect(2) retries the SYN itself; give up after `timeout`.
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let timeval =
            nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64);
        setsockopt(&fd, sockopt::SendTimeout, &timeval)?;
        connect(raw, &SockaddrIn::from(to))?;
        Ok(TcpStream::from(fd))
    })
}

fn tcp_listener_on(node: &Node, port: u16) -> TcpListener {
    node.netns().run(move || {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt,
            socket, sockopt,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(0, 0, 0, 0, port),
        )
        .unwrap();
        listen(&fd, Backlog::new(16).unwrap()).unwrap();
        TcpListener::from(fd)
    })
}

/// A TCP server that writes each client the address it came from.
fn tcp_reflector(node: &Node, address: Ipv4Addr, port: u16) -> SocketAddr {
    let listener = node
        .netns()
        .run(move || TcpListener::bind((address, port)).unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let peer = stream.peer_addr().unwrap();
            let _ = stream.write_all(peer.to_string().as_bytes());
        }
    });
    SocketAddr::from((address, port))
}

/// The public address a TCP connection from `port` of `node` is seen from.
fn tcp_reflexive(node: &Node, port: u16, reflector: SocketAddr) -> SocketAddr {
    let mut stream = tcp_from(node, port, Some(reflector), Duration::from_secs(3)).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.parse().unwrap()
}

#[netns_test]
fn tcp_is_mapped_and_filtered_like_udp_and_unsolicited_syns_get_no_rst() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (s2, a2) = &lab.servers[1];
    let (stranger, _) = &lab.stranger;
    let r1 = tcp_reflector(s1, *a1, 80);
    let r2 = tcp_reflector(s2, *a2, 80);
    for (name, nat, same_port, stranger_gets_in) in [
        ("full-cone", Nat::full_cone(), true, true),
        ("port-restricted", Nat::port_restricted_cone(), true, false),
        ("symmetric", Nat::symmetric(), false, false),
    ] {
        let (_router, _uplink, client) = lab.home(name, nat);
        let listener = tcp_listener_on(&client, 5000);
        let seen1 = tcp_reflexive(&client, 5000, r1);
        let seen2 = tcp_reflexive(&client, 5000, r2);
        assert_eq!(seen1.port(), 5000, "{name}: port preserved");
        assert_eq!(
            seen2.port() == seen1.port(),
            same_port,
            "{name}: {seen1} {seen2}"
        );
        let to = seen1;
        let started = Instant::now();
        let reached = stranger
            .netns()
            .run(move || TcpStream::connect_timeout(&to, Duration::from_millis(1200)));
        match reached {
            Ok(_) => {
                assert!(stranger_gets_in, "{name}: a stranger connected");
                listener.accept().unwrap();
            }
            Err(e) => {
                assert!(!stranger_gets_in, "{name}: {e}");
                assert_eq!(e.kind(), ErrorKind::TimedOut, "{name}: {e} (a RST?)");
                assert!(started.elapsed() >= Duration::from_millis(1100));
            }
        }
    }
}

#[netns_test]
fn tcp_simultaneous_open_works_across_two_port_restricted_cone_nats() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let reflector = tcp_reflector(s1, *a1, 80);
    let (_ra, _ua, a) = lab.home("a", Nat::port_restricted_cone());
    let (_rb, _ub, b) = lab.home("b", Nat::port_restricted_cone());
    let a_public = tcp_reflexive(&a, 4000, reflector);
    let b_public = tcp_reflexive(&b, 4000, reflector);
    // Both connect to the other's public address at once (b 100 ms
    // later): the first SYN is dropped silently by the other NAT, the
    // other one's SYN crosses and the connection opens on both sides.
    let (a2, b2) = (a.clone(), b.clone());
    let first =
        std::thread::spawn(move || tcp_from(&a2, 4000, Some(b_public), Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(100));
    let second =
        std::thread::spawn(move || tcp_from(&b2, 4000, Some(a_public), Duration::from_secs(5)));
    let mut a_stream = first.join().unwrap().expect("a connects");
    let mut b_stream = second.join().unwrap().expect("b connects");
    assert_eq!(a_stream.peer_addr().unwrap(), b_public);
    assert_eq!(b_stream.peer_addr().unwrap(), a_public);
    a_stream.write_all(b"ping").unwrap();
    let mut word = [0u8; 4];
    b_stream.read_exact(&mut word).unwrap();
    assert_eq!(&word, b"ping");
}

#[netns_test]
fn tcp_hairpinning_shows_the_senders_public_mapping() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let reflector = tcp_reflector(s1, *a1, 80);
    let (router, _uplink, a) = lab.home("home", Nat::full_cone().hairpin(true));
    let lan = lab.net.switch("lan2").unwrap();
    lab.net.attach(&router, &lan).unwrap();
    let b = lab.net.node("b").unwrap();
    lab.net.attach(&b, &lan).unwrap();
    let listener = tcp_listener_on(&b, 7000);
    let b_public = tcp_reflexive(&b, 7000, reflector);
    let a_public = tcp_reflexive(&a, 5000, reflector);
    let stream = tcp_from(&a, 5000, Some(b_public), Duration::from_secs(3)).expect("hairpinned");
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer, a_public, "b sees a's public mapping");
    drop(stream);
}

#[netns_test]
fn hairpinning_through_a_cgnat_shows_the_senders_public_mapping() {
    // internet -- cgnat (hairpin) -- carrier switch -- home a, home b.
    let net = Network::new();
    let internet = net.router("internet").unwrap();
    let server = net.node("server").unwrap();
    let server_link = net.link(&internet, &server).unwrap();
    let reflector = Reflector::start(&server, IpAddr::V4(server.ipv4_on(&server_link)), 3478);
    let cgnat = net.router("cgnat").unwrap();
    let uplink = net.link(&cgnat, &internet).unwrap();
    let carrier = net.switch("carrier").unwrap();
    net.attach(&cgnat, &carrier).unwrap();
    cgnat
        .nat(&uplink, Nat::port_restricted_cone().hairpin(true))
        .unwrap();
    let mut clients = Vec::new();
    let mut keep = Vec::new();
    for name in ["a", "b"] {
        let home = net.router(&format!("home-{name}")).unwrap();
        let wan = net.attach(&home, &carrier).unwrap();
        let client = net.node(name).unwrap();
        net.link(&client, &home).unwrap();
        home.nat(&wan, Nat::port_restricted_cone()).unwrap();
        clients.push(client);
        keep.push((home, wan));
    }
    let a_socket = udp(&clients[0], Ipv4Addr::UNSPECIFIED, 4000);
    let b_socket = udp(&clients[1], Ipv4Addr::UNSPECIFIED, 4000);
    let (to_b, from_a) = mpsc::channel();
    let (to_a, from_b) = mpsc::channel();
    let address = reflector.address;
    let (a_public_tx, a_public_rx) = mpsc::channel();
    let first = std::thread::spawn(move || {
        let public = reflexive(&a_socket, address);
        a_public_tx.send(public).unwrap();
        punch(a_socket, address, to_b, from_b, Duration::ZERO)
    });
    let second = std::thread::spawn(move || punch(b_socket, address, to_a, from_a, Duration::ZERO));
    let heard_by_a = first.join().unwrap();
    let heard_by_b = second.join().unwrap();
    let a_public = a_public_rx.recv().unwrap();
    assert_eq!(a_public.ip(), IpAddr::V4(cgnat.ipv4_on(&uplink)));
    assert!(heard_by_a.is_some(), "a heard nothing from b");
    assert_eq!(
        heard_by_b,
        Some(a_public),
        "b sees a's public (CGNAT) mapping"
    );
}

#[netns_test]
fn endpoints_choosing_one_port_at_once_each_get_a_mapping_from_their_first_packet() {
    // Six clients on one LAN send their first packet from the same inside
    // port at the same instant (threads on every CPU, through one NAT):
    // one keeps the port, the others get others, each at its first packet
    // (a NAT that let two endpoints pick one port had conntrack drop the
    // loser's packet, and mapped the loser to that port for good). Over
    // UDP (one datagram, no retry) and TCP (no SYN retransmitted).
    const CLIENTS: usize = 6;
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let tcp = tcp_reflector(s1, *a1, 80);
    let (router, uplink, first) = lab.home("home", Nat::new());
    let lan = lab.net.switch("lan").unwrap();
    lab.net.attach(&router, &lan).unwrap();
    let mut clients = vec![first];
    for i in 1..CLIENTS {
        let client = lab.net.node(&format!("pc{i}")).unwrap();
        lab.net.attach(&client, &lan).unwrap();
        clients.push(client);
    }
    let public = IpAddr::V4(router.ipv4_on(&uplink));
    for round in 0..8u16 {
        let port = 4000 + round;
        let start = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
        let threads: Vec<_> = clients
            .iter()
            .map(|client| {
                let socket = udp(client, Ipv4Addr::UNSPECIFIED, port);
                socket
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let start = start.clone();
                let client = client.clone();
                std::thread::spawn(move || {
                    start.wait();
                    socket.send_to(b"who am I", reflector.address).unwrap();
                    let mut buf = [0u8; 64];
                    let udp = match socket.recv_from(&mut buf) {
                        Ok((n, _)) => Some(std::str::from_utf8(&buf[..n]).unwrap().to_owned()),
                        Err(_) => None,
                    };
                    start.wait();
                    let stream =
                        tcp_from(&client, port + 100, Some(tcp), Duration::from_secs(5)).unwrap();
                    let retransmitted = syn_retransmissions(&stream);
                    let mut text = String::new();
                    (&stream).read_to_string(&mut text).unwrap();
                    (udp, text, retransmitted)
                })
            })
            .collect();
        let mut udp_seen = Vec::new();
        let mut tcp_seen = Vec::new();
        for thread in threads {
            let (udp, tcp, retransmitted) = thread.join().unwrap();
            let udp: SocketAddr = udp
                .unwrap_or_else(|| panic!("round {round}: a first datagram got no answer"))
                .parse()
                .unwrap();
            assert_eq!(retransmitted, 0, "round {round}: a SYN was sent again");
            udp_seen.push(udp);
            tcp_seen.push(tcp.parse::<SocketAddr>().unwrap());
        }
        for seen in [&mut udp_seen, &mut tcp_seen] {
            assert!(seen.iter().all(|s| s.ip() == public), "{seen:?}");
            seen.sort();
            seen.dedup_by_key(|s| s.port());
            assert_eq!(seen.len(), CLIENTS, "round {round}: a port shared");
        }
    }
    let _ = lan;
}

/// How many times the kernel sent a segment of `stream` again (its SYN,
/// right after connecting): `tcpi_total_retrans` of `TCP_INFO`.
fn syn_retransmissions(stream: &TcpStream) -> u32 {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the descriptor is open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

#[netns_test]
fn timeouts_bound_how_long_an_idle_mapping_lives() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (stranger, a3) = &lab.stranger;
    let server = udp(s1, *a1, 3478);
    let (router, uplink, client) = lab.home(
        "home",
        Nat::full_cone()
            .udp_timeout(Duration::from_secs(2))
            .tcp_timeout(Duration::from_secs(2)),
    );
    let public = SocketAddr::from((router.ipv4_on(&uplink), 5000));
    let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
    socket
        .send_to(b"out", SocketAddr::from((*a1, 3478)))
        .unwrap();
    let mut buf = [0u8; 8];
    server.recv_from(&mut buf).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // Alive after 1 s idle: the server and a stranger get in.
    server.send_to(b"in", public).unwrap();
    udp(stranger, *a3, 4001).send_to(b"in", public).unwrap();
    assert_eq!(received(&socket).len(), 2, "alive at 1 s");
    std::thread::sleep(Duration::from_millis(3500));
    // Gone after more than 2 s idle: neither gets in.
    server.send_to(b"in", public).unwrap();
    udp(stranger, *a3, 4002).send_to(b"in", public).unwrap();
    assert!(
        received(&socket).is_empty(),
        "the mapping outlived its timeout"
    );
    // TCP: an established connection idle for more than 2 s is forgotten.
    let listener = s1.netns().run({
        let a1 = *a1;
        move || TcpListener::bind((a1, 80)).unwrap()
    });
    let to = SocketAddr::from((*a1, 80));
    let mut stream = client.netns().run(move || TcpStream::connect(to).unwrap());
    let (mut far, _) = listener.accept().unwrap();
    far.write_all(b"1").unwrap();
    stream.read_exact(&mut buf[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    far.write_all(b"2").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let error = stream.read_exact(&mut buf[..1]).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );
    // Out of range: an error naming the knob; the NAT stays as it was.
    for nat in [
        Nat::new().udp_timeout(Duration::ZERO),
        Nat::new().tcp_timeout(Duration::from_secs(30 * 24 * 3600)),
    ] {
        let error = router.nat(&uplink, nat).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(
            text.contains("_timeout(") && text.contains("1 s to 24 days") && text.contains("home"),
            "{text}"
        );
    }
    socket
        .send_to(b"out", SocketAddr::from((*a1, 3478)))
        .unwrap();
    udp(stranger, *a3, 4003).send_to(b"in", public).unwrap();
    assert!(!received(&socket).is_empty(), "still a full cone");
}

#[netns_test]
fn rebind_moves_every_flow_to_a_new_public_port_and_the_old_one_gets_nothing() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (stranger, a3) = &lab.stranger;
    let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let server = udp(s1, *a1, 3479);
    for nat in [
        Nat::full_cone(),
        Nat::port_restricted_cone(),
        Nat::symmetric(),
    ] {
        let name = format!("{:?}", nat.clone()).len().to_string();
        let (router, uplink, client) = lab.home(&format!("home{name}"), nat.clone());
        let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
        let before = reflexive(&socket, reflector.address);
        socket
            .send_to(b"hi", SocketAddr::from((*a1, 3479)))
            .unwrap();
        let mut buf = [0u8; 8];
        server.recv_from(&mut buf).unwrap();
        router.rebind(&uplink).unwrap();
        let after = reflexive(&socket, reflector.address);
        assert_eq!(after.ip(), before.ip());
        assert_ne!(
            after.port(),
            before.port(),
            "{nat:?}: the flow kept its port"
        );
        // The old mapping receives nothing, from the server or a stranger.
        server.send_to(b"old", before).unwrap();
        udp(stranger, *a3, 4000).send_to(b"old", before).unwrap();
        let got = received(&socket);
        assert!(
            got.iter().all(|from| *from == reflector.address),
            "{nat:?}: {got:?}"
        );
        // Twice works too.
        router.rebind(&uplink).unwrap();
        let again = reflexive(&socket, reflector.address);
        assert!(
            again.port() != after.port() && again.port() != before.port(),
            "{nat:?}"
        );
    }
}

#[netns_test]
fn a_nat_changed_during_the_test_applies_at_once() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (s2, a2) = &lab.servers[1];
    let (stranger, a3) = &lab.stranger;
    let r1 = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let r2 = Reflector::start(s2, IpAddr::V4(*a2), 3478);
    let (router, uplink, client) = lab.home("home", Nat::port_restricted_cone());
    let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
    let public = reflexive(&socket, r1.address);
    let strange = udp(stranger, *a3, 4000);
    strange.send_to(b"in", public).unwrap();
    assert!(received(&socket).is_empty(), "port restricted");
    router.nat(&uplink, Nat::full_cone()).unwrap();
    // The mapping survives the change; the next packet out refreshes it.
    assert_eq!(reflexive(&socket, r1.address), public);
    strange.send_to(b"in", public).unwrap();
    assert_eq!(
        received(&socket),
        [SocketAddr::from((*a3, 4000))],
        "full cone now"
    );
    router.nat(&uplink, Nat::symmetric()).unwrap();
    let fresh = udp(&client, Ipv4Addr::UNSPECIFIED, 6000);
    let p1 = reflexive(&fresh, r1.address);
    let p2 = reflexive(&fresh, r2.address);
    assert_ne!(p1.port(), p2.port(), "symmetric now");
    // And back to Linux's masquerade, which a NAT replaces in turn.
    router.masquerade(&uplink).unwrap();
    router.nat(&uplink, Nat::full_cone()).unwrap();
    let third = udp(&client, Ipv4Addr::UNSPECIFIED, 7000);
    let p = reflexive(&third, r1.address);
    assert_eq!(reflexive(&third, r2.address), p);
}

#[netns_test]
fn ipv6_is_filtered_as_the_nat_says_but_not_translated() {
    let lab = Lab::new();
    let (s1, _) = &lab.servers[0];
    let (stranger, _) = &lab.stranger;
    for (name, nat, stranger_gets_in) in [
        ("pr", Nat::port_restricted_cone(), false),
        ("rc", Nat::restricted_cone(), false),
        ("fc", Nat::full_cone(), true),
    ] {
        let (router, uplink, client) = lab.home(name, nat);
        let _ = (&router, &uplink);
        // Addresses: each node's first IPv6 address (its /etc/hosts name).
        let v6 = |node: &Node| -> std::net::Ipv6Addr {
            let name = node.name().to_owned();
            node.netns().run(move || {
                use std::net::ToSocketAddrs;
                (name.as_str(), 0)
                    .to_socket_addrs()
                    .unwrap()
                    .find_map(|a| match a.ip() {
                        IpAddr::V6(v6) => Some(v6),
                        _ => None,
                    })
                    .unwrap()
            })
        };
        let (client_v6, server_v6, stranger_v6) = (v6(&client), v6(s1), v6(stranger));
        let server = udp(s1, server_v6, 3478);
        let socket = udp(&client, client_v6, 5000);
        socket
            .send_to(b"out", SocketAddr::from((server_v6, 3478)))
            .unwrap();
        let mut buf = [0u8; 8];
        let (_, from) = server.recv_from(&mut buf).expect("routed back and forth");
        assert_eq!(
            from,
            SocketAddr::from((client_v6, 5000)),
            "{name}: not translated"
        );
        server.send_to(b"reply", from).unwrap();
        assert_eq!(received(&socket), [SocketAddr::from((server_v6, 3478))]);
        udp(stranger, stranger_v6, 4000)
            .send_to(b"in", from)
            .unwrap();
        assert_eq!(!received(&socket).is_empty(), stranger_gets_in, "{name}");
    }
}

#[netns_test]
fn bad_nat_input_is_an_error_naming_the_router_and_changes_nothing() {
    let lab = Lab::new();
    let (s1, a1) = &lab.servers[0];
    let (stranger, a3) = &lab.stranger;
    let reflector = Reflector::start(s1, IpAddr::V4(*a1), 3478);
    let (router, uplink, client) = lab.home("home", Nat::full_cone());
    let elsewhere = lab
        .net
        .link(&lab.internet, &lab.net.node("far").unwrap())
        .unwrap();
    let check = |error: netns_test::Error, says: &str| {
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
        let text = error.to_string();
        assert!(text.contains("home") && text.contains(says), "{text}");
    };
    check(
        router.nat(&elsewhere, Nat::new()).unwrap_err(),
        "not on link",
    );
    check(router.rebind(&elsewhere).unwrap_err(), "not on link");
    check(router.masquerade(&elsewhere).unwrap_err(), "not on link");
    check(
        router
            .forward_port(&elsewhere, 80, &client, 80)
            .unwrap_err(),
        "not on link",
    );
    // A link without a NAT of the router: rebind has nothing to rebind.
    let other = lab.net.router("other").unwrap();
    let other_link = lab.net.link(&other, &lab.internet).unwrap();
    let error = other.rebind(&other_link).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("other has no NAT"), "{error}");
    other.masquerade(&other_link).unwrap();
    assert!(
        other
            .rebind(&other_link)
            .unwrap_err()
            .to_string()
            .contains("no NAT")
    );
    // A NAT on a node that does not forward.
    let node = lab.net.node("plain").unwrap();
    let node_link = lab.net.link(&node, &lab.internet).unwrap();
    let error = node.nat(&node_link, Nat::new()).unwrap_err();
    assert!(error.to_string().contains("not a router"), "{error}");
    // The router kept its full cone through all of it.
    let socket = udp(&client, Ipv4Addr::UNSPECIFIED, 5000);
    let public = reflexive(&socket, reflector.address);
    udp(stranger, *a3, 4000).send_to(b"in", public).unwrap();
    assert_eq!(received(&socket).len(), 1);
    let _ = uplink;
}

/// Every NAT test again, as uid 65534 in rootless mode (when root), and in
/// a run whose PATH has no `nft` or `conntrack` (an empty directory): the
/// NAT speaks nf_tables and ctnetlink itself.
#[test]
fn nat_works_rootless_and_without_nft() {
    common::rerun(
        &["--skip", "nat_works_rootless_and_without_nft"],
        common::Rerun::AsNobodyWithoutNft,
        "17 passed",
    );
}

#[netns_test]
fn links_and_switches_take_the_subnets_a_user_gives_and_overlaps_are_refused() {
    // A home LAN in 192.168.1.0/24 behind a NAT, a CGNAT's 100.64.0.0/10,
    // public-looking addresses outside.
    let net = Network::new();
    let internet = net.router("internet").unwrap();
    let server = net.node("server").unwrap();
    let server_link = net
        .link_with(&internet, &server, &["198.51.100.0/24", "2001:db8:5::/64"])
        .unwrap();
    assert_eq!(server.ipv4_on(&server_link), Ipv4Addr::new(198, 51, 100, 2));
    assert_eq!(
        server.ipv6_on(&server_link),
        "2001:db8:5::2".parse::<std::net::Ipv6Addr>().unwrap()
    );
    let cgnat = net.router("cgnat").unwrap();
    let uplink = net
        .link_with(&cgnat, &internet, &["203.0.113.0/30"])
        .unwrap();
    let carrier = net.switch_with("carrier", &["100.64.0.0/10"]).unwrap();
    net.attach(&cgnat, &carrier).unwrap();
    let home = net.router("home").unwrap();
    let wan = net.attach(&home, &carrier).unwrap();
    assert_eq!(home.ipv4_on(&wan), Ipv4Addr::new(100, 64, 0, 2));
    let lan = net.switch_with("lan", &["192.168.1.0/24"]).unwrap();
    let gateway = net.attach(&home, &lan).unwrap();
    let laptop = net.node("laptop").unwrap();
    let laptop_link = net.attach(&laptop, &lan).unwrap();
    assert_eq!(home.ipv4_on(&gateway), Ipv4Addr::new(192, 168, 1, 1));
    assert_eq!(laptop.ipv4_on(&laptop_link), Ipv4Addr::new(192, 168, 1, 2));
    home.nat(&wan, Nat::new()).unwrap();
    cgnat.nat(&uplink, Nat::new()).unwrap();
    // The laptop reaches the server, which sees the CGNAT's address.
    let reflector = Reflector::start(&server, IpAddr::V4(server.ipv4_on(&server_link)), 3478);
    let socket = udp(&laptop, Ipv4Addr::UNSPECIFIED, 5000);
    assert_eq!(
        reflexive(&socket, reflector.address).ip(),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))
    );
    // Overlaps inside the network, and bad subnets, are refused by name.
    let other = net.node("other").unwrap();
    let error = net
        .link_with(&other, &internet, &["192.168.1.128/25"])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(
        error.to_string().contains(
            "subnet 192.168.1.128/25 of link other-internet overlaps 192.168.1.0/24 of switch lan"
        ),
        "{error}"
    );
    let error = net
        .switch_with("lan2", &["100.100.0.0/16"])
        .err()
        .expect("an overlap");
    assert!(
        error
            .to_string()
            .contains("overlaps 100.64.0.0/10 of switch carrier"),
        "{error}"
    );
    let error = net
        .link_with(&other, &internet, &["10.0.0.1/24"])
        .unwrap_err();
    assert!(error.to_string().contains("write 10.0.0.0/24"), "{error}");
    // Nothing was left of the refused ones: the subnets stay free.
    net.link_with(&other, &internet, &["10.0.0.0/24"]).unwrap();
    net.switch_with("lan2", &["172.16.0.0/12"]).unwrap();
}
