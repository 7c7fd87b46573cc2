//! The runtime at work without a test harness: two fresh network namespaces
//! bind the same port at the same time, and each prints what it sees.
//!
//! ```text
//! sudo cargo run --example quickstart     # or as root
//! ```

use netns_test::NetNs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier};

fn main() -> Result<(), netns_test::Error> {
    let both_bound = Arc::new(Barrier::new(2));
    let mut handles = Vec::new();
    for name in ["first", "second"] {
        let ns = NetNs::new()?;
        let both_bound = Arc::clone(&both_bound);
        handles.push(ns.clone().spawn(move || {
            let listener = TcpListener::bind("127.0.0.1:80").expect("bind 127.0.0.1:80");
            both_bound.wait(); // both namespaces hold port 80 now
            let mut client = TcpStream::connect("127.0.0.1:80").unwrap();
            client.write_all(name.as_bytes()).unwrap();
            drop(client);
            let mut received = String::new();
            listener.accept().unwrap().0.read_to_string(&mut received).unwrap();
            let interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let hosts_lines = std::fs::read_to_string("/etc/hosts").unwrap().lines().count();
            format!(
                "{name:>6}: namespace net:[{}], interfaces {interfaces:?}, 127.0.0.1:80 bound and echoed {received:?}, \
                 /etc/hosts a private copy ({hosts_lines} lines)",
                ns.inode()
            )
        }));
    }
    for handle in handles {
        println!("{}", handle.join().expect("namespace thread panicked"));
    }
    let host_interfaces = std::fs::read_dir("/sys/class/net")
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "  host: net:[{}], {host_interfaces} interfaces, untouched; the namespaces are gone with their handles",
        std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.display().to_string())
            .unwrap_or_default()
            .trim_start_matches("net:[")
            .trim_end_matches(']')
    );
    Ok(())
}
