//! One test's options, as the attribute wrote them into a `static`.

use crate::settings::{self, Policy};
use crate::veth_pair::VethSpec;
use std::sync::atomic::AtomicBool;

/// A timeout as the user wrote it, and its value.
#[derive(Clone, Copy, Debug)]
pub struct Timeout {
    /// The limit in milliseconds.
    pub millis: u64,
    /// The limit as written (`"1m30s"`), for the failure message.
    pub text: &'static str,
}

/// The tokio runtime of an async test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `flavor = "current_thread"`, the default.
    CurrentThread,
    /// `flavor = "multi_thread"`.
    MultiThread,
}

/// What every [`TestSpec`] starts with: 128 random bits that mark it in
/// the binary's data, where a process that runs one test looks for it.
pub const SPEC_MARKER: [u64; 2] = [0x9a1c_e51b_6f0d_4e37, 0x2b8f_c7d4_1e6a_93f5];

/// One test function's options, in a `static` inside the generated function.
#[derive(Debug)]
#[repr(C)]
pub struct TestSpec {
    /// [`SPEC_MARKER`], first: a process that runs one test finds the
    /// test's options in its own data (see `run/fork_server.rs`).
    pub marker: [u64; 2],
    /// `module_path!()::name`.
    pub name: &'static str,
    /// `timeout = ".."`.
    pub timeout: Option<Timeout>,
    /// `flavor = ".."`, for an `async fn` test.
    pub flavor: Flavor,
    /// `worker_threads = N`, for the `multi_thread` flavor.
    pub worker_threads: Option<usize>,
    /// The macro added `#[test]` because it saw none; a `#[test]` above the
    /// macro is invisible to it and would register the test a second time.
    pub added_test_attribute: bool,
    /// Set when the test starts, to catch that second registration.
    pub started: AtomicBool,
    /// `#[netns_test(veth)]`: a veth pair to the host.
    pub veth: Option<VethSpec>,
    /// `#[netns_test(keep = "..")]`; `NETNS_TEST_KEEP` when absent.
    pub keep: Option<Policy>,
    /// `#[netns_test(capture)]`; `NETNS_TEST_CAPTURE` when absent.
    pub capture: Option<Policy>,
}

impl TestSpec {
    /// The test's name as libtest knows it: `module_path!()` starts with
    /// the crate's name, libtest's names do not.
    pub(crate) fn libtest_name(&self) -> &'static str {
        self.name
            .split_once("::")
            .map_or(self.name, |(_crate, rest)| rest)
    }

    /// The attribute's keep policy, else `NETNS_TEST_KEEP`'s.
    pub(crate) fn keep_policy(&self) -> Option<Policy> {
        self.keep.or_else(settings::keep)
    }

    /// The attribute's capture policy, else `NETNS_TEST_CAPTURE`'s.
    pub(crate) fn capture_policy(&self) -> Option<Policy> {
        self.capture.or_else(settings::capture)
    }

    /// What a test that ran out of time fails with.
    pub(crate) fn timed_out_message(&self) -> String {
        let timeout = self.timeout.expect("only a test with a timeout times out");
        let took = if timeout.millis % 1000 == 0 {
            format!("{} s", timeout.millis / 1000)
        } else {
            format!("{} ms", timeout.millis)
        };
        format!(
            "netns-test: test `{}` timed out after {took} (#[netns_test(timeout = \"{}\")])",
            self.name, timeout.text
        )
    }
}
