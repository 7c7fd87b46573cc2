//! Setup and teardown steps through the `log` crate, as test-log and
//! env_logger users see them with `RUST_LOG=netns_test=debug`
//! (`NETNS_TEST_LOG=debug` prints the same on stderr: tests/debugging.rs).

#![cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]

use std::sync::Mutex;

/// Keeps what is logged to the target `netns_test`.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == "netns_test"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

/// Called by `setup_steps_go_through_log`, which has the logger set
/// first, as `#[test_log::test]` would.
#[netns_test::netns_test]
#[test]
#[ignore = "called by setup_steps_go_through_log"]
fn fixture_logged() {
    std::net::TcpListener::bind("127.0.0.1:80").unwrap();
}

#[test]
fn setup_steps_go_through_log() {
    if !netns_test::privileged() {
        // Rootless tests are set up in a runner process, which has no
        // logger: NETNS_TEST_LOG is the way there (see the README).
        eprintln!("skipped: a rootless test's steps are logged in its runner process");
        return;
    }
    log::set_logger(&RECORDER).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    fixture_logged();
    let lines = RECORDER.0.lock().unwrap().clone();
    let step = |what: &str| {
        lines.iter().any(|l| {
            l.starts_with("DEBUG [logging::fixture_logged] ")
                && l.contains(what)
                && l.ends_with(" ms")
        })
    };
    assert!(step("lo up"), "{lines:#?}");
    assert!(step("registered"), "{lines:#?}");
}
