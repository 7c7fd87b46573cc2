//! Two homes behind one carrier-grade NAT (RFC 6598 addresses between
//! them), each home a NAT of its own: the clients learn their public
//! address from a server, punch to each other, and each sees the other at
//! its public (CGNAT) address, through the CGNAT's hairpinning.
//!
//! ```text
//!   server ── internet ── cgnat (hairpin) ── carrier switch 100.64.0.0/10
//!                                              /                  \
//!                                 (NAT) home-a                    home-b (NAT)
//!                                 192.168.1.0/24 a                192.168.2.0/24 b
//! sudo cargo run --example cgnat
//! ```

use netns_test::{Nat, Network};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn main() -> Result<(), netns_test::Error> {
    let net = Network::new();
    let internet = net.router("internet")?;
    let server = net.node("server")?;
    let server_link = net.link_with(&internet, &server, &["198.51.100.0/24"])?;
    let cgnat = net.router("cgnat")?;
    let uplink = net.link_with(&cgnat, &internet, &["203.0.113.0/30"])?;
    let carrier = net.switch_with("carrier", &["100.64.0.0/10"])?;
    net.attach(&cgnat, &carrier)?;
    cgnat.nat(&uplink, Nat::port_restricted_cone().hairpin(true))?;
    let mut homes = Vec::new();
    for (name, lan) in [("a", "192.168.1.0/24"), ("b", "192.168.2.0/24")] {
        let home = net.router(&format!("home-{name}"))?;
        let wan = net.attach(&home, &carrier)?;
        let peer = net.node(name)?;
        let inside = net.link_with(&peer, &home, &[lan])?;
        home.nat(&wan, Nat::port_restricted_cone())?;
        println!(
            "{name}: {} behind home-{name}, which is {} on the carrier network",
            peer.ipv4_on(&inside),
            home.ipv4_on(&wan)
        );
        homes.push((home, wan, peer, inside));
    }
    println!("cgnat: {} on the internet", cgnat.ipv4_on(&uplink));

    // The server tells each client where it comes from (as STUN does).
    let reflector = SocketAddr::from((server.ipv4_on(&server_link), 3478));
    let socket = server
        .netns()
        .run(move || UdpSocket::bind(reflector))
        .expect("bind");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(from.to_string().as_bytes(), from);
        }
    });
    let sockets: Vec<UdpSocket> = homes
        .iter()
        .map(|(_, _, peer, _)| {
            peer.netns()
                .run(|| UdpSocket::bind("0.0.0.0:4000"))
                .expect("bind")
        })
        .collect();
    let mut publics = Vec::new();
    for socket in &sockets {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        let public: SocketAddr = loop {
            socket.send_to(b"?", reflector).unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                break std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
            }
        };
        publics.push(public);
    }
    println!("public addresses: a {}, b {}", publics[0], publics[1]);

    // Both punch at once; each answers what reaches it.
    let mut seen = [None, None];
    let mut buf = [0u8; 64];
    for _ in 0..40 {
        for (i, socket) in sockets.iter().enumerate() {
            socket.send_to(b"punch", publics[1 - i]).unwrap();
        }
        for (i, socket) in sockets.iter().enumerate() {
            socket
                .set_read_timeout(Some(Duration::from_millis(25)))
                .unwrap();
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                seen[i].get_or_insert(from);
            }
        }
        if seen.iter().all(Option::is_some) {
            break;
        }
    }
    match (seen[0], seen[1]) {
        (Some(from_b), Some(from_a)) => {
            println!(
                "a hears b from {from_b}, b hears a from {from_a}: through the CGNAT's hairpin"
            );
            assert_eq!((from_b, from_a), (publics[1], publics[0]));
        }
        other => println!("no way through: {other:?}"),
    }
    Ok(())
}
