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
//! NAT rule on). The [`Network`] holds every namespace it made, and every
//! handle holds the network: dropping the last of them lets the kernel free
//! every namespace, and with them every link: no per-link deletes.

mod classify;
mod engine;
mod faults;
mod firewall;
mod names;
mod nat;
mod pipeline;
mod prng;
mod settle;
mod subnets;

use crate::error::Error;
use crate::netns::NetNs;
use crate::os::netlink::{self, Netlink};
use crate::pool::{self, MAX_LINKS, MAX_SWITCHES};
use crate::sync::lock;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A set of namespaces wired together. Everything it made (nodes, routers,
/// switches, links) lives as long as it or any handle to one of its nodes,
/// switches or links does, whichever of them are dropped: a helper may
/// build a lab and return only the nodes a test talks to. Once the last of
/// them is dropped, every namespace goes at once (unless `NETNS_TEST_KEEP`
/// or `NETNS_TEST_CAPTURE` holds them for the end of the test).
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
    /// The subnets of the links and switches.
    subnets: subnets::Registry,
    /// The namespace of every node, router and switch made: each handle
    /// holds the network, and so all of them.
    namespaces: Mutex<Vec<NetNs>>,
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
                subnets: subnets::Registry::default(),
                namespaces: Mutex::default(),
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
    /// (no DAD): `a` takes `.1`/`::1`, `b` `.2`/`::2`. It carries its first
    /// packet, in both families, as soon as this returns.
    pub fn link(&self, a: &Node, b: &Node) -> Result<Link, Error> {
        self.link_with(a, b, &[])
    }

    /// [`Network::link`] in subnets of your choice, in any range (inside a
    /// network nothing reaches the host): `"192.168.1.0/24"`,
    /// `"100.64.0.0/10"`, `"2001:db8:1::/64"`; at most one per family, the
    /// other family from netns-test's pool. `a` takes the subnet's first
    /// host address, `b` the second. A subnet that overlaps one of
    /// another link or switch of the network is an `InvalidInput` error
    /// naming both.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// let net = netns_test::Network::new();
    /// let (home, isp) = (net.router("home")?, net.router("isp")?);
    /// let wan = net.link_with(&home, &isp, &["203.0.113.0/30"])?;
    /// assert_eq!(home.ipv4_on(&wan), std::net::Ipv4Addr::new(203, 0, 113, 1));
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn link_with(&self, a: &Node, b: &Node, subnets: &[&str]) -> Result<Link, Error> {
        if Arc::ptr_eq(&a.inner, &b.inner) {
            return Err(Error::invalid_input(
                "link",
                format!(
                    "a link needs two different nodes, and both ends are {}",
                    a.name()
                ),
            ));
        }
        let (v4, v6) = subnets::parse(subnets, "link")?;
        let owner = format!("link {}-{}", a.name(), b.name());
        let (v4, v6) = self.claim_subnets(
            v4,
            v6,
            &owner,
            "link",
            |k| {
                let (ipv4, ipv6) = pool::link_end(k, 0);
                (subnets::Subnet::v4(ipv4, 30), subnets::Subnet::v6(ipv6, 64))
            },
            &self.inner.next_link,
            MAX_LINKS,
        )?;
        let addresses = |host: u128| Addresses {
            ipv4: match v4.host(host) {
                Some(IpAddr::V4(a)) => a,
                _ => unreachable!("a link's subnet holds two hosts"),
            },
            ipv4_prefix: v4.prefix(),
            ipv6: match v6.host(host) {
                Some(IpAddr::V6(a)) => a,
                _ => unreachable!("a link's subnet holds two hosts"),
            },
            ipv6_prefix: v6.prefix(),
        };
        let made = Link::create(self, a, Some(addresses(1)), b, Some(addresses(2)));
        let link = made.inspect_err(|_| self.inner.subnets.release(&owner, &[v4, v6]))?;
        route_via_routers(&link)?;
        link.settle()?;
        Ok(link)
    }

    /// The subnets of a new link or switch: the user's (`v4`, `v6`), else
    /// the next free ones of the pool (`pool(k)` for slot `k` of `next`,
    /// at most `max`), claimed for `owner`.
    #[allow(clippy::too_many_arguments)]
    fn claim_subnets(
        &self,
        v4: Option<subnets::Subnet>,
        v6: Option<subnets::Subnet>,
        owner: &str,
        operation: &'static str,
        pool: impl Fn(u32) -> (subnets::Subnet, subnets::Subnet),
        next: &AtomicU32,
        max: u32,
    ) -> Result<(subnets::Subnet, subnets::Subnet), Error> {
        let registry = &self.inner.subnets;
        // The user's first: they are what was asked for.
        let chosen: Vec<_> = [v4, v6].into_iter().flatten().collect();
        registry.claim(&chosen, owner, operation)?;
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= max {
                registry.release(owner, &chosen);
                return Err(Error::detected(
                    operation,
                    std::io::ErrorKind::Other,
                    format!("a network holds at most {max} {operation}s"),
                ));
            }
            let (pool4, pool6) = pool(k);
            let wanted: Vec<_> = [(v4.is_none(), pool4), (v6.is_none(), pool6)]
                .into_iter()
                .filter(|(wanted, _)| *wanted)
                .map(|(_, s)| s)
                .collect();
            if wanted.iter().any(|s| registry.is_taken(s)) {
                continue; // a user's subnet is there: the next slot
            }
            registry.claim(&wanted, owner, operation)?;
            return Ok((v4.unwrap_or(pool4), v6.unwrap_or(pool6)));
        }
    }

    /// A switch: a bridge in a namespace of its own, with a /24 and a /64
    /// for the nodes attached to it.
    pub fn switch(&self, name: &str) -> Result<Switch, Error> {
        self.switch_with(name, &[])
    }

    /// [`Network::switch`] in subnets of your choice (see
    /// [`Network::link_with`]): the nodes attached take the subnet's host
    /// addresses in turn, from the first (`192.168.1.1`, `.2`, ...).
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// let net = netns_test::Network::new();
    /// let lan = net.switch_with("lan", &["192.168.1.0/24"])?;
    /// let router = net.router("home")?;
    /// let link = net.attach(&router, &lan)?;
    /// assert_eq!(router.ipv4_on(&link), std::net::Ipv4Addr::new(192, 168, 1, 1));
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn switch_with(&self, name: &str, subnets: &[&str]) -> Result<Switch, Error> {
        let (v4, v6) = subnets::parse(subnets, "switch")?;
        let owner = format!("switch {name}");
        let (v4, v6) = self.claim_subnets(
            v4,
            v6,
            &owner,
            "switch",
            |k| {
                let (ipv4, ipv6) = pool::switch_member(k, 0);
                (subnets::Subnet::v4(ipv4, 24), subnets::Subnet::v6(ipv6, 64))
            },
            &self.inner.next_switch,
            MAX_SWITCHES,
        )?;
        let made = (|| {
            let node = Node::new(self, name, false)?;
            let bridge = node.next_index();
            node.netlink_run(vec![netlink::new_bridge("br0", bridge)])?;
            Ok(Switch {
                node,
                bridge,
                v4,
                v6,
                next_host: AtomicU32::new(1),
                members: Members::default(),
            })
        })();
        made.inspect_err(|_| self.inner.subnets.release(&owner, &[v4, v6]))
    }

    /// Attaches `node` to `switch` by a veth pair whose switch end is a
    /// bridge port; the node's end gets the next address of the switch's
    /// subnets. Returns the link, for [`Node::ipv4_on`] and link faults.
    /// The node reaches the others on the switch, in both families, with
    /// its first packet, as soon as this returns.
    pub fn attach(&self, node: &Node, switch: &Switch) -> Result<Link, Error> {
        let host = switch.next_host.fetch_add(1, Ordering::Relaxed);
        let (Some(IpAddr::V4(ipv4)), Some(IpAddr::V6(ipv6))) =
            (switch.v4.host(host.into()), switch.v6.host(host.into()))
        else {
            return Err(Error::detected(
                "attach",
                std::io::ErrorKind::Other,
                format!(
                    "switch {}'s subnets {} and {} hold at most {} nodes",
                    switch.node.name(),
                    switch.v4,
                    switch.v6,
                    switch.v4.capacity().min(switch.v6.capacity())
                ),
            ));
        };
        let addresses = Addresses {
            ipv4,
            ipv4_prefix: switch.v4.prefix(),
            ipv6,
            ipv6_prefix: switch.v6.prefix(),
        };
        let link = Link::create(self, node, Some(addresses.clone()), &switch.node, None)?;
        let port = &link.inner.ends[1];
        switch.node.netlink_run(vec![netlink::enslave_and_up(
            port.index,
            &port.name,
            switch.bridge,
        )])?;
        let _ = link.inner.switch.set(switch.members.clone());
        let mut members = lock(&switch.members);
        if node.router {
            for (member, _) in members.iter().filter(|(m, _)| !m.router) {
                member.default_via(&addresses)?;
            }
        } else if let Some((_, router)) = members.iter().find(|(m, _)| m.router) {
            node.default_via(router)?;
        }
        members.push((node.clone(), addresses));
        drop(members);
        link.settle()?;
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
    /// What keeps the rest of the network alive while the node is.
    _network: Arc<NetworkInner>,
    netlink: Mutex<Netlink>,
    /// The node's NATs, by link (see `nat.rs`).
    nat: Mutex<nat::Nats<NodeInner>>,
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
        let (ns, (netlink, hosts, nat)) = NetNs::new_with(|ns| {
            if let Some(observer) = &observer {
                observer.made(name, ns)?;
            }
            let hosts = std::fs::OpenOptions::new()
                .append(true)
                .open("/etc/hosts")
                .map_err(|e| Error::at("open", std::path::Path::new("/etc/hosts"), e))?;
            // A router's NAT socket and sysctls, while in it (see `nat/`);
            // a kernel without them fails only when a NAT is set.
            let nat = match router {
                true => nat::Nats::open_here().unwrap_or_default(),
                false => nat::Nats::default(),
            };
            Ok((Netlink::open()?, hosts, nat))
        })
        .map_err(|e| e.in_node(name))?;
        names.add_hosts_file(hosts)?;
        lock(&network.inner.namespaces).push(ns.clone());
        Ok(Node {
            inner: Arc::new(NodeInner {
                name: name.to_owned(),
                ns,
                _network: Arc::clone(&network.inner),
                netlink: Mutex::new(netlink),
                routes: Mutex::default(),
                addresses: Mutex::default(),
                nat: Mutex::new(nat),
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
        lock(&self.inner.netlink)
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
    /// The subnets its members take addresses from.
    v4: subnets::Subnet,
    v6: subnets::Subnet,
    next_host: AtomicU32,
    /// The attached nodes and their addresses on the switch.
    members: Members,
}

/// A switch's attached nodes and their addresses, shared with the links
/// that attach them.
type Members = Arc<Mutex<Vec<(Node, Addresses)>>>;

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
    network: Arc<NetworkInner>,
    /// How each direction (by sending end) reaches the fault engine.
    faults: Mutex<[Plumbing; 2]>,
    /// The switch's members, when the link attaches a node to a switch.
    switch: std::sync::OnceLock<Members>,
}

/// How one direction of a link reaches the fault engine (see `faults.rs`).
#[derive(Default)]
struct Plumbing {
    /// Once the engine's veth pair exists and the engine carries the
    /// direction: the index of the pair's end that the redirect targets.
    target: Option<i32>,
    /// What the sending end's egress filter redirects to the engine, while
    /// it has one.
    filter: Option<classify::Takes>,
    /// The plans the engine runs for the direction, one per rule.
    plans: Vec<crate::schedule::Plan>,
    /// Where the engine publishes the direction's counters.
    report: Option<Arc<engine::Report>>,
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
                network: Arc::clone(&network.inner),
                faults: Mutex::default(),
                switch: std::sync::OnceLock::new(),
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
    /// those too). The link carries its first packet again, in both
    /// families, as soon as this returns.
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
        self.settle()
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
