//! Every `NETNS_TEST_*` environment variable, each read once per process.
//!
//! | variable | values | meaning |
//! |---|---|---|
//! | `NETNS_TEST_MODE` | `auto` (default), `root`, `rootless` | how netns tests run: see the README's "Without root" |
//! | `NETNS_TEST_KEEP` | `failed`, `all` | keep tests' namespaces for inspection |
//! | `NETNS_TEST_CAPTURE` | `failed`, `all` | record tests' packets to pcap files |
//! | `NETNS_TEST_LOG` | `debug`, `trace` | print each setup and teardown step with its duration |
//! | `NETNS_TEST_UNSUPPORTED` | `skip` | a test the kernel refuses passes with a `skipped:` line |
//! | `NETNS_TEST_SEED` | `0x5eed` (hex) or `24301` (decimal); a list `0xa,0xb` | the seed of a test's networks (the k-th network takes the k-th, the last one repeats) |
//! | `NETNS_TEST_SETTLE` | `off` | `Network::link`, `attach` and `Link::set_up` return without waiting for the kernel to finish bringing the link up, so a link's first packets may be lost (for measuring what the wait costs: `benches/topology.rs`) |
//! | `NETNS_TEST_FORK_SERVER` | `off` | rootless tests start the test binary again each instead of forking from the fork server (slower; for debugging) |
//! | `NETNS_TEST_INSIDE` | a test's name | set by netns-test in the child process of a rootless test |
//! | `NETNS_TEST_RESULT_FD` | a descriptor and a nonce | set with `NETNS_TEST_INSIDE`: where the child writes how the test ended, and the word that marks the body's output |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// `NETNS_TEST_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModeSetting {
    /// Root with CAP_SYS_ADMIN and CAP_NET_ADMIN, rootless otherwise.
    Auto,
    Root,
    Rootless,
}

/// For which tests to keep namespaces or captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Failed tests only.
    Failed,
    /// Every test.
    All,
}

impl Policy {
    /// Whether the policy covers a test that ended so.
    pub(crate) fn applies(self, failed: bool) -> bool {
        self == Policy::All || failed
    }
}

/// `NETNS_TEST_MODE`, or the text of the error for a value that is none of
/// the three.
pub(crate) fn mode() -> Result<ModeSetting, &'static str> {
    static MODE: OnceLock<Result<ModeSetting, String>> = OnceLock::new();
    MODE.get_or_init(|| match std::env::var("NETNS_TEST_MODE").as_deref() {
        Err(_) | Ok("") | Ok("auto") => Ok(ModeSetting::Auto),
        Ok("root") => Ok(ModeSetting::Root),
        Ok("rootless") => Ok(ModeSetting::Rootless),
        Ok(other) => Err(format!(
            "netns-test: NETNS_TEST_MODE={other:?} is not one of auto, root, rootless"
        )),
    })
    .as_ref()
    .copied()
    .map_err(String::as_str)
}

/// `NETNS_TEST_KEEP`; anything but `failed` or `all` is ignored with a warning.
pub(crate) fn keep() -> Option<Policy> {
    static KEEP: OnceLock<Option<Policy>> = OnceLock::new();
    *KEEP.get_or_init(|| policy("NETNS_TEST_KEEP"))
}

/// `NETNS_TEST_CAPTURE`; anything but `failed` or `all` is ignored with a warning.
pub(crate) fn capture() -> Option<Policy> {
    static CAPTURE: OnceLock<Option<Policy>> = OnceLock::new();
    *CAPTURE.get_or_init(|| policy("NETNS_TEST_CAPTURE"))
}

fn policy(variable: &str) -> Option<Policy> {
    match std::env::var(variable).as_deref() {
        Err(_) | Ok("") | Ok("never") => None,
        Ok("failed") => Some(Policy::Failed),
        Ok("all") => Some(Policy::All),
        Ok(other) => {
            eprintln!("netns-test: ignoring {variable}={other:?}: use failed or all");
            None
        }
    }
}

/// `NETNS_TEST_LOG=debug` (or `trace`).
pub(crate) fn trace() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        matches!(
            std::env::var("NETNS_TEST_LOG").as_deref(),
            Ok("debug") | Ok("trace")
        )
    })
}

/// `NETNS_TEST_UNSUPPORTED=skip`: a refusal becomes a pass with one line.
pub(crate) fn skip_unsupported() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var("NETNS_TEST_UNSUPPORTED").as_deref() == Ok("skip"))
}

/// The variable that names the test a rootless child process runs.
pub(crate) const INSIDE: &str = "NETNS_TEST_INSIDE";

/// `NETNS_TEST_INSIDE`: in the child process of a rootless test, the name
/// of that test.
pub(crate) fn rootless_child_of() -> Option<&'static str> {
    static TEST: OnceLock<Option<String>> = OnceLock::new();
    TEST.get_or_init(|| std::env::var(INSIDE).ok()).as_deref()
}

/// Set in the fork server, so in each runner it forks.
static FORKED_FOR_A_TEST: AtomicBool = AtomicBool::new(false);

/// In the rootless fork server: the processes it forks run rootless tests.
pub(crate) fn mark_rootless_child() {
    FORKED_FOR_A_TEST.store(true, Ordering::Relaxed);
}

/// Whether this process is the child process of a rootless test, inside a
/// user namespace of its own (started for it, or a runner of the fork
/// server).
pub(crate) fn in_rootless_child() -> bool {
    rootless_child_of().is_some() || FORKED_FOR_A_TEST.load(Ordering::Relaxed)
}

/// `NETNS_TEST_SETTLE`: `off` skips waiting for fresh links to carry
/// packets.
pub(crate) fn settle_links() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("NETNS_TEST_SETTLE").is_none_or(|v| v != "off"))
}

/// Whether this process runs one test only: cargo-nextest runs each test in
/// a process of its own (and says so in `NEXTEST_EXECUTION_MODE`), and
/// `netns-test exec` runs one command ([`mark_one_test`]).
pub(crate) fn runs_one_test() -> bool {
    static NEXTEST: OnceLock<bool> = OnceLock::new();
    ONE_TEST.load(std::sync::atomic::Ordering::Relaxed)
        || *NEXTEST.get_or_init(|| {
            std::env::var_os("NEXTEST_EXECUTION_MODE")
                .is_some_and(|mode| mode == "process-per-test")
        })
}

/// Marks this process as one that sets up one test's namespace (`exec`).
pub(crate) fn mark_one_test() {
    ONE_TEST.store(true, std::sync::atomic::Ordering::Relaxed);
}

static ONE_TEST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `NETNS_TEST_FORK_SERVER`: `off` runs each rootless test by starting the
/// test binary again, as when there is no fork server.
pub(crate) fn fork_server_enabled() -> bool {
    std::env::var_os("NETNS_TEST_FORK_SERVER").is_none_or(|v| v != "off")
}

/// The variable that names the descriptor a rootless child reports on.
pub(crate) const RESULT_FD: &str = "NETNS_TEST_RESULT_FD";

/// `NETNS_TEST_RESULT_FD=<fd> <nonce>`: in the child process of a rootless
/// test, the descriptor its parent reads the test's end from, and the nonce
/// of the lines that mark the body's output.
pub(crate) fn result_fd() -> Option<(i32, &'static str)> {
    static FD: OnceLock<Option<(i32, String)>> = OnceLock::new();
    FD.get_or_init(|| {
        let value = std::env::var(RESULT_FD).ok()?;
        let (fd, nonce) = value.split_once(' ')?;
        Some((fd.parse().ok()?, nonce.to_owned()))
    })
    .as_ref()
    .map(|(fd, nonce)| (*fd, nonce.as_str()))
}

/// `NETNS_TEST_SEED`: the seed of the `k`-th network a test makes (from
/// 0): the `k`-th of a comma-separated list, or its last. Values are hex
/// with `0x`, or decimal; a value that is neither is ignored with a
/// warning, once.
pub(crate) fn seed(k: usize) -> Option<u64> {
    static SEEDS: OnceLock<Vec<u64>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| match std::env::var("NETNS_TEST_SEED") {
        Err(_) => Vec::new(),
        Ok(text) => parse_seeds(&text).unwrap_or_else(|bad| {
            eprintln!(
                "netns-test: ignoring NETNS_TEST_SEED={text:?}: {bad:?} is not a number (write 0x5eed or 24301)"
            );
            Vec::new()
        }),
    });
    seeds.get(k).or(seeds.last()).copied()
}

/// A comma-separated list of seeds, or the first item that is not one.
fn parse_seeds(text: &str) -> Result<Vec<u64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let parsed = match item.strip_prefix("0x").or_else(|| item.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => item.replace('_', "").parse(),
            };
            parsed.map_err(|_| item.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_seeds;

    #[test]
    fn seeds_parse_as_hex_or_decimal_lists() {
        assert_eq!(parse_seeds("0x5eed"), Ok(vec![0x5eed]));
        assert_eq!(parse_seeds("24301"), Ok(vec![24301]));
        assert_eq!(
            parse_seeds("0xA, 0x0000_0000_0000_000b,7"),
            Ok(vec![10, 11, 7])
        );
        assert_eq!(parse_seeds(""), Ok(vec![]));
        assert_eq!(parse_seeds("0xZZ"), Err("0xZZ".to_owned()));
        assert_eq!(parse_seeds("seed"), Err("seed".to_owned()));
    }
}
