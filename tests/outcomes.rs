//! How tests fail: each fixture below is `#[ignore]`d and inert unless
//! `NETNS_TEST_FIXTURES=1`; the driver tests re-run this binary on one
//! fixture and check its exit status and output.

mod common;

use netns_test::netns_test;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn armed() -> bool {
    std::env::var_os("NETNS_TEST_FIXTURES").is_some()
}

/// Runs one fixture of this binary; `drop_caps` removes CAP_SYS_ADMIN and
/// CAP_NET_ADMIN from the child (it stays root, without those capabilities)
/// and forces root mode, whose failure is under test (without the
/// capabilities, auto mode would run the test rootless; see rootless.rs).
fn run_fixture(name: &str, drop_caps: bool) -> (Output, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NETNS_TEST_FIXTURES", "1");
    if drop_caps {
        command.env("NETNS_TEST_MODE", "root");
        // SAFETY: prctl is async-signal-safe; nothing is allocated here.
        unsafe {
            command.pre_exec(|| {
                for capability in [21, 12] {
                    if nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let output = command.output().unwrap();
    let text = common::text(&output);
    (output, text)
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_returns_an_error() -> Result<(), String> {
    if armed() {
        return Err("the error value of the test".into());
    }
    Ok(())
}

#[test]
fn an_error_result_fails_the_test() {
    let (output, text) = run_fixture("fixture_returns_an_error", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("the error value of the test"), "{text}");
    assert!(text.contains("1 failed"), "{text}");
}

/// A return type that is not `Send`, with a timeout: the value never
/// crosses threads, only whether it passed.
#[netns_test(timeout = "5s")]
#[ignore = "fixture"]
fn fixture_returns_a_boxed_error_with_a_timeout() -> Result<(), Box<dyn std::error::Error>> {
    std::net::TcpListener::bind("127.0.0.1:80")?;
    if armed() {
        return Err("a boxed error under a timeout".into());
    }
    Ok(())
}

#[test]
fn a_non_send_result_works_with_a_timeout() {
    let (output, text) = run_fixture("fixture_returns_a_boxed_error_with_a_timeout", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("a boxed error under a timeout"), "{text}");
    assert!(text.contains("1 failed"), "{text}");
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_panics() {
    if armed() {
        panic!("a panic inside the namespace");
    }
}

#[test]
fn a_panic_fails_the_test_with_its_message() {
    let (output, text) = run_fixture("fixture_panics", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("a panic inside the namespace"), "{text}");
}

#[netns_test(timeout = "300ms")]
#[ignore = "fixture"]
fn fixture_hangs() {
    if armed() {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_timeout_fails_at_once_and_names_the_limit() {
    let start = Instant::now();
    let (output, text) = run_fixture("fixture_hangs", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("timed out after 300 ms"), "{text}");
    assert!(text.contains("timeout = \"300ms\""), "{text}");
    // The body sleeps 60 s: the test process must not wait for it.
    assert!(start.elapsed() < Duration::from_secs(30), "{text}");
}

#[netns_test(timeout = "300ms")]
#[should_panic]
#[ignore = "fixture"]
fn fixture_hangs_expecting_a_panic() {
    if armed() {
        std::thread::sleep(Duration::from_secs(60));
    }
    panic!("inert fixture");
}

#[test]
fn a_timeout_is_not_the_expected_panic() {
    let (output, text) = run_fixture("fixture_hangs_expecting_a_panic", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("timed out"), "{text}");
    assert!(text.contains("did not panic as expected"), "{text}");
}

#[netns_test]
#[ignore = "fixture"]
fn fixture_needs_privilege() {}

#[test]
fn without_privilege_the_failure_names_the_capability_and_the_fix() {
    let (output, text) = run_fixture("fixture_needs_privilege", true);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("cannot set up the network namespace"),
        "{text}"
    );
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(
        text.contains("lacks CAP_SYS_ADMIN and CAP_NET_ADMIN"),
        "{text}"
    );
    assert!(text.contains("sudo -E cargo test"), "{text}");
}

#[netns_test]
#[should_panic]
#[ignore = "fixture"]
fn fixture_needs_privilege_expecting_a_panic() {
    panic!("the body must not run when setup fails");
}

#[test]
fn a_setup_failure_is_not_the_expected_panic() {
    let (output, text) = run_fixture("fixture_needs_privilege_expecting_a_panic", true);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("CAP_SYS_ADMIN"), "{text}");
    assert!(text.contains("did not panic as expected"), "{text}");
    assert!(!text.contains("the body must not run"), "{text}");
}

#[test]
#[netns_test]
#[ignore = "fixture"]
fn fixture_test_attribute_above() {}

#[test]
fn a_test_attribute_above_is_reported_not_run_twice_silently() {
    let (output, text) = run_fixture("fixture_test_attribute_above", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("started a second time"), "{text}");
    assert!(text.contains("Remove that #[test]"), "{text}");
}
