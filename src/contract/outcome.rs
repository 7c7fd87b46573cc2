//! How a test ended: its return value when it ran on the calling thread,
//! else an [`Ended`], which crosses thread and process boundaries.

use crate::error::Error;
use std::any::Any;
use std::process::{ExitCode, Termination};

/// A test's return type, which the caller rebuilds when the body ran on
/// another thread or in another process and passed.
#[diagnostic::on_unimplemented(
    message = "a #[netns_test] function must return (), Result<(), E> or ExitCode, not `{Self}`",
    label = "this return type"
)]
pub trait TestReturn: Termination {
    /// The value of a passing test.
    fn passed() -> Self;
    /// Whether this value fails the test (keep and capture policies ask).
    fn is_failure(&self) -> bool;
}

impl TestReturn for () {
    fn passed() {}
    fn is_failure(&self) -> bool {
        false
    }
}

impl<T: TestReturn, E: std::fmt::Debug> TestReturn for Result<T, E> {
    fn passed() -> Self {
        Ok(T::passed())
    }
    fn is_failure(&self) -> bool {
        self.as_ref().map_or(true, T::is_failure)
    }
}

impl TestReturn for ExitCode {
    fn passed() -> Self {
        ExitCode::SUCCESS
    }
    fn is_failure(&self) -> bool {
        *self != ExitCode::SUCCESS
    }
}

/// How a test ended, in a form that travels between threads and processes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Passed,
    /// The body panicked with this message.
    Panicked(String),
    Failed(FailureKind, String),
    /// The environment refused the test and `NETNS_TEST_UNSUPPORTED=skip`
    /// is set: the test passes with one line giving this reason.
    Skipped(String),
}

/// Why a test failed without a panic of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Its namespace could not be set up.
    Setup,
    /// The environment forbids what it needs (a kernel setting, AppArmor, a
    /// seccomp filter).
    Refused,
    TimedOut,
    /// The body returned a failure, which its `Termination` printed.
    Returned,
}

impl FailureKind {
    const ALL: [(FailureKind, &'static str); 4] = [
        (FailureKind::Setup, "setup"),
        (FailureKind::Refused, "refused"),
        (FailureKind::TimedOut, "timed-out"),
        (FailureKind::Returned, "returned"),
    ];

    fn tag(self) -> &'static str {
        FailureKind::ALL
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("setup", |(_, tag)| tag)
    }
}

impl Ended {
    /// A failure to set up or run test `test`. A refusal becomes a skip
    /// under `NETNS_TEST_UNSUPPORTED=skip`.
    pub(crate) fn setup_failed(test: &str, error: Error) -> Ended {
        let kind = if error.is_refusal() {
            FailureKind::Refused
        } else {
            FailureKind::Setup
        };
        Ended::failed(
            kind,
            format!("netns-test: cannot set up the network namespace of test `{test}`: {error:#}"),
        )
    }

    /// A failure of `kind`; a refusal becomes a skip under
    /// `NETNS_TEST_UNSUPPORTED=skip`.
    pub(crate) fn failed(kind: FailureKind, message: String) -> Ended {
        if kind == FailureKind::Refused && crate::settings::skip_unsupported() {
            Ended::Skipped(message)
        } else {
            Ended::Failed(kind, message)
        }
    }

    /// What a body's return value means; a failing value prints its error
    /// first, as libtest would.
    pub(crate) fn of_value<T: TestReturn>(value: T) -> Ended {
        if value.report() == ExitCode::SUCCESS {
            Ended::Passed
        } else {
            Ended::Failed(
                FailureKind::Returned,
                "the test returned a failure (printed above)".to_owned(),
            )
        }
    }

    /// A panic's payload, as text.
    pub(crate) fn of_panic(payload: &(dyn Any + Send)) -> Ended {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_owned()
        };
        Ended::Panicked(text)
    }

    /// One line: a tag, a space, the text in hex.
    pub(crate) fn encode(&self) -> String {
        let (tag, text) = match self {
            Ended::Passed => ("passed", ""),
            Ended::Panicked(text) => ("panicked", text.as_str()),
            Ended::Failed(kind, text) => (kind.tag(), text.as_str()),
            Ended::Skipped(text) => ("skipped", text.as_str()),
        };
        let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{tag} {hex}")
    }

    /// The inverse of [`Ended::encode`]; `None` for a line it did not write.
    pub(crate) fn decode(line: &str) -> Option<Ended> {
        let (tag, hex) = line.split_once(' ')?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Some(match tag {
            "passed" => Ended::Passed,
            "panicked" => Ended::Panicked(text),
            "skipped" => Ended::Skipped(text),
            _ => {
                let (kind, _) = FailureKind::ALL.iter().find(|(_, t)| *t == tag)?;
                Ended::Failed(*kind, text)
            }
        })
    }
}

/// The result of running a test body in its namespace. The generated test
/// function returns `outcome.finish()`.
#[must_use]
pub struct Outcome<T> {
    test: &'static str,
    inner: Inner<T>,
}

enum Inner<T> {
    /// The body ran on the calling thread and returned this.
    Value(T),
    /// It ran elsewhere, or did not run.
    Ended(Ended),
}

impl<T: TestReturn> Outcome<T> {
    pub(crate) fn value(test: &'static str, value: T) -> Outcome<T> {
        Outcome {
            test,
            inner: Inner::Value(value),
        }
    }

    pub(crate) fn ended(test: &'static str, ended: Ended) -> Outcome<T> {
        Outcome {
            test,
            inner: Inner::Ended(ended),
        }
    }

    /// The test's value; panics (failing the test) when it did not pass,
    /// resuming the body's panic with its message.
    #[track_caller]
    pub fn finish(self) -> T {
        match self.inner {
            Inner::Value(value) => value,
            Inner::Ended(Ended::Passed) => T::passed(),
            Inner::Ended(Ended::Skipped(reason)) => {
                report_skip(self.test, &reason);
                T::passed()
            }
            Inner::Ended(Ended::Panicked(message)) => std::panic::resume_unwind(Box::new(message)),
            Inner::Ended(Ended::Failed(_, message)) => panic!("{message}"),
        }
    }
}

impl Outcome<()> {
    /// For `#[should_panic]` tests: a failure to run must not count as the
    /// expected panic, so it is printed and the test returns normally, which
    /// libtest reports as "did not panic as expected".
    pub fn finish_should_panic(self) {
        match self.inner {
            Inner::Ended(Ended::Failed(_, message)) => eprintln!(
                "{message}\n(the test expects a panic, so this failure is reported by returning without one)"
            ),
            _ => self.finish(),
        }
    }
}

/// One `skipped:` line, written to the real stderr, past libtest's capture,
/// so that it shows although the test passes.
fn report_skip(test: &str, reason: &str) {
    use std::io::Write;
    let first = reason.lines().next().unwrap_or_default();
    let _ = writeln!(std::io::stderr(), "skipped: {test} ({first})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_survives_the_trip() {
        let text = "multi\nline \u{1e} payload".to_owned();
        for ended in [
            Ended::Passed,
            Ended::Panicked(text.clone()),
            Ended::Skipped(text.clone()),
            Ended::Failed(FailureKind::Setup, text.clone()),
            Ended::Failed(FailureKind::Refused, text.clone()),
            Ended::Failed(FailureKind::TimedOut, text.clone()),
            Ended::Failed(FailureKind::Returned, text.clone()),
        ] {
            assert_eq!(Ended::decode(&ended.encode()), Some(ended));
        }
        assert_eq!(Ended::decode("passed"), None);
        assert_eq!(Ended::decode("who-knows 41"), None);
        assert_eq!(Ended::decode("panicked 4"), None);
    }
}
