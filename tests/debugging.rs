//! Reproducing bugs: keeping a failed test's namespaces, `netns-test
//! list/gc`, packet captures, step traces. Fixtures are `#[ignore]`d and
//! inert unless `NETNS_TEST_FIXTURES=1`; the drivers re-run this binary.

mod common;

use netns_test::{NetNs, netns_test};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The drivers share /run/netns and the netns-test binary's view of it.
static SERIAL: Mutex<()> = Mutex::new(());

fn armed() -> bool {
    std::env::var_os("NETNS_TEST_FIXTURES").is_some()
}

fn run_fixture(name: &str, env: &[(&str, &str)]) -> (Output, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--ignored", "--exact", name, "--test-threads=1"])
        .env("NETNS_TEST_FIXTURES", "1")
        .env("RUST_BACKTRACE", "0")
        .env_remove("NETNS_TEST_KEEP")
        .env_remove("NETNS_TEST_CAPTURE")
        .env_remove("NETNS_TEST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = common::text(&output);
    (output, text)
}

fn netns_test_tool(args: &[&str]) -> String {
    let output = Command::new(common::netns_test_binary())
        .args(args)
        .output()
        .unwrap();
    let text = common::text(&output);
    assert!(output.status.success(), "netns-test {args:?}: {text}");
    text
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The name a kept namespace got, from the failure message.
fn kept_name(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ip netns exec "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kept namespace in:\n{text}"))
        .to_owned()
}

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipped: keeping namespaces needs root");
    }
    root
}

#[netns_test(keep = "failed", veth)]
#[ignore = "fixture"]
fn fixture_fails_and_is_kept() {
    if armed() {
        std::fs::write("/etc/hosts", "198.18.0.1 kept\n").unwrap();
        panic!("failing on purpose");
    }
}

#[netns_test(keep = "failed")]
#[ignore = "fixture"]
fn fixture_passes_with_keep_failed() {}

#[test]
fn a_failed_test_is_kept_listed_enterable_and_collected() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (output, text) = run_fixture("fixture_fails_and_is_kept", &[]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("failing on purpose"), "{text}");
    assert!(text.contains("ran in network namespace net:["), "{text}");
    let name = kept_name(&text);
    assert!(name.starts_with("fixture_fails_and_is_kept-"), "{name}");
    assert!(
        text.contains(&format!("nsenter --net=/run/netns/{name}")),
        "{text}"
    );
    // Listed by ip and by netns-test, enterable, with its veth.
    assert!(ip(&["netns", "list"]).contains(&name));
    let listed = netns_test_tool(&["list"]);
    assert!(
        listed.contains(&name) && listed.contains("fixture_fails_and_is_kept"),
        "{listed}"
    );
    let links = ip(&["-n", &name, "-o", "link"]);
    assert!(links.contains("lo:") && links.contains("veth0@"), "{links}");
    let kept_veth = ip(&["-o", "link"])
        .lines()
        .find(|l| l.contains("ntkeep"))
        .map(str::to_owned);
    assert!(
        kept_veth.is_some(),
        "the kept test's host-side veth is renamed ntkeep<slot>"
    );
    // gc removes it, and a second gc is a no-op.
    let removed = netns_test_tool(&["gc", &name]);
    assert!(removed.contains(&format!("removed {name}")), "{removed}");
    assert!(!ip(&["netns", "list"]).contains(&name));
    assert!(!Path::new("/run/netns").join(&name).exists());
    netns_test_tool(&["gc", &name]);
    assert!(!netns_test_tool(&["list"]).contains(&name));
    // With the namespace gone, the kernel removes the renamed veth.
    let gone = (0..250).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !ip(&["-o", "link"]).contains("ntkeep")
    });
    assert!(gone, "the kept veth outlived gc");
}

#[test]
fn a_passing_test_is_not_kept() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (output, text) = run_fixture("fixture_passes_with_keep_failed", &[]);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("kept the network namespace"), "{text}");
    assert!(!netns_test_tool(&["list"]).contains("fixture_passes_with_keep_failed"));
}

#[netns_test(keep = "failed")]
#[ignore = "fixture"]
fn fixture_kept_under_a_name_long_enough_to_push_the_columns() {
    if armed() {
        panic!("failing on purpose");
    }
}

#[test]
fn list_lines_up_its_columns_with_long_names() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_, text) = run_fixture(
        "fixture_kept_under_a_name_long_enough_to_push_the_columns",
        &[],
    );
    let name = kept_name(&text);
    assert!(name.len() > 40, "{name}");
    let listed = netns_test_tool(&["list"]);
    let header = listed.lines().find(|l| l.starts_with("NAME")).unwrap();
    let row = listed.lines().find(|l| l.starts_with(&name)).unwrap();
    let test = "debugging::fixture_kept_under_a_name";
    assert_eq!(row.find(test), header.find("TEST"), "{listed}");
    netns_test_tool(&["gc", &name]);
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_fails_plainly() {
    if armed() {
        panic!("failing on purpose");
    }
}

#[test]
fn netns_test_keep_all_keeps_from_the_environment() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_, text) = run_fixture("fixture_fails_plainly", &[("NETNS_TEST_KEEP", "all")]);
    let name = kept_name(&text);
    assert!(netns_test_tool(&["list"]).contains(&name));
    // gc with no name removes every kept namespace.
    netns_test_tool(&["gc"]);
    assert!(!netns_test_tool(&["list"]).contains(&name));
    let (_, plain) = run_fixture("fixture_fails_plainly", &[]);
    assert!(!plain.contains("kept the network namespace"), "{plain}");
}

fn capture_path(test: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("netns-test").join(test).join("test.pcap")
}

#[netns_test(capture = "all")]
#[ignore = "fixture"]
fn fixture_captures_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:4321").unwrap();
    let mut client = TcpStream::connect("127.0.0.1:4321").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
}

/// TCP flags of the IPv4/TCP packets between port 4321 and others, in order.
fn tcp_flags_on_port(pcap: &[u8], port: u16) -> Vec<(u16, u16, u8)> {
    let mut packets = Vec::new();
    for packet in common::pcapng_packets(pcap) {
        let frame = &packet.data[..];
        // Ethernet, IPv4, TCP.
        if frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
            continue;
        }
        let ip_header = ((frame[14] & 0x0f) as usize) * 4;
        let tcp = &frame[14 + ip_header..];
        let source = u16::from_be_bytes([tcp[0], tcp[1]]);
        let destination = u16::from_be_bytes([tcp[2], tcp[3]]);
        if source == port || destination == port {
            packets.push((source, destination, tcp[13]));
        }
    }
    packets
}

#[test]
fn a_capture_holds_the_tcp_handshake() {
    let path = capture_path("fixture_captures_a_connection");
    let _ = std::fs::remove_file(&path);
    let (output, text) = run_fixture("fixture_captures_a_connection", &[]);
    assert!(output.status.success(), "{text}");
    let pcap = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
    // Packets may hold secrets: readable by the user alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "{}", path.display());
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let packets = tcp_flags_on_port(&pcap, 4321);
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let syn = packets.iter().position(|p| p.1 == 4321 && p.2 == SYN);
    let syn_ack = packets.iter().position(|p| p.0 == 4321 && p.2 == SYN | ACK);
    let ack = packets.iter().position(|p| p.1 == 4321 && p.2 == ACK);
    assert!(
        matches!((syn, syn_ack, ack), (Some(a), Some(b), Some(c)) if a < b && b < c),
        "no handshake in {packets:?}"
    );
    // Each packet once, though loopback shows it leaving and arriving.
    assert_eq!(
        packets.iter().filter(|p| p.2 == SYN).count(),
        1,
        "{packets:?}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[netns_test(capture)]
#[ignore = "fixture"]
fn fixture_captures_only_if_failed() {
    let _listener = TcpListener::bind("127.0.0.1:4322").unwrap();
    TcpStream::connect("127.0.0.1:4322").unwrap();
    if armed() && std::env::var_os("FAIL").is_some() {
        panic!("failing on purpose");
    }
}

#[test]
fn captures_are_kept_for_failed_tests_only_by_default() {
    let path = capture_path("fixture_captures_only_if_failed");
    let _ = std::fs::remove_file(&path);
    let (output, text) = run_fixture("fixture_captures_only_if_failed", &[]);
    assert!(output.status.success(), "{text}");
    assert!(!path.exists(), "a passing test's capture was kept");
    let (output, text) = run_fixture("fixture_captures_only_if_failed", &[("FAIL", "1")]);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!("packets captured in {}", path.display())),
        "{text}"
    );
    assert!(!tcp_flags_on_port(&std::fs::read(&path).unwrap(), 4322).is_empty());
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[netns_test(capture = "all")]
#[ignore = "fixture"]
fn fixture_captures_an_impaired_link() {
    let net = netns_test::Network::new();
    let a = net.node("a").unwrap();
    let b = net.node("b").unwrap();
    let link = net.link(&a, &b).unwrap();
    let delay = netns_test::Impairment::new().delay(std::time::Duration::from_millis(1));
    link.impair_from(&a, delay).unwrap();
    let to = b.ipv4_on(&link);
    let receiver = b
        .netns()
        .run(move || std::net::UdpSocket::bind((to, 4330)).unwrap());
    receiver
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    a.netns().run(move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..20 {
            socket
                .send_to(format!("MARK-{i:02}").as_bytes(), (to, 4330))
                .unwrap();
        }
    });
    let mut buffer = [0u8; 16];
    for _ in 0..20 {
        receiver.recv(&mut buffer).unwrap();
    }
}

/// How many times `needle` is in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn an_impaired_direction_is_captured_once_and_an_empty_test_pcap_left_out() {
    let dir = capture_path("fixture_captures_an_impaired_link")
        .parent()
        .unwrap()
        .to_owned();
    let _ = std::fs::remove_dir_all(&dir);
    let (output, text) = run_fixture("fixture_captures_an_impaired_link", &[]);
    assert!(output.status.success(), "{text}");
    for node in ["a", "b"] {
        let pcap = std::fs::read(dir.join(format!("{node}.pcap")))
            .unwrap_or_else(|e| panic!("{node}.pcap: {e}\n{text}"));
        for i in 0..20 {
            let mark = format!("MARK-{i:02}");
            assert_eq!(
                occurrences(&pcap, mark.as_bytes()),
                1,
                "{mark} in {node}.pcap (the engine's interfaces must not show it again)"
            );
        }
    }
    // The test's own namespace carried nothing: no empty test.pcap.
    assert!(!dir.join("test.pcap").exists(), "{text}");
    assert!(!text.contains("test.pcap"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_captures_follow_no_link_another_user_planted() {
    if !root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let precious = base.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("test.pcap"), "IMPORTANT ROOT DATA").unwrap();
    // The test binary in a target directory under one of uid 65534's, with
    // its netns-test directory a link to root's.
    let theirs = base.path().join("theirs");
    let deps = theirs.join("target/debug/deps");
    std::fs::create_dir_all(&deps).unwrap();
    let binary = deps.join("debugging-copy");
    std::fs::copy(std::env::current_exe().unwrap(), &binary).unwrap();
    let planted = theirs.join("target/netns-test");
    std::os::unix::fs::symlink(&precious, &planted).unwrap();
    for path in [&theirs, &theirs.join("target")] {
        std::os::unix::fs::chown(path, Some(common::NOBODY), Some(common::NOBODY)).unwrap();
    }
    let output = common::retry_busy(|| {
        Command::new(&binary)
            .args(["--ignored", "--exact", "fixture_captures_a_connection"])
            .env("NETNS_TEST_FIXTURES", "1")
            .env_remove("NETNS_TEST_CAPTURE")
            .output()
    });
    let text = common::text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} belongs to uid 65534", theirs.display())),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(precious.join("test.pcap")).unwrap(),
        "IMPORTANT ROOT DATA"
    );
    assert_eq!(std::fs::read_dir(&precious).unwrap().count(), 1);
}

#[netns_test(veth)]
#[ignore = "fixture"]
fn fixture_traced() {
    assert!(NetNs::current().veth().is_some());
}

#[test]
fn netns_test_log_debug_traces_each_step_with_its_duration() {
    let (output, text) = run_fixture(
        "fixture_traced",
        &[("NETNS_TEST_LOG", "debug"), ("NETNS_TEST_CAPTURE", "all")],
    );
    let _ = std::fs::remove_dir_all(capture_path("fixture_traced").parent().unwrap());
    let text = if output.status.success() {
        // Passing tests' output is captured: run again with --nocapture.
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "fixture_traced", "--nocapture"])
            .env("NETNS_TEST_LOG", "debug")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    } else {
        text
    };
    for step in [
        "new network and mount namespace, lo up, accept_dad=0",
        "veth pair created",
        "registered",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with("netns-test[") && l.contains(step))
            .unwrap_or_else(|| panic!("no {step:?} in:\n{text}"));
        assert!(line.ends_with(" ms"), "{line}");
    }
}

#[test]
fn gc_removes_stale_host_veths_and_keeps_live_ones() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // A host-side veth of a slot no one holds, as a dead owner leaves it:
    // the slot's name and interface index.
    let stale = "ntveth32766";
    let index = (0x4e00_0000 + 32766).to_string();
    let made = Command::new("ip")
        .args([
            "link",
            "add",
            stale,
            "index",
            &index,
            "type",
            "veth",
            "peer",
            "name",
            "ntveth32766p",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    /// Removes the pair if the test fails before gc does.
    struct Cleanup(&'static str);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", self.0]).status();
        }
    }
    let _cleanup = Cleanup(stale);
    // A lease file no process holds, as a process killed while it held the
    // lease leaves it.
    let leases = Path::new("/run/netns-test/veth");
    std::fs::create_dir_all(leases).unwrap();
    let unheld = leases.join("32765");
    std::fs::write(&unheld, "").unwrap();
    let removed = netns_test_tool(&["gc"]);
    assert!(!unheld.exists(), "gc left the lease file no one holds");
    assert!(
        removed.contains(&format!("removed stale host-side veth {stale}")),
        "{removed}"
    );
    assert!(!ip(&["-o", "link"]).contains(stale));
    // Idempotent for it. (Other test processes' pairs whose tests just ended
    // may linger a moment with their lease free; gc may collect those.)
    let again = netns_test_tool(&["gc"]);
    assert!(!again.contains(stale), "{again}");
}

#[netns_test(keep = "failed", capture)]
#[ignore = "fixture"]
fn fixture_topology_fails() {
    let net = netns_test::Network::new();
    let client = net.node("client").unwrap();
    let server = net.node("server").unwrap();
    let link = net.link(&client, &server).unwrap();
    let address = server.ipv4_on(&link);
    let listener = server
        .netns()
        .run(move || TcpListener::bind((address, 4323)).unwrap());
    client
        .netns()
        .run(move || TcpStream::connect((address, 4323)).unwrap());
    listener.accept().unwrap();
    if armed() {
        panic!("failing on purpose");
    }
}

#[test]
fn a_failed_tests_topology_is_kept_and_captured_too() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = capture_path("fixture_topology_fails")
        .parent()
        .unwrap()
        .to_owned();
    let _ = std::fs::remove_dir_all(&dir);
    let etc_netns_before = Path::new("/etc/netns").exists();
    let (output, text) = run_fixture("fixture_topology_fails", &[]);
    assert!(!output.status.success(), "{text}");
    let kept: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ip netns exec "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert_eq!(kept.len(), 3, "the test's namespace and two nodes: {text}");
    let listed = ip(&["netns", "list"]);
    for name in &kept {
        assert!(listed.contains(name), "{name} not in {listed}");
    }
    let client = kept
        .iter()
        .find(|n| n.contains("-client-"))
        .expect("client kept");
    let links = ip(&["-n", client, "-o", "addr"]);
    assert!(
        links.contains("eth0") && links.contains("198.18.0.1/30"),
        "{links}"
    );
    // `ip netns exec` into a kept node resolves the other nodes' names:
    // it binds /etc/netns/<name>/hosts over /etc/hosts.
    let etc_netns_was_there = etc_netns_before;
    let resolved = ip(&["netns", "exec", client, "getent", "ahostsv4", "server"]);
    assert!(resolved.contains("198.18.0.2"), "{resolved}");
    // The server's capture holds the connection's handshake.
    let server_pcap = std::fs::read(dir.join("server.pcap")).unwrap();
    let packets = tcp_flags_on_port(&server_pcap, 4323);
    assert!(
        packets.iter().any(|p| p.1 == 4323 && p.2 == 0x02),
        "no SYN in {packets:?}"
    );
    // The test's own namespace carried nothing: its empty capture is left out.
    assert!(!dir.join("test.pcap").exists() && dir.join("client.pcap").exists());
    for name in &kept {
        netns_test_tool(&["gc", name]);
        assert!(
            !Path::new("/etc/netns").join(name).exists(),
            "gc left /etc/netns/{name}"
        );
    }
    assert_eq!(Path::new("/etc/netns").exists(), etc_netns_was_there);
    assert!(netns_test_tool(&["list"]).contains("no kept namespaces"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process of root's that is not a holder, and its start time.
fn bystander() -> (std::process::Child, String) {
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(19)
        .unwrap()
        .to_owned();
    (child, start)
}

/// A namespace some other program named under /run/netns (a VPN's, say),
/// removed when dropped. (Not with `ip netns add`, which also turns
/// /run/netns into a mount point of its own and leaves it so.)
struct ForeignNamespace {
    name: String,
    made_the_directory: bool,
}

impl ForeignNamespace {
    fn add() -> ForeignNamespace {
        let name = format!("nt-foreign-{}", std::process::id());
        let made_the_directory = !Path::new("/run/netns").exists();
        std::fs::create_dir_all("/run/netns").unwrap();
        let path = Path::new("/run/netns").join(&name);
        std::fs::write(&path, "").unwrap();
        let made = Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true")
            .status()
            .unwrap();
        assert!(made.success());
        ForeignNamespace {
            name,
            made_the_directory,
        }
    }
}

impl Drop for ForeignNamespace {
    fn drop(&mut self) {
        let path = Path::new("/run/netns").join(&self.name);
        let _ = Command::new("umount").arg(&path).status();
        let _ = std::fs::remove_file(&path);
        if self.made_the_directory {
            let _ = std::fs::remove_dir("/run/netns");
        }
    }
}

#[test]
fn gc_as_root_touches_only_what_its_own_notes_name() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let planted = Path::new("/tmp/netns-test-0");
    if planted.exists() {
        println!("skipped: {} exists already", planted.display());
        return;
    }
    let foreign = ForeignNamespace::add();
    let (mut sleeper, start) = bystander();
    // Another user plants notes where root's were read from when
    // XDG_RUNTIME_DIR was unset (plain sudo): one naming the foreign
    // namespace, one naming root's process with its start time.
    let script = format!(
        "mkdir -p {dir}/kept && chmod -R 777 {dir} && \
         printf 'test=x\\nsince=0\\n' > {dir}/kept/{name} && \
         printf 'test=x\\nsince=0\\npid={pid}\\nstart={start}\\nfd=3\\n' > {dir}/kept/planted",
        dir = planted.display(),
        name = foreign.name,
        pid = sleeper.id(),
    );
    let planting = Command::new("sh")
        .args(["-c", &script])
        .uid(65533)
        .gid(65533)
        .status()
        .unwrap();
    // And a note in root's own directory that names the process but not
    // a holder's name: gc must not kill what it did not start.
    let own_dir = Path::new("/run/netns-test/kept");
    std::fs::create_dir_all(own_dir).unwrap();
    std::fs::write(
        own_dir.join("not-a-holder"),
        format!(
            "test=x\nsince=0\npid={}\nstart={start}\nname=ntkeep-00000000\n",
            sleeper.id()
        ),
    )
    .unwrap();
    let gc = Command::new(common::netns_test_binary())
        .arg("gc")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let by_name = Command::new(common::netns_test_binary())
        .args(["gc", &foreign.name])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let alive = sleeper.try_wait().unwrap().is_none();
    let foreign_there = Path::new("/run/netns").join(&foreign.name).exists();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    std::fs::remove_dir_all(planted).unwrap();
    assert!(planting.success());
    assert!(gc.status.success(), "{}", common::text(&gc));
    assert!(
        common::text(&by_name).contains("no namespace of yours is kept under this name"),
        "{}",
        common::text(&by_name)
    );
    assert!(foreign_there, "gc removed a namespace it did not keep");
    assert!(alive, "gc killed a process that is not its holder");
    assert!(!own_dir.join("not-a-holder").exists(), "its own note stays");
}
