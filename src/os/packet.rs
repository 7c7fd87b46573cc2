//! `AF_PACKET` sockets for the fault engine: one that takes every frame an
//! interface receives, one that sends frames out of an interface past its
//! queueing discipline, and the ethtool call that makes the kernel hand
//! over whole, checksummed frames. Also the engine's wake-up (eventfd) and
//! wait (ppoll).

use crate::error::Error;
use crate::os::uapi::ethtool::{ETHTOOL_GLINK, ETHTOOL_STXCSUM};
use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;
/// What the engine asks of its sockets' buffers: room for bursts of
/// thousands of frames, so that no frame is dropped outside the model.
const BUFFER_BYTES: libc::c_int = 32 << 20;

fn last_error(operation: &'static str) -> Error {
    Error::new(operation, io::Error::last_os_error())
}

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
        return Err(last_error("socket(AF_PACKET, SOCK_RAW)"));
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

/// A large buffer: past `net.core.[rw]mem_max` where the process may
/// (CAP_NET_ADMIN over the host), else as large as that allows.
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
        return Err(last_error(what));
    }
    Ok(())
}

/// A non-blocking socket that receives every frame arriving on the
/// interface with `index` (in the calling thread's network namespace),
/// before the interface's ingress filters. Frames the interface sends are
/// not seen.
pub(crate) fn receiver(index: i32) -> Result<OwnedFd, Error> {
    // Protocol 0 at first: a socket made with ETH_P_ALL already listens on
    // every interface, and binding it then waits for an RCU grace period
    // (synchronize_net, about 10 ms) to unhook it. Bound with ETH_P_ALL, it
    // is hooked once, on this interface only.
    let fd = packet_socket(0, libc::SOCK_NONBLOCK)?;
    if !set_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1) {
        return Err(last_error("setsockopt(PACKET_IGNORE_OUTGOING)"));
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
        return Err(last_error("setsockopt(PACKET_QDISC_BYPASS)"));
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

/// One message header for each of `iovecs`, for recvmmsg and sendmmsg.
fn message_headers(iovecs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    // SAFETY: an all-zero mmsghdr is a valid value of this plain C struct.
    let empty: libc::mmsghdr = unsafe { std::mem::zeroed() };
    iovecs
        .iter_mut()
        .map(|iovec| {
            let mut header = empty;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect()
}

/// Receives up to `buffers.len()` frames without waiting (recvmmsg): how
/// many, their lengths in `lengths` (empty when none came, or on an error).
pub(crate) fn receive_many(
    fd: BorrowedFd<'_>,
    buffers: &mut [Vec<u8>],
    lengths: &mut Vec<usize>,
) -> io::Result<usize> {
    lengths.clear();
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut headers = message_headers(&mut iovecs);
    loop {
        // SAFETY: recvmmsg writes into the buffers behind `headers`' iovecs (each with its length), all alive across the call.
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
            lengths.extend(
                headers[..n as usize]
                    .iter()
                    .zip(buffers.iter())
                    .map(|(h, b)| (h.msg_len as usize).min(b.len())),
            );
            return Ok(n as usize);
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(error),
        }
    }
}

/// Sends frames without waiting (sendmmsg): how many the kernel took, or
/// the error that stopped the first.
pub(crate) fn send_many(fd: BorrowedFd<'_>, frames: &[Vec<u8>]) -> io::Result<usize> {
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let mut headers = message_headers(&mut iovecs);
    loop {
        // SAFETY: sendmmsg reads the frames behind `headers`' iovecs, all alive across the call.
        let n = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
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

/// An eventfd: a counter another thread bumps to wake a waiting one.
pub(crate) fn event() -> Result<OwnedFd, Error> {
    // SAFETY: eventfd(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(last_error("eventfd"));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bumps an eventfd.
pub(crate) fn notify(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: write reads the 8 bytes of `one`, which lives across the call.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Resets an eventfd after a wake-up.
pub(crate) fn drain(fd: BorrowedFd<'_>) {
    let mut count = [0u8; 8];
    // SAFETY: read writes at most 8 bytes into `count`, which we own.
    unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no
/// limit), with nanosecond precision. Marks the readable ones in `ready`.
pub(crate) fn wait(fds: &[BorrowedFd<'_>], timeout: Option<Duration>, ready: &mut Vec<bool>) {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let spec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let spec_ptr = spec
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const libc::timespec);
    // SAFETY: ppoll reads and writes `polled` (its length given) and reads the timespec, both alive across the call.
    let rc = unsafe {
        libc::ppoll(
            polled.as_mut_ptr(),
            polled.len() as libc::nfds_t,
            spec_ptr,
            std::ptr::null(),
        )
    };
    ready.clear();
    ready.extend(
        polled
            .iter()
            .map(|p| rc > 0 && p.revents & (libc::POLLIN | libc::POLLERR) != 0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_receive_that_finds_nothing_reports_no_lengths() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..4u8 {
            sender
                .send_to(&[i; 8], receiver.local_addr().unwrap())
                .unwrap();
        }
        let mut buffers = vec![vec![0u8; 64]; 4];
        let mut lengths = Vec::new();
        // Give loopback a moment to queue all four.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            receive_many(receiver.as_fd(), &mut buffers, &mut lengths).unwrap(),
            4
        );
        assert_eq!(lengths, [8; 4]);
        // Nothing more: no stale lengths, which would replay the last batch.
        assert_eq!(
            receive_many(receiver.as_fd(), &mut buffers, &mut lengths).unwrap(),
            0
        );
        assert!(lengths.is_empty(), "{lengths:?}");
    }
}
