//! [`Veth`], a test's veth pair to the host, and [`VethSpec`], what the
//! attribute asked for: plain data, on every platform. `src/veth.rs` makes
//! the pairs.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The veth pair of a `#[netns_test(veth)]` test: names and addresses of
/// both ends. Get it with [`NetNs::veth`](crate::NetNs::veth).
///
/// ```no_run
/// use netns_test::{netns_test, NetNs};
///
/// #[netns_test(veth)]
/// fn reaches_the_host() {
///     let ns = NetNs::current();
///     let veth = ns.veth().expect("veth requested").clone();
///     let server = std::net::TcpListener::bind((veth.ns_ipv4(), 8080)).unwrap();
///     let connected = ns.host().run(move || {
///         std::net::TcpStream::connect((veth.ns_ipv4(), 8080)).is_ok()
///     });
///     assert!(connected);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veth {
    pub(crate) ns_name: String,
    pub(crate) host_name: String,
    pub(crate) host_index: i32,
    pub(crate) ns_ipv4: Ipv4Addr,
    pub(crate) host_ipv4: Ipv4Addr,
    pub(crate) ipv4_prefix: u8,
    pub(crate) ns_ipv6: Option<Ipv6Addr>,
    pub(crate) host_ipv6: Option<Ipv6Addr>,
    pub(crate) ipv6_prefix: Option<u8>,
    pub(crate) mtu: u32,
}

impl Veth {
    /// The interface's name in the test's namespace (`veth0`).
    pub fn ns_name(&self) -> &str {
        &self.ns_name
    }
    /// The interface's name in the host's namespace (`ntveth<N>`).
    pub fn host_name(&self) -> &str {
        &self.host_name
    }
    /// The IPv4 address of the test's end.
    pub fn ns_ipv4(&self) -> Ipv4Addr {
        self.ns_ipv4
    }
    /// The IPv4 address of the host's end; the test's default IPv4 route.
    pub fn host_ipv4(&self) -> Ipv4Addr {
        self.host_ipv4
    }
    /// The IPv4 prefix length of both ends (30 by default).
    pub fn ipv4_prefix(&self) -> u8 {
        self.ipv4_prefix
    }
    /// The IPv6 address of the test's end; `None` when the host has IPv6
    /// disabled (as Docker's default network does): the pair is IPv4 only.
    pub fn ns_ipv6(&self) -> Option<Ipv6Addr> {
        self.ns_ipv6
    }
    /// The IPv6 address of the host's end, the test's default IPv6 route;
    /// `None` when the host has IPv6 disabled.
    pub fn host_ipv6(&self) -> Option<Ipv6Addr> {
        self.host_ipv6
    }
    /// The IPv6 prefix length of both ends (64 by default); `None` when the
    /// host has IPv6 disabled.
    pub fn ipv6_prefix(&self) -> Option<u8> {
        self.ipv6_prefix
    }
    /// The MTU of both ends.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    pub(crate) fn host_index(&self) -> i32 {
        self.host_index
    }
}

/// An address pair given by the user, for the macro's expansion.
#[derive(Clone, Copy, Debug)]
pub struct AddressPair<A> {
    /// The test's end.
    pub ns: A,
    /// The host's end.
    pub host: A,
    /// The prefix length of both.
    pub prefix: u8,
}

/// What `#[netns_test(veth(...))]` asked for.
#[derive(Clone, Copy, Debug)]
pub struct VethSpec {
    /// MTU of both ends.
    pub mtu: u32,
    /// The user's IPv4 addresses, or a /30 from the pool.
    pub ipv4: Option<AddressPair<Ipv4Addr>>,
    /// The user's IPv6 addresses, or a /64 from the pool.
    pub ipv6: Option<AddressPair<Ipv6Addr>>,
}
