//! Keeping a failed test's namespaces for inspection, and cleaning them up.
//!
//! A kept namespace is bind-mounted at `/run/netns/<test>-<inode>`, as
//! `ip netns add` names one, so `ip netns list` and `ip netns exec` see it,
//! with a note in `/run/netns-test/kept/<name>` (test and time) that tells
//! `netns-test list` and `netns-test gc` which entries are ours. A kept
//! test's host-side veth is renamed `ntkeep<slot>` so that its slot's name
//! can be handed out again.

use crate::error::Error;
use crate::netns::NetNs;
use crate::os::netlink::{self, Netlink};
use crate::os::{sys, unix_time};
use crate::settings;
use crate::veth::Veth;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

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

impl Kept {
    /// How long ago it was kept, in seconds.
    pub fn age_secs(&self) -> u64 {
        unix_time().as_secs().saturating_sub(self.since)
    }
}

/// The name a namespace of `test` is kept under.
fn kept_name(test: &str, node: Option<&str>, inode: u64) -> String {
    let last = test.rsplit("::").next().unwrap_or(test);
    let short: String = super::file_safe(last).chars().take(40).collect();
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
    let name = kept_name(test, node, ns.inode());
    if settings::in_rootless_child() {
        return keep_rootless(ns, test, node, &name);
    }
    let source = ns.net_path();
    let note = format!("test={test}\nsince={}\n", unix_time().as_secs());
    let target = Path::new(NETNS_DIR).join(&name);
    let veth = veth.cloned();
    // The bind mount must be made in the host's mount namespace.
    ns.host().run(|| -> Result<(), Error> {
        std::fs::create_dir_all(NETNS_DIR)
            .map_err(|e| Error::at("create", Path::new(NETNS_DIR), e))?;
        std::fs::create_dir_all(NOTES_DIR)
            .map_err(|e| Error::at("create", Path::new(NOTES_DIR), e))?;
        std::fs::File::create(&target).map_err(|e| Error::at("create", &target, e))?;
        if let Err(error) = sys::bind_mount(&source, &target) {
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

/// Rootless: the test's namespaces live in its user namespace, which ends
/// with the test's process; a holder process forked from the test thread
/// (so inside all of them, holding every descriptor) keeps them alive until
/// `netns-test gc`. One holder per test process.
fn keep_rootless(ns: &NetNs, test: &str, node: Option<&str>, name: &str) -> Result<String, Error> {
    let holder = holder_pid()?;
    let dir = user_notes_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::at("create", &dir, e))?;
    let fd = ns.as_fd().as_raw_fd();
    let note = format!(
        "test={test}\nsince={}\npid={holder}\nstart={}\nfd={fd}\n",
        unix_time().as_secs(),
        process_start(holder).unwrap_or_default()
    );
    let note_path = dir.join(name);
    std::fs::write(&note_path, note).map_err(|e| Error::at("write", &note_path, e))?;
    let enter = match node {
        None => format!("nsenter -t {holder} -U -n -m --preserve-credentials bash"),
        Some(_) => format!(
            "nsenter -t {holder} -U --preserve-credentials --net=/proc/{holder}/fd/{fd} bash"
        ),
    };
    Ok(format!(
        "netns-test: kept the network namespace of test `{test}`{} as {name}, held by process {holder} (rootless):\n  \
         {enter}\n  \
         remove it with: netns-test gc {name}   (cargo run --bin netns-test -- gc {name})",
        node.map(|n| format!(" (node {n})")).unwrap_or_default(),
    ))
}

/// The holder process of this (rootless test) process, forked on first use
/// from the calling thread, which is in the test's namespaces.
fn holder_pid() -> Result<i32, Error> {
    static HOLDER: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    if let Some(pid) = HOLDER.get() {
        return Ok(*pid);
    }
    // SAFETY: the child makes async-signal-safe calls only (setsid, open,
    // dup2, pause) and never returns into Rust code.
    let pid = unsafe { nix::libc::fork() };
    if pid < 0 {
        return Err(Error::new(
            "fork a holder process",
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // SAFETY: see above; the parent's pipes (its stdout and stderr) are
        // let go so that whoever reads them sees their end.
        unsafe {
            nix::libc::setsid();
            let null = nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDWR);
            for fd in 0..3 {
                nix::libc::dup2(null, fd);
            }
            loop {
                nix::libc::pause();
            }
        }
    }
    let _ = HOLDER.set(pid);
    Ok(pid)
}

/// A process's start time (field 22 of /proc/PID/stat), to tell it from a
/// later process with the same id.
fn process_start(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19).map(str::to_owned)
}

/// Where rootless notes go: `$XDG_RUNTIME_DIR/netns-test/kept`, else
/// `/tmp/netns-test-<uid>/kept`.
fn user_notes_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => Path::new(&dir).join("netns-test/kept"),
        None => PathBuf::from(format!("/tmp/netns-test-{}/kept", outside_uid())),
    }
}

/// The user's id outside any user namespace this process is in (a rootless
/// test is uid 0 inside its own): from `/proc/self/uid_map`.
fn outside_uid() -> u32 {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let fields: Vec<u32> = map
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect();
    match fields.as_slice() {
        // A rootless test's map: uid 0 inside is the one user outside. (The
        // initial namespace's map is "0 0 4294967295".)
        [0, outside, 1] => *outside,
        _ => nix::unistd::getuid().as_raw(),
    }
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

/// The namespaces netns-test kept: as root under `/run/netns`, and this
/// user's rootless ones held by holder processes.
pub fn list() -> Vec<Kept> {
    let mut kept: Vec<Kept> = notes()
        .into_iter()
        .map(|(name, _, note)| Kept {
            name,
            test: field(&note, "test").unwrap_or_default(),
            since: field(&note, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        })
        .collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept
}

fn field(note: &str, key: &str) -> Option<String> {
    note.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Every note: name, path, contents.
fn notes() -> Vec<(String, PathBuf, String)> {
    let mut notes = Vec::new();
    for dir in [PathBuf::from(NOTES_DIR), user_notes_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Ok(note) = std::fs::read_to_string(entry.path()) {
                notes.push((name, entry.path(), note));
            }
        }
    }
    notes
}

/// Removes one kept namespace (its bind mount, `/run/netns` entry and note).
/// Removing one that is not there is not an error.
pub fn remove(name: &str) -> Result<(), Error> {
    if name.contains('/') || name.starts_with('.') {
        return Err(Error::invalid_input(
            "gc",
            format!("{name:?} is not a kept namespace's name"),
        ));
    }
    if let Some((_, path, note)) = notes()
        .into_iter()
        .find(|(n, _, note)| n == name && field(note, "pid").is_some())
    {
        return remove_held(&path, &note);
    }
    let target: PathBuf = Path::new(NETNS_DIR).join(name);
    match sys::detach_mount(&target) {
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

/// Removes a rootless note, and ends its holder once no other note needs it.
fn remove_held(path: &Path, note: &str) -> Result<(), Error> {
    std::fs::remove_file(path).map_err(|e| Error::at("remove", path, e))?;
    let pid = field(note, "pid").and_then(|p| p.parse::<i32>().ok());
    let still_needed = notes()
        .iter()
        .any(|(_, _, other)| field(other, "pid").and_then(|p| p.parse().ok()) == pid);
    if let (Some(pid), false) = (pid, still_needed) {
        // Only the same process: its start time matches the note's.
        if process_start(pid).is_some() && process_start(pid) == field(note, "start") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
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
