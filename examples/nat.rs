//! A client behind a NAT router reaches a server; the server sees the
//! router's outside address, not the client's.
//!
//! ```text
//!  client ──(inside)── nat ──(outside)── server
//! sudo cargo run --example nat
//! ```

use netns_test::Network;
use std::net::{TcpListener, TcpStream};

fn main() -> Result<(), netns_test::Error> {
    let net = Network::new();
    let client = net.node("client")?;
    let router = net.router("nat")?;
    let server = net.node("server")?;
    let inside = net.link(&client, &router)?;
    let outside = net.link(&router, &server)?;
    router.masquerade(&outside)?;

    let address = server.ipv4_on(&outside);
    let listener = server
        .netns()
        .run(move || TcpListener::bind((address, 80)).unwrap());
    client
        .netns()
        .run(move || TcpStream::connect((address, 80)).unwrap());
    let (_, peer) = listener.accept().expect("accept");
    println!("client   {} (inside)", client.ipv4_on(&inside));
    println!(
        "router   {} (inside), {} (outside)",
        router.ipv4_on(&inside),
        router.ipv4_on(&outside)
    );
    println!(
        "server   {} sees the connection from {}",
        address,
        peer.ip()
    );
    assert_eq!(peer.ip(), router.ipv4_on(&outside));
    Ok(())
}
