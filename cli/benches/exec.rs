//! Start-up overhead of `netns-test exec -- true` against `true`: each
//! round runs every kind `RUNS` times, in a rotating order, and takes the
//! mean per run; the table shows the medians over rounds, and the overhead
//! over plain `true`.
//!
//! ```text
//! cargo bench -p netns-test-cli --bench exec          # 21 rounds
//! cargo bench -p netns-test-cli --bench exec -- 41    # more rounds
//! ```
//!
//! As root it also runs `exec --veth -- true`, and `exec -- true` as uid
//! 65534 (rootless: a user namespace of its own first), from a copy of the
//! binary in a temporary directory any user can read.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: u32 = 50;
const NOBODY: u32 = 65534;

struct Kind {
    label: &'static str,
    command: Box<dyn Fn() -> Command>,
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(21);
    let binary = env!("CARGO_BIN_EXE_netns-test");
    let root = runs_as_root();
    let copy = tempfile::Builder::new()
        .prefix("netns-test-exec-bench-")
        .tempdir()
        .expect("temporary directory");
    let rootless_binary = copy.path().join("netns-test");
    std::fs::copy(binary, &rootless_binary).expect("copy the binary");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let mut kinds = vec![
        Kind {
            label: "`true`",
            command: Box::new(|| Command::new("true")),
        },
        Kind {
            label: "`netns-test exec -- true`",
            command: Box::new(move || {
                let mut c = Command::new(binary);
                c.args(["exec", "--", "true"]);
                c
            }),
        },
    ];
    if root {
        kinds.push(Kind {
            label: "`netns-test exec --veth -- true`",
            command: Box::new(move || {
                let mut c = Command::new(binary);
                c.args(["exec", "--veth", "--", "true"]);
                c
            }),
        });
        let rootless = rootless_binary.clone();
        kinds.push(Kind {
            label: "`netns-test exec -- true` as uid 65534 (rootless)",
            command: Box::new(move || {
                let mut c = Command::new(&rootless);
                c.args(["exec", "--", "true"])
                    .current_dir("/")
                    .uid(NOBODY)
                    .gid(NOBODY);
                c
            }),
        });
    }
    for kind in &kinds {
        run(kind, 5); // warm up
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for offset in 0..kinds.len() {
            let index = (round + offset) % kinds.len();
            samples[index].push(run(&kinds[index], RUNS));
        }
    }
    println!("binary: {binary}\nrounds: {rounds}, {RUNS} runs per kind per round\n");
    println!("| command | median per run (ms) | overhead over `true` (ms) |");
    println!("|---|---:|---:|");
    let base = median(&mut samples[0].clone());
    for (kind, samples) in kinds.iter().zip(&mut samples) {
        let m = median(samples);
        println!("| {} | {:.3} | {:.3} |", kind.label, m, m - base);
    }
}

/// Mean wall time of one run, in ms, over `runs` runs.
fn run(kind: &Kind, runs: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..runs {
        let status = (kind.command)()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run");
        assert!(status.success(), "{} failed: {status}", kind.label);
    }
    duration_ms(start.elapsed()) / f64::from(runs)
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Whether this process runs as root, from `/proc/self/status`.
fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
