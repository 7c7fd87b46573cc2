//! Packet capture: every packet on every interface of a namespace, `lo`
//! included, into a pcap file that Wireshark and tcpdump read.
//!
//! One `AF_PACKET` socket (all protocols, all interfaces) made inside the
//! namespace before the test body runs, and one thread writing what it
//! receives. Nothing of this exists unless capture is asked for.
//!
//! A frame an impaired direction carries shows once, as its node sent it:
//! the kernel hands a frame that `eth0`'s egress filter redirects to the
//! taps of `f-eth0`, not of `eth0`, and the engine's own send on `eth0`
//! bypasses the taps; the copy that arrives on `f-eth0e`, where the engine
//! reads it, is left out.
//!
//! Where it goes: `<target dir>/netns-test/<name>/`, reached from `/` one
//! component at a time with nothing followed that someone else could have
//! planted ([`PrivateDir::open_trusted`]), the file created with
//! `O_EXCL | O_NOFOLLOW`, mode 0600. With the `all` policy the file is made
//! when the capture starts; with `failed`, packets go to an unnamed
//! temporary file, copied there only when the test fails: a passing test
//! writes nothing, and makes no directory.

use crate::error::Error;
use crate::os::private_dir::PrivateDir;
use crate::os::sys;
use crate::settings::Policy;
use nix::libc;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A capture stops writing packets past this size.
const MAX_BYTES: u64 = 64 << 20;
/// Bytes kept of each packet.
const SNAPLEN: usize = 65535;
/// pcap link type: Ethernet (what veth, bridges and `lo` deliver).
const LINKTYPE_ETHERNET: u32 = 1;

/// Where a test's (or a command's) captures go:
/// `<target>/netns-test/<leaf>/`.
#[derive(Clone, Debug)]
pub(crate) struct Location {
    /// The target directory (absolute).
    pub(crate) target: PathBuf,
    /// The test's directory under `netns-test`.
    pub(crate) leaf: String,
}

impl Location {
    /// The directory, as messages show it.
    pub(crate) fn path(&self) -> PathBuf {
        self.target.join("netns-test").join(&self.leaf)
    }

    /// Opens the directory, making what is missing; see the module's doc.
    fn open(&self) -> Result<PrivateDir, Error> {
        PrivateDir::open_trusted(&self.target, &["netns-test", &self.leaf]).map_err(|error| {
            error.with_hint(format!(
                "netns-test: captures go to {}; set CARGO_TARGET_DIR to a directory of your own \
                 that you can write, or run from one",
                self.path().display()
            ))
        })
    }
}

/// A running capture.
pub(crate) struct Capture {
    location: Location,
    name: String,
    /// The file's place when it is written there as packets come (`all`);
    /// `None`: an unnamed file, placed by [`Capture::finish`] when kept.
    placed: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<Written>>,
}

/// What the writer thread wrote.
struct Written {
    file: Option<File>,
    packets: u64,
}

/// A stopped capture.
pub(crate) struct Finished {
    location: Location,
    name: String,
    placed: Option<PathBuf>,
    file: Option<File>,
    /// The packets it holds.
    pub(crate) packets: u64,
}

impl Capture {
    /// Starts capturing the calling thread's network namespace into the
    /// file `name` of `location`, kept as `policy` says.
    pub(crate) fn start(location: &Location, name: &str, policy: Policy) -> Result<Capture, Error> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        if fd < 0 {
            return Err(Error::new(
                "socket(AF_PACKET, ETH_P_ALL) for a capture",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        set_receive_timeout(&socket, 20_000)?;
        // Packets may hold secrets: the file and its directory are the user's alone.
        let (file, placed) = match policy {
            Policy::All => {
                let dir = location.open()?;
                (dir.create(name)?, Some(dir.path().join(name)))
            }
            Policy::Failed => (unnamed_file()?, None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("netns-test-capture".into())
                .spawn(move || write_packets(socket, file, &stop))
                .map_err(|e| Error::new("spawn the capture thread", e))?
        };
        Ok(Capture {
            location: location.clone(),
            name: name.to_owned(),
            placed,
            stop,
            writer: Some(writer),
        })
    }

    /// Stops after the packets already received.
    pub(crate) fn finish(mut self) -> Finished {
        let written = self.stop_and_join();
        Finished {
            location: self.location.clone(),
            name: std::mem::take(&mut self.name),
            placed: self.placed.take(),
            file: written.file,
            packets: written.packets,
        }
    }

    fn stop_and_join(&mut self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.writer
            .take()
            .and_then(|writer| writer.join().ok())
            .unwrap_or(Written {
                file: None,
                packets: 0,
            })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl Finished {
    /// The file's name (`test.pcap`, `<node>.pcap`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Keeps the capture: where it was written, or copied there now from
    /// its unnamed file. Returns where it is.
    pub(crate) fn keep(self) -> Result<PathBuf, Error> {
        if let Some(placed) = self.placed {
            return Ok(placed);
        }
        let Some(mut from) = self.file else {
            return Err(Error::detected(
                "keep a capture",
                std::io::ErrorKind::Other,
                "its writer thread failed",
            ));
        };
        let dir = self.location.open()?;
        let path = dir.path().join(&self.name);
        let mut to = dir.create(&self.name)?;
        from.rewind()
            .and_then(|()| std::io::copy(&mut from, &mut to))
            .map_err(|e| Error::at("write", &path, e))?;
        Ok(path)
    }

    /// Drops the capture: removes its file (and the directory, once empty)
    /// when it was written in place.
    pub(crate) fn discard(self) {
        if let Some(placed) = self.placed {
            let _ = std::fs::remove_file(&placed);
            if let Some(dir) = placed.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// A file with no name, readable and writable by the caller only, that
/// goes when closed: in the temporary directory, else in memory.
fn unnamed_file() -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    match tmpfile {
        Ok(file) => Ok(file),
        Err(_) => sys::memfd("netns-test-capture"),
    }
}

fn set_receive_timeout(socket: &OwnedFd, micros: i64) -> Result<(), Error> {
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: micros,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Error::new(
            "setsockopt(SO_RCVTIMEO)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Receives packets until told to stop, then drains what is queued;
/// returns the file and how many packets it holds.
fn write_packets(socket: OwnedFd, file: File, stop: &AtomicBool) -> Written {
    let mut out = BufWriter::new(file);
    let header = pcap_file_header();
    let mut packets = 0;
    if out.write_all(&header).is_err() {
        return Written {
            file: out.into_inner().ok(),
            packets,
        };
    }
    let mut engine = EngineInterfaces::default();
    let mut written = header.len() as u64;
    let mut buffer = vec![0u8; SNAPLEN];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // SAFETY: an all-zero sockaddr_ll is valid; recvfrom writes at most
        // the lengths it is given into our buffers.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let received = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_TRUNC | if stopping { libc::MSG_DONTWAIT } else { 0 },
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if received < 0 {
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock if !stopping => continue,
                _ => break, // stopped and drained, or the socket failed
            }
        }
        // Loopback hands every packet to capture twice, leaving and arriving.
        if from.sll_pkttype == libc::PACKET_OUTGOING && is_loopback(&from) {
            continue;
        }
        if engine.reads(socket.as_fd(), from.sll_ifindex) {
            continue;
        }
        let original = received as usize;
        let kept = original.min(SNAPLEN);
        if written + 16 + kept as u64 > MAX_BYTES {
            continue;
        }
        let record = pcap_record_header(kept, original);
        if out.write_all(&record).is_err() || out.write_all(&buffer[..kept]).is_err() {
            break;
        }
        written += 16 + kept as u64;
        packets += 1;
    }
    Written {
        file: out.into_inner().ok(),
        packets,
    }
}

/// The interfaces of a namespace where the fault engine reads, by index,
/// found by name once each.
#[derive(Default)]
struct EngineInterfaces {
    known: HashMap<i32, bool>,
}

impl EngineInterfaces {
    fn reads(&mut self, socket: std::os::fd::BorrowedFd<'_>, index: i32) -> bool {
        *self.known.entry(index).or_insert_with(|| {
            sys::interface_name_of(socket, index)
                .is_some_and(|name| crate::os::netlink::is_fault_engine_reader(&name))
        })
    }
}

fn is_loopback(from: &libc::sockaddr_ll) -> bool {
    from.sll_hatype == libc::ARPHRD_LOOPBACK
}

fn pcap_file_header() -> Vec<u8> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    header.extend_from_slice(&2u16.to_ne_bytes());
    header.extend_from_slice(&4u16.to_ne_bytes());
    header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
    header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
    header.extend_from_slice(&(SNAPLEN as u32).to_ne_bytes());
    header.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    header
}

fn pcap_record_header(kept: usize, original: usize) -> [u8; 16] {
    let now = crate::os::unix_time();
    let mut record = [0u8; 16];
    record[0..4].copy_from_slice(&(now.as_secs() as u32).to_ne_bytes());
    record[4..8].copy_from_slice(&now.subsec_micros().to_ne_bytes());
    record[8..12].copy_from_slice(&(kept as u32).to_ne_bytes());
    record[12..16].copy_from_slice(&(original as u32).to_ne_bytes());
    record
}

/// Where a test's captures go: `<target dir>/netns-test/<test name>/`,
/// the target directory found from the test binary's place
/// (`target/<profile>/deps/<binary>`), else `./target`.
pub(crate) fn location_for_test(test_name: &str) -> Location {
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(Path::parent)
        .filter(|deps| deps.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| absolute(Path::new("target")));
    Location {
        target,
        leaf: super::file_safe(test_name),
    }
}

/// Where the captures of a command go (`netns-test exec`): the target
/// directory cargo would use from the working directory:
/// `CARGO_TARGET_DIR` (or `CARGO_BUILD_TARGET_DIR`), else `target` in the
/// workspace's root, else `./target`.
pub(crate) fn location_for_command(leaf: String) -> Location {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let from_env = ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|key| std::env::var_os(key).filter(|v| !v.is_empty()))
        .map(|dir| cwd.join(dir));
    let target = from_env.unwrap_or_else(|| {
        workspace_root(&cwd)
            .unwrap_or_else(|| cwd.clone())
            .join("target")
    });
    Location { target, leaf }
}

/// The root of the cargo workspace `dir` is in, as cargo looks for it: the
/// nearest `Cargo.toml` in or above it, or the nearest one from there up
/// with a `[workspace]` table.
fn workspace_root(dir: &Path) -> Option<PathBuf> {
    let manifest = |d: &Path| std::fs::read_to_string(d.join("Cargo.toml")).ok();
    let package = dir.ancestors().find(|d| manifest(d).is_some())?;
    let workspace = package
        .ancestors()
        .find(|d| manifest(d).is_some_and(|text| text.lines().any(|l| l.trim() == "[workspace]")));
    Some(workspace.unwrap_or(package).to_path_buf())
}

fn absolute(path: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_headers_have_the_right_shape() {
        let header = pcap_file_header();
        assert_eq!(header.len(), 24);
        assert_eq!(
            u32::from_ne_bytes(header[0..4].try_into().unwrap()),
            0xa1b2_c3d4
        );
        assert_eq!(u32::from_ne_bytes(header[20..24].try_into().unwrap()), 1);
        let record = pcap_record_header(60, 1500);
        assert_eq!(u32::from_ne_bytes(record[8..12].try_into().unwrap()), 60);
        assert_eq!(u32::from_ne_bytes(record[12..16].try_into().unwrap()), 1500);
    }

    #[test]
    fn capture_directories_are_named_after_the_test() {
        let dir = location_for_test("module::test_name::case_1").path();
        assert!(
            dir.ends_with("netns-test/module__test_name__case_1"),
            "{dir:?}"
        );
        assert!(dir.is_absolute(), "{dir:?}");
    }

    #[test]
    fn a_command_finds_the_workspace_root() {
        let top = tempfile::tempdir().unwrap();
        let member = top.path().join("crates/member/src");
        std::fs::create_dir_all(&member).unwrap();
        std::fs::write(
            top.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\"]\n",
        )
        .unwrap();
        std::fs::write(
            top.path().join("crates/member/Cargo.toml"),
            "[package]\nname = \"m\"\n",
        )
        .unwrap();
        assert_eq!(workspace_root(&member).as_deref(), Some(top.path()));
        // A package alone is its own root.
        std::fs::remove_file(top.path().join("Cargo.toml")).unwrap();
        assert_eq!(
            workspace_root(&member).as_deref(),
            Some(top.path().join("crates/member").as_path())
        );
    }
}
