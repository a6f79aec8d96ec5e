//! Synthetic traffic mixes for benchmarks: benign web, MSN, small and
//! full-size packets, generated from a fixed seed so every run replays the
//! same bytes. Addresses are in-memory only; nothing here is ever sent.
//!
//! Connection numbers and random words are folded into address bytes,
//! ports and letters on purpose: the truncating casts below are the point.
#![allow(clippy::cast_possible_truncation)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{self as sample, TcpFlowBuilder};

/// Built-in synthetic traffic, for when no capture is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Benign: HTTP pages (text), TLS-like downloads (binary), DNS.
    Web,
    /// MSN only: HTTP gateway sessions, MSNP on 1863 and on odd ports.
    Msn,
    /// Small packets: interactive sessions of 30-120 byte segments.
    Small,
    /// Full-size packets: 1460-byte segments of text and binary.
    Full,
    /// Web with one connection in sixteen being MSN.
    Mixed,
}

/// Deterministic xorshift generator: synthetic traffic is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const WORDS: &[&str] = &[
    "the", "news", "weather", "sports", "video", "search", "image", "article", "title", "menu", "footer",
    "content", "market", "today", "world", "travel", "music", "games", "shop", "login", "account", "help",
    "privacy", "terms", "home", "photo", "local", "health", "science", "money",
];

/// An HTML page of about `len` bytes; every line starts with a tag.
fn html(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = b"<!DOCTYPE html>\n<html><head><title>example</title></head><body>\n".to_vec();
    while out.len() < len {
        let class = WORDS[rng.below(WORDS.len())];
        out.extend_from_slice(format!("<div class=\"{class}\"><p>").as_bytes());
        for _ in 0..(8 + rng.below(16)) {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(b"<a href=\"/");
        out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        out.extend_from_slice(b"/index.html\">more</a></p></div>\n");
    }
    out.extend_from_slice(b"</body></html>\n");
    out
}

fn http_get(i: usize, path: &str) -> Vec<u8> {
    format!(
        "GET /{path}/{i}/index.html?ref=home HTTP/1.1\r\nHost: www.example{}.com\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n\
         Cookie: session={i:08x}; theme=light\r\nConnection: keep-alive\r\n\r\n",
        i % 50
    )
    .into_bytes()
}

fn http_reply(body: &[u8], ctype: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: max-age=60\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Client and server of synthetic connection `i` (one in eight over IPv6).
fn endpoints(i: usize, port: u16) -> ((IpAddr, u16), (IpAddr, u16)) {
    let cport = 20_000 + (i % 40_000) as u16;
    if i % 8 == 7 {
        let c = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, (i >> 16) as u16, i as u16);
        let s = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, (i % 200) as u16 + 1);
        ((IpAddr::V6(c), cport), (IpAddr::V6(s), port))
    } else {
        let c = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
        let s = Ipv4Addr::new(198, 51, 100, (i % 200) as u8 + 1);
        ((IpAddr::V4(c), cport), (IpAddr::V4(s), port))
    }
}

fn tcp(i: usize, port: u16, mss: usize, script: &[(bool, &[u8])]) -> Vec<Vec<u8>> {
    let (c, s) = endpoints(i, port);
    let mut b = TcpFlowBuilder::new(c, s);
    b.mss = mss;
    b.packets(script)
}

fn web_conn(rng: &mut Rng, i: usize) -> Vec<Vec<u8>> {
    match i % 10 {
        0..=5 => {
            let len = 2_000 + rng.below(30_000);
            let page = html(rng, len);
            tcp(
                i,
                80,
                1460,
                &[
                    (true, &http_get(i, "news")),
                    (false, &http_reply(&page, "text/html")),
                ],
            )
        }
        6 | 7 => {
            // TLS-like: a short hello each way, then opaque records.
            let hello = rng.bytes(300);
            let len = 4_000 + rng.below(40_000);
            let data = rng.bytes(len);
            tcp(i, 443, 1460, &[(true, &hello), (false, &data)])
        }
        _ => {
            let (c, s) = endpoints(i, 53);
            let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01";
            let mut a = q.to_vec();
            a.extend_from_slice(&rng.bytes(48));
            vec![sample::udp_packet(c, s, q), sample::udp_packet(s, c, &a)]
        }
    }
}

/// MSN connection `i` of `kind` 0-3 (gateway, 1863, 443, chat on 8080).
fn msn_conn(i: usize, kind: usize) -> Vec<Vec<u8>> {
    let chat: &[u8] = b"USR 2 TWN I alice@example.com\r\nMSG 3 N 133\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Segoe%20UI; EF=; CO=0; CS=0; PF=0\r\n\r\nhello there\r\n";
    match kind % 4 {
        0 => tcp(
            i,
            80,
            1460,
            &[
                (true, sample::MSN_GATEWAY_OPEN),
                (false, sample::MSN_GATEWAY_REPLY),
            ],
        ),
        1 => tcp(
            i,
            1863,
            1460,
            &[(true, sample::MSNP_LOGIN), (false, sample::MSNP_LOGIN_REPLY)],
        ),
        2 => tcp(
            i,
            443,
            1460,
            &[(true, sample::MSNP_LOGIN), (false, sample::MSNP_LOGIN_REPLY)],
        ),
        _ => tcp(i, 8080, 1460, &[(true, chat), (false, b"MSG 3 OK\r\n")]),
    }
}

fn small_conn(rng: &mut Rng, i: usize) -> Vec<Vec<u8>> {
    let msgs: Vec<(bool, Vec<u8>)> = (0..40)
        .map(|k| {
            let n = 30 + rng.below(90);
            let data = if i.is_multiple_of(2) {
                rng.bytes(n)
            } else {
                let mut t = format!("{{\"seq\":{k},\"op\":\"update\",\"v\":\"").into_bytes();
                t.extend((0..n).map(|_| b'a' + rng.below(26) as u8));
                t.extend_from_slice(b"\"}\n");
                t
            };
            (k % 2 == 0, data)
        })
        .collect();
    let script: Vec<(bool, &[u8])> = msgs.iter().map(|(c, d)| (*c, d.as_slice())).collect();
    tcp(i, if i.is_multiple_of(2) { 22 } else { 8443 }, 1460, &script)
}

fn full_conn(rng: &mut Rng, i: usize) -> Vec<Vec<u8>> {
    let body = if i.is_multiple_of(2) {
        html(rng, 64 * 1024)
    } else {
        rng.bytes(64 * 1024)
    };
    let ctype = if i.is_multiple_of(2) {
        "text/html"
    } else {
        "application/octet-stream"
    };
    tcp(
        i,
        80,
        1460,
        &[(true, &http_get(i, "files")), (false, &http_reply(&body, ctype))],
    )
}

/// Synthetic traffic of `connections` concurrent connections: a name for
/// it, and the packets (raw IP) interleaved round-robin, each connection's
/// in order.
pub fn packets(mix: Mix, connections: usize) -> (String, Vec<Vec<u8>>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let conns: Vec<Vec<Vec<u8>>> = (0..connections.max(1))
        .map(|i| match mix {
            Mix::Web => web_conn(&mut rng, i),
            Mix::Msn => msn_conn(i, i),
            Mix::Small => small_conn(&mut rng, i),
            Mix::Full => full_conn(&mut rng, i),
            Mix::Mixed if i % 16 == 15 => msn_conn(i, i / 16),
            Mix::Mixed => web_conn(&mut rng, i),
        })
        .collect();
    let longest = conns.iter().map(Vec::len).max().unwrap_or(0);
    let mut packets = Vec::with_capacity(conns.iter().map(Vec::len).sum());
    for k in 0..longest {
        for c in &conns {
            if let Some(p) = c.get(k) {
                packets.push(p.clone());
            }
        }
    }
    let name = match mix {
        Mix::Web => "synthetic web",
        Mix::Msn => "synthetic msn",
        Mix::Small => "synthetic small packets",
        Mix::Full => "synthetic full-size packets",
        Mix::Mixed => "synthetic web + msn",
    };
    (format!("{name} ({} connections)", connections.max(1)), packets)
}
