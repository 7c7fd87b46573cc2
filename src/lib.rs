//! Every test in its own Linux network namespace.
//!
//! ```
//! use netns_test::{netns_test, NetNs};
//!
//! #[netns_test]
//! fn binds_port_80() {
//!     // A fresh namespace: lo is up, nothing else; port 80 is free.
//!     let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
//!     # drop(listener);
//! }
//! ```
//!
//! The body of a `#[netns_test]` function, and every thread, tokio worker and
//! child process it starts, sees:
//!
//! 1. a network namespace of its own, with `lo` up (127.0.0.1/8 and ::1) and
//!    no other interface, so any number of tests can bind the same port;
//! 2. a private mount namespace in which `/sys` shows that network namespace
//!    (as with `ip netns exec`), `/etc/hosts` is a private copy it may change,
//!    `/proc/net` shows the namespace of the thread that reads it, and
//!    `/run/netns` is its own (`ip netns add` works inside; the host never
//!    sees an entry);
//! 3. IPv6 duplicate address detection off (`accept_dad = 0`), so an address
//!    added later is usable within milliseconds, not 1–3 s;
//! 4. [`NetNs::current`], a handle to run closures, threads and commands in
//!    the namespace and to set its sysctls, and [`NetNs::host`] for the host;
//! 5. with `#[netns_test(veth)]`, a veth pair to the host with unique
//!    addresses and default routes: [`NetNs::veth`].
//!
//! [`Network`] wires more namespaces together inside a test (links,
//! switches, routers, NAT, [firewalls](Firewall), cut or
//! [impaired](Impairment) links, all traffic or only the [`Traffic`]
//! selected, with [counters](LinkCounters)). Without CAP_SYS_ADMIN,
//! each test runs in a user namespace of its own (rootless mode); failed
//! tests' namespaces can be kept and their packets captured (`keep`,
//! `capture`, the `netns-test` binary). The README has the details.
//!
//! # Arguments
//!
//! The [attribute's documentation](macro@netns_test) has an example of each.
//!
//! | argument | meaning |
//! |---|---|
//! | `veth`, `veth(mtu = 9000, ipv4 = "198.51.100.2/24", host_ipv4 = "198.51.100.1/24", ipv6 = .., host_ipv6 = ..)` | a veth pair to the host: see [`Veth`] |
//! | `keep = "failed"` or `"all"` | keep the test's namespaces for inspection (`NETNS_TEST_KEEP`); `netns-test list`/`gc` |
//! | `capture`, `capture = "all"` | record packets to `target/netns-test/<test>/*.pcap` (pcapng, with what the fault engine did to each frame it touched; `NETNS_TEST_CAPTURE`) |
//! | `timeout = "10s"` | fail the test after this long (`ms`, `s`, `m`, `h`; `"1m30s"`) |
//! | `flavor = "multi_thread"` | tokio runtime of an `async fn` test (default `"current_thread"`) |
//! | `worker_threads = 2` | worker threads of the `multi_thread` runtime |
//! | `start_paused = true` | tokio's clock starts paused (needs tokio's `test-util` in your dev-dependencies) |
//! | `crate = "path"` | where `netns_test` is, if the dependency is renamed |
//!
//! # Environment
//!
//! | variable | values | meaning |
//! |---|---|---|
//! | `NETNS_TEST_MODE` | `auto` (default), `root`, `rootless` | root mode with CAP_SYS_ADMIN and CAP_NET_ADMIN, rootless (a user namespace per test) otherwise; or forced |
//! | `NETNS_TEST_UNSUPPORTED` | `skip` | a test that this machine refuses ([`Error::is_refusal`]: no user namespaces, AppArmor, seccomp, not Linux) passes, printing one `skipped:` line, instead of failing |
//! | `NETNS_TEST_KEEP` | `failed`, `all` | keep tests' namespaces for inspection (`keep` overrides it per test) |
//! | `NETNS_TEST_CAPTURE` | `failed`, `all` | record tests' packets to pcap files (`capture` overrides it per test) |
//! | `NETNS_TEST_LOG` | `debug`, `trace` | print each setup and teardown step with its duration on stderr (the `log` crate gets them too, at debug level, target `netns_test`) |
//! | `NETNS_TEST_SEED` | `0x5eed` (hex) or `24301` (decimal); a list `0xa,0xb` | the seed of a test's networks' faults (the k-th network takes the k-th, the last one repeats); a failed test prints the one it had |
//! | `NETNS_TEST_FORK_SERVER` | `off` | rootless tests start the test binary again each, instead of forking from the fork server (slower; for debugging) |
//! | `NETNS_TEST_SETTLE` | `off` | [`Network::link`], [`Network::attach`] and [`Link::set_up`] return, and a `veth` test starts, without waiting until the link carries its first packet, which may then be lost (for measuring what the wait costs: `benches/topology.rs`, `benches/overhead.rs`) |
//!
//! netns-test sets `NETNS_TEST_INSIDE` and `NETNS_TEST_RESULT_FD` itself, in
//! the process of a rootless test.
//!
//! # Features
//!
//! - `tokio` (default): `async fn` tests, [`NetNs::block_on`] and
//!   [`NetNs::spawn_async`], on a tokio runtime built inside the namespace.
//!   Without it (`default-features = false`) the build has no tokio, and
//!   those fail to compile with an error naming the feature.
//!
//! # How it expands
//!
//! The attribute adds `#[test]` when the function has no test attribute,
//! keeps the signature, attributes and body, and moves the body into a nested
//! function that the runtime calls on the test thread once it is in a new
//! namespace. When the test ends, the harness's thread ends with it (any
//! other thread moves back to its namespaces), and the kernel frees the
//! test's namespace once nothing holds it: no per-link
//! deletes, no named namespaces, no files left behind, even after SIGKILL.
//!
//! Stacking: `#[rstest]`, `#[tokio::test]` and other attributes that wrap a
//! test may stand above or below `#[netns_test]`; it applies itself to what
//! they produce. With rstest and `async fn`, write `#[netns_test::test]` (rstest
//! takes an attribute ending in `test` as the test attribute) or
//! `#[test_attr(netns_test)]`.

#![warn(missing_docs)]

// The layers, from the bottom: what every layer may use (`error`,
// `settings`, `pool`, and the plain data `impairment` and `veth_pair`), the
// platform (`os`), the public handles (`veth`, `netns`, `network`), the
// debugging aids (`debug`), what the attribute calls (`contract`, `run`). A
// module uses only those below it; `tests/layers.rs` checks that.
//
// The platform boundary: Linux, where network namespaces exist, gets the
// modules that make them; every other platform gets `unsupported`, the same
// public API failing with "network namespaces need Linux". On Linux,
// `--cfg netns_test_unsupported_platform` builds that side instead, to test it.

// Plain attributes, not a macro around the items, so that `cargo fmt`
// sees every module.
//
// What Linux and the other platforms share: the error type, the settings,
// plain data, and the platform-independent half of the attribute's
// contract. Elsewhere, what only Linux uses of them is dead.
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod contract;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod error;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod firewall;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod impairment;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod nat;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod schedule;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod settings;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod traffic;
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
mod veth_pair;

// Linux.
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
#[doc(hidden)]
pub mod admin;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod debug;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod exec;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod netns;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod network;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod os;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod pool;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod run;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod sync;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod veth;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
pub use netns::NetNs;
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
pub use network::{Link, Network, Node, Switch};
#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
pub use os::privilege::privileged;

// Every other platform (and Linux under the cfg).
#[cfg(not(all(target_os = "linux", not(netns_test_unsupported_platform))))]
mod unsupported;
#[cfg(not(all(target_os = "linux", not(netns_test_unsupported_platform))))]
pub use unsupported::{Link, NetNs, Network, Node, Switch, privileged};

pub use error::Error;
pub use firewall::Firewall;
pub use impairment::{Impairment, LinkCounters};
pub use nat::{Nat, NatFiltering, NatMapping};
pub use schedule::Schedule;
pub use traffic::{IntoSubnet, Traffic};
pub use veth_pair::Veth;

pub use netns_test_macros::netns_test;

/// The same attribute as [`netns_test`](macro@netns_test), in the path
/// form `#[netns_test::test]`, like `#[tokio::test]`.
pub use netns_test_macros::netns_test as test;

/// The attribute's examples, run here: the macro crate cannot depend on
/// this one.
#[cfg(doctest)]
#[doc = netns_test_macros::__attribute_docs!()]
struct AttributeExamples;

/// The contract between the attribute's expansion and the runtime: not a
/// public API, and it changes with the macro crate, whose exact version
/// this crate pins.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __private {
    #[cfg(not(feature = "tokio"))]
    pub use crate::contract::{
        AsyncTestNeedsTokio, BlockOnNeedsTokio, NoRuntime, SpawnAsyncNeedsTokio,
    };
    pub use crate::contract::{
        Flavor, Outcome, SPEC_MARKER, TestReturn, TestSpec, Timeout, block_on,
    };
    #[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
    pub use crate::run::run;
    pub use crate::settings::Policy;
    #[cfg(not(all(target_os = "linux", not(netns_test_unsupported_platform))))]
    pub use crate::unsupported::run;
    pub use crate::veth_pair::{AddressPair, VethSpec};
    pub use std::net::{Ipv4Addr, Ipv6Addr};
    pub use std::sync::atomic::AtomicBool;
}
