//! Build and teardown time of topologies: a 20-node line, a 50-node star
//! (a router in the middle), a switch with 20 members, and 4 lines built in
//! parallel; and what waiting for fresh links to carry packets costs.
//!
//! ```text
//! cargo bench --bench topology          # 7 rounds
//! cargo bench --bench topology -- 15
//! ```
//!
//! Time per node+link = (build + drop) / (nodes + links), median over rounds.
//! Dropping returns once the file descriptors are closed; the kernel frees
//! the namespaces and links asynchronously after that (the pause between
//! runs lets it finish).
//!
//! Each topology is built twice a round, in an order shuffled each round,
//! each time in a process of its own: as `link`, `attach` and `set_up` work
//! (they return once the link carries its first packet), and with
//! `NETNS_TEST_SETTLE=off` (they return without waiting for the kernel to
//! finish bringing the link up, as before). Settling per link = the median
//! time of a `link` (or `attach`) call settled − that of a call not settled,
//! the median of the rounds' differences.

use netns_test::Network;
use std::process::Command;
use std::time::{Duration, Instant};

/// (nodes and links, each `link` or `attach` call's time, build, drop)
type Built = (usize, Vec<f64>, Duration, Duration);

/// Times one call, in milliseconds, into `times`.
fn timed<T>(times: &mut Vec<f64>, call: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = call();
    times.push(start.elapsed().as_secs_f64() * 1000.0);
    value
}

fn line(nodes: usize) -> Built {
    let start = Instant::now();
    let net = Network::new();
    let nodes: Vec<_> = (0..nodes)
        .map(|i| net.node(&format!("n{i}")).unwrap())
        .collect();
    let mut times = Vec::new();
    let links: Vec<_> = nodes
        .windows(2)
        .map(|p| timed(&mut times, || net.link(&p[0], &p[1]).unwrap()))
        .collect();
    let built = start.elapsed();
    let count = nodes.len() + links.len();
    let start = Instant::now();
    drop((links, nodes, net));
    (count, times, built, start.elapsed())
}

fn star(leaves: usize) -> Built {
    let start = Instant::now();
    let net = Network::new();
    let hub = net.router("hub").unwrap();
    let leaves: Vec<_> = (0..leaves)
        .map(|i| net.node(&format!("leaf{i}")).unwrap())
        .collect();
    let mut times = Vec::new();
    let links: Vec<_> = leaves
        .iter()
        .map(|leaf| timed(&mut times, || net.link(leaf, &hub).unwrap()))
        .collect();
    let built = start.elapsed();
    let count = 1 + leaves.len() + links.len();
    let start = Instant::now();
    drop((links, leaves, hub, net));
    (count, times, built, start.elapsed())
}

fn switch(members: usize) -> Built {
    let start = Instant::now();
    let net = Network::new();
    let lan = net.switch("lan").unwrap();
    let members: Vec<_> = (0..members)
        .map(|i| net.node(&format!("m{i}")).unwrap())
        .collect();
    let mut times = Vec::new();
    let links: Vec<_> = members
        .iter()
        .map(|member| timed(&mut times, || net.attach(member, &lan).unwrap()))
        .collect();
    let built = start.elapsed();
    let count = 1 + members.len() + links.len();
    let start = Instant::now();
    drop((links, members, lan, net));
    (count, times, built, start.elapsed())
}

fn parallel_lines(networks: usize, nodes: usize) -> Built {
    let start = Instant::now();
    let threads: Vec<_> = (0..networks)
        .map(|_| std::thread::spawn(move || line(nodes)))
        .collect();
    let (mut count, mut times) = (0, Vec::new());
    for thread in threads {
        let (c, t, _, _) = thread.join().unwrap();
        count += c;
        times.extend(t);
    }
    (count, times, start.elapsed(), Duration::ZERO)
}

type Shape = (&'static str, fn() -> Built);
const SHAPES: [Shape; 4] = [
    ("20-node line", || line(20)),
    ("50-node star", || star(49)),
    ("switch with 20 members", || switch(20)),
    ("4 × 10-node lines in parallel", || parallel_lines(4, 10)),
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// In a process of its own: builds shape `index` once to warm up, then once
/// measured, and prints `count build_ms drop_ms link_ms` (the median time
/// of a `link` or `attach` call).
fn child(index: usize) {
    line(3);
    std::thread::sleep(Duration::from_millis(300));
    let (count, mut times, built, dropped) = SHAPES[index].1();
    println!(
        "{count} {} {} {}",
        built.as_secs_f64() * 1000.0,
        dropped.as_secs_f64() * 1000.0,
        median(&mut times)
    );
}

/// Builds shape `index` in a child process, settling links or not:
/// (nodes and links, build, drop, median link time).
fn measure(index: usize, settle: bool) -> (usize, f64, f64, f64) {
    // Let the kernel finish tearing down the previous run's namespaces.
    std::thread::sleep(Duration::from_millis(500));
    let mut command = Command::new(std::env::current_exe().expect("the bench's path"));
    command.args(["--child", &index.to_string()]);
    if !settle {
        command.env("NETNS_TEST_SETTLE", "off");
    } else {
        command.env_remove("NETNS_TEST_SETTLE");
    }
    let output = command.output().expect("run the bench again");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    (
        fields[0].parse().unwrap(),
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
        fields[3].parse().unwrap(),
    )
}

/// Fisher–Yates with a xorshift64* generator whose state is `state`.
fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for last in (1..items.len()).rev() {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let draw = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        items.swap(last, (draw % (last as u64 + 1)) as usize);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(args[at + 1].parse().expect("a shape's number"));
        return;
    }
    if !netns_test::privileged() {
        eprintln!("skipped: the topology benchmark needs root");
        return;
    }
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(7);
    println!("rounds: {rounds}\n");
    println!(
        "| topology | nodes + links | build (ms) | drop (ms) | per node+link (ms) | `link`/`attach` (ms) | the same, links not settled (ms) | settling per link (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut runs: Vec<(usize, bool)> = (0..SHAPES.len())
        .flat_map(|index| [(index, true), (index, false)])
        .collect();
    // Per shape, per round: build, drop, per node+link (settled), and the
    // median link time settled and not.
    let mut built = vec![Vec::new(); SHAPES.len()];
    let mut dropped = vec![Vec::new(); SHAPES.len()];
    let mut per = vec![Vec::new(); SHAPES.len()];
    let mut link = vec![Vec::new(); SHAPES.len()];
    let mut link_unsettled = vec![Vec::new(); SHAPES.len()];
    let mut settling = vec![Vec::new(); SHAPES.len()];
    let mut counts = vec![0; SHAPES.len()];
    for _ in 0..rounds {
        shuffle(&mut runs, &mut random);
        let mut link_times = vec![[0.0; 2]; SHAPES.len()];
        for &(index, settle) in &runs {
            let (count, b, d, l) = measure(index, settle);
            link_times[index][usize::from(!settle)] = l;
            if settle {
                counts[index] = count;
                built[index].push(b);
                dropped[index].push(d);
                per[index].push((b + d) / count as f64);
            }
        }
        for (index, [settled, unsettled]) in link_times.into_iter().enumerate() {
            link[index].push(settled);
            link_unsettled[index].push(unsettled);
            settling[index].push(settled - unsettled);
        }
    }
    for (index, (name, _)) in SHAPES.iter().enumerate() {
        println!(
            "| {name} | {} | {:.1} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} |",
            counts[index],
            median(&mut built[index]),
            median(&mut dropped[index]),
            median(&mut per[index]),
            median(&mut link[index]),
            median(&mut link_unsettled[index]),
            median(&mut settling[index]),
        );
    }
}
