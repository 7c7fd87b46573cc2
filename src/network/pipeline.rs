//! One impaired direction of a link, as a pure model: frames arrive with
//! a time, and leave at the times the impairment gives them. No I/O here;
//! the engine feeds it and sends what is due.
//!
//! The stages, in order: the path MTU, loss (independent or
//! Gilbert–Elliott), the rate limit and its queue, corruption, delay and
//! jitter (order kept), duplication, reordering.
//!
//! Determinism: every IP packet draws the same six numbers from the
//! direction's generator ([`Draws`]), whatever the knobs and whatever
//! happens to it, so that the decisions for the n-th packet depend only on
//! the seed and n. Frames of the link layer's own upkeep (ARP, IPv6
//! neighbour discovery and multicast listener reports, IGMP), whose number
//! depends on timers, draw nothing: they are never lost, corrupted,
//! duplicated or reordered, and only see the MTU, the rate and the fixed
//! delay.
//!
//! Order: a frame never leaves before one that arrived ahead of it (but
//! for a reordered one, which is held back), so the frames a direction
//! holds wait in one queue in the order they leave, and each arrival or
//! departure costs O(1).
//!
//! Changes: when the model changes (a new plan, or the next step of a
//! schedule) in a way that moves departures (delay, jitter, rate, queue
//! size), what the direction holds is timed again as if the new model had
//! been in force ([`Pipeline::retime`]): frames still in the rate limit's
//! queue drain at the new rate from now (those beyond a smaller queue are
//! dropped), frames past it take the new delay from when they passed it.
//!
//! Memory: every frame held counts its bytes and what holding it costs
//! besides ([`frame_cost`]); a direction holds at most [`MAX_HELD_BYTES`],
//! all its rules together (the engine gives each rule what the others
//! leave: [`Pipeline::set_room`]).
//!
//! Rules: a direction may carry several impairments, each for its traffic
//! ([`Impairment::only`](crate::Impairment::only)): each is a pipeline of
//! its own, with its own generator, and [`Pipeline::claims`] tells the
//! engine whether it takes a frame.

use super::classify::{VLAN_TAGS, View};
use super::prng::Prng;
use crate::impairment::{Claims, Model};
use crate::schedule::Plan;
use std::collections::VecDeque;

/// How long a held-back (reordered) packet waits for a packet to overtake
/// it, at most.
pub(super) const REORDER_HOLD_NS: u64 = 10_000_000;
/// The most memory the frames of one direction take (delayed, queued,
/// held), as [`frame_cost`] counts it. Beyond it frames are dropped and
/// counted as `overflow`.
pub(super) const MAX_HELD_BYTES: usize = 256 << 20;

const ETHERNET_HEADER: usize = 14;

/// The memory that holding a frame of `len` bytes takes: its bytes as the
/// allocator rounds them, the allocator's header, and its place in the
/// queue (counted twice: a queue's array doubles as it grows).
pub(super) fn frame_cost(len: usize) -> usize {
    len.next_multiple_of(16) + 16 + 2 * std::mem::size_of::<Queued>()
}

/// What happened to the frames of one direction (or one rule of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub arrived: u64,
    /// The arrived frames' bytes.
    pub bytes: u64,
    pub lost: u64,
    pub too_big: u64,
    pub queue_full: u64,
    pub overflow: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Frames that did not leave the moment they came (delay, jitter, the
    /// rate limit's queue, or behind those).
    pub delayed: u64,
    /// Frames the kernel refused to send on (the sending end down, say).
    pub unsent: u64,
    /// Frames the kernel dropped before the engine read them (its socket full).
    pub missed: u64,
}

/// What a rule did to one frame, for a capture's comment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Fate {
    /// The frame is the n-th IP packet the rule took (from 1); `None` for
    /// the link's upkeep.
    pub packet: Option<u64>,
    /// Why it was dropped, if it was.
    pub dropped: Option<&'static str>,
    /// The bit flipped, counted from the start of the IP packet.
    pub corrupted_bit: Option<usize>,
    pub duplicated: bool,
    pub reordered: bool,
    /// How much later than it came it leaves (reordering aside).
    pub delay_ns: u64,
}

impl Fate {
    /// Whether anything was done to the frame.
    pub(super) fn touched(&self) -> bool {
        self.dropped.is_some()
            || self.corrupted_bit.is_some()
            || self.duplicated
            || self.reordered
            || self.delay_ns > 0
    }

    /// `lost`, `delayed 40.120 ms, duplicated`: what was done, in words.
    pub(super) fn words(&self) -> String {
        if let Some(why) = self.dropped {
            return why.to_owned();
        }
        let mut words = Vec::new();
        if self.delay_ns > 0 {
            words.push(format!("delayed {:.3} ms", self.delay_ns as f64 / 1e6));
        }
        if let Some(bit) = self.corrupted_bit {
            words.push(format!("corrupted (bit {bit} of the IP packet flipped)"));
        }
        if self.duplicated {
            words.push("duplicated".to_owned());
        }
        if self.reordered {
            words.push("held back for the next packet to overtake (reorder)".to_owned());
        }
        words.join(", ")
    }
}

/// The six numbers an IP packet draws, in this order, used or not.
#[derive(Clone, Copy, Debug)]
struct Draws {
    loss: f64,
    corrupt: f64,
    bit: u64,
    duplicate: f64,
    reorder: f64,
    jitter: f64,
}

impl Counters {
    /// What a user sees of them.
    pub(super) fn public(&self) -> crate::impairment::LinkCounters {
        crate::impairment::LinkCounters {
            packets: self.arrived,
            bytes: self.bytes,
            lost: self.lost,
            too_big: self.too_big,
            queue_full: self.queue_full,
            overflow: self.overflow,
            corrupted: self.corrupted,
            duplicated: self.duplicated,
            reordered: self.reordered,
            delayed: self.delayed,
            missed: self.missed,
            unsent: self.unsent,
        }
    }

    /// The sum of two counts.
    pub(super) fn add(&mut self, other: &Counters) {
        self.arrived += other.arrived;
        self.bytes += other.bytes;
        self.lost += other.lost;
        self.too_big += other.too_big;
        self.queue_full += other.queue_full;
        self.overflow += other.overflow;
        self.corrupted += other.corrupted;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.delayed += other.delayed;
        self.unsent += other.unsent;
        self.missed += other.missed;
    }
}

impl Draws {
    /// What an upkeep frame gets, without drawing: nothing happens to it,
    /// and its delay is the fixed one.
    const UPKEEP: Draws = Draws {
        loss: 1.0,
        corrupt: 1.0,
        bit: 0,
        duplicate: 1.0,
        reorder: 1.0,
        jitter: 0.5,
    };

    fn take(prng: &mut Prng) -> Draws {
        Draws {
            loss: prng.next_f64(),
            corrupt: prng.next_f64(),
            bit: prng.next_u64(),
            duplicate: prng.next_f64(),
            reorder: prng.next_f64(),
            jitter: prng.next_f64(),
        }
    }
}

/// A frame the direction holds, and what its departure was computed from,
/// to compute it again under another model.
#[derive(Clone)]
struct Queued {
    frame: Vec<u8>,
    /// When it leaves (when held back: when it would have left).
    at: u64,
    /// When its last bit left the rate limit (when it arrived, without one).
    passed_rate: u64,
    /// Its jitter draw, from 0 to 1.
    jitter: f64,
}

/// One direction: its generator, its plan, and the frames it holds.
pub(super) struct Pipeline {
    prng: Prng,
    plan: Plan,
    plan_start: u64,
    model: Model,
    next_change: Option<u64>,
    /// Gilbert–Elliott: in the bad state.
    bad: bool,
    /// When the rate limit has sent everything queued so far.
    rate_free_at: u64,
    /// When the last frame (not held back) leaves: later frames never leave before it.
    last_delivery: u64,
    /// Frames waiting to leave, in the order they leave (`at` never decreases).
    queue: VecDeque<Queued>,
    /// A frame held back until the next one has gone ahead (reordering).
    held: Option<Queued>,
    /// What `queue` and `held` cost, by [`frame_cost`].
    held_bytes: usize,
    /// The most `held_bytes` may reach: [`MAX_HELD_BYTES`], less what the
    /// direction's other rules hold.
    room: usize,
    /// What happened to IP packets, and to upkeep frames (which are not
    /// counted as packets: their number depends on kernel timers).
    counters: [Counters; 2],
}

/// Where upkeep frames are counted in `Pipeline::counters`.
const PACKETS: usize = 0;
const UPKEEP: usize = 1;

impl Pipeline {
    pub(super) fn new(prng: Prng, plan: Plan, now: u64) -> Pipeline {
        let mut pipeline = Pipeline {
            prng,
            plan: Plan::constant(Model::default()),
            plan_start: now,
            model: Model::default(),
            next_change: None,
            bad: false,
            rate_free_at: 0,
            last_delivery: 0,
            queue: VecDeque::new(),
            held: None,
            held_bytes: 0,
            room: MAX_HELD_BYTES,
            counters: [Counters::default(); 2],
        };
        pipeline.set_plan(plan, now);
        pipeline
    }

    /// Follows `plan` from `now` on; what the direction holds is timed
    /// again by its first step.
    pub(super) fn set_plan(&mut self, plan: Plan, now: u64) {
        self.plan = plan;
        self.plan_start = now;
        self.apply_step(now);
    }

    /// Moves the plan to `now`: the model of the step in force.
    pub(super) fn advance(&mut self, now: u64) {
        while self.next_change.is_some_and(|at| at <= now) {
            self.apply_step(now);
        }
    }

    /// Whether this rule, in the step in force ([`Pipeline::advance`]),
    /// takes the frame `view` describes (`None`: no IP packet a selector
    /// sees).
    pub(super) fn claims(&self, view: Option<&View>) -> bool {
        match &self.model.claims {
            Claims::Nothing => false,
            Claims::All => true,
            Claims::Only(alternatives) => {
                view.is_some_and(|v| alternatives.iter().any(|m| v.matches(m)))
            }
        }
    }

    /// Whether the rule selects traffic ([`Claims::Only`]) in its current
    /// step, and so needs a frame's [`View`].
    pub(super) fn selects(&self) -> bool {
        matches!(self.model.claims, Claims::Only(_))
    }

    fn apply_step(&mut self, now: u64) {
        let (model, next) = self.plan.at(now - self.plan_start);
        if model.bursts.is_none() {
            self.bad = false;
        }
        let moves_departures = (
            model.delay_ns,
            model.jitter_ns,
            model.rate_bytes_per_s,
            model.queue_bytes,
        ) != (
            self.model.delay_ns,
            self.model.jitter_ns,
            self.model.rate_bytes_per_s,
            self.model.queue_bytes,
        );
        self.model = model;
        self.next_change = next.map(|n| self.plan_start.saturating_add(n));
        if moves_departures {
            self.retime(now);
        }
    }

    /// What happened to IP packets (the link's upkeep frames are not
    /// counted).
    pub(super) fn counters(&self) -> Counters {
        self.counters[PACKETS]
    }

    /// The memory the frames the direction holds take, by [`frame_cost`].
    pub(super) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// How much the rule may hold, at most: what the direction's other
    /// rules leave of [`MAX_HELD_BYTES`].
    pub(super) fn set_room(&mut self, room: usize) {
        self.room = room.min(MAX_HELD_BYTES);
    }

    /// The next time something happens: a frame is due, a held frame's wait
    /// ends, or the plan moves to its next step.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let queued = self.queue.front().map(|q| q.at);
        let held = self
            .held
            .as_ref()
            .map(|h| h.at.saturating_add(REORDER_HOLD_NS));
        [queued, held, self.next_change].into_iter().flatten().min()
    }

    /// Moves the plan to `now`, lets a held frame go when its wait is over,
    /// and appends the frames due by `now` to `out`, in order.
    pub(super) fn due(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        self.advance(now);
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.at.saturating_add(REORDER_HOLD_NS) <= now)
        {
            let mut held = self.release_held().expect("held");
            held.at = held
                .at
                .saturating_add(REORDER_HOLD_NS)
                .max(self.last_delivery);
            self.last_delivery = held.at;
            self.enqueue(now, held, out);
        }
        while self.queue.front().is_some_and(|q| q.at <= now) {
            let next = self.queue.pop_front().expect("looked at");
            self.held_bytes -= frame_cost(next.frame.len());
            out.push(next.frame);
        }
    }

    /// A frame arrives at `now`. Frames that leave at once are appended to
    /// `out`; the others wait for [`Pipeline::due`]. Returns what was done
    /// to it.
    pub(super) fn arrive(&mut self, now: u64, mut frame: Vec<u8>, out: &mut Vec<Vec<u8>>) -> Fate {
        self.due(now, out);
        let (ethertype, network) = network_layer(&frame);
        let upkeep = is_upkeep_at(&frame, ethertype, network);
        let c = if upkeep { UPKEEP } else { PACKETS };
        self.counters[c].arrived += 1;
        self.counters[c].bytes += frame.len() as u64;
        let mut fate = Fate {
            packet: (!upkeep).then_some(self.counters[c].arrived),
            ..Fate::default()
        };
        let draws = if upkeep {
            Draws::UPKEEP
        } else {
            Draws::take(&mut self.prng)
        };
        let model = &self.model;
        if model
            .mtu
            .is_some_and(|mtu| frame.len() - network > mtu as usize)
        {
            self.counters[c].too_big += 1;
            fate.dropped = Some("dropped: larger than the path MTU (mtu)");
            return fate;
        }
        let lost = match model.bursts {
            Some(_) if upkeep => false,
            Some(ge) => {
                self.bad = if self.bad {
                    draws.loss >= ge.leave
                } else {
                    draws.loss < ge.enter
                };
                self.bad
            }
            None => draws.loss < model.loss,
        };
        if lost {
            self.counters[c].lost += 1;
            fate.dropped = Some(if model.bursts.is_some() {
                "lost (loss_bursts)"
            } else {
                "lost (loss)"
            });
            return fate;
        }
        if self.held_bytes + frame_cost(frame.len()) > self.room {
            self.counters[c].overflow += 1;
            fate.dropped = Some("dropped: the direction holds all it may (overflow)");
            return fate;
        }
        let mut passed_rate = now;
        if let Some(rate) = model.rate_bytes_per_s {
            let free_at = self.rate_free_at.max(now);
            if backlog(free_at, now, rate) + frame.len() as u64 > model.queue_bytes {
                self.counters[c].queue_full += 1;
                fate.dropped = Some("dropped: the rate limit's queue was full (queue_bytes)");
                return fate;
            }
            self.rate_free_at = free_at + serialization(frame.len(), rate);
            passed_rate = self.rate_free_at;
        }
        if draws.corrupt < model.corrupt && frame.len() > network {
            let bits = ((frame.len() - network) * 8) as u64;
            let at = (draws.bit % bits) as usize;
            frame[network + at / 8] ^= 1 << (at % 8);
            self.counters[c].corrupted += 1;
            fate.corrupted_bit = Some(at);
        }
        let at = passed_rate
            .saturating_add(delay(model, draws.jitter))
            .max(self.last_delivery);
        self.last_delivery = at;
        if at > now {
            self.counters[c].delayed += 1;
            fate.delay_ns = at - now;
        }
        let queued = Queued {
            frame,
            at,
            passed_rate,
            jitter: draws.jitter,
        };
        let copy = (draws.duplicate < model.duplicate).then(|| queued.clone());
        if draws.reorder < model.reorder && self.held.is_none() {
            self.counters[c].reordered += 1;
            fate.reordered = true;
            self.held_bytes += frame_cost(queued.frame.len());
            self.held = Some(queued);
        } else {
            self.enqueue(now, queued, out);
            if let Some(mut held) = self.release_held() {
                // It goes right after the frame that overtook it.
                held.at = held.at.max(at);
                self.enqueue(now, held, out);
            }
        }
        if let Some(copy) = copy {
            self.counters[c].duplicated += 1;
            fate.duplicated = true;
            if self.held_bytes + frame_cost(copy.frame.len()) <= self.room {
                self.enqueue(now, copy, out);
            } else {
                self.counters[c].overflow += 1;
            }
        }
        fate
    }

    /// What the rule takes in its current step, in words (`udp port 53`).
    pub(super) fn traffic(&self) -> String {
        match &self.model.claims {
            Claims::Nothing => "nothing".to_owned(),
            Claims::All => "all traffic".to_owned(),
            Claims::Only(alternatives) => alternatives
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// Sends `queued` at once when it is due and nothing waits ahead of
    /// it, else queues it (its `at` is not before any queued frame's).
    fn enqueue(&mut self, now: u64, queued: Queued, out: &mut Vec<Vec<u8>>) {
        if queued.at <= now && self.queue.is_empty() {
            out.push(queued.frame);
        } else {
            debug_assert!(self.queue.back().is_none_or(|last| last.at <= queued.at));
            self.held_bytes += frame_cost(queued.frame.len());
            self.queue.push_back(queued);
        }
    }

    /// Takes the held-back frame, if any, off the books.
    fn release_held(&mut self) -> Option<Queued> {
        let held = self.held.take()?;
        self.held_bytes -= frame_cost(held.frame.len());
        Some(held)
    }

    /// Times what the direction holds again, under the model now in force,
    /// as if it had been in force when the frames arrived but no earlier
    /// than `now`: frames still in the rate limit's queue (their last bit
    /// not out by `now`) drain at the new rate from `now`, and those the new
    /// queue cannot take are dropped (`queue_full`); every frame then takes
    /// the new delay, with its own jitter draw, from when it passed the
    /// rate. Order is kept; nothing is drawn.
    fn retime(&mut self, now: u64) {
        let model = &self.model;
        let mut free_at = now;
        let mut last = 0u64;
        let mut retime = |queued: &mut Queued, counters: &mut Counters| -> bool {
            if queued.passed_rate > now {
                match model.rate_bytes_per_s {
                    Some(rate) => {
                        let len = queued.frame.len();
                        if backlog(free_at, now, rate) + len as u64 > model.queue_bytes {
                            counters.queue_full += 1;
                            return false;
                        }
                        free_at += serialization(len, rate);
                        queued.passed_rate = free_at;
                    }
                    None => queued.passed_rate = now,
                }
            }
            queued.at = queued
                .passed_rate
                .saturating_add(delay(model, queued.jitter))
                .max(last);
            last = queued.at;
            true
        };
        let mut dropped = 0;
        self.queue.retain_mut(|queued| {
            let kept = retime(queued, &mut self.counters[PACKETS]);
            if !kept {
                dropped += frame_cost(queued.frame.len());
            }
            kept
        });
        if let Some(held) = &mut self.held {
            if !retime(held, &mut self.counters[PACKETS]) {
                dropped += frame_cost(held.frame.len());
                self.held = None;
            }
        }
        self.held_bytes -= dropped;
        self.rate_free_at = free_at;
        self.last_delivery = last;
    }
}

/// The bytes a rate limit of `rate` bytes/s still has to send at `now`
/// when it is free again at `free_at`.
fn backlog(free_at: u64, now: u64, rate: u64) -> u64 {
    ((free_at.saturating_sub(now)) as u128 * rate as u128 / 1_000_000_000) as u64
}

/// How long `len` bytes take at `rate` bytes/s, in nanoseconds.
fn serialization(len: usize, rate: u64) -> u64 {
    (len as u128 * 1_000_000_000 / rate as u128) as u64
}

/// The delay a frame with jitter draw `jitter` (0 to 1) takes under `model`.
fn delay(model: &Model, jitter: f64) -> u64 {
    let jitter = model.jitter_ns as f64 * (2.0 * jitter - 1.0);
    (model.delay_ns as f64 + jitter).max(0.0) as u64
}

/// The frame's ethertype and where its network-layer packet starts: past
/// the addresses and any 802.1Q or 802.1ad tags. A frame too short for an
/// ethertype has none (0).
fn network_layer(frame: &[u8]) -> (u16, usize) {
    let mut at = 12;
    loop {
        let Some(bytes) = frame.get(at..at + 2) else {
            return (0, frame.len());
        };
        let ethertype = u16::from_be_bytes([bytes[0], bytes[1]]);
        if VLAN_TAGS.contains(&ethertype) && frame.len() >= at + 6 {
            at += 4;
            continue;
        }
        return (ethertype, at + 2);
    }
}

/// Whether the frame is the link's own upkeep, sent on timers: ARP, IGMP,
/// ICMPv6 router and neighbour discovery, redirects and multicast listener
/// messages (also behind a hop-by-hop header), tagged or not.
#[cfg(test)]
fn is_upkeep(frame: &[u8]) -> bool {
    let (ethertype, network) = network_layer(frame);
    is_upkeep_at(frame, ethertype, network)
}

fn is_upkeep_at(frame: &[u8], ethertype: u16, network: usize) -> bool {
    if frame.len() < ETHERNET_HEADER {
        return true;
    }
    let ip = &frame[network..];
    match ethertype {
        0x0806 => true,
        0x0800 => ip.len() >= 20 && ip[9] == 2,
        0x86DD => {
            if ip.len() < 40 {
                return false;
            }
            let mut next = ip[6];
            let mut at = 40;
            // Hop-by-hop options (MLD reports carry a router alert).
            while next == 0 && ip.len() >= at + 8 {
                next = ip[at];
                at += (usize::from(ip[at + 1]) + 1) * 8;
            }
            next == 58 && ip.len() > at && matches!(ip[at], 130..=137 | 143)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impairment::Impairment;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// An IPv4 UDP frame of `len` bytes whose payload starts with `n`.
    fn frame(n: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(ETHERNET_HEADER + 20 + 8 + 4)];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[42..46].copy_from_slice(&n.to_be_bytes());
        f
    }

    fn number(f: &[u8]) -> u32 {
        f.get(42..46)
            .map_or(u32::MAX, |n| u32::from_be_bytes(n.try_into().unwrap()))
    }

    fn pipeline(seed: u64, impairment: Impairment) -> Pipeline {
        Pipeline::new(Prng::stream(seed, 0, 0, 0), constant(impairment), 0)
    }

    /// Sends `n` frames, one every `gap` ns, and drains: (time, number) of
    /// each frame that left.
    fn run(p: &mut Pipeline, n: u32, gap: u64, len: usize) -> Vec<(u64, u32)> {
        let mut left = Vec::new();
        let mut out = Vec::new();
        let mut now = 0;
        for i in 0..n {
            let arrival = u64::from(i) * gap;
            while let Some(at) = p.next_deadline().filter(|at| *at < arrival) {
                now = at.max(now);
                p.due(now, &mut out);
                left.extend(out.drain(..).map(|f| (now, number(&f))));
            }
            now = arrival;
            p.due(now, &mut out);
            left.extend(out.drain(..).map(|f| (now, number(&f))));
            p.arrive(now, frame(i, len), &mut out);
            left.extend(out.drain(..).map(|f| (now, number(&f))));
        }
        while let Some(at) = p.next_deadline() {
            now = at.max(now);
            p.due(now, &mut out);
            left.extend(out.drain(..).map(|f| (now, number(&f))));
            if p.queue.is_empty() && p.held.is_none() {
                break;
            }
        }
        left
    }

    #[test]
    fn a_clear_direction_passes_everything_at_once_in_order() {
        let mut p = pipeline(1, Impairment::new());
        let left = run(&mut p, 100, 1000, 100);
        assert_eq!(
            left,
            (0..100)
                .map(|i| (u64::from(i) * 1000, i))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn loss_drops_the_share_and_replays_from_the_seed() {
        let lost = |seed| {
            let mut p = pipeline(seed, Impairment::new().loss(10.0));
            let left: Vec<u32> = run(&mut p, 10_000, 1000, 100).iter().map(|l| l.1).collect();
            assert_eq!(p.counters().lost as usize, 10_000 - left.len());
            left
        };
        let a = lost(5);
        let share = 1.0 - a.len() as f64 / 10_000.0;
        assert!((0.09..0.11).contains(&share), "{share}");
        assert_eq!(a, lost(5));
        assert_ne!(a, lost(6));
    }

    #[test]
    fn bursts_have_the_mean_length_and_share() {
        let mut p = pipeline(9, Impairment::new().loss_bursts(2.0, 8));
        let n = 200_000;
        let left: std::collections::HashSet<u32> =
            run(&mut p, n, 1000, 100).iter().map(|l| l.1).collect();
        let mut bursts = Vec::new();
        let mut current = 0;
        for i in 0..n {
            if left.contains(&i) {
                if current > 0 {
                    bursts.push(current);
                }
                current = 0;
            } else {
                current += 1;
            }
        }
        let share = 1.0 - left.len() as f64 / f64::from(n);
        let mean = bursts.iter().sum::<u32>() as f64 / bursts.len() as f64;
        assert!((share - 0.02).abs() < 0.003, "{share}");
        assert!((mean - 8.0).abs() < 1.0, "{mean}");
    }

    #[test]
    fn delay_and_jitter_keep_order_and_bounds() {
        let impairment = Impairment::new()
            .delay(Duration::from_millis(40))
            .jitter(Duration::from_millis(5));
        let mut p = pipeline(3, impairment);
        let left = run(&mut p, 1000, 10 * MS, 100);
        assert_eq!(left.len(), 1000);
        for (i, (at, n)) in left.iter().enumerate() {
            assert_eq!(*n as usize, i, "order kept");
            let sent = u64::from(*n) * 10 * MS;
            let delay = at - sent;
            assert!((35 * MS..=45 * MS).contains(&delay), "{delay}");
        }
        // Not all the same delay.
        let delays: std::collections::HashSet<u64> = left
            .iter()
            .map(|(at, n)| at - u64::from(*n) * 10 * MS)
            .collect();
        assert!(delays.len() > 100);
    }

    #[test]
    fn a_rate_limit_spaces_frames_and_drops_beyond_the_queue() {
        // 1000 kbit/s = 125,000 B/s: a 1250-byte frame takes 10 ms.
        let impairment = Impairment::new().rate_kbit(1000).queue_bytes(5000);
        let mut p = pipeline(1, impairment);
        let left = run(&mut p, 10, 0, 1250);
        // Four fit in the queue (the first leaves after 10 ms), the rest are dropped.
        assert_eq!(
            left,
            [(10 * MS, 0), (20 * MS, 1), (30 * MS, 2), (40 * MS, 3)]
        );
        assert_eq!(p.counters().queue_full, 6);
    }

    #[test]
    fn the_mtu_drops_large_packets_only() {
        let mut p = pipeline(1, Impairment::new().mtu(1280));
        let mut out = Vec::new();
        p.arrive(0, frame(1, 14 + 1280), &mut out);
        p.arrive(0, frame(2, 14 + 1281), &mut out);
        assert_eq!(out.iter().map(|f| number(f)).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn corruption_flips_one_bit_past_the_ethernet_header() {
        let mut p = pipeline(2, Impairment::new().corrupt(100.0));
        let mut out = Vec::new();
        for i in 0..100 {
            p.arrive(0, frame(i, 100), &mut out);
        }
        for (i, f) in out.iter().enumerate() {
            let clean = frame(i as u32, 100);
            let flipped: u32 = f
                .iter()
                .zip(&clean)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
            assert_eq!(f[..14], clean[..14]);
        }
    }

    #[test]
    fn duplicates_follow_their_original() {
        let mut p = pipeline(4, Impairment::new().duplicate(50.0));
        let left: Vec<u32> = run(&mut p, 1000, 1000, 100).iter().map(|l| l.1).collect();
        let copies = left.len() - 1000;
        assert!((400..600).contains(&copies), "{copies}");
        let mut dedup = left.clone();
        dedup.dedup();
        assert_eq!(dedup, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn reordered_frames_are_overtaken_by_the_next_one() {
        let mut p = pipeline(5, Impairment::new().reorder(20.0));
        let left: Vec<u32> = run(&mut p, 1000, 1000, 100).iter().map(|l| l.1).collect();
        assert_eq!(left.len(), 1000);
        let swapped = left.windows(2).filter(|w| w[0] > w[1]).count();
        assert!((100..300).contains(&swapped), "{swapped}");
        for (position, n) in left.iter().enumerate() {
            assert!((position as u32).abs_diff(*n) <= 1, "{n} at {position}");
        }
        // With nothing behind it, a held frame leaves after its wait.
        let mut p = pipeline(5, Impairment::new().reorder(100.0));
        let mut out = Vec::new();
        p.arrive(0, frame(1, 100), &mut out);
        assert!(out.is_empty());
        assert_eq!(p.next_deadline(), Some(REORDER_HOLD_NS));
        p.due(REORDER_HOLD_NS, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn upkeep_frames_draw_nothing_and_pass() {
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(is_upkeep(&arp));
        // IPv6 neighbour solicitation, and an MLD report behind hop-by-hop.
        let mut ns = vec![0u8; 14 + 40 + 24];
        ns[12] = 0x86;
        ns[13] = 0xDD;
        ns[14 + 6] = 58;
        ns[14 + 40] = 135;
        assert!(is_upkeep(&ns));
        let mut mld = vec![0u8; 14 + 40 + 8 + 20];
        mld[12] = 0x86;
        mld[13] = 0xDD;
        mld[14 + 6] = 0;
        mld[14 + 40] = 58;
        mld[14 + 48] = 143;
        assert!(is_upkeep(&mld));
        assert!(!is_upkeep(&frame(0, 100)));
        // Interleaving upkeep frames changes no decision about IP packets.
        let decide = |with_arp: bool| {
            let mut p = pipeline(8, Impairment::new().loss(50.0));
            let mut out = Vec::new();
            for i in 0..200 {
                if with_arp && i % 7 == 0 {
                    p.arrive(0, arp.clone(), &mut out);
                }
                p.arrive(0, frame(i, 100), &mut out);
            }
            out.iter()
                .filter(|f| !is_upkeep(f))
                .map(|f| number(f))
                .collect::<Vec<_>>()
        };
        assert_eq!(decide(false), decide(true));
        let mut p = pipeline(8, Impairment::new().loss(100.0));
        let mut out = Vec::new();
        p.arrive(0, arp.clone(), &mut out);
        assert_eq!(out.len(), 1, "ARP passes a total loss");
    }

    #[test]
    fn a_plan_changes_the_model_at_its_times() {
        let ms = Duration::from_millis;
        let plan = crate::schedule::Schedule::new()
            .then(ms(10), Impairment::new().loss(100.0))
            .then(ms(10), Impairment::new())
            .repeat()
            .plans()
            .unwrap()
            .remove(0);
        let mut p = Pipeline::new(Prng::new(1), plan, 0);
        // One frame every ms for 40 ms: those in [10, 20) and [30, 40) pass.
        let left: Vec<u32> = run(&mut p, 40, MS, 100).iter().map(|l| l.1).collect();
        let expected: Vec<u32> = (10..20).chain(30..40).collect();
        assert_eq!(left, expected);
    }

    /// What the frames the pipeline holds cost, counted frame by frame.
    fn cost_of_what_is_held(p: &Pipeline) -> usize {
        p.queue
            .iter()
            .chain(&p.held)
            .map(|q| frame_cost(q.frame.len()))
            .sum()
    }

    fn constant(impairment: Impairment) -> Plan {
        let mut models = impairment.models("impair").unwrap();
        assert_eq!(models.len(), 1);
        Plan::constant(models.remove(0))
    }

    /// Leaves `p` alone until nothing is held, from `now`: the numbers of
    /// the frames that left, in order.
    fn drain(p: &mut Pipeline, mut now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        while !(p.queue.is_empty() && p.held.is_none()) {
            now = p.next_deadline().unwrap().max(now);
            p.due(now, &mut out);
        }
        out.iter().map(|f| number(f)).collect()
    }

    #[test]
    fn a_frame_held_back_until_its_wait_ends_is_counted_once() {
        // Every frame is held back and, 20 ms apart, each leaves when its
        // 10 ms wait ends: 5000 frames of 64 KiB (320 MB) pass one by one.
        let mut p = pipeline(5, Impairment::new().reorder(100.0));
        let left = run(&mut p, 5000, 20 * MS, 65_535);
        assert_eq!(left.len(), 5000);
        assert_eq!(p.counters().overflow, 0);
        assert_eq!(p.held_bytes(), 0);
        // Nothing it held is still counted: another plan passes all.
        let now = 5000 * 20 * MS;
        p.set_plan(constant(Impairment::new().loss(0.0)), now);
        let mut out = Vec::new();
        p.arrive(now, frame(1, 65_535), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.counters().overflow, 0);
    }

    /// An impairment with some knobs set at random.
    fn random_impairment(rng: &mut Prng) -> Impairment {
        let mut i = Impairment::new();
        let some = |rng: &mut Prng| rng.next_f64() < 0.4;
        if some(rng) {
            i = i.delay(Duration::from_micros(rng.next_u64() % 200_000));
        }
        if some(rng) {
            i = i.jitter(Duration::from_micros(rng.next_u64() % 50_000));
        }
        if some(rng) {
            i = i.loss(rng.next_f64() * 30.0);
        }
        if some(rng) {
            i = i.corrupt(rng.next_f64() * 30.0);
        }
        if some(rng) {
            i = i.duplicate(rng.next_f64() * 50.0);
        }
        if some(rng) {
            i = i.reorder(rng.next_f64() * 50.0);
        }
        if some(rng) {
            i = i.rate_kbit(10 + rng.next_u64() % 100_000);
            if some(rng) {
                i = i.queue_bytes(1514 + rng.next_u64() % (1 << 20));
            }
        }
        if some(rng) {
            i = i.mtu(68 + (rng.next_u64() % 9000) as u32);
        }
        i
    }

    /// A plan of one random impairment, or a schedule of a few.
    fn random_plan(rng: &mut Prng) -> Plan {
        if rng.next_f64() < 0.5 {
            return constant(random_impairment(rng));
        }
        let mut schedule = crate::schedule::Schedule::new();
        for _ in 0..1 + rng.next_u64() % 4 {
            let step = Duration::from_micros(1 + rng.next_u64() % 100_000);
            schedule = schedule.then(step, random_impairment(rng));
        }
        if rng.next_f64() < 0.5 {
            schedule = schedule.repeat();
        }
        schedule.plans().unwrap().remove(0)
    }

    #[test]
    fn what_is_held_is_counted_exactly_whatever_the_plans() {
        let mut rng = Prng::new(0xacc0);
        for round in 0..300u64 {
            let mut p = Pipeline::new(Prng::stream(round, 0, 0, 0), random_plan(&mut rng), 0);
            let mut out = Vec::new();
            let mut now = 0;
            for i in 0..300 {
                now += rng.next_u64() % (3 * MS);
                if rng.next_f64() < 0.05 {
                    p.set_plan(random_plan(&mut rng), now);
                }
                if rng.next_f64() < 0.3 {
                    p.due(now, &mut out);
                } else {
                    let len = [14, 60, 1514, 9000, 65_549][(rng.next_u64() % 5) as usize];
                    let mut f = frame(i, len);
                    f.truncate(len);
                    p.arrive(now, f, &mut out);
                }
                assert_eq!(
                    p.held_bytes(),
                    cost_of_what_is_held(&p),
                    "round {round}, step {i}"
                );
                let times: Vec<u64> = p.queue.iter().map(|q| q.at).collect();
                assert!(times.is_sorted(), "round {round}, step {i}: {times:?}");
            }
            drain(&mut p, now);
            assert_eq!(p.held_bytes(), 0, "round {round}");
        }
    }

    /// The memory the allocator has handed out and not taken back, in all
    /// its arenas (glibc's accounting).
    #[cfg(target_env = "gnu")]
    fn allocated() -> usize {
        // SAFETY: mallinfo2 takes nothing and returns a plain struct.
        let info = unsafe { nix::libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn tiny_frames_count_what_holding_them_costs() {
        // Ethernet headers alone (an IPv4 ethertype: not upkeep) into a
        // long delay, until the direction is full: what it holds takes no
        // more than its limit, as the allocator counts (with some room for
        // what other tests allocate meanwhile).
        let mut p = pipeline(1, Impairment::new().delay(Duration::from_secs(60)));
        let mut tiny = vec![0u8; 14];
        tiny[12] = 0x08;
        let room = MAX_HELD_BYTES / 4;
        let before = allocated();
        let mut out = Vec::new();
        let mut n = 0u64;
        while p.counters().overflow == 0 {
            p.arrive(n, tiny.clone(), &mut out);
            n += 1;
            if n % 65_536 == 0 {
                let used = allocated().saturating_sub(before);
                assert!(
                    used <= MAX_HELD_BYTES + room,
                    "{n} frames of 14 bytes took {used} bytes, and more came in"
                );
            }
        }
        let used = allocated().saturating_sub(before);
        assert!(
            used <= MAX_HELD_BYTES + room,
            "{n} frames took {used} bytes"
        );
        assert!(out.is_empty());
        assert_eq!(p.held_bytes(), cost_of_what_is_held(&p));
    }

    #[test]
    fn a_rule_holds_no_more_than_the_room_the_others_leave() {
        let mut p = pipeline(1, Impairment::new().delay(Duration::from_secs(1)));
        p.set_room(3 * frame_cost(1000));
        let mut out = Vec::new();
        for i in 0..5 {
            p.arrive(0, frame(i, 1000), &mut out);
        }
        assert_eq!(p.counters().overflow, 2);
        assert_eq!(p.held_bytes(), 3 * frame_cost(1000));
        p.set_room(usize::MAX);
        p.arrive(0, frame(5, 1000), &mut out);
        assert_eq!(p.counters().overflow, 2, "room again");
    }

    #[test]
    fn a_new_plan_times_what_is_queued_again() {
        // 100 kbit/s and a queue of 1 MiB: 690 frames of 1514 bytes would
        // leave over 83 s.
        let slow = Impairment::new().rate_kbit(100).queue_bytes(1 << 20);
        let mut p = pipeline(1, slow.clone());
        let mut out = Vec::new();
        for i in 0..690 {
            p.arrive(0, frame(i, 1514), &mut out);
        }
        assert!(p.queue.back().unwrap().at > 83_000 * MS);
        // Healed a second later: what is queued leaves at once, in order,
        // and so do new frames.
        let now = 1000 * MS;
        p.set_plan(constant(Impairment::new().loss(0.0)), now);
        p.due(now, &mut out);
        p.arrive(now, frame(690, 1514), &mut out);
        let left: Vec<u32> = out.iter().map(|f| number(f)).collect();
        assert_eq!(left, (0..=690).collect::<Vec<_>>());
        assert_eq!(p.held_bytes(), 0);
        // Faster instead: the queue drains at the new rate from now.
        // (8 frames had passed the old rate by then.)
        let mut p = pipeline(1, slow.clone());
        for i in 0..690 {
            p.arrive(0, frame(i, 1514), &mut out);
        }
        p.set_plan(
            constant(Impairment::new().rate_kbit(10_000).queue_bytes(1 << 20)),
            now,
        );
        let last = p.queue.back().unwrap().at;
        let expected = now + 682 * 1514 * 8 * 100; // 1514 bytes take 1.2112 ms
        assert!(last.abs_diff(expected) < 2 * MS, "{last} vs {expected}");
        // A smaller queue keeps what fits and drops the rest.
        let mut p = pipeline(1, slow);
        for i in 0..690 {
            p.arrive(0, frame(i, 1514), &mut out);
        }
        p.set_plan(
            constant(Impairment::new().rate_kbit(100).queue_bytes(10 * 1514)),
            now,
        );
        assert_eq!(p.queue.len(), 8 + 10);
        assert_eq!(p.counters().queue_full, 682 - 10);
        assert_eq!(p.held_bytes(), cost_of_what_is_held(&p));
        // A shorter delay: frames in flight take it from when they came.
        let mut p = pipeline(1, Impairment::new().delay(Duration::from_secs(10)));
        for i in 0..100 {
            p.arrive(u64::from(i) * MS, frame(i, 100), &mut out);
        }
        p.set_plan(
            constant(Impairment::new().delay(Duration::from_millis(150))),
            100 * MS,
        );
        let times: Vec<u64> = p.queue.iter().map(|q| q.at / MS).collect();
        assert_eq!(times, (150..250).collect::<Vec<_>>());
    }

    #[test]
    fn a_slow_step_of_a_schedule_leaves_nothing_behind_it() {
        let s = Duration::from_secs;
        let plan = crate::schedule::Schedule::new()
            .then(s(1), Impairment::new().rate_kbit(10))
            .then(s(1), Impairment::new().loss(0.0))
            .repeat()
            .plans()
            .unwrap()
            .remove(0);
        let mut p = Pipeline::new(Prng::new(3), plan, 0);
        // A frame every 10 ms for 4 s: in the fast steps each leaves when
        // it comes.
        let left = run(&mut p, 400, 10 * MS, 1000);
        for (at, n) in &left {
            let sent = u64::from(*n) * 10 * MS;
            if (1000..2000).contains(&(sent / MS)) || (3000..4000).contains(&(sent / MS)) {
                assert_eq!(*at, sent, "frame {n}");
            }
        }
        let order: Vec<u32> = left.iter().map(|l| l.1).collect();
        assert!(order.is_sorted());
    }

    #[test]
    fn tags_are_looked_past() {
        // An ARP request and a UDP datagram, each behind an 802.1Q tag.
        let tag = |mut f: Vec<u8>| {
            let tail = f.split_off(12);
            f.extend([0x81, 0x00, 0x00, 0x05]);
            f.extend(tail);
            f
        };
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(is_upkeep(&tag(arp.clone())));
        assert!(!is_upkeep(&tag(frame(1, 100))));
        assert_eq!(network_layer(&tag(frame(1, 100))), (0x0800, 18));
        assert_eq!(network_layer(&tag(tag(frame(1, 100)))), (0x0800, 22));
        assert_eq!(network_layer(&[0u8; 13]), (0, 13));
        // The MTU counts the IP packet, not the tag.
        let mut p = pipeline(1, Impairment::new().mtu(1280));
        let mut out = Vec::new();
        p.arrive(0, tag(frame(1, 14 + 1280)), &mut out);
        p.arrive(0, tag(frame(2, 14 + 1281)), &mut out);
        assert_eq!(out.len(), 1);
        // A total loss lets a tagged ARP through.
        let mut p = pipeline(1, Impairment::new().loss(100.0));
        p.arrive(0, tag(arp), &mut out);
        assert_eq!(out.len(), 2);
    }
}
