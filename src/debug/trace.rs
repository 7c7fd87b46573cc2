//! `NETNS_TEST_LOG=debug`: each setup and teardown step of each test, with
//! its duration, on stderr (captured with the test's output).

use std::time::Instant;

/// Times consecutive steps of one test; free when tracing is off.
pub(crate) struct Steps {
    test: &'static str,
    last: Option<std::cell::Cell<Instant>>,
}

impl Steps {
    pub(crate) fn new(test: &'static str) -> Steps {
        Steps {
            test,
            last: crate::settings::trace().then(|| std::cell::Cell::new(Instant::now())),
        }
    }

    /// Logs `what`, timed since the previous step.
    pub(crate) fn step(&self, what: &str) {
        if let Some(last) = &self.last {
            let now = Instant::now();
            let took = now - last.replace(now);
            eprintln!(
                "netns-test[{}]: {what}: {:.3} ms",
                self.test,
                took.as_secs_f64() * 1000.0
            );
        }
    }
}
