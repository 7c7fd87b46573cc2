//! UDP hole punching between two peers behind NATs of every preset, the
//! second peer starting 200 ms after the first, as STUN-and-punch stacks
//! do: each learns its public address from a reflector, sends to the
//! other's every 50 ms, and answers what reaches it. Prints the matrix.
//!
//! ```text
//!                internet ── reflector
//!               /        \
//!   (NAT) home-a          home-b (NAT)
//!           |                |
//!           a                b
//! sudo cargo run --example hole_punch
//! ```

use netns_test::{Nat, Network, Node};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn udp(node: &Node) -> UdpSocket {
    node.netns()
        .run(|| UdpSocket::bind("0.0.0.0:4000"))
        .expect("bind")
}

/// Asks the reflector where `socket` is seen from.
fn reflexive(socket: &UdpSocket, reflector: SocketAddr) -> SocketAddr {
    let mut buf = [0u8; 64];
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for _ in 0..5 {
        socket.send_to(b"?", reflector).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
        }
    }
    panic!("no answer from the reflector");
}

/// Punches towards `peer` for 2 s; how long until it heard from the peer.
fn punch(socket: UdpSocket, peer: SocketAddr, reflector: SocketAddr) -> Option<Duration> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_secs(2) {
        socket.send_to(b"punch", peer).unwrap();
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            if from != reflector {
                let _ = socket.send_to(b"answer", from);
                let heard = started.elapsed();
                // Keep answering a little while for the other side.
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(b"answer", from);
                    }
                }
                return Some(heard);
            }
        }
    }
    None
}

fn attempt(a_nat: Nat, b_nat: Nat) -> Result<Option<Duration>, netns_test::Error> {
    let net = Network::new();
    let internet = net.router("internet")?;
    let server = net.node("reflector")?;
    let link = net.link_with(&internet, &server, &["198.51.100.0/24"])?;
    let reflector_address = SocketAddr::from((server.ipv4_on(&link), 3478));
    let reflector = server
        .netns()
        .run(move || UdpSocket::bind(reflector_address))
        .expect("bind");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = reflector.recv_from(&mut buf) {
            let _ = reflector.send_to(from.to_string().as_bytes(), from);
        }
    });
    let mut homes = Vec::new();
    for (name, nat, wan, lan) in [
        ("a", a_nat, "203.0.113.0/30", "192.168.1.0/24"),
        ("b", b_nat, "203.0.113.4/30", "192.168.2.0/24"),
    ] {
        let router = net.router(&format!("home-{name}"))?;
        let uplink = net.link_with(&router, &internet, &[wan])?;
        let peer = net.node(name)?;
        net.link_with(&peer, &router, &[lan])?;
        router.nat(&uplink, nat)?;
        homes.push((router, uplink, peer));
    }
    let (a, b) = (udp(&homes[0].2), udp(&homes[1].2));
    let (a_public, b_public) = (
        reflexive(&a, reflector_address),
        reflexive(&b, reflector_address),
    );
    let first = std::thread::spawn(move || punch(a, b_public, reflector_address));
    std::thread::sleep(Duration::from_millis(200));
    let second = std::thread::spawn(move || punch(b, a_public, reflector_address));
    let (first, second) = (first.join().unwrap(), second.join().unwrap());
    Ok(first
        .zip(second)
        .map(|(a, b)| a.max(b + Duration::from_millis(200))))
}

fn main() -> Result<(), netns_test::Error> {
    let presets = [
        ("full cone", Nat::full_cone()),
        ("restricted cone", Nat::restricted_cone()),
        ("port restricted", Nat::port_restricted_cone()),
        ("symmetric", Nat::symmetric()),
    ];
    println!("UDP hole punching, b starting 200 ms after a (time until both heard the other)\n");
    print!("{:>18} \\ b", "a");
    for (name, _) in &presets {
        print!("{name:>17}");
    }
    println!();
    for (a_name, a_nat) in &presets {
        print!("{a_name:>20}");
        for (_, b_nat) in &presets {
            match attempt(a_nat.clone(), b_nat.clone())? {
                Some(took) => print!("{:>17}", format!("yes {:>4} ms", took.as_millis())),
                None => print!("{:>17}", "no"),
            }
        }
        println!();
    }
    Ok(())
}
