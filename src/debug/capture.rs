//! Packet capture: every packet on every interface of a namespace, `lo`
//! included, into a pcapng file that Wireshark and tcpdump read: an
//! interface description block per interface, with its name, and an
//! enhanced packet block per packet, with a comment on each frame the fault
//! engine did something to.
//!
//! One `AF_PACKET` socket (all protocols, all interfaces) made inside the
//! namespace before the test body runs, and one thread writing what it
//! receives. Nothing of this exists unless capture is asked for.
//!
//! A frame an impaired direction carries shows once, as its node sent it,
//! on its own interface (`eth0`), with what the engine did to it: the
//! engine hands the capture every frame it takes ([`Capture::sink`]), and
//! the copies the kernel shows on the engine's interfaces (`f-eth0`, where
//! `eth0`'s egress filter redirects them, and `f-eth0e`, where the engine
//! reads them) are left out. (Without the engine's records, as for a
//! network made outside the test's namespace, the frame shows on
//! `f-eth0`, as its node sent it.) Frames the kernel dropped before the
//! engine read them (`LinkCounters::missed`) are not in the capture.
//!
//! Where it goes: `<target dir>/netns-test/<name>/`, reached from `/` one
//! component at a time with nothing followed that someone else could have
//! planted ([`PrivateDir::open_trusted`]), the file created with
//! `O_EXCL | O_NOFOLLOW`, mode 0600. With the `all` policy the file is made
//! when the capture starts; with `failed`, packets go to an unnamed
//! temporary file, copied there only when the test fails: a passing test
//! writes nothing, and makes no directory.

use crate::error::Error;
use crate::netns::FrameSink;
use crate::os::private_dir::PrivateDir;
use crate::os::sys;
use crate::settings::Policy;
use nix::libc;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A capture stops writing packets past this size.
const MAX_BYTES: u64 = 64 << 20;
/// Bytes kept of each packet.
const SNAPLEN: usize = 65535;
/// pcap link type: Ethernet (what veth, bridges and `lo` deliver).
const LINKTYPE_ETHERNET: u16 = 1;
/// How many of the engine's records wait for the writer at most; past
/// that the engine's frames are lost to the capture, never delayed.
const RECORDS: usize = 1 << 16;

/// What the fault engine hands a capture.
enum Record {
    /// A frame `interface` sent, as the engine took it, when, and what it
    /// did to it.
    Frame {
        interface: Arc<str>,
        time: Duration,
        frame: Vec<u8>,
        comment: Option<String>,
    },
    /// From now on the engine hands over what the kernel shows on this
    /// interface: its frames there are left out.
    Fed(String),
}

/// The engine's way into a capture, for one interface.
struct Sink {
    interface: Arc<str>,
    records: mpsc::SyncSender<Record>,
}

impl FrameSink for Sink {
    fn frame(&self, frame: &[u8], comment: Option<String>) {
        let _ = self.records.try_send(Record::Frame {
            interface: Arc::clone(&self.interface),
            time: crate::os::unix_time(),
            frame: frame.to_vec(),
            comment,
        });
    }
}

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
    /// The fault engine's records, to the writer.
    records: mpsc::SyncSender<Record>,
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
        let (records, from_engine) = mpsc::sync_channel(RECORDS);
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("netns-test-capture".into())
                .spawn(move || write_packets(socket, from_engine, file, &stop))
                .map_err(|e| Error::new("spawn the capture thread", e))?
        };
        Ok(Capture {
            location: location.clone(),
            name: name.to_owned(),
            placed,
            stop,
            writer: Some(writer),
            records,
        })
    }

    /// Where the fault engine records the frames `interface` sends through
    /// it (with what it did to each): from now on the capture shows them
    /// on `interface`, and leaves out what the kernel shows of them on
    /// `redirect`.
    pub(crate) fn sink(&self, interface: &str, redirect: &str) -> Arc<dyn FrameSink> {
        // Sent before the engine takes a frame: the writer reads it before
        // any frame the kernel shows on `redirect`.
        let _ = self.records.send(Record::Fed(redirect.to_owned()));
        Arc::new(Sink {
            interface: interface.into(),
            records: self.records.clone(),
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
/// writes them, and the engine's records, as they come; returns the file
/// and how many packets it holds.
fn write_packets(
    socket: OwnedFd,
    from_engine: mpsc::Receiver<Record>,
    file: File,
    stop: &AtomicBool,
) -> Written {
    let mut out = Pcapng {
        out: BufWriter::new(file),
        interfaces: HashMap::new(),
        written: 0,
        packets: 0,
    };
    if out.write(&section_header()).is_err() {
        return out.done();
    }
    let mut names = InterfaceNames::default();
    let mut fed: HashSet<String> = HashSet::new();
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
        // The engine's records first: what it said before this frame came.
        if engine_records(&from_engine, &mut out, &mut fed).is_err() {
            break;
        }
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
        let name = names.of(socket.as_fd(), from.sll_ifindex);
        if crate::os::netlink::is_fault_engine_reader(name) || fed.contains(name) {
            continue;
        }
        let original = received as usize;
        let kept = original.min(SNAPLEN);
        let time = crate::os::unix_time();
        if out
            .packet(name, time, &buffer[..kept], original, None)
            .is_err()
        {
            break;
        }
    }
    let _ = engine_records(&from_engine, &mut out, &mut fed);
    out.done()
}

/// Writes the records the engine has sent so far.
fn engine_records(
    from_engine: &mpsc::Receiver<Record>,
    out: &mut Pcapng,
    fed: &mut HashSet<String>,
) -> std::io::Result<()> {
    while let Ok(record) = from_engine.try_recv() {
        match record {
            Record::Fed(name) => {
                fed.insert(name);
            }
            Record::Frame {
                interface,
                time,
                frame,
                comment,
            } => {
                let kept = frame.len().min(SNAPLEN);
                let comment = comment.as_deref();
                out.packet(&interface, time, &frame[..kept], frame.len(), comment)?;
            }
        }
    }
    Ok(())
}

/// The names of a namespace's interfaces, by index, asked for once each
/// (`?` when the interface is gone).
#[derive(Default)]
struct InterfaceNames {
    known: HashMap<i32, String>,
}

impl InterfaceNames {
    fn of(&mut self, socket: std::os::fd::BorrowedFd<'_>, index: i32) -> &str {
        self.known
            .entry(index)
            .or_insert_with(|| sys::interface_name_of(socket, index).unwrap_or_else(|| "?".into()))
    }
}

/// A pcapng file being written: its interfaces (an interface description
/// block each, written before its first packet), what it holds.
struct Pcapng {
    out: BufWriter<File>,
    /// Interface name → its id in the file.
    interfaces: HashMap<String, u32>,
    written: u64,
    packets: u64,
}

impl Pcapng {
    fn write(&mut self, block: &[u8]) -> std::io::Result<()> {
        self.out.write_all(block)?;
        self.written += block.len() as u64;
        Ok(())
    }

    /// A packet of `interface`, at `time` since the epoch, `original`
    /// bytes long (`data` of them kept), with a comment: skipped past
    /// [`MAX_BYTES`].
    fn packet(
        &mut self,
        interface: &str,
        time: Duration,
        data: &[u8],
        original: usize,
        comment: Option<&str>,
    ) -> std::io::Result<()> {
        let id = match self.interfaces.get(interface) {
            Some(id) => *id,
            None => {
                let block = interface_description(interface);
                if self.written + block.len() as u64 > MAX_BYTES {
                    return Ok(());
                }
                self.write(&block)?;
                let id = self.interfaces.len() as u32;
                self.interfaces.insert(interface.to_owned(), id);
                id
            }
        };
        let block = enhanced_packet(id, time, data, original, comment);
        if self.written + block.len() as u64 > MAX_BYTES {
            return Ok(());
        }
        self.write(&block)?;
        self.packets += 1;
        Ok(())
    }

    fn done(self) -> Written {
        Written {
            packets: self.packets,
            file: self.out.into_inner().ok(),
        }
    }
}

fn is_loopback(from: &libc::sockaddr_ll) -> bool {
    from.sll_hatype == libc::ARPHRD_LOOPBACK
}

/// A pcapng block: type, total length, body (padded to 4), total length.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().next_multiple_of(4);
    let total = (12 + padded) as u32;
    let mut block = Vec::with_capacity(total as usize);
    block.extend_from_slice(&kind.to_ne_bytes());
    block.extend_from_slice(&total.to_ne_bytes());
    block.extend_from_slice(body);
    block.resize(8 + padded, 0);
    block.extend_from_slice(&total.to_ne_bytes());
    block
}

/// A pcapng option: code, length, value padded to 4.
fn option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut option = Vec::with_capacity(4 + value.len().next_multiple_of(4));
    option.extend_from_slice(&code.to_ne_bytes());
    option.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    option.extend_from_slice(value);
    option.resize(4 + value.len().next_multiple_of(4), 0);
    option
}

/// The end of a list of options.
const END_OF_OPTIONS: [u8; 4] = [0; 4];

/// The section header block: byte order, version 1.0, length unknown.
fn section_header() -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(&0x1A2B_3C4Du32.to_ne_bytes());
    body.extend_from_slice(&1u16.to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(-1i64).to_ne_bytes());
    block(0x0A0D_0D0A, &body)
}

/// An interface description block: Ethernet, the snapshot length, the
/// interface's name (`if_name`); timestamps in microseconds (the default).
fn interface_description(name: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(SNAPLEN as u32).to_ne_bytes());
    body.extend(option(2, name.as_bytes()));
    body.extend_from_slice(&END_OF_OPTIONS);
    block(1, &body)
}

/// An enhanced packet block: the interface's id, the time in microseconds
/// since the epoch, the bytes kept, the original length, and a comment
/// (`opt_comment`) when there is one.
fn enhanced_packet(
    interface: u32,
    time: Duration,
    data: &[u8],
    original: usize,
    comment: Option<&str>,
) -> Vec<u8> {
    let micros = time.as_micros() as u64;
    let mut body = Vec::with_capacity(20 + data.len().next_multiple_of(4) + 8);
    body.extend_from_slice(&interface.to_ne_bytes());
    body.extend_from_slice(&((micros >> 32) as u32).to_ne_bytes());
    body.extend_from_slice(&(micros as u32).to_ne_bytes());
    body.extend_from_slice(&(data.len() as u32).to_ne_bytes());
    body.extend_from_slice(&(original as u32).to_ne_bytes());
    body.extend_from_slice(data);
    body.resize(20 + data.len().next_multiple_of(4), 0);
    if let Some(comment) = comment {
        body.extend(option(1, comment.as_bytes()));
        body.extend_from_slice(&END_OF_OPTIONS);
    }
    block(6, &body)
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

    /// The blocks of a pcapng file: (type, body).
    fn blocks(file: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut blocks = Vec::new();
        let mut at = 0;
        while at + 12 <= file.len() {
            let word = |i: usize| u32::from_ne_bytes(file[i..i + 4].try_into().unwrap());
            let (kind, total) = (word(at), word(at + 4) as usize);
            assert_eq!(total % 4, 0);
            assert_eq!(word(at + total - 4) as usize, total, "trailing length");
            blocks.push((kind, file[at + 8..at + total - 4].to_vec()));
            at += total;
        }
        assert_eq!(at, file.len());
        blocks
    }

    #[test]
    fn pcapng_blocks_have_the_right_shape() {
        let mut file = section_header();
        file.extend(interface_description("eth0"));
        let time = Duration::from_micros(0x1_0000_0002);
        file.extend(enhanced_packet(
            0,
            time,
            &[1, 2, 3, 4, 5],
            1500,
            Some("lost (loss)"),
        ));
        file.extend(enhanced_packet(0, time, &[9; 60], 60, None));
        let blocks = blocks(&file);
        let kinds: Vec<u32> = blocks.iter().map(|b| b.0).collect();
        assert_eq!(kinds, [0x0A0D_0D0A, 1, 6, 6]);
        assert_eq!(blocks[0].1[..4], 0x1A2B_3C4Du32.to_ne_bytes());
        // if_name "eth0" after linktype, reserved, snaplen.
        let idb = &blocks[1].1;
        assert_eq!(idb[..2], LINKTYPE_ETHERNET.to_ne_bytes());
        assert_eq!(idb[8..10], 2u16.to_ne_bytes());
        assert_eq!(&idb[12..16], b"eth0");
        let epb = &blocks[2].1;
        let word = |i: usize| u32::from_ne_bytes(epb[i..i + 4].try_into().unwrap());
        assert_eq!((word(4), word(8)), (1, 2), "microseconds, high and low");
        assert_eq!((word(12), word(16)), (5, 1500));
        assert_eq!(&epb[20..25], &[1, 2, 3, 4, 5]);
        // opt_comment after the data, padded to 4.
        assert_eq!(epb[28..30], 1u16.to_ne_bytes());
        assert_eq!(epb[30..32], 11u16.to_ne_bytes());
        assert_eq!(&epb[32..43], b"lost (loss)");
        assert_eq!(blocks[3].1.len(), 20 + 60, "no comment, no options");
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
