//! Nothing is left behind: after many netns tests (some panicking), after a
//! test process killed with SIGKILL mid-test, the host has the same links,
//! `/run/netns` entries, mounts and temporary files, and this process the
//! same open file descriptors. One test in this binary, so that nothing
//! else opens files meanwhile.

use netns_test::{NetNs, netns_test};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOST_VETH_PREFIX: &str = "ntveth";

/// Our host-side veth interfaces that still exist.
fn our_veths_left() -> Vec<String> {
    OUR_VETHS
        .lock()
        .unwrap()
        .iter()
        .filter(|name| std::path::Path::new("/sys/class/net").join(name).exists())
        .cloned()
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct HostState {
    links: Vec<String>,
    addresses: Vec<String>,
    routes: Vec<String>,
    named_namespaces: Vec<String>,
    mounts: Vec<String>,
    scratch_files: Vec<String>,
}

fn sorted_names(dir: &str, filter: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| filter(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Host-side veth names this test's fixtures used.
static OUR_VETHS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_veth() {
    let name = NetNs::current().veth().unwrap().host_name().to_owned();
    OUR_VETHS.lock().unwrap().push(name);
}

/// The host's state, less other test processes' veth pairs (cargo-nextest
/// runs other test binaries at the same time); ours are checked by name.
fn host_state() -> HostState {
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .map(|line| {
            // mount point and filesystem type
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-").unwrap();
            format!("{} {}", fields[4], fields[dash + 1])
        })
        .collect();
    mounts.sort();
    // Every file in /dev/shm, and ours in the temporary directory.
    let mut scratch_files = sorted_names("/dev/shm", |_| true);
    scratch_files.extend(sorted_names(std::env::temp_dir().to_str().unwrap(), |n| {
        n.starts_with(".netns-test-")
    }));
    let not_a_veth = |line: &str| !line.contains(HOST_VETH_PREFIX);
    let sorted_lines = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|line| not_a_veth(line))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    HostState {
        links: sorted_names("/sys/class/net", not_a_veth),
        addresses: sorted_lines(&["-o", "addr", "show"]),
        routes: sorted_lines(&["route", "show", "table", "all"]),
        named_namespaces: sorted_names("/run/netns", |_| true),
        mounts,
        scratch_files,
    }
}

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect();
    fds.sort();
    fds
}

/// Polls `check` until it holds, for at most `limit`: the kernel tears
/// namespaces down asynchronously.
fn settles(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[netns_test]
#[test]
#[ignore = "run by host_is_left_as_it_was"]
fn fixture_binds_and_maybe_panics() {
    let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    std::fs::write("/etc/hosts", "198.18.0.1 changed\n").unwrap();
    let ns = NetNs::current();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let child = ns.command("true").status().unwrap();
    assert!(child.success());
    drop(listener);
    if std::env::var_os("NETNS_TEST_FIXTURES").is_some() || rand_bit() {
        panic!("a deliberate panic");
    }
}

fn rand_bit() -> bool {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 2
        == 0
}

#[netns_test(veth)]
#[test]
#[ignore = "run by host_is_left_as_it_was"]
fn fixture_veth_maybe_panics() {
    record_veth();
    let veth = NetNs::current().veth().unwrap().clone();
    std::net::TcpListener::bind((veth.ns_ipv4(), 80)).unwrap();
    if std::env::var_os("NETNS_TEST_FIXTURES").is_some() || rand_bit() {
        panic!("a deliberate panic");
    }
}

// 500 ms: long enough for the body to start (and record its veth) on a
// loaded machine, far shorter than its 3 s sleep.
#[netns_test(veth, timeout = "500ms")]
#[test]
#[ignore = "run by host_is_left_as_it_was"]
fn fixture_veth_times_out() {
    record_veth();
    std::thread::sleep(Duration::from_secs(3));
}

#[netns_test(veth)]
#[ignore = "run by host_is_left_as_it_was"]
fn fixture_sleeps() {
    // A topology whose link goes through the fault engine, killed with the rest.
    let net = netns_test::Network::new();
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    link.impair(
        netns_test::Impairment::new()
            .delay(Duration::from_millis(5))
            .loss(1.0),
    )
    .unwrap();
    println!("READY {}", NetNs::current().veth().unwrap().host_name());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
#[ignore = "run by host_is_left_as_it_was"]
fn fixture_churns() {
    println!("READY");
    for _ in 0..100_000 {
        let ns = NetNs::new().unwrap();
        ns.run(|| std::fs::read_to_string("/etc/hosts").unwrap());
    }
}

#[test]
fn host_is_left_as_it_was() {
    let before = host_state();
    // Settle this process's lazily opened files (registries, caches, the
    // veth leases' directory) first.
    let _ = std::panic::catch_unwind(fixture_binds_and_maybe_panics);
    let _ = std::panic::catch_unwind(fixture_veth_maybe_panics);
    let fds_before = open_fds();

    // 1. Many tests in this process, in parallel, some panicking.
    let panicked: usize = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                (0..25)
                    .filter(|_| std::panic::catch_unwind(fixture_binds_and_maybe_panics).is_err())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert!(panicked > 0 && panicked < 100, "{panicked} of 100 panicked");
    for _ in 0..10 {
        let ns = NetNs::new().unwrap();
        ns.run(|| std::net::TcpListener::bind("127.0.0.1:80").unwrap());
    }
    // Topologies, with NAT rules and impairments, some dropped by a panic.
    for round in 0..6 {
        let built = std::panic::catch_unwind(move || {
            let net = netns_test::Network::new();
            let a = net.node("a").unwrap();
            let r = net.router("r").unwrap();
            let b = net.node("b").unwrap();
            let lan = net.switch("lan").unwrap();
            net.attach(&a, &lan).unwrap();
            net.attach(&r, &lan).unwrap();
            let out = net.link(&r, &b).unwrap();
            r.masquerade(&out).unwrap();
            out.impair(netns_test::Impairment::new().rate_kbit(1000).loss(1.0))
                .unwrap();
            // One direction through the engine, a schedule on the switch port.
            out.impair_from(
                &b,
                netns_test::Impairment::new().delay(Duration::from_millis(1)),
            )
            .unwrap();
            let port = net.attach(&b, &lan).unwrap();
            port.schedule(
                netns_test::Schedule::new()
                    .then(
                        Duration::from_millis(5),
                        netns_test::Impairment::new().loss(100.0),
                    )
                    .then(Duration::from_millis(5), netns_test::Impairment::new())
                    .repeat(),
            )
            .unwrap();
            if round % 2 == 0 {
                panic!("a deliberate panic");
            }
        });
        assert_eq!(built.is_err(), round % 2 == 0);
    }
    // Veth tests: 500, some panicking, 4 timing out (their threads sleep on).
    let veth_panics: usize = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let timed_out = std::panic::catch_unwind(fixture_veth_times_out).is_err();
                assert!(timed_out);
                (0..124)
                    .filter(|_| std::panic::catch_unwind(fixture_veth_maybe_panics).is_err())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert!(
        veth_panics > 0 && veth_panics < 496,
        "{veth_panics} of 496 panicked"
    );
    // The timed-out bodies end after 3 s; until then they hold their
    // namespaces (not their veth pairs, which were deleted at the timeout).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        settles(Duration::from_secs(5), || open_fds() == fds_before),
        "file descriptors left open:\nbefore {fds_before:#?}\nafter {:#?}",
        open_fds()
    );
    assert!(
        settles(Duration::from_secs(5), || host_state() == before),
        "host changed:\nbefore {before:#?}\nafter {:#?}",
        host_state()
    );
    // 500, and the one of the run that settled this process's files.
    assert_eq!(OUR_VETHS.lock().unwrap().len(), 501);
    assert!(
        settles(Duration::from_secs(5), || our_veths_left().is_empty()),
        "veth pairs left on the host: {:?}",
        our_veths_left()
    );

    // 2. Test processes, with panics, through the harness.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "fixture_binds_and_maybe_panics",
            "-q",
        ])
        .env("NETNS_TEST_FIXTURES", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the fixture panics when armed");

    // 3. A test process killed with SIGKILL in the middle of a test.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "fixture_sleeps", "--nocapture"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let veth = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.trim().strip_prefix("READY ").map(str::to_owned))
        .expect("the fixture did not start");
    assert!(std::path::Path::new("/sys/class/net").join(&veth).exists());
    OUR_VETHS.lock().unwrap().push(veth);
    child.kill().unwrap();
    child.wait().unwrap();

    // 4. Processes creating namespaces back to back, killed at random moments.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut delays = Vec::new();
    for _ in 0..10 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros(2_000 + (seed >> 33) % 30_000);
        delays.push(delay);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "fixture_churns", "--nocapture"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == "READY");
        assert!(ready, "the churn fixture did not start");
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    assert!(
        settles(Duration::from_secs(5), || our_veths_left().is_empty()),
        "veth pairs left on the host: {:?}",
        our_veths_left()
    );
    assert!(
        settles(Duration::from_secs(5), || host_state() == before),
        "host changed after the test processes (kills after {delays:?}):\nbefore {before:#?}\nafter {:#?}",
        host_state()
    );
}
