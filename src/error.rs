//! The crate's error type: an operation, the path it worked on, the OS error,
//! and, where one is known, what to do about it.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A failed system operation while setting up or using a namespace.
///
/// Its message (`Display`) is one line: the operation, the path it
/// touched (if any), and the OS error or what netns-test found wrong.
/// When the cause is known (a missing privilege, a kernel setting), what to
/// do about it is in [`Error::hint`], which the alternate form `{:#}` and
/// `Debug` (what `unwrap()` prints) show on the lines after it.
///
/// [`Error::is_refusal`] tells a machine that forbids what netns-test needs
/// from something going wrong, for a test to skip on:
///
/// ```
/// match netns_test::NetNs::new() {
///     Ok(_ns) => { /* ... */ }
///     Err(e) if e.is_refusal() || !netns_test::privileged() => {
///         eprintln!("skipped: {e}");
///     }
///     Err(e) => panic!("{e:#}"),
/// }
/// ```
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

    /// `operation` failed with the calling thread's `errno`.
    pub(crate) fn last_os(operation: &'static str) -> Error {
        Error::new(operation, io::Error::last_os_error())
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

    /// Whether this machine forbids what netns-test needs, rather than
    /// something going wrong: a kernel without network namespaces (or not
    /// Linux), user namespaces disabled by a kernel setting
    /// (`user.max_user_namespaces`, `kernel.unprivileged_userns_clone`),
    /// capabilities taken away by AppArmor, a seccomp filter. These are the
    /// failures `NETNS_TEST_UNSUPPORTED=skip` turns into skipped tests.
    ///
    /// Lacking root is not one: `NetNs::new()` and a veth pair to the host
    /// need CAP_SYS_ADMIN and CAP_NET_ADMIN, which
    /// [`privileged()`](crate::privileged) checks beforehand.
    pub fn is_refusal(&self) -> bool {
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
    /// One line: `{operation} on {path} failed: {error}`. The alternate
    /// form (`{:#}`) adds the hint on the lines after it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(path) = &self.path {
            write!(f, " on {}", path.display())?;
        }
        write!(f, " failed: {}", self.source)?;
        if let (true, Some(hint)) = (f.alternate(), &self.hint) {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    /// As io::Error's: the fields that are there, the OS error's code, kind
    /// and text; then the hint as it reads, on the lines after it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug.field("operation", &self.operation);
        if let Some(path) = &self.path {
            debug.field("path", path);
        }
        debug.field("kind", &self.source.kind());
        if let Some(code) = self.source.raw_os_error() {
            debug.field("code", &code);
        }
        debug.field("message", &self.source_message());
        if self.refusal {
            debug.field("refusal", &true);
        }
        debug.finish()?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl Error {
    /// The source's text, without io::Error's ` (os error N)`.
    fn source_message(&self) -> String {
        let text = self.source.to_string();
        match self.source.raw_os_error() {
            Some(code) => text
                .strip_suffix(&format!(" (os error {code})"))
                .map(str::to_owned)
                .unwrap_or(text),
            None => text,
        }
    }
}

impl std::error::Error for Error {
    /// What caused the OS error or the detected problem, if anything did.
    /// The error itself is in this error's message, not repeated here (as
    /// tempfile does), so that a chain of errors prints each text once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<Error> for io::Error {
    /// An io::Error of the same kind that holds the whole error (hint
    /// included: `get_ref` and `into_inner` give it back).
    fn from(error: Error) -> io::Error {
        io::Error::new(error.source.kind(), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn eperm_with_hint() -> Error {
        Error::at(
            "mount sysfs",
            Path::new("/sys"),
            io::Error::from_raw_os_error(1),
        )
        .with_hint("netns-test: run as root.\nOr set up capabilities.".into())
    }

    #[test]
    fn display_is_one_line_and_the_alternate_form_adds_the_hint() {
        let error = eperm_with_hint();
        assert_eq!(
            error.to_string(),
            "mount sysfs on /sys failed: Operation not permitted (os error 1)"
        );
        assert_eq!(
            format!("{error:#}"),
            "mount sysfs on /sys failed: Operation not permitted (os error 1)\n\
             netns-test: run as root.\nOr set up capabilities."
        );
        assert_eq!(error.raw_os_error(), Some(1));
        assert_eq!(
            error.hint(),
            Some("netns-test: run as root.\nOr set up capabilities.")
        );
    }

    #[test]
    fn source_does_not_repeat_what_display_says() {
        let error = eperm_with_hint();
        assert!(error.source().is_none());
        // A chain prints each text once.
        let mut chain = vec![error.to_string()];
        let mut next = error.source();
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        assert_eq!(chain.len(), 1, "{chain:?}");
        // What caused the error in the message is the source.
        #[derive(Debug)]
        struct Text(&'static str, Option<Box<Text>>);
        impl fmt::Display for Text {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Text {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|t| t as _)
            }
        }
        let error = Text("bad reply", Some(Box::new(Text("truncated", None))));
        let wrapped = Error::new("read", io::Error::other(error));
        assert_eq!(wrapped.to_string(), "read failed: bad reply");
        assert_eq!(wrapped.source().unwrap().to_string(), "truncated");
    }

    #[test]
    fn debug_reads_like_io_errors_and_shows_the_hint_as_it_reads() {
        let error = eperm_with_hint();
        assert_eq!(
            format!("{error:?}"),
            "Error { operation: \"mount sysfs\", path: \"/sys\", kind: PermissionDenied, code: 1, \
             message: \"Operation not permitted\" }\n\
             netns-test: run as root.\nOr set up capabilities."
        );
        let detected =
            Error::invalid_input("Impairment::loss", "200 is not a percentage").refused();
        assert_eq!(
            format!("{detected:?}"),
            "Error { operation: \"Impairment::loss\", kind: InvalidInput, \
             message: \"200 is not a percentage\", refusal: true }"
        );
    }

    #[test]
    fn into_io_error_keeps_the_kind_and_the_whole_error() {
        let io = io::Error::from(eperm_with_hint());
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        let inner = io.get_ref().unwrap().downcast_ref::<Error>().unwrap();
        assert_eq!(
            inner.hint(),
            Some("netns-test: run as root.\nOr set up capabilities.")
        );
        assert_eq!(
            io.to_string(),
            "mount sysfs on /sys failed: Operation not permitted (os error 1)"
        );
    }
}
