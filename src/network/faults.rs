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

use super::engine::{DirectionId, Engine, Sockets};
use super::{Link, NetworkInner, Node};
use crate::error::Error;
use crate::impairment::Impairment;
use crate::os::{netlink, packet};
use crate::schedule::{Plan, Schedule};
use std::os::fd::AsFd;
use std::sync::Arc;

/// The MTU of the engine's veth pairs: the largest, so that no frame an
/// end can send is too big for them.
const INNER_MTU: u32 = 65535;

impl NetworkInner {
    /// The engine, started on first use.
    pub(super) fn engine(&self) -> Result<Arc<Engine>, Error> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(engine) = &*engine {
            return Ok(Arc::clone(engine));
        }
        // Made in a test (or first impaired there): a failure fails it.
        let observer = crate::netns::current_observer();
        let started = Arc::new(Engine::start(self.seed, observer)?);
        *engine = Some(Arc::clone(&started));
        Ok(started)
    }
}

impl Link {
    /// Impairs both directions of the link, replacing what was set before
    /// for each (a schedule too); `Impairment::new()` clears them.
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
        let plan = Plan::constant(impairment.model("impair")?);
        self.set_plan("impair", 0, plan.clone())?;
        self.set_plan("impair", 1, plan)
    }

    /// Impairs only what `from` sends over this link, replacing what was
    /// set before for that direction; the other direction is unchanged.
    /// `loss(100.0)` makes a one-way partition.
    pub fn impair_from(&self, from: &Node, impairment: Impairment) -> Result<(), Error> {
        let end = self.sending_end(from, "impair_from")?;
        self.set_plan(
            "impair_from",
            end,
            Plan::constant(impairment.model("impair_from")?),
        )
    }

    /// Impairs only what this link carries to `to` (for a node attached to
    /// a switch, what the switch sends it).
    pub fn impair_to(&self, to: &Node, impairment: Impairment) -> Result<(), Error> {
        let end = 1 - self.sending_end(to, "impair_to")?;
        self.set_plan(
            "impair_to",
            end,
            Plan::constant(impairment.model("impair_to")?),
        )
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
        let plan = schedule.plan()?;
        self.set_plan("schedule", 0, plan.clone())?;
        self.set_plan("schedule", 1, plan)
    }

    /// A [`Schedule`] for what `from` sends only.
    pub fn schedule_from(&self, from: &Node, schedule: Schedule) -> Result<(), Error> {
        let end = self.sending_end(from, "schedule_from")?;
        self.set_plan("schedule_from", end, schedule.plan()?)
    }

    fn sending_end(&self, node: &Node, operation: &'static str) -> Result<usize, Error> {
        self.inner
            .ends
            .iter()
            .position(|end| Arc::ptr_eq(&end.node.inner, &node.inner))
            .ok_or_else(|| {
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

    /// Has the engine run `plan` for what `end` sends: makes the direction's
    /// plumbing on first use, attaches it while the plan does something,
    /// detaches it when the plan is clear.
    fn set_plan(&self, operation: &'static str, end: usize, plan: Plan) -> Result<(), Error> {
        let clear = plan.is_clear();
        let mut faults = self.inner.faults.lock().unwrap_or_else(|p| p.into_inner());
        let plumbing = &mut faults[end];
        if clear && plumbing.target.is_none() {
            return Ok(());
        }
        let engine = self.inner.network.engine()?;
        let id = self.direction(end);
        let target = match plumbing.target {
            Some(target) => {
                engine.set_plan(operation, id, plan)?;
                target
            }
            None => {
                let (target, sockets) = self.plumb(end)?;
                if let Err(error) = engine.add(operation, id, sockets, plan) {
                    self.unplumb(end, target);
                    return Err(error);
                }
                plumbing.target = Some(target);
                target
            }
        };
        let sending = &self.inner.ends[end];
        if clear && plumbing.attached {
            sending
                .node
                .netlink_run(vec![netlink::delete_clsact(sending.index, &sending.name)])?;
            plumbing.attached = false;
        } else if !clear && !plumbing.attached {
            sending.node.netlink_run(vec![
                netlink::add_clsact(sending.index, &sending.name),
                netlink::redirect_egress(sending.index, &sending.name, target),
            ])?;
            plumbing.attached = true;
        }
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
