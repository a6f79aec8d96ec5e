//! Peeling encapsulations off a captured frame down to the innermost IP
//! packet.
//!
//! Captures taken on a trunk, a DSL line or a mobile core wrap the traffic we
//! judge in tunnels: PPPoE, GRE (plain, transparent Ethernet bridging,
//! ERSPAN, PPTP), IP-in-IP, 6in4, VXLAN and GTP-U. This module walks those
//! headers without copying and returns a slice of the input frame.
//!
//! Guarantees: never panics and never allocates; at most [`MAX_STEPS`]
//! headers are looked at and at most [`MAX_LAYERS`] tunnels are recorded, so
//! a hostile frame costs bounded work. A fragmented IP packet stops the walk
//! (its payload cannot be read before reassembly); the caller reassembles it
//! and peels the result again with [`peel_ip`]. UDP on the VXLAN or GTP-U port
//! whose payload does not look like that protocol is returned as the plain
//! UDP packet it is.

use crate::packet::LinkType;

use super::ip::{IpError, be16, parse_ip};

/// Most tunnel layers recorded for one packet.
pub const MAX_LAYERS: usize = 8;
/// Most headers (link, tags, labels, tunnels, extensions) examined per peel.
pub const MAX_STEPS: usize = 32;

const ET_IPV4: u16 = 0x0800;
const ET_IPV6: u16 = 0x86dd;
const ET_VLAN: u16 = 0x8100;
const ET_QINQ: u16 = 0x88a8;
const ET_VLAN_OLD: u16 = 0x9100;
const ET_MPLS: u16 = 0x8847;
const ET_MPLS_MC: u16 = 0x8848;
const ET_PPPOE_DISC: u16 = 0x8863;
const ET_PPPOE_SESS: u16 = 0x8864;
const ET_TEB: u16 = 0x6558;
const ET_ERSPAN2: u16 = 0x88be;
const ET_ERSPAN3: u16 = 0x22eb;
const ET_PPP: u16 = 0x880b;

/// VXLAN's IANA-assigned UDP port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// GTP-U's UDP port (3GPP TS 29.281).
pub const GTPU_PORT: u16 = 2152;

/// One tunnel peeled off on the way to the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// PPPoE session (ethertype 0x8864) carrying PPP.
    Pppoe,
    /// GRE version 0 (RFC 2784/2890).
    Gre,
    /// Enhanced GRE version 1 (PPTP) carrying PPP.
    GrePpp,
    /// ERSPAN type I, II or III inside GRE.
    Erspan,
    /// An Ethernet header inside GRE (transparent Ethernet bridging); not
    /// recorded for VXLAN and ERSPAN, which always carry one.
    Ethernet,
    /// IPv4 in IPv4 (protocol 4).
    IpInIp,
    /// IPv6 in IPv4 (protocol 41, 6in4/6to4).
    Ip6In4,
    /// IPv4 in IPv6 (protocol 4).
    Ip4In6,
    /// IPv6 in IPv6 (protocol 41).
    Ip6In6,
    /// VXLAN (UDP 4789).
    Vxlan,
    /// GTP-U T-PDU (UDP 2152).
    GtpU,
    /// IP fragments reassembled into one packet (added by the decapsulator).
    Reassembled,
}

impl Layer {
    /// Stable short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Pppoe => "pppoe",
            Layer::Gre => "gre",
            Layer::GrePpp => "gre-ppp",
            Layer::Erspan => "erspan",
            Layer::Ethernet => "eth",
            Layer::IpInIp => "ipip",
            Layer::Ip6In4 => "6in4",
            Layer::Ip4In6 => "4in6",
            Layer::Ip6In6 => "6in6",
            Layer::Vxlan => "vxlan",
            Layer::GtpU => "gtp-u",
            Layer::Reassembled => "reassembled",
        }
    }
}

/// The tunnels peeled, outermost first; fixed capacity, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    items: [Layer; MAX_LAYERS],
    len: usize,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            items: [Layer::Gre; MAX_LAYERS],
            len: 0,
        }
    }
}

impl Layers {
    /// The layers, outermost first.
    pub fn as_slice(&self) -> &[Layer] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// True when no tunnel was peeled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a layer; false when [`MAX_LAYERS`] are already recorded.
    pub fn push(&mut self, layer: Layer) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = layer;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Appends all of `other`; false (and nothing beyond capacity) on overflow.
    pub fn extend(&mut self, other: &Layers) -> bool {
        other.as_slice().iter().all(|l| self.push(*l))
    }
}

impl std::fmt::Display for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, l) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(l.name())?;
        }
        Ok(())
    }
}

/// The header at which peeling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The capture's link-layer header (Ethernet, SLL, loopback).
    Link,
    /// A VLAN tag.
    Vlan,
    /// An MPLS label stack.
    Mpls,
    /// A PPPoE header.
    Pppoe,
    /// A PPP protocol field.
    Ppp,
    /// An IPv4/IPv6 header (or its extension headers).
    Ip,
    /// A GRE header.
    Gre,
    /// An ERSPAN header.
    Erspan,
    /// A VXLAN header.
    Vxlan,
    /// A GTP-U header or extension header.
    GtpU,
}

impl Stage {
    /// Stable short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Link => "link",
            Stage::Vlan => "vlan",
            Stage::Mpls => "mpls",
            Stage::Pppoe => "pppoe",
            Stage::Ppp => "ppp",
            Stage::Ip => "ip",
            Stage::Gre => "gre",
            Stage::Erspan => "erspan",
            Stage::Vxlan => "vxlan",
            Stage::GtpU => "gtp-u",
        }
    }
}

/// What lies at the bottom of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner<'a> {
    /// The innermost IP packet, cut to its header's length (link padding
    /// removed). It may be a fragment, or carry neither TCP nor UDP.
    Ip(&'a [u8]),
    /// The frame carries no IP (ARP, LLDP, PPPoE discovery, PPP control,
    /// a non-IP GTP-U PDU, ...).
    NotIp,
    /// A header at this stage is cut short or inconsistent.
    Malformed(Stage),
    /// An encapsulation recognised but not decoded here (GRE source routing
    /// or an unknown GRE version, an unknown ERSPAN version).
    Unsupported(Stage),
    /// More than [`MAX_LAYERS`] tunnels or [`MAX_STEPS`] headers.
    TooDeep,
}

/// The result of peeling one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decap<'a> {
    /// Where the walk ended.
    pub inner: Inner<'a>,
    /// Tunnels peeled on the way, outermost first.
    pub layers: Layers,
}

enum Next<'a> {
    /// A full Ethernet header follows.
    Eth(&'a [u8]),
    /// The payload of a header whose type field is this ethertype.
    Ether(u16, &'a [u8]),
    /// A PPP frame (optional address/control, protocol field).
    Ppp(&'a [u8]),
    /// An IP header follows.
    Ip(&'a [u8]),
    Done(Inner<'a>),
}

/// Peels a captured frame of the given link type.
pub fn peel(link: LinkType, frame: &[u8]) -> Decap<'_> {
    let first = match link {
        LinkType::RawIp => Next::Ip(frame),
        LinkType::Ethernet => Next::Eth(frame),
        LinkType::LinuxSll => match (be16(frame, 14), frame.get(16..)) {
            (Some(et), Some(rest)) => Next::Ether(et, rest),
            _ => Next::Done(Inner::Malformed(Stage::Link)),
        },
        LinkType::LinuxSll2 => match (be16(frame, 0), frame.get(20..)) {
            (Some(et), Some(rest)) => Next::Ether(et, rest),
            _ => Next::Done(Inner::Malformed(Stage::Link)),
        },
        LinkType::Null => null_link(frame),
    };
    run(first)
}

/// Peels a bare IP packet (a reassembled datagram, or NFQUEUE bytes).
pub fn peel_ip(ip: &[u8]) -> Decap<'_> {
    run(Next::Ip(ip))
}

fn null_link(frame: &[u8]) -> Next<'_> {
    let (Some(fam), Some(rest)) = (frame.get(..4), frame.get(4..)) else {
        return Next::Done(Inner::Malformed(Stage::Link));
    };
    let fam = [fam[0], fam[1], fam[2], fam[3]];
    // Host byte order of the capturing machine: accept either.
    let f = u32::from_le_bytes(fam).min(u32::from_be_bytes(fam));
    match f {
        2 => Next::Ether(ET_IPV4, rest),
        24 | 28 | 30 => Next::Ether(ET_IPV6, rest),
        _ => Next::Done(Inner::NotIp),
    }
}

fn run(first: Next<'_>) -> Decap<'_> {
    let mut p = Peeler {
        layers: Layers::default(),
        steps: 0,
    };
    let mut next = first;
    while p.steps < MAX_STEPS {
        p.steps += 1;
        next = match next {
            Next::Done(inner) => {
                return Decap {
                    inner,
                    layers: p.layers,
                };
            }
            Next::Eth(b) => match (be16(b, 12), b.get(14..)) {
                (Some(et), Some(rest)) => Next::Ether(et, rest),
                _ => Next::Done(Inner::Malformed(Stage::Link)),
            },
            Next::Ether(et, b) => p.ether(et, b),
            Next::Ppp(b) => ppp(b),
            Next::Ip(b) => p.ip(b),
        };
    }
    Decap {
        inner: Inner::TooDeep,
        layers: p.layers,
    }
}

struct Peeler {
    layers: Layers,
    steps: usize,
}

impl Peeler {
    /// Records a tunnel, or ends the walk when too many are stacked.
    fn enter<'a>(&mut self, layer: Layer, next: Next<'a>) -> Next<'a> {
        if self.layers.push(layer) {
            next
        } else {
            Next::Done(Inner::TooDeep)
        }
    }

    fn ether<'a>(&mut self, et: u16, b: &'a [u8]) -> Next<'a> {
        match et {
            ET_IPV4 | ET_IPV6 => Next::Ip(b),
            ET_VLAN | ET_QINQ | ET_VLAN_OLD => match (be16(b, 2), b.get(4..)) {
                (Some(et), Some(rest)) => Next::Ether(et, rest),
                _ => Next::Done(Inner::Malformed(Stage::Vlan)),
            },
            ET_MPLS | ET_MPLS_MC => self.mpls(b),
            ET_PPPOE_SESS => self.pppoe(b),
            ET_PPP => Next::Ppp(b),
            ET_TEB => self.enter(Layer::Ethernet, Next::Eth(b)),
            // PPPoE discovery carries no user data.
            ET_PPPOE_DISC => Next::Done(Inner::NotIp),
            _ => Next::Done(Inner::NotIp),
        }
    }

    fn mpls<'a>(&mut self, b: &'a [u8]) -> Next<'a> {
        let mut r = b;
        loop {
            let Some(label) = r.get(..4) else {
                return Next::Done(Inner::Malformed(Stage::Mpls));
            };
            r = r.get(4..).unwrap_or(&[]);
            if label[2] & 1 == 1 {
                break;
            }
            self.steps += 1;
            if self.steps >= MAX_STEPS {
                return Next::Done(Inner::TooDeep);
            }
        }
        // No protocol field below MPLS: guess IP by the version nibble.
        match r.first().map(|v| v >> 4) {
            Some(4) | Some(6) => Next::Ip(r),
            Some(_) => Next::Done(Inner::NotIp),
            None => Next::Done(Inner::Malformed(Stage::Mpls)),
        }
    }

    fn pppoe<'a>(&mut self, b: &'a [u8]) -> Next<'a> {
        // RFC 2516: ver=1 type=1, code 0 for session data, then session id and length.
        let (Some(head), Some(rest)) = (b.get(..6), b.get(6..)) else {
            return Next::Done(Inner::Malformed(Stage::Pppoe));
        };
        if head[0] != 0x11 || head[1] != 0 {
            return Next::Done(Inner::Malformed(Stage::Pppoe));
        }
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        // A shorter capture keeps what it has; a longer frame is link padding.
        let rest = rest.get(..len).unwrap_or(rest);
        self.enter(Layer::Pppoe, Next::Ppp(rest))
    }

    fn ip<'a>(&mut self, b: &'a [u8]) -> Next<'a> {
        let h = match parse_ip(b) {
            Ok(h) => h,
            Err(IpError::Truncated | IpError::Bad) => return Next::Done(Inner::Malformed(Stage::Ip)),
        };
        let pkt = b.get(..h.len).unwrap_or(b);
        if h.frag.is_some() {
            return Next::Done(Inner::Ip(pkt));
        }
        let payload = pkt.get(h.hdr_len..).unwrap_or(&[]);
        let inner_v = |want: u8, layer: Layer, this: &mut Peeler| match payload.first().map(|v| v >> 4) {
            Some(v) if v == want => this.enter(layer, Next::Ip(payload)),
            _ => Next::Done(Inner::Malformed(Stage::Ip)),
        };
        match (h.version, h.proto) {
            (4, 4) => inner_v(4, Layer::IpInIp, self),
            (6, 4) => inner_v(4, Layer::Ip4In6, self),
            (4, 41) => inner_v(6, Layer::Ip6In4, self),
            (6, 41) => inner_v(6, Layer::Ip6In6, self),
            (_, 47) => self.gre(payload),
            (_, 17) => self.udp(pkt, payload),
            _ => Next::Done(Inner::Ip(pkt)),
        }
    }

    fn gre<'a>(&mut self, b: &'a [u8]) -> Next<'a> {
        let (Some(flags), Some(proto)) = (be16(b, 0), be16(b, 2)) else {
            return Next::Done(Inner::Malformed(Stage::Gre));
        };
        let (c, r, k, s) = (
            flags & 0x8000 != 0,
            flags & 0x4000 != 0,
            flags & 0x2000 != 0,
            flags & 0x1000 != 0,
        );
        match flags & 7 {
            0 => {
                if r {
                    // RFC 1701 source routing: deprecated, variable entries.
                    return Next::Done(Inner::Unsupported(Stage::Gre));
                }
                let off = 4 + 4 * (usize::from(c) + usize::from(k) + usize::from(s));
                let Some(rest) = b.get(off..) else {
                    return Next::Done(Inner::Malformed(Stage::Gre));
                };
                let next = match proto {
                    ET_ERSPAN2 | ET_ERSPAN3 => return self.erspan(proto, s, rest),
                    _ => Next::Ether(proto, rest),
                };
                self.enter(Layer::Gre, next)
            }
            1 => {
                // RFC 2637 enhanced GRE: key (payload length, call id) always,
                // then optional sequence and acknowledgement numbers.
                if proto != ET_PPP || !k {
                    return Next::Done(Inner::Malformed(Stage::Gre));
                }
                let a = flags & 0x0080 != 0;
                let off = 8 + 4 * (usize::from(s) + usize::from(a));
                let Some(rest) = b.get(off..) else {
                    return Next::Done(Inner::Malformed(Stage::Gre));
                };
                if rest.is_empty() {
                    // An acknowledgement without payload.
                    return Next::Done(Inner::NotIp);
                }
                self.enter(Layer::GrePpp, Next::Ppp(rest))
            }
            _ => Next::Done(Inner::Unsupported(Stage::Gre)),
        }
    }

    fn erspan<'a>(&mut self, proto: u16, seq: bool, b: &'a [u8]) -> Next<'a> {
        if !self.layers.push(Layer::Gre) {
            return Next::Done(Inner::TooDeep);
        }
        let skip = if proto == ET_ERSPAN2 && !seq {
            // Type I: no ERSPAN header, no GRE sequence number.
            Some(0)
        } else if proto == ET_ERSPAN2 {
            // Type II: 8 bytes, version 1.
            b.first().and_then(|v| (v >> 4 == 1).then_some(8))
        } else {
            // Type III: 12 bytes, version 2, plus 8 when the O flag is set.
            match (b.first(), b.get(11)) {
                (Some(v), Some(o)) if v >> 4 == 2 => Some(if o & 1 == 1 { 20 } else { 12 }),
                (Some(v), _) if v >> 4 != 2 => None,
                _ => return Next::Done(Inner::Malformed(Stage::Erspan)),
            }
        };
        let Some(skip) = skip else {
            return match b.first() {
                Some(_) => Next::Done(Inner::Unsupported(Stage::Erspan)),
                None => Next::Done(Inner::Malformed(Stage::Erspan)),
            };
        };
        match b.get(skip..) {
            Some(rest) => self.enter(Layer::Erspan, Next::Eth(rest)),
            None => Next::Done(Inner::Malformed(Stage::Erspan)),
        }
    }

    fn udp<'a>(&mut self, pkt: &'a [u8], payload: &'a [u8]) -> Next<'a> {
        let (Some(dport), Some(ulen), Some(data)) = (be16(payload, 2), be16(payload, 4), payload.get(8..))
        else {
            return Next::Done(Inner::Ip(pkt));
        };
        let data = usize::from(ulen)
            .checked_sub(8)
            .and_then(|n| data.get(..n))
            .unwrap_or(data);
        match dport {
            VXLAN_PORT => match data.get(..8) {
                // RFC 7348: the I flag says the VNI is valid.
                Some(h) if h[0] & 0x08 != 0 => {
                    self.enter(Layer::Vxlan, Next::Eth(data.get(8..).unwrap_or(&[])))
                }
                _ => Next::Done(Inner::Ip(pkt)),
            },
            GTPU_PORT => self.gtpu(pkt, data),
            _ => Next::Done(Inner::Ip(pkt)),
        }
    }

    fn gtpu<'a>(&mut self, pkt: &'a [u8], d: &'a [u8]) -> Next<'a> {
        // TS 29.281: version 1, PT 1; only T-PDUs (type 255) carry user data,
        // anything else is signalling and stays the UDP packet it is.
        let (Some(&b0), Some(&mtype), Some(len), Some(body)) = (d.first(), d.get(1), be16(d, 2), d.get(8..))
        else {
            return Next::Done(Inner::Ip(pkt));
        };
        if b0 >> 5 != 1 || b0 & 0x10 == 0 || mtype != 0xff {
            return Next::Done(Inner::Ip(pkt));
        }
        let mut body = body.get(..usize::from(len)).unwrap_or(body);
        if b0 & 0x07 != 0 {
            // Sequence number, N-PDU number and next extension type are
            // present when any of E, S, PN is set.
            let (Some(opt), Some(rest)) = (body.get(..4), body.get(4..)) else {
                return Next::Done(Inner::Malformed(Stage::GtpU));
            };
            let mut next_ext = opt[3];
            body = rest;
            if b0 & 0x04 != 0 {
                while next_ext != 0 {
                    self.steps += 1;
                    if self.steps >= MAX_STEPS {
                        return Next::Done(Inner::TooDeep);
                    }
                    // Length in 4-octet units, covering the length and next-type bytes.
                    let n = body.first().map(|l| usize::from(*l) * 4).unwrap_or(0);
                    let (Some(ext), Some(rest)) = (body.get(..n).filter(|_| n > 0), body.get(n..)) else {
                        return Next::Done(Inner::Malformed(Stage::GtpU));
                    };
                    next_ext = ext[n - 1];
                    body = rest;
                }
            }
        }
        let next = match body.first().map(|v| v >> 4) {
            Some(4) | Some(6) => Next::Ip(body),
            Some(_) => Next::Done(Inner::NotIp),
            None => Next::Done(Inner::Malformed(Stage::GtpU)),
        };
        self.enter(Layer::GtpU, next)
    }
}

fn ppp(b: &[u8]) -> Next<'_> {
    // Address/control (FF 03) may be present (PPTP); PPPoE omits them.
    let b = match b.get(..2) {
        Some([0xff, 0x03]) => b.get(2..).unwrap_or(&[]),
        _ => b,
    };
    // Protocol-field compression: an odd first byte is a one-byte protocol.
    let (proto, rest) = match b.first() {
        Some(p) if p & 1 == 1 => (u16::from(*p), b.get(1..)),
        Some(_) => (be16(b, 0).unwrap_or(0), b.get(2..)),
        None => return Next::Done(Inner::Malformed(Stage::Ppp)),
    };
    let Some(rest) = rest else {
        return Next::Done(Inner::Malformed(Stage::Ppp));
    };
    match proto {
        0x0021 | 0x0057 => Next::Ip(rest),
        0x0281 => Next::Ether(ET_MPLS, rest),
        _ => Next::Done(Inner::NotIp),
    }
}
