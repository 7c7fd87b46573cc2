//! Networks of namespaces inside one test: nodes, links, switches, routers,
//! NAT, and links that are cut, slowed or made lossy.
//!
//! ```
//! # if !netns_test::privileged() { return Ok(()); }
//! use netns_test::Network;
//!
//! let net = Network::new();
//! let client = net.node("client")?;
//! let router = net.router("r1")?;
//! let server = net.node("server")?;
//! let inside = net.link(&client, &router)?;   // the client's default route goes via r1
//! let outside = net.link(&router, &server)?;  // and so does the server's
//! router.masquerade(&outside)?;               // NAT in r1's namespace only
//! let address = server.ipv4_on(&outside);
//! let listener = server.netns().run(move || std::net::TcpListener::bind((address, 80)).unwrap());
//! client.netns().run(move || std::net::TcpStream::connect((address, 80)).unwrap());
//! let (_, peer) = listener.accept().unwrap();
//! assert_eq!(peer.ip(), std::net::IpAddr::V4(router.ipv4_on(&outside)));
//! # drop(inside);
//! # Ok::<(), netns_test::Error>(())
//! ```
//!
//! A node is a [`NetNs`] held by file descriptors (no thread while idle) and
//! one netlink socket opened inside it (and a netfilter one from its first
//! NAT or loss rule on). Dropping the [`Network`] and its
//! handles lets the kernel free every namespace, and with them every link:
//! no per-link deletes.

use crate::error::Error;
use crate::impairment::Impairment;
use crate::netns::NetNs;
use crate::os::netlink::{self, Netlink};
use crate::os::nftables;
use crate::pool::{self, MAX_LINKS, MAX_SWITCHES};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A set of namespaces wired together. Everything it made goes away when
/// it and the handles to its nodes are dropped.
#[derive(Default)]
pub struct Network {
    next_link: AtomicU32,
    next_switch: AtomicU32,
}

impl Network {
    /// An empty network. Works inside a `#[netns_test]` (also rootless) and
    /// outside, as root.
    pub fn new() -> Network {
        Network::default()
    }

    /// A new node: a namespace with `lo` up, its own `/sys` and `/etc/hosts`.
    pub fn node(&self, name: &str) -> Result<Node, Error> {
        Node::new(name, false)
    }

    /// A new node that forwards IPv4 and IPv6 between its links. Nodes linked
    /// to it get their default routes via it, when they have none yet.
    pub fn router(&self, name: &str) -> Result<Node, Error> {
        let router = Node::new(name, true)?;
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            router
                .netns()
                .sysctl(key, "1")
                .map_err(|e| e.in_node(name))?;
        }
        Ok(router)
    }

    /// A veth pair between `a` and `b`, up, with an IPv4 /30 and an IPv6 /64
    /// (no DAD): `a` takes `.1`/`::1`, `b` `.2`/`::2`.
    pub fn link(&self, a: &Node, b: &Node) -> Result<Link, Error> {
        let k = self.next_link.fetch_add(1, Ordering::Relaxed);
        if k >= MAX_LINKS {
            return Err(Error::detected(
                "link",
                std::io::ErrorKind::Other,
                format!("a network holds at most {MAX_LINKS} links"),
            ));
        }
        let addresses = |host: u8| {
            let (ipv4, ipv6) = pool::link_end(k, host);
            Addresses {
                ipv4,
                ipv4_prefix: 30,
                ipv6,
                ipv6_prefix: 64,
            }
        };
        let link = Link::create(a, Some(addresses(1)), b, Some(addresses(2)))?;
        route_via_routers(&link)?;
        Ok(link)
    }

    /// A switch: a bridge in a namespace of its own, with a /24 and a /64
    /// for the nodes attached to it.
    pub fn switch(&self, name: &str) -> Result<Switch, Error> {
        let k = self.next_switch.fetch_add(1, Ordering::Relaxed);
        if k >= MAX_SWITCHES {
            return Err(Error::detected(
                "switch",
                std::io::ErrorKind::Other,
                format!("a network holds at most {MAX_SWITCHES} switches"),
            ));
        }
        let node = Node::new(name, false)?;
        let bridge = node.next_index();
        node.netlink_run(vec![netlink::new_bridge("br0", bridge)])?;
        Ok(Switch {
            node,
            bridge,
            subnet: k,
            next_host: AtomicU32::new(1),
            members: Mutex::new(Vec::new()),
        })
    }

    /// Attaches `node` to `switch` by a veth pair whose switch end is a
    /// bridge port; the node's end gets the next address of the switch's
    /// subnets. Returns the link, for [`Node::ipv4_on`] and link faults.
    pub fn attach(&self, node: &Node, switch: &Switch) -> Result<Link, Error> {
        let host = switch.next_host.fetch_add(1, Ordering::Relaxed);
        if host > 254 {
            return Err(Error::detected(
                "attach",
                std::io::ErrorKind::Other,
                "a switch holds at most 254 nodes",
            ));
        }
        let (ipv4, ipv6) = pool::switch_member(switch.subnet, host);
        let addresses = Addresses {
            ipv4,
            ipv4_prefix: 24,
            ipv6,
            ipv6_prefix: 64,
        };
        let link = Link::create(node, Some(addresses.clone()), &switch.node, None)?;
        let port = &link.inner.ends[1];
        switch.node.netlink_run(vec![netlink::enslave_and_up(
            port.index,
            &port.name,
            switch.bridge,
        )])?;
        let mut members = switch.members.lock().unwrap_or_else(|p| p.into_inner());
        if node.router {
            for (member, _) in members.iter().filter(|(m, _)| !m.router) {
                member.default_via(&addresses)?;
            }
        } else if let Some((_, router)) = members.iter().find(|(m, _)| m.router) {
            node.default_via(router)?;
        }
        members.push((node.clone(), addresses));
        Ok(link)
    }
}

/// After linking a router and a node: the node's default routes via the router.
fn route_via_routers(link: &Link) -> Result<(), Error> {
    let [a, b] = &link.inner.ends;
    for (this, other) in [(a, b), (b, a)] {
        if other.node.router && !this.node.router {
            let via = other.addresses.as_ref().expect("link ends have addresses");
            this.node.default_via(via)?;
        }
    }
    Ok(())
}

/// One end's addresses.
#[derive(Clone, Debug)]
struct Addresses {
    ipv4: Ipv4Addr,
    ipv4_prefix: u8,
    ipv6: Ipv6Addr,
    ipv6_prefix: u8,
}

/// A namespace in a [`Network`]: run code in it through [`Node::netns`]
/// (`run`, `spawn`, `command`, `sysctl`, `block_on`, `spawn_async`).
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
    router: bool,
}

struct NodeInner {
    name: String,
    ns: NetNs,
    netlink: Mutex<Netlink>,
    /// A NETLINK_NETFILTER socket inside the node, for NAT and loss rules,
    /// opened at the first one: entering the node for it costs about
    /// 0.12 ms once, where opening it with every node would cost each node
    /// 10-17 us, also the many that never use NAT or loss.
    nftables: Mutex<Option<Netlink>>,
    next_index: AtomicI32,
    default_v4: AtomicBool,
    default_v6: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("ns", &self.inner.ns)
            .field("router", &self.router)
            .finish()
    }
}

impl Node {
    fn new(name: &str, router: bool) -> Result<Node, Error> {
        // Made in a test: its keep and capture policies cover the node too.
        let observer = crate::netns::current_observer();
        let (ns, netlink) = NetNs::new_with(|ns| {
            if let Some(observer) = &observer {
                observer.made(name, ns)?;
            }
            Netlink::open()
        })?;
        Ok(Node {
            inner: Arc::new(NodeInner {
                name: name.to_owned(),
                ns,
                netlink: Mutex::new(netlink),
                nftables: Mutex::new(None),
                next_index: AtomicI32::new(2),
                default_v4: AtomicBool::new(false),
                default_v6: AtomicBool::new(false),
            }),
            router,
        })
    }

    /// The node's namespace: run code, threads and commands in it.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// let net = netns_test::Network::new();
    /// let a = net.node("a")?;
    /// let devices = a.netns().run(|| std::fs::read_to_string("/proc/net/dev")).unwrap();
    /// assert!(devices.contains("lo:"));
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn netns(&self) -> &NetNs {
        &self.inner.ns
    }

    /// The name given to [`Network::node`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether it forwards ([`Network::router`]).
    pub fn is_router(&self) -> bool {
        self.router
    }

    fn next_index(&self) -> i32 {
        self.inner.next_index.fetch_add(1, Ordering::Relaxed)
    }

    fn netlink_run(&self, messages: Vec<netlink::Message>) -> Result<(), Error> {
        self.inner
            .netlink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .run(messages)
            .map_err(|e| e.in_node(&self.inner.name))
    }

    fn end_on<'l>(&self, link: &'l Link) -> &'l End {
        link.inner
            .ends
            .iter()
            .find(|end| Arc::ptr_eq(&end.node.inner, &self.inner))
            .unwrap_or_else(|| panic!("node {} is not on this link", self.inner.name))
    }

    /// This node's IPv4 address on `link`.
    ///
    /// # Panics
    /// When the node is not an addressed end of the link.
    pub fn ipv4_on(&self, link: &Link) -> Ipv4Addr {
        self.end_addresses(link).ipv4
    }

    /// This node's IPv6 address on `link`.
    ///
    /// # Panics
    /// When the node is not an addressed end of the link.
    pub fn ipv6_on(&self, link: &Link) -> Ipv6Addr {
        self.end_addresses(link).ipv6
    }

    /// This node's interface name on `link`.
    pub fn interface_on(&self, link: &Link) -> String {
        self.end_on(link).name.clone()
    }

    fn end_addresses(&self, link: &Link) -> Addresses {
        self.end_on(link).addresses.clone().unwrap_or_else(|| {
            panic!(
                "node {} has no address on this link (a switch port)",
                self.inner.name
            )
        })
    }

    /// Adds a route to `destination` (`"198.18.4.0/30"`, `"fdc7::/16"`, or
    /// `"default"` with a gateway of the family wanted) via `gateway`.
    pub fn route(&self, destination: &str, gateway: IpAddr) -> Result<(), Error> {
        let (network, prefix) = parse_destination(destination, gateway)?;
        self.netlink_run(vec![netlink::add_route(network, prefix, gateway)])
    }

    /// Default routes via `via`'s addresses, for each family without one yet.
    fn default_via(&self, via: &Addresses) -> Result<(), Error> {
        let mut messages = Vec::new();
        if !self.inner.default_v4.swap(true, Ordering::Relaxed) {
            messages.push(netlink::add_route(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                0,
                IpAddr::V4(via.ipv4),
            ));
        }
        if !self.inner.default_v6.swap(true, Ordering::Relaxed) {
            messages.push(netlink::add_route(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                0,
                IpAddr::V6(via.ipv6),
            ));
        }
        if messages.is_empty() {
            return Ok(());
        }
        self.netlink_run(messages)
    }

    /// Source NAT in this node's namespace: traffic leaving through
    /// `outside` takes this node's address there (nftables `masquerade`,
    /// IPv4 and IPv6). The rule is loaded over netlink: no `nft` program is
    /// needed.
    pub fn masquerade(&self, outside: &Link) -> Result<(), Error> {
        let interface = &self.end_on(outside).name;
        self.nftables_run(nftables::masquerade(interface))
    }

    /// Runs one nf_tables transaction in this node's namespace, on its
    /// netfilter socket (opened there the first time).
    fn nftables_run(&self, messages: Vec<netlink::Message>) -> Result<(), Error> {
        let mut socket = self
            .inner
            .nftables
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let socket = match &mut *socket {
            Some(socket) => socket,
            empty => empty.insert(
                self.netns()
                    .run(nftables::open)
                    .map_err(|e| e.in_node(&self.inner.name))?,
            ),
        };
        socket
            .run(messages)
            .map_err(|e| e.in_node(&self.inner.name))
    }
}

fn parse_destination(destination: &str, gateway: IpAddr) -> Result<(IpAddr, u8), Error> {
    let invalid = || {
        Error::invalid_input(
            "route",
            format!(
                "cannot parse destination {destination:?}: write \"198.18.4.0/30\", \"fdc7::/16\" or \"default\""
            ),
        )
    };
    if destination == "default" {
        return Ok(match gateway {
            IpAddr::V4(_) => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        });
    }
    let (address, prefix) = destination.split_once('/').ok_or_else(invalid)?;
    let address: IpAddr = address.parse().map_err(|_| invalid())?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix > max || address.is_ipv4() != gateway.is_ipv4() {
        return Err(invalid());
    }
    Ok((address, prefix))
}

/// A bridge in a namespace of its own. Attach nodes with [`Network::attach`].
pub struct Switch {
    node: Node,
    bridge: i32,
    subnet: u32,
    next_host: AtomicU32,
    /// The attached nodes and their addresses on the switch.
    members: Mutex<Vec<(Node, Addresses)>>,
}

/// A veth pair between two nodes (or a node and a switch).
#[derive(Clone)]
pub struct Link {
    inner: Arc<LinkInner>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b] = &self.inner.ends;
        f.debug_struct("Link")
            .field("a", &format_args!("{}:{}", a.node.name(), a.name))
            .field("b", &format_args!("{}:{}", b.node.name(), b.name))
            .finish()
    }
}

struct LinkInner {
    ends: [End; 2],
    /// Whether an nftables loss rule was loaded on the ends.
    lossy: AtomicBool,
}

struct End {
    node: Node,
    index: i32,
    name: String,
    addresses: Option<Addresses>,
}

impl Link {
    fn create(
        a: &Node,
        a_addresses: Option<Addresses>,
        b: &Node,
        b_addresses: Option<Addresses>,
    ) -> Result<Link, Error> {
        let (a_index, b_index) = (a.next_index(), b.next_index());
        let (a_name, b_name) = (format!("eth{}", a_index - 2), format!("eth{}", b_index - 2));
        let mut here = vec![netlink::new_veth(
            &a_name,
            a_index,
            &b_name,
            b_index,
            b.netns().as_fd(),
            1500,
        )];
        here.extend(address_messages(a_index, &a_addresses));
        a.netlink_run(here)?;
        let mut there = vec![netlink::set_up(b_index, &b_name)];
        there.extend(address_messages(b_index, &b_addresses));
        b.netlink_run(there)?;
        Ok(Link {
            inner: Arc::new(LinkInner {
                ends: [
                    End {
                        node: a.clone(),
                        index: a_index,
                        name: a_name,
                        addresses: a_addresses,
                    },
                    End {
                        node: b.clone(),
                        index: b_index,
                        name: b_name,
                        addresses: b_addresses,
                    },
                ],
                lossy: AtomicBool::new(false),
            }),
        })
    }

    /// Cuts the link: both ends down. Traffic over it stalls (TCP retries)
    /// until [`Link::set_up`].
    pub fn set_down(&self) -> Result<(), Error> {
        for end in &self.inner.ends {
            end.node
                .netlink_run(vec![netlink::set_down(end.index, &end.name)])?;
        }
        Ok(())
    }

    /// Heals a cut link: both ends up (routes and addresses are kept).
    pub fn set_up(&self) -> Result<(), Error> {
        for end in &self.inner.ends {
            end.node
                .netlink_run(vec![netlink::set_up(end.index, &end.name)])?;
        }
        Ok(())
    }

    /// Impairs both directions of the link, replacing any earlier impairment;
    /// `Impairment::new()` clears it. Rate: a tbf qdisc on each end. Loss: an
    /// nftables drop rule with `numgen random` where packets arrive at each
    /// end, so the sender sees no error, as with loss on a wire (no netem
    /// needed, and no `nft` program: the rule is loaded over netlink).
    /// Delay, jitter, reordering and duplication: netem, which some kernels
    /// lack; then this returns an error of kind
    /// [`std::io::ErrorKind::Unsupported`].
    pub fn impair(&self, impairment: Impairment) -> Result<(), Error> {
        impairment.validate()?;
        for end in &self.inner.ends {
            // Back to the default qdisc; none set is fine.
            let _ = end
                .node
                .netlink_run(vec![netlink::delete_root_qdisc(end.index, &end.name)]);
            if impairment.needs_netem() {
                end.node
                    .netlink_run(vec![netlink::netem(
                        end.index,
                        &end.name,
                        impairment.netem_options(),
                    )])
                    .map_err(netem_unsupported)?;
            } else if let Some(kbit) = impairment.rate_kbit {
                let rate = kbit * 1000 / 8;
                // A burst of at least one full-size frame, and 10 ms worth.
                let burst = (rate / 100).max(3000) as u32;
                end.node.netlink_run(vec![netlink::tbf(
                    end.index,
                    &end.name,
                    rate,
                    burst,
                    burst.saturating_mul(4),
                )])?;
            }
            // An earlier loss rule is replaced (or removed) in the same
            // transaction.
            let lossy = self.inner.lossy.load(Ordering::Relaxed);
            match impairment.loss {
                Some(percent) => {
                    let per_million = (percent * 10_000.0).round() as u32;
                    end.node
                        .nftables_run(nftables::loss(&end.name, per_million, lossy))?;
                }
                None if lossy => end.node.nftables_run(nftables::delete_loss(&end.name))?,
                None => {}
            }
        }
        self.inner
            .lossy
            .store(impairment.loss.is_some(), Ordering::Relaxed);
        Ok(())
    }
}

fn netem_unsupported(error: Error) -> Error {
    if error.raw_os_error() == Some(nix::libc::ENOENT) {
        Error::detected(
            "netem",
            std::io::ErrorKind::Unsupported,
            "this kernel lacks sch_netem (CONFIG_NET_SCH_NETEM): delay, jitter, reordering and duplication need it; \
             rate limits (tbf) and loss (nftables) work without it",
        )
    } else {
        error
    }
}

fn address_messages(index: i32, addresses: &Option<Addresses>) -> Vec<netlink::Message> {
    match addresses {
        None => Vec::new(),
        Some(a) => vec![
            netlink::add_address(index, IpAddr::V4(a.ipv4), a.ipv4_prefix),
            netlink::add_address(index, IpAddr::V6(a.ipv6), a.ipv6_prefix),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(
            parse_destination("198.18.4.0/30", v4).unwrap(),
            ("198.18.4.0".parse().unwrap(), 30)
        );
        assert_eq!(parse_destination("default", v4).unwrap().1, 0);
        assert!(
            parse_destination("fdc7::/16", v4).is_err(),
            "family mismatch"
        );
        assert!(parse_destination("198.18.4.0", v4).is_err());
        assert!(parse_destination("198.18.4.0/33", v4).is_err());
    }
}
