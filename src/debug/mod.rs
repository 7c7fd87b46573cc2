//! Debugging aids: keeping a failed test's namespaces, capturing its
//! packets, tracing its setup and teardown.

pub(crate) mod capture;
pub(crate) mod keep;
pub(crate) mod trace;

/// `name` with every character but ASCII letters, digits, `_` and `-`
/// replaced by `_`: safe as a file name and as an `ip netns` name.
pub(crate) fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
