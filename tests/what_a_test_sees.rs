//! What the body of a `#[netns_test]`, its threads, tokio workers and child
//! processes see, and what `NetNs` does.

mod common;

use common::interfaces;
use netns_test::{NetNs, netns_test};
use std::net::{Ipv6Addr, TcpListener, UdpSocket};
use std::process::Command;

fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

fn host_netns() -> String {
    // The main thread never enters a test namespace.
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

#[netns_test]
fn only_lo_is_there_and_up() {
    assert_eq!(interfaces(), ["lo"]);
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is not up: flags {flags:#x}");
    assert_ne!(thread_netns(), host_netns());
}

/// The devices a `/proc/net/dev` text lists, sorted.
fn devices_in(dev: &str) -> Vec<String> {
    let mut names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_owned()))
        .collect();
    names.sort();
    names
}

/// The local addresses of the listening TCP sockets a `/proc/net/tcp` (or
/// `tcp6`) text lists, as the kernel writes them (`0100007F:0050`).
fn tcp_listeners_in(tcp: &str) -> Vec<String> {
    tcp.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"0A")).then(|| fields[1].to_owned())
        })
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// What `/proc/net` shows the calling thread: its interfaces and its
/// listening TCP sockets.
fn proc_net() -> (Vec<String>, Vec<String>) {
    (
        devices_in(&read("/proc/net/dev")),
        tcp_listeners_in(&read("/proc/net/tcp")),
    )
}

#[netns_test]
fn proc_net_shows_the_test_namespace() {
    let _listener = TcpListener::bind("127.0.0.1:80").unwrap();
    let expected = (vec!["lo".to_owned()], vec!["0100007F:0050".to_owned()]);
    assert_eq!(proc_net(), expected, "in the body");
    assert_eq!(
        std::thread::spawn(proc_net).join().unwrap(),
        expected,
        "in a thread"
    );
    let cat = |file: &str| {
        let out = Command::new("cat").arg(file).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(devices_in(&cat("/proc/net/dev")), ["lo"], "in a child");
    assert_eq!(tcp_listeners_in(&cat("/proc/net/tcp")), ["0100007F:0050"]);
    // The counters are the namespace's too: one connection, one active open.
    let opens = || -> u64 {
        let snmp = read("/proc/net/snmp");
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
        let at = names.split_whitespace().position(|n| n == "ActiveOpens");
        values
            .split_whitespace()
            .nth(at.unwrap())
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = opens();
    std::net::TcpStream::connect("127.0.0.1:80").unwrap();
    assert_eq!(opens(), before + 1);
}

#[netns_test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_net_shows_the_test_namespace_to_tokio_workers() {
    let _listener = tokio::net::TcpListener::bind("127.0.0.1:80").await.unwrap();
    for _ in 0..4 {
        let seen = tokio::spawn(async { proc_net() }).await.unwrap();
        assert_eq!(seen.0, ["lo"]);
        assert_eq!(seen.1, ["0100007F:0050"]);
    }
    let blocking = tokio::task::spawn_blocking(proc_net).await.unwrap();
    assert_eq!(blocking.0, ["lo"]);
}

/// Whether the host's `/run/netns` has `name`, seen through the main
/// thread's root (the host's mount namespace). (Only a name of the test's
/// own tells: other tests, of this run or another, keep namespaces there
/// and remove them, and `netns-test gc` the directory, at any time.)
fn on_the_host(name: &str) -> bool {
    std::path::Path::new("/proc/self/root/run/netns")
        .join(name)
        .exists()
}

fn run_netns() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[netns_test]
fn ip_netns_add_exec_and_delete_work_inside() {
    assert_eq!(
        run_netns(),
        Vec::<String>::new(),
        "an empty /run/netns of its own"
    );
    ip(&["netns", "add", "inner"]);
    assert_eq!(run_netns(), ["inner"]);
    assert_eq!(ip(&["netns", "list"]).trim(), "inner");
    // A command inside sees the named namespace: its /proc/net too.
    let inside = ip(&["netns", "exec", "inner", "cat", "/proc/net/dev"]);
    assert_eq!(devices_in(&inside), ["lo"]);
    let ls = ip(&["netns", "exec", "inner", "ip", "-o", "link"]);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    // /var/run/netns, which iproute2 uses, is the same directory.
    assert!(std::path::Path::new("/var/run/netns/inner").exists());
    assert!(!on_the_host("inner"), "the host's /run/netns got it");
    ip(&["netns", "delete", "inner"]);
    assert_eq!(run_netns(), Vec::<String>::new());
    assert!(!on_the_host("inner"), "the host's /run/netns got it");
}

#[netns_test]
fn every_namespace_has_a_run_netns_of_its_own() {
    ip(&["netns", "add", "same"]);
    let net = netns_test::Network::new();
    let (a, b) = (net.node("a").unwrap(), net.node("b").unwrap());
    for node in [&a, &b] {
        // The same name in each node: no collision, and each node sees its own.
        node.netns().run(|| {
            assert_eq!(run_netns(), Vec::<String>::new());
            ip(&["netns", "add", "same"]);
            ip(&["netns", "add", node.name()]);
        });
        let listed = node
            .netns()
            .command("ls")
            .arg("/run/netns")
            .output()
            .unwrap();
        let mut listed: Vec<&str> = std::str::from_utf8(&listed.stdout)
            .unwrap()
            .lines()
            .collect();
        listed.sort();
        let mut expected = vec!["same", node.name()];
        expected.sort();
        assert_eq!(listed, expected, "node {}", node.name());
    }
    assert_eq!(run_netns(), ["same"], "the test's own");
    a.netns().run(|| ip(&["netns", "delete", "same"]));
    assert_eq!(b.netns().run(run_netns), ["b", "same"]);
    ip(&["netns", "delete", "same"]);
}

/// Adds `twice-taken`, waits until the other test has too, deletes it.
fn add_the_name_twice_taken() {
    ip(&["netns", "add", "twice-taken"]);
    SAME_NAME.wait();
    assert_eq!(run_netns(), ["twice-taken"]);
    assert!(!on_the_host("twice-taken"), "the host's /run/netns got it");
    SAME_NAME.wait();
    ip(&["netns", "delete", "twice-taken"]);
}

static SAME_NAME: std::sync::Barrier = std::sync::Barrier::new(2);

#[netns_test]
#[ignore = "called by two_tests_add_the_same_name_at_once"]
fn adds_the_name_twice_taken_first() {
    add_the_name_twice_taken();
}

#[netns_test]
#[ignore = "called by two_tests_add_the_same_name_at_once"]
fn adds_the_name_twice_taken_second() {
    add_the_name_twice_taken();
}

#[test]
fn two_tests_add_the_same_name_at_once() {
    if !netns_test::privileged() {
        println!("skipped: calls netns tests in this process, which needs root");
        return;
    }
    let tests = [
        std::thread::spawn(adds_the_name_twice_taken_first),
        std::thread::spawn(adds_the_name_twice_taken_second),
    ];
    for test in tests {
        test.join().unwrap();
    }
    assert!(!on_the_host("twice-taken"), "the host's /run/netns got it");
}

#[netns_test]
fn binds_privileged_ports_on_both_loopbacks() {
    let v4 = TcpListener::bind("127.0.0.1:80").unwrap();
    let v6 = TcpListener::bind("[::1]:80").unwrap();
    std::net::TcpStream::connect("127.0.0.1:80").unwrap();
    std::net::TcpStream::connect("[::1]:80").unwrap();
    drop((v4, v6));
    let udp = UdpSocket::bind("127.0.0.1:53").unwrap();
    udp.send_to(b"x", "127.0.0.1:53").unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(udp.recv(&mut buf).unwrap(), 1);
}

#[test]
fn two_hundred_tests_bind_the_same_port_at_once() {
    // Each body holds 127.0.0.1:80 until all of them have bound it.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let barrier = barrier.clone();
            let ns = NetNs::new().unwrap();
            ns.spawn(move || {
                let listener = TcpListener::bind("127.0.0.1:80").unwrap();
                barrier.wait();
                drop(listener);
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[netns_test]
fn ipv6_duplicate_address_detection_is_off() {
    for key in ["all", "default"] {
        let value =
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{key}/accept_dad")).unwrap();
        assert_eq!(value.trim(), "0", "conf.{key}.accept_dad");
    }
    // An address added now (without IFA_F_NODAD) skips DAD: the kernel
    // clears its tentative flag from a work item, within milliseconds,
    // where DAD would take a second or more.
    // On a veth inside the test's namespace (lo never runs DAD).
    let added = Command::new("ip")
        .args([
            "link", "add", "dad0", "type", "veth", "peer", "name", "dad1",
        ])
        .status()
        .unwrap();
    assert!(added.success());
    for link in ["dad0", "dad1"] {
        assert!(
            Command::new("ip")
                .args(["link", "set", link, "up"])
                .status()
                .unwrap()
                .success()
        );
    }
    let status = Command::new("ip")
        .args(["-6", "addr", "add", "fd42:6e73::1/64", "dev", "dad0"])
        .status()
        .unwrap();
    assert!(status.success());
    let address: Ipv6Addr = "fd42:6e73::1".parse().unwrap();
    let start = std::time::Instant::now();
    while TcpListener::bind((address, 8080)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_millis(500),
            "still tentative after 500 ms: DAD ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[netns_test]
fn etc_hosts_is_a_private_copy() {
    let before = std::fs::read_to_string("/etc/hosts").unwrap();
    std::fs::write("/etc/hosts", format!("{before}198.18.0.7 private-name\n")).unwrap();
    assert!(
        std::fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("private-name")
    );
    // The host's file, seen through the main thread's root (in the host's
    // mount namespace), is untouched.
    let host = std::fs::read_to_string("/proc/self/root/etc/hosts").unwrap();
    assert_eq!(host.trim_end(), before.trim_end());
    assert!(!host.contains("private-name"));
}

#[test]
fn the_host_keeps_its_etc_hosts_and_sysctls() {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns = NetNs::new().unwrap();
    ns.run(|| std::fs::write("/etc/hosts", "198.18.0.9 changed\n").unwrap());
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(std::fs::read_to_string("/etc/hosts").unwrap(), hosts);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forward
    );
    let inside = ns.run(|| std::fs::read_to_string("/etc/hosts").unwrap());
    assert_eq!(inside, "198.18.0.9 changed\n");
}

#[netns_test]
fn every_thread_and_child_process_is_inside() {
    let ns = NetNs::current();
    let here = thread_netns();
    assert_eq!(here, format!("net:[{}]", ns.inode()));
    let from_thread = std::thread::spawn(|| (thread_netns(), NetNs::current()))
        .join()
        .unwrap();
    assert_eq!(from_thread.0, here);
    assert_eq!(from_thread.1, ns);
    let child = Command::new("readlink")
        .arg("/proc/self/ns/net")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&child.stdout).trim(), here);
    let child_sees = Command::new("ls").arg("/sys/class/net").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&child_sees.stdout).trim(), "lo");
}

#[netns_test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_workers_and_blocking_threads_are_inside() {
    let ns = NetNs::current();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async { (thread_netns(), NetNs::current()) }));
    }
    for task in tasks {
        let (netns, handle) = task.await.unwrap();
        assert_eq!(netns, format!("net:[{}]", ns.inode()));
        assert_eq!(handle, ns);
    }
    let blocking = tokio::task::spawn_blocking(|| NetNs::current())
        .await
        .unwrap();
    assert_eq!(blocking, ns);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:80").await.unwrap();
    let client = tokio::spawn(tokio::net::TcpStream::connect("127.0.0.1:80"));
    listener.accept().await.unwrap();
    client.await.unwrap().unwrap();
}

#[netns_test]
async fn async_tests_default_to_a_current_thread_runtime() {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
    assert_eq!(interfaces(), ["lo"]);
}

#[test]
#[should_panic(expected = "which netns-test did not create")]
fn current_panics_outside_a_namespace() {
    NetNs::current();
}

#[test]
fn try_current_is_none_outside() {
    assert!(NetNs::try_current().is_none());
}

#[test]
fn run_and_spawn_enter_the_namespace_from_the_host() {
    let ns = NetNs::new().unwrap();
    let inode = ns.inode();
    let (netns, names, handle) = ns.run(|| (thread_netns(), interfaces(), NetNs::current()));
    assert_eq!(netns, format!("net:[{inode}]"));
    assert_eq!(names, ["lo"]);
    assert_eq!(handle, ns);
    assert_eq!(ns.spawn(thread_netns).join().unwrap(), netns);
    // Back on the host thread, nothing changed.
    assert_eq!(thread_netns(), host_netns());
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(ns.run(|| std::env::current_dir().unwrap()), cwd);
}

#[test]
fn run_propagates_panics() {
    let ns = NetNs::new().unwrap();
    let panic = std::panic::catch_unwind(|| ns.run(|| panic!("inside the namespace"))).unwrap_err();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"inside the namespace"));
}

#[test]
fn command_enters_network_mounts_and_working_directory() {
    let ns = NetNs::new().unwrap();
    let netns = ns
        .command("readlink")
        .arg("/proc/self/ns/net")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&netns.stdout).trim(),
        format!("net:[{}]", ns.inode())
    );
    let sys = ns.command("ls").arg("/sys/class/net").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&sys.stdout).trim(), "lo");
    let pwd = ns.command("pwd").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pwd.stdout).trim(),
        std::env::current_dir().unwrap().to_str().unwrap()
    );
}

#[test]
fn path_works_with_nsenter() {
    let ns = NetNs::new().unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.net_path().display()))
        .args(["readlink", "/proc/self/ns/net"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("net:[{}]", ns.inode())
    );
}

#[netns_test]
fn sysctl_takes_dotted_and_path_forms_and_rejects_others() {
    let ns = NetNs::current();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    ns.sysctl("net/ipv6/conf/lo/forwarding", "1").unwrap();
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_owned();
    assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), "1");
    assert_eq!(read("/proc/sys/net/ipv6/conf/lo/forwarding"), "1");
    let error = ns.sysctl("kernel.hostname", "x").unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let missing = ns.sysctl("net.ipv4.no_such_key", "1").unwrap_err();
    assert!(
        missing.to_string().contains("net.ipv4.no_such_key"),
        "{missing}"
    );
}

#[netns_test]
fn result_tests_return_their_value() -> Result<(), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:80")?;
    assert_eq!(listener.local_addr()?.port(), 80);
    Ok(())
}

#[netns_test::test]
fn the_path_form_is_the_same_attribute() {
    assert_eq!(interfaces(), ["lo"]);
}

#[netns_test]
#[should_panic(expected = "the payload reaches libtest")]
fn should_panic_sees_the_payload() {
    panic!("the payload reaches libtest");
}

#[netns_test(timeout = "30s")]
#[should_panic(expected = "with a timeout too")]
fn should_panic_sees_the_payload_with_a_timeout() {
    assert_eq!(interfaces(), ["lo"]);
    panic!("with a timeout too");
}

#[netns_test(timeout = "30s")]
fn timeout_tests_run_inside_and_return_values() -> Result<(), String> {
    assert_eq!(interfaces(), ["lo"]);
    TcpListener::bind("127.0.0.1:80").map_err(|e| e.to_string())?;
    Ok(())
}

#[netns_test(timeout = "30s", flavor = "multi_thread")]
async fn async_timeout_tests_run_inside() {
    let ns = NetNs::current();
    let worker = tokio::spawn(async { NetNs::current() }).await.unwrap();
    assert_eq!(worker, ns);
}

#[netns_test]
#[ignore = "shows that #[ignore] is kept"]
fn ignored_tests_stay_ignored() {
    panic!("an ignored test ran");
}

#[test]
fn a_test_called_on_a_plain_thread_moves_it_back() {
    // Not the harness's thread for that test: netns-test must restore it.
    let before = thread_netns();
    let cwd = std::env::current_dir().unwrap();
    std::thread::spawn(move || {
        use std::os::unix::fs::MetadataExt;
        inner_test_body();
        assert_eq!(thread_netns(), before);
        assert_eq!(std::env::current_dir().unwrap(), cwd);
        // The same sysfs instance as the main thread's (the host's) view.
        let sysfs = |p: &str| std::fs::metadata(p).unwrap().dev();
        assert_eq!(
            sysfs("/sys/class/net"),
            sysfs("/proc/self/root/sys/class/net")
        );
        assert!(NetNs::try_current().is_none());
    })
    .join()
    .unwrap();
}

#[netns_test]
#[test]
#[ignore = "called by a_test_called_on_a_plain_thread_moves_it_back"]
fn inner_test_body() {
    assert_eq!(interfaces(), ["lo"]);
}

#[netns_test(capture = "all")]
#[ignore = "fixture"]
fn fixture_capture_cannot_start() {}

#[test]
fn a_failed_setup_takes_a_thread_that_goes_on_back_home() {
    if !netns_test::privileged() {
        println!("skipped: calls a netns test in this process, which needs root");
        return;
    }
    // A file where the capture directory goes: the setup fails after the
    // thread entered its fresh namespaces.
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    let blocker = target
        .join("netns-test")
        .join("fixture_capture_cannot_start");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "not a directory").unwrap();
    let mount_ns = || std::fs::read_link("/proc/thread-self/ns/mnt").unwrap();
    // A thread that is not the harness's own (a tokio worker, say) goes on
    // after the test.
    let (before, after, failed) = std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            let before = (thread_netns(), mount_ns());
            let failed = std::panic::catch_unwind(fixture_capture_cannot_start).is_err();
            (before, (thread_netns(), mount_ns()), failed)
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::remove_file(&blocker).unwrap();
    assert!(failed, "the setup did not fail");
    assert_eq!(
        after, before,
        "the thread was left in the test's namespaces"
    );
}

/// Every `#[netns_test]` of this file again, as uid 65534 in rootless mode
/// (when root): `/proc/net`, `/run/netns` and `ip netns` included. The
/// plain tests that make namespaces outside a test need root and are left
/// out.
#[test]
fn what_a_test_sees_rootless() {
    let mut args = vec!["--test-threads=2"];
    for root_only in [
        "what_a_test_sees_rootless",
        "two_hundred_tests_bind_the_same_port_at_once",
        "the_host_keeps_its_etc_hosts_and_sysctls",
        "run_and_spawn_enter_the_namespace_from_the_host",
        "run_propagates_panics",
        "command_enters_network_mounts_and_working_directory",
        "path_works_with_nsenter",
        "a_test_called_on_a_plain_thread_moves_it_back",
        "a_failed_setup_takes_a_thread_that_goes_on_back_home",
        "two_tests_add_the_same_name_at_once",
    ] {
        args.extend(["--skip", root_only]);
    }
    common::rerun(&args, common::Rerun::AsNobody, "20 passed");
}
