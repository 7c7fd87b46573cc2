//! The public API's signatures and traits, spelled out: this file compiles
//! against Linux's side of the crate and, under
//! `RUSTFLAGS="--cfg netns_test_unsupported_platform"`, against the other
//! platforms', so both sides offer the same API. Nothing here runs.

use netns_test::{
    Error, Firewall, Impairment, IntoSubnet, Link, LinkCounters, Nat, NatFiltering, NatMapping,
    NetNs, Network, Node, Schedule, Switch, Traffic, Veth,
};
use std::fmt::Debug;
use std::future::Ready;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

/// A closure for `run` and `spawn`.
type Body = fn() -> u8;

fn thread_safe<T: Send + Sync + UnwindSafe + RefUnwindSafe + 'static>() {}
fn handle<T: Clone + Debug>() {}

#[test]
fn signatures() {
    thread_safe::<NetNs>();
    handle::<NetNs>();
    fn eq<T: Eq>() {}
    eq::<NetNs>();
    let _: fn() -> Result<NetNs, Error> = NetNs::new;
    let _: fn() -> NetNs = NetNs::current;
    let _: fn() -> Option<NetNs> = NetNs::try_current;
    let _: fn(&NetNs) -> NetNs = NetNs::host;
    let _: for<'a> fn(&'a NetNs) -> Option<&'a Veth> = NetNs::veth;
    let _: fn(&NetNs, Body) -> u8 = NetNs::run;
    let _: fn(&NetNs, Body) -> JoinHandle<u8> = NetNs::spawn;
    let _: fn(&NetNs, Ready<u8>) -> u8 = NetNs::block_on;
    let _: fn(&NetNs, Ready<u8>) -> tokio::task::JoinHandle<u8> = NetNs::spawn_async;
    let _: fn(&NetNs, &'static str) -> Command = NetNs::command;
    let _: fn(&NetNs, &str, &str) -> Result<(), Error> = NetNs::sysctl;
    let _: fn(&NetNs) -> PathBuf = NetNs::net_path;
    let _: fn(&NetNs) -> PathBuf = NetNs::mount_path;
    let _: fn(&NetNs) -> u64 = NetNs::inode;
    #[cfg(unix)]
    let _: fn(&NetNs) -> std::os::fd::BorrowedFd<'_> = std::os::fd::AsFd::as_fd;

    fn default<T: Default>() {}
    default::<Network>();
    thread_safe::<Network>();
    let _: fn() -> Network = Network::new;
    let _: fn(u64) -> Network = Network::with_seed;
    let _: fn(&Network) -> u64 = Network::seed;
    fn debug<T: Debug>() {}
    debug::<Network>();
    let _: fn(&Network, &str) -> Result<Node, Error> = Network::node;
    let _: fn(&Network, &str) -> Result<Node, Error> = Network::router;
    let _: fn(&Network, &Node, &Node) -> Result<Link, Error> = Network::link;
    let _: fn(&Network, &str) -> Result<Switch, Error> = Network::switch;
    let _: fn(&Network, &Node, &Node, &[&str]) -> Result<Link, Error> = Network::link_with;
    let _: fn(&Network, &str, &[&str]) -> Result<Switch, Error> = Network::switch_with;
    let _: fn(&Network, &Node, &Switch) -> Result<Link, Error> = Network::attach;

    thread_safe::<Node>();
    handle::<Node>();
    let _: for<'a> fn(&'a Node) -> &'a NetNs = Node::netns;
    let _: for<'a> fn(&'a Node) -> &'a str = Node::name;
    let _: fn(&Node) -> bool = Node::is_router;
    let _: fn(&Node, &Link) -> Ipv4Addr = Node::ipv4_on;
    let _: fn(&Node, &Link) -> Ipv6Addr = Node::ipv6_on;
    let _: fn(&Node, &Link) -> String = Node::interface_on;
    let _: fn(&Node, &str, IpAddr) -> Result<(), Error> = Node::route;
    let _: fn(&Node, &Link) -> Result<(), Error> = Node::masquerade;
    let _: fn(&Node, &Link, u16, &Node, u16) -> Result<(), Error> = Node::forward_port;
    let _: fn(&Node, &Link, Nat) -> Result<(), Error> = Node::nat;
    let _: fn(&Node, &Link) -> Result<(), Error> = Node::rebind;

    handle::<Nat>();
    default::<Nat>();
    thread_safe::<Nat>();
    let _ = Nat::new()
        .mapping(NatMapping::EndpointIndependent)
        .mapping(NatMapping::AddressDependent)
        .mapping(NatMapping::AddressAndPortDependent)
        .filtering(NatFiltering::EndpointIndependent)
        .filtering(NatFiltering::AddressDependent)
        .filtering(NatFiltering::AddressAndPortDependent)
        .hairpin(true)
        .port_preservation(false)
        .udp_timeout(Duration::from_secs(5))
        .tcp_timeout(Duration::from_secs(5))
        == Nat::port_restricted_cone();
    let _: [fn() -> Nat; 5] = [
        Nat::new,
        Nat::full_cone,
        Nat::restricted_cone,
        Nat::port_restricted_cone,
        Nat::symmetric,
    ];
    fn copy<T: Copy + Debug + Eq + std::hash::Hash>() {}
    copy::<NatMapping>();
    copy::<NatFiltering>();

    thread_safe::<Switch>();
    thread_safe::<Link>();
    fn clone<T: Clone>() {}
    clone::<Link>();
    handle::<Link>();
    let _: fn(&Link) -> Result<(), Error> = Link::set_down;
    let _: fn(&Link) -> Result<(), Error> = Link::set_up;
    let _: fn(&Link, Impairment) -> Result<(), Error> = Link::impair;
    let _: fn(&Link, &Node, Impairment) -> Result<(), Error> = Link::impair_from;
    let _: fn(&Link, &Node, Impairment) -> Result<(), Error> = Link::impair_to;
    let _: fn(&Link, Schedule) -> Result<(), Error> = Link::schedule;
    let _: fn(&Link, &Node, Schedule) -> Result<(), Error> = Link::schedule_from;
    let _: fn(&Link, &Node) -> LinkCounters = Link::counters_from;
    let _: fn(&Link, &Node) -> LinkCounters = Link::counters_to;
    let _: fn(&Node, &Link, Firewall) -> Result<(), Error> = Node::firewall;

    fn counters<T: Copy + Debug + Default + Eq + std::hash::Hash + std::fmt::Display>() {}
    counters::<LinkCounters>();
    thread_safe::<LinkCounters>();
    let _: [fn(&LinkCounters) -> u64; 13] = [
        LinkCounters::packets,
        LinkCounters::bytes,
        LinkCounters::lost,
        LinkCounters::too_big,
        LinkCounters::queue_full,
        LinkCounters::overflow,
        LinkCounters::dropped,
        LinkCounters::corrupted,
        LinkCounters::duplicated,
        LinkCounters::reordered,
        LinkCounters::delayed,
        LinkCounters::missed,
        LinkCounters::unsent,
    ];

    handle::<Traffic>();
    thread_safe::<Traffic>();
    fn selector<T: Eq + std::hash::Hash + std::fmt::Display>() {}
    selector::<Traffic>();
    let _: [fn() -> Traffic; 5] = [
        Traffic::ipv4,
        Traffic::ipv6,
        Traffic::tcp,
        Traffic::udp,
        Traffic::icmp,
    ];
    let _ = Traffic::udp()
        .port(53)
        .src_port(1)
        .dst_port(2)
        .to(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .from(Ipv4Addr::LOCALHOST)
        .and(Traffic::ipv6().to(Ipv6Addr::LOCALHOST))
        .or(Traffic::tcp()
            .to("10.0.0.0/8")
            .from(String::from("10.1.0.0/16")));
    fn subnet<T: IntoSubnet>() {}
    subnet::<IpAddr>();
    subnet::<Ipv4Addr>();
    subnet::<Ipv6Addr>();
    subnet::<&str>();
    subnet::<String>();

    handle::<Firewall>();
    default::<Firewall>();
    thread_safe::<Firewall>();
    let _: [fn() -> Firewall; 2] = [Firewall::new, Firewall::block_inbound];
    let _ = Firewall::allow_only([Traffic::udp()])
        .block(Traffic::tcp())
        .allow(Traffic::icmp())
        == Firewall::new();
    let _ = Firewall::allow_only(vec![Traffic::udp()]);

    handle::<Veth>();
    eq::<Veth>();
    let _: for<'a> fn(&'a Veth) -> &'a str = Veth::ns_name;
    let _: for<'a> fn(&'a Veth) -> &'a str = Veth::host_name;
    let _: fn(&Veth) -> Ipv4Addr = Veth::ns_ipv4;
    let _: fn(&Veth) -> Ipv4Addr = Veth::host_ipv4;
    let _: fn(&Veth) -> u8 = Veth::ipv4_prefix;
    let _: fn(&Veth) -> Option<Ipv6Addr> = Veth::ns_ipv6;
    let _: fn(&Veth) -> Option<Ipv6Addr> = Veth::host_ipv6;
    let _: fn(&Veth) -> Option<u8> = Veth::ipv6_prefix;
    let _: fn(&Veth) -> u32 = Veth::mtu;

    handle::<Impairment>();
    default::<Impairment>();
    let _ = Impairment::new()
        .rate_kbit(1)
        .queue_bytes(1)
        .loss(1.0)
        .loss_bursts(1.0, 1)
        .corrupt(1.0)
        .mtu(1280)
        .delay(Duration::ZERO)
        .jitter(Duration::ZERO)
        .duplicate(1.0)
        .reorder(1.0)
        .only(Traffic::ipv6())
        .otherwise(Impairment::new())
        == Impairment::new();

    handle::<Schedule>();
    default::<Schedule>();
    let _ = Schedule::new()
        .then(Duration::ZERO, Impairment::new())
        .repeat()
        == Schedule::new();

    fn error<T: std::error::Error + Send + Sync + 'static + Into<io::Error>>() {}
    error::<Error>();
    let _: fn(&Error) -> io::ErrorKind = Error::kind;
    let _: for<'a> fn(&'a Error) -> &'a str = Error::operation;
    let _: for<'a> fn(&'a Error) -> Option<&'a Path> = Error::path;
    let _: fn(&Error) -> Option<i32> = Error::raw_os_error;
    let _: for<'a> fn(&'a Error) -> Option<&'a str> = Error::hint;
    let _: fn(&Error) -> bool = Error::is_refusal;

    let _: fn() -> bool = netns_test::privileged;
}
