//! Helpers for tests that re-run their own binary as an ordinary user.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `netns-test` binary of the `netns-test-cli` package, which a
/// workspace `cargo test` (or `cargo nextest run`) builds before it runs any
/// test: next to this test binary's `deps/` directory.
pub fn netns_test_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps");
    let binary = profile.join("netns-test");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p netns-test-cli` (a workspace \
         `cargo test` builds it first)",
        binary.display()
    );
    binary
}

/// The interfaces the calling thread's `/sys/class/net` shows, sorted.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The uid and gid the rootless drivers run as.
pub const NOBODY: u32 = 65534;

/// This binary, copied into a directory any user can read, removed on drop.
pub struct Copy {
    pub dir: tempfile::TempDir,
}

impl Copy {
    pub fn new() -> Copy {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("netns-test-rootless-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(std::env::current_exe().unwrap(), dir.path().join("tests")).unwrap();
        Copy { dir }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.dir.path().join("tests"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NETNS_TEST_FIXTURES", "1")
            .env("RUST_BACKTRACE", "0")
            .env_remove("NETNS_TEST_MODE")
            .env_remove("NETNS_TEST_UNSUPPORTED")
            // Under cargo-nextest, the copy still runs its tests as cargo test does.
            .env_remove("NEXTEST_EXECUTION_MODE");
        command
    }
}

/// Runs `spawn` again while the copy is busy: another test thread may have
/// forked while the copy was open for writing, holding it until its exec.
pub fn retry_busy<T>(mut spawn: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..100 {
        match spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
    panic!("the copied test binary stayed busy");
}

/// Who a [`rerun`] of a test binary runs as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// As uid 65534 in rootless mode; skipped unless this process is root.
    AsNobody,
    /// As uid 65534 when this process is root, else as this user, with
    /// no `nft` or `conntrack` on PATH (an empty directory).
    AsNobodyWithoutNft,
}

/// The calling test's binary again (a [`Copy`]), with `args` (the
/// `--skip`s, say), as `who` says; asserts that it passes, with
/// `passed` ("38 passed") in its output. Does nothing in the copy itself.
pub fn rerun(args: &[&str], who: Rerun, passed: &str) {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("NETNS_TEST_FIXTURES").is_some() {
        return; // the copy running as an ordinary user
    }
    let root = nix::unistd::geteuid().is_root();
    if who == Rerun::AsNobody && !root {
        println!(
            "skipped: switching to an ordinary user needs root (this run is rootless already)"
        );
        return;
    }
    let copy = Copy::new();
    let empty = tempfile::tempdir().unwrap();
    let output = retry_busy(|| {
        let mut command = copy.command(args);
        if who == Rerun::AsNobodyWithoutNft {
            command.env("PATH", empty.path());
        }
        if root {
            command.uid(NOBODY).gid(NOBODY);
        }
        command.output()
    });
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains(passed), "{text}");
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A packet of a pcapng capture: its interface's name, its bytes, and its
/// comment.
pub struct Packet {
    pub interface: String,
    pub data: Vec<u8>,
    pub comment: Option<String>,
}

/// The packets of a pcapng file as netns-test writes it (one section, in
/// this machine's byte order), checking its blocks' shape on the way.
pub fn pcapng_packets(file: &[u8]) -> Vec<Packet> {
    let word = |at: usize| u32::from_ne_bytes(file[at..at + 4].try_into().unwrap());
    assert_eq!(word(0), 0x0A0D_0D0A, "a pcapng section header first");
    assert_eq!(word(8), 0x1A2B_3C4D, "byte-order magic");
    let mut interfaces = Vec::new();
    let mut packets = Vec::new();
    let mut at = 0;
    while at + 12 <= file.len() {
        let (kind, total) = (word(at), word(at + 4) as usize);
        assert_eq!(word(at + total - 4) as usize, total, "block at {at}");
        let body = &file[at + 8..at + total - 4];
        // Options: code, length, value padded to 4; code 0 ends them.
        let options = |mut rest: &[u8]| {
            let mut found = Vec::new();
            while rest.len() >= 4 {
                let code = u16::from_ne_bytes([rest[0], rest[1]]);
                let len = u16::from_ne_bytes([rest[2], rest[3]]) as usize;
                if code == 0 {
                    break;
                }
                found.push((
                    code,
                    String::from_utf8_lossy(&rest[4..4 + len]).into_owned(),
                ));
                rest = &rest[4 + len.next_multiple_of(4)..];
            }
            found
        };
        match kind {
            1 => {
                assert_eq!(u16::from_ne_bytes([body[0], body[1]]), 1, "Ethernet");
                let name = options(&body[8..])
                    .into_iter()
                    .find(|(code, _)| *code == 2)
                    .map(|(_, name)| name)
                    .expect("if_name");
                interfaces.push(name);
            }
            6 => {
                let id = u32::from_ne_bytes(body[0..4].try_into().unwrap()) as usize;
                let kept = u32::from_ne_bytes(body[12..16].try_into().unwrap()) as usize;
                let data = body[20..20 + kept].to_vec();
                let comment = options(&body[20 + kept.next_multiple_of(4)..])
                    .into_iter()
                    .find(|(code, _)| *code == 1)
                    .map(|(_, text)| text);
                packets.push(Packet {
                    interface: interfaces[id].clone(),
                    data,
                    comment,
                });
            }
            _ => {}
        }
        at += total;
    }
    assert_eq!(at, file.len(), "whole blocks");
    packets
}
