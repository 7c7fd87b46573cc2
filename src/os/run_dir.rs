//! A `/run/netns` of each namespace's own, where `ip netns add` writes its
//! mount points, also on a host that has no `/run/netns` directory (and
//! must not get one).
//!
//! A mount needs a directory to mount on. Where the host has `/run/netns`
//! (and `/var/run/netns`, where that is not the same directory), each
//! namespace mounts a tmpfs of its own over it ([`super::mounts`]). Where it
//! does not, new namespaces are copied from a **template**: a mount
//! namespace made once per process (a process that runs one test, as
//! cargo-nextest starts them, covers its test's run directories itself),
//! whose `/run` is a tmpfs that shows what
//! the host's `/run` holds (each entry bind-mounted from the original, with
//! everything mounted below it; symbolic links copied) plus an empty
//! `netns` directory. Nothing is created on the host: the tmpfs and the
//! bind mounts exist in the template's mount namespace only.
//!
//! What a namespace copied from the template sees of `/run` is the host's,
//! live below the first level (`/run/user/1000/...` is the host's
//! directory). The first level is the one the template was made from: the
//! template is made again when an entry comes or goes there (the
//! directory's modification and change times) or when the host's mount
//! table changes (a `poll` on `/proc/self/mountinfo`), so a namespace made
//! afterwards sees the host as it is. A file a test creates at the first
//! level of `/run` lands in the template's tmpfs, never on the host.
//!
//! A process that is pid 1 of a pid namespace of its own (a rootless
//! test's runner, see [`super::contain`]) always copies its tests' views
//! from a template, which also has a procfs of that namespace on `/proc`:
//! the ids a test and its children know themselves by are then the ones
//! `/proc` shows, at no cost per test. A runner makes it once, before its
//! first test, as a copy of the template its fork server made ahead.

use crate::error::Error;
use crate::os::sys::{self, NsKind};
use crate::os::{contain, mounts, privilege};
use crate::settings;
use nix::mount::MsFlags;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The directories whose `netns` entry `ip netns` uses (iproute2 opens
/// `/var/run/netns`): `/run`, and `/var/run` when it is a directory of its
/// own rather than a link to `/run`. Read once per process.
pub(crate) fn run_dirs() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let run = std::fs::canonicalize("/run").ok();
        let var_run = std::fs::canonicalize("/var/run").ok();
        let mut dirs: Vec<PathBuf> = Vec::new();
        if run.as_deref().is_some_and(Path::is_dir) {
            dirs.push(PathBuf::from("/run"));
        }
        if var_run.as_deref().is_some_and(Path::is_dir) && var_run != run {
            dirs.push(PathBuf::from("/var/run"));
        }
        dirs
    })
}

/// `<run dir>/netns`.
pub(crate) fn netns_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("netns")
}

/// A mount namespace to copy new private views from: the host's, with a
/// `netns` directory in each run directory.
pub(crate) struct Template {
    mnt: OwnedFd,
}

impl Template {
    /// Moves the calling thread into the template's mount namespace, from
    /// which it then unshares its own; returns what [`Template::restore_cwd`]
    /// needs to put the thread back in its working directory.
    pub(crate) fn enter(&self) -> Result<WorkingDirectory, Error> {
        // setns(CLONE_NEWNS) needs a file system context of the thread's own.
        sys::unshare(nix::sched::CloneFlags::CLONE_FS, "unshare(CLONE_FS)")?;
        let cwd = WorkingDirectory::here()?;
        sys::setns(self.mnt.as_fd(), NsKind::Mount)?;
        Ok(cwd)
    }
}

/// The working directory a thread had before it entered the template, whose
/// mount namespace moved it to `/`: the same path in the copy it unshared.
pub(crate) enum WorkingDirectory {
    Path(PathBuf),
    /// A directory that has no path any more (removed): its descriptor.
    Removed(OwnedFd),
}

impl WorkingDirectory {
    fn here() -> Result<WorkingDirectory, Error> {
        match std::env::current_dir() {
            Ok(path) => Ok(WorkingDirectory::Path(path)),
            Err(_) => sys::open_path(Path::new("."), true).map(WorkingDirectory::Removed),
        }
    }

    /// Goes back there, in the calling thread's (new) mount namespace.
    pub(crate) fn restore(self) -> Result<(), Error> {
        match self {
            WorkingDirectory::Path(path) => sys::chdir(&path),
            WorkingDirectory::Removed(fd) => sys::fchdir(fd.as_fd()),
        }
    }
}

/// The template when the calling thread's view lacks a `netns` directory in
/// a run directory (the host's, here), or, in a process that is pid 1 of a
/// pid namespace of its own ([`contain`]), a `/proc` of that namespace;
/// made or made again when the host changed. `None` when the view has
/// them all (the host has them and the process has no pid namespace of its
/// own, or the thread is inside a namespace of netns-test's).
pub(crate) fn template_if_needed() -> Result<Option<Arc<Template>>, Error> {
    let dirs = run_dirs();
    let own_proc = contain::contained();
    if dirs.iter().all(|dir| netns_dir(dir).is_dir()) && (!own_proc || proc_shows_this_process()) {
        return Ok(None);
    }
    // A process that runs one test (cargo-nextest's, `exec`) would make a
    // template to copy one view from: the view covers the run directories
    // with their mirrors, and mounts the `/proc`, itself
    // ([`mounts::make_private_view`]).
    if settings::runs_one_test() {
        return Ok(None);
    }
    let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let stamps = stamps(dirs);
    let host_mounts_changed = state.mount_table.as_ref().is_none_or(changed);
    let mut base = None;
    if let Some(made) = &state.template {
        if made.stamps == stamps && !host_mounts_changed {
            if made.own_proc == own_proc {
                return Ok(Some(Arc::clone(&made.template)));
            }
            // Made before this process entered its pid namespace (by the
            // fork server, ahead of its runners): a copy of it, with a
            // `/proc` of the namespace, is all that differs.
            base = Some(Arc::clone(&made.template));
        }
    }
    if state.mount_table.is_none() {
        state.mount_table = open_mount_table();
    }
    let template = Arc::new(make(dirs, base.as_deref(), own_proc)?);
    state.template = Some(Made {
        template: Arc::clone(&template),
        stamps,
        own_proc,
    });
    Ok(Some(template))
}

/// Whether a view made without a template needs a `/proc` of its own: the
/// process is pid 1 of a pid namespace of its own, and the calling thread's
/// `/proc` shows another.
pub(crate) fn needs_own_proc() -> bool {
    contain::contained() && !proc_shows_this_process()
}

/// Whether the calling thread's `/proc` shows this process's pid
/// namespace: `/proc/self` names the process by the id it knows itself by.
fn proc_shows_this_process() -> bool {
    std::fs::read_link("/proc/self").is_ok_and(|link| {
        link.as_os_str().as_encoded_bytes() == std::process::id().to_string().as_bytes()
    })
}

/// For a process that forks the processes that run tests (the fork
/// server), before it forks: makes the template now, so that they inherit
/// it, and waits until the thread that made it is gone (a fork needs a
/// process of one thread). A failure is left for the first test to report.
pub(crate) fn make_ahead() {
    if let Ok(Some(_)) = template_if_needed() {
        let start = std::time::Instant::now();
        while sys::thread_count().ok() != Some(1)
            && start.elapsed() < std::time::Duration::from_secs(1)
        {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

/// In a forked process that runs tests, before its first: a watch of the
/// host's mount table of its own (the inherited one shares its "changed"
/// flag with the parent and the other children, and one would take it from
/// the others).
pub(crate) fn watch_from_this_process() {
    let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if state.mount_table.is_some() {
        state.mount_table = open_mount_table();
    }
}

/// The current template, and what it was made from.
#[derive(Default)]
struct State {
    template: Option<Made>,
    /// `/proc/self/mountinfo` of the process (the host's mount table), to
    /// `poll` for changes.
    mount_table: Option<OwnedFd>,
}

/// A template, the host's run directories it was made from, and whether
/// it has a `/proc` of the process's own pid namespace.
struct Made {
    template: Arc<Template>,
    stamps: Vec<Stamp>,
    own_proc: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    template: None,
    mount_table: None,
});

/// What changes when an entry comes or goes in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamps(dirs: &[PathBuf]) -> Vec<Stamp> {
    dirs.iter()
        .map(|dir| {
            std::fs::metadata(dir).map_or(
                Stamp {
                    dev: 0,
                    ino: 0,
                    mtime: (0, 0),
                    ctime: (0, 0),
                },
                |m| Stamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                },
            )
        })
        .collect()
}

/// The process's mount table (the main thread's mount namespace), opened
/// from the calling thread, which is in the host's view.
fn open_mount_table() -> Option<OwnedFd> {
    std::fs::File::open("/proc/self/mountinfo")
        .ok()
        .map(OwnedFd::from)
}

/// Whether the mount table changed since the last call (the kernel flags a
/// change with POLLPRI once).
fn changed(table: &OwnedFd) -> bool {
    let mut poll = nix::libc::pollfd {
        fd: table.as_raw_fd(),
        events: nix::libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd that lives across the call.
    let ready = unsafe { nix::libc::poll(&mut poll, 1, 0) };
    ready != 0
}

/// Makes a template on a thread of its own, which unshares a mount
/// namespace, covers each run directory that lacks `netns` with a mirror
/// of it (or copies `base`, a template made from the same host), mounts a
/// `/proc` of the process's pid namespace when `own_proc`, and ends; the
/// namespace is held by its descriptor.
fn make(dirs: &[PathBuf], base: Option<&Template>, own_proc: bool) -> Result<Template, Error> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-test-run".into())
            .spawn_scoped(scope, || {
                if let Some(base) = base {
                    base.enter()?;
                }
                sys::unshare(nix::sched::CloneFlags::CLONE_NEWNS, "unshare(CLONE_NEWNS)")
                    .map_err(privilege::explain_unshare)?;
                if base.is_none() {
                    if mounts::has_shared_mounts() {
                        sys::mount_propagation(
                            Path::new("/"),
                            MsFlags::MS_REC | MsFlags::MS_SLAVE,
                        )?;
                    }
                    for dir in dirs {
                        if !netns_dir(dir).is_dir() {
                            cover_with_mirror(dir)?;
                        }
                    }
                }
                if own_proc {
                    mount_own_proc();
                }
                Ok(Template {
                    mnt: sys::open_thread_ns(NsKind::Mount)?,
                })
            })
            .map_err(|e| Error::new("spawn a thread to make the /run template", e))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// In a mount namespace of the calling thread's own, in a process that is
/// pid 1 of a pid namespace of its own: mounts a `/proc` of that namespace
/// over the system's, so that the ids a test and its children know
/// themselves by are the ones `/proc` shows. A kernel may refuse it (in a
/// user namespace, a new procfs needs the existing one fully visible: a
/// container that masks files of its `/proc` has it refused); `/proc` then
/// stays the system's, as the README says.
pub(crate) fn mount_own_proc() {
    if let Err(error) = sys::mount_proc(Path::new("/proc")) {
        log::debug!(target: "netns_test", "/proc stays the system's: {error}");
    }
}

/// In a mount namespace of the calling thread's own: covers `dir` with a
/// tmpfs that shows what `dir` holds, each entry bind-mounted from the
/// original (with what is mounted below it) and symbolic links copied, plus
/// an empty `netns` directory.
pub(crate) fn cover_with_mirror(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    // The original, reached by descriptor once the tmpfs covers its path.
    let original = sys::open_path(dir, true)?;
    let meta = std::fs::metadata(dir).map_err(|e| Error::at("stat", dir, e))?;
    // Names and kinds first: once covered, `dir` shows the tmpfs.
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::at("read directory", dir, e))?
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name(), entry.file_type().ok()?)))
        .collect();
    let mode = meta.permissions().mode() & 0o7777;
    sys::mount_tmpfs(dir, &format!("size=1m,mode={mode:o}"))?;
    let netns = netns_dir(dir);
    for (name, kind) in entries {
        if name == "netns" {
            continue; // not a directory: the one of our own takes its place
        }
        let target = dir.join(&name);
        let source = format!("/proc/self/fd/{}", original.as_raw_fd());
        let source = Path::new(&source).join(&name);
        if kind.is_symlink() {
            let Ok(to) = std::fs::read_link(&source) else {
                continue;
            };
            std::os::unix::fs::symlink(&to, &target)
                .map_err(|e| Error::at("copy the link", &target, e))?;
            continue;
        }
        if kind.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&target)
                .map_err(|e| Error::at("mkdir", &target, e))?;
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&target)
                .map_err(|e| Error::at("create", &target, e))?;
        }
        let entry = match sys::open_path(&source, false) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        sys::bind_mount_fd(entry.as_fd(), &target)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&netns)
        .map_err(|e| Error::at("mkdir", &netns, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_mirror_shows_the_original_and_adds_netns_only_in_its_namespace() {
        if !privileged_here() {
            println!("skipped: a mount namespace needs root");
            return;
        }
        let original = tempfile::tempdir().unwrap();
        let dir = original.path().to_owned();
        std::fs::write(dir.join("file"), "contents").unwrap();
        std::fs::create_dir(dir.join("dir")).unwrap();
        std::fs::write(dir.join("dir/inner"), "inner").unwrap();
        std::os::unix::fs::symlink("file", dir.join("link")).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
        let seen = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    sys::unshare(nix::sched::CloneFlags::CLONE_NEWNS, "unshare").unwrap();
                    sys::mount_propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_SLAVE)
                        .unwrap();
                    cover_with_mirror(&dir).unwrap();
                    let mut names: Vec<String> = std::fs::read_dir(&dir)
                        .unwrap()
                        .map(|e| e.unwrap().file_name().into_string().unwrap())
                        .collect();
                    names.sort();
                    // A socket bound on the host answers through its bind mount.
                    let mut stream =
                        std::os::unix::net::UnixStream::connect(dir.join("socket")).unwrap();
                    stream.write_all(b"x").unwrap();
                    std::fs::write(dir.join("new"), "only here").unwrap();
                    std::fs::write(dir.join("dir/from-inside"), "shared").unwrap();
                    (
                        names,
                        std::fs::read_to_string(dir.join("file")).unwrap(),
                        std::fs::read_to_string(dir.join("dir/inner")).unwrap(),
                        std::fs::read_link(dir.join("link")).unwrap(),
                        dir.join("netns").is_dir(),
                    )
                })
                .join()
                .unwrap()
        });
        assert_eq!(
            seen.0,
            ["dir", "file", "link", "netns", "socket"],
            "the mirror"
        );
        assert_eq!(seen.1, "contents");
        assert_eq!(seen.2, "inner");
        assert_eq!(seen.3, Path::new("file"));
        assert!(seen.4);
        let (mut accepted, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        accepted.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // Below the first level the original is the mirror's; the first
        // level and `netns` are the mirror's alone.
        assert_eq!(
            std::fs::read_to_string(dir.join("dir/from-inside")).unwrap(),
            "shared"
        );
        assert!(!dir.join("new").exists());
        assert!(!dir.join("netns").exists());
    }

    fn privileged_here() -> bool {
        crate::os::privilege::privileged() && !crate::os::userns::rootless()
    }
}
