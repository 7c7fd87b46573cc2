//! Each setup and teardown step of each test, with its duration: through
//! the `log` crate at debug level (target `netns_test`, so `RUST_LOG=
//! netns_test=debug` with test-log or env_logger), and on stderr with
//! `NETNS_TEST_LOG=debug` for those without a logger (captured with the
//! test's output either way).

use std::time::Instant;

/// Times consecutive steps of one test; free when neither is on.
pub(crate) struct Steps {
    test: &'static str,
    last: Option<std::cell::Cell<Instant>>,
    to_stderr: bool,
}

impl Steps {
    pub(crate) fn new(test: &'static str) -> Steps {
        let to_stderr = crate::settings::trace();
        let to_log = log::log_enabled!(target: "netns_test", log::Level::Debug);
        Steps {
            test,
            last: (to_stderr || to_log).then(|| std::cell::Cell::new(Instant::now())),
            to_stderr,
        }
    }

    /// Logs `what`, timed since the previous step.
    pub(crate) fn step(&self, what: &str) {
        if let Some(last) = &self.last {
            let now = Instant::now();
            let took = now - last.replace(now);
            let millis = took.as_secs_f64() * 1000.0;
            log::debug!(target: "netns_test", "[{}] {what}: {millis:.3} ms", self.test);
            if self.to_stderr {
                eprintln!("netns-test[{}]: {what}: {millis:.3} ms", self.test);
            }
        }
    }
}
