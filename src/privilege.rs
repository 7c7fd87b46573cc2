//! What the process may do, and what to say when it may not.

use crate::error::Error;
use crate::sys;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Whether the calling thread has CAP_SYS_ADMIN and CAP_NET_ADMIN, which
/// creating and setting up a namespace takes.
///
/// ```
/// if !netns_test::privileged() {
///     eprintln!("skipped: needs CAP_SYS_ADMIN and CAP_NET_ADMIN");
/// }
/// ```
pub fn privileged() -> bool {
    missing_capabilities(sys::effective_capabilities()).is_empty()
}

fn missing_capabilities(effective: Option<u64>) -> Vec<&'static str> {
    let Some(effective) = effective else {
        return vec!["CAP_SYS_ADMIN", "CAP_NET_ADMIN"];
    };
    [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1u64 << bit) == 0)
    .map(|(_, name)| name)
    .collect()
}

/// Adds to a failed `unshare` what is missing and how to get it.
pub(crate) fn explain_unshare(error: Error) -> Error {
    let missing = missing_capabilities(sys::effective_capabilities());
    match error.raw_os_error() {
        Some(nix::libc::EPERM) => {
            let hint =
                crate::rootless::apparmor_hint().unwrap_or_else(|| permission_hint(&missing));
            error.with_hint(hint)
        }
        Some(nix::libc::EINVAL) | Some(nix::libc::ENOSYS) => error.with_hint(
            "netns-test: this kernel does not support network or mount namespaces \
             (CONFIG_NET_NS, CONFIG_NAMESPACES) for this process"
                .into(),
        ),
        _ => error,
    }
}

fn permission_hint(missing: &[&str]) -> String {
    let what = if missing.is_empty() {
        "the process has CAP_SYS_ADMIN and CAP_NET_ADMIN, so a security policy (a seccomp filter \
         such as Docker's default profile, or an LSM) refused it"
            .to_owned()
    } else {
        format!(
            "creating a network namespace needs CAP_SYS_ADMIN and CAP_NET_ADMIN, and this process lacks {} (uid {})",
            missing.join(" and "),
            nix::unistd::geteuid()
        )
    };
    format!(
        "netns-test: {what}.\n\
         To fix it, either:\n\
         - run the tests as root: `sudo -E cargo test`, or set a runner once: \
         `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER='sudo -E' cargo test`;\n\
         - give the test binary the capabilities: `sudo setcap cap_sys_admin,cap_net_admin+ep target/debug/deps/<test binary>`;\n\
         - in a container, run it with `--cap-add SYS_ADMIN --cap-add NET_ADMIN` and a seccomp profile that allows unshare (`--security-opt seccomp=unconfined`).\n\
         Without root, netns-test runs each test in a user namespace (NETNS_TEST_MODE=rootless)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_capability() {
        assert_eq!(missing_capabilities(Some(u64::MAX)), Vec::<&str>::new());
        assert_eq!(
            missing_capabilities(Some(0)),
            ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
        );
        assert_eq!(
            missing_capabilities(Some(1 << CAP_SYS_ADMIN)),
            ["CAP_NET_ADMIN"]
        );
        let hint = permission_hint(&["CAP_SYS_ADMIN"]);
        assert!(hint.contains("lacks CAP_SYS_ADMIN"), "{hint}");
        assert!(hint.contains("sudo -E cargo test"), "{hint}");
        assert!(permission_hint(&[]).contains("seccomp"));
    }
}
