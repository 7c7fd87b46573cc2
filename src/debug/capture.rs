//! Packet capture: every packet on every interface of a namespace, `lo`
//! included, into a pcap file that Wireshark and tcpdump read.
//!
//! One `AF_PACKET` socket (all protocols, all interfaces) made inside the
//! namespace before the test body runs, and one thread writing what it
//! receives. Nothing of this exists unless capture is asked for.

use crate::error::Error;
use crate::os::sys;
use nix::libc;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// A running capture.
pub(crate) struct Capture {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing the calling thread's network namespace into `path`.
    pub(crate) fn start(path: PathBuf) -> Result<Capture, Error> {
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
        if let Some(dir) = path.parent() {
            sys::create_private_dir_all(dir)?;
        }
        // Packets may hold secrets: the file and its directory are the user's alone.
        let file = sys::create_private_file(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("netns-test-capture".into())
                .spawn(move || write_packets(socket, BufWriter::new(file), &stop))
                .map_err(|e| Error::new("spawn the capture thread", e))?
        };
        Ok(Capture {
            path,
            stop,
            writer: Some(writer),
        })
    }

    /// Stops after the packets already received, and returns the file.
    pub(crate) fn finish(mut self) -> PathBuf {
        self.stop_and_join();
        self.path.clone()
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_and_join();
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

/// Receives packets until told to stop, then drains what is queued.
fn write_packets(socket: OwnedFd, mut out: BufWriter<File>, stop: &AtomicBool) {
    let header = pcap_file_header();
    if out.write_all(&header).is_err() {
        return;
    }
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
    }
    let _ = out.flush();
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

/// Where a test's captures go: `<target dir>/netns-test/<test name>/`, the
/// target directory found from the test binary's place
/// (`target/<profile>/deps/<binary>`), else `./target`.
pub(crate) fn directory_for(test_name: &str) -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(Path::parent)
        .filter(|deps| deps.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("netns-test").join(super::file_safe(test_name))
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
        let dir = directory_for("module::test_name::case_1");
        assert!(
            dir.ends_with("netns-test/module__test_name__case_1"),
            "{dir:?}"
        );
    }
}
