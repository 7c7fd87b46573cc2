//! Faults on links: every knob, one direction at a time, replayed from a seed.

mod common;

use netns_test::{Impairment, Network, Node, netns_test};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[netns_test]
fn smoke_engine_path() {
    let net = Network::new();
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    link.impair(Impairment::new().loss(0.0)).unwrap();
    link.impair_from(&a, Impairment::new().delay(Duration::from_millis(1))).unwrap();
    let address = IpAddr::V4(b.ipv4_on(&link));
    let listener = b.netns().run(move || TcpListener::bind((address, 80)).unwrap());
    let start = Instant::now();
    let mut stream = a.netns().run(move || TcpStream::connect((address, 80)).unwrap());
    println!("connect {:?}", start.elapsed());
    println!("{}", a.netns().command("ip").args(["-d", "link"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap());
    let (mut server, _) = listener.accept().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        loop {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k,
            }
        }
    });
    let chunk = vec![1u8; 1 << 16];
    let start = Instant::now();
    for _ in 0..3000 {
        stream.write_all(&chunk).unwrap();
    }
    drop(stream);
    let n = reader.join().unwrap();
    let t = start.elapsed();
    println!("{} bytes in {:?}: {:.2} Gbit/s", n, t, n as f64 * 8.0 / t.as_secs_f64() / 1e9);
    let _ = (UdpSocket::bind("127.0.0.1:0"), SocketAddr::from(([127, 0, 0, 1], 1)));
    let _: Option<&Node> = None;
}
