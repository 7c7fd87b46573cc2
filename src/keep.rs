//! Keeping a failed test's namespaces for inspection, and cleaning them up.
//!
//! A kept namespace is bind-mounted at `/run/netns/<test>-<inode>`, as
//! `ip netns add` names one, so `ip netns list` and `ip netns exec` see it,
//! with a note in `/run/netns-test/kept/<name>` (test and time) that tells
//! `netns-test list` and `netns-test gc` which entries are ours. A kept
//! test's host-side veth is renamed `ntkeep<slot>` so that its slot's name
//! can be handed out again.

use crate::error::Error;
use crate::namespace::NetNs;
use crate::netlink::{self, Netlink};
use crate::veth::Veth;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const NETNS_DIR: &str = "/run/netns";
const NOTES_DIR: &str = "/run/netns-test/kept";

/// A kept namespace, as `netns-test list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its name under `/run/netns`.
    pub name: String,
    /// The test it comes from.
    pub test: String,
    /// When it was kept, in seconds since the epoch.
    pub since: u64,
}

/// The name a namespace of `test` is kept under.
fn kept_name(test: &str, node: Option<&str>, inode: u64) -> String {
    let short: String = test
        .rsplit("::")
        .next()
        .unwrap_or(test)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    match node {
        Some(node) => format!("{short}-{node}-{inode}"),
        None => format!("{short}-{inode}"),
    }
}

/// Keeps `ns` (the test's own namespace, or a topology `node` of it) and
/// returns the lines that say how to get in.
pub(crate) fn keep(
    ns: &NetNs,
    test: &str,
    node: Option<&str>,
    veth: Option<&Veth>,
) -> Result<String, Error> {
    if crate::rootless::is_child() {
        return Err(Error::new(
            "keep the namespace",
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "keeping namespaces needs root (a rootless test's namespaces belong to its user namespace, which ends with it)",
            ),
        ));
    }
    let name = kept_name(test, node, ns.inode());
    let source = ns.path();
    let note = format!(
        "test={test}\nsince={}\n",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let target = Path::new(NETNS_DIR).join(&name);
    let veth = veth.cloned();
    // The bind mount must be made in the host's mount namespace.
    ns.host().run(|| -> Result<(), Error> {
        std::fs::create_dir_all(NETNS_DIR)
            .map_err(|e| Error::at("create", Path::new(NETNS_DIR), e))?;
        std::fs::create_dir_all(NOTES_DIR)
            .map_err(|e| Error::at("create", Path::new(NOTES_DIR), e))?;
        std::fs::File::create(&target).map_err(|e| Error::at("create", &target, e))?;
        if let Err(error) = crate::sys::bind_mount(&source, &target) {
            let _ = std::fs::remove_file(&target);
            return Err(error);
        }
        let note_path = Path::new(NOTES_DIR).join(&name);
        std::fs::write(&note_path, note).map_err(|e| Error::at("write", &note_path, e))?;
        if let Some(veth) = &veth {
            rename_host_side(veth)?;
        }
        Ok(())
    })?;
    Ok(format!(
        "netns-test: kept the network namespace of test `{test}`{} as {name}:\n  \
         ip netns exec {name} bash      (or: nsenter --net={})\n  \
         remove it with: netns-test gc {name}   (cargo run --bin netns-test -- gc {name})",
        node.map(|n| format!(" (node {n})")).unwrap_or_default(),
        target.display()
    ))
}

/// `ntveth<slot>` becomes `ntkeep<slot>`, so that the slot's name is free.
fn rename_host_side(veth: &Veth) -> Result<(), Error> {
    let kept = veth
        .host_name()
        .replacen(crate::veth::HOST_NAME_PREFIX, "ntkeep", 1);
    let index = veth.host_index();
    Netlink::open()?.run(vec![
        netlink::set_down(index, veth.host_name()),
        netlink::rename(index, veth.host_name(), &kept),
        netlink::set_up(index, &kept),
    ])
}

/// The namespaces netns-test kept.
pub fn list() -> Vec<Kept> {
    let Ok(entries) = std::fs::read_dir(NOTES_DIR) else {
        return Vec::new();
    };
    let mut kept: Vec<Kept> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let note = std::fs::read_to_string(entry.path()).ok()?;
            let field = |key: &str| {
                note.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            Some(Kept {
                name,
                test: field("test").unwrap_or_default(),
                since: field("since").and_then(|s| s.parse().ok()).unwrap_or(0),
            })
        })
        .collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept
}

/// Removes one kept namespace (its bind mount, `/run/netns` entry and note).
/// Removing one that is not there is not an error.
pub fn remove(name: &str) -> Result<(), Error> {
    if name.contains('/') || name.starts_with('.') {
        return Err(Error::new(
            "gc",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is not a kept namespace's name"),
            ),
        ));
    }
    let target: PathBuf = Path::new(NETNS_DIR).join(name);
    match crate::sys::detach_mount(&target) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EINVAL | nix::libc::ENOENT)
            ) => {}
        other => other?,
    }
    for path in [target, Path::new(NOTES_DIR).join(name)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::at("remove", &path, e));
            }
            _ => {}
        }
    }
    // The directories go when empty (remove_dir refuses otherwise).
    for dir in [NOTES_DIR, "/run/netns-test", NETNS_DIR] {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::kept_name;

    #[test]
    fn kept_names_are_short_and_safe() {
        assert_eq!(kept_name("module::fails_here", None, 42), "fails_here-42");
        assert_eq!(kept_name("t::case/1", Some("r1"), 7), "case_1-r1-7");
        assert!(kept_name(&"x".repeat(100), None, 1).len() < 50);
    }
}
