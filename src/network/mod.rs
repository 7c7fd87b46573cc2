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
//! NAT rule on). Dropping the [`Network`] and its
//! handles lets the kernel free every namespace, and with them every link:
//! no per-link deletes.

mod engine;
mod faults;
mod names;
mod pipeline;
mod prng;

use crate::error::Error;
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
///
/// Every random fault of its links comes from one seed,
/// [`Network::seed`]: random by default, `NETNS_TEST_SEED` or
/// [`Network::with_seed`] fix it, and a failing test prints it.
pub struct Network {
    inner: Arc<NetworkInner>,
}

struct NetworkInner {
    next_link: AtomicU32,
    next_switch: AtomicU32,
    /// Numbers every link and attachment, for their random streams.
    next_stream: AtomicU32,
    seed: u64,
    /// The fault engine, started by the first impairment.
    engine: Mutex<Option<Arc<engine::Engine>>>,
    /// The nodes' names, and every node's /etc/hosts.
    names: names::Names,
}

impl Default for Network {
    fn default() -> Network {
        Network::new()
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("seed", &format_args!("{:#018x}", self.inner.seed))
            .finish_non_exhaustive()
    }
}

impl Network {
    /// An empty network. Works inside a `#[netns_test]` (also rootless) and
    /// outside, as root.
    ///
    /// Its seed is random, unless `NETNS_TEST_SEED` fixes it
    /// (`NETNS_TEST_SEED=0x5eed`; a list `0xa,0xb` gives the first network
    /// a test makes the first seed, the second the second, and so on).
    /// A failing test prints the seeds of the networks it made.
    pub fn new() -> Network {
        let choose = |k: usize| crate::settings::seed(k).unwrap_or_else(prng::random_seed);
        let seed = match crate::netns::current_observer() {
            Some(observer) => observer.network_made(&choose),
            None => choose(0),
        };
        Network::with_seed(seed)
    }

    /// An empty network whose random faults all come from `seed`: the same
    /// seed and the same packets, sent in the same order over each link
    /// direction, give the same decisions (which packets are lost,
    /// corrupted, duplicated, reordered, and by how much each is delayed).
    /// `NETNS_TEST_SEED` does not override it.
    ///
    /// ```
    /// let net = netns_test::Network::with_seed(0x5eed);
    /// assert_eq!(net.seed(), 0x5eed);
    /// ```
    pub fn with_seed(seed: u64) -> Network {
        Network {
            inner: Arc::new(NetworkInner {
                next_link: AtomicU32::new(0),
                next_switch: AtomicU32::new(0),
                next_stream: AtomicU32::new(0),
                seed,
                engine: Mutex::new(None),
                names: names::Names::default(),
            }),
        }
    }

    /// The seed every random fault of this network derives from.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// A new node: a namespace with `lo` up, its own `/sys` and `/etc/hosts`.
    ///
    /// `name` must be a valid host name (`server`, `edge-1`), not taken by
    /// another node of this network: every node reaches every other by its
    /// name (`TcpStream::connect(("server", 80))`), through its private
    /// `/etc/hosts`: both addresses of each of its links, in the order the
    /// resolver sorts them (glibc: IPv6 first; see the README's "Topologies").
    pub fn node(&self, name: &str) -> Result<Node, Error> {
        Node::new(self, name, false)
    }

    /// A new node that forwards IPv4 and IPv6 between its links. Nodes linked
    /// to it get their default routes via it, when they have none yet.
    pub fn router(&self, name: &str) -> Result<Node, Error> {
        let router = Node::new(self, name, true)?;
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
        if Arc::ptr_eq(&a.inner, &b.inner) {
            return Err(Error::invalid_input(
                "link",
                format!(
                    "a link needs two different nodes, and both ends are {}",
                    a.name()
                ),
            ));
        }
        let k = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
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
        let link = Link::create(self, a, Some(addresses(1)), b, Some(addresses(2)))?;
        route_via_routers(&link)?;
        Ok(link)
    }

    /// A switch: a bridge in a namespace of its own, with a /24 and a /64
    /// for the nodes attached to it.
    pub fn switch(&self, name: &str) -> Result<Switch, Error> {
        let k = self.inner.next_switch.fetch_add(1, Ordering::Relaxed);
        if k >= MAX_SWITCHES {
            return Err(Error::detected(
                "switch",
                std::io::ErrorKind::Other,
                format!("a network holds at most {MAX_SWITCHES} switches"),
            ));
        }
        let node = Node::new(self, name, false)?;
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
        let link = Link::create(self, node, Some(addresses.clone()), &switch.node, None)?;
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
    /// The routes netns-test added (destination, prefix, gateway), to give
    /// them back when a cut link is healed.
    routes: Mutex<Vec<(IpAddr, u8, IpAddr)>>,
    /// The node's addresses on its links.
    addresses: Mutex<Vec<Addresses>>,
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
    fn new(network: &Network, name: &str, router: bool) -> Result<Node, Error> {
        names::check_name(name)?;
        let names = &network.inner.names;
        names.claim(name)?;
        // Made in a test: its keep and capture policies cover the node too.
        let observer = crate::netns::current_observer();
        let (ns, (netlink, hosts)) = NetNs::new_with(|ns| {
            if let Some(observer) = &observer {
                observer.made(name, ns)?;
            }
            let hosts = std::fs::OpenOptions::new()
                .append(true)
                .open("/etc/hosts")
                .map_err(|e| Error::at("open", std::path::Path::new("/etc/hosts"), e))?;
            Ok((Netlink::open()?, hosts))
        })
        .map_err(|e| e.in_node(name))?;
        names.add_hosts_file(hosts)?;
        Ok(Node {
            inner: Arc::new(NodeInner {
                name: name.to_owned(),
                ns,
                netlink: Mutex::new(netlink),
                routes: Mutex::default(),
                addresses: Mutex::default(),
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
    /// // /proc/net shows the node's namespace: lo and nothing else.
    /// let devices = a.netns().run(|| std::fs::read_to_string("/proc/net/dev")).unwrap();
    /// let names: Vec<&str> = devices.lines().skip(2).filter_map(|l| l.split(':').next()).collect();
    /// assert_eq!(names.iter().map(|n| n.trim()).collect::<Vec<_>>(), ["lo"]);
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
        self.add_routes(vec![(network, prefix, gateway)])
    }

    /// Adds routes and remembers them, for [`Link::set_up`].
    fn add_routes(&self, routes: Vec<(IpAddr, u8, IpAddr)>) -> Result<(), Error> {
        let messages = routes
            .iter()
            .map(|(network, prefix, gateway)| netlink::add_route(*network, *prefix, *gateway))
            .collect();
        self.netlink_run(messages)?;
        lock(&self.inner.routes).extend(routes);
        Ok(())
    }

    /// Default routes via `via`'s addresses, for each family without one yet.
    fn default_via(&self, via: &Addresses) -> Result<(), Error> {
        let mut routes = Vec::new();
        if !self.inner.default_v4.swap(true, Ordering::Relaxed) {
            routes.push((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, IpAddr::V4(via.ipv4)));
        }
        if !self.inner.default_v6.swap(true, Ordering::Relaxed) {
            routes.push((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, IpAddr::V6(via.ipv6)));
        }
        if routes.is_empty() {
            return Ok(());
        }
        self.add_routes(routes)
    }

    /// Port forwarding in this node's namespace (destination NAT): TCP and
    /// UDP arriving through `outside` for `port` go to `server_port` of
    /// `server`, at its address on a subnet this node shares with it (else
    /// its first), IPv4 and IPv6. With [`Node::masquerade`], a server
    /// behind NAT can be reached from outside.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// let net = netns_test::Network::new();
    /// let (client, router, server) = (net.node("client")?, net.router("r")?, net.node("server")?);
    /// let outside = net.link(&client, &router)?;
    /// net.link(&router, &server)?;
    /// router.forward_port(&outside, 8080, &server, 80)?;
    /// let listener = server.netns().run(|| std::net::TcpListener::bind("0.0.0.0:80").unwrap());
    /// let public = router.ipv4_on(&outside);
    /// client.netns().run(move || std::net::TcpStream::connect((public, 8080)).unwrap());
    /// listener.accept().unwrap();
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn forward_port(
        &self,
        outside: &Link,
        port: u16,
        server: &Node,
        server_port: u16,
    ) -> Result<(), Error> {
        let interface = self.end_on(outside).name.clone();
        let ours = lock(&self.inner.addresses).clone();
        let theirs = lock(&server.inner.addresses).clone();
        let shared = theirs.iter().find(|t| {
            ours.iter()
                .any(|o| same_subnet(IpAddr::V4(o.ipv4), IpAddr::V4(t.ipv4), o.ipv4_prefix))
        });
        let Some(to) = shared.or(theirs.first()) else {
            return Err(Error::invalid_input(
                "forward a port",
                format!("node {} has no address yet: link it first", server.name()),
            ));
        };
        let targets = [
            std::net::SocketAddr::new(IpAddr::V4(to.ipv4), server_port),
            std::net::SocketAddr::new(IpAddr::V6(to.ipv6), server_port),
        ];
        // One transaction: the kernel reads one batch per message it is sent.
        self.nftables_run(nftables::forward_port(&interface, port, &targets))
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
    /// The link's number in its network, for its random streams.
    stream: u32,
    network: std::sync::Weak<NetworkInner>,
    /// How each direction (by sending end) reaches the fault engine.
    faults: Mutex<[Plumbing; 2]>,
}

/// How one direction of a link reaches the fault engine (see `faults.rs`).
#[derive(Default)]
struct Plumbing {
    /// Once the engine's veth pair exists and the engine carries the
    /// direction: the index of the pair's end that the redirect targets.
    target: Option<i32>,
    /// The sending end's egress redirects to the engine.
    attached: bool,
}

struct End {
    node: Node,
    index: i32,
    name: String,
    addresses: Option<Addresses>,
}

impl Link {
    fn create(
        network: &Network,
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
        for (node, addresses) in [(a, &a_addresses), (b, &b_addresses)] {
            if let Some(addresses) = addresses {
                lock(&node.inner.addresses).push(addresses.clone());
                network.inner.names.add_addresses(
                    node.name(),
                    &[IpAddr::V4(addresses.ipv4), IpAddr::V6(addresses.ipv6)],
                )?;
            }
        }
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
                stream: network.inner.next_stream.fetch_add(1, Ordering::Relaxed),
                network: Arc::downgrade(&network.inner),
                faults: Mutex::default(),
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

    /// Heals a cut link: both ends up, with everything they had: their
    /// addresses (the kernel drops IPv6 ones when a link goes down) and the
    /// routes through the link (default routes included; the kernel drops
    /// those too).
    pub fn set_up(&self) -> Result<(), Error> {
        for end in &self.inner.ends {
            end.node
                .netlink_run(vec![netlink::set_up(end.index, &end.name)])?;
        }
        for end in &self.inner.ends {
            for message in address_messages(end.index, &end.addresses) {
                ignore_existing(end.node.netlink_run(vec![message]))?;
            }
        }
        for (this, other) in [(0, 1), (1, 0)] {
            let (end, peer) = (&self.inner.ends[this], &self.inner.ends[other]);
            // The routes of this end's node whose gateway is on this link.
            let subnets: Vec<(IpAddr, u8)> = [&end.addresses, &peer.addresses]
                .into_iter()
                .flatten()
                .flat_map(|a| {
                    [
                        (IpAddr::V4(a.ipv4), a.ipv4_prefix),
                        (IpAddr::V6(a.ipv6), a.ipv6_prefix),
                    ]
                })
                .collect();
            let routes: Vec<_> = lock(&end.node.inner.routes)
                .iter()
                .filter(|(_, _, gateway)| {
                    subnets
                        .iter()
                        .any(|(net, prefix)| same_subnet(*net, *gateway, *prefix))
                })
                .copied()
                .collect();
            for (network, prefix, gateway) in routes {
                ignore_existing(
                    end.node
                        .netlink_run(vec![netlink::add_route(network, prefix, gateway)]),
                )?;
            }
        }
        Ok(())
    }
}

/// An address or route that is there already is what was wanted.
fn ignore_existing(result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Whether `a` and `b` are in one subnet of `prefix` bits.
fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let (a, b, width) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(prefix);
    a.checked_shr(shift) == b.checked_shr(shift)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
