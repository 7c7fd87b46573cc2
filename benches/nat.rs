//! What a NAT and a firewall cost: setting each kind of NAT (a router's
//! first NAT, and one replacing another), TCP throughput through a
//! full-cone NAT router against the same router with plain `masquerade`,
//! and TCP throughput through a router with each firewall against the same
//! router without one, in one run.
//!
//! ```text
//! sudo cargo bench --bench nat            # 7 rounds
//! sudo cargo bench --bench nat -- 15
//! ```
//!
//! Kinds are shuffled each round; figures are medians over rounds. The
//! throughput contenders take turns on one router (its NAT replaced before
//! each transfer), each transfer 0.5 s of 64 KiB writes client -> server.

use netns_test::{Firewall, Link, Nat, Network, Node, Traffic};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A cheap shuffle: the round number picks the rotation and direction.
fn shuffled<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut out: Vec<T> = items.to_vec();
    out.rotate_left(round % items.len());
    if round % 2 == 1 {
        out.reverse();
    }
    out
}

fn kinds() -> Vec<(&'static str, Nat)> {
    vec![
        ("full_cone", Nat::full_cone()),
        ("restricted_cone", Nat::restricted_cone()),
        ("port_restricted_cone", Nat::port_restricted_cone()),
        ("symmetric", Nat::symmetric()),
        ("full_cone + hairpin", Nat::full_cone().hairpin(true)),
    ]
}

/// Milliseconds of `router.nat(..)`: the first on a fresh router, and a
/// replacement of another kind.
fn set_nat(nat: &Nat) -> (f64, f64) {
    let net = Network::new();
    let isp = net.router("isp").unwrap();
    let home = net.router("home").unwrap();
    let client = net.node("client").unwrap();
    let wan = net.link(&home, &isp).unwrap();
    let _lan = net.link(&client, &home).unwrap();
    let start = Instant::now();
    home.nat(&wan, nat.clone()).unwrap();
    let first = start.elapsed();
    home.nat(&wan, Nat::symmetric().hairpin(true)).unwrap();
    let start = Instant::now();
    home.nat(&wan, nat.clone()).unwrap();
    let again = start.elapsed();
    (first.as_secs_f64() * 1e3, again.as_secs_f64() * 1e3)
}

/// client -- router -- server: the nodes, and the router's link to the
/// server (the network lives as long as any of them).
fn client_router_server() -> (Network, Node, Node, Node, Link) {
    let net = Network::new();
    let client = net.node("client").unwrap();
    let router = net.router("router").unwrap();
    let server = net.node("server").unwrap();
    net.link(&client, &router).unwrap();
    let outside = net.link(&router, &server).unwrap();
    (net, client, router, server, outside)
}

/// Gbit/s of one 0.5 s TCP transfer from `client` to `server`'s `address`
/// (at `port`, any when 0).
fn transfer(client: &Node, server: &Node, address: std::net::Ipv4Addr, port: u16) -> f64 {
    let listener = server
        .netns()
        .run(move || TcpListener::bind((address, port)).unwrap());
    let to = listener.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        got
    });
    let mut stream = client.netns().run(move || TcpStream::connect(to).unwrap());
    let chunk = vec![7u8; 1 << 16];
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        stream.write_all(&chunk).unwrap();
    }
    drop(stream);
    let got = receiver.join().unwrap();
    got as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    if !netns_test::privileged() {
        eprintln!("skipped: the NAT benchmark builds networks outside a test, which needs root");
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);

    let mut first: Vec<Vec<f64>> = vec![Vec::new(); kinds().len()];
    let mut again: Vec<Vec<f64>> = vec![Vec::new(); kinds().len()];
    for round in 0..rounds * 3 {
        let order = shuffled(&(0..kinds().len()).collect::<Vec<_>>(), round);
        for k in order {
            let (f, a) = set_nat(&kinds()[k].1);
            first[k].push(f);
            again[k].push(a);
        }
    }
    println!("Setting a NAT (median of {} each, ms):", rounds * 3);
    println!("{:>22} {:>12} {:>12}", "kind", "first", "replacing");
    for (k, (name, _)) in kinds().iter().enumerate() {
        println!(
            "{name:>22} {:>12.3} {:>12.3}",
            median(first[k].clone()),
            median(again[k].clone())
        );
    }

    // client -- router -- server, the router's NAT on its server side.
    let (_net, client, router, server, outside) = client_router_server();
    let address = server.ipv4_on(&outside);
    let contenders = ["masquerade", "full_cone"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut this = [0.0; 2];
        for k in shuffled(&[0usize, 1], round) {
            match k {
                0 => router.masquerade(&outside).unwrap(),
                _ => router.nat(&outside, Nat::full_cone()).unwrap(),
            }
            this[k] = transfer(&client, &server, address, 0);
            rates[k].push(this[k]);
        }
        ratios.push(this[1] / this[0]);
    }
    println!(
        "\nTCP throughput through the router (median of {rounds} transfers of 0.5 s, Gbit/s):"
    );
    for (k, name) in contenders.iter().enumerate() {
        println!("{name:>22} {:>8.2}", median(rates[k].clone()));
    }
    println!(
        "{:>22} {:>8.2} (median of per-round ratios)",
        "full_cone / masquerade",
        median(ratios)
    );

    // The same router without NAT, with each firewall on its server side
    // (each lets the transfer through: it judges its first packet, and
    // the rest are its replies and established packets).
    let (_net, client, router, server, outside) = client_router_server();
    let address = server.ipv4_on(&outside);
    let port = 8443;
    let firewalls = [
        ("none", Firewall::new()),
        ("block_inbound", Firewall::block_inbound()),
        (
            "allow_only",
            Firewall::allow_only([Traffic::udp().port(53), Traffic::tcp().dst_port(port)]),
        ),
        (
            "relay_only",
            Firewall::new()
                .block(Traffic::udp())
                .allow(Traffic::udp().port(53)),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); firewalls.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); firewalls.len()];
    for round in 0..rounds {
        let mut this = vec![0.0; firewalls.len()];
        for k in shuffled(&(0..firewalls.len()).collect::<Vec<_>>(), round) {
            router.firewall(&outside, firewalls[k].1.clone()).unwrap();
            this[k] = transfer(&client, &server, address, port);
            rates[k].push(this[k]);
        }
        for k in 0..firewalls.len() {
            ratios[k].push(this[k] / this[0]);
        }
    }
    println!(
        "\nTCP throughput through a router with a firewall (median of {rounds} transfers of 0.5 s, Gbit/s):"
    );
    println!(
        "{:>22} {:>8} {:>16}",
        "firewall", "Gbit/s", "/ none, median"
    );
    for (k, (name, _)) in firewalls.iter().enumerate() {
        println!(
            "{name:>22} {:>8.2} {:>16.3}",
            median(rates[k].clone()),
            median(ratios[k].clone())
        );
    }
}
