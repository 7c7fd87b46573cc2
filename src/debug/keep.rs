//! Keeping a failed test's namespaces for inspection, and cleaning them up.
//!
//! As root, a kept namespace is bind-mounted at `/run/netns/<test>-<inode>`,
//! as `ip netns add` names one, so `ip netns list` and `ip netns exec` see
//! it. Rootless, a holder process forked from the test thread keeps the
//! test's namespaces (see [`crate::os::holder`]). Either way a note in the
//! user's own notes directory (root: `/run/netns-test/kept`; others:
//! `$XDG_RUNTIME_DIR/netns-test/kept` or `/tmp/netns-test-<uid>/kept`, made
//! with mode 0700 and used only when it is the user's alone) tells
//! `netns-test list` and `netns-test gc` what is theirs: `gc` touches
//! nothing without such a note, and kills a holder only when it is the
//! user's process with the start time and the name the note gives. A kept
//! test's host-side veth is renamed `ntkeep<slot>` so that its slot's name
//! can be handed out again.

use crate::error::Error;
use crate::netns::NetNs;
use crate::os::holder::{FIRST_HELD_FD, Holder, process_start};
use crate::os::netlink::{self, Netlink};
use crate::os::private_dir::PrivateDir;
use crate::os::{sys, unix_time};
use crate::veth::Veth;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const NETNS_DIR: &str = "/run/netns";

/// Where `ip netns exec NAME` finds files to bind over `/etc`'s:
/// `/etc/netns/NAME/hosts` gives a kept node its own `/etc/hosts`.
const ETC_NETNS: &str = "/etc/netns";

/// A kept namespace, as `netns-test list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its name: under `/run/netns` as root, a note's name rootless.
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
        Some(node) => format!("{short}-{}-{inode}", super::file_safe(node)),
        None => format!("{short}-{inode}"),
    }
}

/// The user's notes directory, made when `create`; `None` when it is not
/// there and not to be made.
fn notes(create: bool) -> Result<Option<PrivateDir>, Error> {
    PrivateDir::for_user("kept", create)
}

/// Whose namespaces are kept.
pub(crate) struct What<'a> {
    /// The test's name (or a command's), which names the kept namespaces
    /// and shows in `netns-test list`.
    pub(crate) name: &'a str,
    /// How messages name it: "test `x`", "command `make check`".
    pub(crate) subject: &'a str,
}

/// How the messages say to remove a kept namespace.
fn remove_hint(name: &str) -> String {
    format!(
        "remove it with: netns-test gc {name}   (the netns-test command: cargo install netns-test-cli)"
    )
}

/// Keeps the test's own namespace `own` (with its veth pair) and its
/// topology `nodes`, and returns for each the lines that say how to get in.
pub(crate) fn keep(
    what: &What<'_>,
    own: &NetNs,
    veth: Option<&Veth>,
    nodes: &[(&str, &NetNs)],
) -> Vec<Result<String, Error>> {
    let mut all = vec![(None, own)];
    all.extend(nodes.iter().map(|(name, ns)| (Some(*name), *ns)));
    if crate::os::userns::rootless() {
        return match keep_rootless(what, &all) {
            Ok(messages) => messages.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
    }
    all.into_iter()
        .map(|(node, ns)| keep_as_root(what, node, ns, if node.is_none() { veth } else { None }))
        .collect()
}

/// As root: the note first, then the bind mount under `/run/netns`; a
/// failed mount takes the note back.
fn keep_as_root(
    what: &What<'_>,
    node: Option<&str>,
    ns: &NetNs,
    veth: Option<&Veth>,
) -> Result<String, Error> {
    let test = what.name;
    let name = kept_name(test, node, ns.inode());
    let source = ns.net_path();
    let target = Path::new(NETNS_DIR).join(&name);
    let veth = veth.cloned();
    let inode = ns.inode();
    // What the namespace's own /etc/hosts says (the node names), for
    // `ip netns exec`.
    let hosts = ns.run(|| std::fs::read("/etc/hosts")).ok();
    // The bind mount must be made in the host's mount namespace.
    let mut hosts_note = None;
    ns.host().run(|| -> Result<(), Error> {
        let notes = notes(true)?.expect("made when missing");
        // What gc removes of /etc/netns, said before anything is made there.
        let etc_netns = if hosts.is_some() { "hosts=1\n" } else { "" };
        if hosts.is_some() && !Path::new(ETC_NETNS).exists() {
            let _ = notes.create_file(ETC_NETNS_MADE, b"");
        }
        let note = format!(
            "test={test}\nsince={}\ninode={inode}\n{etc_netns}",
            unix_time().as_secs()
        );
        notes.create_file(&name, note.as_bytes())?;
        let mounted = std::fs::create_dir_all(NETNS_DIR)
            .map_err(|e| Error::at("create", Path::new(NETNS_DIR), e))
            .and_then(|()| {
                std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| Error::at("create", &target, e))
            })
            .and_then(|_| {
                sys::bind_mount(&source, &target).inspect_err(|_| {
                    let _ = std::fs::remove_file(&target);
                })
            });
        if let Err(error) = mounted {
            let _ = notes.remove_file(&name);
            return Err(error);
        }
        if let Some(hosts) = &hosts {
            hosts_note = Some(write_etc_netns_hosts(&name, hosts));
        }
        if let Some(veth) = &veth {
            rename_host_side(veth)?;
        }
        Ok(())
    })?;
    let hosts_line = match hosts_note {
        Some(Err(error)) => {
            format!("\n  (its /etc/hosts could not be kept for ip netns exec: {error})")
        }
        _ => String::new(),
    };
    Ok(format!(
        "netns-test: kept the network namespace of {}{} as {name}:\n  \
         ip netns exec {name} bash      (or: nsenter --net={})\n  \
         {}{hosts_line}",
        what.subject,
        node.map(|n| format!(" (node {n})")).unwrap_or_default(),
        target.display(),
        remove_hint(&name),
    ))
}

/// Writes `/etc/netns/<name>/hosts` (what `ip netns exec <name>` binds
/// over `/etc/hosts`), making `/etc/netns` when missing. Every directory on
/// the way is opened from `/` with nothing followed.
fn write_etc_netns_hosts(name: &str, hosts: &[u8]) -> Result<(), Error> {
    let dir = PrivateDir::open_trusted(Path::new(ETC_NETNS), &[name])?;
    // Read by `ip netns exec`, which runs as root: the directory's 0700 is enough.
    dir.create_file("hosts", hosts)
}

/// A file in the notes directory while `/etc/netns` is netns-test's to
/// remove (it made it), once empty.
const ETC_NETNS_MADE: &str = ".etc-netns-made";

/// Removes what [`write_etc_netns_hosts`] wrote for the note `note`, and
/// `/etc/netns` when netns-test made it and it is empty.
fn remove_etc_netns_hosts(notes: &PrivateDir, name: &str, note: &str) {
    if field(note, "hosts").is_none() {
        return;
    }
    let dir = Path::new(ETC_NETNS).join(name);
    let _ = std::fs::remove_file(dir.join("hosts"));
    let _ = std::fs::remove_dir(&dir);
    if notes.read_file(ETC_NETNS_MADE).is_some() && std::fs::remove_dir(ETC_NETNS).is_ok() {
        let _ = notes.remove_file(ETC_NETNS_MADE);
    }
}

/// Rootless: the test's namespaces live in its user namespace, which ends
/// with the test's process. One holder process, forked from the test thread
/// (so inside the test's own namespaces) and holding the nodes' by
/// descriptor, keeps them until `netns-test gc`; it stays only once every
/// note is written.
fn keep_rootless(what: &What<'_>, all: &[(Option<&str>, &NetNs)]) -> Result<Vec<String>, Error> {
    let test = what.name;
    let notes = notes(true)?.expect("made when missing");
    let cookie = cookie();
    let name = format!("ntkeep-{cookie}");
    let nodes: Vec<_> = all.iter().filter(|(node, _)| node.is_some()).collect();
    let held: Vec<_> = nodes.iter().map(|(_, ns)| ns.as_fd()).collect();
    let holder = Holder::fork(&name, &held)?;
    let pid = holder.pid();
    let start = holder.start().unwrap_or_default().to_owned();
    let mut written: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    let mut next_fd = FIRST_HELD_FD;
    for (node, ns) in all {
        let kept = kept_name(test, *node, ns.inode());
        let fd = if node.is_some() {
            next_fd += 1;
            Some(next_fd - 1)
        } else {
            None
        };
        let note = format!(
            "test={test}\nsince={}\npid={pid}\nstart={start}\nname={name}\n{}",
            unix_time().as_secs(),
            fd.map(|fd| format!("fd={fd}\n")).unwrap_or_default()
        );
        if let Err(error) = notes.create_file(&kept, note.as_bytes()) {
            // The holder ends when dropped unconfirmed.
            for kept in &written {
                let _ = notes.remove_file(kept);
            }
            return Err(error);
        }
        let enter = match fd {
            None => format!("nsenter -t {pid} -U -n -m --preserve-credentials bash"),
            Some(fd) => {
                format!("nsenter -t {pid} -U --preserve-credentials --net=/proc/{pid}/fd/{fd} bash")
            }
        };
        messages.push(format!(
            "netns-test: kept the network namespace of {}{} as {kept}, held by process {pid} (rootless):\n  \
             {enter}\n  \
             {}",
            what.subject,
            node.map(|n| format!(" (node {n})")).unwrap_or_default(),
            remove_hint(&kept),
        ));
        written.push(kept);
    }
    holder.confirm()?;
    Ok(messages)
}

/// Eight hex digits no one can guess, to name a holder.
fn cookie() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(unix_time().as_nanos());
    format!("{:08x}", hasher.finish() as u32)
}

/// Whether `pid` is the holder a note describes: a process of this user,
/// with the note's start time and name.
fn is_our_holder(pid: i32, note: &str) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let ours = std::fs::metadata(&proc).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw());
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    ours && process_start(pid).is_some_and(|start| Some(start) == field(note, "start"))
        && field(note, "name").is_some_and(|name| comm.trim_end() == name)
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

/// The namespaces this user kept: as root under `/run/netns`, rootless
/// held by holder processes.
pub fn list() -> Vec<Kept> {
    let Ok(Some(notes)) = notes(false) else {
        return Vec::new();
    };
    let mut kept: Vec<Kept> = notes
        .names()
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .filter_map(|name| {
            let note = notes.read_file(&name)?;
            Some(Kept {
                test: field(&note, "test").unwrap_or_default(),
                since: field(&note, "since")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                name,
            })
        })
        .collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept
}

/// The interfaces of a kept namespace in the order of their indexes, as
/// `netns-test list` shows them; none when this process cannot enter it
/// (a rootless one lives in its holder's user namespace).
pub fn interfaces(kept: &Kept) -> Vec<String> {
    let path = Path::new(NETNS_DIR).join(&kept.name);
    let Ok(ns) = sys::open_ns(&path) else {
        return Vec::new();
    };
    // A thread of its own, which enters the namespace and ends there.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                sys::setns(ns.as_fd(), sys::NsKind::Net).ok()?;
                sys::interface_names().ok()
            })
            .join()
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn field(note: &str, key: &str) -> Option<String> {
    note.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Removes one kept namespace of this user's: its note, and its
/// `/run/netns` entry or its holder. Returns whether there was one: nothing
/// without a note of ours is touched, and removing what is not there is not
/// an error.
pub fn remove(name: &str) -> Result<bool, Error> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::invalid_input(
            "gc",
            format!("{name:?} is not a kept namespace's name"),
        ));
    }
    let Some(notes) = notes(false)? else {
        return Ok(false);
    };
    let Some(note) = notes.read_file(name) else {
        return Ok(false);
    };
    match field(&note, "pid").and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) => {
            notes.remove_file(name)?;
            let still_needed = notes.names().iter().any(|other| {
                notes
                    .read_file(other)
                    .is_some_and(|other| field(&other, "pid") == field(&note, "pid"))
            });
            if !still_needed && is_our_holder(pid, &note) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        None => {
            unmount_kept(name, &note)?;
            remove_etc_netns_hosts(&notes, name, &note);
            notes.remove_file(name)?;
            let _ = std::fs::remove_dir(NETNS_DIR);
        }
    }
    notes.remove_if_empty();
    Ok(true)
}

/// Detaches and removes `/run/netns/<name>` when it is still the namespace
/// the note names (its inode).
fn unmount_kept(name: &str, note: &str) -> Result<(), Error> {
    let target = Path::new(NETNS_DIR).join(name);
    let inode = field(note, "inode").and_then(|i| i.parse::<u64>().ok());
    let same = std::fs::metadata(&target).is_ok_and(|m| Some(m.ino()) == inode);
    if !same {
        return Ok(());
    }
    match sys::detach_mount(&target) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EINVAL | nix::libc::ENOENT)
            ) => {}
        other => other?,
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::at("remove", &target, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::kept_name;

    #[test]
    fn kept_names_are_short_and_safe() {
        assert_eq!(kept_name("module::fails_here", None, 42), "fails_here-42");
        assert_eq!(kept_name("t::case/1", Some("r1"), 7), "case_1-r1-7");
        assert_eq!(kept_name("t::x", Some("edge/1"), 7), "x-edge_1-7");
        assert!(kept_name(&"x".repeat(100), None, 1).len() < 50);
    }
}
