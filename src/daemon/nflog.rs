//! Packets the kernel's port rules drop, told to appwall through NFLOG, so
//! a connection blocked in the kernel leaves an event like one blocked in
//! userspace.
//!
//! The kernel side is an `NFLOG` rule before each port rule (rate-limited,
//! group = the first queue number, prefix `appwall KEY` with the port
//! group's key: `app-msn`, `port-tcp-8080`); this module is the reader: a
//! small netlink client of `nfnetlink_log` (no maintained crate covers it
//! without a C library), written from the kernel's UAPI header
//! (`linux/netfilter/nfnetlink_log.h`). It binds one group, asks for the
//! first 128 bytes of each packet (the IP and TCP/UDP headers), and turns a
//! message into ([`Logged`]) prefix and packet.
//!
//! Guarantees: every length in a message is checked before use (a bad
//! message is skipped, never a panic); the socket is close-on-exec and
//! read with a timeout so its thread can stop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt,
    socket, sockopt,
};

use crate::daemon::events::BlockEvent;
use crate::daemon::worker::EngineHandle;
use crate::engine::{Engine, Reason};
use crate::packet::Proto;
use crate::policy::PortSpec;

/// netlink message type of nfnetlink_log messages: subsystem ULOG (4).
const SUBSYS_ULOG: u16 = 4;
/// A logged packet.
const MSG_PACKET: u16 = 0;
/// A configuration request.
const MSG_CONFIG: u16 = 1;
/// Configuration attribute: a command.
const CFG_CMD: u16 = 1;
/// Configuration attribute: copy mode and range.
const CFG_MODE: u16 = 2;
/// Command: bind this socket to the group.
const CMD_BIND: u8 = 1;
/// Copy mode: packet bytes.
const COPY_PACKET: u8 = 2;
/// Packet attribute: the packet bytes (from the network header).
const ATTR_PAYLOAD: u16 = 9;
/// Packet attribute: the rule's `--nflog-prefix`, NUL-terminated.
const ATTR_PREFIX: u16 = 10;
/// Bytes of each packet asked for: IP and transport headers.
pub const COPY_RANGE: u32 = 128;
/// NLM_F_REQUEST | NLM_F_ACK.
const REQUEST_ACK: u16 = 0x1 | 0x4;
/// NLMSG_ERROR (an acknowledgment carries error 0).
const NLMSG_ERROR: u16 = 2;

/// One packet the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The rule's prefix (`appwall app-msn`).
    pub prefix: String,
    /// The packet from its IP header, at most [`COPY_RANGE`] bytes.
    pub packet: Vec<u8>,
}

/// Why the NFLOG group could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    /// A socket call failed.
    #[error("nflog group {group}: {what}: {source}")]
    Sys {
        /// The group.
        group: u16,
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The kernel refused the configuration.
    #[error("nflog group {group}: the kernel refused {what} (error {errno})")]
    Refused {
        /// The group.
        group: u16,
        /// The request.
        what: &'static str,
        /// Its errno.
        errno: i32,
    },
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    out.extend(len.to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

/// A configuration request for `group` (the nfgenmsg's resource id is big-endian).
fn config_message(group: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + attrs.len());
    let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
    m.extend(len.to_ne_bytes());
    m.extend(((SUBSYS_ULOG << 8) | MSG_CONFIG).to_ne_bytes());
    m.extend(REQUEST_ACK.to_ne_bytes());
    m.extend(seq.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    m.extend([0u8, 0]); // AF_UNSPEC, NFNETLINK_V0
    m.extend(group.to_be_bytes());
    m.extend(attrs);
    m
}

/// The netlink messages in one datagram: (type, payload after the header).
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(h) = buf.get(at..at + 16) {
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
        let Ok(len) = usize::try_from(len) else { break };
        if len < 16 {
            break;
        }
        let Some(body) = buf.get(at + 16..at + len) else {
            break;
        };
        out.push((u16::from_ne_bytes([h[4], h[5]]), body));
        at += len.div_ceil(4) * 4;
    }
    out
}

/// The attributes after a message's nfgenmsg: (type without flags, value).
fn attributes(body: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 4usize; // nfgenmsg
    while let Some(h) = body.get(at..at + 4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        if len < 4 {
            break;
        }
        let Some(value) = body.get(at + 4..at + len) else {
            break;
        };
        out.push((u16::from_ne_bytes([h[2], h[3]]) & 0x3fff, value));
        at += len.div_ceil(4) * 4;
    }
    out
}

/// The logged packets in one datagram from the kernel.
pub fn parse_datagram(buf: &[u8]) -> Vec<Logged> {
    messages(buf)
        .into_iter()
        .filter(|(t, _)| *t == (SUBSYS_ULOG << 8) | MSG_PACKET)
        .filter_map(|(_, body)| {
            let mut l = Logged {
                prefix: String::new(),
                packet: Vec::new(),
            };
            for (kind, value) in attributes(body) {
                match kind {
                    ATTR_PAYLOAD => l.packet = value.to_vec(),
                    ATTR_PREFIX => {
                        let text = value.split(|b| *b == 0).next().unwrap_or_default();
                        l.prefix = String::from_utf8_lossy(text).into_owned();
                    }
                    _ => {}
                }
            }
            (!l.packet.is_empty()).then_some(l)
        })
        .collect()
}

/// A socket bound to one NFLOG group.
#[derive(Debug)]
pub struct NflogSource {
    fd: OwnedFd,
    group: u16,
    buf: Vec<u8>,
}

impl NflogSource {
    /// Binds `group` (needs CAP_NET_ADMIN) with packets copied up to
    /// [`COPY_RANGE`] bytes; reads wait at most `timeout`.
    pub fn open(group: u16, timeout: Duration) -> Result<NflogSource, NflogError> {
        let sys = |what| move |source| NflogError::Sys { group, what, source };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(sys("socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(sys("bind"))?;
        let tv = nix::sys::time::TimeVal::new(
            i64::try_from(timeout.as_secs()).unwrap_or(1),
            i64::from(timeout.subsec_micros()),
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(sys("receive timeout"))?;
        let mut src = NflogSource {
            fd,
            group,
            buf: vec![0u8; 1 << 16],
        };
        let mut a = Vec::new();
        attr(&mut a, CFG_CMD, &[CMD_BIND]);
        src.configure(1, &a, "binding the group")?;
        let mut a = Vec::new();
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend([COPY_PACKET, 0]);
        attr(&mut a, CFG_MODE, &mode);
        src.configure(2, &a, "the copy mode")?;
        Ok(src)
    }

    fn configure(&mut self, seq: u32, attrs: &[u8], what: &'static str) -> Result<(), NflogError> {
        let group = self.group;
        let m = config_message(group, seq, attrs);
        send(self.fd.as_raw_fd(), &m, MsgFlags::empty()).map_err(|source| NflogError::Sys {
            group,
            what,
            source,
        })?;
        let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())
            .map_err(|source| NflogError::Sys { group, what, source })?;
        for (t, body) in messages(&self.buf[..n]) {
            if t == NLMSG_ERROR && body.len() >= 4 {
                let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                if errno != 0 {
                    return Err(NflogError::Refused {
                        group,
                        what,
                        errno: -errno,
                    });
                }
            }
        }
        Ok(())
    }

    /// The packets of the next datagram; empty after the timeout.
    pub fn recv(&mut self) -> Vec<Logged> {
        match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
            Ok(n) => parse_datagram(&self.buf[..n]),
            Err(_) => Vec::new(),
        }
    }
}

/// A connection attempt a kernel port rule dropped, read from its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBlock {
    /// The port group's key from the rule's prefix (`app-msn`).
    pub key: String,
    /// TCP or UDP.
    pub proto: Proto,
    /// Opener address and port.
    pub src: (IpAddr, u16),
    /// Responder address and port.
    pub dst: (IpAddr, u16),
}

/// The blocked attempt a logged packet shows; `None` for another rule's
/// packets or one that is not TCP/UDP.
pub fn kernel_block(l: &Logged) -> Option<KernelBlock> {
    let key = l.prefix.strip_prefix("appwall ")?.trim().to_string();
    let p = LaxSlicedPacket::from_ip(&l.packet).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match p.net? {
        LaxNetSlice::Ipv4(s) => (
            s.header().source_addr().into(),
            s.header().destination_addr().into(),
        ),
        LaxNetSlice::Ipv6(s) => (
            s.header().source_addr().into(),
            s.header().destination_addr().into(),
        ),
        LaxNetSlice::Arp(_) => return None,
    };
    let (proto, sport, dport) = match p.transport? {
        TransportSlice::Tcp(t) => (Proto::Tcp, t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (Proto::Udp, u.source_port(), u.destination_port()),
        _ => return None,
    };
    Some(KernelBlock {
        key,
        proto,
        src: (src, sport),
        dst: (dst, dport),
    })
}

/// The reason a port rule with `key` gives for `b`, as the engine would
/// have named it: the app's port range, or the hosts file's `IP:PORT`.
pub fn reason_of(engine: &Engine, b: &KernelBlock) -> Option<Reason> {
    let (proto, port) = (b.proto, b.dst.1);
    if let Some(name) = b.key.strip_prefix("app-") {
        let apps = engine.policy().library().apps();
        let i = apps.iter().position(|a| a.name == name)?;
        let spec = apps[i].ports.iter().find(|p| p.contains(proto, port)).copied()?;
        return Some(Reason::Port {
            app: u8::try_from(i).ok(),
            port: spec,
        });
    }
    // `port-tcp-8080` or `port-tcp-8000-8100`.
    let rest = b.key.strip_prefix("port-")?;
    let mut parts = rest.split('-');
    let p = match parts.next()? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let first: u16 = parts.next()?.parse().ok()?;
    let last: u16 = parts.next().map_or(Some(first), |l| l.parse().ok())?;
    Some(Reason::Port {
        app: None,
        port: PortSpec {
            proto: p,
            first,
            last,
        },
    })
}

/// Reads `src` until `stop`, sending one event per blocked connection
/// attempt (a client's retransmitted SYNs within two minutes count once)
/// to `tx`; a full channel drops the event, as for the workers.
pub fn run_reader(mut src: NflogSource, handle: EngineHandle, tx: Sender<BlockEvent>, stop: Arc<AtomicBool>) {
    let mut seen: HashMap<Attempt, Instant> = HashMap::new();
    let mut ids = 0u64;
    let group = src.group;
    while !stop.load(Relaxed) {
        for l in src.recv() {
            let Some(b) = kernel_block(&l) else { continue };
            let now = Instant::now();
            if seen.len() > 4096 {
                seen.retain(|_, t| now.duration_since(*t) < REPEAT_WINDOW);
            }
            let k = (b.proto, b.src, b.dst);
            if seen
                .get(&k)
                .is_some_and(|t| now.duration_since(*t) < REPEAT_WINDOW)
            {
                continue;
            }
            seen.insert(k, now);
            let engine = handle.load_full();
            let Some(reason) = reason_of(&engine, &b) else {
                continue;
            };
            ids += 1;
            let ev = BlockEvent {
                time: SystemTime::now(),
                queue: group,
                // Kernel blocks: all ones in the queue bits.
                flow_id: (0xffff << 48) | (ids & ((1 << 48) - 1)),
                proto: b.proto,
                src: b.src.0,
                sport: b.src.1,
                dst: b.dst.0,
                dport: b.dst.1,
                reason,
                engine,
                request: None,
            };
            let _ = tx.try_send(ev);
        }
    }
}

/// A connection attempt: protocol, opener, responder.
type Attempt = (Proto, (IpAddr, u16), (IpAddr, u16));

/// Packets of one attempt within this window are one event.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel-style packet message with a prefix and payload.
    fn packet_message(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attr(&mut attrs, 1, &[0x08, 0x00, 1, 0]); // packet header: ignored
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        attr(&mut attrs, ATTR_PREFIX, &p);
        attr(&mut attrs, ATTR_PAYLOAD | 0x8000, payload); // flag bits are masked
        let mut m = config_message(3, 0, &attrs);
        m[4..6].copy_from_slice(&((SUBSYS_ULOG << 8) | MSG_PACKET).to_ne_bytes());
        m
    }

    #[test]
    fn packet_messages_are_parsed_and_damage_is_skipped() {
        let one = packet_message("appwall app-msn", b"\x45\x00abc");
        let two = packet_message("appwall port-tcp-8080", b"\x60xyz!");
        let both = [one.clone(), two.clone()].concat();
        let got = parse_datagram(&both);
        assert_eq!(
            got,
            vec![
                Logged {
                    prefix: "appwall app-msn".into(),
                    packet: b"\x45\x00abc".to_vec()
                },
                Logged {
                    prefix: "appwall port-tcp-8080".into(),
                    packet: b"\x60xyz!".to_vec()
                },
            ]
        );
        // Cut anywhere: whole messages before the cut only, never a panic.
        for cut in 0..both.len() {
            let got = parse_datagram(&both[..cut]);
            assert!(got.len() <= usize::from(cut >= one.len()) + usize::from(cut == both.len()));
        }
        // A length pointing past the end, or too small to move on.
        let mut bad = one.clone();
        bad[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_datagram(&bad).is_empty());
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse_datagram(&bad).is_empty());
        // Config messages are not packets.
        assert!(parse_datagram(&config_message(1, 1, &[])).is_empty());
    }

    #[test]
    fn config_requests_have_the_documented_layout() {
        let mut a = Vec::new();
        attr(&mut a, CFG_CMD, &[CMD_BIND]);
        let m = config_message(0x0102, 7, &a);
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0401);
        assert_eq!(&m[18..20], &[1, 2], "group big-endian");
        let want = [5u16.to_ne_bytes(), 1u16.to_ne_bytes(), [1, 0], [0, 0]].concat();
        assert_eq!(&m[20..28], &want[..], "one attribute, padded to 4");
    }

    #[test]
    fn logged_packets_become_port_reasons() {
        use crate::policy::{AppLibrary, HostsFile, Policy};
        let h = HostsFile::parse(std::path::Path::new("hosts"), "192.0.2.10 msn\n192.0.2.11:8080\n").unwrap();
        let p = Policy::new(AppLibrary::embedded().unwrap(), &h, None).unwrap();
        let engine = Engine::new(p, crate::engine::EngineConfig::default()).unwrap();
        let syn = |dport: u16| {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 1], 64)
                .tcp(40000, dport, 1, 1000)
                .syn()
                .write(&mut v, &[])
                .unwrap();
            v
        };
        let l = Logged {
            prefix: "appwall app-msn".into(),
            packet: syn(1863),
        };
        let b = kernel_block(&l).unwrap();
        assert_eq!(b.dst.1, 1863);
        assert_eq!(b.src.0, "192.0.2.10".parse::<IpAddr>().unwrap());
        let r = reason_of(&engine, &b).unwrap();
        assert_eq!(engine.reason_app(&r), Some("msn"));
        assert_eq!(r.kind(), "port");
        // A hosts-file port, a range, and what does not fit.
        let mut b2 = b.clone();
        b2.key = "port-tcp-8000-8100".into();
        b2.dst.1 = 8080;
        assert!(
            matches!(reason_of(&engine, &b2), Some(Reason::Port { app: None, port }) if port.first == 8000 && port.last == 8100)
        );
        b2.key = "app-nosuchapp".into();
        assert_eq!(reason_of(&engine, &b2), None);
        b2.key = "app-msn".into();
        b2.dst.1 = 1;
        assert_eq!(reason_of(&engine, &b2), None, "not one of msn's ports");
        // Another rule's packets, cut packets and garbage.
        assert!(
            kernel_block(&Logged {
                prefix: "other".into(),
                packet: syn(1863)
            })
            .is_none()
        );
        let mut cut = syn(1863);
        cut.truncate(30);
        assert!(
            kernel_block(&Logged {
                prefix: "appwall app-msn".into(),
                packet: cut
            })
            .is_none()
        );
        assert!(
            kernel_block(&Logged {
                prefix: "appwall app-msn".into(),
                packet: b"\x45".to_vec()
            })
            .is_none()
        );
    }
}
