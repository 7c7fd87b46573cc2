//! `#[netns_test(veth)]`: a veth pair to the host, with unique addresses.

mod common;

use common::interfaces;
use netns_test::{NetNs, netns_test};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};

#[netns_test(veth)]
fn tcp_and_udp_both_ways_at_body_start() {
    let ns = NetNs::current();
    let veth = ns.veth().expect("veth requested").clone();
    println!("{veth:?}");
    for (inside, outside) in [
        (IpAddr::V4(veth.ns_ipv4()), IpAddr::V4(veth.host_ipv4())),
        (
            IpAddr::V6(veth.ns_ipv6().unwrap()),
            IpAddr::V6(veth.host_ipv6().unwrap()),
        ),
    ] {
        // Host -> test, TCP.
        let server = TcpListener::bind((inside, 8080)).unwrap();
        let got = ns.host().run(move || {
            let mut c = TcpStream::connect((inside, 8080)).unwrap();
            c.write_all(b"in").unwrap();
            c.local_addr().unwrap().ip()
        });
        let (mut s, peer) = server.accept().unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"in");
        assert_eq!(peer.ip(), outside);
        assert_eq!(got, outside);
        // Test -> host, TCP.
        let host_server = ns
            .host()
            .run(move || TcpListener::bind((outside, 0)).unwrap());
        let port = host_server.local_addr().unwrap().port();
        let mut c = TcpStream::connect((outside, port)).unwrap();
        c.write_all(b"out").unwrap();
        let (mut s, peer) = host_server.accept().unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"out");
        assert_eq!(peer.ip(), inside);
        // UDP both ways.
        let here = UdpSocket::bind((inside, 5353)).unwrap();
        let there = ns
            .host()
            .run(move || UdpSocket::bind((outside, 0)).unwrap());
        there.send_to(b"q", (inside, 5353)).unwrap();
        let mut b = [0u8; 1];
        let (_, from) = here.recv_from(&mut b).unwrap();
        assert_eq!(from.ip(), outside);
        here.send_to(b"r", from).unwrap();
        let (_, from) = there.recv_from(&mut b).unwrap();
        assert_eq!(from, SocketAddr::new(inside, 5353));
    }
}

fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[netns_test(veth)]
fn the_test_side_has_addresses_and_default_routes() {
    let veth = NetNs::current().veth().unwrap().clone();
    assert_eq!(interfaces(), ["lo", "veth0"]);
    assert_eq!(veth.ns_name(), "veth0");
    assert!(veth.host_name().starts_with("ntveth") && veth.host_name().len() <= 15);
    assert_eq!(
        (veth.ipv4_prefix(), veth.ipv6_prefix().unwrap(), veth.mtu()),
        (30, 64, 1500)
    );
    assert_eq!(veth.ns_ipv4().octets()[0], 198);
    assert!(matches!(veth.ns_ipv4().octets()[1], 18 | 19));
    assert_eq!(
        veth.ns_ipv6().unwrap().segments()[..3],
        [0xfdc7, 0x3a59, 0x41e2]
    );
    let v4 = ip(&["-4", "route", "show", "default"]);
    assert!(
        v4.contains(&format!("default via {} dev veth0", veth.host_ipv4())),
        "{v4}"
    );
    let v6 = ip(&["-6", "route", "show", "default"]);
    assert!(
        v6.contains(&format!(
            "default via {} dev veth0",
            veth.host_ipv6().unwrap()
        )),
        "{v6}"
    );
    let addresses = ip(&["-o", "addr", "show", "dev", "veth0"]);
    assert!(
        addresses.contains(&format!("{}/30", veth.ns_ipv4())),
        "{addresses}"
    );
    assert!(
        addresses.contains(&format!("{}/64", veth.ns_ipv6().unwrap())),
        "{addresses}"
    );
    // Ours are added with IFA_F_NODAD: never tentative. (The kernel's own
    // link-local address may be, for the instant before its DAD work item
    // runs, even with accept_dad = 0.)
    let ours = addresses
        .lines()
        .find(|l| l.contains(&veth.ns_ipv6().unwrap().to_string()))
        .unwrap();
    assert!(
        !ours.contains("tentative") && ours.contains("nodad"),
        "{ours}"
    );
    let mtu = std::fs::read_to_string("/sys/class/net/veth0/mtu").unwrap();
    assert_eq!(mtu.trim(), "1500");
    // The host's end is up, in the host, with its addresses.
    let name = veth.host_name().to_owned();
    let host_side = NetNs::current()
        .host()
        .command("ip")
        .args(["-o", "addr", "show", "dev", &name])
        .output()
        .unwrap();
    let host_side = String::from_utf8(host_side.stdout).unwrap();
    assert!(
        host_side.contains(&format!("{}/30", veth.host_ipv4())),
        "{host_side}"
    );
    assert!(
        host_side.contains(&format!("{}/64", veth.host_ipv6().unwrap())),
        "{host_side}"
    );
}

#[netns_test(veth(mtu = 9000))]
fn mtu_is_configurable() {
    let veth = NetNs::current().veth().unwrap().clone();
    assert_eq!(veth.mtu(), 9000);
    let mtu = std::fs::read_to_string("/sys/class/net/veth0/mtu").unwrap();
    assert_eq!(mtu.trim(), "9000");
    let host_mtu = NetNs::current()
        .host()
        .run(move || std::fs::read_to_string(format!("/sys/class/net/{}/mtu", veth.host_name())));
    assert_eq!(host_mtu.unwrap().trim(), "9000");
}

#[netns_test(veth(
    ipv4 = "198.51.100.2/24",
    host_ipv4 = "198.51.100.1/24",
    ipv6 = "2001:db8:7::2/64",
    host_ipv6 = "2001:db8:7::1/64"
))]
fn addresses_are_configurable() {
    let veth = NetNs::current().veth().unwrap().clone();
    assert_eq!(veth.ns_ipv4().to_string(), "198.51.100.2");
    assert_eq!(veth.host_ipv4().to_string(), "198.51.100.1");
    assert_eq!(veth.ipv4_prefix(), 24);
    assert_eq!(veth.ns_ipv6().unwrap().to_string(), "2001:db8:7::2");
    assert_eq!(veth.ipv6_prefix().unwrap(), 64);
    let server = TcpListener::bind(("198.51.100.2", 80)).unwrap();
    assert!(
        NetNs::current()
            .host()
            .run(|| TcpStream::connect("198.51.100.2:80").is_ok())
    );
    drop(server);
    let server6 = TcpListener::bind("[2001:db8:7::2]:80").unwrap();
    assert!(
        NetNs::current()
            .host()
            .run(|| TcpStream::connect("[2001:db8:7::2]:80").is_ok())
    );
    drop(server6);
}

#[netns_test]
fn without_veth_there_is_none_and_the_host_is_at_hand() {
    let ns = NetNs::current();
    assert!(ns.veth().is_none());
    assert_eq!(interfaces(), ["lo"]);
    let host = ns.host();
    assert_ne!(host, ns);
    // The host's handle runs in the main thread's namespaces.
    let main_thread = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_thread = host.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_eq!(host_thread, main_thread);
    assert_eq!(
        main_thread.display().to_string(),
        format!("net:[{}]", host.inode())
    );
}

static SEEN: std::sync::Mutex<Vec<netns_test::Veth>> = std::sync::Mutex::new(Vec::new());
static BOTH_BOUND: std::sync::Barrier = std::sync::Barrier::new(2);

#[netns_test(veth)]
#[test]
#[ignore = "called by parallel_tests_get_distinct_pairs"]
fn fixture_records_its_veth() {
    let veth = NetNs::current().veth().unwrap().clone();
    SEEN.lock().unwrap().push(veth);
}

#[netns_test(veth)]
#[test]
#[ignore = "called by two_parallel_tests_use_the_same_port"]
fn fixture_serves_port_9000() {
    let ns = NetNs::current();
    let veth = ns.veth().unwrap().clone();
    let inside = TcpListener::bind((veth.ns_ipv4(), 9000)).unwrap();
    let host_ip = veth.host_ipv4();
    let outside = ns
        .host()
        .run(move || TcpListener::bind((host_ip, 9000)).unwrap());
    BOTH_BOUND.wait();
    let ns_ip = veth.ns_ipv4();
    ns.host()
        .run(move || TcpStream::connect((ns_ip, 9000)).unwrap());
    inside.accept().unwrap();
    TcpStream::connect((host_ip, 9000)).unwrap();
    outside.accept().unwrap();
}

#[test]
fn two_parallel_tests_use_the_same_port() {
    let threads: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(fixture_serves_port_9000))
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn parallel_tests_get_distinct_pairs() {
    let threads: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| (0..8).for_each(|_| fixture_records_its_veth())))
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let seen = SEEN.lock().unwrap();
    assert_eq!(seen.len(), 64);
    let distinct = |key: &dyn Fn(&netns_test::Veth) -> String| {
        let mut keys: Vec<String> = seen.iter().map(key).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    assert_eq!(distinct(&|v| v.host_name().to_owned()), 64);
    assert_eq!(distinct(&|v| v.ns_ipv4().to_string()), 64);
    assert_eq!(distinct(&|v| v.ns_ipv6().unwrap().to_string()), 64);
}

static HUNG: std::sync::Mutex<Option<netns_test::Veth>> = std::sync::Mutex::new(None);

// Long enough for setup to finish (and the veth to exist) on a loaded
// machine before the timeout deletes the pair.
#[netns_test(veth, timeout = "2s")]
#[test]
#[ignore = "called by a_timed_out_test_loses_its_pair_at_once"]
fn fixture_hangs_with_a_veth() {
    *HUNG.lock().unwrap() = NetNs::current().veth().cloned();
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[test]
fn a_timed_out_test_loses_its_pair_at_once() {
    let timed_out = std::thread::spawn(fixture_hangs_with_a_veth).join();
    let message = timed_out.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("timed out after 2 s"), "{message}");
    let veth = HUNG.lock().unwrap().clone().expect("the body ran");
    // The body still sleeps in its namespace; the host side is gone already.
    let exists = std::path::Path::new("/sys/class/net").join(veth.host_name());
    assert!(!exists.exists(), "{} still exists", veth.host_name());
}

fn armed() -> bool {
    std::env::var_os("NETNS_TEST_FIXTURES").is_some()
}

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipped: needs root");
    }
    root
}

/// Runs fixtures of this binary, one at a time, through `sh -c "<prefix> exec <binary> ..."`.
fn run_fixtures(prefix: &str, fixtures: &[&str]) -> (std::process::Output, String) {
    let exe = std::env::current_exe().unwrap();
    let script =
        format!("{prefix} exec \"$0\" --ignored --exact --nocapture --test-threads=1 \"$@\"");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .args(fixtures)
        .env("NETNS_TEST_FIXTURES", "1")
        .output()
        .unwrap();
    let text = common::text(&output);
    (output, text)
}

#[netns_test(veth)]
#[ignore = "fixture"]
fn fixture_ipv4_only_host() {
    if !armed() {
        return;
    }
    let ns = NetNs::current();
    let veth = ns.veth().unwrap().clone();
    assert_eq!(
        (veth.ns_ipv6(), veth.host_ipv6(), veth.ipv6_prefix()),
        (None, None, None)
    );
    let server = TcpListener::bind((veth.ns_ipv4(), 8080)).unwrap();
    let address = veth.ns_ipv4();
    ns.host()
        .run(move || TcpStream::connect((address, 8080)))
        .unwrap();
    server.accept().unwrap();
    println!("REPORT ipv4 only ok");
}

#[test]
fn a_host_with_ipv6_disabled_gets_an_ipv4_only_pair() {
    if !root() {
        return;
    }
    // The fixture's host is a network namespace of its own with IPv6
    // disabled, as in Docker's default network; this host is untouched.
    let (output, text) = run_fixtures(
        "unshare --net sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
         echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 && \"$@\"' sh",
        &["fixture_ipv4_only_host"],
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("REPORT ipv4 only ok"), "{text}");
}

#[netns_test(veth, timeout = "1ms")]
#[ignore = "fixture"]
fn fixture_a_times_out_before_its_pair_is_made() {
    std::thread::sleep(std::time::Duration::from_secs(5));
}

#[test]
#[ignore = "fixture"]
fn fixture_b_finds_no_pair_left_by_a_timed_out_test() {
    if !armed() {
        return;
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Every thread's network view; the abandoned test thread is one of them.
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let devices = std::fs::read_to_string(task.path().join("net/dev")).unwrap_or_default();
        assert!(
            !devices.contains("veth0:"),
            "a timed-out test's pair was made after its timeout: {devices}"
        );
    }
    println!("REPORT no pair left");
}

#[test]
fn a_test_that_times_out_before_its_pair_is_made_never_gets_one() {
    if !root() {
        return;
    }
    let (_, text) = run_fixtures(
        "",
        &[
            "fixture_a_times_out_before_its_pair_is_made",
            "fixture_b_finds_no_pair_left_by_a_timed_out_test",
        ],
    );
    assert!(text.contains("timed out after 1 ms"), "{text}");
    assert!(text.contains("REPORT no pair left"), "{text}");
    assert!(!text.contains("deleting its veth pair failed"), "{text}");
}

#[test]
#[ignore = "fixture"]
fn fixture_holds_every_abstract_lease_name() {
    if !armed() {
        return;
    }
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
    let (from, to): (u32, u32) = (
        std::env::var("FROM").unwrap().parse().unwrap(),
        std::env::var("TO").unwrap().parse().unwrap(),
    );
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        limit.1,
        limit.1,
    )
    .unwrap();
    let mut held = Vec::new();
    for slot in from..to {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let name = format!("netns-test/veth/{slot}");
        if bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
        )
        .is_ok()
        {
            held.push(fd);
        }
    }
    println!("HOLDING {}", held.len());
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[test]
fn another_user_cannot_take_the_leases() {
    if !root() {
        return;
    }
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let copy = common::Copy::new();
    // Another user (65533) holds every name the leases once were (abstract
    // sockets), in two processes for its descriptor limit.
    let mut attackers: Vec<std::process::Child> = [(0, 16384), (16384, 32768)]
        .into_iter()
        .map(|(from, to)| {
            common::retry_busy(|| {
                copy.command(&[
                    "--ignored",
                    "--exact",
                    "fixture_holds_every_abstract_lease_name",
                    "--nocapture",
                ])
                .env("FROM", from.to_string())
                .env("TO", to.to_string())
                .uid(65533)
                .gid(65533)
                .stdout(std::process::Stdio::piped())
                .spawn()
            })
        })
        .collect();
    let mut holding = 0;
    for attacker in &mut attackers {
        let line = std::io::BufReader::new(attacker.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("HOLDING "))
            .unwrap_or_default();
        holding += line
            .trim_start_matches("HOLDING ")
            .parse::<u32>()
            .unwrap_or(0);
    }
    // The lease files are root's alone.
    let lease_dir = std::path::Path::new("/run/netns-test/veth");
    let peek = std::process::Command::new("ls")
        .arg(lease_dir)
        .uid(65533)
        .gid(65533)
        .output()
        .unwrap();
    let (output, text) = run_fixtures("", &["fixture_records_its_veth"]);
    for attacker in &mut attackers {
        let _ = attacker.kill();
        let _ = attacker.wait();
    }
    assert_eq!(holding, 32768, "the attack did not hold every name");
    assert!(!peek.status.success(), "another user can list the leases");
    assert!(output.status.success(), "{text}");
}

#[netns_test(veth)]
#[test]
#[ignore = "called by fixture_veth_tests_in_a_row"]
fn fixture_a_short_veth_test() {
    assert!(NetNs::current().veth().is_some());
}

/// How many veth tests [`fixture_veth_tests_in_a_row`] runs.
const IN_A_ROW: usize = 40;

#[test]
#[ignore = "fixture"]
fn fixture_veth_tests_in_a_row() {
    if !armed() {
        return;
    }
    for _ in 0..IN_A_ROW {
        fixture_a_short_veth_test();
    }
}

/// From a process's third veth test on, a test enters a namespace and pair
/// made ahead while the previous ones ran, on another thread, instead of
/// making its own on its path (`NETNS_TEST_LOG=debug` says which). One made
/// at a time, only about every other test found one.
#[test]
fn veth_tests_in_a_row_find_their_pairs_made_ahead() {
    if !root() {
        return;
    }
    let (output, text) = run_fixtures("NETNS_TEST_LOG=debug", &["fixture_veth_tests_in_a_row"]);
    assert!(output.status.success(), "{text}");
    let made_ahead = text.matches("veth pair made ahead").count();
    let made_on_the_path = text.matches("veth pair created").count();
    assert_eq!(made_ahead + made_on_the_path, IN_A_ROW, "{text}");
    println!("{made_ahead} of {IN_A_ROW} made ahead");
    assert!(
        made_ahead >= (IN_A_ROW - 2) * 4 / 5,
        "only {made_ahead} of {IN_A_ROW} veth tests found their pair made ahead"
    );
}

/// One datagram each way over the test's fresh pair, host side first or
/// test side first, in both families (`NETNS_TEST_FIXTURES` not needed: it
/// is only ever called): each must arrive, and at once: ARP and neighbour
/// discovery ask again only after a second, so a first request the fresh
/// pair lost shows as a datagram a second late. (What the machine's load
/// adds is the time this thread waited for a CPU meanwhile, not counted.)
fn first_datagrams_each_way(host_first: bool) {
    use std::time::{Duration, Instant};
    let ns = NetNs::current();
    let veth = ns.veth().expect("veth requested").clone();
    let mut families = vec![(IpAddr::V4(veth.ns_ipv4()), IpAddr::V4(veth.host_ipv4()))];
    if let (Some(inside), Some(outside)) = (veth.ns_ipv6(), veth.host_ipv6()) {
        families.push((IpAddr::V6(inside), IpAddr::V6(outside)));
    }
    for (inside, outside) in families {
        let there = ns
            .host()
            .run(move || UdpSocket::bind((outside, 0)).unwrap());
        let here = UdpSocket::bind((inside, 0)).unwrap();
        let one = |from: &UdpSocket, to: &UdpSocket, what: &str| {
            to.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let (start, waited) = (Instant::now(), thread_waited());
            from.send_to(what.as_bytes(), to.local_addr().unwrap())
                .unwrap();
            let mut buf = [0u8; 16];
            let got = to.recv_from(&mut buf);
            let took = start.elapsed().saturating_sub(thread_waited() - waited);
            let (n, _) = got.unwrap_or_else(|e| panic!("{what} ({inside}): lost ({e})"));
            assert_eq!(&buf[..n], what.as_bytes());
            assert!(
                took < Duration::from_millis(500),
                "{what} ({inside}): {took:?}: its first neighbour request was lost"
            );
        };
        if host_first {
            one(&there, &here, "host to test");
            one(&here, &there, "test to host");
        } else {
            one(&here, &there, "test to host");
            one(&there, &here, "host to test");
        }
    }
}

/// How long the calling thread has waited for a CPU while it could run
/// (`run_delay` in its `schedstat`).
fn thread_waited() -> std::time::Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = text.split(' ').nth(1).and_then(|n| n.parse().ok());
    std::time::Duration::from_nanos(nanos.unwrap_or(0))
}

#[netns_test(veth)]
#[test]
#[ignore = "fixture"]
fn fixture_first_datagrams_host_first() {
    first_datagrams_each_way(true);
}

#[netns_test(veth)]
#[test]
#[ignore = "fixture"]
fn fixture_first_datagrams_test_first() {
    first_datagrams_each_way(false);
}

#[test]
#[ignore = "fixture"]
fn fixture_first_datagrams_in_a_row() {
    if !armed() {
        return;
    }
    for i in 0..IN_A_ROW {
        if i % 2 == 0 {
            fixture_first_datagrams_host_first();
        } else {
            fixture_first_datagrams_test_first();
        }
    }
}

/// How many processes [`fresh_pairs_carry_their_first_datagram_each_way`]
/// runs its fixtures in.
const FRESH: usize = 200;

/// A veth pair carries its first datagram each way, in both families, as
/// soon as the test starts: in processes of their own (each test's pair
/// made on its path, as under cargo-nextest), and in a row in one
/// process (pairs made ahead, some taken the moment they were made).
/// Before the pairs were settled, about 2 % of fresh pairs lost their first
/// ARP request or neighbour solicitation (a datagram a second late).
#[test]
fn fresh_pairs_carry_their_first_datagram_each_way() {
    if !root() {
        return;
    }
    let mut failures = Vec::new();
    for i in 0..FRESH {
        let fixture = if i % 2 == 0 {
            "fixture_first_datagrams_host_first"
        } else {
            "fixture_first_datagrams_test_first"
        };
        let (output, text) = run_fixtures("", &[fixture]);
        if !output.status.success() {
            failures.push(text);
        }
    }
    let (output, text) = run_fixtures("", &["fixture_first_datagrams_in_a_row"]);
    if !output.status.success() {
        failures.push(text);
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs lost a first datagram:\n{}",
        failures.len(),
        FRESH + 1,
        failures.join("\n")
    );
}
