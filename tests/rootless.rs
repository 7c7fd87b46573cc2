//! Rootless mode for real: when run as root, the drivers copy this test
//! binary where an ordinary user can run it and run its fixtures as uid
//! 65534, or as root with a user-namespace limit of 0, and check what they
//! report. Fixtures are `#[ignore]`d and inert unless `NETNS_TEST_FIXTURES=1`.

mod common;

use common::{Copy, NOBODY, interfaces, retry_busy, text};
use netns_test::{NetNs, netns_test};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// The drivers that keep namespaces share uid 65534's notes directory and
/// its holders.
static KEEPING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn armed() -> bool {
    std::env::var_os("NETNS_TEST_FIXTURES").is_some()
}

/// Whether this process can run fixtures as another user (it is root);
/// says the test is skipped when not.
fn can_switch_users() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipped: switching to an ordinary user needs root");
    }
    root
}

/// Runs fixtures as an ordinary user; `None` when this process cannot switch users.
fn as_nobody(filter: &[&str]) -> Option<(Output, String)> {
    as_nobody_with(&[], filter)
}

/// [`as_nobody`] with more environment variables.
fn as_nobody_with(env: &[(&str, &str)], filter: &[&str]) -> Option<(Output, String)> {
    if !can_switch_users() {
        return None;
    }
    let copy = Copy::new();
    let mut args = vec!["--ignored", "--test-threads=2"];
    args.extend_from_slice(filter);
    let output = retry_busy(|| {
        copy.command(&args)
            .envs(env.iter().copied())
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
    });
    let text = text(&output);
    Some((output, text))
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_sync_sees_its_namespace() {
    if !armed() {
        return;
    }
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "uid 0 inside");
    assert_eq!(interfaces(), ["lo"]);
    std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    std::net::TcpListener::bind("[::1]:80").unwrap();
    let dad = std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/accept_dad").unwrap();
    assert_eq!(dad.trim(), "0");
    std::fs::write("/etc/hosts", "198.18.0.1 private\n").unwrap();
    let ns = NetNs::current();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let child = Command::new("readlink")
        .arg("/proc/self/ns/net")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&child.stdout).trim(),
        format!("net:[{}]", ns.inode())
    );
    let from_thread = std::thread::spawn(NetNs::current).join().unwrap();
    assert_eq!(from_thread, ns);
    println!("REPORT sync ok");
}

#[netns_test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fixture"]
async fn fixture_async_sees_its_namespace() {
    if !armed() {
        return;
    }
    let ns = NetNs::current();
    let worker = tokio::spawn(async { NetNs::current() }).await.unwrap();
    assert_eq!(worker, ns);
    tokio::net::TcpListener::bind("127.0.0.1:80").await.unwrap();
    println!("REPORT async ok");
}

#[test]
#[ignore = "fixture"]
fn fixture_plain_test_is_untouched() {
    if !armed() {
        return;
    }
    let main_thread = std::fs::read_link("/proc/self/ns/net").unwrap();
    let this_thread = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(nix::unistd::geteuid().as_raw(), 65534, "the real uid");
    assert_eq!(this_thread, main_thread, "the host's network namespace");
}

/// A rootless test runs as pid 1 of a pid namespace of its own: `/proc`
/// shows that namespace, so the ids the test and its children know
/// themselves by are the ones `/proc` knows them by.
#[netns_test]
#[ignore = "fixture"]
fn fixture_pids_are_the_ones_proc_shows() {
    if !armed() {
        return;
    }
    let me = std::process::id();
    assert_eq!(
        std::fs::read_link("/proc/self").unwrap(),
        std::path::Path::new(&me.to_string()),
        "/proc/self"
    );
    let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
    assert!(status.contains(&format!("\nPid:\t{me}\n")), "{status}");
    assert_eq!(comm.trim(), "tests", "/proc/{me} is this test binary");
    let thread = nix::unistd::gettid();
    assert_eq!(
        std::fs::read_link("/proc/thread-self").unwrap(),
        std::path::Path::new(&format!("{me}/task/{thread}")),
    );
    // A child, by the id its handle gives.
    // (Its command line shows once its exec has set it up, a moment after
    // `spawn` returns.)
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let started = std::time::Instant::now();
    let cmdline = loop {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
        if !cmdline.is_empty() || started.elapsed() > std::time::Duration::from_secs(10) {
            break cmdline;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert_eq!(cmdline, b"sleep\x0030\x00", "/proc/<child.id()>");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    assert!(status.contains(&format!("\nPPid:\t{me}\n")), "{status}");
    child.kill().unwrap();
    child.wait().unwrap();
    // A child's own id (`$$`), as /proc shows it.
    let shell = Command::new("sh")
        .args(["-c", "echo $$; cat /proc/$$/comm; readlink /proc/self"])
        .output()
        .unwrap();
    let shell = String::from_utf8(shell.stdout).unwrap();
    let lines: Vec<&str> = shell.lines().collect();
    assert_eq!(lines.len(), 3, "{shell}");
    assert_eq!(lines[1], "sh", "{shell}");
    assert_ne!(
        lines[2], lines[0],
        "readlink is a child of the shell: {shell}"
    );
    // `/proc/net` still shows the test's network namespace.
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "{dev}");
    println!("REPORT pids ok");
}

#[netns_test(veth)]
#[ignore = "fixture"]
fn fixture_veth() {}

#[netns_test]
#[should_panic(expected = "expected message")]
#[ignore = "fixture"]
fn fixture_should_panic() {
    panic!("the expected message");
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_panics() {
    if armed() {
        panic!("a panic in a user namespace");
    }
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_returns_an_error() -> Result<(), String> {
    if armed() {
        return Err("an error value in a user namespace".into());
    }
    Ok(())
}

#[netns_test(timeout = "300ms")]
#[ignore = "fixture"]
fn fixture_hangs() {
    if armed() {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_sleeps() {
    if armed() {
        println!("READY");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_prints() {
    println!("CAPTURED-LINE from the body");
}

#[test]
fn netns_tests_run_for_an_ordinary_user() {
    let Some((output, text)) = as_nobody(&[
        "fixture_",
        "--skip",
        "fixture_veth",
        "--skip",
        "fixture_panics",
        "--skip",
        "fixture_returns",
        "--skip",
        "fixture_hangs",
        "--skip",
        "fixture_sleeps",
        "--skip",
        "fixture_kept",
        "--skip",
        "fixture_environment",
    ]) else {
        return;
    };
    assert!(output.status.success(), "{text}");
    assert!(text.contains("6 passed"), "{text}");
    // Passing tests' output stays captured, as with any test.
    assert!(!text.contains("REPORT sync ok"), "{text}");
    assert!(!text.contains("CAPTURED-LINE"), "{text}");
}

/// Without the fork server (`NETNS_TEST_FORK_SERVER=off`, as when its
/// constructor did not run), each test runs in the test binary started
/// again for it: the same passes, failures and timeouts.
#[test]
fn without_the_fork_server_tests_run_the_same() {
    let off = [("NETNS_TEST_FORK_SERVER", "off")];
    let Some((output, text)) = as_nobody_with(
        &off,
        &[
            "fixture_",
            "--skip",
            "fixture_veth",
            "--skip",
            "fixture_sleeps",
            "--skip",
            "fixture_kept",
            "--skip",
            "fixture_environment",
        ],
    ) else {
        return;
    };
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("6 passed; 3 failed"), "{text}");
    assert!(text.contains("a panic in a user namespace"), "{text}");
    assert!(
        text.contains("an error value in a user namespace"),
        "{text}"
    );
    assert!(text.contains("timed out after 300 ms"), "{text}");
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_environment_inner() {
    if armed() {
        assert_eq!(
            std::env::var("NETNS_TEST_FIXTURE_VALUE").as_deref(),
            Ok("set at run time")
        );
        assert_eq!(
            std::env::current_dir().unwrap(),
            std::path::Path::new("/tmp")
        );
        println!("REPORT environment seen");
    }
}

/// A plain test that changes the test process's environment and working
/// directory, then runs a netns test, which sees both.
#[test]
#[ignore = "fixture"]
fn fixture_environment_set_at_run_time() {
    if !armed() {
        return;
    }
    // SAFETY: the driver runs this fixture alone, on one test thread, and
    // nothing else in the process reads the environment meanwhile.
    unsafe { std::env::set_var("NETNS_TEST_FIXTURE_VALUE", "set at run time") };
    std::env::set_current_dir("/tmp").unwrap();
    fixture_environment_inner();
}

#[test]
fn a_test_sees_the_environment_and_directory_of_the_moment() {
    let Some((status, text, _)) = relay_case("fixture_environment_set_at_run_time") else {
        return;
    };
    assert!(status.success(), "{text}");
    assert!(text.contains("REPORT environment seen"), "{text}");
}

/// As cargo-nextest runs tests, one per process: a process whose one test
/// is a netns test moves itself into a user namespace of its own and runs
/// it, with no fork server; a plain test's process starts nothing and
/// stays as it was.
#[test]
fn under_cargo_nextest_a_test_process_runs_its_one_test() {
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    let one = |name: &str| {
        let mut command = copy.command(&["--ignored", "--exact", name, "--nocapture"]);
        command
            .env("NEXTEST_EXECUTION_MODE", "process-per-test")
            .uid(NOBODY)
            .gid(NOBODY);
        command
    };
    for (name, report) in [
        ("fixture_sync_sees_its_namespace", "REPORT sync ok"),
        ("fixture_async_sees_its_namespace", "REPORT async ok"),
        ("fixture_pids_are_the_ones_proc_shows", "REPORT pids ok"),
        ("fixture_plain_test_is_untouched", ""),
        ("fixture_should_panic", ""),
    ] {
        let output = retry_busy(|| one(name).output());
        let text = text(&output);
        assert!(output.status.success(), "{name}: {text}");
        assert!(text.contains(report), "{name}: {text}");
    }
    for (name, failure) in [
        ("fixture_panics", "a panic in a user namespace"),
        ("fixture_hangs", "timed out after 300 ms"),
        ("fixture_veth", "needs real root"),
    ] {
        let output = retry_busy(|| one(name).output());
        let text = text(&output);
        assert!(!output.status.success(), "{name}: {text}");
        assert!(text.contains(failure), "{name}: {text}");
    }
    // One process, in a user namespace of its own; gone when killed.
    let mut child = retry_busy(|| {
        one("fixture_sleeps")
            .stdout(std::process::Stdio::piped())
            .spawn()
    });
    use std::io::BufRead;
    let ready = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == "READY");
    assert!(ready, "the fixture did not start");
    let pattern = copy.dir.path().join("tests");
    let running = || {
        let out = Command::new("pgrep")
            .args(["-f", pattern.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // The process nextest started (the shim), the maker of the pid
    // namespace, and the same test process as pid 1 of it, where all it
    // starts is.
    let pids = running();
    assert_eq!(pids.len(), 3, "{pids:?}");
    for pid in &pids {
        let own = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
        assert_ne!(own, std::fs::read_link("/proc/self/ns/user").unwrap());
    }
    let pid_namespaces: std::collections::HashSet<_> = pids
        .iter()
        .map(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid_for_children")).unwrap())
        .collect();
    assert_eq!(pid_namespaces.len(), 2, "the shim's, and the test's own");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running().is_empty());
}

#[test]
fn output_reaches_the_harness_like_any_tests() {
    let Some((output, text)) = as_nobody(&["fixture_sync_sees", "fixture_prints", "--nocapture"])
    else {
        return;
    };
    assert!(output.status.success(), "{text}");
    assert!(text.contains("REPORT sync ok"), "{text}");
    assert!(text.contains("CAPTURED-LINE from the body"), "{text}");
    assert!(!text.contains("netns-test:begin"), "{text}");
}

#[test]
fn failures_and_timeouts_fail_with_their_message() {
    let Some((output, text)) = as_nobody(&[
        "fixture_panics",
        "fixture_returns_an_error",
        "fixture_hangs",
    ]) else {
        return;
    };
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("3 failed"), "{text}");
    assert!(text.contains("a panic in a user namespace"), "{text}");
    assert!(
        text.contains("an error value in a user namespace"),
        "{text}"
    );
    assert!(text.contains("timed out after 300 ms"), "{text}");
    // The timed-out test was killed: no process of this run is left (its
    // fork server and runners end with it; other drivers run their own
    // copies at the same time).
    let pattern = "netns-test-rootless-.*/tests --ignored --test-threads=2 fixture_panics fixture_returns_an_error fixture_hangs";
    let left = || {
        let found = Command::new("pgrep")
            .args(["-u", "65534", "-f", pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&found.stdout).into_owned()
    };
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        left().is_empty()
    });
    assert!(gone, "left running: {}", left());
}

// The relay of a rootless test's output and result. (Named apart from the
// `fixture_` ones, which other drivers run by that prefix.)

#[netns_test]
#[ignore = "fixture"]
fn relay_case_bytes_that_are_not_utf8() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(b"before \xff\xfe after\n").unwrap();
    out.flush().unwrap();
    println!("REPORT after the bytes");
}

#[netns_test]
#[ignore = "fixture"]
fn relay_case_background_process() {
    // Holds the test's stdout and stderr, and would outlive it.
    let sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    std::mem::forget(sleeper);
    println!("REPORT started");
}

#[netns_test]
#[ignore = "fixture"]
fn relay_case_spoofed_result() {
    println!("\u{1e}netns-test:result passed ");
    println!("\u{1e}netns-test:end");
    eprintln!("\u{1e}netns-test:end");
    println!("passed ");
    panic!("the spoof did not pass");
}

#[netns_test(timeout = "500ms")]
#[ignore = "fixture"]
fn relay_case_background_process_and_timeout() {
    let sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    std::mem::forget(sleeper);
    std::thread::sleep(std::time::Duration::from_secs(60));
}

/// Runs one relay case as uid 65534 with its output in a file, killing it
/// after 30 s: `None` when this process cannot switch users.
fn relay_case(name: &str) -> Option<(std::process::ExitStatus, String, std::time::Duration)> {
    if !can_switch_users() {
        return None;
    }
    let copy = Copy::new();
    let log = copy.dir.path().join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let start = std::time::Instant::now();
    let mut child = retry_busy(|| {
        copy.command(&["--ignored", "--exact", name, "--nocapture"])
            .stdout(file.try_clone().unwrap())
            .stderr(file.try_clone().unwrap())
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let took = start.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Some((status, text, took))
}

fn sleepers_of_nobody() -> String {
    let found = Command::new("pgrep")
        .args(["-u", "65534", "-f", "^sleep 1000$"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&found.stdout).into_owned()
}

#[test]
fn output_that_is_not_utf8_is_relayed_and_the_test_passes() {
    let Some((status, text, _)) = relay_case("relay_case_bytes_that_are_not_utf8") else {
        return;
    };
    assert!(status.success(), "{text}");
    assert!(text.contains("before") && text.contains(" after"), "{text}");
    assert!(text.contains("REPORT after the bytes"), "{text}");
}

#[test]
fn a_process_left_running_ends_with_the_test() {
    let Some((status, text, took)) = relay_case("relay_case_background_process") else {
        return;
    };
    assert!(status.success(), "{text}");
    assert!(
        took < std::time::Duration::from_secs(20),
        "took {took:?}: {text}"
    );
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        sleepers_of_nobody().is_empty()
    });
    assert!(gone, "left running: {}", sleepers_of_nobody());
    let Some((status, text, took)) = relay_case("relay_case_background_process_and_timeout") else {
        return;
    };
    assert!(!status.success(), "{text}");
    assert!(text.contains("timed out after 500 ms"), "{text}");
    assert!(
        took < std::time::Duration::from_secs(20),
        "took {took:?}: {text}"
    );
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        sleepers_of_nobody().is_empty()
    });
    assert!(gone, "left running: {}", sleepers_of_nobody());
}

#[test]
fn the_body_cannot_spoof_the_result() {
    let Some((status, text, _)) = relay_case("relay_case_spoofed_result") else {
        return;
    };
    assert!(!status.success(), "{text}");
    assert!(text.contains("the spoof did not pass"), "{text}");
}

#[test]
fn veth_is_refused_with_a_reason() {
    let Some((output, text)) = as_nobody(&["fixture_veth"]) else {
        return;
    };
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("needs real root"), "{text}");
    assert!(text.contains("link namespaces to each other"), "{text}");
}

/// As root, but in a user namespace whose `user.max_user_namespaces` is 0,
/// with rootless mode forced: the kernel refuses the test's user namespace.
fn with_no_user_namespaces_left(skip: bool) -> Option<(Output, String)> {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to set up the refusal");
        return None;
    }
    let copy = Copy::new();
    let mut command = copy.command(&["--ignored", "--exact", "fixture_sync_sees_its_namespace"]);
    command.env("NETNS_TEST_MODE", "rootless");
    if skip {
        command.env("NETNS_TEST_UNSUPPORTED", "skip");
    }
    // SAFETY: unshare, open, write and close only, on static data.
    unsafe {
        command.pre_exec(|| {
            if nix::libc::unshare(nix::libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (path, data) in [
                (c"/proc/self/uid_map", &b"0 0 1\n"[..]),
                (c"/proc/self/setgroups", b"deny"),
                (c"/proc/self/gid_map", b"0 0 1\n"),
                (c"/proc/sys/user/max_user_namespaces", b"0\n"),
            ] {
                let fd = nix::libc::open(path.as_ptr(), nix::libc::O_WRONLY);
                if fd < 0 || nix::libc::write(fd, data.as_ptr().cast(), data.len()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::libc::close(fd);
            }
            Ok(())
        });
    }
    let output = retry_busy(|| command.output());
    let text = text(&output);
    Some((output, text))
}

#[test]
fn a_kernel_refusal_names_the_setting() {
    let Some((output, text)) = with_no_user_namespaces_left(false) else {
        return;
    };
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("user.max_user_namespaces"), "{text}");
    assert!(text.contains("NETNS_TEST_UNSUPPORTED=skip"), "{text}");
}

#[test]
fn unsupported_skip_passes_with_one_line() {
    let Some((output, text)) = with_no_user_namespaces_left(true) else {
        return;
    };
    assert!(output.status.success(), "{text}");
    assert_eq!(text.matches("skipped: ").count(), 1, "{text}");
    assert!(!text.contains("REPORT sync ok"), "{text}");
}

#[test]
fn a_killed_test_process_leaves_no_process() {
    use std::io::{BufRead, BufReader};
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    let mut child = retry_busy(|| {
        copy.command(&["--ignored", "--exact", "fixture_sleeps", "--nocapture"])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::piped())
            .spawn()
    });
    let ready = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == "READY");
    assert!(ready, "the fixture did not start");
    let pattern = copy.dir.path().join("tests");
    let count = || {
        let out = Command::new("pgrep")
            .args(["-f", pattern.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(
        count(),
        8,
        "the test process, its fork server, the test's runner and the one forked ahead for the next test, \
         each a shim, the maker of its pid namespace and the process it contains"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let start = std::time::Instant::now();
    while count() > 0 && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(count(), 0, "a process outlived the killed test process");
}

#[netns_test(keep = "failed")]
#[ignore = "fixture"]
fn fixture_kept_rootless() {
    // Two topology nodes, kept along with the test's own namespace.
    let net = netns_test::Network::new();
    let peer = net.node("peer").unwrap();
    let other = net.node("other").unwrap();
    net.link(&peer, &other).unwrap();
    if armed() {
        panic!("failing on purpose, rootless");
    }
}

#[netns_test(keep = "failed")]
#[ignore = "fixture"]
fn fixture_kept_out_of_descriptors() {
    if armed() {
        // The test's handle, made before: keeping needs no new one.
        let _ns = NetNs::current();
        // Every descriptor in use, as when a test fails by leaking them.
        let limit =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let mut open = 0;
        while let Ok(file) = std::fs::File::open("/dev/null") {
            // Leaked: still in use when the test's teardown runs.
            std::mem::forget(file);
            open += 1;
            assert!(open < 100_000, "no limit in sight ({limit:?})");
        }
        panic!("failing on purpose, out of descriptors");
    }
}

/// Runs `name` as uid 65534 with no XDG_RUNTIME_DIR, and its output, once
/// the processes of the run (its fork server and runners, killed when the
/// test process ends) are gone, all but holders.
fn kept_case(copy: &Copy, name: &str) -> (Output, String) {
    let output = retry_busy(|| {
        copy.command(&["--ignored", "--exact", name])
            .env_remove("XDG_RUNTIME_DIR")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
    });
    let report = text(&output);
    let only_holders = || {
        holders_of_nobody(copy)
            .lines()
            .all(|stat| stat.contains("(ntkeep-"))
    };
    let settled = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        only_holders()
    });
    assert!(settled, "left running: {}", holders_of_nobody(copy));
    (output, report)
}

/// The live processes of uid 65534 that are holders (`ntkeep-<cookie>`) or
/// run from `copy` (a holder is a fork of the test binary), zombies left out.
fn holders_of_nobody(copy: &Copy) -> String {
    let mut found = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let from_copy =
            String::from_utf8_lossy(&cmdline).contains(copy.dir.path().to_str().unwrap());
        let owner = entry
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        let live = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        if owner.is_ok_and(|o| o == NOBODY) && live && (stat.contains("(ntkeep-") || from_copy) {
            found.push_str(&stat);
        }
    }
    found
}

#[test]
fn keeping_out_of_descriptors_fails_and_leaves_no_holder() {
    if !can_switch_users() {
        return;
    }
    let _keeping = KEEPING.lock().unwrap_or_else(|p| p.into_inner());
    let copy = Copy::new();
    let (output, report) = kept_case(&copy, "fixture_kept_out_of_descriptors");
    assert!(!output.status.success(), "{report}");
    assert!(
        report.contains("failing on purpose, out of descriptors"),
        "{report}"
    );
    assert!(report.contains("cannot keep"), "{report}");
    let left = holders_of_nobody(&copy);
    for pid in left.lines().filter_map(|l| l.split(' ').next()) {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    assert_eq!(left, "", "{report}");
    let _ = std::fs::remove_dir_all("/tmp/netns-test-65534");
}

#[test]
fn a_notes_directory_another_user_made_is_not_used() {
    if !can_switch_users() {
        return;
    }
    let _keeping = KEEPING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::path::Path::new("/tmp/netns-test-65534");
    if dir.exists() {
        println!("skipped: {} exists already", dir.display());
        return;
    }
    // Another user (65533) makes the directory first, open to all, with a
    // link to a file of the victim's under every name it can think of.
    let victim = tempfile::Builder::new()
        .prefix("netns-test-victim-")
        .tempdir()
        .unwrap();
    let target = victim.path().join("authorized_keys");
    std::fs::write(&target, "the victim's key\n").unwrap();
    std::fs::set_permissions(
        victim.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let planted = Command::new("sh")
        .args([
            "-c",
            &format!(
                "mkdir -p {dir}/kept && chmod -R 777 {dir} && ln -s {target} {dir}/kept/planted",
                dir = dir.display(),
                target = target.display()
            ),
        ])
        .uid(65533)
        .gid(65533)
        .status()
        .unwrap();
    let copy = Copy::new();
    let (output, report) = kept_case(&copy, "fixture_kept_rootless");
    let notes: Vec<_> = std::fs::read_dir(dir.join("kept"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let holders = holders_of_nobody(&copy);
    std::fs::remove_dir_all(dir).unwrap();
    assert!(planted.success());
    assert!(!output.status.success(), "{report}");
    assert!(
        report.contains("is not a directory of this user's alone"),
        "{report}"
    );
    assert_eq!(
        notes,
        ["planted"],
        "a note went into the other user's directory"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "the victim's key\n"
    );
    assert_eq!(holders, "", "a holder was left");
}

#[test]
fn a_failed_rootless_test_is_kept_by_a_holder_until_gc() {
    if !can_switch_users() {
        return;
    }
    let _keeping = KEEPING.lock().unwrap_or_else(|p| p.into_inner());
    let copy = Copy::new();
    let tool = copy.dir.path().join("netns-test");
    std::fs::copy(common::netns_test_binary(), &tool).unwrap();
    let as_nobody = |program: &std::path::Path, args: &[&str]| {
        let output = retry_busy(|| {
            Command::new(program)
                .args(args)
                .current_dir(copy.dir.path())
                .env_remove("XDG_RUNTIME_DIR")
                .uid(NOBODY)
                .gid(NOBODY)
                .output()
        });
        text(&output)
    };
    let output = retry_busy(|| {
        copy.command(&["--ignored", "--exact", "fixture_kept_rootless"])
            .env_remove("XDG_RUNTIME_DIR")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
    });
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert!(report.contains("held by process"), "{report}");
    let enter = report
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("nsenter -t ") && l.contains(" -n -m "))
        .unwrap_or_else(|| panic!("no nsenter line in {report}"))
        .to_owned();
    let pid: i32 = enter.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The holder holds the namespaces and nothing else: /dev/null for its
    // standard streams, the two nodes' namespaces, no pipe, no socket.
    // (It closes the pipe it was told to stay on right after the word.)
    let held = || {
        let mut held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| {
                std::fs::read_link(e.unwrap().path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        held.sort();
        held
    };
    let only_namespaces = |held: &[String]| {
        held.len() == 5
            && held[..3].iter().all(|l| l == "/dev/null")
            && held[3..].iter().all(|l| l.starts_with("net:["))
    };
    let settled = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        only_namespaces(&held())
    });
    assert!(settled, "{:?}", held());
    // Entered as the same ordinary user: the test's namespace, lo only.
    let args: Vec<&str> = enter
        .trim_end_matches(" bash")
        .split_whitespace()
        .skip(1)
        .collect();
    let mut inside = args.clone();
    inside.extend(["cat", "/proc/net/dev"]);
    let devices = as_nobody(std::path::Path::new("nsenter"), &inside);
    assert!(
        devices.contains("lo:") && !devices.contains("eth0"),
        "{devices}"
    );
    // The two nodes are kept as well, entered by their descriptor.
    let node_lines = report
        .lines()
        .filter(|l| l.contains("--net=/proc/"))
        .count();
    assert_eq!(node_lines, 2, "{report}");
    let listed = as_nobody(&tool, &["list"]);
    assert!(listed.contains("fixture_kept_rootless"), "{listed}");
    as_nobody(&tool, &["gc"]);
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert!(gone, "the holder {pid} outlived gc");
    assert!(as_nobody(&tool, &["list"]).contains("no kept namespaces"));
    assert!(!std::path::Path::new("/tmp/netns-test-65534").exists());
}

// Nothing a rootless test starts outlives it: not a process in a session
// of its own, not after a signal to the test binary's process group, not
// without the fork server; no zombie of the run's own processes; no thread
// of one test printing into the next one's output. (Sleeps of their own
// lengths, which other drivers do not use.)

#[netns_test]
#[ignore = "fixture"]
fn escape_case_sessions_of_their_own() {
    // `setsid` the program, and a forked child that calls setsid(2).
    let program = Command::new("setsid")
        .args(["sleep", "311"])
        .spawn()
        .unwrap();
    let mut forked = Command::new("sleep");
    forked.arg("312");
    // SAFETY: setsid only.
    unsafe {
        forked.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let forked = forked.spawn().unwrap();
    std::mem::forget((program, forked));
    // Time for `setsid` to make its session.
    std::thread::sleep(std::time::Duration::from_millis(100));
    println!("REPORT started");
}

#[netns_test]
#[ignore = "fixture"]
fn escape_case_waits_for_a_signal() {
    let child = Command::new("sleep").arg("313").spawn().unwrap();
    let own_session = Command::new("setsid")
        .args(["sleep", "314"])
        .spawn()
        .unwrap();
    std::mem::forget((child, own_session));
    // Time for `setsid` to make its session.
    std::thread::sleep(std::time::Duration::from_millis(100));
    println!("READY");
    std::thread::sleep(std::time::Duration::from_secs(60));
}

/// The `sleep N` processes of uid 65534 whose N matches `pattern`: one
/// `pgrep -a` line each.
fn sleeps_of_nobody(pattern: &str) -> String {
    let found = Command::new("pgrep")
        .args(["-a", "-u", "65534", "-f", &format!("^sleep {pattern}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&found.stdout).into_owned()
}

/// Waits up to 3 s for no sleep matching `pattern` to be left; kills those
/// left, and returns them.
fn left_sleeping(pattern: &str) -> String {
    for _ in 0..150 {
        if sleeps_of_nobody(pattern).is_empty() {
            return String::new();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = sleeps_of_nobody(pattern);
    for pid in left.lines().filter_map(|l| l.split(' ').next()) {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    left
}

/// The ways a rootless test binary runs its tests: with the fork server,
/// without it, and one test per process as cargo-nextest runs them.
const RUNS: [(&str, &[(&str, &str)]); 3] = [
    ("fork server", &[]),
    ("no fork server", &[("NETNS_TEST_FORK_SERVER", "off")]),
    (
        "one test per process",
        &[("NEXTEST_EXECUTION_MODE", "process-per-test")],
    ),
];

#[test]
fn processes_in_a_session_of_their_own_end_with_their_test() {
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    for (run, env) in RUNS {
        let output = retry_busy(|| {
            copy.command(&["--ignored", "--exact", "escape_case_sessions_of_their_own"])
                .envs(env.iter().copied())
                .uid(NOBODY)
                .gid(NOBODY)
                .output()
        });
        let text = text(&output);
        assert!(output.status.success(), "{run}: {text}");
        assert_eq!(left_sleeping("31[12]"), "", "{run}: left running");
    }
}

#[test]
fn a_signal_to_the_test_binarys_process_group_ends_what_its_tests_started() {
    use std::io::{BufRead, BufReader};
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    for (run, env) in RUNS {
        for signal in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            let mut child = retry_busy(|| {
                copy.command(&[
                    "--ignored",
                    "--exact",
                    "escape_case_waits_for_a_signal",
                    "--nocapture",
                ])
                .envs(env.iter().copied())
                .process_group(0)
                .uid(NOBODY)
                .gid(NOBODY)
                .stdout(std::process::Stdio::piped())
                .spawn()
            });
            let ready = BufReader::new(child.stdout.take().unwrap())
                .lines()
                .map_while(Result::ok)
                .any(|line| line.trim() == "READY");
            assert!(ready, "{run}: the fixture did not start");
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::killpg(group, signal).unwrap();
            child.wait().unwrap();
            assert_eq!(
                left_sleeping("31[34]"),
                "",
                "{run}, {signal} to the group: left running"
            );
        }
    }
}

#[test]
#[ignore = "fixture"]
fn wrapper_reaps_what_a_run_leaves() {
    if !armed() {
        return;
    }
    // Whatever the wrapped program leaves, ended or not, comes here.
    // SAFETY: prctl with integers.
    assert_eq!(
        unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1) },
        0
    );
    let wrapped = std::env::var("NETNS_TEST_WRAPPED").unwrap();
    let mut words = wrapped.split('\u{1f}');
    let status = Command::new(words.next().unwrap())
        .args(words)
        .env_remove("NETNS_TEST_FORK_SERVER")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut left = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            left.push(stat.split(' ').take(3).collect::<Vec<_>>().join(" "));
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    println!("REPORT {status}; left: {left:?}");
}

/// Runs `program` with `args` as uid 65534 under a process that adopts
/// what it leaves behind: the line that says what that was.
fn what_a_run_leaves(copy: &Copy, program: &std::path::Path, args: &[&str]) -> String {
    let wrapped: Vec<&str> = std::iter::once(program.to_str().unwrap())
        .chain(args.iter().copied())
        .collect();
    let output = retry_busy(|| {
        copy.command(&[
            "--ignored",
            "--exact",
            "wrapper_reaps_what_a_run_leaves",
            "--nocapture",
        ])
        .env("NETNS_TEST_WRAPPED", wrapped.join("\u{1f}"))
        .env("NETNS_TEST_FORK_SERVER", "off")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
    });
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    text.lines()
        .find(|l| l.starts_with("REPORT "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned()
}

#[test]
fn a_rootless_run_leaves_no_process_not_even_a_zombie() {
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    let binary = copy.dir.path().join("tests");
    for args in [
        &["--ignored", "--exact", "fixture_sync_sees_its_namespace"][..],
        &[
            "--ignored",
            "fixture_",
            "--skip",
            "fixture_veth",
            "--skip",
            "fixture_hangs",
            "--skip",
            "fixture_sleeps",
            "--skip",
            "fixture_kept",
            "--skip",
            "fixture_environment",
        ],
    ] {
        let report = what_a_run_leaves(&copy, &binary, args);
        assert!(report.ends_with("left: []"), "{args:?}: {report}");
    }
}

#[test]
fn the_netns_test_command_starts_no_fork_server() {
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    let tool = copy.dir.path().join("netns-test");
    std::fs::copy(common::netns_test_binary(), &tool).unwrap();
    for args in [&["list"][..], &["gc"], &["exec", "--", "true"]] {
        let report = what_a_run_leaves(&copy, &tool, args);
        assert!(report.contains("exit status: 0"), "{args:?}: {report}");
        assert!(report.ends_with("left: []"), "{args:?}: {report}");
    }
}

#[netns_test]
#[ignore = "fixture"]
fn thread_case_1_leaves_a_thread_printing() {
    std::thread::spawn(|| {
        loop {
            println!("LEFT-BEHIND by the first test");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
}

#[netns_test]
#[ignore = "fixture"]
fn thread_case_2_fails_after_it() {
    std::thread::sleep(std::time::Duration::from_millis(200));
    panic!("the second test's own failure");
}

#[test]
fn a_thread_a_test_leaves_running_prints_into_no_other_tests_output() {
    if !can_switch_users() {
        return;
    }
    let copy = Copy::new();
    // One after the other, in one runner (as long as it goes on).
    let output = retry_busy(|| {
        copy.command(&["--ignored", "thread_case_", "--test-threads=1"])
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
    });
    let text = text(&output);
    assert!(!output.status.success(), "{text}");
    let second = text
        .split("---- thread_case_2_fails_after_it stdout ----")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    let second = second.split("\nfailures:").next().unwrap();
    assert!(second.contains("the second test's own failure"), "{text}");
    assert!(!second.contains("LEFT-BEHIND"), "{second}");
}
