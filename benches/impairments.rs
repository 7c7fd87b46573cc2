//! What the fault engine does and costs, measured on real traffic between
//! two nodes, as root and (re-run as uid 65534 in a user namespace of its
//! own) rootless.
//!
//! ```text
//! cargo bench --bench impairments            # as root: both columns
//! ```
//!
//! Each figure comes from a fresh `Network` of two linked nodes. As an
//! ordinary user it measures the rootless column only.

// Elsewhere than on Linux the handles hold nothing, and dropping one is a
// no-op clippy flags; here the time dropping them takes is measured.
#![allow(clippy::drop_non_drop)]

use netns_test::{Impairment, Link, Network, Node, Traffic};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
const CHILD: &str = "--rootless-child";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn main() {
    if std::env::args().any(|a| a == CHILD) {
        enter_user_namespace();
        for (key, value) in measure() {
            println!("ROW\t{key}\t{value}");
        }
        return;
    }
    let as_root = nix::unistd::geteuid().is_root();
    let root = if as_root {
        eprintln!("measuring as root ...");
        measure()
    } else {
        BTreeMap::new()
    };
    eprintln!("measuring rootless (uid {NOBODY} in a user namespace) ...");
    let rootless = run_rootless_child(as_root);
    println!("\n| what | target | root | rootless |\n|---|---|---|---|");
    for (key, target) in ROWS {
        let cell = |m: &BTreeMap<String, String>| m.get(*key).cloned().unwrap_or("–".into());
        println!(
            "| {key} | {target} | {} | {} |",
            cell(&root),
            cell(&rootless)
        );
    }
}

/// The rows of the table, in order, with their targets.
const ROWS: &[(&str, &str)] = &[
    (
        "delay 50 ms each way: TCP handshake, median of 200",
        "100 ms ± 2 ms",
    ),
    (
        "jitter 5 ms on 10 ms one way: RTT median / p99 of 1000",
        "p99 ≤ 10 + 5 + 2 ms",
    ),
    ("loss 10 %: lost of 10,000 datagrams", "9–11 %"),
    (
        "loss_bursts(2.0, 8): average loss of 100,000 datagrams",
        "2 % ± 15 %",
    ),
    ("loss_bursts(2.0, 8): mean burst length", "8 ± 15 %"),
    ("rate 10 Mbit/s: TCP goodput (frames)", "10 Mbit/s ± 10 %"),
    ("plain link: TCP throughput, median of 5 × 2 s", "(today)"),
    (
        "engine path, loss(0.0) both ways: TCP throughput",
        "≥ 1 Gbit/s",
    ),
    ("engine path, loss(1.0) both ways: TCP throughput", "–"),
    ("plain link: UDP RTT, median of 5 medians of 1000", "–"),
    ("engine path: UDP RTT, median of 5 medians of 1000", "–"),
    (
        "engine path: added latency per direction (median)",
        "≤ 50 µs",
    ),
    ("plain link: process CPU per Gbit/s", "–"),
    ("engine path: process CPU per Gbit/s", "–"),
    ("engine path: engine thread CPU per Gbit/s", "–"),
    (
        "first impairment of a link (both directions), median of 20",
        "–",
    ),
    ("changing it afterwards, median of 20", "–"),
    (
        "flooded: drop after 3 s of refused frames into delay(1 s), median of 3",
        "< 2 s",
    ),
    (
        "flooded: drop holding a full direction of 14-byte frames, median of 3",
        "< 2 s",
    ),
    (
        "flooded: process memory held at the cap / left after the drop",
        "≤ 256 MiB / –",
    ),
    (
        "selected: TCP that only(udp port 53) leaves alone, throughput / plain link's, shuffled, median of 5 × 2 s",
        "≥ engine path's",
    ),
    (
        "selected: TCP that only(tcp) takes, throughput (engine path behind a selecting filter)",
        "–",
    ),
];

fn run_rootless_child(as_root: bool) -> BTreeMap<String, String> {
    // A copy of this binary that uid 65534 can read, removed at the end.
    let dir = tempfile::Builder::new()
        .prefix("netns-test-bench-")
        .tempdir()
        .expect("temporary directory");
    let copy = dir.path().join("impairments");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).expect("copy the bench");
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod");
    }
    let mut command = std::process::Command::new(&copy);
    command
        .arg(CHILD)
        .args(std::env::args().skip(1).filter(|a| !a.starts_with('-')))
        .current_dir(dir.path());
    if as_root {
        command.uid(NOBODY).gid(NOBODY);
    }
    let output = command.output().expect("run the rootless copy");
    if !output.status.success() {
        eprintln!(
            "the rootless run failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            (parts.next()? == "ROW").then_some(())?;
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Becomes root of a new user namespace (this process has one thread yet).
fn enter_user_namespace() {
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).expect("unshare(CLONE_NEWUSER)");
    std::fs::write("/proc/self/setgroups", "deny").expect("setgroups");
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1\n")).expect("uid_map");
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1\n")).expect("gid_map");
}

fn pair() -> (Network, Node, Node, Link) {
    let net = Network::new();
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    (net, a, b, link)
}

fn measure() -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    let mut row = |key: &str, value: String| {
        eprintln!("  {key}: {value}");
        rows.insert(key.to_owned(), value);
    };
    // `cargo bench --bench impairments -- loss` measures the rows that
    // name loss only.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |n: usize| {
        // Let the kernel finish tearing down the last measurement's namespaces.
        std::thread::sleep(ms(300));
        only.as_ref().is_none_or(|o| ROWS[n].0.contains(o.as_str()))
    };

    // Delay: the handshake waits for the SYN and the SYN-ACK.
    if wanted(0) {
        let (_net, a, b, link) = pair();
        link.impair(Impairment::new().delay(ms(50))).unwrap();
        let times = handshakes(&a, &b, &link, 200);
        row(ROWS[0].0, format!("{:.2} ms", median(&times) * 1e3));
    }
    // Jitter, one way.
    if wanted(1) {
        let (_net, a, b, link) = pair();
        link.impair_from(&a, Impairment::new().delay(ms(10)).jitter(ms(5)))
            .unwrap();
        let rtts = udp_rtts(&a, &b, &link, 1000);
        if std::env::var_os("BENCH_DEBUG").is_some() {
            let mut indexed: Vec<(usize, f64)> = rtts.iter().copied().enumerate().collect();
            indexed.sort_by(|x, y| y.1.total_cmp(&x.1));
            eprintln!("largest RTTs: {:?}", &indexed[..15]);
        }
        row(
            ROWS[1].0,
            format!(
                "{:.2} / {:.2} ms",
                median(&rtts) * 1e3,
                percentile(&rtts, 0.99) * 1e3
            ),
        );
    }
    // Independent loss.
    if wanted(2) {
        let (_net, a, b, link) = pair();
        link.impair_from(&a, Impairment::new().loss(10.0)).unwrap();
        let received = datagrams(&a, &b, &link, 10_000);
        let lost = received.iter().filter(|r| !**r).count();
        row(ROWS[2].0, format!("{:.2} %", lost as f64 / 100.0));
    }
    // Bursty loss.
    if wanted(3) {
        let (_net, a, b, link) = pair();
        link.impair_from(&a, Impairment::new().loss_bursts(2.0, 8))
            .unwrap();
        let n = 100_000;
        let received = datagrams(&a, &b, &link, n);
        let lost = received.iter().filter(|r| !**r).count();
        let bursts = received.windows(2).filter(|w| w[0] && !w[1]).count().max(1);
        row(
            ROWS[3].0,
            format!("{:.2} %", lost as f64 * 100.0 / n as f64),
        );
        row(ROWS[4].0, format!("{:.2}", lost as f64 / bursts as f64));
    }
    // Rate.
    if wanted(5) {
        let (_net, a, b, link) = pair();
        link.impair_from(&a, Impairment::new().rate_kbit(10_000))
            .unwrap();
        let (bits_per_s, _, _) = tcp_throughput(&a, &b, &link, Duration::from_secs(3));
        row(
            ROWS[5].0,
            format!(
                "{:.2} Mbit/s ({:.2})",
                bits_per_s / 1e6,
                bits_per_s / 1e6 * 1514.0 / 1448.0
            ),
        );
    }
    if wanted(15) {
        let (mut first, mut again) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let (_net, _a, _b, link) = pair();
            let start = Instant::now();
            link.impair(Impairment::new().delay(ms(1))).unwrap();
            first.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            link.impair(Impairment::new().delay(ms(2))).unwrap();
            again.push(start.elapsed().as_secs_f64());
        }
        row(ROWS[15].0, format!("{:.2} ms", median(&first) * 1e3));
        row(ROWS[16].0, format!("{:.1} µs", median(&again) * 1e6));
    }
    if wanted(17) {
        let mut drops = Vec::new();
        for _ in 0..3 {
            let (net, a, b, link) = pair();
            link.impair_from(&a, Impairment::new().delay(ms(1000)))
                .unwrap();
            interface_down(&b, b.interface_on(&link));
            let interface = a.interface_on(&link);
            a.netns().run(move || {
                let socket = packet_socket(&interface);
                flood(&socket, 60, Duration::from_secs(3), || false);
            });
            let start = Instant::now();
            drop((net, a, b, link));
            drops.push(start.elapsed().as_secs_f64());
        }
        row(ROWS[17].0, format!("{:.0} ms", median(&drops) * 1e3));
    }
    if wanted(18) || wanted(19) {
        let (mut drops, mut held, mut left) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let (net, a, b, link) = pair();
            link.impair_from(&a, Impairment::new().delay(Duration::from_secs(60)))
                .unwrap();
            let interface = a.interface_on(&link);
            let before = resident_bytes();
            // Until the process stops growing: the direction is full.
            a.netns().run(move || {
                let socket = packet_socket(&interface);
                let mut last = (resident_bytes(), Instant::now());
                flood(&socket, 14, Duration::from_secs(60), || {
                    let now = resident_bytes();
                    if now > last.0 + (4 << 20) {
                        last = (now, Instant::now());
                    }
                    last.1.elapsed() > Duration::from_secs(2)
                });
            });
            held.push((resident_bytes() - before) as f64);
            let start = Instant::now();
            drop((net, a, b, link));
            drops.push(start.elapsed().as_secs_f64());
            std::thread::sleep(ms(200));
            left.push(resident_bytes().saturating_sub(before) as f64);
        }
        row(ROWS[18].0, format!("{:.0} ms", median(&drops) * 1e3));
        row(
            ROWS[19].0,
            format!(
                "{:.0} MiB / {:.0} MiB",
                median(&held) / 1048576.0,
                median(&left) / 1048576.0
            ),
        );
    }
    if (6..15).any(wanted) {
        // Throughput, CPU and round trips: plain and engine path in turn,
        // medians of 5 rounds (other work on the machine moves single runs).
        let seconds = Duration::from_secs(2);
        let mut m: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let per_gbit = |cpu: f64, bits: f64| cpu / seconds.as_secs_f64() / (bits / 1e9);
        for _ in 0..5 {
            for (kind, impairment) in [
                ("plain", None),
                ("empty", Some(Impairment::new().loss(0.0))),
                ("lossy", Some(Impairment::new().loss(1.0))),
            ] {
                let (_net, a, b, link) = pair();
                if let Some(impairment) = impairment {
                    link.impair(impairment).unwrap();
                }
                let (bits, cpu, engine) = tcp_throughput(&a, &b, &link, seconds);
                let mut add = |key: String, value: f64| m.entry(key).or_default().push(value);
                add(kind.to_owned(), bits);
                add(format!("{kind} cpu"), per_gbit(cpu, bits));
                add(format!("{kind} engine"), per_gbit(engine, bits));
                if kind != "lossy" {
                    let rtt = median(&udp_rtts(&a, &b, &link, 1000));
                    add(format!("{kind} rtt"), rtt);
                }
            }
        }
        let med = |key: &str| median(&m[key]);
        row(ROWS[6].0, format!("{:.2} Gbit/s", med("plain") / 1e9));
        row(ROWS[7].0, format!("{:.2} Gbit/s", med("empty") / 1e9));
        row(ROWS[8].0, format!("{:.2} Gbit/s", med("lossy") / 1e9));
        row(ROWS[9].0, format!("{:.1} µs", med("plain rtt") * 1e6));
        row(ROWS[10].0, format!("{:.1} µs", med("empty rtt") * 1e6));
        row(
            ROWS[11].0,
            format!(
                "{:.1} µs",
                (med("empty rtt") - med("plain rtt")) / 2.0 * 1e6
            ),
        );
        row(ROWS[12].0, format!("{:.2} CPU s/s", med("plain cpu")));
        row(ROWS[13].0, format!("{:.2} CPU s/s", med("empty cpu")));
        row(ROWS[14].0, format!("{:.2} CPU s/s", med("empty engine")));
    }
    if wanted(20) || wanted(21) {
        // Traffic a direction's selectors leave alone stays on the veth:
        // side by side with a plain link and with traffic they take, the
        // contenders in another order each round.
        let seconds = Duration::from_secs(2);
        let contenders: [(&str, Option<Impairment>); 3] = [
            ("plain", None),
            (
                "unmatched",
                Some(Impairment::new().loss(0.0).only(Traffic::udp().port(53))),
            ),
            (
                "matched",
                Some(Impairment::new().loss(0.0).only(Traffic::tcp())),
            ),
        ];
        let mut m: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut ratios = Vec::new();
        for round in 0..5 {
            let mut order: Vec<usize> = (0..contenders.len()).collect();
            order.rotate_left(round % contenders.len());
            if round % 2 == 1 {
                order.reverse();
            }
            let mut this = [0.0; 3];
            for k in order {
                let (kind, impairment) = &contenders[k];
                let (_net, a, b, link) = pair();
                if let Some(impairment) = impairment {
                    link.impair(impairment.clone()).unwrap();
                }
                let (bits, _, _) = tcp_throughput(&a, &b, &link, seconds);
                this[k] = bits;
                m.entry(kind).or_default().push(bits);
            }
            ratios.push(this[1] / this[0]);
        }
        let med = |key: &str| median(&m[key]);
        row(
            ROWS[20].0,
            format!(
                "{:.2} Gbit/s / {:.2} Gbit/s (ratio {:.2})",
                med("unmatched") / 1e9,
                med("plain") / 1e9,
                median(&ratios)
            ),
        );
        row(ROWS[21].0, format!("{:.2} Gbit/s", med("matched") / 1e9));
    }
    rows
}

/// A raw packet socket bound to `interface` of the calling thread's namespace.
fn packet_socket(interface: &str) -> std::os::fd::OwnedFd {
    use nix::libc;
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `fd` is new and ours.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = nix::net::if_::if_nametoindex(interface).unwrap() as i32;
    let size = std::mem::size_of_val(&address) as libc::socklen_t;
    // SAFETY: bind reads the address, alive across the call.
    assert_eq!(
        unsafe { libc::bind(fd, (&raw const address).cast(), size) },
        0
    );
    socket
}

/// Sends broadcast frames of `len` bytes (an IPv4 ethertype, nothing
/// after) out of `socket`, 1024 per call, for at most `time` or until
/// `enough` says so (asked every 64 calls).
fn flood(
    socket: &std::os::fd::OwnedFd,
    len: usize,
    time: Duration,
    mut enough: impl FnMut() -> bool,
) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let mut frame = vec![0xffu8; 6];
    frame.extend([2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    frame.resize(len, 0);
    let mut iovecs: Vec<libc::iovec> = (0..1024)
        .map(|_| libc::iovec {
            iov_base: frame.as_mut_ptr().cast(),
            iov_len: len,
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
    let mut calls = 0u64;
    while start.elapsed() < time && !(calls % 64 == 0 && enough()) {
        // SAFETY: sendmmsg reads the frame behind the headers, alive across the call.
        unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), 1024, 0) };
        calls += 1;
    }
}

/// `ip link set dev NAME down` in `node`.
fn interface_down(node: &Node, name: String) {
    let status = node.netns().run(move || {
        std::process::Command::new("ip")
            .args(["link", "set", "dev", &name, "down"])
            .status()
            .unwrap()
    });
    assert!(status.success());
}

/// The process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Seconds of TCP handshakes from a to b.
fn handshakes(a: &Node, b: &Node, link: &Link, n: usize) -> Vec<f64> {
    let address = SocketAddr::new(IpAddr::V4(b.ipv4_on(link)), 80);
    let listener = b.netns().run(move || TcpListener::bind(address).unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            drop(listener.accept().unwrap());
        }
    });
    let times = a.netns().run(move || {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let stream = TcpStream::connect(address).unwrap();
                let took = start.elapsed().as_secs_f64();
                drop(stream);
                took
            })
            .collect()
    });
    server.join().unwrap();
    times
}

/// Seconds of UDP round trips from a to b and back, one at a time.
fn udp_rtts(a: &Node, b: &Node, link: &Link, n: usize) -> Vec<f64> {
    let address = SocketAddr::new(IpAddr::V4(b.ipv4_on(link)), 7);
    let echo = b.netns().run(move || UdpSocket::bind(address).unwrap());
    echo.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((len, from)) = echo.recv_from(&mut buf) {
            echo.send_to(&buf[..len], from).unwrap();
        }
    });
    let rtts = a.netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect(address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 64];
        // Warm up: neighbours resolved.
        for _ in 0..10 {
            socket.send(b"warm").unwrap();
            let _ = socket.recv(&mut buf);
        }
        (0..n)
            .filter_map(|i| {
                let start = Instant::now();
                socket.send(&(i as u32).to_be_bytes()).unwrap();
                socket.recv(&mut buf).ok()?;
                Some(start.elapsed().as_secs_f64())
            })
            .collect()
    });
    server.join().unwrap();
    rtts
}

/// Sends `n` numbered datagrams from a to b; which arrived.
fn datagrams(a: &Node, b: &Node, link: &Link, n: usize) -> Vec<bool> {
    let address = SocketAddr::new(IpAddr::V4(b.ipv4_on(link)), 9);
    let receiver = b.netns().run(move || {
        let socket = UdpSocket::bind(address).unwrap();
        big_receive_buffer(&socket);
        socket
    });
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let counter = std::thread::spawn(move || {
        let mut seen = vec![false; n];
        let mut buf = [0u8; 64];
        while let Ok(len) = receiver.recv(&mut buf) {
            if len >= 4 {
                let i = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if i < n {
                    seen[i] = true;
                }
            }
        }
        seen
    });
    a.netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..n {
            socket.send_to(&(i as u32).to_be_bytes(), address).unwrap();
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    counter.join().unwrap()
}

fn big_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &(16 << 20)).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &(16 << 20));
    }
}

/// TCP from a to b for `duration`: bits per second received, the CPU
/// seconds the process and the engine's thread used meanwhile.
fn tcp_throughput(a: &Node, b: &Node, link: &Link, duration: Duration) -> (f64, f64, f64) {
    let address = SocketAddr::new(IpAddr::V4(b.ipv4_on(link)), 5001);
    let listener = b.netns().run(move || TcpListener::bind(address).unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 18];
        let mut total = 0usize;
        let start = Instant::now();
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total as f64 * 8.0 / start.elapsed().as_secs_f64()
    });
    let cpu_before = (process_cpu(), engine_cpu());
    a.netns().run(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let start = Instant::now();
        while start.elapsed() < duration {
            stream.write_all(&chunk).unwrap();
        }
    });
    let bits = receiver.join().unwrap();
    (
        bits,
        process_cpu() - cpu_before.0,
        engine_cpu() - cpu_before.1,
    )
}

/// User and system CPU seconds in a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn process_cpu() -> f64 {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds of the fault engines' threads.
fn engine_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with("faults-"))
        })
        .map(|t| stat_cpu(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}
