//! What the process may do, and what to say when it may not: missing
//! capabilities, kernel settings that forbid user namespaces, AppArmor,
//! seccomp.

use crate::error::Error;
use crate::os::sys;
use nix::libc;

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
        Some(libc::EPERM) => match apparmor_hint() {
            Some(hint) => error.with_hint(hint).refused(),
            None => error.with_hint(permission_hint(&missing)),
        },
        Some(libc::EINVAL) | Some(libc::ENOSYS) => error
            .with_hint(
                "netns-test: this kernel does not support network or mount namespaces \
                 (CONFIG_NET_NS, CONFIG_NAMESPACES) for this process"
                    .into(),
            )
            .refused(),
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

/// Why the kernel refused a user namespace for a rootless test, and what
/// to do about it.
pub(crate) fn explain_user_namespace_refusal(error: std::io::Error) -> Error {
    explain_refusal(
        error,
        "test",
        "Or run the tests as root (`sudo -E cargo test`). NETNS_TEST_UNSUPPORTED=skip turns this failure into a skipped test.",
    )
}

/// The same for `netns-test exec`, which enters the user namespace itself.
pub(crate) fn explain_user_namespace_refusal_for_command(error: std::io::Error) -> Error {
    explain_refusal(
        error,
        "command",
        "Or run it as root (`sudo netns-test exec ...`).",
    )
}

fn explain_refusal(error: std::io::Error, subject: &str, otherwise: &str) -> Error {
    let reason = user_namespace_refusal(
        error.raw_os_error(),
        sys::read_sysctl("user/max_user_namespaces").as_deref(),
        sys::read_sysctl("kernel/unprivileged_userns_clone").as_deref(),
    );
    Error::new(format!("create a user namespace for a rootless {subject}"), error)
        .with_hint(format!(
            "netns-test: rootless mode (no CAP_SYS_ADMIN) cannot create a user namespace for this {subject}.\n{reason}\n{otherwise}"
        ))
        .refused()
}

/// The refusal's cause from the errno and the kernel's settings.
fn user_namespace_refusal(
    errno: Option<i32>,
    max_user_namespaces: Option<&str>,
    unprivileged_userns_clone: Option<&str>,
) -> &'static str {
    if max_user_namespaces == Some("0") || errno == Some(libc::ENOSPC) {
        "The kernel allows no more user namespaces here: user.max_user_namespaces is 0 or exhausted. \
         Raise it: `sudo sysctl -w user.max_user_namespaces=10000`."
    } else if unprivileged_userns_clone == Some("0") {
        "This kernel forbids unprivileged user namespaces: kernel.unprivileged_userns_clone = 0 (Debian). \
         Allow them: `sudo sysctl -w kernel.unprivileged_userns_clone=1`."
    } else if errno == Some(libc::EPERM) {
        "The kernel settings allow user namespaces, so a security policy refused the call: a seccomp filter \
         (Docker's default profile blocks unshare; run with `--security-opt seccomp=unconfined`) or an LSM."
    } else {
        "This kernel may lack user namespaces (CONFIG_USER_NS)."
    }
}

/// Inside a rootless test's user namespace, when setting up the test's
/// namespace failed for lack of privilege: the user namespace holds no
/// capabilities, which is what AppArmor does on Ubuntu 23.10+ and GitHub's
/// ubuntu-24.04 runners.
fn apparmor_hint() -> Option<String> {
    if !crate::os::userns::rootless() {
        return None;
    }
    (sys::read_sysctl("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1"))
        .then(|| {
            "netns-test: the user namespace was created but holds no capabilities: AppArmor restricts \
             unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10+ and \
             GitHub's ubuntu-24.04 runners). Allow them: `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, \
             or run the tests with sudo."
                .to_owned()
        })
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

    #[test]
    fn names_each_user_namespace_refusal() {
        let max = user_namespace_refusal(Some(libc::ENOSPC), Some("0"), None);
        assert!(max.contains("user.max_user_namespaces"), "{max}");
        let debian = user_namespace_refusal(Some(libc::EPERM), Some("1000"), Some("0"));
        assert!(
            debian.contains("kernel.unprivileged_userns_clone = 0"),
            "{debian}"
        );
        let seccomp = user_namespace_refusal(Some(libc::EPERM), Some("1000"), Some("1"));
        assert!(seccomp.contains("seccomp"), "{seccomp}");
        assert!(user_namespace_refusal(Some(libc::EINVAL), None, None).contains("CONFIG_USER_NS"));
        let error = explain_user_namespace_refusal(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(error.is_refusal());
        assert!(
            format!("{error:#}").contains("NETNS_TEST_UNSUPPORTED=skip"),
            "{error:#}"
        );
    }
}
