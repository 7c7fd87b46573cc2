//! The `netns-test` command: any command in a fresh network namespace
//! (`exec`), and the namespaces that failed tests or commands kept (`list`,
//! `gc`). Installed with `cargo install netns-test-cli`.
//!
//! ```text
//! netns-test exec -- pytest tests/integration
//! sudo netns-test exec --veth -- ./server --port 80
//! netns-test exec --timeout 30s -- ./flaky.sh
//! netns-test exec --keep failed --capture failed -- make check
//! netns-test list
//! netns-test gc [NAME]
//! ```
//!
//! The work is the library's (`netns_test::admin`); this file is the
//! command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

mod duration;

const ABOUT: &str = "Every test, or any command, in its own Linux network namespace";

const EXAMPLES: &str = "\
Examples:
  netns-test exec -- pytest tests/integration        # port 80 is free, the host's network is out of reach
  sudo netns-test exec --veth -- ./server --port 80  # plus a veth pair to the host
  netns-test exec --timeout 30s -- ./flaky.sh        # stop it and all it started after 30 s (exit 124)
  netns-test list                                    # what failed tests and commands kept
  netns-test gc                                      # remove it all

See `netns-test exec --help` for what the command sees.";

const EXEC_ABOUT: &str = "Run a command in a fresh network namespace";

const EXEC_LONG_ABOUT: &str = "\
Run a command in a fresh network namespace, set up as a #[netns_test] test's is:
`lo` up (127.0.0.1/8 and ::1) and no other interface, so every port is free and
the host's network is out of reach; a private /etc/hosts and /sys; /proc/net
showing the namespace; a /run/netns of its own (`ip netns add` works inside);
IPv6 duplicate address detection off. The command also gets a pid namespace of
its own, with its own /proc, where its pid is random (not 2 in every run): when
it ends, everything it started ends with it, and nothing is left behind, even
when netns-test itself is killed. Unix sockets on the file system and AF_VSOCK
are not isolated by a network namespace.

Standard input, output and error are the command's. SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1 and SIGUSR2 sent to netns-test are passed on to the command
(what the terminal sends reaches it directly).

Without CAP_SYS_ADMIN it runs rootless, in a user namespace of its own where the
command is uid 0 (mapped to you), as rootless tests do; --veth needs root.";

const EXEC_AFTER: &str = "\
With --veth the command's environment has NETNS_TEST_VETH (the interface inside),
NETNS_TEST_NS_IPV4 and NETNS_TEST_HOST_IPV4, and, unless the host has IPv6
disabled, NETNS_TEST_NS_IPV6 and NETNS_TEST_HOST_IPV6.

Without --keep or --capture, NETNS_TEST_KEEP and NETNS_TEST_CAPTURE apply, as for
tests. Kept namespaces: `netns-test list`, `netns-test gc`.

Exit status:
  the command's  its exit code, or 128+N when signal N ended it
  124            --timeout ran out
  125            netns-test failed (the namespace could not be set up)
  126            the command could not be run
  127            the command was not found

Examples:
  netns-test exec -- pytest tests/integration
  sudo netns-test exec --veth -- ./server --port 80
  sudo netns-test exec --veth -- sh -c 'curl http://$NETNS_TEST_HOST_IPV4:8080/'
  netns-test exec --timeout 30s -- ./flaky.sh
  netns-test exec --keep failed --capture failed -- make check
  netns-test exec -- bash                           # look around";

#[derive(Parser, Debug)]
#[command(name = "netns-test", version, about = ABOUT, after_help = EXAMPLES)]
#[command(propagate_version = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(about = EXEC_ABOUT, long_about = EXEC_LONG_ABOUT, after_long_help = EXEC_AFTER)]
    #[command(
        after_help = "Exit status: the command's; 124 timed out; 125 netns-test failed; 126 cannot run; 127 not found. More with --help."
    )]
    Exec(ExecArgs),
    /// Show the namespaces that failed tests and commands kept
    #[command(
        long_about = "Show the namespaces that failed tests and commands kept (NETNS_TEST_KEEP, \
                      #[netns_test(keep = ..)], `netns-test exec --keep`): name, age, test or command, and \
                      interfaces."
    )]
    List,
    /// Remove kept namespaces (all of them, or NAME) and stale host-side veths
    #[command(
        long_about = "Remove the namespaces that failed tests and commands kept: all of them, or the one \
                      called NAME. Without NAME, as root, also remove host-side veths (ntveth<N>) whose \
                      test died while something held its namespace. Only what this user's notes name is \
                      touched; safe while tests run."
    )]
    Gc {
        /// The kept namespace to remove, as `netns-test list` shows it
        name: Option<String>,
    },
}

/// Which runs keep their namespace or their capture.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum When {
    /// When the command exits non-zero, is killed or times out
    Failed,
    /// Always
    All,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Add a veth pair to the host, its addresses in the environment (needs root)
    #[arg(long)]
    veth: bool,

    /// Stop the command and everything it started after DURATION (30s, 1m30s, 500ms, 2h; 0: no limit), exit 124
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    timeout: Option<Duration>,

    /// After --timeout's SIGTERM, send SIGKILL this much later (0: SIGKILL at once)
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = duration::parse,
        default_value = "2s",
        requires = "timeout"
    )]
    kill_after: Duration,

    /// Keep the namespace for a look inside (`ip netns exec`, `nsenter`); `netns-test gc` removes it
    #[arg(long, value_name = "WHEN", value_enum)]
    keep: Option<When>,

    /// Record every packet to <target>/netns-test/exec-<command>-<pid>/test.pcap, the target directory
    /// being CARGO_TARGET_DIR, else the workspace's (kept when WHEN applies)
    #[arg(long, value_name = "WHEN", value_enum)]
    capture: Option<When>,

    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli)
}

#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Exec(args) => linux::exec(args),
        Command::List => linux::report(linux::list()),
        Command::Gc { name } => linux::report(linux::gc(name.as_deref())),
    }
}

/// Other platforms (and Linux built with `--cfg netns_test_unsupported_platform`).
#[cfg(not(all(target_os = "linux", not(netns_test_unsupported_platform))))]
fn run(cli: Cli) -> ExitCode {
    let _ = cli;
    let platform = if cfg!(target_os = "linux") {
        "linux built with --cfg netns_test_unsupported_platform"
    } else {
        std::env::consts::OS
    };
    eprintln!("netns-test: network namespaces need Linux, and this is {platform}");
    ExitCode::FAILURE
}

#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod linux {
    use super::{ExecArgs, When};
    use netns_test::admin::{self, ExecEnd, ExecOptions, Policy};
    use std::process::ExitCode;

    /// Exit status when netns-test itself fails, as timeout(1) has it.
    const OWN_FAILURE: u8 = 125;

    fn policy(when: Option<When>) -> Option<Policy> {
        when.map(|w| match w {
            When::Failed => Policy::Failed,
            When::All => Policy::All,
        })
    }

    pub(crate) fn exec(args: ExecArgs) -> ExitCode {
        let options = ExecOptions {
            command: args.command,
            veth: args.veth,
            timeout: args.timeout,
            kill_after: args.kill_after,
            keep: policy(args.keep),
            capture: policy(args.capture),
        };
        match admin::exec(options) {
            Ok(end) => {
                if let ExecEnd::NotStarted { message, .. } = &end {
                    eprintln!("{message}");
                }
                ExitCode::from(end.exit_code())
            }
            Err(error) => {
                eprintln!("netns-test: {error:#}");
                ExitCode::from(OWN_FAILURE)
            }
        }
    }

    pub(crate) fn report(result: Result<(), String>) -> ExitCode {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("netns-test: {message}");
                ExitCode::FAILURE
            }
        }
    }

    pub(crate) fn list() -> Result<(), String> {
        let kept = admin::kept();
        if kept.is_empty() {
            println!("no kept namespaces");
            return Ok(());
        }
        let rows: Vec<[String; 4]> = kept
            .iter()
            .map(|k| {
                [
                    k.name.clone(),
                    format!("{}s", k.age_secs()),
                    k.test.clone(),
                    admin::interfaces(k).join(","),
                ]
            })
            .collect();
        for line in super::table(&rows) {
            println!("{line}");
        }
        Ok(())
    }

    pub(crate) fn gc(name: Option<&str>) -> Result<(), String> {
        let names: Vec<String> = match name {
            Some(name) => vec![name.to_owned()],
            None => admin::kept().into_iter().map(|k| k.name).collect(),
        };
        for name in &names {
            if admin::remove_kept(name).map_err(|e| e.to_string())? {
                println!("removed {name}");
            } else {
                println!("{name}: no namespace of yours is kept under this name");
            }
        }
        // Host-side veths exist only for root's tests, and only root removes them.
        if name.is_none() && admin::removes_host_veths() {
            for veth in admin::remove_stale_veths().map_err(|e| e.to_string())? {
                println!("removed stale host-side veth {veth}");
            }
        }
        Ok(())
    }
}

/// `netns-test list`'s lines: a header and one line per kept namespace
/// (name, age, test, interfaces), each column as wide as its widest cell,
/// the age right-aligned.
#[cfg_attr(
    not(all(target_os = "linux", not(netns_test_unsupported_platform))),
    allow(dead_code)
)]
fn table(rows: &[[String; 4]]) -> Vec<String> {
    let header = ["NAME", "AGE", "TEST", "INTERFACES"].map(str::to_owned);
    let width = |column: usize| {
        std::iter::once(&header)
            .chain(rows)
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name, age, test) = (width(0), width(1), width(2));
    std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            format!(
                "{:<name$}  {:>age$}  {:<test$}  {}",
                row[0], row[1], row[2], row[3]
            )
            .trim_end()
            .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn list_columns_line_up_whatever_the_lengths() {
        let row =
            |name: &str, age: &str, test: &str| [name, age, test, "lo,eth0"].map(str::to_owned);
        let long = "a_test_name_well_over_forty_characters_long-node-4026532384";
        let lines = table(&[
            row("short-1", "5s", "t::short"),
            row(
                long,
                "12345s",
                "module::a_test_name_well_over_forty_characters_long",
            ),
        ]);
        // Every column starts where the header's does.
        let starts = |line: &str, cells: &[&str]| -> Vec<usize> {
            cells
                .iter()
                .map(|c| line.find(c).unwrap() + c.len())
                .collect()
        };
        let header = starts(&lines[0], &["NAME", "AGE", "TEST"]);
        assert_eq!(
            starts(&lines[1], &["short-1", "5s"])[1],
            header[1],
            "{lines:#?}"
        );
        assert_eq!(
            starts(&lines[2], &[long, "12345s"])[1],
            header[1],
            "{lines:#?}"
        );
        let test_column = |line: &str, test: &str| line.find(test).unwrap();
        assert_eq!(
            test_column(&lines[1], "t::short"),
            lines[0].find("TEST").unwrap()
        );
        assert_eq!(
            test_column(&lines[2], "module::"),
            lines[0].find("TEST").unwrap(),
            "{lines:#?}"
        );
        assert_eq!(
            lines[1].find("lo,eth0"),
            lines[2].find("lo,eth0"),
            "{lines:#?}"
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_command_after_its_options() {
        let cli = Cli::try_parse_from([
            "netns-test",
            "exec",
            "--veth",
            "--timeout",
            "1m30s",
            "--keep",
            "failed",
            "--",
            "make",
            "-j2",
            "--keep",
        ])
        .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert!(args.veth);
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
        assert!(matches!(args.keep, Some(When::Failed)));
        assert_eq!(args.command, ["make", "-j2", "--keep"]);
        // Without `--`, the command starts at the first word that is not an option.
        let cli = Cli::try_parse_from(["netns-test", "exec", "sh", "-c", "true"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.command, ["sh", "-c", "true"]);
        assert!(Cli::try_parse_from(["netns-test", "exec"]).is_err());
        assert!(
            Cli::try_parse_from(["netns-test", "exec", "--keep", "sometimes", "true"]).is_err()
        );
        assert!(Cli::try_parse_from(["netns-test", "exec", "--kill-after", "1s", "true"]).is_err());
    }
}
