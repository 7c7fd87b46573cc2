//! [`Impairment`]: how a link misbehaves.

use crate::error::Error;
use std::time::Duration;

/// How a link misbehaves: see [`Link::impair`](crate::Link::impair).
///
/// ```
/// use netns_test::Impairment;
/// use std::time::Duration;
/// let slow = Impairment::new().rate_kbit(1000);
/// let lossy = Impairment::new().loss(5.0);
/// let far = Impairment::new().delay(Duration::from_millis(50)).jitter(Duration::from_millis(5));
/// # let _ = (slow, lossy, far);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairment {
    pub(crate) rate_kbit: Option<u64>,
    pub(crate) loss: Option<f64>,
    delay: Option<Duration>,
    jitter: Option<Duration>,
    duplicate: Option<f64>,
    reorder: Option<f64>,
}

impl Impairment {
    /// No impairment: passing it to [`Link::impair`](crate::Link::impair) clears the link's.
    pub fn new() -> Impairment {
        Impairment::default()
    }
    /// At most `kbit` kilobits per second in each direction (tbf).
    pub fn rate_kbit(mut self, kbit: u64) -> Impairment {
        self.rate_kbit = Some(kbit);
        self
    }
    /// Drops this percentage of packets at random in each direction.
    pub fn loss(mut self, percent: f64) -> Impairment {
        self.loss = Some(percent);
        self
    }
    /// Delays every packet (netem).
    pub fn delay(mut self, delay: Duration) -> Impairment {
        self.delay = Some(delay);
        self
    }
    /// Varies the delay by up to this much (netem; needs a delay).
    pub fn jitter(mut self, jitter: Duration) -> Impairment {
        self.jitter = Some(jitter);
        self
    }
    /// Duplicates this percentage of packets (netem).
    pub fn duplicate(mut self, percent: f64) -> Impairment {
        self.duplicate = Some(percent);
        self
    }
    /// Sends this percentage of packets at once, ahead of the delayed rest
    /// (netem; needs a delay).
    pub fn reorder(mut self, percent: f64) -> Impairment {
        self.reorder = Some(percent);
        self
    }

    pub(crate) fn needs_netem(&self) -> bool {
        self.delay.is_some()
            || self.jitter.is_some()
            || self.duplicate.is_some()
            || self.reorder.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |why: &str| Err(Error::invalid_input("impair", why));
        for percent in [self.loss, self.duplicate, self.reorder]
            .into_iter()
            .flatten()
        {
            if !(0.0..=100.0).contains(&percent) {
                return invalid("percentages are between 0 and 100");
            }
        }
        if (self.jitter.is_some() || self.reorder.is_some()) && self.delay.is_none() {
            return invalid("jitter and reorder need a delay");
        }
        if self.rate_kbit.is_some() && self.needs_netem() {
            return invalid(
                "a rate limit cannot be combined with delay, jitter, reorder or duplicate yet",
            );
        }
        if self.rate_kbit == Some(0) {
            return invalid("a rate of 0 kbit/s stops the link: use Link::set_down");
        }
        Ok(())
    }

    /// struct tc_netem_qopt: latency and jitter in psched ticks (64 ns),
    /// limit in packets, loss, gap, duplicate (probabilities scaled to u32).
    pub(crate) fn netem_options(&self) -> [u32; 6] {
        let ticks = |d: Option<Duration>| {
            (d.unwrap_or_default().as_nanos() / 64).min(u32::MAX as u128) as u32
        };
        let probability = |p: Option<f64>| ((p.unwrap_or(0.0) / 100.0) * u32::MAX as f64) as u32;
        let gap = u32::from(self.reorder.is_some());
        [
            ticks(self.delay),
            1000,
            0,
            gap,
            probability(self.duplicate),
            ticks(self.jitter),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impairments_are_checked() {
        assert!(Impairment::new().loss(101.0).validate().is_err());
        assert!(
            Impairment::new()
                .jitter(Duration::from_millis(1))
                .validate()
                .is_err()
        );
        assert!(
            Impairment::new()
                .rate_kbit(10)
                .delay(Duration::from_millis(1))
                .validate()
                .is_err()
        );
        assert!(
            Impairment::new()
                .rate_kbit(1000)
                .loss(1.0)
                .validate()
                .is_ok()
        );
        let options = Impairment::new()
            .delay(Duration::from_millis(50))
            .jitter(Duration::from_millis(5))
            .netem_options();
        assert_eq!(options[0], 50_000_000 / 64);
        assert_eq!(options[5], 5_000_000 / 64);
    }
}
