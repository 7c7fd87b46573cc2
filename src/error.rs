//! The crate's error type: an operation, the path it worked on, the OS error,
//! and, where one is known, what to do about it.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A failed system operation while setting up or using a namespace.
///
/// Its message names the operation, the path it touched (if any), the OS
/// error, and a hint when the cause is a missing privilege or kernel feature.
#[derive(Debug)]
pub struct Error {
    operation: Cow<'static, str>,
    path: Option<PathBuf>,
    source: io::Error,
    hint: Option<String>,
    /// The environment forbids this (a kernel setting, a security policy):
    /// `NETNS_TEST_UNSUPPORTED=skip` may turn it into a skipped test.
    refusal: bool,
}

impl Error {
    pub(crate) fn new(operation: impl Into<Cow<'static, str>>, source: io::Error) -> Error {
        Error {
            operation: operation.into(),
            path: None,
            source,
            hint: None,
            refusal: false,
        }
    }

    /// An error of `kind` that netns-test itself detected, explained by `message`.
    pub(crate) fn detected(
        operation: impl Into<Cow<'static, str>>,
        kind: io::ErrorKind,
        message: impl Into<String>,
    ) -> Error {
        Error::new(operation, io::Error::new(kind, message.into()))
    }

    /// A value the caller gave that is out of range: an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error naming it.
    pub(crate) fn invalid_input(
        operation: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Error {
        Error::detected(operation, io::ErrorKind::InvalidInput, message)
    }

    /// Marks the error as the environment's refusal (see [`Error::is_refusal`]).
    pub(crate) fn refused(mut self) -> Error {
        self.refusal = true;
        self
    }

    /// Whether the environment forbids the operation (a kernel setting or a
    /// security policy), rather than something going wrong.
    pub(crate) fn is_refusal(&self) -> bool {
        self.refusal
    }

    pub(crate) fn at(
        operation: impl Into<Cow<'static, str>>,
        path: &Path,
        source: io::Error,
    ) -> Error {
        Error {
            path: Some(path.to_owned()),
            ..Error::new(operation, source)
        }
    }

    /// The same error, naming `path`.
    pub(crate) fn at_path(mut self, path: &Path) -> Error {
        self.path = Some(path.to_owned());
        self
    }

    /// Names the topology node the operation ran in.
    pub(crate) fn in_node(mut self, node: &str) -> Error {
        self.operation = format!("{} in node {node}", self.operation).into();
        self
    }

    /// The kind of the underlying I/O error: [`std::io::ErrorKind::Unsupported`]
    /// for a feature the kernel lacks, say.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }

    pub(crate) fn with_hint(mut self, hint: String) -> Error {
        self.hint = Some(hint);
        self
    }

    /// The operation that failed, such as `unshare(CLONE_NEWNET | CLONE_NEWNS)`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The path the operation worked on, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The OS error number, if the failure came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// What to do about it, when the cause is known (a missing privilege, say).
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(path) = &self.path {
            write!(f, " on {}", path.display())?;
        }
        write!(f, " failed: {}", self.source)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        io::Error::new(error.source.kind(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_operation_path_errno_and_hint() {
        let error = Error::at(
            "mount sysfs",
            Path::new("/sys"),
            io::Error::from_raw_os_error(1),
        )
        .with_hint("run as root".into());
        let text = error.to_string();
        assert!(
            text.starts_with("mount sysfs on /sys failed: Operation not permitted"),
            "{text}"
        );
        assert!(text.ends_with("\nrun as root"), "{text}");
        assert_eq!(error.raw_os_error(), Some(1));
        assert_eq!(
            io::Error::from(error).kind(),
            io::ErrorKind::PermissionDenied
        );
    }
}
