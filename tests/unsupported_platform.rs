//! Platforms without network namespaces: a `#[netns_test]` fails saying so,
//! or is skipped under `NETNS_TEST_UNSUPPORTED=skip`, without running its
//! body; plain tests run; the API fails with `Unsupported` errors.
//!
//! Compiled where that side of the crate is: on other platforms, and on
//! Linux under `RUSTFLAGS="--cfg netns_test_unsupported_platform"`. The
//! fixtures below are `#[ignore]`d; the driver tests re-run this binary on
//! one fixture and check its exit status and output.
#![cfg(not(all(target_os = "linux", not(netns_test_unsupported_platform))))]

use netns_test::{NetNs, Network, netns_test};
use std::io::ErrorKind;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What a fixture body would print, had it run.
const BODY_RAN: &str = "the body of a netns test ran";

#[netns_test]
#[ignore = "fixture"]
fn fixture_sync() {
    println!("{BODY_RAN}");
}

#[netns_test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fixture"]
async fn fixture_async() {
    println!("{BODY_RAN}");
}

#[netns_test(timeout = "300ms")]
#[ignore = "fixture"]
fn fixture_timeout() {
    println!("{BODY_RAN}");
    std::thread::sleep(Duration::from_secs(60));
}

#[netns_test(timeout = "300ms")]
#[ignore = "fixture"]
async fn fixture_async_timeout() -> Result<(), String> {
    println!("{BODY_RAN}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}

#[netns_test(veth)]
#[ignore = "fixture"]
fn fixture_veth() {
    println!("{BODY_RAN}");
}

const NETNS_FIXTURES: [&str; 5] = [
    "fixture_sync",
    "fixture_async",
    "fixture_timeout",
    "fixture_async_timeout",
    "fixture_veth",
];

#[netns_test]
#[should_panic]
#[ignore = "fixture"]
fn fixture_should_panic() {
    panic!("{BODY_RAN}");
}

#[test]
#[ignore = "fixture"]
fn fixture_plain() {
    println!("a plain test ran");
}

/// Runs one fixture of this binary, with `NETNS_TEST_UNSUPPORTED=skip` or
/// without it; returns its output, stdout then stderr.
fn run_fixture(name: &str, skip: bool) -> (Output, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("NETNS_TEST_UNSUPPORTED");
    if skip {
        command.env("NETNS_TEST_UNSUPPORTED", "skip");
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn skipped_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|line| line.starts_with("skipped:"))
}

#[test]
fn a_netns_test_fails_naming_itself_and_the_platform() {
    for fixture in NETNS_FIXTURES {
        let start = Instant::now();
        let (output, text) = run_fixture(fixture, false);
        assert!(!output.status.success(), "{fixture}: {text}");
        assert!(text.contains("1 failed"), "{fixture}: {text}");
        assert!(
            text.contains(&format!(
                "network namespaces need Linux: netns-test cannot run test `unsupported_platform::{fixture}` on {}",
                std::env::consts::OS
            )),
            "{fixture}: {text}"
        );
        assert!(
            text.contains("NETNS_TEST_UNSUPPORTED=skip"),
            "{fixture}: {text}"
        );
        assert!(!text.contains(BODY_RAN), "{fixture}: {text}");
        assert_eq!(skipped_lines(&text).count(), 0, "{fixture}: {text}");
        // The timeout fixtures' bodies would sleep 60 s.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{fixture}: {text}"
        );
    }
}

#[test]
fn under_skip_a_netns_test_passes_with_one_skipped_line() {
    for fixture in NETNS_FIXTURES {
        let (output, text) = run_fixture(fixture, true);
        assert!(output.status.success(), "{fixture}: {text}");
        assert!(text.contains("1 passed"), "{fixture}: {text}");
        let skipped: Vec<&str> = skipped_lines(&text).collect();
        assert_eq!(skipped.len(), 1, "{fixture}: {text}");
        let prefix = format!(
            "skipped: unsupported_platform::{fixture} (network namespaces need Linux: netns-test cannot run test"
        );
        assert!(skipped[0].starts_with(&prefix), "{fixture}: {text}");
        assert!(
            skipped[0].ends_with(')') && skipped[0].contains(std::env::consts::OS),
            "{fixture}: {text}"
        );
        assert!(!text.contains(BODY_RAN), "{fixture}: {text}");
    }
}

#[test]
fn the_failure_is_not_the_expected_panic() {
    let (output, text) = run_fixture("fixture_should_panic", false);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("network namespaces need Linux"), "{text}");
    assert!(text.contains("did not panic as expected"), "{text}");
    assert!(!text.contains(BODY_RAN), "{text}");
}

#[test]
fn a_plain_test_runs_normally() {
    for skip in [false, true] {
        let (output, text) = run_fixture("fixture_plain", skip);
        assert!(output.status.success(), "{text}");
        assert!(text.contains("a plain test ran"), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        assert_eq!(skipped_lines(&text).count(), 0, "{text}");
    }
}

fn assert_unsupported(error: netns_test::Error, operation: &str) {
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    // What a test may skip on: this machine cannot, nothing went wrong.
    assert!(error.is_refusal(), "{error:?}");
    assert_eq!(error.operation(), operation);
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "{operation} failed: network namespaces need Linux, and this is {}",
            std::env::consts::OS
        )),
        "{text}"
    );
    assert_eq!(error.raw_os_error(), None);
    assert_eq!(std::io::Error::from(error).kind(), ErrorKind::Unsupported);
}

#[test]
fn making_a_namespace_fails_with_unsupported() {
    assert_unsupported(NetNs::new().unwrap_err(), "NetNs::new");
    let net = Network::new();
    assert_unsupported(net.node("a").unwrap_err(), "Network::node");
    assert_unsupported(net.router("r").unwrap_err(), "Network::router");
    assert_unsupported(net.switch("s").err().unwrap(), "Network::switch");
}

#[test]
fn there_is_no_current_namespace() {
    assert_eq!(NetNs::try_current(), None);
    assert!(!netns_test::privileged());
    let panic = std::panic::catch_unwind(NetNs::current).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("network namespaces need Linux"),
        "{message}"
    );
}
