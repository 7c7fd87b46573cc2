//! [`Schedule`]: impairments that change during a test.

use crate::error::Error;
use crate::impairment::{Impairment, Model};
use std::time::Duration;

/// Impairments that follow each other in time: each step holds for its
/// duration, then the next takes over. After the last step its impairment
/// stays, unless the schedule [repeats](Schedule::repeat).
///
/// ```
/// use netns_test::{Impairment, Schedule};
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// // A flapping link: down (all lost) for 500 ms, up for 200 ms, again and again.
/// let flapping = Schedule::new()
///     .then(ms(500), Impairment::new().loss(100.0))
///     .then(ms(200), Impairment::new())
///     .repeat();
/// # let _ = flapping;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use = "a Schedule does nothing until it is given to `Link::schedule`"]
pub struct Schedule {
    steps: Vec<(Duration, Impairment)>,
    repeat: bool,
}

impl Schedule {
    /// An empty schedule (given to a link, it clears it).
    pub fn new() -> Schedule {
        Schedule::default()
    }

    /// Adds a step: `impairment` for `duration`.
    pub fn then(mut self, duration: Duration, impairment: Impairment) -> Schedule {
        self.steps.push((duration, impairment));
        self
    }

    /// Starts again from the first step after the last one.
    pub fn repeat(mut self) -> Schedule {
        self.repeat = true;
        self
    }

    /// Checks every step: the error names the step and the bad value.
    /// Returns a plan per rule: the k-th impairment of each step's
    /// [`otherwise`](Impairment::otherwise) chain, in each step (a step
    /// with fewer rules takes nothing for the others), so that every
    /// rule's plan has the same steps.
    pub(crate) fn plans(&self) -> Result<Vec<Plan>, Error> {
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, (duration, impairment)) in self.steps.iter().enumerate() {
            let models = impairment.check().map_err(|why| {
                Error::invalid_input("schedule", format!("step {}: {why}", i + 1))
            })?;
            let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
            steps.push((nanos, models));
        }
        if self.repeat && steps.iter().all(|(nanos, _)| *nanos == 0) {
            return Err(Error::invalid_input(
                "schedule",
                "a repeating schedule needs a step longer than 0: its steps last from 1 ns to years",
            ));
        }
        let rules = steps.iter().map(|(_, m)| m.len()).max().unwrap_or(1);
        Ok((0..rules)
            .map(|k| Plan {
                steps: steps
                    .iter()
                    .map(|(nanos, models)| (*nanos, models.get(k).cloned().unwrap_or_default()))
                    .collect(),
                repeat: self.repeat,
            })
            .collect())
    }
}

/// The plans of an impairment that holds for ever: one per rule.
pub(crate) fn constant(models: Vec<Model>) -> Vec<Plan> {
    models.into_iter().map(Plan::constant).collect()
}

/// A checked [`Schedule`] (or a constant impairment), for one rule, in
/// nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub steps: Vec<(u64, Model)>,
    pub repeat: bool,
}

impl Plan {
    /// A plan of one step that lasts for ever.
    pub(crate) fn constant(model: Model) -> Plan {
        Plan {
            steps: vec![(u64::MAX, model)],
            repeat: false,
        }
    }

    /// The step in force `elapsed` nanoseconds after the start, and when
    /// (after the start) the next step begins, if one does.
    pub(crate) fn at(&self, elapsed: u64) -> (Model, Option<u64>) {
        if self.steps.is_empty() {
            return (Model::default(), None);
        }
        let period: u64 = self
            .steps
            .iter()
            .fold(0u64, |sum, (nanos, _)| sum.saturating_add(*nanos));
        let (offset, base) = if self.repeat && period > 0 && period < u64::MAX {
            (elapsed % period, elapsed - elapsed % period)
        } else {
            (elapsed, 0)
        };
        let mut start = 0u64;
        for (nanos, model) in &self.steps {
            let end = start.saturating_add(*nanos);
            if offset < end {
                let next = if end == u64::MAX {
                    None
                } else {
                    Some(base.saturating_add(end))
                };
                return (model.clone(), next);
            }
            start = end;
        }
        // Past the end of a schedule that does not repeat: the last step stays.
        let (_, last) = self.steps.last().expect("not empty");
        (last.clone(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(model: &Model) -> f64 {
        model.loss
    }

    #[test]
    fn steps_follow_each_other_and_repeat() {
        let ms = Duration::from_millis;
        let plan = Schedule::new()
            .then(ms(500), Impairment::new().loss(100.0))
            .then(ms(200), Impairment::new())
            .repeat()
            .plans()
            .unwrap()
            .remove(0);
        let ms = |n: u64| n * 1_000_000;
        let (model, next) = plan.at(0);
        assert_eq!((loss(&model), next), (1.0, Some(ms(500))));
        let (model, next) = plan.at(ms(600));
        assert_eq!((loss(&model), next), (0.0, Some(ms(700))));
        let (model, next) = plan.at(ms(700));
        assert_eq!((loss(&model), next), (1.0, Some(ms(1200))));
        let (model, next) = plan.at(ms(7 * 700 + 650));
        assert_eq!((loss(&model), next), (0.0, Some(ms(8 * 700))));
    }

    #[test]
    fn the_last_step_stays_without_repeat() {
        let ms = Duration::from_millis;
        let plan = Schedule::new()
            .then(ms(100), Impairment::new().loss(50.0))
            .then(ms(100), Impairment::new().loss(20.0))
            .plans()
            .unwrap()
            .remove(0);
        assert_eq!(plan.at(150_000_000).1, Some(200_000_000));
        let (model, next) = plan.at(5_000_000_000);
        assert_eq!((model.loss, next), (0.2, None));
        assert!(Schedule::new().plans().unwrap()[0].at(0).0.is_clear());
    }

    #[test]
    fn bad_steps_and_empty_repeats_are_refused() {
        let error = Schedule::new()
            .then(Duration::from_millis(1), Impairment::new())
            .then(Duration::from_millis(1), Impairment::new().loss(200.0))
            .plans()
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("step 2"), "{error}");
        assert!(error.to_string().contains("loss(200)"), "{error}");
        let error = Schedule::new()
            .then(Duration::ZERO, Impairment::new())
            .repeat()
            .plans()
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn each_rule_has_a_plan_with_every_step() {
        let ms = Duration::from_millis;
        let v6 = crate::Traffic::ipv6();
        let plans = Schedule::new()
            .then(ms(100), Impairment::new().loss(100.0).only(v6))
            .then(
                ms(100),
                Impairment::new()
                    .delay(ms(5))
                    .only(crate::Traffic::udp())
                    .otherwise(Impairment::new().loss(10.0)),
            )
            .plans()
            .unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[1].steps.len(), 2);
        // The second rule takes nothing in the first step.
        assert!(plans[1].at(0).0.is_clear());
        assert_eq!(plans[1].at(0).0.claims, crate::impairment::Claims::Nothing);
        assert!((plans[1].at(150_000_000).0.loss - 0.1).abs() < 1e-12);
    }
}
