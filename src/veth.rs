//! `#[netns_test(veth)]`: a veth pair from the test's namespace to the host,
//! with addresses and names unique across threads and processes.
//!
//! Each pair takes a *slot* `0..32768`. A slot fixes the host-side name
//! (`ntveth<slot>`), its interface index, an IPv4 /30 in 198.18.0.0/15 and an
//! IPv6 /64 in a fixed ULA prefix. A slot is leased by binding an abstract
//! unix socket named after it in the host's network namespace: the kernel
//! releases the lease when the process dies, even by SIGKILL, and no file is
//! involved. A leased slot whose host-side interface still exists (the kernel
//! removes it about 40 ms after the test's namespace dies; or its owner died
//! while something kept the namespace alive) is skipped, and the stale
//! interface is deleted in the background.

use crate::error::Error;
use crate::os::netlink::{self, Netlink};
use crate::pool::{self, VETH_SLOTS as SLOTS};
pub(crate) use crate::veth_pair::{Veth, VethSpec};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Host-side interface names: this prefix and the slot number (≤ 11 bytes).
pub(crate) const HOST_NAME_PREFIX: &str = "ntveth";
/// The test-side interface's name.
const NS_NAME: &str = "veth0";
/// The test-side interface's index (1 is `lo`).
const NS_INDEX: i32 = 2;
/// Host-side interface indexes: this base plus the slot, far above the
/// indexes the kernel hands out in order.
const HOST_INDEX_BASE: i32 = 0x4e00_0000;

/// A slot, leased while this lives.
struct Lease {
    slot: u32,
    _socket: OwnedFd,
}

/// A veth pair prepared on the host's side, before the test thread leaves it.
pub(crate) struct VethSetup {
    veth: Veth,
    host_netlink: Netlink,
    host_ns: OwnedFd,
    _lease: Lease,
}

impl VethSetup {
    /// Leases a slot and opens what the host side needs. Runs on a thread in
    /// the host's network namespace.
    pub(crate) fn prepare(spec: &VethSpec) -> Result<VethSetup, Error> {
        refuse_subnets_the_host_uses(spec)?;
        let lease = lease_a_slot()?;
        let slot = lease.slot;
        let (pool_host_ipv4, pool_host_ipv6) = pool::veth_end(slot, 1);
        let (pool_ns_ipv4, pool_ns_ipv6) = pool::veth_end(slot, 2);
        let (ns_ipv4, host_ipv4, ipv4_prefix) = match spec.ipv4 {
            Some(pair) => (pair.ns, pair.host, pair.prefix),
            None => (pool_ns_ipv4, pool_host_ipv4, 30),
        };
        let (ns_ipv6, host_ipv6, ipv6_prefix) = match spec.ipv6 {
            Some(pair) => (pair.ns, pair.host, pair.prefix),
            None => (pool_ns_ipv6, pool_host_ipv6, 64),
        };
        Ok(VethSetup {
            veth: Veth {
                ns_name: NS_NAME.into(),
                host_name: host_name(slot),
                host_index: HOST_INDEX_BASE + slot as i32,
                ns_ipv4,
                host_ipv4,
                ipv4_prefix,
                ns_ipv6,
                host_ipv6,
                ipv6_prefix,
                mtu: spec.mtu,
            },
            host_netlink: Netlink::open()?,
            host_ns: crate::os::sys::open_thread_ns(crate::os::sys::NsKind::Net)?,
            _lease: lease,
        })
    }

    /// The pair's names and addresses.
    pub(crate) fn veth(&self) -> &Veth {
        &self.veth
    }

    /// Creates the pair from the calling thread, now in the test's fresh
    /// namespace: one batch of messages there (link, addresses, default
    /// routes) and one in the host (peer up, its addresses).
    pub(crate) fn create(&mut self) -> Result<(), Error> {
        let v = &self.veth;
        let mut here = Netlink::open()?;
        here.run(vec![
            netlink::new_veth(
                NS_NAME,
                NS_INDEX,
                &v.host_name,
                v.host_index,
                self.host_ns.as_fd(),
                v.mtu,
            ),
            netlink::add_address(NS_INDEX, IpAddr::V4(v.ns_ipv4), v.ipv4_prefix),
            netlink::add_address(NS_INDEX, IpAddr::V6(v.ns_ipv6), v.ipv6_prefix),
            netlink::add_default_route(NS_INDEX, IpAddr::V4(v.host_ipv4)),
            netlink::add_default_route(NS_INDEX, IpAddr::V6(v.host_ipv6)),
        ])
        .map_err(explain_host_refusal)?;
        self.host_netlink
            .run(vec![
                netlink::set_up(v.host_index, &v.host_name),
                netlink::add_address(v.host_index, IpAddr::V4(v.host_ipv4), v.ipv4_prefix),
                netlink::add_address(v.host_index, IpAddr::V6(v.host_ipv6), v.ipv6_prefix),
            ])
            .map_err(explain_host_refusal)
    }
}

/// Deletes the host side of `veth` (and so the pair) now, from a thread in
/// the host's namespace. For tests that time out: their namespace may live
/// on with their abandoned thread.
pub(crate) fn delete_now(veth: &Veth) -> Result<(), Error> {
    Netlink::open()?.run(vec![netlink::delete_link(veth.host_index, &veth.host_name)])
}

fn explain_host_refusal(error: Error) -> Error {
    if error.raw_os_error() == Some(nix::libc::EPERM) {
        error.with_hint(
            "netns-test: a veth pair to the host needs CAP_NET_ADMIN in the host's network namespace; \
             run the tests as root (`sudo -E cargo test`)."
                .into(),
        )
    } else {
        error
    }
}

/// User-given addresses must not put a subnet the host already has on an
/// interface onto the veth: the host would route its own traffic to the test
/// (or lose its gateway, if the host's end took the gateway's address).
fn refuse_subnets_the_host_uses(spec: &VethSpec) -> Result<(), Error> {
    if spec.ipv4.is_none() && spec.ipv6.is_none() {
        return Ok(());
    }
    let addresses =
        nix::ifaddrs::getifaddrs().map_err(|e| Error::new("getifaddrs on the host", e.into()))?;
    for interface in addresses {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        if let Some(subnet) = user_subnet_containing(spec, ip) {
            return Err(Error::detected(
                "check the veth addresses",
                std::io::ErrorKind::AddrInUse,
                format!(
                    "the subnet {subnet} overlaps the host's own address {ip} on {}: \
                     pick a subnet the host does not use (or leave the addresses out for a unique one)",
                    interface.interface_name
                ),
            ));
        }
    }
    Ok(())
}

/// The user-given subnet of `spec` that contains `ip`, written `net/len`.
fn user_subnet_containing(spec: &VethSpec, ip: IpAddr) -> Option<String> {
    fn same_network(a: u128, b: u128, width: u32, prefix: u8) -> bool {
        let shift = width - u32::from(prefix);
        shift >= width || a >> shift == b >> shift
    }
    match ip {
        IpAddr::V4(ip) => spec.ipv4.and_then(|pair| {
            same_network(
                u32::from(ip).into(),
                u32::from(pair.ns).into(),
                32,
                pair.prefix,
            )
            .then(|| format!("{}/{}", pair.ns, pair.prefix))
        }),
        IpAddr::V6(ip) => spec.ipv6.and_then(|pair| {
            same_network(ip.into(), pair.ns.into(), 128, pair.prefix)
                .then(|| format!("{}/{}", pair.ns, pair.prefix))
        }),
    }
}

fn host_name(slot: u32) -> String {
    format!("{HOST_NAME_PREFIX}{slot}")
}

/// The next slot this process tries: a rotating counter from a random start,
/// so that processes rarely contend and a slot just given back (whose
/// interface the kernel may still be removing) is not tried again soon.
fn next_slot() -> u32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    NEXT.get_or_init(|| {
        let nanos = crate::os::unix_time().subsec_nanos();
        AtomicU32::new(nanos ^ std::process::id().wrapping_mul(2_654_435_761))
    })
    .fetch_add(1, Ordering::Relaxed)
        % SLOTS
}

fn lease_a_slot() -> Result<Lease, Error> {
    for _ in 0..SLOTS {
        if let Some(lease) = try_lease(next_slot())? {
            return Ok(lease);
        }
    }
    Err(Error::detected(
        "lease a veth slot",
        std::io::ErrorKind::Other,
        format!("all {SLOTS} slots are in use"),
    ))
}

/// Leases `slot` if no one holds it and its host-side interface is gone.
fn try_lease(slot: u32) -> Result<Option<Lease>, Error> {
    let Some(lease) = bind_lease(slot)? else {
        return Ok(None);
    };
    let name = host_name(slot);
    match nix::net::if_::if_nametoindex(name.as_str()) {
        Err(_) => Ok(Some(lease)),
        Ok(index) => {
            delete_stale_in_background(lease, name, index as i32);
            Ok(None)
        }
    }
}

/// Binds the slot's lease socket, or `None` when someone holds it.
fn bind_lease(slot: u32) -> Result<Option<Lease>, Error> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
    let socket = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::new("socket(AF_UNIX)", e.into()))?;
    let name = format!("netns-test/veth/{slot}");
    let address = UnixAddr::new_abstract(name.as_bytes())
        .map_err(|e| Error::new("abstract socket name", e.into()))?;
    match bind(socket.as_raw_fd(), &address) {
        Ok(()) => Ok(Some(Lease {
            slot,
            _socket: socket,
        })),
        Err(nix::errno::Errno::EADDRINUSE) => Ok(None),
        Err(e) => Err(Error::new(format!("bind lease socket @{name}"), e.into())),
    }
}

/// Deletes every host-side veth whose slot no one holds (its owner died while
/// something kept its namespace alive) and returns their names. Safe while
/// tests run: a live test holds its slot's lease.
pub fn remove_stale() -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(slot) = name
            .strip_prefix(HOST_NAME_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|s| *s < SLOTS)
        else {
            continue;
        };
        let Some(lease) = bind_lease(slot)? else {
            continue; // a live test's
        };
        if let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) {
            match Netlink::open()?.run(vec![netlink::delete_link(index as i32, &name)]) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => {}
                other => other?,
            }
            removed.push(name);
        }
        drop(lease);
    }
    Ok(removed)
}

/// The slot's host-side interface exists although its lease was free: the
/// kernel is still removing it, or its owner died while something kept its
/// namespace alive. Delete it, keeping the lease until done.
fn delete_stale_in_background(lease: Lease, name: String, index: i32) {
    let _ = std::thread::Builder::new()
        .name("netns-test-gc".into())
        .spawn(move || {
            if let Ok(mut netlink) = Netlink::open() {
                // ENODEV: the kernel finished first.
                let _ = netlink.run(vec![netlink::delete_link(index, &name)]);
            }
            drop(lease);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::veth_pair::AddressPair;
    use std::net::Ipv4Addr;

    #[test]
    fn slots_map_to_distinct_names_and_subnets() {
        assert_eq!(host_name(0), "ntveth0");
        assert!(host_name(SLOTS - 1).len() <= 15);
        assert!((0..1000).map(|_| next_slot()).all(|s| s < SLOTS));
    }

    #[test]
    fn a_leased_slot_is_not_leased_twice_and_a_stale_interface_is_removed() {
        if !crate::os::privilege::privileged() {
            eprintln!("skipped: needs CAP_NET_ADMIN on the host");
            return;
        }
        // The last slot, which the rotating counter of this short-lived test
        // binary is unlikely to reach.
        let slot = SLOTS - 1;
        let held = try_lease(slot).unwrap().expect("the slot is free");
        assert!(try_lease(slot).unwrap().is_none(), "leased twice");
        drop(held);
        // A stale host-side interface for the slot, as a dead owner leaves it.
        let name = host_name(slot);
        let peer = format!("{name}p");
        let made = std::process::Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .unwrap();
        assert!(made.success());
        assert!(
            try_lease(slot).unwrap().is_none(),
            "a slot whose interface exists"
        );
        let gone = (0..250).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            nix::net::if_::if_nametoindex(name.as_str()).is_err()
        });
        assert!(gone, "{name} was not removed");
        assert!(nix::net::if_::if_nametoindex(peer.as_str()).is_err());
        // The background deleter gives the lease back right after the delete.
        let free_again = (0..250).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            try_lease(slot).unwrap().is_some()
        });
        assert!(free_again, "free again once removed");
    }

    #[test]
    fn user_subnets_that_hold_a_host_address_are_found() {
        let spec = VethSpec {
            mtu: 1500,
            ipv4: Some(AddressPair {
                ns: Ipv4Addr::new(192, 0, 2, 2),
                host: Ipv4Addr::new(192, 0, 2, 1),
                prefix: 24,
            }),
            ipv6: Some(AddressPair {
                ns: "2001:db8:7::2".parse().unwrap(),
                host: "2001:db8:7::1".parse().unwrap(),
                prefix: 64,
            }),
        };
        let found = |ip: &str| user_subnet_containing(&spec, ip.parse().unwrap());
        assert_eq!(found("192.0.2.77").as_deref(), Some("192.0.2.2/24"));
        assert_eq!(found("192.0.3.1"), None);
        assert_eq!(found("2001:db8:7::99").as_deref(), Some("2001:db8:7::2/64"));
        assert_eq!(found("2001:db8:8::1"), None);
        let pooled = VethSpec {
            ipv4: None,
            ipv6: None,
            ..spec
        };
        assert_eq!(
            user_subnet_containing(&pooled, "192.0.2.77".parse().unwrap()),
            None
        );
    }
}
