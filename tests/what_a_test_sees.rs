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
    // /proc/net is the main thread's view; this thread's is under thread-self.
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    assert_eq!(dev.lines().skip(2).count(), 1, "{dev}");
    assert_ne!(thread_netns(), host_netns());
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
