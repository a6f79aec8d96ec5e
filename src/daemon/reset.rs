//! Blocks that people notice: a blocked TCP connection is answered with a
//! reset to each side, so the client reports an error at once instead of
//! waiting for its own timeout, and the server frees the connection.
//!
//! Why here and not a kernel `REJECT`: a reject answers only the side whose
//! packet hits it, and only when that side sends again; appwall holds the
//! packet that settled the connection, and that packet carries what both
//! sides expect next. Its sequence number is what the receiver expects
//! (the packet is dropped, so it never arrives), and its acknowledgment
//! number is what the sender expects from the receiver: a reset with
//! exactly that sequence number is accepted (RFC 5961 asks for an exact
//! match), one anywhere else only draws a challenge ACK. The flow table's
//! per-side `next_seq` would say the same less exactly (it follows only
//! inspected bytes), so the packet is used.
//!
//! Guarantees: resets are built for TCP only, never answer a reset, and
//! the side that has not seen the connection yet (the server, when the
//! opening SYN is blocked) gets none; the pure builder ([`resets_for`]) is
//! tested on its own; sending goes through raw sockets (`IPPROTO_RAW`,
//! which implies `IP_HDRINCL`; CAP_NET_RAW is kept for it) opened once at
//! start-up, and a failure is counted, never fatal.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrStorage, sendto, socket,
};

/// Hop limit of the resets appwall sends.
pub const RESET_TTL: u8 = 64;

/// A reset ready to send: its destination and its IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// Where it goes.
    pub to: IpAddr,
    /// The whole IP packet (header and TCP header, checksums filled in).
    pub packet: Vec<u8>,
}

/// The TCP fields of the settling packet the resets are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    rst: bool,
    len: u32,
}

fn segment(ip: &[u8]) -> Option<Segment> {
    let p = SlicedPacket::from_ip(ip).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(s) => (
            s.header().source_addr().into(),
            s.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(s) => (
            s.header().source_addr().into(),
            s.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let TransportSlice::Tcp(t) = p.transport? else {
        return None;
    };
    Some(Segment {
        src,
        dst,
        sport: t.source_port(),
        dport: t.destination_port(),
        seq: t.sequence_number(),
        ack: t.ack().then(|| t.acknowledgment_number()),
        syn: t.syn(),
        rst: t.rst(),
        len: u32::try_from(t.payload().len()).unwrap_or(u32::MAX),
    })
}

fn build(from: (IpAddr, u16), to: (IpAddr, u16), seq: u32, ack: Option<u32>) -> Option<Reset> {
    let b = match (from.0, to.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), RESET_TTL),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), RESET_TTL),
        _ => return None,
    };
    let b = b.tcp(from.1, to.1, seq, 0).rst();
    let b = match ack {
        Some(a) => b.ack(a),
        None => b,
    };
    let mut packet = Vec::with_capacity(b.size(0));
    b.write(&mut packet, &[]).ok()?;
    Some(Reset { to: to.0, packet })
}

/// The resets that end the connection of `ip` (the packet that settled it
/// as blocked, as queued): one to its sender and, once the connection is
/// established, one to its receiver. Empty for anything but TCP, and for a
/// reset.
pub fn resets_for(ip: &[u8]) -> Vec<Reset> {
    let Some(s) = segment(ip) else {
        return Vec::new();
    };
    if s.rst {
        return Vec::new();
    }
    let (a, b) = ((s.src, s.sport), (s.dst, s.dport));
    // What the receiver would have acknowledged had the packet arrived.
    let after = s.seq.wrapping_add(s.len).wrapping_add(u32::from(s.syn));
    let mut out = Vec::new();
    match s.ack {
        Some(ack) => {
            // To the sender, from the receiver: at the sender's expected
            // sequence number. To the receiver, from the sender: where the
            // dropped packet would have started.
            out.extend(build(b, a, ack, Some(after)));
            out.extend(build(a, b, s.seq, None));
        }
        // An opening SYN: only its sender knows of the connection; a reset
        // in SYN-SENT must acknowledge the SYN.
        None => out.extend(build(b, a, 0, Some(after))),
    }
    out
}

/// Raw sockets for sending resets, one per family (a family whose socket
/// could not be opened sends none and counts failures).
#[derive(Debug)]
pub struct ResetSender {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
}

impl ResetSender {
    /// Opens the raw sockets (needs CAP_NET_RAW), close-on-exec.
    pub fn open() -> ResetSender {
        let open = |af| socket(af, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw).ok();
        ResetSender {
            v4: open(AddressFamily::Inet),
            v6: open(AddressFamily::Inet6),
        }
    }

    /// True when at least one family can send.
    pub fn usable(&self) -> bool {
        self.v4.is_some() || self.v6.is_some()
    }

    /// Sends `r`; false when it could not be.
    pub fn send(&self, r: &Reset) -> bool {
        let fd = match r.to {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
        };
        let Some(fd) = fd else {
            return false;
        };
        let to = SockaddrStorage::from(SocketAddr::new(r.to, 0));
        use std::os::fd::AsRawFd;
        sendto(fd.as_raw_fd(), &r.packet, &to, MsgFlags::MSG_DONTWAIT).is_ok_and(|n| n == r.packet.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(src: &str, dst: &str, seq: u32, ack: Option<u32>, syn: bool, payload: &[u8]) -> Vec<u8> {
        let b = match (src.parse::<IpAddr>().unwrap(), dst.parse::<IpAddr>().unwrap()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!(),
        };
        let mut b = b.tcp(40000, 80, seq, 1000);
        if syn {
            b = b.syn();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn mid_connection_both_sides_get_an_exact_reset() {
        for (c, s) in [("192.0.2.10", "198.51.100.80"), ("2001:db8::10", "2001:db8::80")] {
            let pkt = tcp(c, s, 1000, Some(5000), false, b"VER 1 MSNP8\r\n");
            let r = resets_for(&pkt);
            assert_eq!(r.len(), 2, "{c}");
            let to_client = segment(&r[0].packet).unwrap();
            assert_eq!(r[0].to, c.parse::<IpAddr>().unwrap());
            assert_eq!((to_client.src, to_client.sport), (s.parse().unwrap(), 80));
            assert_eq!(to_client.dport, 40000);
            assert!(to_client.rst);
            assert_eq!(to_client.seq, 5000, "what the client expects from the server");
            assert_eq!(to_client.ack, Some(1013));
            let to_server = segment(&r[1].packet).unwrap();
            assert_eq!(r[1].to, s.parse::<IpAddr>().unwrap());
            assert_eq!((to_server.sport, to_server.dport), (40000, 80));
            assert!(to_server.rst);
            assert_eq!(to_server.seq, 1000, "where the dropped bytes began");
            // Checksums are valid: etherparse reparses and verifies the TCP one.
            let p = SlicedPacket::from_ip(&r[1].packet).unwrap();
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                panic!()
            };
            let ok = match p.net.unwrap() {
                NetSlice::Ipv4(ip) => {
                    t.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                        .unwrap()
                        == t.checksum()
                }
                NetSlice::Ipv6(ip) => {
                    t.calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                        .unwrap()
                        == t.checksum()
                }
                NetSlice::Arp(_) => false,
            };
            assert!(ok, "bad checksum");
        }
    }

    #[test]
    fn a_blocked_syn_resets_only_its_sender_and_a_reset_nothing() {
        let r = resets_for(&tcp("192.0.2.10", "198.51.100.80", 77, None, true, b""));
        assert_eq!(r.len(), 1);
        let s = segment(&r[0].packet).unwrap();
        assert_eq!(r[0].to, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((s.seq, s.ack), (0, Some(78)));
        assert!(s.rst);
        let mut rst = tcp("192.0.2.10", "198.51.100.80", 1, Some(1), false, b"");
        rst[33] |= 0x04; // RST flag (IPv4 header 20 bytes + flags at 13)
        assert!(resets_for(&rst).is_empty());
        assert!(resets_for(b"\x45garbage").is_empty());
        let mut udp = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(1, 2)
            .write(&mut udp, b"x")
            .unwrap();
        assert!(resets_for(&udp).is_empty());
    }
}
