//! A directory that only the caller can write, and files in it that no one
//! can redirect: made with mode 0700, or used only when it is a real
//! directory (not a symbolic link) owned by the caller that no one else may
//! write; files created with `O_CREAT | O_EXCL | O_NOFOLLOW`, read with
//! `O_NOFOLLOW`, all relative to the directory's descriptor.

use crate::error::Error;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, mkdirat};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An open directory of the caller's own.
#[derive(Debug)]
pub(crate) struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// The user's own `netns-test/<leaf>` directory: for root (outside any
    /// user namespace) `/run/netns-test/<leaf>`; for others
    /// `$XDG_RUNTIME_DIR/netns-test/<leaf>` when that runtime directory is
    /// theirs alone, else `/tmp/netns-test-<uid>/<leaf>`. `Ok(None)` when it
    /// is missing and not to be made.
    pub(crate) fn for_user(leaf: &str, create: bool) -> Result<Option<PrivateDir>, Error> {
        let uid = crate::os::userns::outside_uid()?;
        if uid == 0 {
            return PrivateDir::open(Path::new("/run"), &["netns-test", leaf], create);
        }
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
            use std::os::unix::fs::MetadataExt;
            let runtime = PathBuf::from(runtime);
            // Only a runtime directory of the user's alone, as the XDG spec has it.
            let theirs = std::fs::symlink_metadata(&runtime).is_ok_and(|m| {
                m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o077 == 0
            });
            if theirs {
                return PrivateDir::open(&runtime, &["netns-test", leaf], create);
            }
        }
        let top = format!("netns-test-{uid}");
        PrivateDir::open(Path::new("/tmp"), &[&top, leaf], create)
    }

    /// Removes this directory and its `netns-test` parent when they are empty.
    pub(crate) fn remove_if_empty(&self) {
        if std::fs::remove_dir(&self.path).is_ok() {
            if let Some(parent) = self.path.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    /// Takes the exclusive lock of the file `name` in this directory (made
    /// 0600 when missing), or `None` while another process holds it. The
    /// kernel lets go of it when the process dies, even by SIGKILL; dropped,
    /// the lock removes its file.
    pub(crate) fn try_lock(&'static self, name: &str) -> Result<Option<Lock>, Error> {
        let path = self.path.join(name);
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| Error::at("open", &path, e.into()))?;
        let fd = match nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(Error::at("flock", &path, e.into())),
        };
        // The holder before us may have removed the file between our open
        // and our lock: only a lock on the file that is there counts.
        let ours = fstat(&*fd).map_err(|e| Error::at("stat", &path, e.into()))?;
        let there =
            nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
        if there.map_or(true, |there| {
            there.st_ino != ours.st_ino || there.st_dev != ours.st_dev
        }) {
            return Ok(None);
        }
        Ok(Some(Lock {
            dir: self,
            name: name.to_owned(),
            _file: fd,
        }))
    }
    /// Opens `base/components...`, making the missing components with mode
    /// 0700 when `create` (else `Ok(None)` when one is missing). `base` must
    /// exist; each component must be the caller's own, mode 0700 or
    /// stricter, and not a symbolic link.
    pub(crate) fn open(
        base: &Path,
        components: &[&str],
        create: bool,
    ) -> Result<Option<PrivateDir>, Error> {
        PrivateDir::open_from(open_base(base)?, base.to_owned(), components, create)
    }

    /// Opens `base/components...` as [`PrivateDir::open`] makes them, after
    /// reaching the absolute path `base` from `/` one component at a time:
    /// each opened relative to its parent's descriptor with `O_NOFOLLOW`,
    /// made (mode 0755) when missing, and refused, with a message naming
    /// it, when it is a symbolic link, belongs to someone else than the
    /// caller or root, or someone else may write to it (a sticky directory
    /// such as `/tmp` aside; its group only when that is the caller's).
    /// Nothing someone else planted on the way is followed.
    pub(crate) fn open_trusted(base: &Path, components: &[&str]) -> Result<PrivateDir, Error> {
        if !base.is_absolute() {
            return Err(Error::invalid_input(
                "open a directory",
                format!("{} is not an absolute path", base.display()),
            ));
        }
        let mut path = PathBuf::from("/");
        let mut fd = open_base(&path)?;
        check_trusted(&fd, &path)?;
        for component in base.components().skip(1) {
            let name = match component {
                std::path::Component::Normal(name) => name,
                std::path::Component::CurDir => continue,
                _ => {
                    return Err(Error::invalid_input(
                        "open a directory",
                        format!("{} has a `..` component", base.display()),
                    ));
                }
            };
            path.push(name);
            fd = match open_dir(&fd, name) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
                    match mkdirat(&fd, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(e) => return Err(Error::at("mkdir", &path, e.into())),
                    }
                    open_dir(&fd, name)
                }
                other => other,
            }
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR) => not_trusted(
                    &path,
                    "is a symbolic link or not a directory: nothing on the way to a directory                      netns-test writes in is followed, as another user could have planted it"
                        .into(),
                ),
                _ => e.at_path(&path),
            })?;
            check_trusted(&fd, &path)?;
        }
        let dir = PrivateDir::open_from(fd, path, components, true)?;
        Ok(dir.expect("made when missing"))
    }

    fn open_from(
        mut fd: OwnedFd,
        mut path: PathBuf,
        components: &[&str],
        create: bool,
    ) -> Result<Option<PrivateDir>, Error> {
        for component in components {
            path.push(component);
            if create {
                match mkdirat(&fd, *component, Mode::S_IRWXU) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::at("mkdir", &path, e.into())),
                }
            }
            fd = match open_dir(&fd, *component) {
                Ok(next) => next,
                Err(e) if !create && e.raw_os_error() == Some(nix::libc::ENOENT) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.at_path(&path)),
            };
            check_private(&fd, &path)?;
        }
        Ok(Some(PrivateDir { fd, path }))
    }

    /// Creates the file `name` with `contents`, mode 0600; fails if anything
    /// is there already, a symbolic link included.
    pub(crate) fn create_file(&self, name: &str, contents: &[u8]) -> Result<(), Error> {
        let path = self.path.join(name);
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| Error::at("create", &path, e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(contents)
            .map_err(|e| Error::at("write", &path, e))
    }

    /// Creates the file `name` for writing, mode 0600; fails if anything is
    /// there already, a symbolic link included.
    pub(crate) fn create(&self, name: &str) -> Result<std::fs::File, Error> {
        let path = self.path.join(name);
        openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map(std::fs::File::from)
        .map_err(|e| Error::at("create", &path, e.into()))
    }

    /// Where this directory is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The contents of the regular file `name`, if it is one of the caller's
    /// (not a symbolic link).
    pub(crate) fn read_file(&self, name: &str) -> Option<String> {
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .ok()?;
        let stat = fstat(&fd).ok()?;
        let mut file = std::fs::File::from(fd);
        if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG || !owned_by_caller(&stat) {
            return None;
        }
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// The names of the entries.
    pub(crate) fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
        else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes the file `name`; one that is not there is not an error.
    pub(crate) fn remove_file(&self, name: &str) -> Result<(), Error> {
        match nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::at("remove", &self.path.join(name), e.into())),
        }
    }
}

/// The directory the private ones are made in (`/run`, `/tmp`, ...), which
/// must exist; it may be a symbolic link, as `/var/run` is.
fn open_base(base: &Path) -> Result<OwnedFd, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(base)
        .map(OwnedFd::from)
        .map_err(|e| Error::at("open directory", base, e))
}

/// The exclusive lock of a file in a [`PrivateDir`]; see [`PrivateDir::try_lock`].
#[derive(Debug)]
pub(crate) struct Lock {
    dir: &'static PrivateDir,
    name: String,
    _file: nix::fcntl::Flock<OwnedFd>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Still locked, so the file is ours to remove; the lock goes with
        // the descriptor right after.
        let _ = self.dir.remove_file(&self.name);
    }
}

fn open_dir<P: ?Sized + nix::NixPath>(parent: &OwnedFd, name: &P) -> Result<OwnedFd, Error> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::new("open directory", e.into()))
}

/// Whether the file belongs to the caller (seen from its user namespace).
fn owned_by_caller(stat: &FileStat) -> bool {
    stat.st_uid == nix::unistd::geteuid().as_raw()
}

/// A directory on the way to one of netns-test's may be the caller's or
/// root's (inside a user namespace: a user it does not map, which it cannot
/// tell from root; the caller cannot make entries in such a directory
/// unless someone else may write to it), and no one else may write to it:
/// not others (a sticky directory such as `/tmp` aside, where no one can
/// move or remove what is not theirs), not its group unless that is the
/// caller's own.
fn check_trusted(fd: &OwnedFd, path: &Path) -> Result<(), Error> {
    let stat = fstat(fd).map_err(|e| Error::at("stat", path, e.into()))?;
    let mode = stat.st_mode;
    let sticky = mode & nix::libc::S_ISVTX != 0;
    let owner = stat.st_uid;
    let owner_trusted = owner == nix::unistd::geteuid().as_raw()
        || owner == 0
        || (crate::os::userns::rootless() && owner == overflow_uid());
    let why = if !owner_trusted {
        Some(format!(
            "belongs to uid {owner}, neither this user nor root"
        ))
    } else if mode & 0o002 != 0 && !sticky {
        Some(format!(
            "may be written by anyone (mode {:o})",
            mode & 0o7777
        ))
    } else if mode & 0o020 != 0 && !sticky && stat.st_gid != nix::unistd::getegid().as_raw() {
        Some(format!(
            "may be written by group {} (mode {:o})",
            stat.st_gid,
            mode & 0o7777
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(not_trusted(path, why)),
    }
}

/// What the kernel shows, inside a user namespace, as the owner of a file
/// whose owner it does not map.
fn overflow_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| {
        crate::os::sys::read_sysctl("kernel/overflowuid")
            .and_then(|uid| uid.parse().ok())
            .unwrap_or(65534)
    })
}

fn not_trusted(path: &Path, why: String) -> Error {
    Error::detected(
        "use a directory on the way to netns-test's",
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} {why}: someone else could redirect what netns-test writes there. Use a directory \
             of your own (for captures, set CARGO_TARGET_DIR to one)",
            path.display()
        ),
    )
}

/// The directory must be the caller's, and no one else may write to it; one
/// that others may read (as older versions made them) becomes 0700.
fn check_private(fd: &OwnedFd, path: &Path) -> Result<(), Error> {
    let stat = fstat(fd).map_err(|e| Error::at("stat", path, e.into()))?;
    if owned_by_caller(&stat) && stat.st_mode & 0o022 == 0 {
        if stat.st_mode & 0o077 != 0 {
            nix::sys::stat::fchmod(fd, Mode::S_IRWXU)
                .map_err(|e| Error::at("chmod 0700", path, e.into()))?;
        }
        return Ok(());
    }
    Err(Error::detected(
        "use a directory of netns-test's",
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is not a directory of this user's alone (owner uid {}, mode {:o}): someone else may have \
                 made it. Remove it (or, for rootless tests, set XDG_RUNTIME_DIR to a directory of your own), \
                 and run again",
            path.display(),
            stat.st_uid,
            stat.st_mode & 0o7777
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_once_and_never_through_a_link() {
        let base = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(base.path(), &["a", "b"], true)
            .unwrap()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(base.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        dir.create_file("note", b"x=1\n").unwrap();
        assert_eq!(dir.read_file("note").as_deref(), Some("x=1\n"));
        assert!(dir.create_file("note", b"again").is_err(), "created twice");
        // A symbolic link planted under a coming name is neither followed
        // nor replaced.
        let target = base.path().join("victim");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, base.path().join("a/b/planted")).unwrap();
        assert!(dir.create_file("planted", b"overwritten").is_err());
        assert_eq!(dir.read_file("planted"), None);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        let mut names = dir.names();
        names.sort();
        assert_eq!(names, ["note", "planted"]);
        dir.remove_file("note").unwrap();
        dir.remove_file("note").unwrap();
        assert_eq!(dir.read_file("note"), None);
    }

    /// `dir` made with `mode`, owned by `uid` (root only).
    fn dir_of(path: &Path, uid: u32, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    }

    #[test]
    fn a_trusted_path_follows_nothing_someone_else_planted() {
        if !nix::unistd::geteuid().is_root() || crate::os::userns::rootless() {
            println!("skipped: making another user's directories needs root");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let precious = base.path().join("precious");
        std::fs::create_dir(&precious).unwrap();
        std::fs::write(precious.join("test.pcap"), "IMPORTANT ROOT DATA").unwrap();
        let refused = |target: &Path| -> String {
            let error = PrivateDir::open_trusted(target, &["netns-test", "t"]).unwrap_err();
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{error}"
            );
            error.to_string()
        };
        // A directory of another user's (uid 65534) on the way.
        let theirs = base.path().join("theirs");
        dir_of(&theirs, 65534, 0o755);
        let message = refused(&theirs.join("target"));
        assert!(
            message.contains(&format!("{} belongs to uid 65534", theirs.display())),
            "{message}"
        );
        assert!(!theirs.join("target").exists(), "made something in it");
        // A symbolic link on the way, even in a directory of root's.
        let mine = base.path().join("mine");
        dir_of(&mine, 0, 0o755);
        std::os::unix::fs::symlink(&precious, mine.join("target")).unwrap();
        let message = refused(&mine.join("target"));
        assert!(message.contains("is a symbolic link"), "{message}");
        // A directory anyone may write to, or its group (not root's).
        let open = base.path().join("open");
        dir_of(&open, 0, 0o777);
        assert!(refused(&open.join("target")).contains("may be written by anyone"));
        let group = base.path().join("group");
        dir_of(&group, 0, 0o775);
        std::os::unix::fs::chown(&group, Some(0), Some(65534)).unwrap();
        assert!(refused(&group.join("target")).contains("may be written by group 65534"));
        // netns-test's own directory taken by someone else.
        let taken = base.path().join("taken");
        dir_of(&taken, 0, 0o755);
        dir_of(&taken.join("netns-test"), 65534, 0o700);
        let error = PrivateDir::open_trusted(&taken, &["netns-test", "t"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not a directory of this user's alone"),
            "{error}"
        );
        // A sticky directory anyone may write (as /tmp), then one of root's: fine.
        let sticky = base.path().join("sticky");
        dir_of(&sticky, 0, 0o1777);
        let dir = PrivateDir::open_trusted(&sticky.join("a/target"), &["netns-test", "t"]).unwrap();
        dir.create("test.pcap").unwrap();
        assert!(dir.create("test.pcap").is_err(), "created twice");
        assert_eq!(
            std::fs::read_to_string(precious.join("test.pcap")).unwrap(),
            "IMPORTANT ROOT DATA"
        );
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("open")).unwrap();
        std::fs::set_permissions(
            base.path().join("open"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let error = PrivateDir::open(base.path(), &["open"], true)
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .contains("not a directory of this user's alone"),
            "{error}"
        );
        // A symbolic link in place of a component is refused too.
        std::os::unix::fs::symlink(base.path(), base.path().join("link")).unwrap();
        assert!(PrivateDir::open(base.path(), &["link"], true).is_err());
        assert!(
            PrivateDir::open(base.path(), &["missing"], false)
                .unwrap()
                .is_none()
        );
    }
}
