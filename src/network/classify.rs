//! Which frames a direction's rules take ([`Impairment::only`]): a
//! frame's headers read once ([`View`]), matched against a rule's
//! [`Traffic`] alternatives, and the same reading compiled into the
//! classic-BPF program of the direction's egress filter ([`program`]), so
//! that only frames some rule may take go to the fault engine and the rest
//! stay on the plain veth, at its full speed.
//!
//! The two must agree on every frame: the filter decides what reaches the
//! engine, the engine which rule takes it. So both read the same bytes the
//! same way, within the same bounds, and a unit test runs the compiled
//! program in an interpreter of classic BPF over many frames and compares.
//!
//! What the reading sees, and what it cannot (classic BPF has no loops,
//! so every walk is unrolled to a bound):
//! - up to [`MAX_TAGS`] 802.1Q/802.1ad tags in the frame, and one more
//!   the kernel carries beside it (as a VLAN device on a veth does): the
//!   filter does not see that one, and the engine gets it back in the
//!   frame, so it reads past [`ENGINE_TAGS`];
//! - IPv4 with its options; a fragment other than the first has no ports;
//! - IPv6 past up to [`MAX_EXTENSION_HEADERS`] extension headers
//!   (hop-by-hop, routing, destination options, fragment,
//!   authentication); past more, the protocol is unknown (only family and
//!   address selectors match); a fragment other than the first has no
//!   ports;
//! - a frame whose IP header or extension headers are cut short is not
//!   IP to either reading (a load past the end of a frame ends a classic
//!   BPF program with "no match");
//! - the link's upkeep (IGMP; ICMPv6 router, neighbour and multicast
//!   listener messages) is never selected.
//!
//! [`Impairment::only`]: crate::Impairment::only
//! [`Traffic`]: crate::Traffic

use crate::traffic::{Family, Match};
use nix::libc::{self, sock_filter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most VLAN tags the filter reads past.
pub(super) const MAX_TAGS: usize = 2;
/// The most the engine reads past: one more, the tag the kernel carried
/// beside a frame when the filter read it, back in the frame the engine
/// gets (the kernel takes a tag out of the frame as it hands it over, and
/// the engine puts it back: either way, the engine sees one tag more at
/// most, never fewer).
pub(super) const ENGINE_TAGS: usize = MAX_TAGS + 1;
/// The most IPv6 extension headers walked.
pub(super) const MAX_EXTENSION_HEADERS: usize = 4;

/// 802.1Q and 802.1ad tags, which may stand between the addresses and the
/// ethertype.
pub(super) const VLAN_TAGS: [u16; 2] = [0x8100, 0x88A8];

/// IPv6 extension headers walked: hop-by-hop, routing, destination
/// options (each 8 + 8·n bytes), fragment (8 bytes), authentication
/// (8 + 4·n bytes).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const DESTINATION: u8 = 60;
const FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const EXTENSIONS: [u8; 5] = [HOP_BY_HOP, ROUTING, DESTINATION, FRAGMENT, AUTHENTICATION];
const TCP: u8 = 6;
const UDP: u8 = 17;
const IGMP: u8 = 2;
const ICMPV6: u8 = 58;

/// What the selectors see of a frame: an IP packet's family, protocol,
/// ports and addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct View {
    family: Family,
    /// `None` past more extension headers than are walked.
    protocol: Option<u8>,
    /// TCP's or UDP's source and destination ports, when the packet has
    /// them (a first fragment, long enough).
    ports: Option<(u16, u16)>,
    source: IpAddr,
    destination: IpAddr,
    /// The link's own upkeep, which no selector takes.
    upkeep: bool,
}

/// `len` bytes of `frame` at `at`, when the frame has them.
fn bytes(frame: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    frame.get(at..at.checked_add(len)?)
}

fn u8_at(frame: &[u8], at: usize) -> Option<u8> {
    frame.get(at).copied()
}

fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    bytes(frame, at, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

impl View {
    /// Reads `frame` as the filter does, past up to `tags` VLAN tags
    /// ([`MAX_TAGS`] for what the filter reads, [`ENGINE_TAGS`] for what
    /// the engine gets); `None` when it is no IP packet a selector can see
    /// (another protocol, or cut short).
    pub(super) fn parse(frame: &[u8], tags: usize) -> Option<View> {
        let mut ethertype = u16_at(frame, 12)?;
        let mut l3 = 14;
        for _ in 0..tags {
            if !VLAN_TAGS.contains(&ethertype) {
                break;
            }
            ethertype = u16_at(frame, l3 + 2)?;
            l3 += 4;
        }
        match ethertype {
            0x0800 => View::ipv4(frame, l3),
            0x86DD => View::ipv6(frame, l3),
            _ => None,
        }
    }

    fn ipv4(frame: &[u8], l3: usize) -> Option<View> {
        let first = u8_at(frame, l3)?;
        let ihl = usize::from(first & 0x0f);
        if first >> 4 != 4 || ihl < 5 {
            return None;
        }
        let l4 = l3 + ihl * 4;
        if l4 > frame.len() {
            return None;
        }
        let protocol = frame[l3 + 9];
        let address = |at: usize| {
            let b = &frame[at..at + 4];
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        let first_fragment = u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]) & 0x1fff == 0;
        Some(View {
            family: Family::V4,
            protocol: Some(protocol),
            ports: ports(frame, first_fragment, protocol, l4),
            source: address(l3 + 12),
            destination: address(l3 + 16),
            upkeep: protocol == IGMP,
        })
    }

    fn ipv6(frame: &[u8], l3: usize) -> Option<View> {
        if u8_at(frame, l3)? >> 4 != 6 || l3 + 40 > frame.len() {
            return None;
        }
        let mut next = frame[l3 + 6];
        let mut at = l3 + 40;
        let mut first_fragment = true;
        for _ in 0..MAX_EXTENSION_HEADERS {
            match next {
                HOP_BY_HOP | ROUTING | DESTINATION => {
                    let header = bytes(frame, at, 2)?;
                    next = header[0];
                    at += (usize::from(header[1]) + 1) * 8;
                }
                FRAGMENT => {
                    let offset = u16_at(frame, at + 2)?;
                    first_fragment &= offset & 0xfff8 == 0;
                    next = frame[at];
                    at += 8;
                }
                AUTHENTICATION => {
                    let header = bytes(frame, at, 2)?;
                    next = header[0];
                    at += (usize::from(header[1]) + 2) * 4;
                }
                _ => break,
            }
        }
        let address = |at: usize| {
            let b: [u8; 16] = frame[at..at + 16].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(b))
        };
        let protocol = (!EXTENSIONS.contains(&next)).then_some(next);
        let upkeep = protocol == Some(ICMPV6)
            && u8_at(frame, at).is_some_and(|kind| matches!(kind, 130..=137 | 143));
        Some(View {
            family: Family::V6,
            protocol,
            ports: protocol.and_then(|p| ports(frame, first_fragment, p, at)),
            source: address(l3 + 8),
            destination: address(l3 + 24),
            upkeep,
        })
    }

    /// Whether `m` selects the packet.
    pub(super) fn matches(&self, m: &Match) -> bool {
        if self.upkeep || m.family.is_some_and(|f| f != self.family) {
            return false;
        }
        if let Some(p) = m.protocol {
            if self.protocol != Some(p.number(self.family)) {
                return false;
            }
        }
        if m.needs_ports() {
            let Some((source, destination)) = self.ports else {
                return false;
            };
            let port_ok = m.port.is_none_or(|p| p == source || p == destination);
            let src_ok = m.src_port.is_none_or(|p| p == source);
            let dst_ok = m.dst_port.is_none_or(|p| p == destination);
            if !(port_ok && src_ok && dst_ok) {
                return false;
            }
        }
        m.to.is_none_or(|s| s.contains(self.destination))
            && m.from.is_none_or(|s| s.contains(self.source))
    }
}

/// TCP's or UDP's ports at `l4`, when the packet is a first fragment and
/// the frame holds them.
fn ports(frame: &[u8], first_fragment: bool, protocol: u8, l4: usize) -> Option<(u16, u16)> {
    if !first_fragment || !matches!(protocol, TCP | UDP) {
        return None;
    }
    Some((u16_at(frame, l4)?, u16_at(frame, l4 + 2)?))
}

// The classic-BPF program.

/// What a direction's filter sends to the engine: every frame, or the IP
/// packets one of these alternatives selects.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Takes {
    All,
    Only(Vec<Match>),
}

impl Takes {
    /// The filter's classic-BPF program.
    pub(super) fn program(&self) -> Vec<sock_filter> {
        match self {
            Takes::All => take_all(),
            Takes::Only(alternatives) => program(alternatives).unwrap_or_else(take_all),
        }
    }
}

/// A program that takes every frame, and one that takes none.
pub(super) fn take_all() -> Vec<sock_filter> {
    vec![statement(libc::BPF_RET | libc::BPF_K, u32::MAX)]
}

fn statement(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Scratch memory cells of the program (classic BPF has 16).
const M_L3: u32 = 0;
const M_FAMILY: u32 = 1;
const M_PROTOCOL: u32 = 2;
const M_L4: u32 = 3;
const M_PORTS: u32 = 4;
const M_SOURCE_PORT: u32 = 5;
const M_DESTINATION_PORT: u32 = 6;
const M_NEXT: u32 = 7;
const M_FIRST: u32 = 8;
/// What `M_PROTOCOL` holds past more extension headers than are walked.
const UNKNOWN_PROTOCOL: u32 = 256;

/// A place in the program, for jumps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Label(usize);

/// Where a conditional jump goes: the next instruction or a label.
#[derive(Clone, Copy)]
enum To {
    Next,
    At(Label),
}

enum Item {
    Plain(sock_filter),
    Jump { code: u32, k: u32, yes: To, no: To },
    Always(Label),
    Mark(Label),
}

/// Classic BPF with labels; [`Assembler::finish`] resolves the jumps.
#[derive(Default)]
struct Assembler {
    items: Vec<Item>,
    labels: usize,
}

impl Assembler {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn mark(&mut self, label: Label) {
        self.items.push(Item::Mark(label));
    }

    fn op(&mut self, code: u32, k: u32) {
        self.items.push(Item::Plain(statement(code, k)));
    }

    /// `A = packet[k]`, of `size` (`BPF_B`, `BPF_H`, `BPF_W`).
    fn load(&mut self, size: u32, k: u32) {
        self.op(libc::BPF_LD | size | libc::BPF_ABS, k);
    }

    /// `A = packet[X + k]`.
    fn load_x(&mut self, size: u32, k: u32) {
        self.op(libc::BPF_LD | size | libc::BPF_IND, k);
    }

    fn load_len(&mut self) {
        self.op(libc::BPF_LD | libc::BPF_W | libc::BPF_LEN, 0);
    }

    fn load_k(&mut self, k: u32) {
        self.op(libc::BPF_LD | libc::BPF_IMM, k);
    }

    fn load_mem(&mut self, cell: u32) {
        self.op(libc::BPF_LD | libc::BPF_MEM, cell);
    }

    fn load_x_k(&mut self, k: u32) {
        self.op(libc::BPF_LDX | libc::BPF_W | libc::BPF_IMM, k);
    }

    fn load_x_mem(&mut self, cell: u32) {
        self.op(libc::BPF_LDX | libc::BPF_MEM, cell);
    }

    fn store(&mut self, cell: u32) {
        self.op(libc::BPF_ST, cell);
    }

    fn store_x(&mut self, cell: u32) {
        self.op(libc::BPF_STX, cell);
    }

    fn alu(&mut self, op: u32, k: u32) {
        self.op(libc::BPF_ALU | op | libc::BPF_K, k);
    }

    fn add_x(&mut self) {
        self.op(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_X, 0);
    }

    fn tax(&mut self) {
        self.op(libc::BPF_MISC | libc::BPF_TAX, 0);
    }

    fn txa(&mut self) {
        self.op(libc::BPF_MISC | libc::BPF_TXA, 0);
    }

    fn ret(&mut self, k: u32) {
        self.op(libc::BPF_RET | libc::BPF_K, k);
    }

    /// `if A == k goto yes else goto no`.
    fn jeq(&mut self, k: u32, yes: To, no: To) {
        self.items.push(Item::Jump {
            code: libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            k,
            yes,
            no,
        });
    }

    /// `if A >= k goto yes else goto no`.
    fn jge(&mut self, k: u32, yes: To, no: To) {
        self.items.push(Item::Jump {
            code: libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            k,
            yes,
            no,
        });
    }

    /// `if A > k goto yes else goto no`.
    fn jgt(&mut self, k: u32, yes: To, no: To) {
        self.items.push(Item::Jump {
            code: libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K,
            k,
            yes,
            no,
        });
    }

    /// `if A >= X goto yes else goto no`.
    fn jge_x(&mut self, yes: To, no: To) {
        self.items.push(Item::Jump {
            code: libc::BPF_JMP | libc::BPF_JGE | libc::BPF_X,
            k: 0,
            yes,
            no,
        });
    }

    fn goto(&mut self, label: Label) {
        self.items.push(Item::Always(label));
    }

    /// The program, or `None` when it is longer than the kernel takes or a
    /// conditional jump reaches further than 255 instructions.
    fn finish(self) -> Option<Vec<sock_filter>> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for item in &self.items {
            match item {
                Item::Mark(Label(l)) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        if pc > libc::BPF_MAXINSNS as usize {
            return None;
        }
        let mut program = Vec::with_capacity(pc);
        for item in self.items {
            let here = program.len();
            let offset = |to: To| -> Option<u32> {
                match to {
                    To::Next => Some(0),
                    To::At(Label(l)) => {
                        let target = at[l];
                        (target != usize::MAX && target > here).then(|| (target - here - 1) as u32)
                    }
                }
            };
            match item {
                Item::Mark(_) => {}
                Item::Plain(op) => program.push(op),
                Item::Always(label) => {
                    program.push(statement(
                        libc::BPF_JMP | libc::BPF_JA,
                        offset(To::At(label))?,
                    ));
                }
                Item::Jump { code, k, yes, no } => {
                    let (jt, jf) = (offset(yes)?, offset(no)?);
                    program.push(sock_filter {
                        code: code as u16,
                        jt: u8::try_from(jt).ok()?,
                        jf: u8::try_from(jf).ok()?,
                        k,
                    });
                }
            }
        }
        Some(program)
    }
}

/// The classic-BPF program of a direction's egress filter: it returns
/// non-zero (the frame goes to the engine) for the frames one of
/// `alternatives` selects, as [`View::matches`] reads them, and 0 for the
/// others (they stay on the veth). `None` when the program would be
/// longer than the kernel takes: the filter then takes every frame
/// ([`take_all`]), and the engine alone tells them apart.
pub(super) fn program(alternatives: &[Match]) -> Option<Vec<sock_filter>> {
    use To::{At, Next};
    let mut a = Assembler::default();
    let (ipv4, ipv6, reject, transport) = (a.label(), a.label(), a.label(), a.label());

    // Every cell is written first: the kernel refuses a program that may
    // read a cell before writing it, and its check carries what is written
    // across a `ret` into the instruction after it.
    a.load_k(0);
    for cell in [
        M_L3,
        M_FAMILY,
        M_PROTOCOL,
        M_L4,
        M_PORTS,
        M_SOURCE_PORT,
        M_DESTINATION_PORT,
        M_NEXT,
        M_FIRST,
    ] {
        a.store(cell);
    }
    // The ethertype, past up to MAX_TAGS tags; X: where the IP header is.
    a.load(libc::BPF_H, 12);
    a.load_x_k(14);
    let ether = a.label();
    for tag in 1..=MAX_TAGS as u32 {
        let (tagged, other) = (a.label(), a.label());
        a.jeq(u32::from(VLAN_TAGS[0]), At(tagged), Next);
        a.jeq(u32::from(VLAN_TAGS[1]), At(tagged), At(other));
        a.mark(tagged);
        a.load(libc::BPF_H, 12 + 4 * tag);
        a.load_x_k(14 + 4 * tag);
        a.mark(other);
    }
    a.mark(ether);
    a.store_x(M_L3);
    a.jeq(0x0800, At(ipv4), Next);
    a.jeq(0x86DD, At(ipv6), At(reject));
    a.mark(reject);
    a.ret(0);

    // IPv4: version 4, a header of 5 words at least, all in the frame.
    let ipv4_reject = a.label();
    a.mark(ipv4);
    a.load_x(libc::BPF_B, 0);
    a.alu(libc::BPF_AND, 0xf0);
    a.jeq(0x40, Next, At(ipv4_reject));
    a.load_x(libc::BPF_B, 0);
    a.alu(libc::BPF_AND, 0x0f);
    a.jge(5, Next, At(ipv4_reject));
    a.alu(libc::BPF_LSH, 2);
    a.add_x();
    a.store(M_L4);
    a.tax();
    a.load_len();
    a.jge_x(Next, At(ipv4_reject));
    a.load_k(4);
    a.store(M_FAMILY);
    a.load_x_mem(M_L3);
    a.load_x(libc::BPF_B, 9);
    a.store(M_PROTOCOL);
    a.jeq(u32::from(IGMP), At(ipv4_reject), Next);
    let later = a.label();
    a.load_x(libc::BPF_H, 6);
    a.alu(libc::BPF_AND, 0x1fff);
    a.jeq(0, Next, At(later));
    a.load_k(1);
    a.store(M_FIRST);
    a.goto(transport);
    a.mark(later);
    a.load_k(0);
    a.store(M_FIRST);
    a.goto(transport);
    a.mark(ipv4_reject);
    a.ret(0);

    // IPv6: version 6, the fixed header in the frame; then the extension
    // headers, up to MAX_EXTENSION_HEADERS.
    let ipv6_reject = a.label();
    a.mark(ipv6);
    a.load_x(libc::BPF_B, 0);
    a.alu(libc::BPF_AND, 0xf0);
    a.jeq(0x60, Next, At(ipv6_reject));
    a.txa();
    a.alu(libc::BPF_ADD, 40);
    a.store(M_L4);
    a.tax();
    a.load_len();
    a.jge_x(Next, At(ipv6_reject));
    a.load_k(6);
    a.store(M_FAMILY);
    a.load_x_mem(M_L3);
    a.load_x(libc::BPF_B, 6);
    a.store(M_PROTOCOL);
    a.load_k(1);
    a.store(M_FIRST);
    let walked = a.label();
    for _ in 0..MAX_EXTENSION_HEADERS {
        let (options, fragment, authentication, next_step) =
            (a.label(), a.label(), a.label(), a.label());
        a.load_mem(M_PROTOCOL);
        a.jeq(u32::from(HOP_BY_HOP), At(options), Next);
        a.jeq(u32::from(ROUTING), At(options), Next);
        a.jeq(u32::from(DESTINATION), At(options), Next);
        a.jeq(u32::from(FRAGMENT), At(fragment), Next);
        a.jeq(u32::from(AUTHENTICATION), At(authentication), At(walked));
        // Next header; length in 8-byte units, not counting the first 8.
        a.mark(options);
        a.load_x_mem(M_L4);
        a.load_x(libc::BPF_B, 0);
        a.store(M_NEXT);
        a.load_x(libc::BPF_B, 1);
        a.alu(libc::BPF_ADD, 1);
        a.alu(libc::BPF_LSH, 3);
        a.add_x();
        a.store(M_L4);
        a.load_mem(M_NEXT);
        a.store(M_PROTOCOL);
        a.goto(next_step);
        // Next header, reserved, offset (13 bits) and flags, id: 8 bytes.
        let first = a.label();
        a.mark(fragment);
        a.load_x_mem(M_L4);
        a.load_x(libc::BPF_H, 2);
        a.alu(libc::BPF_AND, 0xfff8);
        a.jeq(0, At(first), Next);
        a.load_k(0);
        a.store(M_FIRST);
        a.mark(first);
        a.load_x(libc::BPF_B, 0);
        a.store(M_PROTOCOL);
        a.txa();
        a.alu(libc::BPF_ADD, 8);
        a.store(M_L4);
        a.goto(next_step);
        // Next header; length in 4-byte units, not counting the first 8.
        a.mark(authentication);
        a.load_x_mem(M_L4);
        a.load_x(libc::BPF_B, 0);
        a.store(M_NEXT);
        a.load_x(libc::BPF_B, 1);
        a.alu(libc::BPF_ADD, 2);
        a.alu(libc::BPF_LSH, 2);
        a.add_x();
        a.store(M_L4);
        a.load_mem(M_NEXT);
        a.store(M_PROTOCOL);
        a.mark(next_step);
    }
    // Still an extension header: the protocol is unknown.
    let unknown = a.label();
    a.load_mem(M_PROTOCOL);
    for header in EXTENSIONS {
        a.jeq(u32::from(header), At(unknown), Next);
    }
    a.goto(walked);
    a.mark(unknown);
    a.load_k(UNKNOWN_PROTOCOL);
    a.store(M_PROTOCOL);
    a.goto(transport);
    // ICMPv6 upkeep (types 130 to 137, 143) is rejected.
    let (icmp, kind, not_below) = (a.label(), a.label(), a.label());
    a.mark(walked);
    a.load_mem(M_PROTOCOL);
    a.jeq(u32::from(ICMPV6), At(icmp), Next);
    a.goto(transport);
    a.mark(icmp);
    a.load_mem(M_L4);
    a.alu(libc::BPF_ADD, 1);
    a.tax();
    a.load_len();
    a.jge_x(At(kind), Next);
    a.goto(transport);
    a.mark(kind);
    a.load_x_mem(M_L4);
    a.load_x(libc::BPF_B, 0);
    a.jge(130, At(not_below), Next);
    a.goto(transport);
    a.mark(not_below);
    a.jgt(137, Next, At(ipv6_reject));
    a.jeq(143, At(ipv6_reject), Next);
    a.goto(transport);
    a.mark(ipv6_reject);
    a.ret(0);

    // Ports: TCP or UDP, a first fragment, 4 bytes in the frame.
    let (read, none, alternatives_start) = (a.label(), a.label(), a.label());
    a.mark(transport);
    a.load_mem(M_FIRST);
    a.jeq(1, Next, At(none));
    a.load_mem(M_PROTOCOL);
    let tcp_or_udp = a.label();
    a.jeq(u32::from(TCP), At(tcp_or_udp), Next);
    a.jeq(u32::from(UDP), At(tcp_or_udp), At(none));
    a.mark(tcp_or_udp);
    a.load_mem(M_L4);
    a.alu(libc::BPF_ADD, 4);
    a.tax();
    a.load_len();
    a.jge_x(At(read), At(none));
    a.mark(read);
    a.load_x_mem(M_L4);
    a.load_x(libc::BPF_H, 0);
    a.store(M_SOURCE_PORT);
    a.load_x(libc::BPF_H, 2);
    a.store(M_DESTINATION_PORT);
    a.load_k(1);
    a.store(M_PORTS);
    a.goto(alternatives_start);
    a.mark(none);
    a.load_k(0);
    a.store(M_PORTS);
    a.mark(alternatives_start);

    for m in alternatives {
        alternative(&mut a, m);
    }
    a.ret(0);
    a.finish()
}

/// One alternative: falls through to the next when it does not match,
/// returns "take" when it does.
fn alternative(a: &mut Assembler, m: &Match) {
    use To::{At, Next};
    let fail = a.label();
    if let Some(family) = m.family {
        a.load_mem(M_FAMILY);
        a.jeq(family_number(family), Next, At(fail));
    }
    match (m.protocol, m.family) {
        (None, _) => {}
        (Some(p), Some(family)) => {
            a.load_mem(M_PROTOCOL);
            a.jeq(u32::from(p.number(family)), Next, At(fail));
        }
        (Some(p), None) => {
            let (v6, ok) = (a.label(), a.label());
            a.load_mem(M_FAMILY);
            a.jeq(4, Next, At(v6));
            a.load_mem(M_PROTOCOL);
            a.jeq(u32::from(p.number(Family::V4)), At(ok), At(fail));
            a.mark(v6);
            a.load_mem(M_PROTOCOL);
            a.jeq(u32::from(p.number(Family::V6)), Next, At(fail));
            a.mark(ok);
        }
    }
    if m.needs_ports() {
        a.load_mem(M_PORTS);
        a.jeq(1, Next, At(fail));
    }
    if let Some(port) = m.port {
        let ok = a.label();
        a.load_mem(M_SOURCE_PORT);
        a.jeq(u32::from(port), At(ok), Next);
        a.load_mem(M_DESTINATION_PORT);
        a.jeq(u32::from(port), Next, At(fail));
        a.mark(ok);
    }
    for (port, cell) in [
        (m.src_port, M_SOURCE_PORT),
        (m.dst_port, M_DESTINATION_PORT),
    ] {
        if let Some(port) = port {
            a.load_mem(cell);
            a.jeq(u32::from(port), Next, At(fail));
        }
    }
    // Addresses: source at 12 (IPv4) or 8 (IPv6), destination at 16 or 24.
    for (subnet, v4, v6) in [(m.from, 12, 8), (m.to, 16, 24)] {
        let Some(subnet) = subnet else { continue };
        let (bits, mask) = subnet.bits_and_mask();
        let (offset, words) = match subnet.network {
            IpAddr::V4(_) => (v4, 1),
            IpAddr::V6(_) => (v6, 4),
        };
        a.load_x_mem(M_L3);
        for word in 0..words {
            let shift = 32 * (words - 1 - word);
            let (value, mask) = ((bits >> shift) as u32, (mask >> shift) as u32);
            if mask == 0 {
                continue;
            }
            a.load_x(libc::BPF_W, offset + 4 * word);
            if mask != u32::MAX {
                a.alu(libc::BPF_AND, mask);
            }
            a.jeq(value, Next, At(fail));
        }
    }
    a.ret(u32::MAX);
    a.mark(fail);
}

fn family_number(family: Family) -> u32 {
    match family {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Traffic;

    /// Classic BPF as the kernel runs it on a frame (the instructions
    /// [`program`] uses): what the program returns; a load past the end
    /// returns 0.
    fn run(program: &[sock_filter], frame: &[u8]) -> u32 {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        let load = |at: u32, size: u32| -> Option<u32> {
            let at = at as usize;
            let n = match size {
                libc::BPF_W => 4,
                libc::BPF_H => 2,
                _ => 1,
            };
            let b = frame.get(at..at.checked_add(n)?)?;
            Some(b.iter().fold(0u32, |v, byte| v << 8 | u32::from(*byte)))
        };
        loop {
            let op = program[pc];
            let code = u32::from(op.code);
            pc += 1;
            match code & 0x07 {
                libc::BPF_LD => {
                    let size = code & 0x18;
                    a = match code & 0xe0 {
                        libc::BPF_ABS => match load(op.k, size) {
                            Some(v) => v,
                            None => return 0,
                        },
                        libc::BPF_IND => match load(x.wrapping_add(op.k), size) {
                            Some(v) => v,
                            None => return 0,
                        },
                        libc::BPF_LEN => frame.len() as u32,
                        libc::BPF_IMM => op.k,
                        libc::BPF_MEM => mem[op.k as usize],
                        other => panic!("ld mode {other:#x}"),
                    };
                }
                libc::BPF_LDX => {
                    x = match code & 0xe0 {
                        libc::BPF_IMM => op.k,
                        libc::BPF_MEM => mem[op.k as usize],
                        other => panic!("ldx mode {other:#x}"),
                    };
                }
                libc::BPF_ST => mem[op.k as usize] = a,
                libc::BPF_STX => mem[op.k as usize] = x,
                libc::BPF_ALU => {
                    let operand = if code & libc::BPF_X != 0 { x } else { op.k };
                    a = match code & 0xf0 {
                        libc::BPF_ADD => a.wrapping_add(operand),
                        libc::BPF_AND => a & operand,
                        libc::BPF_LSH => a.wrapping_shl(operand),
                        other => panic!("alu {other:#x}"),
                    };
                }
                libc::BPF_JMP => {
                    let operand = if code & libc::BPF_X != 0 { x } else { op.k };
                    let taken = match code & 0xf0 {
                        libc::BPF_JA => {
                            pc += op.k as usize;
                            continue;
                        }
                        libc::BPF_JEQ => a == operand,
                        libc::BPF_JGT => a > operand,
                        libc::BPF_JGE => a >= operand,
                        other => panic!("jmp {other:#x}"),
                    };
                    pc += usize::from(if taken { op.jt } else { op.jf });
                }
                libc::BPF_RET => return op.k,
                libc::BPF_MISC => {
                    if code & 0xf8 == libc::BPF_TXA {
                        a = x;
                    } else {
                        x = a;
                    }
                }
                other => panic!("class {other:#x}"),
            }
        }
    }

    /// What the kernel checks of a classic BPF program before it takes it
    /// (`bpf_check_classic` in net/core/filter.c): jumps within the
    /// program, a `ret` at its end, and no scratch cell read on a path that
    /// has not written it (as the kernel tracks it: what is written before
    /// a `ret` counts for the instruction after it).
    fn kernel_accepts(program: &[sock_filter]) -> Result<(), String> {
        let len = program.len();
        if len == 0 || len > libc::BPF_MAXINSNS as usize {
            return Err(format!("{len} instructions"));
        }
        if u32::from(program[len - 1].code) & 0x07 != libc::BPF_RET {
            return Err("no ret at the end".into());
        }
        let mut masks = vec![u16::MAX; len];
        let mut valid = 0u16;
        for (pc, op) in program.iter().enumerate() {
            valid &= masks[pc];
            let code = u32::from(op.code);
            let class = code & 0x07;
            let cell = 1u16.checked_shl(op.k).unwrap_or(0);
            if code == libc::BPF_ST || code == libc::BPF_STX {
                valid |= cell;
            } else if code == (libc::BPF_LD | libc::BPF_MEM)
                || code == (libc::BPF_LDX | libc::BPF_MEM)
            {
                if valid & cell == 0 {
                    return Err(format!("cell {} read at {pc} before it is written", op.k));
                }
            } else if class == libc::BPF_JMP {
                let targets = if code & 0xf0 == libc::BPF_JA {
                    vec![op.k as usize]
                } else {
                    vec![usize::from(op.jt), usize::from(op.jf)]
                };
                for offset in targets {
                    let target = pc + 1 + offset;
                    if target >= len {
                        return Err(format!("a jump past the end at {pc}"));
                    }
                    masks[target] &= valid;
                }
                valid = u16::MAX;
            }
        }
        Ok(())
    }

    /// Frames made to order.
    #[derive(Clone)]
    struct Frame {
        tags: usize,
        v6: bool,
        protocol: u8,
        source: IpAddr,
        destination: IpAddr,
        ports: (u16, u16),
        /// IPv6 extension headers before the protocol's, by number.
        extensions: Vec<u8>,
        /// A fragment: not the first.
        later_fragment: bool,
        icmp_type: u8,
        ipv4_options: usize,
        payload: usize,
    }

    impl Default for Frame {
        fn default() -> Frame {
            Frame {
                tags: 0,
                v6: false,
                protocol: UDP,
                source: "10.0.0.1".parse().unwrap(),
                destination: "10.0.0.2".parse().unwrap(),
                ports: (40000, 53),
                extensions: Vec::new(),
                later_fragment: false,
                icmp_type: 8,
                ipv4_options: 0,
                payload: 8,
            }
        }
    }

    impl Frame {
        fn bytes(&self) -> Vec<u8> {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            for _ in 0..self.tags {
                f.extend([0x81, 0x00, 0x00, 0x07]);
            }
            let mut transport = Vec::new();
            match self.protocol {
                TCP | UDP => {
                    transport.extend(self.ports.0.to_be_bytes());
                    transport.extend(self.ports.1.to_be_bytes());
                    transport.resize(if self.protocol == TCP { 20 } else { 8 }, 0);
                }
                1 | ICMPV6 => transport.extend([self.icmp_type, 0, 0, 0]),
                _ => {}
            }
            transport.resize(transport.len() + self.payload, 0xab);
            if self.v6 {
                f.extend([0x86, 0xdd]);
                let mut headers = Vec::new();
                let mut chain = self.extensions.clone();
                chain.push(self.protocol);
                for (i, kind) in self.extensions.iter().enumerate() {
                    let next = chain[i + 1];
                    match *kind {
                        FRAGMENT => {
                            let offset: u16 = if self.later_fragment { 185 << 3 } else { 1 };
                            headers.extend([next, 0]);
                            headers.extend(offset.to_be_bytes());
                            headers.extend([0, 0, 0, 9]);
                        }
                        AUTHENTICATION => {
                            headers.extend([next, 2]); // (2 + 2) * 4 = 16 bytes
                            headers.extend([0u8; 14]);
                        }
                        _ => {
                            headers.extend([next, 1]); // 16 bytes
                            headers.extend([0u8; 14]);
                        }
                    }
                }
                let first = if self.extensions.is_empty() {
                    self.protocol
                } else {
                    self.extensions[0]
                };
                let length = (headers.len() + transport.len()) as u16;
                f.extend([0x60, 0, 0, 0]);
                f.extend(length.to_be_bytes());
                f.extend([first, 64]);
                for address in [self.source, self.destination] {
                    match address {
                        IpAddr::V6(a) => f.extend(a.octets()),
                        IpAddr::V4(a) => f.extend(a.to_ipv6_mapped().octets()),
                    }
                }
                f.extend(headers);
            } else {
                f.extend([0x08, 0x00]);
                let ihl = 5 + self.ipv4_options;
                let length = (ihl * 4 + transport.len()) as u16;
                f.push(0x40 | ihl as u8);
                f.push(0);
                f.extend(length.to_be_bytes());
                f.extend([0, 1]);
                let offset: u16 = if self.later_fragment { 185 } else { 0x4000 };
                f.extend(offset.to_be_bytes());
                f.extend([64, self.protocol, 0, 0]);
                for address in [self.source, self.destination] {
                    match address {
                        IpAddr::V4(a) => f.extend(a.octets()),
                        IpAddr::V6(_) => f.extend([192, 0, 2, 1]),
                    }
                }
                f.extend(vec![1u8; self.ipv4_options * 4]);
            }
            f.extend(transport);
            f
        }
    }

    fn takes(traffic: &Traffic, frame: &[u8]) -> bool {
        let alternatives = traffic.check().unwrap();
        let by_view =
            View::parse(frame, MAX_TAGS).is_some_and(|v| alternatives.iter().any(|m| v.matches(m)));
        let program = program(alternatives).unwrap();
        kernel_accepts(&program).unwrap();
        let by_filter = run(&program, frame) != 0;
        assert_eq!(by_view, by_filter, "{traffic}: {frame:02x?}");
        by_view
    }

    fn v6(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_selector_takes_what_it_names() {
        let dns = Frame::default().bytes();
        let dns6 = Frame {
            v6: true,
            source: v6("fd00::1"),
            destination: v6("fd00::2"),
            ..Frame::default()
        };
        let tcp = Frame {
            protocol: TCP,
            ports: (50000, 443),
            ..Frame::default()
        }
        .bytes();
        let ping = Frame {
            protocol: 1,
            ..Frame::default()
        }
        .bytes();
        assert!(takes(&Traffic::ipv4(), &dns));
        assert!(!takes(&Traffic::ipv6(), &dns));
        assert!(takes(&Traffic::ipv6(), &dns6.bytes()));
        assert!(takes(&Traffic::udp(), &dns));
        assert!(!takes(&Traffic::tcp(), &dns));
        assert!(takes(&Traffic::tcp(), &tcp));
        assert!(takes(&Traffic::icmp(), &ping));
        assert!(!takes(&Traffic::icmp(), &dns));
        let echo6 = Frame {
            protocol: ICMPV6,
            icmp_type: 128,
            ..dns6.clone()
        };
        assert!(takes(&Traffic::icmp(), &echo6.bytes()));
        assert!(takes(&Traffic::udp().port(53), &dns));
        assert!(takes(&Traffic::udp().port(40000), &dns));
        assert!(takes(&Traffic::udp().dst_port(53), &dns));
        assert!(!takes(&Traffic::udp().src_port(53), &dns));
        assert!(takes(&Traffic::ipv4().port(443), &tcp), "TCP or UDP");
        assert!(!takes(&Traffic::udp().port(443), &tcp));
        assert!(takes(&Traffic::ipv4().to("10.0.0.0/24"), &dns));
        assert!(takes(&Traffic::ipv4().to("10.0.0.2"), &dns));
        assert!(!takes(&Traffic::ipv4().to("10.0.0.1"), &dns));
        assert!(takes(&Traffic::ipv4().from("10.0.0.1"), &dns));
        assert!(takes(&Traffic::ipv6().to("fd00::/64"), &dns6.bytes()));
        assert!(!takes(
            &Traffic::ipv6().to("fd00:0:0:1::/64"),
            &dns6.bytes()
        ));
        assert!(takes(&Traffic::ipv6().from("fd00::1"), &dns6.bytes()));
        assert!(!takes(&Traffic::ipv6().from("fd00::2"), &dns6.bytes()));
        // The link's upkeep is never taken.
        let solicitation = Frame {
            protocol: ICMPV6,
            icmp_type: 135,
            ..dns6.clone()
        };
        assert!(!takes(&Traffic::ipv6(), &solicitation.bytes()));
        let report = Frame {
            protocol: ICMPV6,
            icmp_type: 143,
            extensions: vec![HOP_BY_HOP],
            ..dns6.clone()
        };
        assert!(!takes(&Traffic::ipv6(), &report.bytes()));
        let igmp = Frame {
            protocol: IGMP,
            ..Frame::default()
        };
        assert!(!takes(&Traffic::ipv4(), &igmp.bytes()));
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!takes(&Traffic::ipv4(), &arp));
    }

    #[test]
    fn tags_options_extension_headers_and_fragments() {
        let dns53 = Traffic::udp().port(53);
        for tags in 0..=MAX_TAGS {
            let frame = Frame {
                tags,
                ..Frame::default()
            };
            assert!(takes(&dns53, &frame.bytes()), "{tags} tags");
        }
        let too_many = Frame {
            tags: MAX_TAGS + 1,
            ..Frame::default()
        };
        assert!(!takes(&Traffic::ipv4(), &too_many.bytes()));
        // The engine gets the frame with the tag the kernel carried beside
        // it put back: it reads past one more.
        let view = View::parse(&too_many.bytes(), ENGINE_TAGS).unwrap();
        assert!(view.matches(&Traffic::ipv4().check().unwrap()[0]));
        let options = Frame {
            ipv4_options: 3,
            ..Frame::default()
        };
        assert!(takes(&dns53, &options.bytes()));
        // A later fragment has its protocol, not its ports.
        let later = Frame {
            later_fragment: true,
            ..Frame::default()
        };
        assert!(takes(&Traffic::udp(), &later.bytes()));
        assert!(!takes(&dns53, &later.bytes()));
        let v6 = |extensions: Vec<u8>, later_fragment| Frame {
            v6: true,
            source: v6("fd00::1"),
            destination: v6("fd00::2"),
            extensions,
            later_fragment,
            ..Frame::default()
        };
        for walked in [
            vec![HOP_BY_HOP],
            vec![DESTINATION, ROUTING],
            vec![FRAGMENT],
            vec![AUTHENTICATION, DESTINATION],
            vec![HOP_BY_HOP, DESTINATION, ROUTING, FRAGMENT],
        ] {
            let frame = v6(walked.clone(), false);
            assert!(takes(&dns53, &frame.bytes()), "{walked:?}");
        }
        let later = v6(vec![FRAGMENT], true);
        assert!(takes(&Traffic::udp(), &later.bytes()));
        assert!(!takes(&dns53, &later.bytes()));
        // Past the walk: the protocol is unknown, the family still known.
        let deep = v6(vec![DESTINATION; MAX_EXTENSION_HEADERS + 1], false);
        assert!(!takes(&Traffic::udp(), &deep.bytes()));
        assert!(takes(&Traffic::ipv6().to("fd00::2"), &deep.bytes()));
    }

    #[test]
    fn cut_frames_are_no_ip_to_either() {
        let traffic = Traffic::udp()
            .port(53)
            .or(Traffic::ipv4())
            .or(Traffic::ipv6().from("fd00::/16"));
        for frame in [
            Frame::default(),
            Frame {
                v6: true,
                source: v6("fd00::1"),
                destination: v6("fd00::2"),
                extensions: vec![HOP_BY_HOP, FRAGMENT],
                ..Frame::default()
            },
        ] {
            let bytes = frame.bytes();
            for len in 0..bytes.len() {
                takes(&traffic, &bytes[..len]);
            }
        }
    }

    /// Random frames, random selectors: the filter and the engine agree.
    #[test]
    fn the_filter_and_the_engine_agree_on_random_frames() {
        let mut rng = super::super::prng::Prng::new(0xb9f);
        let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
        let addresses4 = ["10.0.0.1", "10.0.0.2", "10.9.0.1", "192.168.1.7"];
        let addresses6 = ["fd00::1", "fd00::2", "fd00:1::9", "2001:db8::5"];
        let subnets = [
            "10.0.0.0/8",
            "10.0.0.2",
            "192.168.0.0/16",
            "fd00::/16",
            "fd00::2",
            "2001:db8::/33",
            "fd00:1::/48",
        ];
        let mut taken = 0;
        for round in 0..3000 {
            let mut traffic: Option<Traffic> = None;
            for _ in 0..1 + pick(3) {
                let mut t = match pick(6) {
                    0 => Traffic::ipv4(),
                    1 => Traffic::ipv6(),
                    2 => Traffic::tcp(),
                    3 => Traffic::udp(),
                    4 => Traffic::icmp(),
                    _ => Traffic::ipv4().or(Traffic::ipv6()),
                };
                let port = [53, 443, 40000][pick(3)];
                match pick(5) {
                    0 => t = t.port(port),
                    1 => t = t.dst_port(port),
                    2 => t = t.src_port(port),
                    _ => {}
                }
                if pick(3) == 0 {
                    t = t.to(subnets[pick(subnets.len())]);
                }
                if pick(4) == 0 {
                    t = t.from(subnets[pick(subnets.len())]);
                }
                if t.check().is_err() {
                    continue;
                }
                traffic = Some(match traffic {
                    None => t,
                    Some(before) => before.or(t),
                });
            }
            let Some(traffic) = traffic else { continue };
            for _ in 0..20 {
                let is_v6 = pick(2) == 0;
                let address = |i: usize| -> IpAddr {
                    if is_v6 {
                        addresses6[i].parse().unwrap()
                    } else {
                        addresses4[i].parse().unwrap()
                    }
                };
                let protocol = [TCP, UDP, 1, ICMPV6, IGMP, 50][pick(6)];
                let frame = Frame {
                    tags: pick(4),
                    v6: is_v6,
                    protocol,
                    source: address(pick(4)),
                    destination: address(pick(4)),
                    ports: ([53, 443, 40000, 1][pick(4)], [53, 443, 40000, 2][pick(4)]),
                    extensions: (0..pick(6))
                        .map(|_| EXTENSIONS[pick(EXTENSIONS.len())])
                        .collect(),
                    later_fragment: pick(4) == 0,
                    icmp_type: [8, 128, 135, 143, 3][pick(5)],
                    ipv4_options: pick(3),
                    payload: pick(20),
                };
                let mut bytes = frame.bytes();
                if pick(5) == 0 {
                    bytes.truncate(pick(bytes.len() + 1));
                }
                if takes(&traffic, &bytes) {
                    taken += 1;
                }
            }
            let _ = round;
        }
        assert!(taken > 5000, "the frames exercise matches: {taken}");
    }

    #[test]
    fn programs_fit_their_jumps_and_the_kernel_limit() {
        // The largest alternatives: every field, both subnets IPv6.
        let biggest = Traffic::udp()
            .port(1)
            .src_port(2)
            .dst_port(3)
            .to("fd00::/64")
            .from("fd01::/64");
        let one = program(biggest.check().unwrap()).unwrap();
        assert!(one.len() < 400, "{}", one.len());
        let mut many = biggest.clone();
        for p in 4..=(3 + crate::traffic::MAX_ALTERNATIVES as u16 - 1) {
            many = many.or(Traffic::udp().port(p).to("fd00::/64").from("fd01::/64"));
        }
        let alternatives = many.check().unwrap();
        assert_eq!(alternatives.len(), crate::traffic::MAX_ALTERNATIVES);
        let program = program(alternatives).unwrap();
        assert!(program.len() <= libc::BPF_MAXINSNS as usize);
        kernel_accepts(&program).unwrap();
        kernel_accepts(&take_all()).unwrap();
        // More than the kernel takes: none (the filter takes all).
        let too_many: Vec<Match> = (0..200)
            .flat_map(|_| alternatives.iter().copied())
            .collect();
        assert!(super::program(&too_many).is_none());
    }
}
