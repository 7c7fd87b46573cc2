//! `#[netns_test(veth)]`: a veth pair to the host, with unique addresses.

use netns_test::{NetNs, netns_test};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};

#[netns_test(veth)]
fn tcp_and_udp_both_ways_at_body_start() {
    let ns = NetNs::current();
    let veth = ns.veth().expect("veth requested").clone();
    println!("{veth:?}");
    for (inside, outside) in [
        (IpAddr::V4(veth.ns_ipv4()), IpAddr::V4(veth.host_ipv4())),
        (IpAddr::V6(veth.ns_ipv6()), IpAddr::V6(veth.host_ipv6())),
    ] {
        // Host -> test, TCP.
        let server = TcpListener::bind((inside, 8080)).unwrap();
        let got = ns.host().run(move || {
            let mut c = TcpStream::connect((inside, 8080)).unwrap();
            c.write_all(b"in").unwrap();
            c.local_addr().unwrap().ip()
        });
        let (mut s, peer) = server.accept().unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"in");
        assert_eq!(peer.ip(), outside);
        assert_eq!(got, outside);
        // Test -> host, TCP.
        let host_server = ns.host().run(move || TcpListener::bind((outside, 0)).unwrap());
        let port = host_server.local_addr().unwrap().port();
        let mut c = TcpStream::connect((outside, port)).unwrap();
        c.write_all(b"out").unwrap();
        let (mut s, peer) = host_server.accept().unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"out");
        assert_eq!(peer.ip(), inside);
        // UDP both ways.
        let here = UdpSocket::bind((inside, 5353)).unwrap();
        let there = ns.host().run(move || UdpSocket::bind((outside, 0)).unwrap());
        there.send_to(b"q", (inside, 5353)).unwrap();
        let mut b = [0u8; 1];
        let (_, from) = here.recv_from(&mut b).unwrap();
        assert_eq!(from.ip(), outside);
        here.send_to(b"r", from).unwrap();
        let (_, from) = there.recv_from(&mut b).unwrap();
        assert_eq!(from, SocketAddr::new(inside, 5353));
    }
}
