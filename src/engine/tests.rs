//! Table-driven tests of the engine: every scope, segmentation, sequence
//! handling, app sets and port rules.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::engine::{Engine, EngineConfig, Reason, Verdict};
use crate::flow::FlowTable;
use crate::packet::PacketView;
use crate::packet::tests::tcp4;
use crate::policy::{AppLibrary, HostsFile, Policy};
use crate::sample::{self, TcpFlowBuilder};

const TEST_RULES: &str = r#"
name = "chat"
description = "test app"
ports.tcp = ["5555"]

[[signature]]
id = "target"
scope = "http-target"
text = "/gateway/gateway.dll"
nocase = true
why = "test"

[[signature]]
id = "ctype"
scope = "http-header"
header = "Content-Type"
text = "application/x-msn-messenger"
nocase = true
why = "test"

[[signature]]
id = "reply-header"
scope = "http-header"
header = "X-MSN-Messenger"
text = ""
why = "test"

[[signature]]
id = "ua"
scope = "http-header"
header = "User-Agent"
text = "MSMSGS"
why = "test"

[[signature]]
id = "nick"
scope = "line-start"
text = "NICK "
why = "test"

[[signature]]
id = "magic"
scope = "stream-start"
hex = "2a 01 ?? ?? 00 04"
why = "test"

[[signature]]
id = "seg"
scope = "segment-start"
text = "YMSG"
why = "test"

[[signature]]
id = "lit"
scope = "anywhere"
text = "x-msmsgscontrol"
why = "test"
"#;

const OTHER_RULES: &str = r#"
name = "other"
description = "app whose literal overlaps chat's"
[[signature]]
id = "overlap"
scope = "anywhere"
text = "x-msmsgs"
why = "test"
"#;

/// A conversation: (from the client?, bytes) in order.
type Script<'a> = Vec<(bool, &'a [u8])>;

fn engine_with(hosts: &str, config: EngineConfig) -> Engine {
    let lib = AppLibrary::from_texts(&[
        (PathBuf::from("rules/chat.toml"), TEST_RULES.to_string()),
        (PathBuf::from("rules/other.toml"), OTHER_RULES.to_string()),
    ])
    .unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), hosts).unwrap();
    Engine::new(Policy::new(lib, &hosts, None).unwrap(), config).unwrap()
}

fn engine() -> Engine {
    engine_with("192.0.2.10 chat\n", EngineConfig::default())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs a client/server script through the engine; returns the first
/// signature id that blocked, or "port" / None.
fn judge_script(e: &Engine, script: &[(bool, &[u8])], mss: usize, dport: u16) -> Option<String> {
    let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), dport));
    b.mss = mss;
    judge_packets(e, &b.packets(script))
}

fn judge_packets(e: &Engine, packets: &[Vec<u8>]) -> Option<String> {
    let mut table = FlowTable::new(16, u64::MAX);
    for (i, p) in packets.iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let flow = table.get_or_insert(&v, i as u64);
        let d = e.judge(&v, flow);
        if d.verdict == Verdict::Drop {
            return Some(match d.reason {
                Reason::Signature(_) => e.reason_signature(&d.reason).unwrap().id.clone(),
                other => other.kind().to_string(),
            });
        }
    }
    None
}

#[test]
fn scopes_table() {
    let e = engine();
    let c = true;
    let table: Vec<(&str, Script, Option<&str>)> = vec![
        ("origin-form target", vec![(c, b"POST /gateway/gateway.dll?Action=open HTTP/1.1\r\nHost: a\r\n\r\n")], Some("target")),
        ("absolute-form target", vec![(c, b"POST http://gw.example/gateway/gateway.dll?Action=poll&SessionID=1 HTTP/1.1\r\n\r\n")], Some("target")),
        ("percent-encoded target", vec![(c, b"GET /gateway/gateway%2Edll HTTP/1.1\r\n\r\n")], Some("target")),
        ("percent-encoded slash, upper case", vec![(c, b"GET /GATEWAY%2fGateWay.DLL HTTP/1.1\r\n\r\n")], Some("target")),
        ("target literal only in body", vec![(c, b"POST /upload HTTP/1.1\r\nContent-Length: 26\r\n\r\nsee /gateway/gateway.dll ok")], None),
        ("target literal in a header", vec![(c, b"GET / HTTP/1.1\r\nReferer: http://x/gateway/gateway.dll\r\n\r\n")], None),
        ("header name any case", vec![(c, b"POST / HTTP/1.1\r\ncOnTeNt-TyPe: Application/X-MSN-Messenger\r\n\r\n")], Some("ctype")),
        ("header value in another header", vec![(c, b"GET / HTTP/1.1\r\nAccept: application/x-msn-messenger\r\n\r\n")], None),
        ("folded header value", vec![(c, b"GET / HTTP/1.1\r\nContent-Type: text/plain;\r\n application/x-msn-messenger\r\n\r\n")], Some("ctype")),
        ("reply header presence", vec![(c, b"POST /x HTTP/1.1\r\n\r\n"), (false, b"HTTP/1.1 200 OK\r\nX-MSN-Messenger: SessionID=1\r\nContent-Length: 0\r\n\r\n")], Some("reply-header")),
        ("case-sensitive user agent", vec![(c, b"GET / HTTP/1.1\r\nUser-Agent: msmsgs\r\n\r\n")], None),
        ("user agent", vec![(c, b"GET / HTTP/1.1\r\nUser-Agent: MSMSGS\r\n\r\n")], Some("ua")),
        ("pipelined second request", vec![(c, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /gateway/gateway.dll HTTP/1.1\r\n\r\n")], Some("target")),
        ("chunked body then request", vec![(c, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n/gate\r\n0\r\n\r\nGET /gateway/gateway.dll HTTP/1.1\r\n\r\n")], Some("target")),
        ("body bytes are not a request", vec![(c, b"POST /a HTTP/1.1\r\nContent-Length: 40\r\n\r\nGET /gateway/gateway.dll HTTP/1.1\r\n\r\nxx")], None),
        ("not HTTP at all", vec![(c, b"\x16\x03\x01 GET /gateway/gateway.dll HTTP/1.1\r\n\r\n")], None),
        ("line start at stream start", vec![(c, b"NICK alice\r\n")], Some("nick")),
        ("line start after CRLF", vec![(c, b"USER a 0 * :a\r\nNICK alice\r\n")], Some("nick")),
        ("mid-line is not line start", vec![(c, b"PRIVMSG #c :NICK alice\r\n")], None),
        ("stream start with wildcards", vec![(c, b"\x2a\x01\x12\x34\x00\x04\x00\x00\x00\x01")], Some("magic")),
        ("stream start pattern later in stream", vec![(c, b"hello"), (c, b"\x2a\x01\x12\x34\x00\x04")], None),
        ("segment start", vec![(c, b"YMSG\x00\x10")], Some("seg")),
        ("anywhere", vec![(false, b"MSG 1 U 9\r\nContent-Type: text/x-msmsgscontrol\r\n")], Some("lit")),
        ("benign", vec![(c, b"GET /news/msn-money?gateway=dll HTTP/1.1\r\nHost: msn.example\r\n\r\n")], None),
    ];
    for (name, script, want) in table {
        let got = judge_script(&e, &script, 1460, 80);
        assert_eq!(got.as_deref(), want, "{name}");
    }
}

#[test]
fn same_verdict_for_any_segment_size() {
    let e = engine();
    let scripts: Vec<(&str, Script)> = vec![
        (
            "gateway",
            vec![
                (true, sample::MSN_GATEWAY_OPEN),
                (false, sample::MSN_GATEWAY_REPLY),
            ],
        ),
        (
            "benign",
            vec![(true, sample::BENIGN_GET), (false, sample::BENIGN_REPLY)],
        ),
        ("nick", vec![(true, b"USER a 0 * :a\r\nNICK alice\r\n")]),
        ("magic", vec![(true, b"\x2a\x01\x12\x34\x00\x04\x00\x00\x00\x01")]),
        (
            "literal",
            vec![(false, b"MSG 1 U 9\r\nContent-Type: text/x-msmsgscontrol\r\n")],
        ),
    ];
    let big = EngineConfig {
        depth_bytes: 1 << 20,
        depth_packets: 1 << 20,
        ..EngineConfig::default()
    };
    let e_deep = engine_with("192.0.2.10 chat\n", big);
    for (name, script) in scripts {
        let whole = judge_script(&e, &script, 1460, 80).is_some();
        for mss in 1..40 {
            let got = judge_script(&e_deep, &script, mss, 80).is_some();
            assert_eq!(got, whole, "{name} with {mss}-byte segments");
        }
    }
    // The gateway request must block; the benign one must not.
    assert!(judge_script(&e_deep, &[(true, sample::MSN_GATEWAY_OPEN)], 1, 80).is_some());
    assert!(judge_script(&e_deep, &[(true, sample::BENIGN_GET)], 1, 80).is_none());
}

#[test]
fn app_sets_and_overlapping_literals() {
    // Host listed for "other" only: chat's longer literal hits first but is
    // not enabled; the overlapping "other" literal must still be found.
    let e = engine_with("192.0.2.10 other\n", EngineConfig::default());
    let got = judge_script(
        &e,
        &[(false, b"Content-Type: text/x-msmsgscontrol\r\n")],
        1460,
        80,
    );
    assert_eq!(got.as_deref(), Some("overlap"));
    // Chat-only signatures do not fire for an "other" host.
    assert_eq!(judge_script(&e, &[(true, b"NICK alice\r\n")], 1460, 80), None);
    // And "other" does not fire for a chat-only host.
    let e = engine();
    assert_eq!(judge_script(&e, &[(true, b"x-msmsgs ")], 1460, 80), None);
}

#[test]
fn port_rules_listing_and_ports_only() {
    let e = engine_with("192.0.2.10 chat\n192.0.2.11:7000\n", EngineConfig::default());
    assert_eq!(
        judge_script(&e, &[(true, b"hello")], 1460, 5555).as_deref(),
        Some("port")
    );
    // Not listed: nothing applies.
    let mut b = TcpFlowBuilder::new((ip("192.0.2.99"), 1), (ip("198.51.100.1"), 5555));
    b.mss = 100;
    assert_eq!(judge_packets(&e, &b.packets(&[(true, b"NICK x\r\n")])), None);
    // IP:PORT line: that port only, and no inspection.
    let b = TcpFlowBuilder::new((ip("192.0.2.11"), 1), (ip("198.51.100.1"), 7000));
    assert_eq!(
        judge_packets(&e, &b.packets(&[(true, b"x")])).as_deref(),
        Some("port")
    );
    let b = TcpFlowBuilder::new((ip("192.0.2.11"), 1), (ip("198.51.100.1"), 80));
    assert_eq!(judge_packets(&e, &b.packets(&[(true, b"NICK x\r\n")])), None);
    // The port rule applies to the listed opener only (as the kernel rule with --ctdir ORIGINAL).
    let b = TcpFlowBuilder::new((ip("198.51.100.1"), 2000), (ip("192.0.2.10"), 5555));
    assert_eq!(judge_packets(&e, &b.packets(&[(true, b"hi")])), None);
}

#[test]
fn depth_marks_clean_and_blocks_are_sticky() {
    let e = engine_with(
        "192.0.2.10 chat\n",
        EngineConfig {
            depth_bytes: 100,
            depth_packets: 100,
            ..EngineConfig::default()
        },
    );
    let filler = [b'a'; 150];
    // The signature after the depth is not seen: the connection went clean.
    assert_eq!(
        judge_script(&e, &[(true, &filler), (true, b"\r\nNICK x\r\n")], 1460, 80),
        None
    );
    // Within the depth it is.
    assert!(judge_script(&e, &[(true, &filler[..50]), (true, b"\r\nNICK x\r\n")], 1460, 80).is_some());
}

fn seg(seq: u32, payload: &[u8]) -> Vec<u8> {
    tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 6000, seq, payload)
}

#[test]
fn retransmission_overlap_and_gaps() {
    let e = engine();
    // Identical retransmission: not matched twice, nothing blocks.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"hello "), seg(1, b"hello "), seg(7, b"world")]),
        None
    );
    // A retransmission whose bytes differ from what was inspected: both
    // versions are inspected (the copy is scanned whole); blocking on the
    // conflict alone is an option.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"hello there "), seg(1, b"x-msmsgscontrol")]).as_deref(),
        Some("lit")
    );
    let strict = engine_with(
        "192.0.2.10 chat\n",
        EngineConfig {
            block_conflicts: true,
            ..EngineConfig::default()
        },
    );
    assert_eq!(
        judge_packets(&strict, &[seg(1, b"hello there "), seg(1, b"x-msmsgscontrol")]).as_deref(),
        Some("evasion")
    );
    // Partial overlap: new bytes after the overlap continue the stream.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"x-msmsgs"), seg(5, b"msgscontrol")]).as_deref(),
        Some("lit")
    );
    // A segment ahead of a gap is judged on its own.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"abc"), seg(100, b"x-msmsgscontrol")]).as_deref(),
        Some("lit")
    );
    // A signature cut at a gap: held until the gap fills, then found in order.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"x-ms"), seg(9, b"control"), seg(5, b"msgs")]).as_deref(),
        Some("lit")
    );
    // Many reordered segments, delivered backwards after the first.
    let text = b"abcdefghij USER a\r\nNICK bob\r\n more text";
    let mut pkts = vec![seg(1, &text[..1])];
    for i in (1..text.len()).rev() {
        pkts.push(seg(1 + i as u32, &text[i..i + 1]));
    }
    assert_eq!(judge_packets(&e, &pkts).as_deref(), Some("nick"));
    // Benign reordered bytes stay benign and the stream still progresses.
    let text = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut pkts = vec![seg(1, &text[..3])];
    for i in (3..text.len()).rev() {
        pkts.push(seg(1 + i as u32, &text[i..i + 1]));
    }
    assert_eq!(judge_packets(&e, &pkts), None);
    // A keep-alive probe (one garbage byte at next-1) is no conflict.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"hello\n"), seg(6, b"\0"), seg(7, b"more")]),
        None
    );
    // Identical bytes in a partial overlap are no conflict.
    assert_eq!(
        judge_packets(&e, &[seg(1, b"hello "), seg(3, b"llo world")]),
        None
    );
    // Mid-stream pickup (no SYN) works: first segment is a line start.
    assert_eq!(
        judge_packets(&e, &[seg(77_777, b"NICK bob\r\n")]).as_deref(),
        Some("nick")
    );
}

#[test]
fn udp_is_judged_per_datagram() {
    let e = engine();
    let p =
        |payload: &[u8]| sample::udp_packet((ip("192.0.2.10"), 5000), (ip("198.51.100.1"), 9999), payload);
    assert_eq!(judge_packets(&e, &[p(b"NICK a\r\n")]).as_deref(), Some("nick"));
    assert_eq!(judge_packets(&e, &[p(b"YMSG\x00")]).as_deref(), Some("seg"));
    // No state crosses datagrams.
    assert_eq!(judge_packets(&e, &[p(b"x-msmsgs"), p(b"control")]), None);
    // A long UDP conversation reaches the depth and is handed to the kernel.
    let shallow = engine_with(
        "192.0.2.10 chat\n",
        EngineConfig {
            depth_bytes: 100,
            ..EngineConfig::default()
        },
    );
    let filler = [b'a'; 60];
    assert_eq!(
        judge_packets(&shallow, &[p(&filler), p(&filler), p(b"NICK a\r\n")]),
        None
    );
    assert_eq!(
        judge_packets(&shallow, &[p(&filler), p(b"NICK a\r\n")]).as_deref(),
        Some("nick")
    );
}

#[test]
fn reload_restarts_match_state() {
    let old = engine();
    let new = engine();
    let mut table = FlowTable::new(4, u64::MAX);
    let a = seg(1, b"NIC");
    let b = seg(4, b"K bob\r\n");
    let va = PacketView::from_ip(&a).unwrap();
    let vb = PacketView::from_ip(&b).unwrap();
    let d = old.judge(&va, table.get_or_insert(&va, 0));
    assert_eq!(d.verdict, Verdict::Accept);
    // The second half is judged by the new engine, whose state starts fresh:
    // no mix of the two policies' automaton states.
    let d = new.judge(&vb, table.get_or_insert(&vb, 1));
    assert_eq!(d.verdict, Verdict::Accept);
}

#[test]
fn reload_keeps_http_framing_of_a_keep_alive_connection_past_the_depth() {
    // Listed for `other` only, then (reload) for `chat`: a keep-alive
    // client past the depth must still have each request judged, whether
    // the first packet the new engine sees is a reply or a request.
    let cfg = EngineConfig {
        depth_bytes: 1000,
        ..EngineConfig::default()
    };
    let old = engine_with("192.0.2.10 other\n", cfg);
    let new = engine_with("192.0.2.10 other chat\n", cfg);
    let mut upload = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n".to_vec();
    upload.extend([b'a'; 3000]);
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let get: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let msn: &[u8] =
        b"POST /gateway/gateway.dll?Action=open HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n";
    let script: Vec<(bool, &[u8])> = vec![
        (true, &upload),
        (false, ok),
        (true, get),
        (false, ok),
        (true, get),
        (false, ok),
        (true, msn),
    ];
    for reply_first in [false, true] {
        // The new engine takes over at a request or at a reply.
        let reload_at = if reply_first { 3 } else { 4 };
        let b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
        let packets = b.packets(&script);
        // Each exchange after the upload is one segment; two FINs end it.
        let at = packets.len() - 2 - (script.len() - reload_at);
        let mut table = FlowTable::new(4, u64::MAX);
        let mut last = None;
        for (i, p) in packets.iter().enumerate().take(packets.len() - 2) {
            let v = PacketView::from_ip(p).unwrap();
            let e = if i < at { &old } else { &new };
            let d = e.judge(&v, table.get_or_insert(&v, i as u64));
            assert_ne!(
                d.reason,
                Reason::Clean,
                "settled clean at packet {i} (reply first: {reply_first})"
            );
            last = Some(d);
        }
        assert_eq!(last.unwrap().verdict, Verdict::Drop, "reply first: {reply_first}");
    }
}

/// Judges a corpus stream against the shipped library, all hosts listed.
fn judge_corpus(e: &Engine, c: &sample::CorpusStream, cuts: Vec<usize>) -> Option<String> {
    let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), c.port));
    b.cuts = cuts;
    let mut table = FlowTable::new(16, u64::MAX);
    for (i, p) in b.packets(&c.script).iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let d = e.judge(&v, table.get_or_insert(&v, i as u64));
        if d.verdict == Verdict::Drop {
            return e.reason_app(&d.reason).map(str::to_string);
        }
    }
    None
}

fn shipped_engine() -> Engine {
    let mut lib_policy = Policy::everyone(AppLibrary::embedded().unwrap());
    // Everyone listed with every app (mysql too).
    let hosts = HostsFile::parse(Path::new("all"), "0.0.0.0/0 all\n::/0 all\n").unwrap();
    lib_policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap_or(lib_policy);
    Engine::new(lib_policy, EngineConfig::default()).unwrap()
}

#[test]
fn corpus_in_one_segment() {
    let e = shipped_engine();
    for c in sample::corpus() {
        assert_eq!(judge_corpus(&e, &c, vec![]).as_deref(), c.app, "{}", c.name);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any segmentation of every corpus stream gets the verdict of the whole stream.
    #[test]
    fn any_segmentation_same_verdict(cuts in proptest::collection::vec(1usize..24, 1..12)) {
        let e = shipped_engine();
        for c in sample::corpus() {
            let got = judge_corpus(&e, &c, cuts.clone());
            proptest::prop_assert_eq!(got.as_deref(), c.app, "{} cut as {:?}", c.name, cuts);
        }
    }
}

#[test]
fn one_byte_segments() {
    let e = shipped_engine();
    for c in sample::corpus() {
        assert_eq!(judge_corpus(&e, &c, vec![1]).as_deref(), c.app, "{}", c.name);
    }
}

const RULES: &str = r#"
name = "site"
description = "message rules"

[[rule]]
id = "url"
why = "squid.conf:1"
[[rule.match]]
field = "url"
regex = ["^http://[^/]*example\\.net/.*gateway\\.dll"]
nocase = true

[[rule]]
id = "path"
[[rule.match]]
field = "path"
regex = ["^/chat/"]

[[rule]]
id = "dom"
[[rule.match]]
field = "host"
domains = [".messenger.test", "exact.test"]

[[rule]]
id = "connect-not-443"
[[rule.match]]
field = "method"
values = ["CONNECT"]
[[rule.match]]
field = "port"
ports = ["443"]
negate = true

[[rule]]
id = "ua"
[[rule.match]]
field = "header"
header = "User-Agent"
regex = ["^skype"]
nocase = true

[[rule]]
id = "reply-mime"
reply = true
[[rule.match]]
field = "header"
header = "Content-Type"
regex = ["^application/x-msn-messenger"]
"#;

fn rules_engine() -> Engine {
    let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), RULES.to_string())]).unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10\n").unwrap();
    Engine::new(Policy::new(lib, &hosts, None).unwrap(), EngineConfig::default()).unwrap()
}

fn rule_of(e: &Engine, script: &[(bool, &[u8])], port: u16, cuts: Vec<usize>) -> Option<String> {
    let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), port));
    b.cuts = cuts;
    let mut table = FlowTable::new(16, u64::MAX);
    for (i, p) in b.packets(script).iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let d = e.judge(&v, table.get_or_insert(&v, i as u64));
        if d.verdict == Verdict::Drop {
            return e.reason_id(&d.reason).map(str::to_string);
        }
    }
    None
}

#[test]
fn message_rules_table() {
    let e = rules_engine();
    let c = true;
    let hello = crate::sample::tls_client_hello("gw.messenger.test");
    let other_hello = crate::sample::tls_client_hello("www.example.org");
    let table: Vec<(&str, Script, u16, Option<&str>)> = vec![
        ("url from origin form + Host", vec![(c, b"GET /x/gateway.dll HTTP/1.1\r\nHost: www.EXAMPLE.net\r\n\r\n")], 80, Some("url")),
        ("url absolute form", vec![(c, b"GET http://a.example.net/gateway.dll HTTP/1.1\r\n\r\n")], 80, Some("url")),
        ("url regex needs the host", vec![(c, b"GET /x/gateway.dll HTTP/1.1\r\nHost: other.org\r\n\r\n")], 80, None),
        ("path", vec![(c, b"GET /chat/room HTTP/1.1\r\nHost: a\r\n\r\n")], 80, Some("path")),
        ("path of absolute form", vec![(c, b"GET http://h.org/chat/x HTTP/1.1\r\n\r\n")], 80, Some("path")),
        ("path does not match mid-path", vec![(c, b"GET /x/chat/ HTTP/1.1\r\n\r\n")], 80, None),
        ("host header subdomain", vec![(c, b"GET / HTTP/1.1\r\nHost: GW.Messenger.Test:8080\r\n\r\n")], 80, Some("dom")),
        ("host header exact", vec![(c, b"GET / HTTP/1.1\r\nHost: exact.test\r\n\r\n")], 80, Some("dom")),
        ("host exact does not cover subdomains", vec![(c, b"GET / HTTP/1.1\r\nHost: a.exact.test\r\n\r\n")], 80, None),
        ("CONNECT target host", vec![(c, b"CONNECT gw.messenger.test:443 HTTP/1.1\r\n\r\n")], 3128, Some("dom")),
        ("CONNECT to a port other than 443", vec![(c, b"CONNECT chat.example.org:5222 HTTP/1.1\r\n\r\n")], 5222, Some("connect-not-443")),
        ("CONNECT to 443 is allowed", vec![(c, b"CONNECT chat.example.org:443 HTTP/1.1\r\n\r\n")], 443, None),
        ("TLS server name", vec![(c, &hello)], 443, Some("dom")),
        ("other TLS server name", vec![(c, &other_hello)], 443, None),
        ("user agent regex, case-insensitive", vec![(c, b"GET / HTTP/1.1\r\nUser-Agent: Skype/8.1\r\n\r\n")], 80, Some("ua")),
        ("reply rule", vec![(c, b"POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), (false, b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: 0\r\n\r\n")], 80, Some("reply-mime")),
        ("request header is not a reply header", vec![(c, b"POST /a HTTP/1.1\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: 0\r\n\r\n")], 80, None),
        ("benign", vec![(c, b"GET /index.html HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: Mozilla/5.0 skype\r\n\r\n")], 80, None),
    ];
    for (name, script, port, want) in table {
        let whole = rule_of(&e, &script, port, vec![]);
        assert_eq!(whole.as_deref(), want, "{name}");
        for cut in [1, 2, 3, 7] {
            assert_eq!(
                rule_of(&e, &script, port, vec![cut]),
                whole,
                "{name} cut every {cut} bytes"
            );
        }
    }
}

/// Host and URL text of a request.
type Named = (Option<String>, Option<String>);

/// `None` when the connection passes, else the host and URL the blocked
/// connection keeps ([`crate::engine::ConnState::matched_request`]).
fn matched_of(e: &Engine, script: &[(bool, &[u8])], port: u16) -> Option<Option<Named>> {
    let b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), port));
    let mut table = FlowTable::new(16, u64::MAX);
    for (i, p) in b.packets(script).iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let conn = table.get_or_insert(&v, i as u64);
        let d = e.judge(&v, &mut *conn);
        if d.verdict == Verdict::Drop {
            let text = |t: &Option<crate::engine::BoundedText>| t.as_ref().map(|t| t.text.clone());
            return Some(
                conn.state
                    .matched_request()
                    .map(|m| (text(&m.host), text(&m.url))),
            );
        }
    }
    None
}

#[test]
fn message_rule_blocks_keep_the_host_and_url_they_judged() {
    let e = rules_engine();
    let c = true;
    let hello = crate::sample::tls_client_hello("GW.messenger.test");
    let s = |x: &str| Some(x.to_string());
    let table: Vec<(&str, Script, u16, Option<Option<Named>>)> = vec![
        ("origin form + Host", vec![(c, b"GET /x/gateway.dll?a=1 HTTP/1.1\r\nHost: www.EXAMPLE.net:80\r\n\r\n")], 80, Some(Some((s("www.example.net"), s("http://www.example.net/x/gateway.dll?a=1"))))),
        ("absolute form", vec![(c, b"GET http://A.example.net:80/gateway.dll HTTP/1.1\r\n\r\n")], 80, Some(Some((s("a.example.net"), s("http://a.example.net/gateway.dll"))))),
        ("TLS server name: host only", vec![(c, &hello)], 443, Some(Some((s("gw.messenger.test"), None)))),
        ("reply rule: headers only, no request named", vec![(c, b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 0\r\n\r\n"), (false, b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: 0\r\n\r\n")], 80, Some(None)),
        ("benign: passes", vec![(c, b"GET /index.html HTTP/1.1\r\nHost: www.example.org\r\n\r\n")], 80, None),
    ];
    for (name, script, port, want) in table {
        assert_eq!(matched_of(&e, &script, port), want, "{name}");
    }
}
