//! Synthetic traffic: real TCP/UDP packets for the scenarios appwall exists
//! for, built in memory.
//!
//! No real capture of MSN tunnelled through HTTP exists, so this module
//! builds one (together with native MSNP on 1863 and on an odd port, and
//! benign web and DNS traffic) for `appwall sample`, the tests and the
//! benchmarks. Every packet is a well-formed raw IPv4/IPv6 packet, exactly
//! what NFQUEUE hands to the live filter.

use std::net::IpAddr;

use etherparse::PacketBuilder;

pub mod mix;

/// Where the shared real captures are read from (tests and benches): the
/// directory named by `APPWALL_CAPTURES`, or `../shared/captures` next to
/// the crate when that variable is unset or empty. The captures are read
/// in place, never copied into the repository.
pub fn captures_dir() -> std::path::PathBuf {
    match std::env::var_os("APPWALL_CAPTURES") {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/captures"),
    }
}

/// One direction's bytes in a connection script: (from client?, payload).
pub type Exchange<'a> = (bool, &'a [u8]);

/// Builds the packets of one TCP connection: handshake, the payloads cut
/// into segments of at most `mss` bytes, and FIN/ACK teardown.
pub struct TcpFlowBuilder {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    /// Largest payload per segment.
    pub mss: usize,
    /// Send the three-way handshake first.
    pub handshake: bool,
    /// Segment sizes used in turn instead of `mss` (empty: always `mss`).
    pub cuts: Vec<usize>,
}

impl TcpFlowBuilder {
    /// A connection from `client` to `server`, 1460-byte segments, with handshake.
    pub fn new(client: (IpAddr, u16), server: (IpAddr, u16)) -> TcpFlowBuilder {
        TcpFlowBuilder {
            client,
            server,
            mss: 1460,
            handshake: true,
            cuts: Vec::new(),
        }
    }

    /// The raw IP packets of the whole conversation.
    pub fn packets(&self, script: &[Exchange<'_>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let (mut cseq, mut sseq) = (1_000u32, 5_000u32);
        if self.handshake {
            out.push(self.segment(true, cseq, 0, Flags::SYN, b""));
            out.push(self.segment(false, sseq, cseq + 1, Flags::SYN_ACK, b""));
            cseq += 1;
            sseq += 1;
            out.push(self.segment(true, cseq, sseq, Flags::DATA, b""));
        }
        let mut turn = 0;
        for &(from_client, data) in script {
            let mut chunks = Vec::new();
            let mut rest = data;
            while !rest.is_empty() {
                let size = match self.cuts.get(turn % self.cuts.len().max(1)) {
                    Some(&c) if !self.cuts.is_empty() => c.max(1),
                    _ => self.mss.max(1),
                };
                turn += 1;
                let (a, b) = rest.split_at(size.min(rest.len()));
                chunks.push(a);
                rest = b;
            }
            for chunk in chunks {
                if from_client {
                    out.push(self.segment(true, cseq, sseq, Flags::DATA, chunk));
                    cseq = cseq.wrapping_add(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
                } else {
                    out.push(self.segment(false, sseq, cseq, Flags::DATA, chunk));
                    sseq = sseq.wrapping_add(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
                }
            }
        }
        out.push(self.segment(true, cseq, sseq, Flags::FIN, b""));
        out.push(self.segment(false, sseq, cseq + 1, Flags::FIN, b""));
        out
    }

    fn segment(&self, from_client: bool, seq: u32, ack: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        tcp_packet(src, dst, seq, ack, flags, payload)
    }
}

/// TCP control flags of a built segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// SYN.
    pub syn: bool,
    /// ACK (with acknowledgment number `ack`).
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
    /// PSH.
    pub psh: bool,
}

impl Flags {
    const SYN: Flags = Flags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    };
    const SYN_ACK: Flags = Flags {
        ack: true,
        ..Flags::SYN
    };
    const DATA: Flags = Flags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
        psh: true,
    };
    const FIN: Flags = Flags {
        psh: false,
        fin: true,
        ..Flags::DATA
    };
}

/// One TCP segment as a raw IP packet (what NFQUEUE delivers), built with
/// etherparse; also the fuzz targets' builder.
pub fn tcp_packet(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let ip = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        // Mixed families cannot share a packet; fall back to IPv4 zeros.
        _ => PacketBuilder::ipv4([0; 4], [0; 4], 64),
    };
    let mut b = ip.tcp(src.1, dst.1, seq, 64_240);
    if flags.syn {
        b = b.syn();
    }
    if flags.ack {
        b = b.ack(ack);
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    if flags.psh {
        b = b.psh();
    }
    let mut out = Vec::with_capacity(60 + payload.len());
    // Writing into a Vec cannot fail for these sizes.
    let _ = b.write(&mut out, payload);
    out
}

/// One UDP datagram as a raw IP packet.
pub fn udp_packet(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let ip = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => PacketBuilder::ipv4([0; 4], [0; 4], 64),
    };
    let mut out = Vec::new();
    let _ = ip.udp(src.1, dst.1).write(&mut out, payload);
    out
}

/// The MSN HTTP-gateway opening request (as Messenger sends it through a proxy).
pub const MSN_GATEWAY_OPEN: &[u8] = b"POST http://gateway.messenger.hotmail.com/gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\n\
Accept: */*\r\n\
Content-Type: application/x-msn-messenger\r\n\
Proxy-Connection: Keep-Alive\r\n\
User-Agent: MSMSGS\r\n\
Host: gateway.messenger.hotmail.com\r\n\
Content-Length: 19\r\n\
\r\n\
VER 1 MSNP8 CVR0\r\n";

/// The gateway's reply.
pub const MSN_GATEWAY_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
X-MSN-Messenger: SessionID=1234567890.12345; GW-IP=198.51.100.80\r\n\
Content-Type: application/x-msn-messenger\r\n\
Content-Length: 17\r\n\
\r\n\
VER 1 MSNP8 CVR0\r\n";

/// A native MSNP login as a client sends it.
pub const MSNP_LOGIN: &[u8] = b"VER 1 MSNP8 CVR0\r\n";
/// The notification server's answer.
pub const MSNP_LOGIN_REPLY: &[u8] = b"VER 1 MSNP8 CVR0\r\n";
/// An ordinary web request whose URL contains "msn".
pub const BENIGN_GET: &[u8] = b"GET /news/msn-money/index.html?ref=msnbc HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n";
/// Its reply.
pub const BENIGN_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 44\r\n\r\n<html><body>msn gateway.dll notes</body></html>";

/// A labelled scenario of the sample capture.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What it is.
    pub name: &'static str,
    /// Expected verdict with `rules/hosts.example`: true = blocked.
    pub blocked: bool,
    /// Raw IP packets in order.
    pub packets: Vec<Vec<u8>>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("static address")
}

/// The scenarios of the sample capture. Client 192.0.2.10 and 2001:db8::10
/// are listed in `rules/hosts.example`; 192.0.2.99 is not.
pub fn scenarios() -> Vec<Scenario> {
    let c = ip("192.0.2.10");
    let unlisted = ip("192.0.2.99");
    let web = ip("198.51.100.80");
    let ns = ip("198.51.100.81");
    let c6 = ip("2001:db8::10");
    let web6 = ip("2001:db8:1::80");
    let gateway = [(true, MSN_GATEWAY_OPEN), (false, MSN_GATEWAY_REPLY)];
    let mut split = TcpFlowBuilder::new((c, 40004), (web, 80));
    split.mss = 7; // "gateway.dll" cut across segments.
    vec![
        Scenario {
            name: "MSN tunnelled in HTTP to port 80 (gateway.dll)",
            blocked: true,
            packets: TcpFlowBuilder::new((c, 40001), (web, 80)).packets(&gateway),
        },
        Scenario {
            name: "ordinary web request with msn in the URL",
            blocked: false,
            packets: TcpFlowBuilder::new((c, 40002), (web, 80))
                .packets(&[(true, BENIGN_GET), (false, BENIGN_REPLY)]),
        },
        Scenario {
            name: "native MSNP to port 1863",
            blocked: true,
            packets: TcpFlowBuilder::new((c, 40003), (ns, 1863))
                .packets(&[(true, MSNP_LOGIN), (false, MSNP_LOGIN_REPLY)]),
        },
        Scenario {
            name: "MSN gateway request cut into 7-byte segments",
            blocked: true,
            packets: split.packets(&gateway),
        },
        Scenario {
            name: "native MSNP on odd port 8080",
            blocked: true,
            packets: TcpFlowBuilder::new((c, 40005), (ns, 8080))
                .packets(&[(true, MSNP_LOGIN), (false, MSNP_LOGIN_REPLY)]),
        },
        Scenario {
            name: "MSN gateway from a host that is not listed",
            blocked: false,
            packets: TcpFlowBuilder::new((unlisted, 40006), (web, 80)).packets(&gateway),
        },
        Scenario {
            name: "MSN gateway from an IPv6 client",
            blocked: true,
            packets: TcpFlowBuilder::new((c6, 40007), (web6, 80)).packets(&gateway),
        },
        Scenario {
            name: "DNS query",
            blocked: false,
            packets: vec![udp_packet(
                (c, 40008),
                (ip("198.51.100.53"), 53),
                b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01",
            )],
        },
    ]
}

/// All scenario packets with timestamps 1 ms apart, ready for a capture file.
pub fn sample_frames() -> Vec<(u64, Vec<u8>)> {
    let base = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
    scenarios()
        .into_iter()
        .flat_map(|s| s.packets)
        .enumerate()
        .map(|(i, p)| (base + i as u64 * 1_000_000, p))
        .collect()
}

/// A length field of a synthetic TLS message (lengths here are small; a
/// longer one is clamped, which the builder never produces).
fn be16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// A minimal TLS ClientHello (TLS 1.2 record, one cipher suite) carrying
/// `name` as its server name (RFC 6066 3): what a browser sends first on 443.
pub fn tls_client_hello(name: &str) -> Vec<u8> {
    let mut sni = Vec::new();
    sni.extend_from_slice(&be16(name.len() + 3));
    sni.push(0);
    sni.extend_from_slice(&be16(name.len()));
    sni.extend_from_slice(name.as_bytes());
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&be16(sni.len()));
    ext.extend_from_slice(&sni);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&be16(ext.len()));
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&be16(hs.len()));
    rec.extend_from_slice(&hs);
    rec
}

/// A conversation of the test corpus: what it is, the app that must block it
/// (`None`: must pass), the server port, and the bytes each side sends.
pub struct CorpusStream {
    /// What it is.
    pub name: &'static str,
    /// The app that must block it, or `None` for benign traffic.
    pub app: Option<&'static str>,
    /// Server port (chosen so that no port rule applies: payload decides).
    pub port: u16,
    /// (from the client?, bytes) in order.
    pub script: Vec<(bool, &'static [u8])>,
}

/// Chat and benign conversations for segmentation tests: each must get the
/// same verdict however its bytes are cut into segments.
pub fn corpus() -> Vec<CorpusStream> {
    vec![
        CorpusStream {
            name: "MSN HTTP gateway open",
            app: Some("msn"),
            port: 80,
            script: vec![(true, MSN_GATEWAY_OPEN), (false, MSN_GATEWAY_REPLY)],
        },
        CorpusStream {
            name: "MSN gateway poll, origin form, percent-encoded",
            app: Some("msn"),
            port: 80,
            script: vec![(
                true,
                b"POST /gateway/gateway%2Edll?Action=poll&SessionID=1234.5678 HTTP/1.1\r\nHost: 198.51.100.80\r\nContent-Length: 0\r\n\r\n",
            )],
        },
        CorpusStream {
            name: "MSN gateway reply header only",
            app: Some("msn"),
            port: 80,
            script: vec![
                (true, b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
                (false, b"HTTP/1.1 200 OK\r\nX-MSN-Messenger: SessionID=1; GW-IP=198.51.100.80\r\nContent-Length: 0\r\n\r\n"),
            ],
        },
        CorpusStream {
            name: "MSNP switchboard mid-session",
            app: Some("msn"),
            port: 443,
            script: vec![(
                true,
                b"MSG 95 U 96\r\nMIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: a@example.com\r\n\r\n\r\n",
            )],
        },
        CorpusStream {
            name: "MSNP login without CVR0",
            app: Some("msn"),
            port: 8080,
            script: vec![(true, b"VER 1 MSNP12\r\n"), (false, b"VER 1 MSNP12\r\n")],
        },
        CorpusStream {
            name: "IRC registration",
            app: Some("irc"),
            port: 8000,
            script: vec![(true, b"USER bob 0 * :Bob\r\nNICK bob\r\nJOIN #chat\r\n")],
        },
        CorpusStream {
            name: "XMPP stream header",
            app: Some("xmpp"),
            port: 443,
            script: vec![(
                true,
                b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
            )],
        },
        CorpusStream {
            name: "OSCAR sign-on on 443",
            app: Some("aim"),
            port: 443,
            script: vec![(false, b"\x2a\x01\x19\x8a\x00\x04\x00\x00\x00\x01"), (true, b"\x2a\x01\x00\x01\x01\x35\x00\x00\x00\x01\x00\x06")],
        },
        CorpusStream {
            name: "YMSG login",
            app: Some("yahoo"),
            port: 443,
            script: vec![(true, b"YMSG\x00\x10\x00\x00\x00\x0c\x00\x57\x00\x00\x00\x00\x00\x00\x00\x001\xc0\x80bob\xc0\x80")],
        },
        CorpusStream {
            name: "BitTorrent handshake",
            app: Some("bittorrent"),
            port: 51413,
            script: vec![(true, b"\x13BitTorrent protocol\x00\x00\x00\x00\x00\x10\x00\x05")],
        },
        CorpusStream {
            name: "web page with msn in URLs",
            app: None,
            port: 80,
            script: vec![(true, BENIGN_GET), (false, BENIGN_REPLY)],
        },
        CorpusStream {
            name: "form POST that mentions the gateway in its body",
            app: None,
            port: 80,
            script: vec![(
                true,
                b"POST /notes HTTP/1.1\r\nHost: wiki.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 62\r\n\r\ntext=Block+POST+/gateway/gateway.dll+and+x-msn-messenger+now",
            )],
        },
        CorpusStream {
            name: "SMTP session",
            app: None,
            port: 25,
            script: vec![
                (false, b"220 mail.example ESMTP\r\n"),
                (true, b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"),
                (true, b"Subject: chat\r\n\r\nplease use the msn gateway for VERy important messages\r\n.\r\n"),
            ],
        },
        CorpusStream {
            name: "TLS client hello",
            app: None,
            port: 443,
            script: vec![(true, b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03gateway.messenger.hotmail.com\x00\x00")],
        },
    ]
}
