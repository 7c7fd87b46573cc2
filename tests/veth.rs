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
        (IpAddr::V6(veth.ns_ipv6()), IpAddr::V6(veth.host_ipv6())),
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
        (veth.ipv4_prefix(), veth.ipv6_prefix(), veth.mtu()),
        (30, 64, 1500)
    );
    assert_eq!(veth.ns_ipv4().octets()[0], 198);
    assert!(matches!(veth.ns_ipv4().octets()[1], 18 | 19));
    assert_eq!(veth.ns_ipv6().segments()[..3], [0xfdc7, 0x3a59, 0x41e2]);
    let v4 = ip(&["-4", "route", "show", "default"]);
    assert!(
        v4.contains(&format!("default via {} dev veth0", veth.host_ipv4())),
        "{v4}"
    );
    let v6 = ip(&["-6", "route", "show", "default"]);
    assert!(
        v6.contains(&format!("default via {} dev veth0", veth.host_ipv6())),
        "{v6}"
    );
    let addresses = ip(&["-o", "addr", "show", "dev", "veth0"]);
    assert!(
        addresses.contains(&format!("{}/30", veth.ns_ipv4())),
        "{addresses}"
    );
    assert!(
        addresses.contains(&format!("{}/64", veth.ns_ipv6())),
        "{addresses}"
    );
    // Ours are added with IFA_F_NODAD: never tentative. (The kernel's own
    // link-local address may be, for the instant before its DAD work item
    // runs, even with accept_dad = 0.)
    let ours = addresses
        .lines()
        .find(|l| l.contains(&veth.ns_ipv6().to_string()))
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
        host_side.contains(&format!("{}/64", veth.host_ipv6())),
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
    assert_eq!(veth.ns_ipv6().to_string(), "2001:db8:7::2");
    assert_eq!(veth.ipv6_prefix(), 64);
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
    assert_eq!(distinct(&|v| v.ns_ipv6().to_string()), 64);
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
