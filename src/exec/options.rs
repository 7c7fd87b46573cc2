//! What `netns-test exec` is asked to do, and how the command ended.

use std::ffi::OsString;
use std::time::Duration;

pub use crate::settings::Policy;

/// What `netns-test exec` was asked to do.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// A veth pair to the host, its addresses in the command's environment.
    pub veth: bool,
    /// Stop the command and everything it started after this long (zero:
    /// no limit, as `timeout 0` has it).
    pub timeout: Option<Duration>,
    /// After the timeout's SIGTERM, SIGKILL this much later (zero: SIGKILL
    /// at once).
    pub kill_after: Duration,
    /// Keep the namespace (`None`: as `NETNS_TEST_KEEP` says).
    pub keep: Option<Policy>,
    /// Capture its packets (`None`: as `NETNS_TEST_CAPTURE` says).
    pub capture: Option<Policy>,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEnd {
    /// With this status: its exit code, or 128 + N when signal N ended it.
    Exited(u8),
    /// Its time was up; it and everything it started were stopped.
    TimedOut,
    /// It could not be started: `code` is 127 when the program was not
    /// found, 126 when it could not be run, as a shell has it.
    NotStarted {
        /// 126 or 127.
        code: u8,
        /// What went wrong.
        message: String,
    },
}

impl ExecEnd {
    /// The exit code that passes the end on: the command's own, 124 for a
    /// timeout (as timeout(1)), 126 or 127 when it could not be started.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecEnd::Exited(code) => *code,
            ExecEnd::TimedOut => 124,
            ExecEnd::NotStarted { code, .. } => *code,
        }
    }
}
