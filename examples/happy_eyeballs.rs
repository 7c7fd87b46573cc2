//! Happy Eyeballs (RFC 8305) over a link whose IPv6 is black-holed: the
//! client tries IPv6 first, starts IPv4 250 ms later, and uses whichever
//! connects first. Then the same with IPv4 broken and IPv6 fine, and with
//! both fine; the client prints which family won, how long it took, and
//! what the fault engine did to what it sent.
//!
//! ```text
//! sudo cargo run --example happy_eyeballs
//! ```

use netns_test::{Impairment, Network, Traffic};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// RFC 8305's "Connection Attempt Delay".
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to `host:port` the Happy Eyeballs way: the addresses in
/// turn, IPv6 first, each `ATTEMPT_DELAY` after the one before unless one
/// has connected; the first connection wins.
fn happy_eyeballs(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut addresses: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addresses.sort_by_key(SocketAddr::is_ipv4);
    let (done, results) = mpsc::channel();
    let mut last_error = None;
    for (i, address) in addresses.iter().copied().enumerate() {
        if i > 0 {
            match results.recv_timeout(ATTEMPT_DELAY) {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => {}
            }
        }
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = done.send(TcpStream::connect_timeout(&address, Duration::from_secs(3)));
        });
    }
    drop(done);
    for result in results {
        match result {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()))
}

fn main() -> Result<(), netns_test::Error> {
    let net = Network::new();
    let client = net.node("client")?;
    let server = net.node("server")?;
    let link = net.link(&client, &server)?;
    for family in [4, 6] {
        let address = match family {
            4 => SocketAddr::from((server.ipv4_on(&link), 443)),
            _ => SocketAddr::from((server.ipv6_on(&link), 443)),
        };
        let listener = server
            .netns()
            .run(move || TcpListener::bind(address).unwrap());
        std::thread::spawn(move || for _ in listener.incoming() {});
    }
    for (what, broken) in [
        ("IPv6 black-holed", Some(Traffic::ipv6())),
        ("IPv4 black-holed", Some(Traffic::ipv4())),
        ("both fine", None),
    ] {
        let impairment = match broken {
            Some(traffic) => Impairment::new().loss(100.0).only(traffic),
            None => Impairment::new(),
        };
        link.impair(impairment)?;
        let before = link.counters_from(&client);
        let (peer, took) = client.netns().run(|| {
            let start = Instant::now();
            let stream = happy_eyeballs("server", 443).expect("no family connected");
            (stream.peer_addr().unwrap(), start.elapsed())
        });
        let family = if peer.is_ipv6() { "IPv6" } else { "IPv4" };
        let after = link.counters_from(&client);
        println!(
            "{what:<17} connected over {family} in {:>6.1} ms; the client's SYNs lost: {}",
            took.as_secs_f64() * 1000.0,
            after.lost() - before.lost()
        );
    }
    println!(
        "what the engine did to what the client sent: {}",
        link.counters_from(&client)
    );
    Ok(())
}
