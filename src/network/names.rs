//! Node names: what a node may be called, and the `/etc/hosts` lines that
//! let every node of a network reach every other by name.
//!
//! Each node has a private `/etc/hosts` (its own mount namespace). The
//! network keeps the file of each node open (opened inside the node when it
//! is made) and appends `address name` to all of them whenever a node gets
//! an address, so that `TcpStream::connect(("server", 80))` works from any
//! node. The order of a name's addresses is the resolver's: glibc's default
//! policy table (RFC 3484's) puts the IPv6 (ULA) ones first.

use crate::error::Error;
use crate::sync::lock;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;

/// A node's name must be a valid host name (RFC 1123): labels of letters,
/// digits and hyphens, not starting or ending with a hyphen, at most 63
/// bytes each and 253 in all, separated by dots.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return Ok(());
    }
    Err(Error::invalid_input(
        "name a node",
        format!(
            "{name:?} is not a valid host name: use letters, digits and hyphens (not first or last), \
             in labels of at most 63 characters separated by dots, like \"server\" or \"edge-1\""
        ),
    ))
}

/// The names and addresses of a network's nodes, and every node's open
/// `/etc/hosts`.
#[derive(Default)]
pub(crate) struct Names {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every name given, to refuse a second node of the same name.
    names: Vec<String>,
    /// The lines written so far, for the nodes that come later.
    lines: String,
    hosts: Vec<File>,
}

impl Names {
    /// Takes `name` for a new node; an error when another node has it.
    pub(crate) fn claim(&self, name: &str) -> Result<(), Error> {
        let mut inner = lock(&self.inner);
        if inner.names.iter().any(|n| n == name) {
            return Err(Error::invalid_input(
                "name a node",
                format!(
                    "this network has a node named {name:?} already: give each node a name of its own"
                ),
            ));
        }
        inner.names.push(name.to_owned());
        Ok(())
    }

    /// Adds a node's `/etc/hosts` (opened inside it, for appending) and
    /// writes what the others' files have.
    pub(crate) fn add_hosts_file(&self, mut hosts: File) -> Result<(), Error> {
        let mut inner = lock(&self.inner);
        hosts
            .write_all(inner.lines.as_bytes())
            .map_err(|e| Error::new("write a node's /etc/hosts", e))?;
        inner.hosts.push(hosts);
        Ok(())
    }

    /// `name` is at `addresses`: a line in every node's `/etc/hosts`.
    pub(crate) fn add_addresses(&self, name: &str, addresses: &[IpAddr]) -> Result<(), Error> {
        let lines: String = addresses
            .iter()
            .map(|address| format!("{address} {name}\n"))
            .collect();
        let mut inner = lock(&self.inner);
        inner.lines.push_str(&lines);
        for hosts in &mut inner.hosts {
            hosts
                .write_all(lines.as_bytes())
                .map_err(|e| Error::new("write a node's /etc/hosts", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn node_names_are_host_names() {
        for good in [
            "server",
            "edge-1",
            "r1",
            "db.internal",
            "a",
            &"x".repeat(63),
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "edge/1",
            "-a",
            "a-",
            "a..b",
            "under_score",
            "sp ace",
            &"x".repeat(64),
        ] {
            let error = check_name(bad).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
            assert!(
                error.to_string().contains("not a valid host name"),
                "{error}"
            );
        }
    }
}
