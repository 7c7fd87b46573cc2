//! `netns-test exec`, run as a user runs it: exit codes, signals, the
//! timeout, two commands on port 80 at once, `--veth`, keep and capture,
//! rootless as uid 65534, and a host left as it was after each test and
//! after a SIGKILL of netns-test mid-run.
//!
//! The commands are `sh` and this test binary itself: its `helper_*`
//! tests are `#[ignore]`d and inert unless `NETNS_TEST_FIXTURES=1`.
//! The drivers run one at a time (they compare the host before and after);
//! under nextest, the `host-wide` test group does that.
#![cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const NETNS_TEST: &str = env!("CARGO_BIN_EXE_netns-test");
const NOBODY: u32 = 65534;

/// One driver at a time: each compares the host before and after.
static SERIAL: Mutex<()> = Mutex::new(());

fn armed() -> bool {
    std::env::var_os("NETNS_TEST_FIXTURES").is_some()
}

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipped: netns-test exec as root needs root");
    }
    root
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn exec(args: &[&str]) -> Command {
    let mut command = Command::new(NETNS_TEST);
    command
        .arg("exec")
        .args(args)
        .env_remove("NETNS_TEST_KEEP")
        .env_remove("NETNS_TEST_CAPTURE")
        .env_remove("NETNS_TEST_MODE")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    command
}

/// `netns-test exec [options] -- <this binary> <helper>`.
fn exec_helper(options: &[&str], helper: &str) -> Command {
    let me = std::env::current_exe().unwrap();
    let mut args: Vec<&str> = options.to_vec();
    args.extend([
        "--",
        me.to_str().unwrap(),
        "--ignored",
        "--exact",
        helper,
        "--nocapture",
        "--test-threads=1",
    ]);
    let mut command = exec(&args);
    command.env("NETNS_TEST_FIXTURES", "1");
    command
}

/// What follows `marker` in `line`: the test harness of a helper prints
/// `test helper_x ... ` before the helper's own output, on the same line.
fn after<'l>(line: &'l str, marker: &str) -> Option<&'l str> {
    line.find(marker).map(|at| line[at + marker.len()..].trim())
}

/// Reads lines from `child`'s stdout until one has `marker`; returns what
/// follows it, and the rest of the output.
fn wait_for_line(
    child: &mut Child,
    marker: &str,
) -> (String, BufReader<std::process::ChildStdout>) {
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).unwrap();
        assert!(read > 0, "no line with {marker:?}");
        if let Some(rest) = after(&line, marker) {
            return (rest.to_owned(), reader);
        }
    }
}

/// A running `netns-test`, killed if the driver fails before it ends.
struct Running(Child);

impl Running {
    fn spawn(command: &mut Command) -> Running {
        Running(command.spawn().unwrap())
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn kill(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Polls `check` until it holds, at most `limit`.
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

/// The live processes whose command line starts with `start` (`sleep <marker>`).
fn processes_with(start: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if cmdline.starts_with(start) && !zombie {
            found.push(format!("{} {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// A marker no other process has: `sleep <marker>` sleeps about 1000 s.
fn marker(n: u32) -> String {
    format!("1000.{}{n}", std::process::id())
}

/// What a run must leave as it found: the host's links (other test
/// processes' veth pairs aside), addresses, `/run/netns` (whether there is
/// such a directory, and what is in it), this process's mounts.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    links: Vec<String>,
    addresses: Vec<String>,
    named_namespaces: Option<Vec<String>>,
    mounts: Vec<String>,
}

fn host_state() -> HostState {
    let not_a_test_veth = |line: &str| !line.contains("ntveth");
    let lines = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| not_a_test_veth(l))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        lines.sort();
        lines
    };
    let named_namespaces: Option<Vec<String>> = std::fs::read_dir("/run/netns").ok().map(|d| {
        let mut names: Vec<String> = d
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    });
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-").unwrap();
            format!("{} {}", fields[4], fields[dash + 1])
        })
        .collect();
    mounts.sort();
    HostState {
        links: lines(&["-o", "link", "show"]),
        addresses: lines(&["-o", "addr", "show"]),
        named_namespaces,
        mounts,
    }
}

/// Serializes the drivers and checks, when dropped after a passing driver,
/// that the host is as it was.
struct Unchanged {
    before: HostState,
    _serial: MutexGuard<'static, ()>,
}

impl Unchanged {
    fn new() -> Unchanged {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        Unchanged {
            before: host_state(),
            _serial: serial,
        }
    }
}

impl Drop for Unchanged {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // The kernel removes a namespace's veth pair a moment after.
        let mut after = host_state();
        settles(Duration::from_secs(5), || {
            after = host_state();
            after == self.before
        });
        assert_eq!(after, self.before, "the host changed");
    }
}

#[test]
fn exit_codes_pass_through_and_the_command_sees_a_fresh_namespace() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let script = "ls /sys/class/net; cat /proc/sys/net/ipv6/conf/default/accept_dad; \
                  echo '198.18.0.9 private' > /etc/hosts; exit 3";
    let output = exec(&["--", "sh", "-c", script]).output().unwrap();
    let report = text(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "lo\n0\n",
        "{report}"
    );
    assert!(
        !std::fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("private")
    );
    let output = exec(&["true"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = exec(&["--", "netns-test-no-such-program"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert!(
        text(&output).contains("command not found"),
        "{}",
        text(&output)
    );
    let output = exec(&["--", "/etc/hosts"]).output().unwrap();
    assert_eq!(output.status.code(), Some(126), "{}", text(&output));
    // Standard input is the command's.
    let mut child = exec(&["--", "sh", "-c", "read line; echo got $line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "got hello\n");
}

/// The pid a command sees itself as, in its own `/proc` too.
fn command_pid(run: impl Fn(&[&str]) -> Output) -> u32 {
    let output = run(&["exec", "--", "sh", "-c", "test -d /proc/$$ && echo $$"]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn exec_as_root(args: &[&str]) -> Output {
    exec(&args[1..]).output().unwrap()
}

#[test]
fn the_command_gets_an_unpredictable_pid() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let pids: Vec<u32> = (0..4).map(|_| command_pid(exec_as_root)).collect();
    assert!(pids.iter().all(|pid| *pid >= 1000), "{pids:?}");
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 3, "the same pids run after run: {pids:?}");
}

#[test]
fn a_zero_timeout_is_no_limit() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    for zero in ["0", "0s", "0ms"] {
        let output = exec(&["--timeout", zero, "--", "sh", "-c", "sleep 0.3; exit 5"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(5),
            "--timeout {zero}: {}",
            text(&output)
        );
    }
}

/// `ip netns add`, `exec` and `delete` in a command; prints the named
/// namespace's links and what is left in /run/netns.
const IP_NETNS: &str = "ip netns add same && ip netns exec same ip -o link | wc -l && \
     ip netns exec same cat /proc/net/dev | grep -c : && ip netns delete same && ls -A /run/netns | wc -l";

#[test]
fn ip_netns_works_in_a_command_and_the_host_gets_no_run_netns() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let output = exec(&["--", "sh", "-c", IP_NETNS]).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "1\n1\n0\n");
    // Two commands with the same name at once.
    let script = "ip netns add same && echo added && sleep 1 && ip netns delete same";
    let mut first = Running::spawn(exec(&["--", "sh", "-c", script]).stdout(Stdio::piped()));
    let (_, _rest) = wait_for_line(&mut first, "added");
    let second = exec(&["--", "sh", "-c", script]).output().unwrap();
    assert!(second.status.success(), "{}", text(&second));
    assert!(first.wait().unwrap().success());
}

/// A directory root owns (0755) in a temporary directory, removed on drop.
fn workspace() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The captures `netns-test exec` left under `target`: `<dir>/test.pcap`.
fn captures_in(target: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(target.join("netns-test")) else {
        return Vec::new();
    };
    dirs.flatten().map(|d| d.path().join("test.pcap")).collect()
}

#[test]
fn captures_go_where_cargo_builds_and_only_when_kept() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let dir = workspace();
    // CARGO_TARGET_DIR, relative to the working directory.
    let output = exec(&["--capture", "all", "--", "true"])
        .env("CARGO_TARGET_DIR", "elsewhere")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let kept = captures_in(&dir.path().join("elsewhere"));
    assert_eq!(kept.len(), 1, "{}", text(&output));
    assert!(kept[0].is_file());
    assert!(text(&output).contains(&kept[0].display().to_string()));
    assert!(!dir.path().join("target").exists());
    // From a member of a workspace: the workspace's target.
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"member\"]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("member/src")).unwrap();
    std::fs::write(
        dir.path().join("member/Cargo.toml"),
        "[package]\nname = \"member\"\n",
    )
    .unwrap();
    let output = exec(&["--capture", "all", "--", "true"])
        .current_dir(dir.path().join("member/src"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(captures_in(&dir.path().join("target")).len(), 1);
    assert!(!dir.path().join("member/target").exists());
    assert!(!dir.path().join("member/src/target").exists());
    // A passing command with `failed` writes nothing, not even a directory.
    let plain = workspace();
    let output = exec(&["--capture", "failed", "--", "true"])
        .current_dir(plain.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(!plain.path().join("target").exists(), "made a directory");
    let output = exec(&["--capture", "failed", "--", "sh", "-c", "exit 4"])
        .current_dir(plain.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let kept = captures_in(&plain.path().join("target"));
    assert_eq!(kept.len(), 1, "{}", text(&output));
    assert_eq!(
        std::fs::read(&kept[0]).unwrap().len(),
        28,
        "a pcapng section header, no packet"
    );
}

/// Root runs `exec --capture all -- true` in `cwd`; returns its report,
/// which must be a refusal naming `component`.
fn refused_capture(cwd: &Path, component: &Path) -> String {
    let output = exec(&["--capture", "all", "--", "true"])
        .current_dir(cwd)
        .output()
        .unwrap();
    let report = text(&output);
    assert_eq!(output.status.code(), Some(125), "{report}");
    assert!(
        report.contains(&format!("{} ", component.display())),
        "the refusal does not name {}: {report}",
        component.display()
    );
    assert!(report.contains("CARGO_TARGET_DIR"), "{report}");
    report
}

#[test]
fn root_follows_no_link_another_user_planted_for_captures() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let chown = |path: &Path| std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    let base = workspace();
    // What root must never touch: a file of root's, and a directory.
    let precious = base.path().join("precious");
    std::fs::create_dir_all(precious.join("netns-test")).unwrap();
    std::fs::write(precious.join("test.pcap"), "IMPORTANT ROOT DATA").unwrap();
    // A directory uid 65534 owns, with links planted for the next pids.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs);
    std::fs::create_dir_all(theirs.join("target/netns-test")).unwrap();
    let next = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap();
    let next: u32 = next.trim().parse().unwrap();
    for pid in next..next + 200 {
        let planted = theirs.join(format!("target/netns-test/exec-true-{pid}"));
        std::os::unix::fs::symlink(&precious, planted).unwrap();
    }
    for path in [theirs.join("target"), theirs.join("target/netns-test")] {
        chown(&path);
    }
    let report = refused_capture(&theirs, &theirs);
    assert!(report.contains("belongs to uid 65534"), "{report}");
    // `target` a link to root's directory, in a directory of root's.
    let mine = base.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::os::unix::fs::symlink(&precious, mine.join("target")).unwrap();
    let report = refused_capture(&mine, &mine.join("target"));
    assert!(report.contains("symbolic link"), "{report}");
    // `target` of root's, `target/netns-test` of 65534's.
    let shared = base.path().join("shared");
    std::fs::create_dir_all(shared.join("target/netns-test")).unwrap();
    chown(&shared.join("target/netns-test"));
    refused_capture(&shared, &shared.join("target/netns-test"));
    // Nothing of root's was written to.
    assert_eq!(
        std::fs::read_to_string(precious.join("test.pcap")).unwrap(),
        "IMPORTANT ROOT DATA"
    );
    assert_eq!(
        std::fs::read_dir(precious.join("netns-test"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn sigterm_and_sigint_reach_the_command() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let mut child = Running::spawn(
            exec(&["--", "sh", "-c", "echo ready; exec sleep 30"]).stdout(Stdio::piped()),
        );
        let start = Instant::now();
        wait_for_line(&mut child, "ready");
        kill(&child, signal);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{signal}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    // A command that handles it runs its handler and exits as it likes.
    let mut child = Running::spawn(
        exec(&[
            "--",
            "sh",
            "-c",
            "trap 'echo handled; exit 42' TERM; echo ready; sleep 30 & wait",
        ])
        .stdout(Stdio::piped()),
    );
    let (_, mut rest) = wait_for_line(&mut child, "ready");
    kill(&child, nix::sys::signal::Signal::SIGTERM);
    let mut tail = String::new();
    rest.read_to_string(&mut tail).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(42));
    assert_eq!(tail, "handled\n");
}

#[test]
fn the_timeout_stops_the_command_and_everything_it_started() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let (a, b, c) = (marker(1), marker(2), marker(3));
    // A background grandchild, one in a session of its own, one that
    // ignores SIGTERM, and the command in the foreground.
    let script = format!(
        "sleep {a} & setsid sleep {b} & sh -c 'trap \"\" TERM; sleep {c}; true' & echo started; sleep {a}"
    );
    let start = Instant::now();
    let output = exec(&[
        "--timeout",
        "500ms",
        "--kill-after",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .output()
    .unwrap();
    let took = start.elapsed();
    let report = text(&output);
    assert_eq!(output.status.code(), Some(124), "{report}");
    assert!(report.contains("started"), "{report}");
    assert!(report.contains("timed out after 500 ms"), "{report}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    for m in [&a, &b, &c] {
        assert_eq!(processes_with(&format!("sleep {m}")), Vec::<String>::new());
    }
    // --kill-after 0: SIGKILL at once.
    let output = exec(&["--timeout", "200ms", "--kill-after", "0", "--", "sleep", &a])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(124), "{}", text(&output));
    assert!(text(&output).contains("killing it"), "{}", text(&output));
}

#[test]
#[ignore = "helper"]
fn helper_binds_port_80() {
    if !armed() {
        return;
    }
    let _listener = TcpListener::bind("127.0.0.1:80").unwrap();
    println!("BOUND");
    // Until the driver closes our standard input.
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
}

#[test]
fn two_commands_bind_port_80_at_once() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let mut first = Running::spawn(
        exec_helper(&[], "helper_binds_port_80")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    // Its output stays open until it ends.
    let (_, _output) = wait_for_line(&mut first, "BOUND");
    // While the first holds port 80, the second binds it too.
    let second = exec_helper(&[], "helper_binds_port_80")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", text(&second));
    assert!(String::from_utf8_lossy(&second.stdout).contains("BOUND"));
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
}

#[test]
#[ignore = "helper"]
fn helper_serves_on_the_veth() {
    if !armed() {
        return;
    }
    let var = |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"));
    assert_eq!(var("NETNS_TEST_VETH"), "veth0");
    assert!(Path::new("/sys/class/net/veth0").exists());
    let ns: std::net::IpAddr = var("NETNS_TEST_NS_IPV4").parse().unwrap();
    let host: std::net::IpAddr = var("NETNS_TEST_HOST_IPV4").parse().unwrap();
    let mut addresses = vec![(ns, host)];
    if let (Ok(ns6), Ok(host6)) = (
        std::env::var("NETNS_TEST_NS_IPV6"),
        std::env::var("NETNS_TEST_HOST_IPV6"),
    ) {
        addresses.push((ns6.parse().unwrap(), host6.parse().unwrap()));
    }
    for (ns, host) in addresses {
        let listener = TcpListener::bind((ns, 0)).unwrap();
        println!("LISTENING {} {host}", listener.local_addr().unwrap());
        let (mut stream, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), host, "the connection comes from the host's end");
        let mut word = [0u8; 4];
        stream.read_exact(&mut word).unwrap();
        assert_eq!(&word, b"ping");
        stream.write_all(b"pong").unwrap();
    }
    println!("SERVED");
}

#[test]
fn veth_gives_a_round_trip_to_the_host() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let mut child = Running::spawn(
        exec_helper(&["--veth"], "helper_serves_on_the_veth").stdout(Stdio::piped()),
    );
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut served = false;
    let mut host_addresses = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = after(&line, "LISTENING ") {
            let (address, host) = rest.split_once(' ').unwrap();
            host_addresses.push(host.to_owned());
            // From the host, through the veth pair.
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(b"ping").unwrap();
            let mut word = [0u8; 4];
            stream.read_exact(&mut word).unwrap();
            assert_eq!(&word, b"pong");
        }
        served |= line.contains("SERVED");
        line.clear();
    }
    assert!(child.wait().unwrap().success());
    assert!(served && !host_addresses.is_empty());
    // The pair went with the namespace.
    let gone = settles(Duration::from_secs(5), || {
        let out = Command::new("ip").args(["-o", "addr"]).output().unwrap();
        let addresses = String::from_utf8_lossy(&out.stdout).into_owned();
        host_addresses
            .iter()
            .all(|h| !addresses.contains(&format!(" {h}/")))
    });
    assert!(gone, "the host still has the veth's address");
}

#[test]
#[ignore = "helper"]
fn helper_talks_then_fails() {
    if !armed() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:4325").unwrap();
    let mut client = TcpStream::connect("127.0.0.1:4325").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut word = [0u8; 4];
    server.read_exact(&mut word).unwrap();
    std::process::exit(3);
}

/// `ip netns exec NAME` of a keep message.
fn kept_name(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("ip netns exec "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kept namespace in:\n{report}"))
        .to_owned()
}

fn netns_test(args: &[&str]) -> String {
    let output = Command::new(NETNS_TEST).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "netns-test {args:?}: {}",
        text(&output)
    );
    text(&output)
}

#[test]
fn a_failed_command_is_kept_and_captured_then_collected() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let dir = tempfile::tempdir().unwrap();
    let output = exec_helper(
        &["--keep", "failed", "--capture", "failed", "--veth"],
        "helper_talks_then_fails",
    )
    .current_dir(dir.path())
    .output()
    .unwrap();
    let report = text(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    // How to get in, and where the packets are.
    let name = kept_name(&report);
    assert!(name.starts_with("exec-"), "{name}");
    assert!(
        report.contains(&format!("nsenter --net=/run/netns/{name}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("netns-test gc {name}")),
        "{report}"
    );
    let pcap = report
        .lines()
        .find_map(|l| after(l, "netns-test: packets captured in "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no capture in:\n{report}"));
    assert!(
        pcap.starts_with(dir.path().join("target/netns-test")),
        "{}",
        pcap.display()
    );
    let packets = std::fs::read(&pcap).unwrap();
    assert!(
        packets.len() > 28 + 4 * 32,
        "a handshake and data: {} bytes",
        packets.len()
    );
    // Listed and enterable, with its veth; then gc removes it.
    assert!(netns_test(&["list"]).contains(&name));
    let inside = Command::new("ip")
        .args(["-n", &name, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&inside.stdout);
    assert!(links.contains("lo:") && links.contains("veth0@"), "{links}");
    assert!(netns_test(&["gc", &name]).contains(&format!("removed {name}")));
    assert!(!Path::new("/run/netns").join(&name).exists());
    assert!(!netns_test(&["list"]).contains(&name));
    // A command that passes keeps nothing.
    let output = exec(&["--keep", "failed", "--capture", "failed", "--", "true"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!text(&output).contains("kept"), "{}", text(&output));
    let captures: Vec<_> = std::fs::read_dir(dir.path().join("target/netns-test"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(captures.len(), 1, "only the failed run's: {captures:?}");
}

#[test]
fn a_sigkill_of_netns_test_leaves_nothing() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let (a, b) = (marker(4), marker(5));
    let script =
        format!("sleep {a} & setsid sleep {b} & echo ready $NETNS_TEST_HOST_IPV4; sleep {a}");
    let mut child = Running::spawn(
        exec(&["--veth", "--keep", "all", "--", "sh", "-c", &script]).stdout(Stdio::piped()),
    );
    let (host, _reader) = wait_for_line(&mut child, "ready ");
    // The background one and the foreground one, once both have started.
    let running = settles(Duration::from_secs(5), || {
        processes_with(&format!("sleep {a}")).len() == 2
    });
    assert!(running, "{:?}", processes_with("sleep 1000."));
    kill(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    let gone = settles(Duration::from_secs(5), || {
        processes_with(&format!("sleep {a}")).is_empty()
            && processes_with(&format!("sleep {b}")).is_empty()
    });
    assert!(gone, "{:?}", processes_with("sleep 1000."));
    let veth_gone = settles(Duration::from_secs(5), || {
        let out = Command::new("ip").args(["-o", "addr"]).output().unwrap();
        !String::from_utf8_lossy(&out.stdout).contains(&format!(" {host}/"))
    });
    assert!(veth_gone, "the veth outlived netns-test");
}

/// The binary where uid 65534 can run it, removed on drop.
fn copy_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("netns-test-exec-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("netns-test");
    std::fs::copy(NETNS_TEST, &binary).unwrap();
    (dir, binary)
}

fn as_nobody(binary: &Path, args: &[&str]) -> Output {
    as_nobody_with(binary, args, &[])
}

fn as_nobody_with(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary)
        .args(args)
        .current_dir("/")
        .env_remove("NETNS_TEST_MODE")
        .env_remove("NETNS_TEST_CAPTURE")
        .env_remove("NETNS_TEST_KEEP")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .envs(env.iter().copied())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap()
}

#[test]
fn rootless_as_an_ordinary_user() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let (_dir, binary) = copy_for_nobody();
    let script = "id -u; ls /sys/class/net; echo '198.18.0.9 private' > /etc/hosts; \
                  cat /proc/sys/net/ipv6/conf/default/accept_dad; exit 5";
    let output = as_nobody(&binary, &["exec", "--", "sh", "-c", script]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(5), "{report}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "0\nlo\n0\n",
        "{report}"
    );
    // What it cannot have is a veth pair to the host.
    let output = as_nobody(&binary, &["exec", "--veth", "--", "true"]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(125), "{report}");
    assert!(report.contains("needs real root"), "{report}");
    // A timeout works the same.
    let m = marker(6);
    let output = as_nobody(
        &binary,
        &[
            "exec",
            "--timeout",
            "300ms",
            "--",
            "sh",
            "-c",
            &format!("sleep {m} & sleep {m}"),
        ],
    );
    assert_eq!(output.status.code(), Some(124), "{}", text(&output));
    assert!(processes_with(&format!("sleep {m}")).is_empty());
    // An unpredictable pid, and `ip netns` in a /run/netns of its own.
    let run = |args: &[&str]| as_nobody(&binary, args);
    let pids: Vec<u32> = (0..3).map(|_| command_pid(run)).collect();
    assert!(pids.iter().all(|pid| *pid >= 1000), "{pids:?}");
    let output = as_nobody(&binary, &["exec", "--", "sh", "-c", IP_NETNS]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "1\n1\n0\n");
    // A directory of PATH this user cannot search: permission denied, 126.
    let hidden = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/true", hidden.path().join("netns-test-hidden")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let root_only = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(hidden.path(), root_only).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", hidden.path().display());
    let output = as_nobody_with(&binary, &["exec", "netns-test-hidden"], &[("PATH", &path)]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(126), "{path}: {report}");
    assert!(report.contains("permission denied"), "{report}");
    // Captures where the working directory (/) is not writable: a passing
    // command runs and writes nothing; a failing one says what to do.
    let failed = [("NETNS_TEST_CAPTURE", "failed")];
    let output = as_nobody_with(&binary, &["exec", "true"], &failed);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = as_nobody_with(&binary, &["exec", "--", "sh", "-c", "exit 3"], &failed);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert!(report.contains("/target"), "{report}");
    assert!(report.contains("CARGO_TARGET_DIR"), "{report}");
    assert!(!Path::new("/target").exists());
}

#[test]
fn a_kernel_refusal_of_the_user_namespace_names_the_setting() {
    if !root() {
        return;
    }
    let _unchanged = Unchanged::new();
    let mut command = exec(&["--", "true"]);
    command.env("NETNS_TEST_MODE", "rootless");
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
    let output = command.output().unwrap();
    let report = text(&output);
    assert_eq!(output.status.code(), Some(125), "{report}");
    assert!(report.contains("user.max_user_namespaces"), "{report}");
    assert!(report.contains("for this command"), "{report}");
}

#[test]
fn help_reads_like_a_manual() {
    let output = Command::new(NETNS_TEST).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for word in ["exec", "list", "gc", "Examples:"] {
        assert!(help.contains(word), "{help}");
    }
    let output = Command::new(NETNS_TEST)
        .args(["exec", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "--veth",
        "--timeout",
        "--keep",
        "--capture",
        "NETNS_TEST_HOST_IPV4",
        "124",
        "Examples:",
    ] {
        assert!(help.contains(word), "{help}");
    }
    let output = Command::new(NETNS_TEST).arg("exec").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
}
