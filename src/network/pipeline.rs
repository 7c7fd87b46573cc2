//! One impaired direction of a link, as a pure model: frames arrive with
//! a time, and leave at the times the impairment gives them. No I/O here;
//! the engine feeds it and sends what is due.
//!
//! The stages, in order: the path MTU, loss (independent or
//! Gilbert–Elliott), the rate limit and its queue, corruption, delay and
//! jitter (order kept), duplication, reordering.
//!
//! Determinism: every IP packet draws the same six numbers from the
//! direction's generator, whatever the knobs and whatever happens to it,
//! so that the decisions for the n-th packet depend only on the seed and n.
//! Frames of the link layer's own upkeep (ARP, IPv6 neighbour discovery and
//! multicast listener reports, IGMP), whose number depends on timers, draw
//! nothing: they are never lost, corrupted, duplicated or reordered, and
//! only see the MTU, the rate and the fixed delay.

use super::prng::Prng;
use crate::impairment::Model;
use crate::schedule::Plan;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// How long a held-back (reordered) packet waits for a packet to overtake
/// it, at most.
pub(super) const REORDER_HOLD_NS: u64 = 10_000_000;
/// The most bytes of frames one direction holds (delayed, queued, held).
/// Beyond it frames are dropped and counted as `overflow`.
pub(super) const MAX_HELD_BYTES: usize = 256 << 20;

const ETHERNET_HEADER: usize = 14;

/// What happened to the frames of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub arrived: u64,
    pub lost: u64,
    pub too_big: u64,
    pub queue_full: u64,
    pub overflow: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Frames the kernel refused to send on (the sending end down, say).
    pub unsent: u64,
    /// Frames the kernel dropped before the engine read them (its socket full).
    pub missed: u64,
}

struct Scheduled {
    at: u64,
    seq: u64,
    frame: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Held {
    frame: Vec<u8>,
    /// When it would have left, had it not been held.
    at: u64,
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
    held: Option<Held>,
    heap: BinaryHeap<Reverse<Scheduled>>,
    held_bytes: usize,
    seq: u64,
    counters: Counters,
}

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
            held: None,
            heap: BinaryHeap::new(),
            held_bytes: 0,
            seq: 0,
            counters: Counters::default(),
        };
        pipeline.set_plan(plan, now);
        pipeline
    }

    /// Follows `plan` from `now` on. Frames already scheduled keep their times.
    pub(super) fn set_plan(&mut self, plan: Plan, now: u64) {
        self.plan = plan;
        self.plan_start = now;
        self.apply_step(now);
    }

    fn apply_step(&mut self, now: u64) {
        let (model, next) = self.plan.at(now - self.plan_start);
        if model.bursts.is_none() {
            self.bad = false;
        }
        self.model = model;
        self.next_change = next.map(|n| self.plan_start.saturating_add(n));
    }

    pub(super) fn counters(&self) -> Counters {
        self.counters
    }

    /// The next time something happens: a frame is due, a held frame's wait
    /// ends, or the plan moves to its next step.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let heap = self.heap.peek().map(|Reverse(s)| s.at);
        let held = self
            .held
            .as_ref()
            .map(|h| h.at.saturating_add(REORDER_HOLD_NS));
        [heap, held, self.next_change].into_iter().flatten().min()
    }

    /// Moves the plan to `now`, lets a held frame go when its wait is over,
    /// and appends the frames due by `now` to `out`, in order.
    pub(super) fn due(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        while self.next_change.is_some_and(|at| at <= now) {
            self.apply_step(now);
        }
        if let Some(held) = &self.held {
            let until = held.at.saturating_add(REORDER_HOLD_NS);
            if until <= now {
                let held = self.held.take().expect("held");
                self.last_delivery = self.last_delivery.max(until);
                self.schedule(until, held.frame);
            }
        }
        while let Some(Reverse(next)) = self.heap.peek() {
            if next.at > now {
                break;
            }
            let Reverse(next) = self.heap.pop().expect("peeked");
            self.held_bytes -= next.frame.len();
            out.push(next.frame);
        }
    }

    fn schedule(&mut self, at: u64, frame: Vec<u8>) {
        self.seq += 1;
        self.held_bytes += frame.len();
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            frame,
        }));
    }

    /// A frame arrives at `now`. Frames that leave at once are appended to
    /// `out`; the others wait for [`Pipeline::due`].
    pub(super) fn arrive(&mut self, now: u64, mut frame: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        self.due(now, out);
        self.counters.arrived += 1;
        let control = is_upkeep(&frame);
        // Six draws for every IP packet, in this order, used or not.
        let (u_loss, u_corrupt, bit, u_duplicate, u_reorder, u_jitter) = if control {
            (1.0, 1.0, 0, 1.0, 1.0, 0.5)
        } else {
            let p = &mut self.prng;
            (
                p.next_f64(),
                p.next_f64(),
                p.next_u64(),
                p.next_f64(),
                p.next_f64(),
                p.next_f64(),
            )
        };
        let model = self.model;
        if let Some(mtu) = model.mtu {
            if ip_length(&frame) > mtu as usize {
                self.counters.too_big += 1;
                return;
            }
        }
        let lost = match model.bursts {
            Some(_) if control => false,
            Some(ge) => {
                self.bad = if self.bad {
                    u_loss >= ge.leave
                } else {
                    u_loss < ge.enter
                };
                self.bad
            }
            None => u_loss < model.loss,
        };
        if lost {
            self.counters.lost += 1;
            return;
        }
        if self.held_bytes + frame.len() > MAX_HELD_BYTES {
            self.counters.overflow += 1;
            return;
        }
        let mut leaves = now;
        if let Some(rate) = model.rate_bytes_per_s {
            let free_at = self.rate_free_at.max(now);
            let backlog = ((free_at - now) as u128 * rate as u128 / 1_000_000_000) as u64;
            if backlog + frame.len() as u64 > model.queue_bytes {
                self.counters.queue_full += 1;
                return;
            }
            let serialize = (frame.len() as u128 * 1_000_000_000 / rate as u128) as u64;
            self.rate_free_at = free_at + serialize;
            leaves = self.rate_free_at;
        }
        if u_corrupt < model.corrupt && frame.len() > ETHERNET_HEADER {
            let bits = ((frame.len() - ETHERNET_HEADER) * 8) as u64;
            let at = (bit % bits) as usize;
            frame[ETHERNET_HEADER + at / 8] ^= 1 << (at % 8);
            self.counters.corrupted += 1;
        }
        let jitter = model.jitter_ns as f64 * (2.0 * u_jitter - 1.0);
        let delay = (model.delay_ns as f64 + jitter).max(0.0) as u64;
        let at = leaves.saturating_add(delay).max(self.last_delivery);
        self.last_delivery = at;
        let copy = (u_duplicate < model.duplicate).then(|| frame.clone());
        let hold = u_reorder < model.reorder && self.held.is_none();
        if hold {
            self.counters.reordered += 1;
            self.held_bytes += frame.len();
            self.held = Some(Held { frame, at });
        } else {
            self.send_at(now, at, frame, out);
            if let Some(held) = self.held.take() {
                // It goes right after the frame that overtook it.
                self.held_bytes -= held.frame.len();
                self.send_at(now, at.max(held.at), held.frame, out);
            }
        }
        if let Some(copy) = copy {
            self.counters.duplicated += 1;
            if self.held_bytes + copy.len() <= MAX_HELD_BYTES {
                self.send_at(now, at, copy, out);
            }
        }
    }

    /// Sends at once when due and nothing waits ahead, else schedules.
    fn send_at(&mut self, now: u64, at: u64, frame: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        if at <= now && self.heap.is_empty() {
            out.push(frame);
        } else {
            self.schedule(at, frame);
        }
    }
}

/// The length of the frame's IP packet: what follows the Ethernet header.
fn ip_length(frame: &[u8]) -> usize {
    frame.len().saturating_sub(ETHERNET_HEADER)
}

/// Whether the frame is the link's own upkeep, sent on timers: ARP, IGMP,
/// ICMPv6 router and neighbour discovery, redirects and multicast listener
/// messages (also behind a hop-by-hop header).
pub(super) fn is_upkeep(frame: &[u8]) -> bool {
    if frame.len() < ETHERNET_HEADER {
        return true;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[ETHERNET_HEADER..];
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
        u32::from_be_bytes(f[42..46].try_into().unwrap())
    }

    fn pipeline(seed: u64, impairment: Impairment) -> Pipeline {
        let plan = Plan::constant(impairment.model("impair").unwrap());
        Pipeline::new(Prng::stream(seed, 0, 0), plan, 0)
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
            if p.heap.is_empty() && p.held.is_none() {
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
            .plan()
            .unwrap();
        let mut p = Pipeline::new(Prng::new(1), plan, 0);
        // One frame every ms for 40 ms: those in [10, 20) and [30, 40) pass.
        let left: Vec<u32> = run(&mut p, 40, MS, 100).iter().map(|l| l.1).collect();
        let expected: Vec<u32> = (10..20).chain(30..40).collect();
        assert_eq!(left, expected);
    }
}
