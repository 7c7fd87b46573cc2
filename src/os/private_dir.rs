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
pub(crate) struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
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

    /// Its path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
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
