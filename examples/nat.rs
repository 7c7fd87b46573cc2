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
    let net = Network::new()?;
    let client = net.node("client")?;
    let router = net.router("nat")?;
    let server = net.node("server")?;
    let inside = net.link(&client, &router)?;
    let outside = net.link(&router, &server)?;
    router.masquerade(&outside)?;

    let address = server.addr_on(&outside);
    let listener = server.run(move || TcpListener::bind((address, 80)).unwrap());
    client.run(move || TcpStream::connect((address, 80)).unwrap());
    let (_, peer) = listener.accept().expect("accept");
    println!("client   {} (inside)", client.addr_on(&inside));
    println!(
        "router   {} (inside), {} (outside)",
        router.addr_on(&inside),
        router.addr_on(&outside)
    );
    println!(
        "server   {} sees the connection from {}",
        address,
        peer.ip()
    );
    assert_eq!(peer.ip(), router.addr_on(&outside));
    Ok(())
}
