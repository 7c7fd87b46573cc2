//! Faults on a link: [`Link::impair`], [`Link::impair_from`],
//! [`Link::schedule`], and the plumbing that takes one direction's frames
//! through the network's fault engine.
//!
//! To impair what an end `eth0` sends, its node gets a veth pair of its own,
//! `f-eth0` / `f-eth0e`, silent (no ARP, no IPv6 address). A filter on
//! `eth0`'s egress redirects every frame to `f-eth0`, whose checksum offload
//! is off, so the kernel hands over whole, checksummed frames; a packet
//! socket on `f-eth0e` takes them (a drop-all ingress filter there keeps
//! them from the node's stack), the engine decides their fate, and a packet
//! socket on `eth0` that bypasses its queueing discipline and filters sends
//! them on to the peer. A direction never impaired has none of this: a plain
//! veth. Cleared, it loses the redirect and is a plain veth again.
//!
//! When every impairment of the direction selects its traffic
//! ([`Impairment::only`]), the filter's classic-BPF program takes only the
//! frames one of them selects (see `classify.rs`): the rest stays on the
//! plain veth, at its full speed.

use super::classify::Takes;
use super::engine::{DirectionId, Engine, Report, Sockets, Start};
use super::{Link, NetworkInner, Node};
use crate::error::Error;
use crate::impairment::{Claims, Impairment, LinkCounters};
use crate::os::{netlink, packet};
use crate::schedule::{self, Plan, Schedule};
use crate::sync::lock;
use crate::traffic::Match;
use std::os::fd::AsFd;
use std::sync::Arc;

/// The MTU of the engine's veth pairs: the largest, so that no frame an
/// end can send is too big for them.
const INNER_MTU: u32 = 65535;

impl NetworkInner {
    /// The engine, started on first use.
    pub(super) fn engine(&self) -> Result<Arc<Engine>, Error> {
        let mut engine = lock(&self.engine);
        if let Some(engine) = &*engine {
            return Ok(Arc::clone(engine));
        }
        // Made in a test (or first impaired there): a failure fails it.
        let observer = crate::netns::current_observer();
        let started = Arc::new(Engine::start(self.seed, observer)?);
        *engine = Some(Arc::clone(&started));
        Ok(started)
    }

    /// The engine, if it runs.
    fn running_engine(&self) -> Option<Arc<Engine>> {
        lock(&self.engine).clone()
    }
}

impl Link {
    /// Impairs both directions of the link, replacing what was set before
    /// for each (a schedule too); `Impairment::new()` clears them. An
    /// impairment [`only`](Impairment::only) for some traffic leaves the
    /// rest untouched; several, joined by
    /// [`otherwise`](Impairment::otherwise), each take their traffic.
    ///
    /// Bad values are [`InvalidInput`](std::io::ErrorKind::InvalidInput)
    /// errors naming the value and its valid range, and the link keeps what
    /// it had. See the README's "Faults" for where packets go and what each
    /// knob costs.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// use netns_test::{Impairment, Network};
    /// use std::time::Duration;
    /// let net = Network::new();
    /// let (a, b) = (net.node("a")?, net.node("b")?);
    /// let link = net.link(&a, &b)?;
    /// link.impair(Impairment::new().delay(Duration::from_millis(40)).jitter(Duration::from_millis(5)))?;
    /// link.impair_from(&a, Impairment::new().loss(5.0))?;  // only what a sends
    /// assert!(link.impair(Impairment::new().loss(200.0)).is_err());
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn impair(&self, impairment: Impairment) -> Result<(), Error> {
        let plans = schedule::constant(impairment.models("impair")?);
        self.set_plans("impair", 0, plans.clone())?;
        self.set_plans("impair", 1, plans)
    }

    /// Impairs only what `from` sends over this link, replacing what was
    /// set before for that direction; the other direction is unchanged.
    /// `loss(100.0)` makes a one-way partition.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// use netns_test::{Impairment, Network, Traffic};
    /// # let ms = std::time::Duration::from_millis;
    /// let net = Network::new();
    /// let (client, server) = (net.node("client")?, net.node("server")?);
    /// let link = net.link(&client, &server)?;
    /// // Slow DNS queries; the client's other traffic untouched.
    /// link.impair_from(&client, Impairment::new().delay(ms(300)).only(Traffic::udp().port(53)))?;
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn impair_from(&self, from: &Node, impairment: Impairment) -> Result<(), Error> {
        let end = self.sending_end(from, "impair_from")?;
        let plans = schedule::constant(impairment.models("impair_from")?);
        self.set_plans("impair_from", end, plans)
    }

    /// Impairs only what this link carries to `to` (for a node attached to
    /// a switch, what the switch sends it).
    pub fn impair_to(&self, to: &Node, impairment: Impairment) -> Result<(), Error> {
        let end = 1 - self.sending_end(to, "impair_to")?;
        let plans = schedule::constant(impairment.models("impair_to")?);
        self.set_plans("impair_to", end, plans)
    }

    /// What the fault engine did to what `from` sent over this link: see
    /// [`LinkCounters`]. Zero while the direction was never impaired. The
    /// counts cover every packet `from` sent before the call.
    ///
    /// # Panics
    /// When `from` is not an end of the link.
    pub fn counters_from(&self, from: &Node) -> LinkCounters {
        let end = self
            .end_index(from)
            .unwrap_or_else(|| panic!("node {} is not on this link", from.name()));
        self.counters_of(end)
    }

    /// What the fault engine did to what this link carried to `to` (for a
    /// node attached to a switch, what the switch sent it).
    ///
    /// # Panics
    /// When `to` is not an end of the link.
    pub fn counters_to(&self, to: &Node) -> LinkCounters {
        let end = self
            .end_index(to)
            .unwrap_or_else(|| panic!("node {} is not on this link", to.name()));
        self.counters_of(1 - end)
    }

    fn counters_of(&self, end: usize) -> LinkCounters {
        let report = lock(&self.inner.faults)[end].report.clone();
        let Some(report) = report else {
            return LinkCounters::default();
        };
        if let Some(engine) = self.inner.network.running_engine() {
            engine.sync();
        }
        report.counters().public()
    }

    /// Impairs both directions by a [`Schedule`] that starts now, replacing
    /// what was set before.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// use netns_test::{Impairment, Network, Schedule};
    /// use std::time::Duration;
    /// let ms = Duration::from_millis;
    /// let net = Network::new();
    /// let (a, b) = (net.node("a")?, net.node("b")?);
    /// let link = net.link(&a, &b)?;
    /// // A flapping link.
    /// link.schedule(Schedule::new().then(ms(500), Impairment::new().loss(100.0)).then(ms(200), Impairment::new()).repeat())?;
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn schedule(&self, schedule: Schedule) -> Result<(), Error> {
        let plans = schedule.plans()?;
        self.set_plans("schedule", 0, plans.clone())?;
        self.set_plans("schedule", 1, plans)
    }

    /// A [`Schedule`] for what `from` sends only.
    pub fn schedule_from(&self, from: &Node, schedule: Schedule) -> Result<(), Error> {
        let end = self.sending_end(from, "schedule_from")?;
        self.set_plans("schedule_from", end, schedule.plans()?)
    }

    /// Which of the link's ends `node` is.
    fn end_index(&self, node: &Node) -> Option<usize> {
        self.inner
            .ends
            .iter()
            .position(|end| Arc::ptr_eq(&end.node.inner, &node.inner))
    }

    fn sending_end(&self, node: &Node, operation: &'static str) -> Result<usize, Error> {
        self.end_index(node).ok_or_else(|| {
            Error::invalid_input(
                operation,
                format!("node {} is not an end of this link", node.name()),
            )
        })
    }

    fn direction(&self, end: usize) -> DirectionId {
        DirectionId {
            link: self.inner.stream,
            from_end: end as u8,
        }
    }

    /// `a eth0 → b eth1`: the direction in which `end` sends, for people.
    fn label(&self, end: usize) -> String {
        let (from, to) = (&self.inner.ends[end], &self.inner.ends[1 - end]);
        format!(
            "{} {} → {} {}",
            from.node.name(),
            from.name,
            to.node.name(),
            to.name
        )
    }

    /// Has the engine run `plans` (one per rule) for what `end` sends:
    /// makes the direction's plumbing on first use, attaches the filter
    /// while a plan does something (with the program that takes what the
    /// rules select), detaches it when every plan is clear. On an error the
    /// direction keeps what it had.
    fn set_plans(
        &self,
        operation: &'static str,
        end: usize,
        plans: Vec<Plan>,
    ) -> Result<(), Error> {
        let clear = plans.iter().all(Plan::is_clear);
        let mut faults = lock(&self.inner.faults);
        let plumbing = &mut faults[end];
        if clear && plumbing.target.is_none() {
            return Ok(());
        }
        let engine = self.inner.network.engine()?;
        let id = self.direction(end);
        let target = match plumbing.target {
            Some(target) => {
                engine.set_plans(operation, id, plans.clone())?;
                target
            }
            None => {
                let (target, sockets) = self.plumb(end)?;
                let report = Report::new(self.label(end));
                // A captured node shows the frames the engine takes as it
                // sent them, on its interface, with what was done to them.
                let sending = &self.inner.ends[end];
                let capture = crate::netns::current_observer().and_then(|observer| {
                    let (redirect, _) = inner_names(&sending.name);
                    observer.capture_sink(sending.node.netns(), &sending.name, &redirect)
                });
                let start = Start {
                    sockets,
                    plans: plans.clone(),
                    report: Arc::clone(&report),
                    capture,
                };
                let added = engine.add(operation, id, start);
                if let Err(error) = added {
                    self.unplumb(end, target);
                    return Err(error);
                }
                plumbing.target = Some(target);
                plumbing.report = Some(report);
                target
            }
        };
        let before = std::mem::replace(&mut plumbing.plans, plans);
        let wanted = (!clear).then(|| takes(&plumbing.plans));
        if wanted == plumbing.filter {
            return Ok(());
        }
        let sending = &self.inner.ends[end];
        let messages = match (&plumbing.filter, &wanted) {
            (_, None) => vec![netlink::delete_clsact(sending.index, &sending.name)],
            (None, Some(takes)) => vec![
                netlink::add_clsact(sending.index, &sending.name),
                netlink::redirect_egress(
                    sending.index,
                    &sending.name,
                    target,
                    &takes.program(),
                    false,
                ),
            ],
            (Some(_), Some(takes)) => vec![netlink::redirect_egress(
                sending.index,
                &sending.name,
                target,
                &takes.program(),
                true,
            )],
        };
        if let Err(error) = sending.node.netlink_run(messages) {
            // The engine gets back what it ran, for the filter it has.
            let _ = engine.set_plans(operation, id, before.clone());
            plumbing.plans = before;
            return Err(error);
        }
        plumbing.filter = wanted;
        Ok(())
    }

    /// Makes the engine's veth pair in the sending end's node, and the
    /// engine's two sockets there; returns the index of the pair's end that
    /// the redirect targets, and the sockets. On an error nothing is left.
    fn plumb(&self, end: usize) -> Result<(i32, Sockets), Error> {
        let sending = &self.inner.ends[end];
        let node = &sending.node;
        let (to, taken) = inner_names(&sending.name);
        let (to_index, taken_index) = (node.next_index(), node.next_index());
        node.netlink_run(vec![
            netlink::new_inner_veth(&to, to_index, &taken, taken_index, INNER_MTU),
            netlink::silence(to_index, &to),
            netlink::silence(taken_index, &taken),
            netlink::set_up_silent(to_index, &to),
            netlink::set_up_silent(taken_index, &taken),
            netlink::add_clsact(taken_index, &taken),
            netlink::drop_ingress(taken_index, &taken),
        ])?;
        let send_index = sending.index;
        let inner = (to.clone(), taken.clone());
        let sockets = node
            .netns()
            .run(move || {
                let steal = packet::receiver(taken_index)?;
                packet::checksum_frames(steal.as_fd(), &inner.0)?;
                packet::settle_link(steal.as_fd(), &inner.0)?;
                packet::settle_link(steal.as_fd(), &inner.1)?;
                let send = packet::sender(send_index)?;
                Ok(Sockets { steal, send })
            })
            .map_err(|e: Error| e.in_node(node.name()));
        match sockets {
            Ok(sockets) => Ok((to_index, sockets)),
            Err(error) => {
                self.unplumb(end, to_index);
                Err(error)
            }
        }
    }

    /// Removes the engine's veth pair of `end` (by its end `target`), after
    /// a failure to make the rest: a retry makes it again. (Deleting a veth
    /// waits for the kernel's RCU grace period: an error path only.)
    fn unplumb(&self, end: usize, target: i32) {
        let sending = &self.inner.ends[end];
        let (to, _) = inner_names(&sending.name);
        let _ = sending
            .node
            .netlink_run(vec![netlink::delete_link(target, &to)]);
    }
}

/// The names of the engine's veth pair for the end `name`: the one the
/// redirect transmits on, and the one the engine reads.
fn inner_names(name: &str) -> (String, String) {
    let prefix = netlink::FAULT_ENGINE_PREFIX;
    (format!("{prefix}{name}"), format!("{prefix}{name}e"))
}

impl Plan {
    /// Whether every step of the plan is clear.
    fn is_clear(&self) -> bool {
        self.steps.iter().all(|(_, model)| model.is_clear())
    }
}

/// What the rules of `plans` take, in any of their steps.
fn takes(plans: &[Plan]) -> Takes {
    let mut alternatives: Vec<Match> = Vec::new();
    for (_, model) in plans.iter().flat_map(|p| &p.steps) {
        match &model.claims {
            Claims::Nothing => {}
            Claims::All => return Takes::All,
            Claims::Only(more) => {
                for m in more.iter() {
                    if !alternatives.contains(m) {
                        alternatives.push(*m);
                    }
                }
            }
        }
    }
    Takes::Only(alternatives)
}
