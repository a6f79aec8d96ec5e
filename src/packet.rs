//! `PacketView`: a checked, read-only view of one packet's addresses, ports,
//! TCP control fields and payload.
//!
//! Input is untrusted: NFQUEUE hands over raw layer-3 bytes, captures add a
//! link layer (Ethernet with VLAN/QinQ/MPLS, Linux cooked SLL and SLL2, raw
//! IP, BSD loopback). IP and transport headers are parsed by etherparse in
//! its lax mode, so a capture cut short by its snap length still yields the
//! bytes it has. Nothing here panics or allocates: a packet either gives a
//! view or a [`NotParsable`] reason and the caller decides what to do.

use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use std::fmt;

/// Link-layer framing of captured bytes (pcap LINKTYPE_* values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Raw IPv4 or IPv6, as NFQUEUE delivers (LINKTYPE_RAW 101, IPV4 228, IPV6 229).
    RawIp,
    /// Ethernet II, with any number of VLAN tags and MPLS labels (LINKTYPE_ETHERNET 1).
    Ethernet,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL 113).
    LinuxSll,
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2 276).
    LinuxSll2,
    /// BSD loopback: 4-byte address family in host order (LINKTYPE_NULL 0, LOOP 108).
    Null,
}

impl LinkType {
    /// Maps a pcap/pcapng link-type number; `None` for unsupported types.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        match linktype {
            0 | 108 => Some(LinkType::Null),
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// Transport protocol of a packet, a connection or a port rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The lower-case name iptables uses.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a packet gave no view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotParsable {
    /// Link or IP header cut short or inconsistent.
    Malformed,
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP, but neither TCP nor UDP (ICMP, ESP, ...), or a non-first fragment.
    NotTcpUdp,
}

/// The TCP fields the flow tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Sequence number of the first payload byte (or of the SYN).
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
}

/// A parsed TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketView<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TCP or UDP.
    pub proto: Proto,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP control fields (`None` for UDP).
    pub tcp: Option<TcpInfo>,
    /// Transport payload (possibly shorter than sent, see `truncated`).
    pub payload: &'a [u8],
    /// The capture holds fewer bytes than the packet had.
    pub truncated: bool,
}

impl<'a> PacketView<'a> {
    /// Parses raw IPv4/IPv6 bytes (what NFQUEUE delivers).
    pub fn from_ip(bytes: &'a [u8]) -> Result<PacketView<'a>, NotParsable> {
        let sliced = LaxSlicedPacket::from_ip(bytes).map_err(|_| NotParsable::Malformed)?;
        let (src, dst, incomplete, fragmented) = match &sliced.net {
            Some(LaxNetSlice::Ipv4(v4)) => (
                IpAddr::V4(v4.header().source_addr()),
                IpAddr::V4(v4.header().destination_addr()),
                v4.payload().incomplete,
                v4.payload().fragmented,
            ),
            Some(LaxNetSlice::Ipv6(v6)) => (
                IpAddr::V6(v6.header().source_addr()),
                IpAddr::V6(v6.header().destination_addr()),
                v6.payload().incomplete,
                v6.payload().fragmented,
            ),
            _ => return Err(NotParsable::NotIp),
        };
        if fragmented {
            // A first fragment has ports but not the whole payload; a later one
            // has neither. The kernel reassembles before mangle/NFQUEUE, so
            // fragments only appear in captures.
            return Err(NotParsable::NotTcpUdp);
        }
        match sliced.transport {
            Some(TransportSlice::Tcp(t)) => Ok(PacketView {
                src,
                dst,
                proto: Proto::Tcp,
                sport: t.source_port(),
                dport: t.destination_port(),
                tcp: Some(TcpInfo {
                    seq: t.sequence_number(),
                    syn: t.syn(),
                    ack: t.ack(),
                    fin: t.fin(),
                    rst: t.rst(),
                }),
                payload: t.payload(),
                truncated: incomplete,
            }),
            Some(TransportSlice::Udp(u)) => Ok(PacketView {
                src,
                dst,
                proto: Proto::Udp,
                sport: u.source_port(),
                dport: u.destination_port(),
                tcp: None,
                payload: u.payload(),
                truncated: incomplete,
            }),
            _ if sliced.stop_err.is_some() => Err(NotParsable::Malformed),
            _ => Err(NotParsable::NotTcpUdp),
        }
    }

    /// Parses a captured frame of the given link type.
    pub fn from_link(link: LinkType, bytes: &'a [u8]) -> Result<PacketView<'a>, NotParsable> {
        PacketView::from_ip(strip_link(link, bytes)?)
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_VLAN_OLD: u16 = 0x9100;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Returns the IP packet inside a link-layer frame.
fn strip_link(link: LinkType, bytes: &[u8]) -> Result<&[u8], NotParsable> {
    let (ethertype, rest) = match link {
        LinkType::RawIp => return Ok(bytes),
        LinkType::Ethernet => (be16(bytes, 12).ok_or(NotParsable::Malformed)?, bytes.get(14..)),
        LinkType::LinuxSll => (be16(bytes, 14).ok_or(NotParsable::Malformed)?, bytes.get(16..)),
        LinkType::LinuxSll2 => (be16(bytes, 0).ok_or(NotParsable::Malformed)?, bytes.get(20..)),
        LinkType::Null => {
            let fam = bytes.get(..4).ok_or(NotParsable::Malformed)?;
            // Host byte order of the capturing machine: accept either.
            let f = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]])
                .min(u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]));
            let et = match f {
                2 => ETH_IPV4,
                24 | 28 | 30 => ETH_IPV6,
                _ => return Err(NotParsable::NotIp),
            };
            (et, bytes.get(4..))
        }
    };
    let mut rest = rest.ok_or(NotParsable::Malformed)?;
    let mut ethertype = ethertype;
    // Bounded: each step consumes bytes, and tag stacks deeper than 8 are hostile.
    for _ in 0..8 {
        match ethertype {
            ETH_IPV4 | ETH_IPV6 => return Ok(rest),
            ETH_VLAN | ETH_QINQ | ETH_VLAN_OLD => {
                ethertype = be16(rest, 2).ok_or(NotParsable::Malformed)?;
                rest = rest.get(4..).ok_or(NotParsable::Malformed)?;
            }
            ETH_MPLS | ETH_MPLS_MC => {
                // Pop labels until bottom of stack, then guess IP by version nibble.
                let mut r = rest;
                loop {
                    let label = r.get(..4).ok_or(NotParsable::Malformed)?;
                    r = &r[4..];
                    if label[2] & 1 == 1 {
                        break;
                    }
                }
                return match r.first().map(|b| b >> 4) {
                    Some(4) | Some(6) => Ok(r),
                    Some(_) => Err(NotParsable::NotIp),
                    None => Err(NotParsable::Malformed),
                };
            }
            _ => return Err(NotParsable::NotIp),
        }
    }
    Err(NotParsable::Malformed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// Builds a raw IPv4 TCP packet for tests.
    pub fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 65535)
            .ack(1);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn parses_tcp_udp_v4_v6() {
        let p = tcp4(
            [192, 0, 2, 1],
            40000,
            [198, 51, 100, 2],
            80,
            7,
            b"GET / HTTP/1.1\r\n",
        );
        let v = PacketView::from_ip(&p).unwrap();
        assert_eq!(v.src.to_string(), "192.0.2.1");
        assert_eq!((v.sport, v.dport, v.proto), (40000, 80, Proto::Tcp));
        assert_eq!(v.tcp.unwrap().seq, 7);
        assert_eq!(v.payload, b"GET / HTTP/1.1\r\n");

        let mut u = Vec::new();
        PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6],
            64,
        )
        .udp(5000, 8000)
        .write(&mut u, b"\x02abc\x03")
        .unwrap();
        let v = PacketView::from_ip(&u).unwrap();
        assert_eq!(v.src.to_string(), "2001:db8::5");
        assert_eq!(
            (v.proto, v.dport, v.payload),
            (Proto::Udp, 8000, &b"\x02abc\x03"[..])
        );
    }

    #[test]
    fn link_layers() {
        let ip = tcp4([192, 0, 2, 1], 1, [192, 0, 2, 2], 2, 0, b"x");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        assert!(PacketView::from_link(LinkType::Ethernet, &eth).is_ok());
        let mut mpls = vec![0u8; 12];
        mpls.extend_from_slice(&[0x88, 0x47, 0, 0, 0x10, 64, 0, 0, 0x21, 64]);
        mpls.extend_from_slice(&ip);
        assert!(PacketView::from_link(LinkType::Ethernet, &mpls).is_ok());
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        assert!(PacketView::from_link(LinkType::LinuxSll, &sll).is_ok());
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        assert!(PacketView::from_link(LinkType::LinuxSll2, &sll2).is_ok());
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        assert!(PacketView::from_link(LinkType::Null, &null).is_ok());
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(
            PacketView::from_link(LinkType::Ethernet, &arp),
            Err(NotParsable::NotIp)
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let ip = tcp4([192, 0, 2, 1], 1, [192, 0, 2, 2], 2, 0, b"payload bytes");
        for link in [
            LinkType::RawIp,
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Null,
        ] {
            for cut in 0..ip.len() {
                let _ = PacketView::from_link(link, &ip[..cut]);
            }
            let mut x = 0x1234_5678u32;
            for _ in 0..2000 {
                let mut buf = ip.clone();
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = x as usize % buf.len();
                    buf[i] = (x >> 8) as u8;
                }
                let _ = PacketView::from_link(link, &buf);
            }
        }
        // A truncated capture keeps what it has.
        let v = PacketView::from_ip(&ip[..ip.len() - 4]).unwrap();
        assert!(v.truncated);
        assert_eq!(v.payload, b"payload b");
    }
}
