//! Build and teardown time of topologies: a 20-node line, a 50-node star
//! (a router in the middle), and 4 lines built in parallel.
//!
//! ```text
//! cargo bench --bench topology          # 7 rounds
//! cargo bench --bench topology -- 15
//! ```
//!
//! Time per node+link = (build + drop) / (nodes + links), median over rounds.
//! Dropping returns once the file descriptors are closed; the kernel frees
//! the namespaces and links asynchronously after that (the settle pause
//! between rounds lets it finish).

use netns_test::Network;
use std::time::{Duration, Instant};

fn line(nodes: usize) -> (usize, Duration, Duration) {
    let start = Instant::now();
    let net = Network::new();
    let nodes: Vec<_> = (0..nodes)
        .map(|i| net.node(&format!("n{i}")).unwrap())
        .collect();
    let links: Vec<_> = nodes
        .windows(2)
        .map(|p| net.link(&p[0], &p[1]).unwrap())
        .collect();
    let built = start.elapsed();
    let count = nodes.len() + links.len();
    let start = Instant::now();
    drop((links, nodes, net));
    (count, built, start.elapsed())
}

fn star(leaves: usize) -> (usize, Duration, Duration) {
    let start = Instant::now();
    let net = Network::new();
    let hub = net.router("hub").unwrap();
    let leaves: Vec<_> = (0..leaves)
        .map(|i| net.node(&format!("leaf{i}")).unwrap())
        .collect();
    let links: Vec<_> = leaves
        .iter()
        .map(|leaf| net.link(leaf, &hub).unwrap())
        .collect();
    let built = start.elapsed();
    let count = 1 + leaves.len() + links.len();
    let start = Instant::now();
    drop((links, leaves, hub, net));
    (count, built, start.elapsed())
}

fn parallel_lines(networks: usize, nodes: usize) -> (usize, Duration, Duration) {
    let start = Instant::now();
    let threads: Vec<_> = (0..networks)
        .map(|_| std::thread::spawn(move || line(nodes)))
        .collect();
    let count: usize = threads.into_iter().map(|t| t.join().unwrap().0).sum();
    (count, start.elapsed(), Duration::ZERO)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if !netns_test::privileged() {
        eprintln!("skipped: the topology benchmark needs root");
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    println!("rounds: {rounds}\n");
    println!("| topology | nodes + links | build (ms) | drop (ms) | per node+link (ms) |");
    println!("|---|---:|---:|---:|---:|");
    type Shape = (&'static str, fn() -> (usize, Duration, Duration));
    let shapes: [Shape; 3] = [
        ("20-node line", || line(20)),
        ("50-node star", || star(49)),
        ("4 × 10-node lines in parallel", || parallel_lines(4, 10)),
    ];
    for (name, build) in shapes {
        build(); // warm up
        let (mut built, mut dropped, mut per) = (Vec::new(), Vec::new(), Vec::new());
        let mut count = 0;
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_millis(500));
            let (n, b, d) = build();
            count = n;
            built.push(b.as_secs_f64() * 1000.0);
            dropped.push(d.as_secs_f64() * 1000.0);
            per.push((b + d).as_secs_f64() * 1000.0 / n as f64);
        }
        println!(
            "| {name} | {count} | {:.1} | {:.2} | {:.3} |",
            median(&mut built),
            median(&mut dropped),
            median(&mut per)
        );
    }
}
