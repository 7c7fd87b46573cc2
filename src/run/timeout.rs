//! `#[netns_test(timeout = "..")]`: the test runs on a thread of its own and
//! fails when the time is up.

use super::test_ns::HostSide;
use crate::contract::{Ended, FailureKind, TestSpec};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `run` on a new thread named like the test and waits at most the
/// spec's timeout. On a timeout the thread is abandoned: it keeps its
/// namespace until it ends, at the latest with the test process, but its
/// veth pair is deleted at once, so a hung test holds nothing on the host.
///
/// The test's value does not cross the thread: `run` turns it into an
/// [`Ended`], so a return type need not be `Send`.
pub(crate) fn run_with_timeout(
    spec: &'static TestSpec,
    host: HostSide,
    run: impl FnOnce(HostSide) -> Ended + Send + 'static,
) -> Ended {
    let timeout = spec
        .timeout
        .expect("netns-test: a timeout entry point without a timeout");
    let veth = host.veth();
    let (sender, receiver) = mpsc::sync_channel(1);
    let name = std::thread::current()
        .name()
        .unwrap_or(spec.name)
        .to_owned();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let ended = catch_unwind(AssertUnwindSafe(|| run(host)))
            .unwrap_or_else(|panic| Ended::of_panic(panic.as_ref()));
        let _ = sender.send(ended);
    });
    if let Err(error) = spawned {
        return Ended::failed(
            FailureKind::Setup,
            format!(
                "netns-test: cannot spawn the thread of test `{}`: {error}",
                spec.name
            ),
        );
    }
    match receiver.recv_timeout(Duration::from_millis(timeout.millis)) {
        Ok(ended) => ended,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut message = spec.timed_out_message();
            if let Some(veth) = &veth {
                if let Err(error) = veth.delete_now() {
                    message.push_str(&format!("; deleting its veth pair failed: {error}"));
                }
            }
            Ended::failed(FailureKind::TimedOut, message)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Ended::failed(
            FailureKind::Setup,
            format!(
                "netns-test: the thread of test `{}` ended without a result",
                spec.name
            ),
        ),
    }
}
