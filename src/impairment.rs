//! [`Impairment`]: how one direction of a link misbehaves, and its check
//! into the [`Model`]s the fault engine runs (one per rule: an impairment
//! and those it is [`otherwise`](Impairment::otherwise)).

use crate::error::Error;
use crate::traffic::{Match, Traffic};
use std::sync::Arc;
use std::time::Duration;

/// The longest delay, and the largest jitter, a link accepts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(60);
/// The fastest rate limit, in kbit/s (100 Gbit/s).
pub(crate) const MAX_RATE_KBIT: u64 = 100_000_000;
/// The smallest and largest queue of a rate-limited direction, in bytes:
/// at least one full-size frame.
pub(crate) const MIN_QUEUE_BYTES: u64 = 1514;
pub(crate) const MAX_QUEUE_BYTES: u64 = 1 << 30;
/// The smallest and largest path MTU of [`Impairment::mtu`].
pub(crate) const MIN_MTU: u32 = 68;
pub(crate) const MAX_MTU: u32 = 65535;
/// The longest mean burst of [`Impairment::loss_bursts`], in packets.
pub(crate) const MAX_BURST: u32 = 1_000_000;

/// How a link misbehaves: pass it to [`Link::impair`](crate::Link::impair)
/// (both directions), [`Link::impair_from`](crate::Link::impair_from) (one
/// direction) or a [`Schedule`](crate::Schedule).
///
/// Every knob acts on each direction it is applied to; every random choice
/// comes from the network's seed ([`Network::seed`](crate::Network::seed)).
/// A knob left out does nothing; [`Impairment::new`] alone clears a link.
///
/// ```
/// use netns_test::Impairment;
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// let far = Impairment::new().delay(ms(40)).jitter(ms(5));
/// let lossy = Impairment::new().loss(5.0);
/// let bursty = Impairment::new().loss_bursts(2.0, 8);
/// let bad_wire = Impairment::new().corrupt(0.5).duplicate(1.0).reorder(10.0);
/// let bloated = Impairment::new().rate_kbit(2_000).queue_bytes(64 * 1024);
/// let black_hole = Impairment::new().mtu(1280);
/// # let _ = (far, lossy, bursty, bad_wire, bloated, black_hole);
/// ```
///
/// [`Impairment::only`] limits it to some [`Traffic`]; packets it does not
/// select pass untouched, or go to the impairment it is
/// [`otherwise`](Impairment::otherwise):
///
/// ```
/// use netns_test::{Impairment, Traffic};
/// # let ms = std::time::Duration::from_millis;
/// let v6_black_hole = Impairment::new().loss(100.0).only(Traffic::ipv6());
/// let slow_dns_lossy_rest = Impairment::new()
///     .delay(ms(300))
///     .only(Traffic::udp().port(53))               // DNS: 300 ms late, never lost
///     .otherwise(Impairment::new().loss(2.0));      // everything else: 2 % lost
/// # let _ = (v6_black_hole, slow_dns_lossy_rest);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use = "an Impairment does nothing until it is given to `Link::impair` or a `Schedule`"]
pub struct Impairment {
    delay: Option<Duration>,
    jitter: Option<Duration>,
    loss: Option<f64>,
    loss_bursts: Option<(f64, u32)>,
    corrupt: Option<f64>,
    duplicate: Option<f64>,
    reorder: Option<f64>,
    rate_kbit: Option<u64>,
    queue_bytes: Option<u64>,
    mtu: Option<u32>,
    /// The packets it applies to (all, when `None`).
    traffic: Option<Traffic>,
    /// The impairment for the packets it does not select.
    otherwise: Option<Box<Impairment>>,
}

impl Impairment {
    /// No impairment: given to [`Link::impair`](crate::Link::impair), it
    /// clears the link.
    pub fn new() -> Impairment {
        Impairment::default()
    }

    /// Delays every packet by this much (at most 60 s).
    pub fn delay(mut self, delay: Duration) -> Impairment {
        self.delay = Some(delay);
        self
    }

    /// Varies each packet's delay by a uniform amount between `-jitter` and
    /// `+jitter` (at most 60 s; a delay below zero is zero). Packets keep
    /// their order: a packet never leaves before the one sent ahead of it
    /// (use [`Impairment::reorder`] for that).
    pub fn jitter(mut self, jitter: Duration) -> Impairment {
        self.jitter = Some(jitter);
        self
    }

    /// Drops this percentage of packets (0 to 100), each independently.
    pub fn loss(mut self, percent: f64) -> Impairment {
        self.loss = Some(percent);
        self
    }

    /// Drops `percent` of packets on average, in bursts of `mean_burst`
    /// packets on average: a Gilbert–Elliott channel whose bad state loses
    /// every packet and whose good state loses none. The average loss can
    /// be at most `100 × mean_burst / (mean_burst + 1)` percent (50 % for
    /// bursts of 1 packet, which is independent loss).
    pub fn loss_bursts(mut self, percent: f64, mean_burst: u32) -> Impairment {
        self.loss_bursts = Some((percent, mean_burst));
        self
    }

    /// Flips one bit, past the Ethernet header, in this percentage of
    /// packets (0 to 100): the receiver's IP, TCP or UDP checksum then
    /// fails and it drops the packet, as with a bad wire.
    pub fn corrupt(mut self, percent: f64) -> Impairment {
        self.corrupt = Some(percent);
        self
    }

    /// Sends this percentage of packets (0 to 100) twice.
    pub fn duplicate(mut self, percent: f64) -> Impairment {
        self.duplicate = Some(percent);
        self
    }

    /// Holds back this percentage of packets (0 to 100) until the next
    /// packet in the same direction has gone ahead of them (at most 10 ms
    /// past their time, when no packet follows).
    pub fn reorder(mut self, percent: f64) -> Impairment {
        self.reorder = Some(percent);
        self
    }

    /// At most `kbit` kilobits per second (1 to 100,000,000), counting
    /// Ethernet frames. Packets wait in a queue of
    /// [`Impairment::queue_bytes`]; what does not fit is dropped.
    pub fn rate_kbit(mut self, kbit: u64) -> Impairment {
        self.rate_kbit = Some(kbit);
        self
    }

    /// The queue in front of a rate limit, in bytes (1514 to 1 GiB; by
    /// default 100 ms at the rate, and at least 64 KiB). A packet that
    /// does not fit is dropped (tail drop): a large queue makes
    /// bufferbloat, a small one overflows.
    pub fn queue_bytes(mut self, bytes: u64) -> Impairment {
        self.queue_bytes = Some(bytes);
        self
    }

    /// Silently drops IP packets larger than `mtu` bytes (68 to 65535),
    /// with no ICMP error: a path-MTU black hole.
    pub fn mtu(mut self, mtu: u32) -> Impairment {
        self.mtu = Some(mtu);
        self
    }

    /// Applies the impairment only to `traffic` (calling it again
    /// replaces the traffic). The rest passes untouched, or goes to the
    /// impairment this one is [`otherwise`](Impairment::otherwise).
    ///
    /// Its knobs act on the selected packets as if nothing else crossed
    /// the link: `rate_kbit` limits them alone, `reorder` lets the next
    /// selected packet overtake, and they draw their random numbers from a
    /// stream of their own, so that what the seed decides for the n-th
    /// selected packet does not depend on other traffic.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// use netns_test::{Impairment, Network, Traffic};
    /// let net = Network::new();
    /// let (client, server) = (net.node("client")?, net.node("server")?);
    /// let link = net.link(&client, &server)?;
    /// // IPv6 black-holed both ways, IPv4 untouched: Happy Eyeballs falls back.
    /// link.impair(Impairment::new().loss(100.0).only(Traffic::ipv6()))?;
    /// # Ok::<(), netns_test::Error>(())
    /// ```
    pub fn only(mut self, traffic: Traffic) -> Impairment {
        self.traffic = Some(traffic);
        self
    }

    /// Adds `next` for the packets this impairment does not select: one
    /// direction carries several impairments, each for its traffic, and
    /// the first whose traffic a packet matches applies to it. Packets
    /// that none selects pass untouched. `a.otherwise(b).otherwise(c)`
    /// tries `a`, then `b`, then `c`; knobs set after `otherwise` are
    /// still `a`'s.
    ///
    /// An impairment given to [`Link::impair_from`](crate::Link::impair_from)
    /// replaces what the direction had: to add one and keep the others,
    /// give them all, joined by `otherwise`.
    ///
    /// ```
    /// use netns_test::{Impairment, Traffic};
    /// # let ms = std::time::Duration::from_millis;
    /// // DNS 300 ms late, TCP to port 443 lossy, the rest 20 ms late.
    /// let wan = Impairment::new().delay(ms(300)).only(Traffic::udp().port(53))
    ///     .otherwise(Impairment::new().loss(5.0).only(Traffic::tcp().dst_port(443)))
    ///     .otherwise(Impairment::new().delay(ms(20)));
    /// # let _ = wan;
    /// ```
    pub fn otherwise(mut self, next: Impairment) -> Impairment {
        let mut last = &mut self;
        while let Some(ref mut after) = last.otherwise {
            last = after;
        }
        last.otherwise = Some(Box::new(next));
        self
    }

    /// Checks every value and returns what the engine runs, a model per
    /// rule: an [`InvalidInput`](std::io::ErrorKind::InvalidInput) error of
    /// `operation` that names the value and its valid range.
    pub(crate) fn models(&self, operation: &'static str) -> Result<Vec<Model>, Error> {
        self.check()
            .map_err(|why| Error::invalid_input(operation, why))
    }

    /// A model per rule: this impairment's, then those of the ones it is
    /// `otherwise`. The error names the rule when there are several.
    pub(crate) fn check(&self) -> Result<Vec<Model>, String> {
        let mut models = Vec::new();
        let mut rule = Some(self);
        while let Some(impairment) = rule {
            let model = impairment.check_one().map_err(|why| {
                if self.otherwise.is_some() {
                    format!(
                        "impairment {} of the otherwise chain: {why}",
                        models.len() + 1
                    )
                } else {
                    why
                }
            })?;
            models.push(model);
            rule = impairment.otherwise.as_deref();
        }
        Ok(models)
    }

    /// The knobs alone: no traffic, nothing after.
    fn knobs(&self) -> Impairment {
        Impairment {
            traffic: None,
            otherwise: None,
            ..self.clone()
        }
    }

    fn check_one(&self) -> Result<Model, String> {
        let invalid = Err;
        let percent = |name: &str, value: Option<f64>| -> Result<f64, String> {
            match value {
                None => Ok(0.0),
                Some(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
                Some(p) => Err(format!(
                    "{name}({p}) is out of range: a percentage from 0 to 100"
                )),
            }
        };
        let duration = |name: &str, value: Option<Duration>| -> Result<u64, String> {
            match value {
                None => Ok(0),
                Some(d) if d <= MAX_DELAY => Ok(d.as_nanos() as u64),
                Some(d) => Err(format!(
                    "{name}({d:?}) is out of range: from 0 to {MAX_DELAY:?}"
                )),
            }
        };
        let loss = percent("loss", self.loss)?;
        let bursts = match self.loss_bursts {
            None => None,
            Some(_) if self.loss.is_some() => {
                return invalid(
                    "loss and loss_bursts both set: choose independent or bursty loss".into(),
                );
            }
            Some((_, burst)) if !(1..=MAX_BURST).contains(&burst) => {
                return invalid(format!(
                    "loss_bursts mean burst {burst} is out of range: from 1 to {MAX_BURST} packets"
                ));
            }
            Some((p, burst)) => {
                let max = 100.0 * f64::from(burst) / (f64::from(burst) + 1.0);
                if !(0.0..=max).contains(&p) {
                    return invalid(format!(
                        "loss_bursts({p}, {burst}) is out of range: with bursts of {burst} packets \
                         on average, the average loss is from 0 to {max:.4} percent"
                    ));
                }
                // Leave bad after 1/burst packets on average; enter it so
                // that the stationary share of bad is p.
                let p = p / 100.0;
                let leave = 1.0 / f64::from(burst);
                let enter = if p == 0.0 { 0.0 } else { p * leave / (1.0 - p) };
                Some(GilbertElliott {
                    enter: enter.min(1.0),
                    leave,
                })
            }
        };
        let rate = match self.rate_kbit {
            None => None,
            Some(kbit) if (1..=MAX_RATE_KBIT).contains(&kbit) => Some(kbit),
            Some(kbit) => {
                return invalid(format!(
                    "rate_kbit({kbit}) is out of range: from 1 to {MAX_RATE_KBIT} kbit/s \
                     (Link::set_down stops a link)"
                ));
            }
        };
        let queue_bytes = match (self.queue_bytes, rate) {
            (None, None) => 0,
            (Some(bytes), None) => {
                return invalid(format!(
                    "queue_bytes({bytes}) needs a rate_kbit: the queue is the one in front of the rate limit"
                ));
            }
            (Some(bytes), Some(_)) if (MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES).contains(&bytes) => bytes,
            (Some(bytes), Some(_)) => {
                return invalid(format!(
                    "queue_bytes({bytes}) is out of range: from {MIN_QUEUE_BYTES} to {MAX_QUEUE_BYTES} bytes"
                ));
            }
            // 100 ms at the rate (kbit/s × 100 ms / 8 bits), at least 64 KiB.
            (None, Some(kbit)) => (kbit * 100 / 8).clamp(64 * 1024, MAX_QUEUE_BYTES),
        };
        let mtu = match self.mtu {
            None => None,
            Some(mtu) if (MIN_MTU..=MAX_MTU).contains(&mtu) => Some(mtu),
            Some(mtu) => {
                return invalid(format!(
                    "mtu({mtu}) is out of range: from {MIN_MTU} to {MAX_MTU} bytes"
                ));
            }
        };
        let engaged = self.knobs() != Impairment::default();
        let claims = match &self.traffic {
            Some(traffic) => {
                let alternatives = traffic
                    .check()
                    .map_err(|why| format!("only({traffic}): {why}"))?;
                Claims::Only(alternatives.into())
            }
            None if engaged => Claims::All,
            None => Claims::Nothing,
        };
        Ok(Model {
            engaged,
            claims,
            delay_ns: duration("delay", self.delay)?,
            jitter_ns: duration("jitter", self.jitter)?,
            loss,
            bursts,
            corrupt: percent("corrupt", self.corrupt)?,
            duplicate: percent("duplicate", self.duplicate)?,
            reorder: percent("reorder", self.reorder)?,
            rate_bytes_per_s: rate.map(|kbit| kbit * 1000 / 8).map(|b| b.max(1)),
            queue_bytes,
            mtu,
        })
    }
}

/// A checked [`Impairment`] (one rule of it), in the engine's units:
/// nanoseconds, probabilities from 0 to 1, bytes per second.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Model {
    /// Whether any knob is set, even to a value that changes nothing
    /// (`loss(0.0)`): the direction then goes through the engine.
    pub engaged: bool,
    /// The packets the rule takes.
    pub claims: Claims,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub loss: f64,
    pub bursts: Option<GilbertElliott>,
    pub corrupt: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub rate_bytes_per_s: Option<u64>,
    pub queue_bytes: u64,
    pub mtu: Option<u32>,
}

impl Model {
    /// Whether no knob is set ([`Impairment::new`]): the direction is a
    /// plain veth.
    pub(crate) fn is_clear(&self) -> bool {
        !self.engaged
    }
}

/// The packets a rule takes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Claims {
    /// None: a rule that sets no knob and selects no traffic, or a step of
    /// a schedule without this rule.
    #[default]
    Nothing,
    /// Every frame, the link's upkeep included (no [`Impairment::only`]).
    All,
    /// The IP packets any of these alternatives matches.
    Only(Arc<[Match]>),
}

/// What the fault engine did to what one end sent over a link:
/// [`Link::counters_from`](crate::Link::counters_from). Counts start when
/// the direction is first impaired and never go back; they count the IP
/// packets its impairments took (all of them, or those their
/// [`Traffic`] selects), not the link's own upkeep (ARP, neighbour
/// discovery), whose number depends on kernel timers.
///
/// ```
/// # if !netns_test::privileged() { return Ok(()); }
/// use netns_test::{Impairment, Network};
/// let net = Network::new();
/// let (a, b) = (net.node("a")?, net.node("b")?);
/// let link = net.link(&a, &b)?;
/// link.impair_from(&a, Impairment::new().loss(30.0))?;
/// let to = (b.ipv4_on(&link), 9);
/// a.netns().run(|| {
///     let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
///     for _ in 0..100 {
///         socket.send_to(b"x", to).unwrap();
///     }
/// });
/// std::thread::sleep(std::time::Duration::from_millis(50)); // the first ones wait for ARP
/// let counters = link.counters_from(&a);
/// assert_eq!(counters.packets(), 100);
/// assert!(counters.lost() > 10);
/// println!("{counters}"); // 100 packets (4200 bytes): 31 lost
/// # Ok::<(), netns_test::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinkCounters {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) lost: u64,
    pub(crate) too_big: u64,
    pub(crate) queue_full: u64,
    pub(crate) overflow: u64,
    pub(crate) corrupted: u64,
    pub(crate) duplicated: u64,
    pub(crate) reordered: u64,
    pub(crate) delayed: u64,
    pub(crate) missed: u64,
    pub(crate) unsent: u64,
}

impl LinkCounters {
    /// Packets the impairments took.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Their bytes, as Ethernet frames.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Dropped by [`Impairment::loss`] or [`Impairment::loss_bursts`].
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Dropped by [`Impairment::mtu`]: larger than the path MTU.
    pub fn too_big(&self) -> u64 {
        self.too_big
    }

    /// Dropped by the queue of [`Impairment::rate_kbit`]: it was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full
    }

    /// Dropped because the direction held as much as it may (256 MiB).
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Every packet dropped: lost, too big, queue full or overflow.
    pub fn dropped(&self) -> u64 {
        self.lost + self.too_big + self.queue_full + self.overflow
    }

    /// Given a flipped bit by [`Impairment::corrupt`].
    pub fn corrupted(&self) -> u64 {
        self.corrupted
    }

    /// Sent twice by [`Impairment::duplicate`] (copies made, not counted
    /// in `packets`).
    pub fn duplicated(&self) -> u64 {
        self.duplicated
    }

    /// Held back for the next one to overtake ([`Impairment::reorder`]).
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Held for a while: by [`Impairment::delay`] and
    /// [`Impairment::jitter`], in the queue of [`Impairment::rate_kbit`],
    /// or behind packets held so.
    pub fn delayed(&self) -> u64 {
        self.delayed
    }

    /// Frames the kernel dropped before the engine read them (its socket
    /// was full: a burst beyond what the engine keeps up with). Not in
    /// `packets`.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Frames the kernel refused to send on (the sending end was down).
    pub fn unsent(&self) -> u64 {
        self.unsent
    }
}

/// `2000 packets (236000 bytes): 612 lost, 98 duplicated`: what was done,
/// only the counts that are not zero.
impl std::fmt::Display for LinkCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} packets ({} bytes)", self.packets, self.bytes)?;
        let done: Vec<String> = [
            (self.lost, "lost"),
            (self.too_big, "too big"),
            (self.queue_full, "queue full"),
            (self.overflow, "overflow"),
            (self.corrupted, "corrupted"),
            (self.duplicated, "duplicated"),
            (self.reordered, "reordered"),
            (self.delayed, "delayed"),
            (self.missed, "missed"),
            (self.unsent, "unsent"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if done.is_empty() {
            f.write_str(", untouched")
        } else {
            write!(f, ": {}", done.join(", "))
        }
    }
}

/// The two transition probabilities of a Gilbert–Elliott channel whose
/// bad state loses every packet and good state none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GilbertElliott {
    /// From good to bad, per packet.
    pub enter: f64,
    /// From bad to good, per packet: 1 / mean burst length.
    pub leave: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(impairment: Impairment, naming: &str) {
        let error = impairment.models("impair").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(text.contains(naming), "{text} should name {naming}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_value_and_range() {
        refused(Impairment::new().loss(101.0), "loss(101) is out of range");
        refused(Impairment::new().loss(-1.0), "0 to 100");
        refused(Impairment::new().loss(f64::NAN), "loss(NaN)");
        refused(Impairment::new().corrupt(100.5), "corrupt(100.5)");
        refused(Impairment::new().duplicate(-0.1), "duplicate(-0.1)");
        refused(Impairment::new().reorder(1e9), "reorder(");
        refused(
            Impairment::new().rate_kbit(u64::MAX),
            "rate_kbit(18446744073709551615) is out of range: from 1 to 100000000",
        );
        refused(Impairment::new().rate_kbit(0), "rate_kbit(0)");
        refused(Impairment::new().queue_bytes(10_000), "needs a rate_kbit");
        refused(
            Impairment::new().rate_kbit(1000).queue_bytes(100),
            "queue_bytes(100) is out of range: from 1514",
        );
        refused(
            Impairment::new().mtu(67),
            "mtu(67) is out of range: from 68",
        );
        refused(
            Impairment::new().delay(Duration::from_secs(61)),
            "delay(61s) is out of range",
        );
        refused(Impairment::new().jitter(Duration::MAX), "jitter(");
        refused(Impairment::new().loss_bursts(60.0, 1), "from 0 to 50");
        refused(Impairment::new().loss_bursts(2.0, 0), "mean burst 0");
        refused(Impairment::new().loss(1.0).loss_bursts(2.0, 8), "both set");
        refused(
            Impairment::new()
                .delay(Duration::from_millis(5))
                .only(crate::Traffic::icmp().port(7)),
            "port 7 on ICMP",
        );
        refused(
            Impairment::new()
                .only(crate::Traffic::udp())
                .otherwise(Impairment::new().loss(300.0)),
            "impairment 2 of the otherwise chain: loss(300) is out of range",
        );
    }

    #[test]
    fn otherwise_chains_rules_in_order() {
        let ms = Duration::from_millis;
        let models = Impairment::new()
            .delay(ms(300))
            .only(crate::Traffic::udp().port(53))
            .otherwise(Impairment::new().loss(5.0).only(crate::Traffic::tcp()))
            .otherwise(Impairment::new().delay(ms(20)))
            .loss(1.0)
            .models("impair")
            .unwrap();
        assert_eq!(models.len(), 3);
        assert_eq!(models[0].delay_ns, 300_000_000);
        assert!(
            (models[0].loss - 0.01).abs() < 1e-12,
            "knobs after otherwise are the first's"
        );
        assert!(matches!(&models[0].claims, Claims::Only(m) if m.len() == 1));
        assert!((models[1].loss - 0.05).abs() < 1e-12);
        assert_eq!(models[2].claims, Claims::All);
        // A selector without knobs still takes its packets (from the rules
        // after it), doing nothing to them.
        let shield = Impairment::new()
            .only(crate::Traffic::udp())
            .models("impair")
            .unwrap();
        assert!(shield[0].is_clear());
        assert!(matches!(shield[0].claims, Claims::Only(_)));
    }

    /// The model of an impairment of one rule.
    impl Impairment {
        fn model(&self, operation: &'static str) -> Result<Model, Error> {
            let mut models = self.models(operation)?;
            assert_eq!(models.len(), 1);
            Ok(models.remove(0))
        }
    }

    #[test]
    fn good_values_become_the_model() {
        assert!(Impairment::new().model("impair").unwrap().is_clear());
        assert_eq!(
            Impairment::new().model("impair").unwrap().claims,
            Claims::Nothing
        );
        let empty = Impairment::new().loss(0.0).model("impair").unwrap();
        assert!(!empty.is_clear(), "loss(0.0) goes through the engine");
        assert_eq!(empty.claims, Claims::All);
        assert_eq!(
            Model {
                engaged: false,
                claims: Claims::Nothing,
                ..empty
            },
            Model::default()
        );
        let model = Impairment::new()
            .delay(Duration::from_millis(40))
            .jitter(Duration::from_millis(5))
            .loss(5.0)
            .rate_kbit(2_000)
            .mtu(1280)
            .model("impair")
            .unwrap();
        assert_eq!(model.delay_ns, 40_000_000);
        assert_eq!(model.jitter_ns, 5_000_000);
        assert!((model.loss - 0.05).abs() < 1e-12);
        assert_eq!(model.rate_bytes_per_s, Some(250_000));
        assert_eq!(model.queue_bytes, 64 * 1024);
        assert_eq!(model.mtu, Some(1280));
        let fast = Impairment::new()
            .rate_kbit(MAX_RATE_KBIT)
            .model("impair")
            .unwrap();
        assert_eq!(fast.queue_bytes, MAX_QUEUE_BYTES);
        let bursts = Impairment::new()
            .loss_bursts(2.0, 8)
            .model("impair")
            .unwrap()
            .bursts
            .unwrap();
        assert!((bursts.leave - 0.125).abs() < 1e-12);
        // Stationary share of the bad state: enter / (enter + leave).
        let share = bursts.enter / (bursts.enter + bursts.leave);
        assert!((share - 0.02).abs() < 1e-12, "{share}");
        let edge = Impairment::new()
            .loss_bursts(50.0, 1)
            .model("impair")
            .unwrap();
        assert_eq!(edge.bursts.unwrap().enter, 1.0);
    }
}
