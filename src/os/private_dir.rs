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
        let mut fd = open_base(base)?;
        let mut path = base.to_owned();
        for component in components {
            path.push(component);
            if create {
                match mkdirat(&fd, *component, Mode::S_IRWXU) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::at("mkdir", &path, e.into())),
                }
            }
            fd = match open_dir(&fd, component) {
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

fn open_dir(parent: &OwnedFd, name: &str) -> Result<OwnedFd, Error> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::at("open directory", Path::new(name), e.into()))
}

/// Whether the file belongs to the caller (seen from its user namespace).
fn owned_by_caller(stat: &FileStat) -> bool {
    stat.st_uid == nix::unistd::geteuid().as_raw()
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
