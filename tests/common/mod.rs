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

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
