//! `#[netns_test(veth)]`: a veth pair from the test's namespace to the host,
//! with addresses and names unique across threads and processes, that never
//! changes how the host routes its own traffic.
//!
//! Each pair takes a *slot* `0..32768`. A slot fixes the host-side name
//! (`ntveth<slot>`), its interface index, an IPv4 /30 in 198.18.0.0/15 and an
//! IPv6 /64 in a fixed ULA prefix. A slot is leased by an exclusive `flock`
//! on the file `<slot>` in the user's own directory (`/run/netns-test/veth`
//! for root, mode 0700), which no other user can open; the kernel releases
//! the lease when the process dies, even by SIGKILL; the file goes with the
//! lease, or, when its process died holding it, with the next process's
//! sweep (or `netns-test gc`). A slot is skipped while its interface index is in use (a kept
//! test's renamed end, or an end the kernel has not removed yet: that takes
//! about 40 ms after the test's namespace dies), and while its subnets
//! overlap anything of the host's routing; a stale `ntveth<slot>` (a veth
//! with the slot's index whose owner died while something held its
//! namespace) is deleted in the background.

use crate::error::Error;
use crate::os::host_routes::{self, HostUse, Net};
use crate::os::netlink::{self, Netlink};
use crate::os::private_dir::{Lock, PrivateDir};
use crate::os::settle::{LinkLocal, settle};
use crate::os::sys;
use crate::pool::{self, VETH_SLOTS as SLOTS};
pub(crate) use crate::veth_pair::{Veth, VethSpec};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Host-side interface names: this prefix and the slot number (≤ 11 bytes).
pub(crate) const HOST_NAME_PREFIX: &str = "ntveth";
/// What a kept test's host-side end is renamed to, with its slot number.
pub(crate) const KEPT_NAME_PREFIX: &str = "ntkeep";
/// The test-side interface's name.
const NS_NAME: &str = "veth0";
/// The test-side interface's index (1 is `lo`).
const NS_INDEX: i32 = 2;
/// Host-side interface indexes: this base plus the slot, far above the
/// indexes the kernel hands out in order.
const HOST_INDEX_BASE: i32 = 0x4e00_0000;

/// The ranges a user-given veth subnet must lie in: private, shared and
/// documentation ranges, never addresses of the internet.
const USER_RANGES: [(&str, u8); 9] = [
    ("10.0.0.0", 8),
    ("172.16.0.0", 12),
    ("192.168.0.0", 16),
    ("100.64.0.0", 10),
    ("192.0.2.0", 24),
    ("198.51.100.0", 24),
    ("203.0.113.0", 24),
    ("fc00::", 7),
    ("2001:db8::", 32),
];

/// A slot, leased while this lives.
struct Lease {
    slot: u32,
    _lock: Lock,
}

/// Whether the pair exists: creation (on the test's thread) and deletion
/// (when the test times out) take turns, so that a pair is never made after
/// its test was given up.
#[derive(Debug, Default)]
enum PairState {
    #[default]
    NotYet,
    Created,
    Deleted,
}

/// A veth pair prepared on the host's side, before the test thread leaves it.
pub(crate) struct VethSetup {
    veth: Veth,
    host_netlink: Netlink,
    host_ns: OwnedFd,
    state: Arc<Mutex<PairState>>,
    _lease: Lease,
}

/// What a timeout needs to delete a test's pair from another thread.
#[derive(Clone)]
pub(crate) struct PairHandle {
    veth: Veth,
    state: Arc<Mutex<PairState>>,
}

impl VethSetup {
    /// Leases a slot and opens what the host side needs. Runs on a thread in
    /// the host's network namespace.
    pub(crate) fn prepare(spec: &VethSpec) -> Result<VethSetup, Error> {
        let ipv6 = host_has_ipv6();
        if spec.ipv6.is_some() && !ipv6 {
            return Err(Error::detected(
                "check the veth addresses",
                std::io::ErrorKind::Unsupported,
                "the host has IPv6 disabled (net.ipv6.conf.default.disable_ipv6 = 1, as in Docker's default \
                 network), so the veth pair cannot have the IPv6 addresses given: leave `ipv6` and `host_ipv6` out",
            ));
        }
        refuse_user_subnets(spec)?;
        let lease = lease_a_slot()?;
        let slot = lease.slot;
        let (pool_host_ipv4, pool_host_ipv6) = pool::veth_end(slot, 1);
        let (pool_ns_ipv4, pool_ns_ipv6) = pool::veth_end(slot, 2);
        let (ns_ipv4, host_ipv4, ipv4_prefix) = match spec.ipv4 {
            Some(pair) => (pair.ns, pair.host, pair.prefix),
            None => (pool_ns_ipv4, pool_host_ipv4, 30),
        };
        let ipv6 = match (spec.ipv6, ipv6) {
            (Some(pair), _) => Some((pair.ns, pair.host, pair.prefix)),
            (None, true) => Some((pool_ns_ipv6, pool_host_ipv6, 64)),
            (None, false) => None,
        };
        Ok(VethSetup {
            veth: Veth {
                ns_name: NS_NAME.into(),
                host_name: host_name(slot),
                host_index: HOST_INDEX_BASE + slot as i32,
                ns_ipv4,
                host_ipv4,
                ipv4_prefix,
                ns_ipv6: ipv6.map(|(ns, _, _)| ns),
                host_ipv6: ipv6.map(|(_, host, _)| host),
                ipv6_prefix: ipv6.map(|(_, _, prefix)| prefix),
                mtu: spec.mtu,
            },
            host_netlink: Netlink::open()?,
            host_ns: sys::open_thread_ns(sys::NsKind::Net)?,
            state: Arc::default(),
            _lease: lease,
        })
    }

    /// The pair's names and addresses.
    pub(crate) fn veth(&self) -> &Veth {
        &self.veth
    }

    /// What a timeout needs to delete the pair.
    pub(crate) fn handle(&self) -> PairHandle {
        PairHandle {
            veth: self.veth.clone(),
            state: Arc::clone(&self.state),
        }
    }

    /// Creates the pair from the calling thread, now in the test's fresh
    /// namespace: one batch of messages there (link, addresses, default
    /// routes) and one in the host (peer up, its addresses). Refused when
    /// the test has timed out already.
    pub(crate) fn create(&mut self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, PairState::Deleted) {
            return Err(Error::detected(
                "create the veth pair",
                std::io::ErrorKind::TimedOut,
                "the test timed out before its veth pair was made",
            ));
        }
        let v = &self.veth;
        let mut here = vec![
            netlink::new_veth(
                NS_NAME,
                NS_INDEX,
                &v.host_name,
                v.host_index,
                self.host_ns.as_fd(),
                v.mtu,
            ),
            netlink::add_address(NS_INDEX, IpAddr::V4(v.ns_ipv4), v.ipv4_prefix),
            netlink::add_default_route(NS_INDEX, IpAddr::V4(v.host_ipv4)),
        ];
        let mut there = vec![
            netlink::set_up(v.host_index, &v.host_name),
            netlink::add_address(v.host_index, IpAddr::V4(v.host_ipv4), v.ipv4_prefix),
        ];
        if let (Some(ns), Some(host), Some(prefix)) = (v.ns_ipv6, v.host_ipv6, v.ipv6_prefix) {
            here.push(netlink::add_address(NS_INDEX, IpAddr::V6(ns), prefix));
            here.push(netlink::add_default_route(NS_INDEX, IpAddr::V6(host)));
            there.push(netlink::add_address(v.host_index, IpAddr::V6(host), prefix));
        }
        let mut netlink = Netlink::open()?;
        netlink.run(here).map_err(explain_host_refusal)?;
        *state = PairState::Created;
        self.host_netlink.run(there).map_err(explain_host_refusal)?;
        drop(state);
        // Both ends carry the first packet (see `os/settle.rs`): about 2 %
        // of fresh pairs lost a first ARP request or neighbour
        // solicitation otherwise.
        if crate::settings::settle_links() {
            let ipv6 = |address: Option<Ipv6Addr>| {
                address.map(|address| (IpAddr::V6(address), LinkLocal::Ignored))
            };
            settle(&mut netlink, NS_INDEX, NS_NAME, ipv6(v.ns_ipv6))?;
            settle(
                &mut self.host_netlink,
                v.host_index,
                &v.host_name,
                ipv6(v.host_ipv6),
            )?;
        }
        Ok(())
    }
}

/// A network namespace made ahead, with `lo` up and a pool-addressed veth
/// pair in it: what the next `veth` test enters instead of making its own.
pub(crate) struct MadeAhead {
    pub(crate) setup: VethSetup,
    pub(crate) ns: OwnedFd,
}

/// Making pairs ahead: from a process's second veth test on, a thread of
/// its own keeps [`AHEAD_DEPTH`] namespaces with their pairs ready while
/// tests run, on the idle CPU, instead of on the tests' path, where their
/// creation waits for the RTNL lock that the kernel holds to tear the
/// previous pairs down.
struct Ahead {
    /// Namespaces made ahead, oldest first, each with the MTU of its pair.
    ready: VecDeque<(u32, MadeAhead)>,
    /// The MTU of the pairs to make: the last test's.
    mtu: u32,
    /// The MTU of the pair being made, while one is.
    making: Option<u32>,
    /// Tests waiting for the pair being made.
    waiting: usize,
    /// Pool-addressed veth tests this process started.
    tests: u64,
    /// Whether the thread that makes them runs.
    maker: bool,
}

static AHEAD: Mutex<Ahead> = Mutex::new(Ahead {
    ready: VecDeque::new(),
    mtu: 0,
    making: None,
    waiting: 0,
    tests: 0,
    maker: false,
});
/// Wakes the maker: a test took a namespace, or wants one.
static AHEAD_WANTED: std::sync::Condvar = std::sync::Condvar::new();
/// Wakes the tests waiting for the pair being made.
static AHEAD_MADE: std::sync::Condvar = std::sync::Condvar::new();

/// How many namespaces with pairs the maker keeps ready. With one, made
/// only once the previous was taken, a test often came while the next was
/// still being made and made its own beside it (two creations contending
/// for the RTNL lock): only every other test found one (109 of 200 with 1
/// test thread, 69 of 200 with 2). Two kept ready, and a test waiting for
/// the one being made: 183 and 114.
const AHEAD_DEPTH: usize = 2;

/// How long the namespaces made ahead wait for a test before they are let
/// go (each holds a slot and a host-side interface), and the maker with
/// them.
const AHEAD_KEPT: std::time::Duration = std::time::Duration::from_millis(50);

/// How long a test waits for the pair being made before it makes its own.
const AHEAD_AWAITED: std::time::Duration = std::time::Duration::from_millis(20);

/// For a test with a pool-addressed pair, on its thread in the process's
/// own network namespace: a namespace made ahead for it, if there is one
/// with its MTU, or one being made that no other test waits for; and, from
/// the process's second such test on, the maker keeps making them.
pub(crate) fn take_made_ahead(spec: &VethSpec) -> Option<MadeAhead> {
    if spec.ipv4.is_some() || spec.ipv6.is_some() || !in_process_namespace() {
        return None;
    }
    let mut ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner());
    ahead.tests += 1;
    // Pairs of another MTU wait for no one now.
    let other_mtu: VecDeque<(u32, MadeAhead)> = {
        let (ours, others) = std::mem::take(&mut ahead.ready)
            .into_iter()
            .partition(|(mtu, _)| *mtu == spec.mtu);
        ahead.ready = ours;
        others
    };
    if ahead.tests >= 2 {
        ahead.mtu = spec.mtu;
        if !ahead.maker {
            // Started here, in the process's own namespaces, which it
            // keeps between pairs.
            ahead.maker = std::thread::Builder::new()
                .name("netns-test-veth".into())
                .spawn(make_ahead)
                .is_ok();
        }
    }
    let deadline = std::time::Instant::now() + AHEAD_AWAITED;
    let taken = loop {
        if let Some((_, made)) = ahead.ready.pop_front() {
            break Some(made);
        }
        // The one being made comes sooner than one made now beside it,
        // which would contend with it for the RTNL lock; but a second test
        // at once makes its own.
        let now = std::time::Instant::now();
        if ahead.making != Some(spec.mtu) || ahead.waiting > 0 || now >= deadline {
            break None;
        }
        ahead.waiting += 1;
        ahead = AHEAD_MADE
            .wait_timeout(ahead, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        ahead.waiting -= 1;
    };
    AHEAD_WANTED.notify_one();
    drop(ahead);
    drop(other_mtu);
    taken
}

/// Whether the calling thread is in its process's main network namespace
/// (not in a test's: a test body that calls another veth test).
fn in_process_namespace() -> bool {
    let main = std::fs::metadata("/proc/self/ns/net").map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    });
    match (main, sys::thread_ns_id(sys::NsKind::Net)) {
        (Ok(main), Ok(here)) => main == (here.dev, here.ino),
        _ => false,
    }
}

/// The maker: keeps [`AHEAD_DEPTH`] namespaces ready while tests come; ends
/// (letting the unused ones go) when no test came for [`AHEAD_KEPT`]. After
/// a failure it makes the next one only for the next test.
fn make_ahead() {
    let home = sys::open_thread_ns(sys::NsKind::Net);
    let mut ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner());
    let mut failed_at = None;
    loop {
        let wanted = ahead.ready.len() < AHEAD_DEPTH && failed_at != Some(ahead.tests);
        if let (true, Ok(home)) = (wanted, &home) {
            let mtu = ahead.mtu;
            ahead.making = Some(mtu);
            drop(ahead);
            let made = make_one_ahead(mtu);
            // Back home for the next one; a thread that cannot get back stops.
            let back = sys::setns(home.as_fd(), sys::NsKind::Net);
            ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner());
            ahead.making = None;
            match made {
                Ok(made) => ahead.ready.push_back((mtu, made)),
                Err(_) => failed_at = Some(ahead.tests),
            }
            AHEAD_MADE.notify_all();
            if back.is_err() {
                break;
            }
            continue;
        }
        let tests = ahead.tests;
        let (guard, waited) = AHEAD_WANTED
            .wait_timeout(ahead, AHEAD_KEPT)
            .unwrap_or_else(|p| p.into_inner());
        ahead = guard;
        if waited.timed_out() && ahead.tests == tests {
            break;
        }
    }
    let unused = std::mem::take(&mut ahead.ready);
    ahead.maker = false;
    drop(ahead);
    drop(unused);
}

/// A fresh network namespace with `lo` up and a pool-addressed pair of MTU
/// `mtu`; the calling thread is left in it.
fn make_one_ahead(mtu: u32) -> Result<MadeAhead, Error> {
    let mut setup = VethSetup::prepare(&VethSpec {
        mtu,
        ipv4: None,
        ipv6: None,
    })?;
    crate::os::isolation::new_network_namespace_here()?;
    setup.create()?;
    let ns = sys::open_thread_ns(sys::NsKind::Net)?;
    Ok(MadeAhead { setup, ns })
}

impl PairHandle {
    /// Deletes the pair now, from a thread in the host's namespace, or makes
    /// sure it is never created. For tests that time out: their namespace
    /// may live on with their abandoned thread.
    pub(crate) fn delete_now(&self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, PairState::Created) {
            delete_by_name_and_index(&self.veth.host_name, self.veth.host_index)?;
        }
        *state = PairState::Deleted;
        Ok(())
    }
}

/// Deletes the link `index` if it is still named `name`.
fn delete_by_name_and_index(name: &str, index: i32) -> Result<(), Error> {
    if interface_name(index).as_deref() != Some(name) {
        return Ok(());
    }
    match Netlink::open()?.run(vec![netlink::delete_link(index, name)]) {
        // The kernel removed it first.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
        other => other,
    }
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

/// Whether new interfaces of the host get IPv6 (Docker's default network
/// disables it). Read once per process.
fn host_has_ipv6() -> bool {
    static IPV6: OnceLock<bool> = OnceLock::new();
    *IPV6.get_or_init(|| {
        [
            "net/ipv6/conf/all/disable_ipv6",
            "net/ipv6/conf/default/disable_ipv6",
        ]
        .iter()
        .all(|key| sys::read_sysctl(key).as_deref() == Some("0"))
    })
}

/// The host's addresses, subnets, routes and gateways, but those of
/// netns-test's own pairs.
fn foreign_host_uses() -> Result<Vec<HostUse>, Error> {
    host_routes::host_uses(&[HOST_NAME_PREFIX, KEPT_NAME_PREFIX])
}

/// The whole pool: 198.18.0.0/15 and fdc7:3a59:41e2::/48.
fn pool_nets() -> [Net; 2] {
    [
        Net::new(IpAddr::V4(Ipv4Addr::from(pool::IPV4)), 15),
        Net::new(IpAddr::V6(pool::ula(0, 0)), 48),
    ]
}

/// What of the host's routing overlaps the pool, read once per process:
/// those slots are never used.
fn pool_clashes() -> Result<&'static [HostUse], Error> {
    static CLASHES: OnceLock<Result<Vec<HostUse>, String>> = OnceLock::new();
    let pool = pool_nets();
    CLASHES
        .get_or_init(|| {
            foreign_host_uses()
                .map(|uses| {
                    uses.into_iter()
                        .filter(|u| pool.iter().any(|p| p.overlaps(&u.net)))
                        .collect()
                })
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| {
            Error::detected(
                "read the host's routes",
                std::io::ErrorKind::Other,
                e.clone(),
            )
        })
}

/// What of the host's routing a slot's subnets would overlap, if anything.
fn slot_clash(slot: u32, clashes: &[HostUse]) -> Option<&HostUse> {
    let (v4, v6) = pool::veth_end(slot, 1);
    let subnets = [Net::new(IpAddr::V4(v4), 30), Net::new(IpAddr::V6(v6), 64)];
    clashes
        .iter()
        .find(|u| subnets.iter().any(|s| s.overlaps(&u.net)))
}

/// A user-given subnet must lie in a private or documentation range, and
/// overlap neither the pool nor anything of the host's routing: otherwise
/// the host would send its own traffic (to its gateway, its networks, or
/// the internet) into the test.
fn refuse_user_subnets(spec: &VethSpec) -> Result<(), Error> {
    let subnets: Vec<Net> = spec
        .ipv4
        .map(|p| Net::new(IpAddr::V4(p.ns), p.prefix))
        .into_iter()
        .chain(spec.ipv6.map(|p| Net::new(IpAddr::V6(p.ns), p.prefix)))
        .collect();
    if subnets.is_empty() {
        return Ok(());
    }
    let uses = foreign_host_uses()?;
    for subnet in &subnets {
        if let Some(why) = user_subnet_refusal(subnet, &uses) {
            return Err(Error::detected(
                "check the veth addresses",
                std::io::ErrorKind::AddrInUse,
                format!(
                    "the subnet {} {why}: pick another subnet (or leave the addresses out for a unique one from the pool)",
                    masked(subnet)
                ),
            ));
        }
    }
    Ok(())
}

/// Why `subnet` may not be a veth pair's, if it may not.
fn user_subnet_refusal(subnet: &Net, uses: &[HostUse]) -> Option<String> {
    let pool = pool_nets();
    if let Some(pool) = pool.iter().find(|p| p.overlaps(subnet)) {
        return Some(format!("overlaps netns-test's own pool {pool}"));
    }
    let allowed = USER_RANGES
        .iter()
        .map(|(a, p)| Net::new(a.parse().expect("a valid range"), *p))
        .any(|range| range.contains(subnet));
    if !allowed {
        let ranges: Vec<String> = USER_RANGES
            .iter()
            .map(|(a, p)| format!("{a}/{p}"))
            .collect();
        return Some(format!(
            "is not in a private or documentation range ({})",
            ranges.join(", ")
        ));
    }
    uses.iter()
        .find(|u| u.net.overlaps(subnet))
        .map(|clash| format!("overlaps {}", clash.what))
}

/// A network written with its host bits cleared: 10.0.0.0/30 for 10.0.0.2/30.
fn masked(net: &Net) -> String {
    let address = match net.address {
        IpAddr::V4(a) => {
            let bits = u32::from(a)
                .checked_shr(32 - u32::from(net.prefix))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(
                bits.checked_shl(32 - u32::from(net.prefix)).unwrap_or(0),
            ))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a)
                .checked_shr(128 - u32::from(net.prefix))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(
                bits.checked_shl(128 - u32::from(net.prefix)).unwrap_or(0),
            ))
        }
    };
    format!("{address}/{}", net.prefix)
}

fn host_name(slot: u32) -> String {
    format!("{HOST_NAME_PREFIX}{slot}")
}

/// The slot of a host-side name, only in its one canonical form
/// (`ntveth5`, not `ntveth05` or `ntveth+5`).
fn slot_of(name: &str) -> Option<u32> {
    let number = name.strip_prefix(HOST_NAME_PREFIX)?;
    let slot: u32 = number.parse().ok()?;
    (slot < SLOTS && number == slot.to_string()).then_some(slot)
}

/// The name of the host's interface with `index`, if there is one.
fn interface_name(index: i32) -> Option<String> {
    let mut name = [0 as nix::libc::c_char; nix::libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into `name`.
    let found = unsafe { nix::libc::if_indextoname(index as u32, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Whether the host's interface with `index` is the slot's own stale end:
/// the canonical name and a veth.
fn is_stale_end(slot: u32, index: i32) -> bool {
    interface_name(index).is_some_and(|name| {
        name == host_name(slot) && sys::link_driver(&name).as_deref() == Some("veth")
    })
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

/// The directory of the leases: the user's own `netns-test/veth`, made once
/// per process.
fn leases() -> Result<&'static PrivateDir, Error> {
    static LEASES: OnceLock<Result<PrivateDir, String>> = OnceLock::new();
    let leases = LEASES
        .get_or_init(|| {
            PrivateDir::for_user("veth", true)
                .map(|dir| dir.expect("made when missing"))
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            Error::detected("open the veth leases", std::io::ErrorKind::Other, e.clone())
        })?;
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| remove_unheld_leases(leases));
    Ok(leases)
}

/// Removes the lease files no process holds: a process killed while it
/// held a lease leaves its file (the kernel lets go of the lock, not of the
/// file), and so does one that exits while a pair made ahead waits for its
/// test. Each process that leases a slot sweeps them once; `netns-test gc`
/// too. A file someone holds, or takes meanwhile, stays.
fn remove_unheld_leases(leases: &'static PrivateDir) {
    for name in leases.names() {
        if name.parse::<u32>().is_ok() {
            // Taken, then given back: the lock removes its file.
            drop(leases.try_lock(&name));
        }
    }
}

fn lease_a_slot() -> Result<Lease, Error> {
    let clashes = pool_clashes()?;
    for _ in 0..SLOTS {
        if let Some(lease) = try_lease(next_slot(), clashes)? {
            return Ok(lease);
        }
    }
    let why = match clashes.first() {
        Some(clash) => format!(
            "the host's routing overlaps the pool 198.18.0.0/15 or fdc7:3a59:41e2::/48: {} (give the test \
             addresses of its own with veth(ipv4 = .., host_ipv4 = ..))",
            clash.what
        ),
        None => format!("all {SLOTS} slots are in use"),
    };
    Err(Error::detected(
        "lease a veth slot",
        std::io::ErrorKind::AddrInUse,
        why,
    ))
}

/// Leases `slot` if its subnets are free on the host, no one holds it and
/// its interface index is free.
fn try_lease(slot: u32, clashes: &[HostUse]) -> Result<Option<Lease>, Error> {
    if slot_clash(slot, clashes).is_some() {
        return Ok(None);
    }
    let Some(lock) = leases()?.try_lock(&slot.to_string())? else {
        return Ok(None);
    };
    let lease = Lease { slot, _lock: lock };
    let index = HOST_INDEX_BASE + slot as i32;
    if interface_name(index).is_none() && !sys::interface_exists(&host_name(slot)) {
        return Ok(Some(lease));
    }
    if is_stale_end(slot, index) {
        delete_stale_in_background(lease, host_name(slot), index);
    }
    // Otherwise a kept test's renamed end holds the index, or an interface
    // that is not ours has the name: the slot waits.
    Ok(None)
}

/// Deletes every host-side veth whose slot no one holds (its owner died while
/// something kept its namespace alive) and returns their names. Only the
/// canonical `ntveth<slot>`, a veth with the slot's index. Safe while tests
/// run: a live test holds its slot's lease.
pub fn remove_stale() -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(slot) = slot_of(&name) else {
            continue;
        };
        let index = HOST_INDEX_BASE + slot as i32;
        if !is_stale_end(slot, index) {
            continue;
        }
        let Some(lease) = leases()?.try_lock(&slot.to_string())? else {
            continue; // a live test's
        };
        delete_by_name_and_index(&name, index)?;
        removed.push(name);
        drop(lease);
    }
    remove_unheld_leases(leases()?);
    // The leases' directory stays: tests running now have it open.
    Ok(removed)
}

/// The slot's own host-side end exists although its lease was free: the
/// kernel is still removing it, or its owner died while something kept its
/// namespace alive. Delete it, keeping the lease until done.
fn delete_stale_in_background(lease: Lease, name: String, index: i32) {
    let _ = std::thread::Builder::new()
        .name("netns-test-gc".into())
        .spawn(move || {
            let _ = delete_by_name_and_index(&name, index);
            drop(lease);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Net {
        let (a, p) = text.split_once('/').unwrap();
        Net::new(a.parse().unwrap(), p.parse().unwrap())
    }

    fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap()
            .success()
    }

    fn root() -> bool {
        let root = crate::os::privilege::privileged() && nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipped: needs root on the host");
        }
        root
    }

    #[test]
    fn slots_map_to_distinct_names_and_subnets() {
        assert_eq!(host_name(0), "ntveth0");
        assert!(host_name(SLOTS - 1).len() <= 15);
        assert!((0..1000).map(|_| next_slot()).all(|s| s < SLOTS));
        assert_eq!(slot_of("ntveth5"), Some(5));
        assert_eq!(slot_of("ntveth32767"), Some(32767));
        for foreign in [
            "ntveth05",
            "ntveth+5",
            "ntveth32768",
            "ntveth",
            "ntveth5a",
            "ntkeep5",
        ] {
            assert_eq!(slot_of(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_leased_slot_is_not_leased_twice_and_a_stale_interface_is_removed() {
        if !root() {
            return;
        }
        // The last slot, which the rotating counter of this short-lived test
        // binary is unlikely to reach.
        let slot = SLOTS - 1;
        let held = try_lease(slot, &[]).unwrap().expect("the slot is free");
        assert!(try_lease(slot, &[]).unwrap().is_none(), "leased twice");
        drop(held);
        // A stale host-side end for the slot, as a dead owner leaves it: its
        // name, its index, a veth.
        let name = host_name(slot);
        let peer = format!("{name}p");
        let index = (HOST_INDEX_BASE + slot as i32).to_string();
        assert!(ip(&[
            "link", "add", &name, "index", &index, "type", "veth", "peer", "name", &peer
        ]));
        assert!(
            try_lease(slot, &[]).unwrap().is_none(),
            "a slot whose interface exists"
        );
        let gone = (0..250).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            !sys::interface_exists(&name)
        });
        assert!(gone, "{name} was not removed");
        assert!(!sys::interface_exists(&peer));
        // The background deleter gives the lease back right after the delete.
        let free_again = (0..250).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            try_lease(slot, &[]).unwrap().is_some()
        });
        assert!(free_again, "free again once removed");
    }

    #[test]
    fn interfaces_that_are_not_a_slots_own_stale_end_are_left_alone() {
        if !root() {
            return;
        }
        // A bridge with a slot's name, a veth with a slot's name written
        // another way, and a kept test's renamed end holding a slot's index.
        let bridge = host_name(SLOTS - 2);
        let padded = "ntveth032764";
        let kept = format!("{KEPT_NAME_PREFIX}{}", SLOTS - 3);
        let kept_index = (HOST_INDEX_BASE + (SLOTS - 3) as i32).to_string();
        assert!(ip(&["link", "add", &bridge, "type", "bridge"]));
        assert!(ip(&[
            "link",
            "add",
            padded,
            "type",
            "veth",
            "peer",
            "name",
            "ntpaddedp"
        ]));
        assert!(ip(&[
            "link",
            "add",
            &kept,
            "index",
            &kept_index,
            "type",
            "veth",
            "peer",
            "name",
            "ntkeptp"
        ]));
        let busy_bridge = try_lease(SLOTS - 2, &[]).unwrap().is_none();
        let busy_kept = try_lease(SLOTS - 3, &[]).unwrap().is_none();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let removed = remove_stale().unwrap();
        let left = [&bridge, padded, &kept].map(sys::interface_exists);
        for name in [&bridge, padded, &kept] {
            ip(&["link", "del", name]);
        }
        assert!(busy_bridge, "a slot whose name a bridge has");
        assert!(busy_kept, "a slot whose index a kept end has");
        assert!(
            !removed
                .iter()
                .any(|r| [&bridge, padded, &kept].contains(&r.as_str())),
            "{removed:?}"
        );
        assert_eq!(left, [true; 3], "a foreign interface was deleted");
    }

    #[test]
    fn slots_that_overlap_the_hosts_routing_are_skipped() {
        let clashes = [HostUse {
            net: net("198.18.1.0/24"),
            what: "a proxy's fake-ip range".into(),
        }];
        // Slot 64 is 198.18.1.0/30.
        assert!(slot_clash(64, &clashes).is_some());
        assert!(slot_clash(127, &clashes).is_some());
        assert!(slot_clash(63, &clashes).is_none());
        assert!(slot_clash(128, &clashes).is_none());
    }

    #[test]
    fn user_subnets_must_be_private_and_free_on_the_host() {
        let uses = [
            HostUse {
                net: net("10.0.0.1/32"),
                what: "the host's gateway 10.0.0.1 on eth0".into(),
            },
            HostUse {
                net: net("192.168.0.0/16"),
                what: "the host's route to 192.168.0.0/16 on wg0".into(),
            },
        ];
        let refusal = |subnet: &str| user_subnet_refusal(&net(subnet), &uses);
        assert!(refusal("10.0.0.2/30").unwrap().contains("gateway 10.0.0.1"));
        assert!(
            refusal("192.168.7.0/24")
                .unwrap()
                .contains("192.168.0.0/16 on wg0")
        );
        assert!(
            refusal("10.0.0.0/8").unwrap().contains("gateway"),
            "wider, both ways"
        );
        assert!(refusal("200.0.0.1/1").is_some(), "half the internet");
        assert!(
            refusal("8.8.8.0/24")
                .unwrap()
                .contains("private or documentation range")
        );
        assert!(refusal("198.18.4.0/24").unwrap().contains("own pool"));
        assert!(
            refusal("fdc7:3a59:41e2:1::/64")
                .unwrap()
                .contains("own pool")
        );
        assert_eq!(refusal("198.51.100.2/24"), None);
        assert_eq!(refusal("10.9.0.2/30"), None);
        assert_eq!(refusal("2001:db8:7::2/64"), None);
        assert_eq!(masked(&net("10.9.0.2/30")), "10.9.0.0/30");
        assert_eq!(masked(&net("200.0.0.1/1")), "128.0.0.0/1");
    }
}
