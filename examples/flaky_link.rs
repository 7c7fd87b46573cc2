//! A client asks a server for 20 answers over a link that loses packets in
//! bursts and flaps (all lost for 300 ms, then fine for 700 ms, again and
//! again). The client retries each request after a timeout, and prints the
//! network's seed: run it again with `NETNS_TEST_SEED` to make the same
//! decisions about the same packets.
//!
//! ```text
//! sudo cargo run --example flaky_link
//! sudo NETNS_TEST_SEED=0x5eed cargo run --example flaky_link
//! ```

use netns_test::{Impairment, Network, Schedule};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() -> Result<(), netns_test::Error> {
    let ms = Duration::from_millis;
    let net = Network::new();
    println!(
        "network seed {:#018x} (rerun with NETNS_TEST_SEED={:#018x})",
        net.seed(),
        net.seed()
    );
    let client = net.node("client")?;
    let server = net.node("server")?;
    let link = net.link(&client, &server)?;
    // Bursty loss on the way to the server, 20 ms each way, and the link
    // flaps: 300 ms down, 700 ms up.
    link.impair_from(&client, Impairment::new().loss_bursts(10.0, 4))?;
    let flapping = Schedule::new()
        .then(ms(300), Impairment::new().delay(ms(20)).loss(100.0))
        .then(ms(700), Impairment::new().delay(ms(20)))
        .repeat();
    link.schedule_from(&server, flapping)?;

    let address = (server.ipv4_on(&link), 7000);
    let socket = server
        .netns()
        .run(move || UdpSocket::bind(address).unwrap());
    // The server answers each request with its number.
    server.netns().spawn(move || {
        let mut buf = [0u8; 4];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            socket.send_to(&buf[..n], from).unwrap();
        }
    });

    let start = Instant::now();
    let retries = client.netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect(address).unwrap();
        socket.set_read_timeout(Some(ms(100))).unwrap();
        let mut retries = 0;
        for request in 0u32..20 {
            let mut buf = [0u8; 4];
            for attempt in 1.. {
                socket.send(&request.to_be_bytes()).unwrap();
                match socket.recv(&mut buf) {
                    Ok(4) if u32::from_be_bytes(buf) == request => {
                        println!(
                            "request {request:>2}: answered at {:>5.2} s after {attempt} attempt(s)",
                            start.elapsed().as_secs_f64()
                        );
                        break;
                    }
                    // A late answer to an earlier attempt, or a timeout: again.
                    _ => retries += 1,
                }
            }
            std::thread::sleep(ms(50));
        }
        retries
    });
    println!(
        "20 requests answered in {:.2} s with {retries} retries",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
