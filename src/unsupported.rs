//! Every platform but Linux: the public API with Linux's signatures, so
//! that code using netns-test compiles, and nothing that makes a namespace.
//!
//! A `#[netns_test]` fails saying that network namespaces need Linux, or,
//! under `NETNS_TEST_UNSUPPORTED=skip`, passes with one `skipped:` line;
//! its body never runs. Fallible functions return an [`Error`] of kind
//! [`Unsupported`](io::ErrorKind::Unsupported), [`NetNs::current`] panics.
//! No value of the handle types [`NetNs`], [`Node`], [`Link`] and
//! [`Switch`] can exist here, so their methods cannot be called.

use crate::contract::{Ended, FailureKind, Outcome, TestReturn, TestSpec};
use crate::error::Error;
use crate::firewall::Firewall;
use crate::impairment::{Impairment, LinkCounters};
use crate::nat::Nat;
use crate::schedule::Schedule;
use crate::veth_pair::Veth;
use std::convert::Infallible;
use std::ffi::OsStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;

/// This platform, as the messages name it.
fn platform() -> &'static str {
    if cfg!(target_os = "linux") {
        "linux built with --cfg netns_test_unsupported_platform"
    } else {
        std::env::consts::OS
    }
}

fn unsupported(operation: &'static str) -> Error {
    Error::detected(
        operation,
        io::ErrorKind::Unsupported,
        format!("network namespaces need Linux, and this is {}", platform()),
    )
    .refused()
}

/// Fails the test `spec` without running its body: network namespaces need
/// Linux. A refusal, so `NETNS_TEST_UNSUPPORTED=skip` turns it into a skip.
pub fn run<T: TestReturn + 'static>(spec: &'static TestSpec, _body: fn() -> T) -> Outcome<T> {
    let message = format!(
        "network namespaces need Linux: netns-test cannot run test `{}` on {}\n\
         (NETNS_TEST_UNSUPPORTED=skip makes such tests pass with a `skipped:` line)",
        spec.name,
        platform()
    );
    Outcome::ended(spec.name, Ended::failed(FailureKind::Refused, message))
}

/// Always `false`: network namespaces need Linux.
pub fn privileged() -> bool {
    false
}

/// A network namespace: none exist on this platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetNs(Infallible);

impl NetNs {
    /// Fails with an [`Unsupported`](io::ErrorKind::Unsupported) error:
    /// network namespaces need Linux.
    pub fn new() -> Result<NetNs, Error> {
        Err(unsupported("NetNs::new"))
    }

    /// Panics: network namespaces need Linux.
    #[track_caller]
    pub fn current() -> NetNs {
        panic!(
            "NetNs::current() called, but network namespaces need Linux, and this is {}",
            platform()
        )
    }

    /// Always `None`: network namespaces need Linux.
    pub fn try_current() -> Option<NetNs> {
        None
    }
}

// Linux's methods; with no `NetNs`, none can be called.
#[allow(missing_docs)]
impl NetNs {
    #[cfg(feature = "tokio")]
    pub fn block_on<F>(&self, _future: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        match self.0 {}
    }

    #[cfg(not(feature = "tokio"))]
    pub fn block_on<F>(&self, _future: F) -> F::Output
    where
        F: std::future::Future + Send + crate::contract::BlockOnNeedsTokio,
        F::Output: Send,
    {
        match self.0 {}
    }

    #[cfg(feature = "tokio")]
    pub fn spawn_async<F>(&self, _future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.0 {}
    }

    #[cfg(not(feature = "tokio"))]
    pub fn spawn_async<F>(&self, _future: F) -> std::future::Pending<F::Output>
    where
        F: std::future::Future + Send + 'static + crate::contract::SpawnAsyncNeedsTokio,
        F::Output: Send + 'static,
    {
        match self.0 {}
    }

    pub fn host(&self) -> NetNs {
        match self.0 {}
    }

    pub fn veth(&self) -> Option<&Veth> {
        match self.0 {}
    }

    pub fn run<F, T>(&self, _f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        match self.0 {}
    }

    pub fn spawn<F, T>(&self, _f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.0 {}
    }

    pub fn command(&self, _program: impl AsRef<OsStr>) -> Command {
        match self.0 {}
    }

    pub fn sysctl(&self, _key: &str, _value: &str) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn net_path(&self) -> PathBuf {
        match self.0 {}
    }

    pub fn mount_path(&self) -> PathBuf {
        match self.0 {}
    }

    pub fn inode(&self) -> u64 {
        match self.0 {}
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for NetNs {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self.0 {}
    }
}

/// A set of namespaces wired together; adding anything to it fails here.
#[derive(Debug, Default)]
pub struct Network {
    seed: u64,
}

impl Network {
    /// An empty network, with the seed `NETNS_TEST_SEED` gives (or 0).
    pub fn new() -> Network {
        Network::with_seed(crate::settings::seed(0).unwrap_or_default())
    }

    /// An empty network with this seed.
    pub fn with_seed(seed: u64) -> Network {
        Network { seed }
    }

    /// The seed every random fault of this network would derive from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Fails with an [`Unsupported`](io::ErrorKind::Unsupported) error:
    /// network namespaces need Linux.
    pub fn node(&self, _name: &str) -> Result<Node, Error> {
        Err(unsupported("Network::node"))
    }

    /// Fails with an [`Unsupported`](io::ErrorKind::Unsupported) error:
    /// network namespaces need Linux.
    pub fn router(&self, _name: &str) -> Result<Node, Error> {
        Err(unsupported("Network::router"))
    }

    /// Fails with an [`Unsupported`](io::ErrorKind::Unsupported) error:
    /// network namespaces need Linux.
    pub fn switch(&self, _name: &str) -> Result<Switch, Error> {
        Err(unsupported("Network::switch"))
    }

    /// Cannot be called: no [`Node`] exists here.
    pub fn link(&self, a: &Node, _b: &Node) -> Result<Link, Error> {
        match a.0 {}
    }

    /// Cannot be called: no [`Node`] exists here.
    pub fn link_with(&self, a: &Node, _b: &Node, _subnets: &[&str]) -> Result<Link, Error> {
        match a.0 {}
    }

    /// Fails with an [`Unsupported`](io::ErrorKind::Unsupported) error:
    /// network namespaces need Linux.
    pub fn switch_with(&self, _name: &str, _subnets: &[&str]) -> Result<Switch, Error> {
        Err(unsupported("Network::switch_with"))
    }

    /// Cannot be called: no [`Node`] exists here.
    pub fn attach(&self, node: &Node, _switch: &Switch) -> Result<Link, Error> {
        match node.0 {}
    }
}

/// A namespace in a [`Network`]: none exist on this platform.
#[derive(Clone, Debug)]
pub struct Node(Infallible);

// Linux's methods; with no `Node`, none can be called.
#[allow(missing_docs)]
impl Node {
    pub fn netns(&self) -> &NetNs {
        match self.0 {}
    }

    pub fn name(&self) -> &str {
        match self.0 {}
    }

    pub fn is_router(&self) -> bool {
        match self.0 {}
    }

    pub fn ipv4_on(&self, _link: &Link) -> Ipv4Addr {
        match self.0 {}
    }

    pub fn ipv6_on(&self, _link: &Link) -> Ipv6Addr {
        match self.0 {}
    }

    pub fn interface_on(&self, _link: &Link) -> String {
        match self.0 {}
    }

    pub fn route(&self, _destination: &str, _gateway: IpAddr) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn masquerade(&self, _outside: &Link) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn nat(&self, _outside: &Link, _nat: Nat) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn rebind(&self, _outside: &Link) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn firewall(&self, _link: &Link, _firewall: Firewall) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn forward_port(
        &self,
        _outside: &Link,
        _port: u16,
        _server: &Node,
        _server_port: u16,
    ) -> Result<(), Error> {
        match self.0 {}
    }
}

/// A bridge in a namespace of its own: none exist on this platform.
pub struct Switch(Infallible);

/// A veth pair between two nodes: none exist on this platform.
#[derive(Clone, Debug)]
pub struct Link(Infallible);

// Linux's methods; with no `Link`, none can be called.
#[allow(missing_docs)]
impl Link {
    pub fn set_down(&self) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn set_up(&self) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn impair(&self, _impairment: Impairment) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn impair_from(&self, _from: &Node, _impairment: Impairment) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn impair_to(&self, _to: &Node, _impairment: Impairment) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn schedule(&self, _schedule: Schedule) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn schedule_from(&self, _from: &Node, _schedule: Schedule) -> Result<(), Error> {
        match self.0 {}
    }

    pub fn counters_from(&self, _from: &Node) -> LinkCounters {
        match self.0 {}
    }

    pub fn counters_to(&self, _to: &Node) -> LinkCounters {
        match self.0 {}
    }
}
