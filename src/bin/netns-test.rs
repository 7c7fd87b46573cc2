//! `netns-test list` and `netns-test gc [NAME]`: the namespaces that failed
//! tests kept (`NETNS_TEST_KEEP`, `#[netns_test(keep = ..)]`), and cleaning
//! them up along with stale host-side veth pairs.
//!
//! ```text
//! cargo run --bin netns-test -- list
//! cargo run --bin netns-test -- gc            # everything kept, and stale veths
//! cargo run --bin netns-test -- gc NAME       # one kept namespace
//! ```

#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
fn main() -> std::process::ExitCode {
    linux::main()
}

/// Other platforms (and Linux built with `--cfg netns_test_unsupported_platform`).
#[cfg(not(all(target_os = "linux", not(netns_test_unsupported_platform))))]
fn main() -> std::process::ExitCode {
    let platform = if cfg!(target_os = "linux") {
        "linux built with --cfg netns_test_unsupported_platform"
    } else {
        std::env::consts::OS
    };
    eprintln!("netns-test: network namespaces need Linux, and this is {platform}");
    std::process::ExitCode::FAILURE
}

#[cfg(all(target_os = "linux", not(netns_test_unsupported_platform)))]
mod linux {
    use netns_test::admin::{kept as kept_list, remove_kept, remove_stale_veths};
    use std::process::ExitCode;

    const USAGE: &str = "usage: netns-test list | gc [NAME]";

    pub(crate) fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let result = match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["list"] => list(),
            ["gc"] => gc(None),
            ["gc", name] => gc(Some(name)),
            ["-h" | "--help" | "help"] => {
                println!("{USAGE}");
                Ok(())
            }
            _ => Err(USAGE.to_owned()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("netns-test: {message}");
                ExitCode::FAILURE
            }
        }
    }

    fn list() -> Result<(), String> {
        let kept = kept_list();
        if kept.is_empty() {
            println!("no kept namespaces");
            return Ok(());
        }
        println!("{:<40} {:>8}  {:<40} interfaces", "NAME", "AGE", "TEST");
        for k in kept {
            let interfaces = std::process::Command::new("ip")
                .args(["-n", &k.name, "-o", "link", "show"])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter_map(|l| {
                            l.split(": ")
                                .nth(1)
                                .map(|n| n.split('@').next().unwrap_or(n).to_owned())
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            println!(
                "{:<40} {:>7}s  {:<40} {interfaces}",
                k.name,
                k.age_secs(),
                k.test
            );
        }
        Ok(())
    }

    fn gc(name: Option<&str>) -> Result<(), String> {
        let names: Vec<String> = match name {
            Some(name) => vec![name.to_owned()],
            None => kept_list().into_iter().map(|k| k.name).collect(),
        };
        for name in &names {
            if remove_kept(name).map_err(|e| e.to_string())? {
                println!("removed {name}");
            } else {
                println!("{name}: no namespace of yours is kept under this name");
            }
        }
        // Host-side veths exist only for root's tests, and only root removes them.
        if name.is_none() && nix::unistd::geteuid().is_root() {
            for veth in remove_stale_veths().map_err(|e| e.to_string())? {
                println!("removed stale host-side veth {veth}");
            }
        }
        Ok(())
    }
}
