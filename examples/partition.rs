//! A client streams to a server over a link that is cut and healed while
//! traffic flows, and prints what the client sees.
//!
//! ```text
//! sudo cargo run --example partition
//! ```

use netns_test::{Impairment, Network};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() -> Result<(), netns_test::Error> {
    let net = Network::new();
    let client = net.node("client")?;
    let server = net.node("server")?;
    let link = net.link(&client, &server)?;
    // 4 Mbit/s, so that the transfer lasts a few seconds.
    link.impair(Impairment::new().rate_kbit(4000))?;
    let address = server.ipv4_on(&link);
    let listener = server
        .netns()
        .run(move || TcpListener::bind((address, 9000)).unwrap());
    let receiver = server.netns().spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).unwrap();
        sink.len()
    });
    let start = Instant::now();
    let sender = client.netns().spawn(move || {
        let mut stream = TcpStream::connect((address, 9000)).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        for i in 1..=24 {
            stream.write_all(&chunk).unwrap();
            println!(
                "client: {:>4} KiB sent at {:>5.2} s",
                i * 64,
                start.elapsed().as_secs_f64()
            );
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    link.set_down()?;
    println!(
        "-- link cut at {:.2} s: the client's writes block",
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    link.set_up()?;
    println!(
        "-- link healed at {:.2} s: TCP retransmits and goes on",
        start.elapsed().as_secs_f64()
    );
    sender.join().expect("client");
    let received = receiver.join().expect("server");
    println!(
        "server: received {} KiB in {:.2} s",
        received / 1024,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
