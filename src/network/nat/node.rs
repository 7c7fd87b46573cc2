//! What a router's NAT calls do: [`Node::nat`], [`Node::rebind`],
//! [`Node::masquerade`], [`Node::forward_port`], and the routes a NAT
//! brings.

use super::rules::{self, Mode};
use super::{LinkNat, Nats, TIMEOUT_SYSCTLS, Timeouts, open_timeouts};
use crate::error::Error;
use crate::nat::{Nat, NatSettings};
use crate::network::{Addresses, End, Link, Node, NodeInner, same_subnet};
use crate::os::netlink::Message;
use crate::os::nftables;
use crate::sync::lock;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Weak;

impl Node {
    /// This node's end of `link`, or an `InvalidInput` error naming the
    /// node, for `operation`.
    pub(in crate::network) fn end_of<'l>(
        &self,
        link: &'l Link,
        operation: &'static str,
    ) -> Result<&'l End, Error> {
        let end = link
            .inner
            .ends
            .iter()
            .find(|end| std::sync::Arc::ptr_eq(&end.node.inner, &self.inner))
            .ok_or_else(|| {
                Error::invalid_input(
                    operation,
                    format!(
                        "{} is not on link {link:?}: give one of {}'s own links",
                        self.name(),
                        self.name()
                    ),
                )
                .in_node(self.name())
            })?;
        if end.addresses.is_none() {
            return Err(Error::invalid_input(
                operation,
                format!("{} has no address on link {link:?}", self.name()),
            )
            .in_node(self.name()));
        }
        Ok(end)
    }

    /// Sets the NAT of this router on `outside`, replacing what that link
    /// had (a NAT, [`Node::masquerade`]) in one step, also during a test.
    /// [`Nat`] says how it maps and filters; IPv4 is translated to this
    /// router's address on `outside`, IPv6 is only filtered.
    ///
    /// It also gives the router default routes (IPv4 and IPv6, when it has
    /// none) via the node across `outside` (on a switch: its router, if it
    /// has one), and gives the nodes across routes to this router's inside
    /// IPv6 prefixes (and on upstream through their own NATs).
    ///
    /// Flows that exist keep their public ports; the new mapping and
    /// filtering apply to what comes next, and the new timeouts from each
    /// flow's next packet. Timeouts are the router's conntrack timeouts
    /// (per namespace: a router with two NATs has the last one's).
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// use netns_test::{Nat, Network};
    /// let net = Network::new();
    /// let isp = net.router("isp")?;
    /// let home = net.router("home")?;
    /// let laptop = net.node("laptop")?;
    /// let wan = net.link(&home, &isp)?;
    /// net.link(&laptop, &home)?;
    /// home.nat(&wan, Nat::full_cone())?;
    /// home.nat(&wan, Nat::symmetric())?; // replaces it
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` naming the router when it is not a router or not on
    /// `outside`, or naming the knob of `nat` that is out of range; the
    /// router keeps what it had.
    pub fn nat(&self, outside: &Link, nat: Nat) -> Result<(), Error> {
        let settings = nat.check().map_err(|e| e.in_node(self.name()))?;
        let end = self.end_of(outside, "set a NAT")?;
        if !self.router {
            return Err(Error::invalid_input(
                "set a NAT",
                format!(
                    "{} is a node, not a router (Network::router): a NAT translates what a router forwards",
                    self.name()
                ),
            )
            .in_node(self.name()));
        }
        let mut nats = lock(&self.inner.nat);
        self.open(&mut nats, true)?;
        let at = self.set_mode(&mut nats, end, Mode::Nat(settings.clone()))?;
        self.write_timeouts(&mut nats, &settings)?;
        // Routes: the router's defaults via the link, the inside IPv6
        // prefixes from across it.
        let upstream = upstream(outside, end);
        let via = end
            .addresses
            .as_ref()
            .map(|a| a.ipv6)
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        let state = &mut nats.links[at];
        state.upstream = upstream
            .iter()
            .map(|n| std::sync::Arc::downgrade(&n.inner))
            .collect();
        state.via = via;
        drop(nats);
        if let Some(gateway) = gateway(outside, end, self) {
            self.default_via(&gateway)?;
        }
        let prefixes = self.inside_prefixes(end);
        for node in &upstream {
            advertise(node, &prefixes, via, 0)?;
        }
        Ok(())
    }

    /// Rebinds every mapping of this router's NAT on `outside` (RFC 9000
    /// §9.3: a NAT that forgets): each flow's next outgoing packet leaves
    /// from a new public port, and the old ones receive nothing.
    ///
    /// # Errors
    /// `InvalidInput` naming the router when `outside` has no
    /// [`Node::nat`] of it.
    pub fn rebind(&self, outside: &Link) -> Result<(), Error> {
        let end = self.end_of(outside, "rebind a NAT")?;
        let mut nats = lock(&self.inner.nat);
        let Some(at) = nats
            .links
            .iter()
            .position(|l| l.index == end.index && matches!(l.mode, Mode::Nat(_)))
        else {
            return Err(Error::invalid_input(
                "rebind a NAT",
                format!(
                    "{} has no NAT on {} ({outside:?}): set one with Node::nat first",
                    self.name(),
                    end.name
                ),
            )
            .in_node(self.name()));
        };
        let state = &nats.links[at];
        let (mark, mask) = state.rules().generation_mark();
        let mut next = state.rules();
        next.generation += 1;
        let mut messages = rules::replace(&next, &state.mode);
        messages.extend(rules::forget_mappings(&next));
        self.run(&mut nats, nftables::transaction(messages))?;
        nats.links[at].generation += 1;
        // The current generation's flows now update nothing: delete them.
        self.run(
            &mut nats,
            vec![nftables::flush_conntrack(nix::libc::AF_INET, mark, mask)],
        )
    }

    /// Source NAT in this node's namespace, as Linux's `masquerade` does
    /// it: traffic leaving through `outside` takes this node's address
    /// there, IPv4 and IPv6 (NAT66), with conntrack's mapping (the inside
    /// port kept when free) and filtering (replies only), and nothing
    /// dropped. It replaces what the link had ([`Node::nat`]). Loaded
    /// over netlink: no `nft` program is needed.
    pub fn masquerade(&self, outside: &Link) -> Result<(), Error> {
        let end = self.end_of(outside, "masquerade")?;
        let mut nats = lock(&self.inner.nat);
        self.open(&mut nats, false)?;
        self.set_mode(&mut nats, end, Mode::Masquerade).map(drop)
    }

    /// Port forwarding in this node's namespace (destination NAT): TCP and
    /// UDP arriving through `outside` for `port` go to `server_port` of
    /// `server`, at its address on a subnet this node shares with it (else
    /// its first), IPv4 and IPv6. With [`Node::masquerade`] or
    /// [`Node::nat`] (whose filtering lets it in, and which then never
    /// maps `port`), a server behind NAT can be reached from outside.
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
        let end = self.end_of(outside, "forward a port")?;
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
            SocketAddr::new(IpAddr::V4(to.ipv4), server_port),
            SocketAddr::new(IpAddr::V6(to.ipv6), server_port),
        ];
        let mut nats = lock(&self.inner.nat);
        self.open(&mut nats, false)?;
        let at = self.state(&mut nats, end);
        let mut messages = Vec::new();
        if !nats.links[at].created {
            messages.extend(rules::replace(&nats.links[at].rules(), &Mode::None));
        }
        messages.extend(rules::forward_port(&nats.links[at].rules(), port, &targets));
        self.commit(&mut nats, at, messages)
    }

    /// Opens the netfilter socket (and, for `timeouts`, the conntrack
    /// timeout sysctls) inside the node, once.
    fn open(&self, nats: &mut Nats<NodeInner>, timeouts: bool) -> Result<(), Error> {
        if nats.socket.is_some() && (!timeouts || nats.timeouts.is_some()) {
            return Ok(());
        }
        let want_socket = nats.socket.is_none();
        let (socket, files) = self
            .netns()
            .run(|| -> Result<_, Error> {
                let socket = if want_socket {
                    Some(nftables::open()?)
                } else {
                    None
                };
                let files = if timeouts {
                    Some(open_timeouts()?)
                } else {
                    None
                };
                Ok((socket, files))
            })
            .map_err(|e| e.in_node(self.name()))?;
        if let Some(socket) = socket {
            nats.socket = Some(socket);
        }
        if let Some(files) = files {
            nats.timeouts = Some(Timeouts {
                files,
                written: None,
            });
        }
        Ok(())
    }

    /// The index of `end`'s link in `nats`, added (with nothing loaded)
    /// when missing.
    fn state(&self, nats: &mut Nats<NodeInner>, end: &End) -> usize {
        if let Some(at) = nats.links.iter().position(|l| l.index == end.index) {
            return at;
        }
        let public = end
            .addresses
            .as_ref()
            .map_or(Ipv4Addr::UNSPECIFIED, |a| a.ipv4);
        nats.links.push(LinkNat {
            index: end.index,
            interface: end.name.clone(),
            public,
            mode: Mode::None,
            created: false,
            generation: 0,
            upstream: Vec::new(),
            via: Ipv6Addr::UNSPECIFIED,
        });
        nats.links.len() - 1
    }

    /// Replaces the rules of `end`'s link with what `mode` makes, in one
    /// transaction (making the table first when it is new); returns the
    /// link's index in `nats`.
    fn set_mode(&self, nats: &mut Nats<NodeInner>, end: &End, mode: Mode) -> Result<usize, Error> {
        let at = self.state(nats, end);
        let messages = rules::replace(&nats.links[at].rules(), &mode);
        self.commit(nats, at, messages)?;
        nats.links[at].mode = mode;
        Ok(at)
    }

    /// Runs `messages` on the table of link `at` in one transaction, which
    /// makes the table first when it is new; a link added for it is
    /// forgotten again when the transaction fails.
    fn commit(
        &self,
        nats: &mut Nats<NodeInner>,
        at: usize,
        messages: Vec<Message>,
    ) -> Result<(), Error> {
        let created = nats.links[at].created;
        let mut all = Vec::new();
        if !created {
            all.extend(rules::create(&nats.links[at].rules()));
        }
        all.extend(messages);
        match self.run(nats, nftables::transaction(all)) {
            Ok(()) => {
                nats.links[at].created = true;
                Ok(())
            }
            Err(e) => {
                if !created {
                    nats.links.remove(at);
                }
                Err(e)
            }
        }
    }

    fn write_timeouts(
        &self,
        nats: &mut Nats<NodeInner>,
        settings: &NatSettings,
    ) -> Result<(), Error> {
        use std::os::unix::fs::FileExt;
        let wanted = (settings.udp_seconds, settings.tcp_seconds);
        let timeouts = nats.timeouts.as_mut().expect("opened");
        if timeouts.written == Some(wanted) {
            return Ok(());
        }
        for (i, seconds) in [wanted.0, wanted.0, wanted.1].into_iter().enumerate() {
            timeouts.files[i]
                .write_at(format!("{seconds}\n").as_bytes(), 0)
                .map_err(|e| {
                    Error::at("write", std::path::Path::new(TIMEOUT_SYSCTLS[i]), e)
                        .in_node(self.name())
                })?;
        }
        timeouts.written = Some(wanted);
        Ok(())
    }

    /// Runs `messages` on the node's netfilter socket, opened inside it
    /// on first use (the firewall's, beside the NATs').
    pub(in crate::network) fn netfilter_run(&self, messages: Vec<Message>) -> Result<(), Error> {
        let mut nats = lock(&self.inner.nat);
        self.open(&mut nats, false)?;
        self.run(&mut nats, messages)
    }

    fn run(&self, nats: &mut Nats<NodeInner>, messages: Vec<Message>) -> Result<(), Error> {
        nats.socket
            .as_mut()
            .expect("opened")
            .run(messages)
            .map_err(|e| e.in_node(self.name()))
    }

    /// The IPv6 prefixes this router routes on its side of `wan`: its
    /// other links' subnets and its routes through them.
    fn inside_prefixes(&self, wan: &End) -> Vec<(Ipv6Addr, u8)> {
        let outside = wan.addresses.as_ref().expect("checked");
        let mut prefixes: Vec<(Ipv6Addr, u8)> = lock(&self.inner.addresses)
            .iter()
            .filter(|a| a.ipv6 != outside.ipv6)
            .map(|a| (network6(a.ipv6, a.ipv6_prefix), a.ipv6_prefix))
            .collect();
        for (destination, prefix, gateway) in lock(&self.inner.routes).iter() {
            if let (IpAddr::V6(destination), true) = (destination, *prefix > 0) {
                if !same_subnet(*gateway, IpAddr::V6(outside.ipv6), outside.ipv6_prefix) {
                    prefixes.push((*destination, *prefix));
                }
            }
        }
        prefixes.sort();
        prefixes.dedup();
        prefixes
    }
}

fn network6(address: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(address);
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

/// The nodes across `end`'s link that should route to the router: the
/// other end of a plain link; on a switch, its routers, or every member
/// when it has none.
fn upstream(link: &Link, end: &End) -> Vec<Node> {
    let other = link
        .inner
        .ends
        .iter()
        .find(|e| !std::ptr::eq(*e, end))
        .expect("two ends");
    if other.addresses.is_some() {
        return vec![other.node.clone()];
    }
    let Some(members) = link.inner.switch.get() else {
        return Vec::new();
    };
    let members = lock(members);
    let others = members
        .iter()
        .filter(|(m, _)| !std::sync::Arc::ptr_eq(&m.inner, &end.node.inner));
    let routers: Vec<Node> = others
        .clone()
        .filter(|(m, _)| m.router)
        .map(|(m, _)| m.clone())
        .collect();
    if routers.is_empty() {
        others.map(|(m, _)| m.clone()).collect()
    } else {
        routers
    }
}

/// The addresses of the router's default gateway across `end`'s link: the
/// other end, or the switch's first other router.
fn gateway(link: &Link, end: &End, router: &Node) -> Option<Addresses> {
    let other = link.inner.ends.iter().find(|e| !std::ptr::eq(*e, end))?;
    if let Some(addresses) = &other.addresses {
        return Some(addresses.clone());
    }
    let members = lock(link.inner.switch.get()?);
    members
        .iter()
        .find(|(m, _)| m.router && !std::sync::Arc::ptr_eq(&m.inner, &router.inner))
        .map(|(_, a)| a.clone())
}

/// Routes `prefixes` on `node` via `via`, and on from `node` to the nodes
/// across its own NATs.
fn advertise(
    node: &Node,
    prefixes: &[(Ipv6Addr, u8)],
    via: Ipv6Addr,
    depth: u8,
) -> Result<(), Error> {
    if depth > 16 {
        return Ok(());
    }
    for (prefix, length) in prefixes {
        // A route that is there already is what was wanted.
        let known = lock(&node.inner.routes)
            .iter()
            .any(|r| r.0 == IpAddr::V6(*prefix) && r.1 == *length);
        if known || node.is_own_subnet(*prefix) {
            continue;
        }
        match node.add_routes(vec![(IpAddr::V6(*prefix), *length, IpAddr::V6(via))]) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
            other => other?,
        }
    }
    let onward: Vec<(Vec<Weak<NodeInner>>, Ipv6Addr)> = lock(&node.inner.nat)
        .links
        .iter()
        .filter(|l| matches!(l.mode, Mode::Nat(_)))
        .map(|l| (l.upstream.clone(), l.via))
        .collect();
    for (upstream, via) in onward {
        for inner in upstream.iter().filter_map(Weak::upgrade) {
            let next = Node {
                inner,
                router: true,
            };
            advertise(&next, prefixes, via, depth + 1)?;
        }
    }
    Ok(())
}

impl Node {
    /// Whether `prefix` is (in) one of the node's own subnets.
    fn is_own_subnet(&self, prefix: Ipv6Addr) -> bool {
        lock(&self.inner.addresses)
            .iter()
            .any(|a| same_subnet(IpAddr::V6(a.ipv6), IpAddr::V6(prefix), a.ipv6_prefix))
    }
}
