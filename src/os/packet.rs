//! `AF_PACKET` sockets for the fault engine: one that takes every frame an
//! interface receives (with its 802.1Q tag), one that sends frames out of an
//! interface past its queueing discipline, and the ethtool call that makes
//! the kernel hand over whole, checksummed frames.

use crate::error::Error;
use crate::os::uapi::ethtool::{ETHTOOL_GLINK, ETHTOOL_STXCSUM};
use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;
/// The buffer of each of the engine's sockets, in the kernel's accounting
/// (a frame counts its buffer's true size: about 2.3 KB for a full-size
/// frame, 0.8 KB for a small one): room for what arrives while the engine
/// thread waits for a CPU, about 1800 full-size frames (10 ms of a
/// 2 Gbit/s stream) or 5000 small ones. It is kernel memory the process
/// pays for each impaired direction when it is flooded.
pub(crate) const BUFFER_BYTES: libc::c_int = 4 << 20;

fn packet_socket(protocol: u16, flags: libc::c_int) -> Result<OwnedFd, Error> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::c_int::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(Error::last_os("socket(AF_PACKET, SOCK_RAW)"));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads `size` bytes from `value`, which lives across the call.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const value).cast(), size) };
    rc == 0
}

/// A buffer of [`BUFFER_BYTES`], past `net.core.[rw]mem_max` where the
/// process may (CAP_NET_ADMIN over the socket's namespace, which rootless
/// nodes give too), else as large as that allows.
fn large_buffer(fd: &OwnedFd, force: libc::c_int, plain: libc::c_int) {
    if !set_int(fd, libc::SOL_SOCKET, force, BUFFER_BYTES) {
        set_int(fd, libc::SOL_SOCKET, plain, BUFFER_BYTES);
    }
}

fn bind(fd: &OwnedFd, index: i32, protocol: u16, what: &'static str) -> Result<(), Error> {
    // SAFETY: an all-zero sockaddr_ll is a valid value of this plain C struct.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = index;
    let size = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: bind reads `size` bytes of the address, which lives across the call.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const address).cast(), size) };
    if rc != 0 {
        return Err(Error::last_os(what));
    }
    Ok(())
}

/// A non-blocking socket that receives every frame arriving on the
/// interface with `index` (in the calling thread's network namespace),
/// before the interface's ingress filters, each with its 802.1Q tag (see
/// [`Received`]). Frames the interface sends are not seen.
pub(crate) fn receiver(index: i32) -> Result<OwnedFd, Error> {
    // Protocol 0 at first: a socket made with ETH_P_ALL already listens on
    // every interface, and binding it then waits for an RCU grace period
    // (synchronize_net, about 10 ms) to unhook it. Bound with ETH_P_ALL, it
    // is hooked once, on this interface only.
    let fd = packet_socket(0, libc::SOCK_NONBLOCK)?;
    if !set_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1) {
        return Err(Error::last_os("setsockopt(PACKET_IGNORE_OUTGOING)"));
    }
    if !set_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1) {
        return Err(Error::last_os("setsockopt(PACKET_AUXDATA)"));
    }
    large_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
    bind(&fd, index, ETH_P_ALL, "bind(AF_PACKET) to receive")?;
    Ok(fd)
}

/// A non-blocking socket that sends frames out of the interface with
/// `index`, straight to its driver: past its queueing discipline and its
/// egress filters. It receives nothing.
pub(crate) fn sender(index: i32) -> Result<OwnedFd, Error> {
    let fd = packet_socket(0, libc::SOCK_NONBLOCK)?;
    if !set_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1) {
        return Err(Error::last_os("setsockopt(PACKET_QDISC_BYPASS)"));
    }
    large_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
    bind(&fd, index, 0, "bind(AF_PACKET) to send")?;
    Ok(fd)
}

/// An ethtool request that reads or writes one value, through any socket
/// of the interface's namespace.
fn ethtool_value(socket: BorrowedFd<'_>, name: &str, cmd: u32, data: u32) -> io::Result<u32> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to; both outlive the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turns transmit checksum offload off on the interface `name` (ethtool's
/// `tx off`). The kernel then completes checksums, and cuts segmentation
/// offload packets into frames, before the interface transmits them: what
/// it passes on is what a wire would carry.
pub(crate) fn checksum_frames(socket: BorrowedFd<'_>, name: &str) -> Result<(), Error> {
    ethtool_value(socket, name, ETHTOOL_STXCSUM, 0)
        .map(|_| ())
        .map_err(|e| Error::new("ioctl(SIOCETHTOOL, ETHTOOL_STXCSUM)", e))
}

/// Waits until the interface `name` transmits: a new veth drops what it is
/// given (its queueing discipline is a placeholder) until the kernel's link
/// watch has handled its carrier, asynchronously, on a worker that a busy
/// machine may run late. Reading the link state (ETHTOOL_GLINK) handles the
/// interface's pending link-watch event at once.
pub(crate) fn settle_link(socket: BorrowedFd<'_>, name: &str) -> Result<(), Error> {
    for _ in 0..1000 {
        let up = ethtool_value(socket, name, ETHTOOL_GLINK, 0)
            .map_err(|e| Error::new("ioctl(SIOCETHTOOL, ETHTOOL_GLINK)", e))?;
        if up != 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(Error::detected(
        format!("wait for {name} to carry frames"),
        io::ErrorKind::TimedOut,
        "its carrier stayed off for a second",
    ))
}

/// The most frames handed to the kernel in one call: what `sendmmsg`
/// takes at most (UIO_MAXIOV).
const MAX_MESSAGES: usize = 1024;

/// Room for one control message carrying a `tpacket_auxdata`, in words (for
/// the alignment control messages need).
// SAFETY: CMSG_SPACE only computes a size.
const CONTROL_WORDS: usize =
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::tpacket_auxdata>() as u32) as usize }
        .div_ceil(8);

/// Frames read from a [`receiver`] socket in one call, into buffers made
/// once: each frame's bytes, and its 802.1Q tag, which the kernel takes out
/// of a frame it receives and reports beside it (PACKET_AUXDATA).
pub(crate) struct Received {
    slots: Vec<Vec<u8>>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    lengths: Vec<usize>,
    /// The tag protocol identifier and tag control information, when the
    /// frame had a tag.
    tags: Vec<Option<(u16, u16)>>,
}

impl Received {
    /// Room for `count` frames of up to `frame_bytes` bytes each.
    pub(crate) fn new(count: usize, frame_bytes: usize) -> Received {
        Received {
            slots: vec![vec![0u8; frame_bytes]; count],
            controls: vec![[0u64; CONTROL_WORDS]; count],
            lengths: Vec::with_capacity(count),
            tags: Vec::with_capacity(count),
        }
    }

    /// How many frames one call takes at most.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Receives what is there, up to [`Received::capacity`] frames, without
    /// waiting (recvmmsg): how many came (none on an error).
    pub(crate) fn receive(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.lengths.clear();
        self.tags.clear();
        let mut iovecs: Vec<libc::iovec> = self
            .slots
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is a valid value of this plain C struct.
        let empty: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(self.controls.iter_mut())
            .map(|(iovec, control)| {
                let mut header = empty;
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                header.msg_hdr.msg_control = control.as_mut_ptr().cast();
                header.msg_hdr.msg_controllen = std::mem::size_of_val(control) as _;
                header
            })
            .collect();
        let n = loop {
            // SAFETY: recvmmsg writes into the buffers and control buffers behind `headers` (each with its length), all alive across the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    headers.as_mut_ptr(),
                    headers.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(error),
            }
        };
        for (header, slot) in headers[..n].iter().zip(&self.slots) {
            self.lengths.push((header.msg_len as usize).min(slot.len()));
            self.tags.push(vlan_tag(&header.msg_hdr));
        }
        Ok(n)
    }

    /// The `i`-th frame received, as it was on the wire: its tag, if it had
    /// one, back between the addresses and the ethertype.
    pub(crate) fn frame(&self, i: usize) -> Vec<u8> {
        let bytes = &self.slots[i][..self.lengths[i]];
        match self.tags[i] {
            Some((tpid, tci)) if bytes.len() >= 12 => {
                let mut frame = Vec::with_capacity(bytes.len() + 4);
                frame.extend_from_slice(&bytes[..12]);
                frame.extend_from_slice(&tpid.to_be_bytes());
                frame.extend_from_slice(&tci.to_be_bytes());
                frame.extend_from_slice(&bytes[12..]);
                frame
            }
            _ => bytes.to_vec(),
        }
    }
}

/// The 802.1Q (or 802.1ad) tag a PACKET_AUXDATA control message reports.
fn vlan_tag(header: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `header` is a msghdr recvmmsg filled, whose control buffer (with its length) is alive; the CMSG_ macros only walk within it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header CMSG_FIRSTHDR or CMSG_NXTHDR returned lies within the control buffer.
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_PACKET && c.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: the kernel wrote a whole tpacket_auxdata as this message's data; it may be unaligned.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                libc::ETH_P_8021Q as u16
            };
            return Some((tpid, aux.tp_vlan_tci));
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    None
}

/// Sends `frames` in order without waiting (sendmmsg, up to 1024 per
/// call), skipping each frame the kernel refuses; stops early, leaving the
/// rest, when `go_on` says so before a call. Returns how many frames were
/// refused and how many were left. Each frame's message header is made
/// once and a refusal costs one call, so the work is linear in the frames;
/// when the interface is down or gone, the rest is refused at once.
pub(crate) fn send_all(
    fd: BorrowedFd<'_>,
    frames: &[Vec<u8>],
    go_on: impl Fn() -> bool,
) -> (u64, usize) {
    let mut refused = 0u64;
    // SAFETY: an all-zero mmsghdr is a valid value of this plain C struct.
    let empty: libc::mmsghdr = unsafe { std::mem::zeroed() };
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(MAX_MESSAGES.min(frames.len()));
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(iovecs.capacity());
    for (k, window) in frames.chunks(MAX_MESSAGES).enumerate() {
        let start = k * MAX_MESSAGES;
        iovecs.clear();
        iovecs.extend(window.iter().map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        }));
        headers.clear();
        headers.extend(iovecs.iter_mut().map(|iovec| {
            let mut header = empty;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header
        }));
        let mut at = 0;
        while at < headers.len() {
            if !go_on() {
                return (refused, frames.len() - start - at);
            }
            let rest = &mut headers[at..];
            // SAFETY: sendmmsg reads the frames behind `rest`'s iovecs, all alive across the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                at += n as usize;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV) => {
                    let rest = frames.len() - start - at;
                    return (refused + rest as u64, 0);
                }
                _ => {
                    refused += 1;
                    at += 1;
                }
            }
        }
    }
    (refused, 0)
}

/// How many frames the kernel dropped because the socket's buffer was
/// full, since the last call (PACKET_STATISTICS).
pub(crate) fn drops(fd: BorrowedFd<'_>) -> u64 {
    let mut stats = [0u32; 2];
    let mut size = std::mem::size_of_val(&stats) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `size` bytes into `stats`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut size,
        )
    };
    if rc == 0 { u64::from(stats[1]) } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_receive_that_finds_nothing_reports_no_frames() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..4u8 {
            sender
                .send_to(&[i; 8], receiver.local_addr().unwrap())
                .unwrap();
        }
        let mut received = Received::new(4, 64);
        // Give loopback a moment to queue all four.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(received.receive(receiver.as_fd()).unwrap(), 4);
        assert_eq!(received.frame(3), [3u8; 8]);
        // Nothing more: no stale lengths, which would replay the last batch.
        assert_eq!(received.receive(receiver.as_fd()).unwrap(), 0);
        assert!(received.lengths.is_empty(), "{:?}", received.lengths);
    }

    #[test]
    fn sending_into_a_full_socket_costs_a_call_per_frame() {
        // A datagram socket nobody reads: full after a few hundred frames,
        // then every frame is refused. 40,000 frames took 63 s when each
        // refusal made the headers of all the rest again; now about a
        // millisecond per thousand.
        let (sender, _receiver) = std::os::unix::net::UnixDatagram::pair().unwrap();
        sender.set_nonblocking(true).unwrap();
        let frames = vec![vec![7u8; 100]; 40_000];
        let start = std::time::Instant::now();
        let (refused, left) = send_all(sender.as_fd(), &frames, || true);
        let took = start.elapsed();
        assert!(refused > 39_000, "{refused}");
        assert_eq!(left, 0);
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
        // Told to stop, it stops before the next call.
        let calls = std::cell::Cell::new(0);
        let (refused, left) = send_all(sender.as_fd(), &frames, || {
            calls.set(calls.get() + 1);
            calls.get() <= 10
        });
        assert_eq!((refused, left), (10, 40_000 - 10));
    }
}
