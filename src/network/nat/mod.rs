//! NAT in a router's namespace: [`Node::nat`] (RFC 4787 mapping and
//! filtering), [`Node::rebind`], and Linux's own [`Node::masquerade`] and
//! [`Node::forward_port`], each link's in a table of its own (see
//! `rules.rs`), over netlink: no `nft` or `conntrack` program.

mod node;
pub(super) mod rules;

use crate::error::Error;
use crate::os::netlink::Netlink;
use crate::os::nftables;
use rules::Mode;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Weak;

/// What a node's NATs hold: the netfilter socket inside the node and the
/// conntrack timeout sysctls (opened as a router is made, in the thread
/// that makes it, for 10-20 us; any other node opens them at its first NAT
/// call, which enters the node for it), and each link's NAT.
///
/// `N` is the node's shared state (`NodeInner`), which the links' upstream
/// nodes are held by, weakly.
pub(super) struct Nats<N> {
    socket: Option<Netlink>,
    timeouts: Option<Timeouts>,
    links: Vec<LinkNat<N>>,
}

impl<N> Default for Nats<N> {
    fn default() -> Nats<N> {
        Nats {
            socket: None,
            timeouts: None,
            links: Vec::new(),
        }
    }
}

/// The router's conntrack timeouts (per namespace, so per router), opened
/// inside it: `nf_conntrack_udp_timeout`, `_udp_timeout_stream`,
/// `_tcp_timeout_established`, and the seconds last written.
struct Timeouts {
    files: [File; 3],
    written: Option<(u64, u64)>,
}

const TIMEOUT_SYSCTLS: [&str; 3] = [
    "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
    "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
];

/// One link's NAT.
struct LinkNat<N> {
    /// The router's interface on the link.
    index: i32,
    interface: String,
    public: Ipv4Addr,
    mode: Mode,
    /// Whether its table exists (a mode or a port forward was loaded).
    created: bool,
    generation: u32,
    /// The nodes across the link that route the router's inside IPv6
    /// prefixes to it (`via`, its address on the link).
    upstream: Vec<Weak<N>>,
    via: Ipv6Addr,
}

impl<N> Nats<N> {
    /// The socket and sysctls, opened in the calling thread's namespace.
    pub(super) fn open_here() -> Result<Nats<N>, Error> {
        Ok(Nats {
            socket: Some(nftables::open()?),
            timeouts: Some(Timeouts {
                files: open_timeouts()?,
                written: None,
            }),
            links: Vec::new(),
        })
    }
}

fn open_timeouts() -> Result<[File; 3], Error> {
    let open = |path: &str| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::at("open", std::path::Path::new(path), e))
    };
    Ok([
        open(TIMEOUT_SYSCTLS[0])?,
        open(TIMEOUT_SYSCTLS[1])?,
        open(TIMEOUT_SYSCTLS[2])?,
    ])
}

impl<N> LinkNat<N> {
    fn rules(&self) -> rules::Link<'_> {
        rules::Link {
            interface: &self.interface,
            index: self.index,
            public: self.public,
            generation: self.generation,
        }
    }
}
