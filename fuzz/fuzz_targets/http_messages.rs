//! Fuzz target `http_messages`: the per-message HTTP parser and the URL
//! normaliser. Any bytes as a client stream, cut into segments where the
//! input says, must never panic, and the verdict on an HTTP request must
//! not depend on how many complete benign requests came before it on the
//! connection (keep-alive): each message is judged alone. Bytes that are
//! not an HTTP request are too: a direction that stops speaking HTTP is a
//! new stream from that message's first byte.
#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use appwall::engine::uri;
use appwall::engine::{Engine, EngineConfig, Verdict};
use appwall::packet::PacketView;
use appwall::policy::{AppLibrary, HostsFile, Policy};
use appwall::sample::TcpFlowBuilder;
use appwall::source::Tracker;

const PREFIX: [&[u8]; 3] = [
    b"GET /a HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"GET http://www.example.com/x/../y?%41 HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
];

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 msn\n").unwrap();
        let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
        Engine::new(policy, EngineConfig::default()).unwrap()
    })
}

fn blocked(e: &Engine, stream: &[u8], mss: usize) -> bool {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
    b.mss = mss;
    let mut tracker = Tracker::new(4, u64::MAX);
    for (i, p) in b.packets(&[(true, stream)]).iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        if tracker.judge_view(e, v, i as u64).decision.verdict == Verdict::Drop {
            return true;
        }
    }
    false
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = uri::normalise(data, false, &mut out);
    let _ = uri::normalise(data, true, &mut out);
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    // Stay under the depth (the prefix plus the rest), and leave SOCKS
    // (which is only looked for at a stream's first byte) out.
    let rest = &rest[..rest.len().min(4096)];
    if rest.first().is_some_and(|&b| b == 4 || b == 5) {
        return;
    }
    let mss = 1 + usize::from(ctl >> 2) * 23;
    let n = usize::from(ctl & 3);
    let mut stream: Vec<u8> = PREFIX
        .iter()
        .cycle()
        .take(n)
        .flat_map(|m| m.iter().copied())
        .collect();
    stream.extend_from_slice(rest);
    let e = engine();
    assert_eq!(
        blocked(e, &stream, mss),
        blocked(e, rest, mss),
        "verdict depends on {n} benign requests before {rest:?}"
    );
});
