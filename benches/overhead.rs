//! Per-test overhead of `#[netns_test]` against a plain `#[test]` and the bare
//! floor (unshare + lo up), measured side by side through the real test
//! harness.
//!
//! ```text
//! cargo bench --bench overhead              # 15 rounds
//! cargo bench --bench overhead -- 31        # more rounds
//! BENCH_PROCESS_PER_TEST=1 cargo bench --bench overhead   # as cargo-nextest runs tests
//! BENCH_PROFILE=dev cargo bench --bench overhead   # the fixture built as `cargo test` builds it
//! ```
//!
//! It builds `tests/overhead_fixture.rs` in release mode, then runs its 200
//! `plain::`, `floor::`, `view::`, `netns::` and `veth::` tests (each what a
//! user's test does: bind a fixed port, connect, echo a byte, close) as
//! separate invocations of the test binary, in an order shuffled each round, with 1 and with 2 test threads,
//! and the `veth::` tests again with `NETNS_TEST_SETTLE=off` (their pairs
//! not waited for until they carry the first packet: what settling costs). Overhead per
//! test = (wall time of a kind − wall time of `plain` in the same round) / 200;
//! the table shows medians over rounds (a ratio's median is that of the
//! round's ratios). When run as root it also runs the `netns::` tests as uid
//! 65534, in rootless mode (a copy of the fixture in a temporary directory
//! any user can read), and compares them with the same tests as root.
//!
//! With `BENCH_PROCESS_PER_TEST=1` each test runs in a process of its own,
//! as cargo-nextest runs them (`<binary> --exact <name> --nocapture`, with
//! `NEXTEST_EXECUTION_MODE=process-per-test`), as many at once as there are
//! test threads; the overhead is then per test process.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

const TESTS_PER_KIND: f64 = 200.0;
const SETTLE: std::time::Duration = std::time::Duration::from_millis(700);
/// Test filters; `ROOTLESS` runs as an ordinary user, in rootless mode,
/// `UNSETTLED` with `NETNS_TEST_SETTLE=off`.
const KINDS: [&str; 7] = [
    "plain::", "floor::", "view::", "netns::", "veth::", "netns::", "veth::",
];
const FLOOR: usize = 1;
const VIEW: usize = 2;
const NETNS: usize = 3;
const VETH: usize = 4;
const ROOTLESS: usize = 5;
const UNSETTLED: usize = 6;
const NOBODY: u32 = 65534;

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    let fixture = build_fixture();
    // A copy that uid 65534 can run, removed at the end.
    let copy = tempfile::Builder::new()
        .prefix("netns-test-bench-")
        .tempdir()
        .expect("temporary directory");
    let rootless_fixture = copy.path().join("overhead_fixture");
    std::fs::copy(&fixture, &rootless_fixture).expect("copy the fixture");
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(copy.path(), open).expect("chmod");
    }
    let as_root = nix::unistd::geteuid().is_root();
    println!("fixture: {fixture}\nrounds: {rounds}, {TESTS_PER_KIND} tests per kind\n");
    println!(
        "| test threads | floor (ms/test) | floor + private /sys, /etc/hosts, /proc/net, accept_dad (ms/test) | #[netns_test] (ms/test) | netns / floor | netns / (floor + view) | #[netns_test(veth)] (ms/test) | veth, not settled (ms/test) | rootless #[netns_test] (ms/test) | rootless / root |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let run = |index: usize, threads: usize| -> Option<f64> {
        if index == ROOTLESS {
            as_root.then(|| {
                run_kind(
                    rootless_fixture.to_str().unwrap(),
                    KINDS[index],
                    threads,
                    Some(NOBODY),
                    false,
                )
            })
        } else {
            Some(run_kind(
                &fixture,
                KINDS[index],
                threads,
                None,
                index == UNSETTLED,
            ))
        }
    };
    let thread_counts: Vec<usize> = match std::env::var("BENCH_THREADS") {
        Ok(list) => list.split(',').filter_map(|t| t.parse().ok()).collect(),
        Err(_) => vec![1, 2],
    };
    // The order of the kinds is shuffled each round (xorshift64*, seeded
    // from the clock): no kind always runs after the same one.
    let mut random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for threads in thread_counts {
        // Warm up: page cache, first namespaces.
        for index in 0..KINDS.len() {
            run(index, threads);
        }
        let mut floor = Vec::new();
        let mut view = Vec::new();
        let mut netns = Vec::new();
        let mut ratio = Vec::new();
        let mut view_ratio = Vec::new();
        let mut veth = Vec::new();
        let mut unsettled = Vec::new();
        let mut rootless = Vec::new();
        let mut rootless_ratio = Vec::new();
        let mut order: Vec<usize> = (0..KINDS.len()).collect();
        for _ in 0..rounds {
            shuffle(&mut order, &mut random);
            let mut seconds = [0.0; KINDS.len()];
            for &index in &order {
                seconds[index] = run(index, threads).unwrap_or(f64::NAN);
            }
            let per_test = |s: f64| (s - seconds[0]) * 1000.0 / TESTS_PER_KIND;
            floor.push(per_test(seconds[FLOOR]));
            view.push(per_test(seconds[VIEW]));
            netns.push(per_test(seconds[NETNS]));
            ratio.push(per_test(seconds[NETNS]) / per_test(seconds[FLOOR]));
            view_ratio.push(per_test(seconds[NETNS]) / per_test(seconds[VIEW]));
            veth.push(per_test(seconds[VETH]));
            unsettled.push(per_test(seconds[UNSETTLED]));
            rootless.push(per_test(seconds[ROOTLESS]));
            rootless_ratio.push(per_test(seconds[ROOTLESS]) / per_test(seconds[NETNS]));
        }
        println!(
            "| {threads} | {:.3} | {:.3} | {:.3} | {:.2}× | {:.2}× | {:.3} | {:.3} | {} |",
            median(&mut floor),
            median(&mut view),
            median(&mut netns),
            median(&mut ratio),
            median(&mut view_ratio),
            median(&mut veth),
            median(&mut unsettled),
            if as_root {
                format!(
                    "{:.3} | {:.2}×",
                    median(&mut rootless),
                    median(&mut rootless_ratio)
                )
            } else {
                "(needs root to switch users) | –".to_owned()
            }
        );
    }
}

/// Fisher–Yates with a xorshift64* generator whose state is `state`.
fn shuffle(items: &mut [usize], state: &mut u64) {
    for last in (1..items.len()).rev() {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let draw = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        items.swap(last, (draw % (last as u64 + 1)) as usize);
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run_kind(fixture: &str, filter: &str, threads: usize, uid: Option<u32>, unsettled: bool) -> f64 {
    // Let the kernel finish tearing down the previous run's namespaces (it
    // does so asynchronously), so that no run pays for another's.
    std::thread::sleep(SETTLE);
    let settle = if unsettled { "off" } else { "on" };
    if std::env::var_os("BENCH_PROCESS_PER_TEST").is_some() {
        return run_each_in_a_process(fixture, filter, threads, uid, settle);
    }
    let mut command = Command::new(fixture);
    command.env("NETNS_TEST_SETTLE", settle);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid).current_dir("/");
    }
    let start = Instant::now();
    let status = command
        .args([filter, "-q", &format!("--test-threads={threads}")])
        .stdout(Stdio::null())
        .status()
        .expect("run the fixture");
    let elapsed = start.elapsed().as_secs_f64();
    assert!(status.success(), "{filter} tests failed");
    elapsed
}

/// Runs each test of `filter` in a process of its own, `threads` at once,
/// as cargo-nextest does: the wall time of all of them.
fn run_each_in_a_process(
    fixture: &str,
    filter: &str,
    threads: usize,
    uid: Option<u32>,
    settle: &str,
) -> f64 {
    let listed = Command::new(fixture)
        .args([filter, "--list", "--format", "terse"])
        .output()
        .expect("list the fixture's tests");
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test").map(str::to_owned))
        .collect();
    assert_eq!(names.len() as f64, TESTS_PER_KIND, "tests of {filter}");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(index) else { break };
                    let mut command = Command::new(fixture);
                    // Root's runs switch to root: both start their process
                    // the same way (std forks instead of posix_spawn when a
                    // uid is set), which counts here, once per test.
                    let uid = uid.unwrap_or(0);
                    command.uid(uid).gid(uid).current_dir("/");
                    let status = command
                        .args(["--exact", name, "--nocapture"])
                        .env("NEXTEST_EXECUTION_MODE", "process-per-test")
                        .env("NETNS_TEST_SETTLE", settle)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("run the fixture");
                    assert!(status.success(), "{name} failed");
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

/// Builds the fixture in release mode, or with `BENCH_PROFILE=dev` as a
/// plain `cargo test` builds it (no optimization).
fn build_fixture() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile = match std::env::var("BENCH_PROFILE").as_deref() {
        Ok("dev") => "--profile=dev",
        _ => "--release",
    };
    let output = Command::new(cargo)
        .args([
            "test",
            profile,
            "--test",
            "overhead_fixture",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "building the fixture failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| line.contains("\"name\":\"overhead_fixture\""))
        .find_map(|line| {
            let start = line.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .expect("cargo printed no executable for overhead_fixture")
}
