//! `#[netns_test]` with rstest, tokio and libtest's own attributes, in the
//! orders users write. Each body checks that it runs inside a fresh
//! namespace; `each_test_is_registered_once` checks the harness's list.

use netns_test::{NetNs, netns_test};
use rstest::{fixture, rstest};
use std::net::TcpListener;

fn assert_inside() {
    let names: Vec<_> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["lo"]);
    assert!(NetNs::try_current().is_some());
    TcpListener::bind("127.0.0.1:80").expect("port 80 is free in a fresh namespace");
}

#[fixture]
fn port() -> u16 {
    80
}

#[rstest]
#[case(1)]
#[case(2)]
#[netns_test]
fn rstest_above(#[case] n: u32) {
    assert!(n > 0);
    assert_inside();
}

#[netns_test]
#[rstest]
#[case(1)]
#[case(2)]
fn rstest_below(#[case] n: u32) {
    assert!(n > 0);
    assert_inside();
}

#[rstest]
#[netns_test]
fn rstest_values_and_fixture(#[values(1, 2, 3)] n: u32, port: u16) {
    assert!(n > 0);
    assert_eq!(port, 80);
    assert_inside();
}

#[rstest]
#[case(1)]
#[case(2)]
#[netns_test::test]
async fn rstest_async_with_path_form(#[case] n: u32) {
    assert!(n > 0);
    assert_inside();
    tokio::net::TcpListener::bind("[::1]:80").await.unwrap();
}

#[netns_test]
#[rstest]
#[case(1)]
async fn rstest_async_below(#[case] n: u32) {
    assert_eq!(n, 1);
    assert_inside();
}

#[rstest]
#[case(7)]
#[test_attr(netns_test)]
async fn rstest_test_attr(#[case] n: u32) {
    assert_eq!(n, 7);
    assert_inside();
}

/// tokio's clock starts paused, as with `#[tokio::test(start_paused = true)]`
/// (tokio's `test-util` feature is the user's own choice: on in this crate's
/// dev-dependencies): an hour's sleep ends at once. Without it, the timeout
/// fails the test.
#[netns_test(start_paused = true, timeout = "60s")]
async fn start_paused_starts_the_clock_paused() {
    assert_inside();
    let start = tokio::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    assert!(start.elapsed() >= std::time::Duration::from_secs(3600));
}

#[tokio::test]
#[netns_test]
async fn tokio_test_above() {
    assert_inside();
    tokio::net::TcpListener::bind("127.0.0.1:81").await.unwrap();
}

#[netns_test]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_test_below() {
    assert_inside();
    let ns = NetNs::current();
    let from_worker = tokio::spawn(async { NetNs::current() }).await.unwrap();
    assert_eq!(from_worker, ns);
}

#[test]
#[netns_test]
#[ignore = "a #[test] above #[netns_test] registers the test twice; outcomes.rs runs it"]
fn test_attribute_above() {}

/// A doc comment and other attributes are kept.
#[netns_test]
#[allow(clippy::bool_assert_comparison)]
#[should_panic(expected = "reaches")]
fn attributes_are_kept() {
    assert_eq!(true, true);
    panic!("the payload reaches libtest");
}

#[test]
fn each_test_is_registered_once() {
    let list = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--list", "--format=terse", "--ignored"])
        .output()
        .unwrap();
    let ignored = String::from_utf8(list.stdout).unwrap();
    let list = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--list", "--format=terse"])
        .output()
        .unwrap();
    let all = String::from_utf8(list.stdout).unwrap();
    let mut names: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    let expected = [
        "rstest_above::case_1",
        "rstest_above::case_2",
        "rstest_below::case_1",
        "rstest_below::case_2",
        "rstest_values_and_fixture::n_1_1",
        "rstest_values_and_fixture::n_3_3",
        "rstest_async_with_path_form::case_2",
        "rstest_async_below::case_1",
        "rstest_test_attr::case_1",
        "tokio_test_above",
        "tokio_test_below",
        "attributes_are_kept",
    ];
    for name in expected {
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            1,
            "{name} in\n{all}"
        );
    }
    // Only the deliberately doubled test appears twice.
    names.sort();
    let mut doubled: Vec<&str> = names
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    doubled.dedup();
    assert_eq!(doubled, ["test_attribute_above"], "{all}");
    assert!(ignored.contains("test_attribute_above: test"), "{ignored}");
}
