//! Faults on links: every knob, each checked in the impaired direction and
//! in the other one, replayed from a seed, on switch ports too, and torn
//! down with the network. Bounds are generous sanity checks; the figures
//! are in `cargo bench --bench impairments`.

// Elsewhere than on Linux the handles hold nothing, and dropping one is a
// no-op clippy flags; here dropping them is what these tests check.
#![allow(clippy::drop_non_drop)]

mod common;

use netns_test::{Impairment, Link, Network, Node, Schedule, netns_test};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
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
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
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

/// Every fault test again, as uid 65534 in rootless mode (when root).
#[test]
fn faults_work_rootless() {
    if std::env::var_os("NETNS_TEST_FIXTURES").is_some() {
        return; // the copy running as an ordinary user
    }
    if !nix::unistd::geteuid().is_root() {
        println!(
            "skipped: switching to an ordinary user needs root (this run is rootless already)"
        );
        return;
    }
    let copy = common::Copy::new();
    let output = common::retry_busy(|| {
        copy.command(&["--skip", "faults_work_rootless"])
            .uid(common::NOBODY)
            .gid(common::NOBODY)
            .output()
    });
    let text = common::text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("24 passed"), "{text}");
}
