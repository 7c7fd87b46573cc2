//! Faults on links: every knob, each checked in the impaired direction and
//! in the other one, replayed from a seed, on switch ports too, and torn
//! down with the network. Bounds are generous sanity checks; the figures
//! are in `cargo bench --bench impairments`.

// Elsewhere than on Linux the handles hold nothing, and dropping one is a
// no-op clippy flags; here dropping them is what these tests check.
#![allow(clippy::drop_non_drop)]

mod common;

use netns_test::{Impairment, Link, Network, Node, Schedule, Traffic, netns_test};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Pair {
    net: Network,
    a: Node,
    b: Node,
    link: Link,
}

fn pair() -> Pair {
    let net = Network::new();
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    resolve_neighbours(&a, &b, &link);
    Pair { net, a, b, link }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(5000);

/// How long a receiver waits for stragglers after the last datagram was
/// sent: longer than any delay these tests set.
const QUIET: Duration = Duration::from_millis(200);

/// What a receiver saw: each datagram's number and one-way time, in order.
struct Received {
    numbers: Vec<u32>,
    delays: Vec<Duration>,
    /// How long, meanwhile, the sending and receiving threads and the
    /// fault engines waited for a CPU while they could run: what a loaded
    /// machine adds, at most, to any one-way time measured here.
    waited: Duration,
}

/// How long the calling thread has waited for a CPU while it could run
/// (`run_delay` in its `schedstat`, which counts every wait on a run
/// queue, after a wakeup or a preemption).
fn thread_waited() -> Duration {
    waited_in(std::path::Path::new("/proc/thread-self/schedstat"))
}

/// The same, summed over the process's fault engines (threads named
/// `faults-<seed>`): they read, hold and send on what impaired links
/// carry, and are late by as much as they wait.
fn engines_waited() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("faults-"))
        })
        .map(|task| waited_in(&task.path().join("schedstat")))
        .sum()
}

fn waited_in(schedstat: &std::path::Path) -> Duration {
    let text = std::fs::read_to_string(schedstat).unwrap_or_default();
    let nanos = text.split(' ').nth(1).and_then(|n| n.parse().ok());
    Duration::from_nanos(nanos.unwrap_or(0))
}

/// Sends `n` numbered datagrams of `size` bytes from `from` to `to`'s
/// address on `link`, `gap` apart (a 1 ms pause every 100 when zero), and
/// returns what arrived until [`QUIET`] after the last was sent (and as
/// long again as the threads that carry them waited for a CPU).
fn datagrams(from: &Node, to: &Node, link: &Link, n: u32, size: usize, gap: Duration) -> Received {
    datagrams_to(from, to, to.ipv4_on(link), n, size, gap)
}

fn datagrams_to(
    from: &Node,
    to: &Node,
    address: Ipv4Addr,
    n: u32,
    size: usize,
    gap: Duration,
) -> Received {
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    let address = SocketAddr::new(IpAddr::V4(address), port);
    datagrams_between(from, 0, to, address, n, size, gap)
}

/// Sends `n` numbered datagrams of `size` bytes from `from`'s port
/// `source_port` (any when 0) to `address` of `to`, `gap` apart, and
/// returns what arrived.
fn datagrams_between(
    from: &Node,
    source_port: u16,
    to: &Node,
    address: SocketAddr,
    n: u32,
    size: usize,
    gap: Duration,
) -> Received {
    let receiver = to.netns().run(move || {
        let socket = UdpSocket::bind(address).unwrap();
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &(8 << 20)).is_err() {
            setsockopt(&socket, sockopt::RcvBuf, &(4 << 20)).unwrap();
        }
        socket
    });
    let start = Instant::now();
    receiver.set_read_timeout(Some(ms(20))).unwrap();
    let done = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let sent = std::sync::Arc::clone(&done);
    let engines_before = engines_waited();
    let counter = std::thread::spawn(move || {
        let before = thread_waited();
        let load = || engines_waited().saturating_sub(engines_before) + (thread_waited() - before);
        let mut buf = vec![0u8; 65536];
        let (mut numbers, mut delays) = (Vec::new(), Vec::new());
        loop {
            match receiver.recv(&mut buf) {
                Ok(len) => {
                    assert!(len >= 12);
                    numbers.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    let nanos = u64::from_be_bytes(buf[4..12].try_into().unwrap());
                    delays.push(start.elapsed().saturating_sub(Duration::from_nanos(nanos)));
                }
                // Until nothing came for QUIET after the last was sent.
                Err(_) => {
                    if sent.get().is_some_and(|at| at.elapsed() > QUIET + load()) {
                        break;
                    }
                }
            }
        }
        let waited = load();
        Received {
            numbers,
            delays,
            waited,
        }
    });
    let sender_waited = from.netns().run(move || {
        let before = thread_waited();
        let any: IpAddr = if address.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind((any, source_port)).unwrap();
        let mut payload = vec![0u8; size.max(12)];
        for i in 0..n {
            payload[..4].copy_from_slice(&i.to_be_bytes());
            let now = start.elapsed().as_nanos() as u64;
            payload[4..12].copy_from_slice(&now.to_be_bytes());
            socket.send_to(&payload, address).unwrap();
            if !gap.is_zero() {
                std::thread::sleep(gap);
            } else if i % 100 == 99 {
                std::thread::sleep(ms(1));
            }
        }
        thread_waited() - before
    });
    done.set(Instant::now()).unwrap();
    let mut received = counter.join().unwrap();
    received.waited += sender_waited;
    received
}

/// A datagram each way until one arrives, over a still plain link: both
/// ends then know each other's MAC address, and the kernel has activated
/// both ends (a fresh veth drops what it sends until its carrier event is
/// handled, asynchronously). A datagram that waits for ARP arrives late,
/// and leaves its queue in an order of the kernel's.
fn resolve_neighbours(a: &Node, b: &Node, link: &Link) {
    resolve_both(a, a.ipv4_on(link), b, b.ipv4_on(link));
}

fn resolve_both(a: &Node, a_address: Ipv4Addr, b: &Node, b_address: Ipv4Addr) {
    for (from, to, to_address) in [(a, b, b_address), (b, a, a_address)] {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let address = SocketAddr::new(IpAddr::V4(to_address), port);
        let receiver = to.netns().run(move || UdpSocket::bind(address).unwrap());
        receiver.set_read_timeout(Some(ms(20))).unwrap();
        let through = from.netns().run(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            (0..150).any(|_| {
                socket.send_to(b"warm", address).unwrap();
                receiver.recv(&mut [0u8; 8]).is_ok()
            })
        });
        assert!(through, "no datagram from {} to {}", from.name(), to.name());
    }
}

fn share(received: usize, sent: u32) -> f64 {
    received as f64 / f64::from(sent)
}

#[netns_test]
fn delay_holds_only_the_impaired_direction() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().delay(ms(100)))
        .unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 5, 100, ms(10));
    let back = datagrams(&p.b, &p.a, &p.link, 5, 100, ms(10));
    assert_eq!(there.numbers, [0, 1, 2, 3, 4]);
    assert_eq!(back.numbers, [0, 1, 2, 3, 4]);
    for delay in &there.delays {
        assert!(*delay >= ms(99), "a to b took {delay:?}");
    }
    for delay in &back.delays {
        assert!(
            *delay < ms(60) + back.waited,
            "b to a took {delay:?} (threads waited {:?})",
            back.waited
        );
    }
    // A TCP handshake waits once (the SYN); cleared, it does not.
    let address = IpAddr::V4(p.b.ipv4_on(&p.link));
    let listener =
        p.b.netns()
            .run(move || TcpListener::bind((address, 80)).unwrap());
    // How long a handshake took, and how long the engines and the
    // connecting thread waited for a CPU meanwhile.
    let handshake = || {
        let engines = engines_waited();
        let (took, waited) = p.a.netns().run(move || {
            let (start, before) = (Instant::now(), thread_waited());
            TcpStream::connect((address, 80)).unwrap();
            (start.elapsed(), thread_waited() - before)
        });
        (took, waited + engines_waited().saturating_sub(engines))
    };
    assert!(handshake().0 >= ms(99));
    // IPv6 too (neighbour discovery goes through the engine as well).
    let v6 = IpAddr::V6(p.b.ipv6_on(&p.link));
    let listener6 =
        p.b.netns()
            .run(move || TcpListener::bind((v6, 80)).unwrap());
    let took = p.a.netns().run(move || {
        let start = Instant::now();
        TcpStream::connect((v6, 80)).unwrap();
        start.elapsed()
    });
    assert!(took >= ms(99), "{took:?}");
    p.link.impair(Impairment::new()).unwrap();
    let (took, waited) = handshake();
    assert!(took < ms(60) + waited, "{took:?} (waited {waited:?})");
    drop((listener, listener6));
}

/// The interfaces that have an IPv6 address in the calling thread's
/// namespace (`/proc/net/if_inet6`), with the address.
fn ipv6_addresses() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/net/if_inet6")
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[5].to_owned(), fields[0].to_owned())
        })
        .collect()
}

#[netns_test]
fn the_engines_interfaces_have_no_ipv6_address() {
    let Pair {
        net: _net,
        a,
        b,
        link,
    } = pair();
    link.impair(Impairment::new().delay(ms(1))).unwrap();
    // Both ends' engine plumbing is there, up, and silent.
    for node in [&a, &b] {
        let names = node.netns().run(common::interfaces);
        assert!(names.contains(&"f-eth0e".to_owned()), "{names:?}");
        std::thread::sleep(ms(50));
        let addresses = node.netns().run(ipv6_addresses);
        let engine: Vec<_> = addresses
            .iter()
            .filter(|(dev, _)| dev.starts_with("f-"))
            .collect();
        assert_eq!(
            engine,
            Vec::<&(String, String)>::new(),
            "node {}",
            node.name()
        );
        assert!(
            addresses.iter().any(|(dev, _)| dev == "eth0"),
            "{addresses:?}"
        );
    }
}

#[netns_test]
fn jitter_spreads_delays_within_its_bounds_and_keeps_order() {
    let p = pair();
    let impairment = Impairment::new().delay(ms(30)).jitter(ms(10));
    p.link.impair_from(&p.a, impairment).unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 30, 100, ms(25));
    assert_eq!(there.numbers, (0..30).collect::<Vec<_>>(), "order kept");
    let (low, high) = (
        there.delays.iter().min().unwrap(),
        there.delays.iter().max().unwrap(),
    );
    assert!(*low >= ms(19), "{low:?}");
    // Decided within 20-40 ms; what a loaded machine adds is time a thread
    // that carries the datagrams (sender, engine, receiver) waited for a
    // CPU, which the bound adds (nothing on a quiet machine).
    assert!(
        *high < ms(60) + there.waited,
        "{high:?} (threads waited {:?})",
        there.waited
    );
    assert!(*high - *low >= ms(5), "spread {low:?}..{high:?}");
    let back = datagrams(&p.b, &p.a, &p.link, 10, 100, ms(5));
    assert!(
        back.delays.iter().all(|d| *d < ms(15) + back.waited),
        "{:?} (threads waited {:?})",
        back.delays,
        back.waited
    );
}

#[netns_test]
fn loss_drops_only_in_the_impaired_direction() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().loss(50.0))
        .unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 1000, 100, Duration::ZERO);
    let back = datagrams(&p.b, &p.a, &p.link, 1000, 100, Duration::ZERO);
    let kept = share(there.numbers.len(), 1000);
    assert!((0.35..0.65).contains(&kept), "{kept}");
    assert_eq!(back.numbers.len(), 1000);
    // Both ways, then cleared.
    p.link.impair(Impairment::new().loss(100.0)).unwrap();
    assert!(
        datagrams(&p.b, &p.a, &p.link, 50, 100, Duration::ZERO)
            .numbers
            .is_empty()
    );
    assert!(
        datagrams(&p.a, &p.b, &p.link, 50, 100, Duration::ZERO)
            .numbers
            .is_empty()
    );
    p.link.impair(Impairment::new()).unwrap();
    assert_eq!(
        datagrams(&p.a, &p.b, &p.link, 50, 100, Duration::ZERO)
            .numbers
            .len(),
        50
    );
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, 50, 100, Duration::ZERO)
            .numbers
            .len(),
        50
    );
}

#[netns_test]
fn bursty_loss_loses_in_runs() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().loss_bursts(20.0, 10))
        .unwrap();
    let n = 3000;
    let there = datagrams(&p.a, &p.b, &p.link, n, 100, Duration::ZERO);
    let mut arrived = vec![false; n as usize];
    for i in &there.numbers {
        arrived[*i as usize] = true;
    }
    let lost = arrived.iter().filter(|a| !**a).count();
    let bursts = arrived.windows(2).filter(|w| w[0] && !w[1]).count().max(1);
    let mean = lost as f64 / bursts as f64;
    let lost_share = lost as f64 / f64::from(n);
    assert!((0.08..0.35).contains(&lost_share), "{lost_share}");
    // Independent loss of 20 % gives runs of 1.25 on average.
    assert!(mean > 4.0, "mean burst {mean}");
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, n, 100, Duration::ZERO)
            .numbers
            .len(),
        n as usize
    );
}

fn checksum_errors(node: &Node) -> u64 {
    node.netns().run(|| {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let lines: Vec<&str> = snmp.lines().collect();
        let mut errors = 0;
        for pair in lines.chunks(2) {
            let (names, values) = (pair[0], pair[1]);
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                if name == "InCsumErrors" || name == "InHdrErrors" {
                    errors += value.parse::<u64>().unwrap_or(0);
                }
            }
        }
        errors
    })
}

#[netns_test]
fn corruption_fails_checksums_in_the_impaired_direction_only() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().corrupt(100.0))
        .unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 100, 200, Duration::ZERO);
    assert!(
        there.numbers.is_empty(),
        "{} got through",
        there.numbers.len()
    );
    assert!(checksum_errors(&p.b) >= 90, "{}", checksum_errors(&p.b));
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, 100, 200, Duration::ZERO)
            .numbers
            .len(),
        100
    );
    assert_eq!(checksum_errors(&p.a), 0);
}

#[netns_test]
fn duplicates_arrive_twice_in_the_impaired_direction_only() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().duplicate(100.0))
        .unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 200, 100, Duration::ZERO);
    assert_eq!(there.numbers.len(), 400);
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, 200, 100, Duration::ZERO)
            .numbers
            .len(),
        200
    );
}

#[netns_test]
fn reordering_swaps_neighbours_in_the_impaired_direction_only() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().reorder(30.0))
        .unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 500, 100, Duration::ZERO);
    let mut sorted = there.numbers.clone();
    sorted.sort();
    assert_eq!(sorted, (0..500).collect::<Vec<_>>(), "none lost");
    let swapped = there.numbers.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(swapped >= 50, "{swapped} out of order");
    let back = datagrams(&p.b, &p.a, &p.link, 500, 100, Duration::ZERO);
    assert_eq!(back.numbers, (0..500).collect::<Vec<_>>());
}

#[netns_test]
fn a_rate_limit_queues_then_drops_in_the_impaired_direction_only() {
    let p = pair();
    // 1 Mbit/s, a queue of 10 frames of 1042 bytes.
    let impairment = Impairment::new().rate_kbit(1000).queue_bytes(10 * 1042);
    p.link.impair_from(&p.a, impairment).unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 100, 1000, Duration::ZERO);
    assert!(
        (8..=12).contains(&there.numbers.len()),
        "{} of a burst of 100 passed a queue of 10",
        there.numbers.len()
    );
    // 1042 bytes take 8.3 ms at 1 Mbit/s: the last waited for those ahead.
    let last = there.delays.last().unwrap();
    assert!(*last >= ms(60), "{last:?}");
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, 100, 1000, Duration::ZERO)
            .numbers
            .len(),
        100
    );
}

#[netns_test]
fn a_rate_limit_slows_tcp_to_about_the_rate() {
    let p = pair();
    let kbit = 16_000; // 2 MB/s
    p.link.impair(Impairment::new().rate_kbit(kbit)).unwrap();
    let address = IpAddr::V4(p.b.ipv4_on(&p.link));
    let listener =
        p.b.netns()
            .run(move || TcpListener::bind((address, 9000)).unwrap());
    let total = 1_000_000;
    let engines = engines_waited();
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let (start, before) = (Instant::now(), thread_waited());
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).unwrap();
        (buf.len(), start.elapsed(), thread_waited() - before)
    });
    let sender_waited = p.a.netns().run(move || {
        let before = thread_waited();
        let mut stream = TcpStream::connect((address, 9000)).unwrap();
        stream.write_all(&vec![7u8; total]).unwrap();
        thread_waited() - before
    });
    let (received, took, receiver_waited) = receiver.join().unwrap();
    assert_eq!(received, total);
    let waited = engines_waited().saturating_sub(engines) + sender_waited + receiver_waited;
    let rate = |time: Duration| total as f64 * 8.0 / 1000.0 / time.as_secs_f64();
    // Load only slows it: the time the threads that carry it (sender,
    // engine, receiver) waited for a CPU is not the rate limit's.
    let unloaded = rate(took.saturating_sub(waited).max(ms(1)));
    println!(
        "RATE {:.0} unloaded {unloaded:.0} took {took:?} waited {waited:?}",
        rate(took)
    );
    assert!(
        unloaded > kbit as f64 * 0.5 && rate(took) < kbit as f64 * 1.5,
        "{:.0} kbit/s ({unloaded:.0} without the {waited:?} its threads waited for a CPU) for {kbit} configured",
        rate(took)
    );
}

#[netns_test]
fn the_mtu_black_hole_drops_large_packets_in_the_impaired_direction_only() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().mtu(1280))
        .unwrap();
    // 1252 bytes of UDP payload make a 1280-byte IPv4 packet.
    assert_eq!(
        datagrams(&p.a, &p.b, &p.link, 10, 1252, Duration::ZERO)
            .numbers
            .len(),
        10
    );
    assert!(
        datagrams(&p.a, &p.b, &p.link, 10, 1253, Duration::ZERO)
            .numbers
            .is_empty()
    );
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, 10, 1400, Duration::ZERO)
            .numbers
            .len(),
        10
    );
}

#[netns_test]
fn a_schedule_flaps_the_link() {
    let p = pair();
    let flapping = Schedule::new()
        .then(ms(200), Impairment::new().loss(100.0))
        .then(ms(200), Impairment::new())
        .repeat();
    p.link.schedule_from(&p.a, flapping).unwrap();
    let there = datagrams(&p.a, &p.b, &p.link, 100, 100, ms(10));
    let mut arrived = vec![false; 100];
    for i in &there.numbers {
        arrived[*i as usize] = true;
    }
    let changes = arrived.windows(2).filter(|w| w[0] != w[1]).count();
    let kept = share(there.numbers.len(), 100);
    assert!(changes >= 3, "{arrived:?}");
    assert!((0.2..0.8).contains(&kept), "{kept}");
    assert!(!arrived[0], "the schedule starts with its first step");
    let back = datagrams(&p.b, &p.a, &p.link, 50, 100, Duration::ZERO);
    assert_eq!(back.numbers.len(), 50);
}

#[netns_test]
fn bad_values_are_refused_and_the_link_keeps_what_it_had() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().loss(100.0))
        .unwrap();
    for bad in [
        Impairment::new().loss(200.0),
        Impairment::new().rate_kbit(u64::MAX),
        Impairment::new().rate_kbit(0),
        Impairment::new().mtu(10),
        Impairment::new().queue_bytes(1000),
        Impairment::new().delay(Duration::from_secs(3600)),
        Impairment::new().loss_bursts(99.0, 2),
    ] {
        let error = p.link.impair_from(&p.a, bad.clone()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        assert!(
            error.to_string().contains("out of range") || error.to_string().contains("needs"),
            "{error}"
        );
        assert!(p.link.impair(bad).is_err());
    }
    let error = p
        .link
        .schedule(Schedule::new().then(ms(1), Impairment::new().corrupt(-1.0)))
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let other = p.net.node("c").unwrap();
    assert!(p.link.impair_from(&other, Impairment::new()).is_err());
    // Still a one-way partition.
    assert!(
        datagrams(&p.a, &p.b, &p.link, 20, 100, Duration::ZERO)
            .numbers
            .is_empty()
    );
    assert_eq!(
        datagrams(&p.b, &p.a, &p.link, 20, 100, Duration::ZERO)
            .numbers
            .len(),
        20
    );
}

#[netns_test]
fn loss_on_a_switch_port_acts_both_ways() {
    let net = Network::new();
    let lan = net.switch("lan").unwrap();
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let a_port = net.attach(&a, &lan).unwrap();
    let b_port = net.attach(&b, &lan).unwrap();
    resolve_both(&a, a.ipv4_on(&a_port), &b, b.ipv4_on(&b_port));
    a_port.impair(Impairment::new().loss(50.0)).unwrap();
    // a's datagrams cross a's port then b's; b's cross b's then a's.
    let from_a = datagrams(&a, &b, &b_port, 1000, 100, Duration::ZERO);
    let from_b = datagrams(&b, &a, &a_port, 1000, 100, Duration::ZERO);
    for (way, got) in [("from a", &from_a), ("to a", &from_b)] {
        let kept = share(got.numbers.len(), 1000);
        assert!((0.35..0.65).contains(&kept), "{way}: {kept}");
    }
    // One way: what the switch sends to a.
    a_port.impair(Impairment::new()).unwrap();
    a_port.impair_to(&a, Impairment::new().loss(100.0)).unwrap();
    assert_eq!(
        datagrams(&a, &b, &b_port, 50, 100, Duration::ZERO)
            .numbers
            .len(),
        50
    );
    assert!(
        datagrams(&b, &a, &a_port, 50, 100, Duration::ZERO)
            .numbers
            .is_empty()
    );
}

/// The numbers b receives from a through `loss(30).duplicate(5)`, in order.
fn replay(seed: u64) -> Vec<u32> {
    let net = Network::with_seed(seed);
    assert_eq!(net.seed(), seed);
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    resolve_neighbours(&a, &b, &link);
    link.impair_from(&a, Impairment::new().loss(30.0).duplicate(5.0))
        .unwrap();
    datagrams(&a, &b, &link, 2000, 100, Duration::ZERO).numbers
}

#[netns_test]
fn a_seed_replays_the_same_decisions() {
    let first = replay(0x5eed);
    let kept = share(first.len(), 2000);
    assert!((0.6..0.8).contains(&kept), "{kept}");
    assert!(first.windows(2).any(|w| w[0] == w[1]), "duplicates");
    assert_eq!(replay(0x5eed), first, "same seed, same packets");
    assert_ne!(replay(0x5eee), first, "another seed");
}

/// Whether the engine thread of the network with `seed` runs.
fn engine_runs(seed: u64) -> bool {
    let name = format!("faults-{:08x}", seed as u32);
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .any(|comm| comm.trim() == name)
}

/// Whether the engine thread of the network with `seed` runs, once the new
/// thread has named itself (a spawned thread sets its name as it starts,
/// after `spawn` returns).
fn engine_started(seed: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !engine_runs(seed) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(ms(1));
    }
    true
}

#[netns_test]
fn the_engine_starts_with_an_impairment_and_ends_with_the_network() {
    let net = Network::with_seed(0xe1);
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    // Never impaired: a plain veth, no engine.
    assert!(!engine_runs(0xe1));
    assert_eq!(a.netns().run(common::interfaces), ["eth0", "lo"]);
    resolve_neighbours(&a, &b, &link);
    link.impair(Impairment::new().delay(ms(50))).unwrap();
    assert!(engine_started(0xe1));
    let plumbed = a.netns().run(common::interfaces);
    assert_eq!(plumbed, ["eth0", "f-eth0", "f-eth0e", "lo"]);
    // The link's handle goes; its impairment stays while the network lives.
    let address = b.ipv4_on(&link);
    drop(link);
    let got = datagrams_to(&a, &b, address, 1, 100, Duration::ZERO);
    assert!(got.delays[0] >= ms(49), "{:?}", got.delays);
    drop((a, b));
    drop(net);
    assert!(!engine_runs(0xe1));
}

#[netns_test]
fn a_panic_drops_the_network_and_its_engine() {
    let result = std::panic::catch_unwind(|| {
        let net = Network::with_seed(0xe2);
        let a = net.node("a").unwrap();
        let b = net.node("b").unwrap();
        let link = net.link(&a, &b).unwrap();
        link.impair(Impairment::new().loss(10.0)).unwrap();
        assert!(engine_started(0xe2));
        panic!("a deliberate panic");
    });
    assert!(result.is_err());
    assert!(!engine_runs(0xe2));
}

#[netns_test]
#[ignore = "run by a_failing_test_prints_its_seed"]
fn fixture_fails_with_a_network() {
    let net = Network::new();
    println!("SEED {:#018x}", net.seed());
    panic!("a deliberate failure");
}

#[test]
fn a_failing_test_prints_its_seed() {
    let run = |seed: Option<&str>| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args([
            "--ignored",
            "--exact",
            "fixture_fails_with_a_network",
            "--nocapture",
        ]);
        command.env_remove("NETNS_TEST_SEED");
        if let Some(seed) = seed {
            command.env("NETNS_TEST_SEED", seed);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        common::text(&output)
    };
    let text = run(None);
    let seed = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("SEED "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned();
    let line = format!("netns-test: network seed {seed}; rerun with NETNS_TEST_SEED={seed}");
    assert!(text.contains(&line), "{text}");
    let again = run(Some(&seed));
    assert!(again.contains(&format!("SEED {seed}")), "{again}");
    let fixed = run(Some("0x5eed"));
    assert!(fixed.contains("SEED 0x0000000000005eed"), "{fixed}");
}

// Frames made by hand: raw packet sockets.

/// A packet socket bound to `interface` of the calling thread's namespace,
/// that reports each frame's 802.1Q tag beside it (PACKET_AUXDATA) and
/// waits at most 100 ms for one.
fn packet_socket(interface: &str) -> std::os::fd::OwnedFd {
    use nix::libc;
    use std::os::fd::FromRawFd;
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `fd` is new and ours.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex(interface).unwrap();
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol;
    address.sll_ifindex = index as i32;
    let size = std::mem::size_of_val(&address) as libc::socklen_t;
    let on: libc::c_int = 1;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: bind and setsockopt read values that live across the calls.
    unsafe {
        assert_eq!(libc::bind(fd, (&raw const address).cast(), size), 0);
        let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        assert_eq!(
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&raw const on).cast(),
                int
            ),
            0
        );
        let tv = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        assert_eq!(
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                tv
            ),
            0
        );
    }
    socket
}

/// A broadcast frame of `len` bytes (at least 14), from a made-up
/// address, with `ethertype` and, when given, an 802.1Q tag before it.
fn raw_frame(len: usize, tag: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend([0x02, 0, 0, 0, 0, 0x01]);
    if let Some(tci) = tag {
        frame.extend(0x8100u16.to_be_bytes());
        frame.extend(tci.to_be_bytes());
    }
    frame.extend(ethertype.to_be_bytes());
    frame.extend(b"netns-test frame");
    frame.resize(len.max(14), 0);
    frame.truncate(len.max(14));
    frame
}

/// The next frame `socket` receives with `ethertype` (behind any tag the
/// kernel took off): its tag's control information, if it had a tag.
/// `None` when none comes within a second.
fn next_frame_tag(socket: &std::os::fd::OwnedFd, ethertype: u16) -> Option<Option<u16>> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let mut buffer = [0u8; 2048];
        let mut control = [0u64; 16];
        let mut iovec = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: an all-zero msghdr is valid.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iovec;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes into buffers that live across the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, 0) };
        if n < 14 || u16::from_be_bytes([buffer[12], buffer[13]]) != ethertype {
            continue;
        }
        // SAFETY: walking the control messages recvmsg wrote.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&header) };
        let mut tag = None;
        while !cmsg.is_null() {
            // SAFETY: as above.
            let c = unsafe { &*cmsg };
            if c.cmsg_level == libc::SOL_PACKET && c.cmsg_type == libc::PACKET_AUXDATA {
                // SAFETY: the kernel wrote a tpacket_auxdata there.
                let aux: libc::tpacket_auxdata =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    tag = Some(aux.tp_vlan_tci);
                }
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&header, cmsg) };
        }
        return Some(tag);
    }
    None
}

/// Sends `frame` out of `socket` over and over (1024 per call) for `time`;
/// how many the kernel took.
fn flood(socket: &std::os::fd::OwnedFd, frame: &[u8], time: Duration) -> u64 {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = (0..1024)
        .map(|_| libc::iovec {
            iov_base: frame.as_ptr() as *mut _,
            iov_len: frame.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iovec| {
            // SAFETY: an all-zero mmsghdr is valid.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < time {
        // SAFETY: sendmmsg reads the frames behind the headers, alive across the call.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), 1024, 0) };
        sent += n.max(0) as u64;
    }
    sent
}

/// Runs `ip link set dev NAME down` in `node`.
fn interface_down(node: &Node, name: String) {
    let status = node.netns().run(move || {
        std::process::Command::new("ip")
            .args(["link", "set", "dev", &name, "down"])
            .status()
            .unwrap()
    });
    assert!(status.success());
}

#[netns_test]
fn a_flooded_network_drops_at_once() {
    // Frames flood into a second of delay while every frame the engine
    // sends on is refused (the far end is down): each refusal once made the
    // headers of all the frames due after it again, the engine fell further
    // behind with every batch, and dropping the network took minutes. It
    // must take under 2 s (the figure: `cargo bench --bench impairments --
    // flooded`); 10 s is a bound the old engine missed by far.
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().delay(ms(1000)))
        .unwrap();
    interface_down(&p.b, p.b.interface_on(&p.link));
    let interface = p.a.interface_on(&p.link);
    let sent = p.a.netns().run(move || {
        let socket = packet_socket(&interface);
        flood(
            &socket,
            &raw_frame(60, None, 0x0800),
            Duration::from_secs(3),
        )
    });
    assert!(sent > 10_000, "{sent}");
    let (done, dropped) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        drop(p);
        let _ = done.send(());
    });
    let bound = Duration::from_secs(10);
    assert!(
        dropped.recv_timeout(bound).is_ok(),
        "dropping the flooded network took more than {bound:?}"
    );
    eprintln!("dropped in {:?}", start.elapsed());
}

#[netns_test]
fn a_new_impairment_heals_a_queued_link() {
    // 100 kbit/s with a queue of 1 MiB: 700 datagrams of 1472 bytes would
    // leave over 85 s. Healed, the link carries what it queued at once,
    // and what comes after.
    let p = pair();
    let slow = Impairment::new().rate_kbit(100).queue_bytes(1 << 20);
    p.link.impair_from(&p.a, slow).unwrap();
    let address = SocketAddr::new(IpAddr::V4(p.b.ipv4_on(&p.link)), 7100);
    let receiver = p.b.netns().run(move || {
        let socket = UdpSocket::bind(address).unwrap();
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &(8 << 20)).is_err() {
            setsockopt(&socket, sockopt::RcvBuf, &(4 << 20)).unwrap();
        }
        socket.set_read_timeout(Some(ms(50))).unwrap();
        socket
    });
    let sender = p.a.netns().run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    let send = |from: u32, to: u32| {
        for i in from..to {
            let mut payload = vec![0u8; 1472];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            sender.send_to(&payload, address).unwrap();
        }
    };
    send(0, 700);
    std::thread::sleep(ms(300));
    p.link
        .impair_from(&p.a, Impairment::new().loss(0.0))
        .unwrap();
    send(700, 710);
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    let mut buffer = [0u8; 2048];
    while Instant::now() < until {
        if let Ok(n) = receiver.recv(&mut buffer) {
            assert_eq!(n, 1472);
            got.push(u32::from_be_bytes(buffer[..4].try_into().unwrap()));
        }
    }
    let new: Vec<u32> = got.iter().copied().filter(|n| *n >= 700).collect();
    assert_eq!(new, (700..710).collect::<Vec<_>>(), "new datagrams");
    // All the old ones the queue took (1 MiB holds 692 frames of 1514 bytes).
    let old = got.iter().filter(|n| **n < 700).count();
    assert!(old >= 690, "{old} of the queued datagrams arrived");
    assert!(got.is_sorted(), "in order");
}

#[netns_test]
fn a_vlan_tag_crosses_an_impaired_link() {
    let p = pair();
    let (from, to) = (p.a.interface_on(&p.link), p.b.interface_on(&p.link));
    let receiver = p.b.netns().run(move || packet_socket(&to));
    let sender = p.a.netns().run(move || packet_socket(&from));
    let tagged = raw_frame(80, Some(5), 0x88b5);
    let send = || {
        use std::os::fd::AsRawFd;
        // SAFETY: send reads the frame, alive across the call.
        let n =
            unsafe { nix::libc::send(sender.as_raw_fd(), tagged.as_ptr().cast(), tagged.len(), 0) };
        assert_eq!(n, tagged.len() as isize);
    };
    send();
    assert_eq!(
        next_frame_tag(&receiver, 0x88b5),
        Some(Some(5)),
        "plain link"
    );
    p.link
        .impair_from(&p.a, Impairment::new().loss(0.0))
        .unwrap();
    send();
    assert_eq!(next_frame_tag(&receiver, 0x88b5), Some(Some(5)), "impaired");
    p.link
        .impair_from(&p.a, Impairment::new().delay(ms(20)))
        .unwrap();
    send();
    assert_eq!(next_frame_tag(&receiver, 0x88b5), Some(Some(5)), "delayed");
}

/// Runs this binary's ignored test `name` alone, in a process of its own:
/// its output, and whether it passed.
fn alone(name: &str) -> (bool, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    (output.status.success(), common::text(&output))
}

/// Sets this process's soft descriptor limit to `soft`.
fn descriptor_limit(soft: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}

/// The `stat` file of the engine thread of the network with `seed`, open.
fn engine_stat(seed: u64) -> std::fs::File {
    let name = format!("faults-{:08x}", seed as u32);
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .find_map(|t| {
            let path = t.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            (comm.trim() == name).then(|| std::fs::File::open(path.join("stat")).unwrap())
        })
        .expect("the engine runs")
}

/// The CPU seconds a thread used, from its `stat` file (read again from
/// its start: no descriptor needed).
fn cpu_seconds(stat: &mut std::fs::File) -> f64 {
    use std::io::Seek;
    stat.rewind().unwrap();
    let mut text = String::new();
    stat.read_to_string(&mut text).unwrap();
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

#[netns_test]
#[ignore = "run by the engine_waits_whatever_the_descriptor_limit driver"]
fn fixture_many_impaired_links_under_a_low_descriptor_limit() {
    let net = Network::with_seed(0xd5);
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let links: Vec<Link> = (0..12).map(|_| net.link(&a, &b).unwrap()).collect();
    let last = links.last().unwrap();
    resolve_neighbours(&a, &b, last);
    for link in &links {
        link.impair(Impairment::new().loss(0.0)).unwrap();
    }
    let address = SocketAddr::new(IpAddr::V4(b.ipv4_on(last)), 7200);
    let receiver = b.netns().run(move || UdpSocket::bind(address).unwrap());
    receiver.set_read_timeout(Some(ms(200))).unwrap();
    let sender = a.netns().run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    let mut stat = engine_stat(0xd5);
    // Fewer descriptors than the engine waits on (24 sockets, its own).
    descriptor_limit(8);
    let before = cpu_seconds(&mut stat);
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_seconds(&mut stat) - before;
    let through = (0..10).filter(|_| {
        sender.send_to(b"still carried", address).unwrap();
        receiver.recv(&mut [0u8; 64]).is_ok()
    });
    let through = through.count();
    println!("REPORT idle engine CPU {idle:.2} s/s, {through} of 10 datagrams through");
    assert!(idle < 0.5, "the engine spun: {idle:.2} CPU seconds in 1 s");
    assert_eq!(through, 10);
}

#[test]
fn the_engine_waits_whatever_the_descriptor_limit() {
    let (passed, text) = alone("fixture_many_impaired_links_under_a_low_descriptor_limit");
    assert!(passed, "{text}");
    assert!(text.contains("10 of 10 datagrams through"), "{text}");
}

#[netns_test]
#[ignore = "run by the a_dead_engine_fails_the_test_naming_why driver"]
fn fixture_an_engine_whose_descriptors_are_closed() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().delay(ms(1)))
        .unwrap();
    // A test that tramples on descriptors it did not open: every eventfd,
    // timerfd and epoll set of the process (the engine's) becomes
    // /dev/null.
    let null = std::fs::File::open("/dev/null").unwrap();
    for entry in std::fs::read_dir("/proc/thread-self/fd").unwrap().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("anon_inode:") {
            let fd: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 with two open descriptors; the one replaced is
            // not this test's, which is the point.
            unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // A frame wakes the engine, which finds it cannot wait any more.
    datagrams(&p.a, &p.b, &p.link, 1, 100, Duration::ZERO);
    let again = p.link.impair_from(&p.a, Impairment::new().delay(ms(2)));
    println!("REPORT impair after: {again:?}");
    assert!(again.is_err());
}

#[test]
fn a_dead_engine_fails_the_test_naming_why() {
    let (passed, text) = alone("fixture_an_engine_whose_descriptors_are_closed");
    assert!(!passed, "{text}");
    assert!(text.contains("REPORT impair after: Err"), "{text}");
    assert!(
        text.contains("the fault engine of the network with seed")
            && text.contains("stopped: it could not"),
        "{text}"
    );
}

#[netns_test]
#[ignore = "run by the a_first_impairment_out_of_descriptors_leaves_nothing driver"]
fn fixture_a_first_impairment_out_of_descriptors() {
    let p = pair();
    // The engine runs, for a's direction.
    p.link
        .impair_from(&p.a, Impairment::new().loss(0.0))
        .unwrap();
    // No descriptor left: b's direction cannot open its sockets.
    let lowest_free = std::fs::File::open("/dev/null").map(|f| {
        use std::os::fd::AsRawFd;
        f.as_raw_fd() as u64
    });
    descriptor_limit(lowest_free.unwrap());
    let error = p
        .link
        .impair_from(&p.b, Impairment::new().loss(100.0))
        .unwrap_err();
    descriptor_limit(4096);
    println!("REPORT out of descriptors: {error}");
    assert_eq!(error.raw_os_error(), Some(nix::libc::EMFILE), "{error}");
    assert_eq!(p.b.netns().run(common::interfaces), ["eth0", "lo"]);
    // With descriptors again, the same call works, and acts.
    p.link
        .impair_from(&p.b, Impairment::new().loss(100.0))
        .unwrap();
    assert!(
        datagrams(&p.b, &p.a, &p.link, 20, 100, Duration::ZERO)
            .numbers
            .is_empty()
    );
    assert_eq!(
        datagrams(&p.a, &p.b, &p.link, 20, 100, Duration::ZERO)
            .numbers
            .len(),
        20
    );
    println!("REPORT retried");
}

#[test]
fn a_first_impairment_out_of_descriptors_leaves_nothing() {
    let (passed, text) = alone("fixture_a_first_impairment_out_of_descriptors");
    assert!(passed, "{text}");
    assert!(text.contains("REPORT retried"), "{text}");
}

// Traffic selectors: each kind, checked in the impaired direction (what it
// selects, what it does not) and in the other.

/// The address of `node` on `link` in `family` (4 or 6), at `port`.
fn at(node: &Node, link: &Link, family: u8, port: u16) -> SocketAddr {
    match family {
        4 => SocketAddr::new(IpAddr::V4(node.ipv4_on(link)), port),
        _ => SocketAddr::new(IpAddr::V6(node.ipv6_on(link)), port),
    }
}

fn next_port() -> u16 {
    NEXT_PORT.fetch_add(1, Ordering::Relaxed)
}

/// How many of 30 datagrams from `from` (from `source_port`, any when 0)
/// reach `to` at `address`, and the longest one-way time.
fn through(from: &Node, source_port: u16, to: &Node, address: SocketAddr) -> (usize, Duration) {
    let got = datagrams_between(from, source_port, to, address, 30, 100, Duration::ZERO);
    let slowest = got.delays.iter().max().copied().unwrap_or_default();
    (got.numbers.len(), slowest)
}

#[netns_test]
fn a_family_selector_impairs_only_that_family() {
    let p = pair();
    let v6_lost = Impairment::new().loss(100.0).only(Traffic::ipv6());
    p.link.impair_from(&p.a, v6_lost).unwrap();
    let there = |family| through(&p.a, 0, &p.b, at(&p.b, &p.link, family, next_port())).0;
    let back = |family| through(&p.b, 0, &p.a, at(&p.a, &p.link, family, next_port())).0;
    assert_eq!(there(6), 0, "IPv6 from a is lost");
    assert_eq!(there(4), 30, "IPv4 from a is not");
    assert_eq!(back(6), 30, "IPv6 to a is not");
    // TCP too: IPv6 connects no more from a, IPv4 does.
    let listener = |family| {
        let address = at(&p.b, &p.link, family, 80);
        p.b.netns().run(move || TcpListener::bind(address).unwrap())
    };
    let (_v4, _v6) = (listener(4), listener(6));
    let connects = |family| {
        let address = at(&p.b, &p.link, family, 80);
        p.a.netns()
            .run(move || TcpStream::connect_timeout(&address, ms(300)).is_ok())
    };
    assert!(connects(4));
    assert!(!connects(6));
    // IPv4 only, the other way round.
    let v4_lost = Impairment::new().loss(100.0).only(Traffic::ipv4());
    p.link.impair_from(&p.a, v4_lost).unwrap();
    assert_eq!(there(4), 0);
    assert_eq!(there(6), 30);
}

/// An ICMP (or ICMPv6) echo from `from` to `to`: whether its reply comes.
fn ping(from: &Node, to: IpAddr) -> bool {
    from.netns().run(move || {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage, recv, sendto,
            setsockopt, socket, sockopt,
        };
        let (family, protocol, kind) = match to {
            IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, 8u8),
            IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, 128u8),
        };
        let fd = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol).unwrap();
        let timeout = nix::sys::time::TimeVal::new(0, 100_000);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).unwrap();
        // Type, code, checksum, identifier, sequence, payload.
        let mut echo = vec![kind, 0, 0, 0, 0x4e, 0x54, 0, 1];
        echo.extend(b"netns-test ping!");
        if to.is_ipv4() {
            // ICMPv6's checksum is the kernel's; ICMP's is ours.
            let sum = echo.chunks(2).fold(0u32, |s, w| {
                s + u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))
            });
            let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let target = SockaddrStorage::from(SocketAddr::new(to, 0));
        for _ in 0..3 {
            sendto(raw, &echo, &target, nix::sys::socket::MsgFlags::empty()).unwrap();
            let mut buf = [0u8; 256];
            let until = Instant::now() + ms(100);
            while Instant::now() < until {
                let Ok(n) = recv(raw, &mut buf, nix::sys::socket::MsgFlags::empty()) else {
                    break;
                };
                // IPv4 raw sockets see the IP header; IPv6 ones do not.
                let icmp = match to {
                    IpAddr::V4(_) => &buf[usize::from(buf[0] & 0x0f) * 4..n],
                    IpAddr::V6(_) => &buf[..n],
                };
                let reply = if to.is_ipv4() { 0 } else { 129 };
                if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == [0x4e, 0x54] {
                    return true;
                }
            }
        }
        false
    })
}

#[netns_test]
fn a_protocol_selector_impairs_only_that_protocol() {
    let p = pair();
    let b4 = || at(&p.b, &p.link, 4, next_port());
    let a4 = || at(&p.a, &p.link, 4, next_port());
    // UDP lost from a; TCP from a, and UDP to a, untouched.
    let udp_lost = Impairment::new().loss(100.0).only(Traffic::udp());
    p.link.impair_from(&p.a, udp_lost).unwrap();
    assert_eq!(through(&p.a, 0, &p.b, b4()).0, 0);
    assert_eq!(through(&p.b, 0, &p.a, a4()).0, 30);
    let address = b4();
    let _listener = p.b.netns().run(move || TcpListener::bind(address).unwrap());
    let handshake = || {
        p.a.netns().run(move || {
            let start = Instant::now();
            TcpStream::connect_timeout(&address, ms(1000)).unwrap();
            start.elapsed()
        })
    };
    handshake();
    // TCP delayed from a: a's handshake waits (its SYN), UDP does not.
    let tcp_slow = Impairment::new().delay(ms(150)).only(Traffic::tcp());
    p.link.impair_from(&p.a, tcp_slow).unwrap();
    assert!(handshake() >= ms(149));
    let (n, slowest) = through(&p.a, 0, &p.b, b4());
    assert_eq!(n, 30);
    assert!(slowest < ms(100), "UDP took {slowest:?}");
    // ICMP lost from a: a's pings go unanswered (both families), b's
    // pings get no reply (a's replies are ICMP from a); UDP passes.
    let icmp_lost = Impairment::new().loss(100.0).only(Traffic::icmp());
    assert!(ping(&p.a, IpAddr::V4(p.b.ipv4_on(&p.link))), "before");
    assert!(ping(&p.a, IpAddr::V6(p.b.ipv6_on(&p.link))), "before, IPv6");
    p.link.impair_from(&p.a, icmp_lost).unwrap();
    assert!(!ping(&p.a, IpAddr::V4(p.b.ipv4_on(&p.link))));
    assert!(!ping(&p.a, IpAddr::V6(p.b.ipv6_on(&p.link))));
    assert!(!ping(&p.b, IpAddr::V4(p.a.ipv4_on(&p.link))));
    assert_eq!(through(&p.a, 0, &p.b, b4()).0, 30);
    // Only what b sends: b's pings to a get no answer... a's reply is
    // ICMP from a, not impaired now: they do.
    p.link.impair_from(&p.a, Impairment::new()).unwrap();
    p.link
        .impair_from(&p.b, Impairment::new().loss(100.0).only(Traffic::icmp()))
        .unwrap();
    assert!(!ping(&p.b, IpAddr::V4(p.a.ipv4_on(&p.link))));
    assert!(!ping(&p.a, IpAddr::V6(p.b.ipv6_on(&p.link))), "b's replies");
    // Neighbour discovery is never selected: IPv6 UDP still crosses.
    let b6 = at(&p.b, &p.link, 6, next_port());
    assert_eq!(
        through(&p.b, 0, &p.a, at(&p.a, &p.link, 6, next_port())).0,
        30
    );
    assert_eq!(through(&p.a, 0, &p.b, b6).0, 30);
}

#[netns_test]
fn port_selectors_impair_only_their_ports() {
    let p = pair();
    let delayed = |traffic: Traffic| Impairment::new().delay(ms(150)).only(traffic);
    let slow = |(n, slowest): (usize, Duration)| {
        assert_eq!(n, 30);
        slowest >= ms(149)
    };
    let b = |port| at(&p.b, &p.link, 4, port);
    // port(53): either end, what a sends.
    p.link
        .impair_from(&p.a, delayed(Traffic::udp().port(53)))
        .unwrap();
    assert!(slow(through(&p.a, 0, &p.b, b(53))), "a to port 53");
    assert!(
        slow(through(&p.a, 53, &p.b, b(next_port()))),
        "a from port 53"
    );
    assert!(!slow(through(&p.a, 0, &p.b, b(54))), "a to port 54");
    assert!(
        !slow(through(&p.b, 53, &p.a, at(&p.a, &p.link, 4, 53))),
        "b to a's port 53: the other direction"
    );
    // dst_port(53): only to it.
    p.link
        .impair_from(&p.a, delayed(Traffic::udp().dst_port(53)))
        .unwrap();
    assert!(slow(through(&p.a, 0, &p.b, b(53))));
    assert!(!slow(through(&p.a, 53, &p.b, b(next_port()))));
    // src_port(5353): only from it.
    p.link
        .impair_from(&p.a, delayed(Traffic::udp().src_port(5353)))
        .unwrap();
    assert!(slow(through(&p.a, 5353, &p.b, b(next_port()))));
    assert!(!slow(through(&p.a, 0, &p.b, b(5353))));
    // A port without a protocol is TCP's or UDP's: UDP over IPv6 too.
    p.link
        .impair_from(&p.a, delayed(Traffic::ipv6().port(53)))
        .unwrap();
    assert!(slow(through(&p.a, 0, &p.b, at(&p.b, &p.link, 6, 53))));
    assert!(!slow(through(&p.a, 0, &p.b, b(53))), "IPv4");
}

#[netns_test]
fn address_selectors_impair_only_what_goes_to_or_comes_from_there() {
    let net = Network::new();
    let lan = net.switch("lan").unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|name| net.node(name).unwrap());
    let [a_port, b_port, c_port] = [&a, &b, &c].map(|n| net.attach(n, &lan).unwrap());
    resolve_both(&a, a.ipv4_on(&a_port), &b, b.ipv4_on(&b_port));
    resolve_both(&a, a.ipv4_on(&a_port), &c, c.ipv4_on(&c_port));
    let slow = |(n, slowest): (usize, Duration)| {
        assert_eq!(n, 30);
        slowest >= ms(149)
    };
    let to_b = at(&b, &b_port, 4, next_port());
    let to_c = at(&c, &c_port, 4, next_port());
    let to_a = || at(&a, &a_port, 4, next_port());
    // What a sends to b is delayed; to c, and from b to a, it is not.
    let b_address = b.ipv4_on(&b_port);
    a_port
        .impair_from(
            &a,
            Impairment::new()
                .delay(ms(150))
                .only(Traffic::ipv4().to(b_address)),
        )
        .unwrap();
    assert!(slow(through(&a, 0, &b, to_b)));
    assert!(!slow(through(&a, 0, &c, to_c)));
    assert!(!slow(through(&b, 0, &a, to_a())));
    // A subnet: both b and c are in the switch's /24.
    let subnet = format!("{}/24", {
        let [x, y, z, _] = b_address.octets();
        Ipv4Addr::new(x, y, z, 0)
    });
    a_port
        .impair_from(
            &a,
            Impairment::new()
                .delay(ms(150))
                .only(Traffic::udp().to(subnet.as_str())),
        )
        .unwrap();
    assert!(slow(through(&a, 0, &c, to_c)));
    // What reaches a from b is delayed; from c it is not.
    a_port.impair_from(&a, Impairment::new()).unwrap();
    a_port
        .impair_to(
            &a,
            Impairment::new()
                .delay(ms(150))
                .only(Traffic::ipv4().from(b_address)),
        )
        .unwrap();
    assert!(slow(through(&b, 0, &a, to_a())));
    assert!(!slow(through(&c, 0, &a, to_a())));
    assert!(!slow(through(&a, 0, &b, to_b)));
}

/// A DNS server of the smallest kind on `address`: answers every A query
/// with `answer`, until dropped.
struct Dns {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Dns {
    fn start(node: &Node, address: SocketAddr, answer: Ipv4Addr) -> Dns {
        let socket = node.netns().run(move || UdpSocket::bind(address).unwrap());
        socket.set_read_timeout(Some(ms(20))).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !done.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                // The query's header and question, flagged as a response
                // with one answer: a pointer to the name, A, IN, TTL, the
                // address.
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                reply[7] = 1;
                reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                reply.extend(answer.octets());
                let _ = socket.send_to(&reply, from);
            }
        });
        Dns { stop }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Asks `server` for the A record of `name`: the address, and how long it took.
fn resolve(from: &Node, server: SocketAddr, name: &str) -> (Ipv4Addr, Duration) {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend(label.as_bytes());
    }
    query.extend([0, 0, 1, 0, 1]);
    from.netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let start = Instant::now();
        socket.send_to(&query, server).unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(buf[..2], [0x12, 0x34]);
        let a = &buf[n - 4..n];
        (Ipv4Addr::new(a[0], a[1], a[2], a[3]), start.elapsed())
    })
}

#[netns_test]
fn dns_is_slow_while_tcp_to_the_same_node_is_not() {
    let p = pair();
    let (client, server) = (&p.a, &p.b);
    let server_address = server.ipv4_on(&p.link);
    let _dns = Dns::start(
        server,
        SocketAddr::new(server_address.into(), 53),
        server_address,
    );
    let address = SocketAddr::new(server_address.into(), 80);
    let _web = server
        .netns()
        .run(move || TcpListener::bind(address).unwrap());
    p.link
        .impair_from(
            client,
            Impairment::new()
                .delay(ms(500))
                .only(Traffic::udp().port(53)),
        )
        .unwrap();
    let (resolved, took) = resolve(client, SocketAddr::new(server_address.into(), 53), "server");
    assert_eq!(resolved, server_address);
    assert!(took >= ms(499), "the query waited: {took:?}");
    assert!(
        took < ms(1000),
        "the answer did not (the other direction): {took:?}"
    );
    let handshake = client.netns().run(move || {
        let start = Instant::now();
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).unwrap();
        start.elapsed()
    });
    assert!(
        handshake < ms(500),
        "TCP to the same node waited: {handshake:?}"
    );
}

#[netns_test]
fn a_happy_eyeballs_client_falls_back_to_ipv4_when_ipv6_is_black_holed() {
    let p = pair();
    let (client, server) = (&p.a, &p.b);
    let listeners: Vec<TcpListener> = [4, 6]
        .into_iter()
        .map(|family| {
            let address = at(server, &p.link, family, 443);
            server
                .netns()
                .run(move || TcpListener::bind(address).unwrap())
        })
        .collect();
    p.link
        .impair(Impairment::new().loss(100.0).only(Traffic::ipv6()))
        .unwrap();
    // RFC 8305 with std only: IPv6 first, IPv4 250 ms later, the first
    // to connect wins. The server's addresses come from its name.
    let (winner, took) = client.netns().run(|| {
        use std::net::ToSocketAddrs;
        let mut addresses: Vec<SocketAddr> = ("b", 443).to_socket_addrs().unwrap().collect();
        addresses.sort_by_key(|a| a.is_ipv4());
        assert!(addresses[0].is_ipv6() && addresses.iter().any(SocketAddr::is_ipv4));
        let start = Instant::now();
        let (done, results) = std::sync::mpsc::channel();
        for (i, address) in addresses.into_iter().enumerate() {
            if i > 0 {
                if let Ok(Ok(stream)) = results.recv_timeout(ms(250)) {
                    let stream: TcpStream = stream;
                    return (stream.peer_addr().unwrap(), start.elapsed());
                }
            }
            let done = done.clone();
            std::thread::spawn(move || {
                let _ = done.send(TcpStream::connect_timeout(&address, Duration::from_secs(3)));
            });
        }
        drop(done);
        loop {
            match results.recv() {
                Ok(Ok(stream)) => return (stream.peer_addr().unwrap(), start.elapsed()),
                Ok(Err(_)) => continue,
                Err(_) => panic!("no address connected"),
            }
        }
    });
    assert!(winner.is_ipv4(), "connected to {winner}");
    assert!(
        took >= ms(250),
        "IPv4 started after the attempt delay: {took:?}"
    );
    // IPv6 alone gets nowhere, either way.
    let v6 = at(server, &p.link, 6, 443);
    assert!(
        client
            .netns()
            .run(move || TcpStream::connect_timeout(&v6, ms(300)).is_err())
    );
    assert_eq!(
        through(server, 0, client, at(client, &p.link, 6, next_port())).0,
        0,
        "both directions"
    );
    drop(listeners);
}

#[netns_test]
fn several_impairments_on_one_direction_each_take_their_traffic() {
    let p = pair();
    let b = |port| at(&p.b, &p.link, 4, port);
    // DNS slow, other UDP lost, the rest (TCP) untouched.
    let rules = Impairment::new()
        .delay(ms(150))
        .only(Traffic::udp().port(53))
        .otherwise(Impairment::new().loss(100.0).only(Traffic::udp()));
    p.link.impair_from(&p.a, rules).unwrap();
    let (n, slowest) = through(&p.a, 0, &p.b, b(53));
    assert_eq!(n, 30, "DNS is the first rule's: delayed, not lost");
    assert!(slowest >= ms(149));
    assert_eq!(through(&p.a, 0, &p.b, b(next_port())).0, 0);
    let address = b(80);
    let _listener = p.b.netns().run(move || TcpListener::bind(address).unwrap());
    assert!(
        p.a.netns()
            .run(move || TcpStream::connect_timeout(&address, ms(500)).is_ok())
    );
    // A rule without knobs keeps its traffic from the rules after it.
    let shielded = Impairment::new()
        .only(Traffic::udp().dst_port(7000))
        .otherwise(Impairment::new().loss(100.0));
    p.link.impair_from(&p.a, shielded).unwrap();
    assert_eq!(through(&p.a, 0, &p.b, b(7000)).0, 30);
    assert_eq!(through(&p.a, 0, &p.b, b(7001)).0, 0);
}

/// The numbers of the datagrams to port 7000 that b received, when each
/// of 300 went out between `others` datagrams to port 7001, through a
/// rule each.
fn replay_one_rule(others: u32) -> Vec<u32> {
    let net = Network::with_seed(0x5eed);
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    resolve_neighbours(&a, &b, &link);
    let rules = Impairment::new()
        .loss(30.0)
        .only(Traffic::udp().dst_port(7000))
        .otherwise(
            Impairment::new()
                .loss(50.0)
                .only(Traffic::udp().dst_port(7001)),
        );
    link.impair_from(&a, rules).unwrap();
    let target = at(&b, &link, 4, 7000);
    let other = at(&b, &link, 4, 7001);
    let receiver = b.netns().run(move || UdpSocket::bind(target).unwrap());
    receiver.set_read_timeout(Some(ms(200))).unwrap();
    a.netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..300u32 {
            socket.send_to(&i.to_be_bytes(), target).unwrap();
            for _ in 0..others {
                socket.send_to(b"other", other).unwrap();
            }
            if i % 50 == 49 {
                std::thread::sleep(ms(1));
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    while let Ok(4) = receiver.recv(&mut buf) {
        got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
    }
    got
}

#[netns_test]
fn a_rule_replays_from_the_seed_whatever_else_crosses() {
    let alone = replay_one_rule(0);
    let kept = share(alone.len(), 300);
    assert!((0.55..0.85).contains(&kept), "{kept}");
    assert_eq!(
        replay_one_rule(2),
        alone,
        "other traffic between, other rule"
    );
}

#[netns_test]
fn traffic_no_selector_takes_stays_on_the_plain_veth() {
    let p = pair();
    p.link
        .impair_from(
            &p.a,
            Impairment::new().loss(0.0).only(Traffic::udp().port(53)),
        )
        .unwrap();
    let engine_frames = || {
        p.a.netns().run(|| {
            std::fs::read_to_string("/sys/class/net/f-eth0/statistics/tx_packets")
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
    };
    let before = engine_frames();
    // TCP, 1 MB: none of it goes to the engine.
    let address = at(&p.b, &p.link, 4, 9000);
    let listener = p.b.netns().run(move || TcpListener::bind(address).unwrap());
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all.len()
    });
    p.a.netns().run(move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).unwrap();
        stream.write_all(&vec![1u8; 1 << 20]).unwrap();
    });
    assert_eq!(reader.join().unwrap(), 1 << 20);
    assert_eq!(engine_frames(), before, "TCP went to the engine");
    // DNS does, and only DNS is counted.
    assert_eq!(through(&p.a, 0, &p.b, at(&p.b, &p.link, 4, 53)).0, 30);
    assert_eq!(engine_frames(), before + 30);
    assert_eq!(p.link.counters_from(&p.a).packets(), 30);
}

/// Sends a UDP datagram over IPv6 with a destination options header from
/// `from` to `to`.
fn datagram_with_destination_options(from: &Node, to: SocketAddr) {
    from.netns().run(move || {
        use std::os::fd::AsRawFd;
        let socket = UdpSocket::bind("[::]:0").unwrap();
        // Next header (the kernel's), length 0 (8 bytes), PadN of 4.
        let options = [0u8, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: setsockopt reads the 8 bytes of `options`.
        let rc = unsafe {
            nix::libc::setsockopt(
                socket.as_raw_fd(),
                nix::libc::IPPROTO_IPV6,
                nix::libc::IPV6_DSTOPTS,
                options.as_ptr().cast(),
                options.len() as u32,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        socket.send_to(b"with options", to).unwrap();
    });
}

#[netns_test]
fn selectors_read_past_ipv6_extension_headers() {
    let p = pair();
    let to = at(&p.b, &p.link, 6, 5300);
    let receiver = p.b.netns().run(move || UdpSocket::bind(to).unwrap());
    receiver.set_read_timeout(Some(ms(300))).unwrap();
    p.link
        .impair_from(
            &p.a,
            Impairment::new()
                .loss(100.0)
                .only(Traffic::udp().dst_port(5300)),
        )
        .unwrap();
    datagram_with_destination_options(&p.a, to);
    assert!(
        receiver.recv(&mut [0u8; 32]).is_err(),
        "the filter and the engine saw the port"
    );
    p.link
        .impair_from(
            &p.a,
            Impairment::new()
                .loss(100.0)
                .only(Traffic::udp().dst_port(5301)),
        )
        .unwrap();
    datagram_with_destination_options(&p.a, to);
    assert!(receiver.recv(&mut [0u8; 32]).is_ok(), "another port passes");
}

#[netns_test]
fn bad_selectors_are_refused_and_the_link_keeps_what_it_had() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().loss(100.0).only(Traffic::udp()))
        .unwrap();
    for (bad, naming) in [
        (Traffic::icmp().port(53), "port 53 on ICMP"),
        (
            Traffic::ipv6().to("10.0.0.1"),
            "10.0.0.1 is not an ipv6 address",
        ),
        (Traffic::tcp().and(Traffic::udp()), "tcp and udp contradict"),
        (Traffic::udp().port(1).port(2), "port(2) after port(1)"),
        (Traffic::udp().to("10.0.0.1/8"), "write 10.0.0.0/8"),
    ] {
        let error = p
            .link
            .impair_from(&p.a, Impairment::new().delay(ms(1)).only(bad))
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains(naming), "{error}");
    }
    let b = at(&p.b, &p.link, 4, next_port());
    assert_eq!(through(&p.a, 0, &p.b, b).0, 0, "still lost");
}

// Counters.

#[netns_test]
fn counters_equal_what_both_ends_counted() {
    let p = pair();
    let impairment = Impairment::new()
        .delay(ms(5))
        .loss(20.0)
        .duplicate(10.0)
        .only(Traffic::udp());
    p.link.impair_from(&p.a, impairment).unwrap();
    let sent = 1000;
    let got = datagrams(&p.a, &p.b, &p.link, sent, 100, Duration::ZERO);
    let counters = p.link.counters_from(&p.a);
    let received = got.numbers.len() as u64;
    assert_eq!(counters.packets(), u64::from(sent), "{counters}");
    assert_eq!(counters.bytes(), u64::from(sent) * (14 + 20 + 8 + 100));
    assert!(counters.lost() > 100, "{counters}");
    assert!(counters.duplicated() > 40, "{counters}");
    assert_eq!(counters.dropped(), counters.lost());
    assert_eq!(
        received,
        counters.packets() - counters.lost() + counters.duplicated(),
        "{counters}"
    );
    let unique: std::collections::HashSet<u32> = got.numbers.iter().copied().collect();
    assert_eq!(unique.len() as u64, counters.packets() - counters.lost());
    assert_eq!(counters.delayed(), counters.packets() - counters.lost());
    // The other direction was never impaired; TCP was never selected.
    assert_eq!(
        p.link.counters_from(&p.b),
        netns_test::LinkCounters::default()
    );
    assert_eq!(p.link.counters_to(&p.b), counters);
    // A rate limit's queue: what it could not take, as the receiver saw.
    p.link
        .impair_from(
            &p.a,
            Impairment::new().rate_kbit(1000).queue_bytes(10 * 1042),
        )
        .unwrap();
    let got = datagrams(&p.a, &p.b, &p.link, 100, 1000, Duration::ZERO);
    let after = p.link.counters_from(&p.a);
    assert_eq!(after.packets() - counters.packets(), 100);
    assert_eq!(
        after.queue_full(),
        100 - got.numbers.len() as u64,
        "{after}"
    );
}

#[netns_test]
#[ignore = "run by a_failing_test_prints_its_counters_by_its_seed"]
fn fixture_fails_after_impairing() {
    let p = pair();
    p.link
        .impair_from(&p.a, Impairment::new().loss(100.0).only(Traffic::udp()))
        .unwrap();
    p.link
        .impair_from(&p.b, Impairment::new().duplicate(100.0))
        .unwrap();
    let got = datagrams(&p.a, &p.b, &p.link, 40, 100, Duration::ZERO);
    datagrams(&p.b, &p.a, &p.link, 10, 58, Duration::ZERO);
    println!("SEED {:#018x}", p.net.seed());
    assert_eq!(got.numbers.len(), 40, "a deliberate failure");
}

#[test]
fn a_failing_test_prints_its_counters_by_its_seed() {
    let (passed, text) = alone("fixture_fails_after_impairing");
    assert!(!passed, "{text}");
    let seed = text
        .lines()
        .find_map(|l| l.split("SEED ").nth(1))
        .unwrap_or_else(|| panic!("{text}"))
        .trim();
    let seed_line = format!("netns-test: network seed {seed}; rerun with NETNS_TEST_SEED={seed}");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == seed_line)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        lines[at + 1],
        "netns-test: faults a eth0 → b eth0: 40 packets (5680 bytes): 40 lost",
        "{text}"
    );
    assert_eq!(
        lines[at + 2],
        "netns-test: faults b eth0 → a eth0: 10 packets (1000 bytes): 10 duplicated",
        "{text}"
    );
}

// What the engine did, in the captures.

/// Where the captures of this binary's test `test` go when it runs in
/// `cwd`: the target directory it was built in, or (a copy elsewhere, as
/// the rootless re-run makes) `cwd`'s `target`.
fn capture_dir(test: &str, cwd: &std::path::Path) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let target = match deps.file_name() {
        Some(name) if name == "deps" => deps.parent().unwrap().parent().unwrap().to_owned(),
        _ => cwd.join("target"),
    };
    target.join("netns-test").join(test)
}

#[netns_test(capture = "all")]
#[ignore = "run by a_capture_says_what_the_engine_did_to_each_frame"]
fn fixture_captures_decisions() {
    let p = pair();
    p.link
        .impair_from(
            &p.a,
            Impairment::new()
                .loss(30.0)
                .delay(ms(5))
                .only(Traffic::udp().dst_port(6000)),
        )
        .unwrap();
    let to = at(&p.b, &p.link, 4, 6000);
    let other = at(&p.b, &p.link, 4, 6001);
    let receiver = p.b.netns().run(move || UdpSocket::bind(to).unwrap());
    receiver.set_read_timeout(Some(ms(200))).unwrap();
    p.a.netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..100 {
            socket
                .send_to(format!("MARK-{i:03}").as_bytes(), to)
                .unwrap();
        }
        // Not selected: no comment.
        socket.send_to(b"PLAIN-000", other).unwrap();
    });
    let mut got = 0;
    while receiver.recv(&mut [0u8; 16]).is_ok() {
        got += 1;
    }
    let counters = p.link.counters_from(&p.a);
    println!("REPORT received {got} lost {}", counters.lost());
}

#[test]
fn a_capture_says_what_the_engine_did_to_each_frame() {
    // A working directory of this user's, for a copy of the binary that
    // runs elsewhere (rootless).
    let cwd = tempfile::tempdir().unwrap();
    let dir = capture_dir("fixture_captures_decisions", cwd.path());
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "fixture_captures_decisions",
            "--nocapture",
        ])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let (passed, text) = (output.status.success(), common::text(&output));
    assert!(passed, "{text}");
    let (received, lost): (usize, usize) = text
        .lines()
        .find_map(|l| {
            let rest = l.split("REPORT received ").nth(1)?;
            let (got, lost) = rest.split_once(" lost ")?;
            Some((got.trim().parse().ok()?, lost.trim().parse().ok()?))
        })
        .unwrap_or_else(|| panic!("{text}"));
    let read = |node: &str| {
        common::pcapng_packets(&std::fs::read(dir.join(format!("{node}.pcap"))).unwrap())
    };
    // UDP datagrams over IPv4 that carry the mark (not the ICMP errors
    // that quote them).
    let marked = |packets: &[common::Packet], mark: &[u8]| -> Vec<(String, Option<String>)> {
        packets
            .iter()
            .filter(|p| p.data.get(12..14) == Some(&[0x08, 0x00]) && p.data.get(23) == Some(&17))
            .filter(|p| p.data.windows(mark.len()).any(|w| w == mark))
            .map(|p| (p.interface.clone(), p.comment.clone()))
            .collect()
    };
    let sent = read("a");
    let arrived = read("b");
    let mut lost_in_capture = 0;
    for i in 0..100 {
        let mark = format!("MARK-{i:03}");
        // Once in a's capture, on its own interface, with what was done.
        let seen = marked(&sent, mark.as_bytes());
        assert_eq!(seen.len(), 1, "{mark}: {seen:?}");
        let (interface, comment) = &seen[0];
        assert_eq!(interface, "eth0", "{mark}");
        let comment = comment
            .as_deref()
            .unwrap_or_else(|| panic!("{mark}: no comment"));
        assert!(comment.starts_with("netns-test: "), "{comment}");
        assert!(comment.contains("rule 1 (udp dst_port 6000)"), "{comment}");
        assert!(
            comment.ends_with(&format!("; packet {}", i + 1)),
            "{comment}"
        );
        let in_b = marked(&arrived, mark.as_bytes()).len();
        if comment.contains("lost (loss)") {
            lost_in_capture += 1;
            assert_eq!(in_b, 0, "{mark} lost, yet b got it");
        } else {
            assert!(comment.contains("delayed 5."), "{comment}");
            assert_eq!(in_b, 1, "{mark}: {comment}");
        }
    }
    assert_eq!(lost_in_capture, lost, "the counters' lost");
    assert_eq!(100 - lost, received);
    let plain = marked(&sent, b"PLAIN-000");
    assert_eq!(plain, [("eth0".to_owned(), None)], "unselected: no comment");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every fault test again, as uid 65534 in rootless mode (when root).
#[test]
fn faults_work_rootless() {
    common::rerun(
        &["--skip", "faults_work_rootless"],
        common::Rerun::AsNobody,
        "38 passed",
    );
}
