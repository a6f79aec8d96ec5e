//! Per-message HTTP inspection and tunnels (issue "judge every HTTP message
//! and every tunnel"): a table of evasions that passed before, judged
//! offline through the engine with the embedded app library plus a small
//! host-rule library, and benign look-alikes that must pass.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use appwall::engine::{Engine, EngineConfig, FlowMark, Reason, Verdict};
use appwall::flow::FlowTable;
use appwall::packet::PacketView;
use appwall::policy::{AppLibrary, HostsFile, Policy};
use appwall::sample::{MSN_GATEWAY_OPEN, TcpFlowBuilder, tls_client_hello};
use proptest::prelude::*;

cases![
    every_evasion_of_the_table_is_blocked_whatever_the_segment_size,
    benign_look_alikes_pass,
    reply_direction_settles_in_the_kernel_while_requests_stay_queued,
    verdict_does_not_depend_on_what_came_before,
    oversized_head_reason_is_named,
    host_rules_see_the_host_header_of_origin_form_requests,
    a_message_that_is_not_http_is_a_new_stream_from_its_first_byte,
    fuzz_found_heads_are_judged_alone,
    a_new_stream_at_a_segment_start_is_a_segment_start,
    lines_of_a_head_that_breaks_are_http_in_any_segmentation,
    starttls_proceed_starts_the_new_stream_after_its_tag_in_any_segmentation,
    arbitrary_messages_are_judged_alone,
    a_connection_that_closes_after_its_reply_is_handed_to_the_kernel,
    upload_cost_is_counted,
];

/// Host rules on top of the embedded library, so TLS server names are judged.
const HOST_RULES: &str = r#"
name = "msnhosts"
description = "Messenger's servers by name"
[[rule]]
id = "msn-servers"
[[rule.match]]
field = "host"
domains = [".messenger.hotmail.com", ".messenger.test"]

[[rule]]
id = "msmsgs-agent-exact"
[[rule.match]]
field = "header"
header = "User-Agent"
regex = ["^MSMSGS$"]
"#;

fn engine() -> Engine {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut texts: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    texts.push((PathBuf::from("rules/msnhosts.toml"), HOST_RULES.to_string()));
    let lib = AppLibrary::from_texts(&texts).unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 msn msnhosts\n").unwrap();
    Engine::new(Policy::new(lib, &hosts, None).unwrap(), EngineConfig::default()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Outcome of one scripted connection.
#[derive(Debug, Default)]
struct Run {
    /// Why the first drop happened (kind and text).
    blocked: Option<String>,
    /// Packets that would be queued to userspace given the marks so far.
    queued: usize,
    /// All packets.
    packets: usize,
}

fn run(e: &Engine, script: &[(bool, &[u8])], dport: u16) -> Run {
    let b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), dport));
    run_packets(e, &b.packets(script))
}

fn run_packets(e: &Engine, packets: &[Vec<u8>]) -> Run {
    let mut table = FlowTable::new(16, u64::MAX);
    let mut out = Run {
        packets: packets.len(),
        ..Run::default()
    };
    // The kernel's view: connmark clean / reply-clean.
    let (mut clean, mut reply_clean) = (false, false);
    for (i, p) in packets.iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let from_client = v.src == ip("192.0.2.10");
        if clean || (reply_clean && !from_client) {
            continue;
        }
        out.queued += 1;
        let flow = table.get_or_insert(&v, i as u64);
        let d = e.judge(&v, flow);
        clean |= d.mark == Some(FlowMark::Clean);
        reply_clean |= d.settle_reply;
        if d.verdict == Verdict::Drop && out.blocked.is_none() {
            out.blocked = Some(format!("{}: {}", d.reason.kind(), e.reason_text(&d.reason)));
        }
    }
    out
}

fn http_reply(body_len: usize) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', body_len));
    r
}

const GET: &[u8] = b"GET /download.bin HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\n\r\n";

fn owned(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The evasions of the issue: (name, script, server port, expected reason kind).
/// A conversation: (from the client?, bytes) in order.
type Script = Vec<(bool, Vec<u8>)>;

fn evasions() -> Vec<(&'static str, Script, u16, &'static str)> {
    let big_reply = http_reply(24 * 1024);
    let cookie = format!(
        "POST /x HTTP/1.1\r\nHost: www.example.com\r\nCookie: {}\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: 0\r\n\r\n",
        "c".repeat(9 * 1024)
    );
    let agent = format!(
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: {}MSMSGS\r\n\r\n",
        "a".repeat(2500)
    );
    let query = format!(
        "POST /?q={}&x=1/../../gateway/gateway.dll HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 0\r\n\r\n",
        "q".repeat(5 * 1024)
    );
    let long_path = format!(
        "POST /{}/../gateway/gateway.dll HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 0\r\n\r\n",
        "p".repeat(5 * 1024)
    );
    let oversized = format!(
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Pad: {}\r\n\r\n",
        "z".repeat(70 * 1024)
    );
    let hello = tls_client_hello("gateway.messenger.hotmail.com");
    let split_hello = split_records(&hello, 40);
    let benign_hello = tls_client_hello("www.example.com");
    let established: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
    vec![
        (
            "keep-alive: 24 KB download, then the gateway POST",
            vec![
                (true, GET.to_vec()),
                (false, big_reply.clone()),
                (true, MSN_GATEWAY_OPEN.to_vec()),
            ],
            80,
            "signature",
        ),
        (
            "keep-alive through a proxy in absolute form",
            vec![
                (
                    true,
                    b"GET http://www.example.com/download.bin HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
                        .to_vec(),
                ),
                (false, big_reply.clone()),
                (true, MSN_GATEWAY_OPEN.to_vec()),
            ],
            3128,
            "signature",
        ),
        (
            "9 KB Cookie before Content-Type",
            vec![(true, cookie.into_bytes())],
            80,
            "signature",
        ),
        (
            "2.5 KB User-Agent ending in MSMSGS",
            vec![(true, agent.into_bytes())],
            80,
            "signature",
        ),
        (
            "5 KB query string before gateway.dll",
            vec![(true, query.into_bytes())],
            80,
            "signature",
        ),
        (
            "5 KB path segment and dot segments",
            vec![(true, long_path.into_bytes())],
            80,
            "signature",
        ),
        (
            "absolute-form URL host wins over Host",
            vec![(
                true,
                b"GET http://gateway.messenger.hotmail.com/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
                    .to_vec(),
            )],
            3128,
            "signature",
        ),
        (
            "host case and default port",
            vec![(
                true,
                b"GET http://GATEWAY.Messenger.Hotmail.COM:80/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
                    .to_vec(),
            )],
            3128,
            "signature",
        ),
        (
            "percent-encoded dot segments",
            vec![(
                true,
                b"POST /x/%2E%2E/gateway%2Fgateway%2edll HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )],
            80,
            "signature",
        ),
        (
            "second of two User-Agent headers",
            vec![(
                true,
                b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0\r\nUser-Agent: MSMSGS\r\n\r\n"
                    .to_vec(),
            )],
            80,
            "signature",
        ),
        (
            "head over 64 KiB",
            vec![(true, oversized.into_bytes())],
            80,
            "oversized-http-head",
        ),
        (
            "TLS ClientHello cut into records of 40 bytes",
            vec![(true, split_hello.clone())],
            443,
            "rule",
        ),
        (
            "CONNECT to the gateway by name",
            vec![(
                true,
                b"CONNECT gateway.messenger.hotmail.com:443 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            )],
            3128,
            "signature",
        ),
        (
            "CONNECT to port 1863",
            vec![(
                true,
                b"CONNECT 203.0.113.5:1863 HTTP/1.1\r\nHost: 203.0.113.5:1863\r\n\r\n".to_vec(),
            )],
            8080,
            "port",
        ),
        (
            "ClientHello after CONNECT and 200",
            vec![
                (
                    true,
                    b"CONNECT 203.0.113.5:443 HTTP/1.1\r\nHost: 203.0.113.5:443\r\n\r\n".to_vec(),
                ),
                (false, established.to_vec()),
                (true, split_hello.clone()),
            ],
            3128,
            "rule",
        ),
        (
            "ClientHello after a refused CONNECT, then an accepted one",
            vec![
                (
                    true,
                    b"CONNECT 203.0.113.5:443 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                ),
                (
                    false,
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n".to_vec(),
                ),
                (
                    true,
                    b"CONNECT 203.0.113.5:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic eDp5\r\n\r\n"
                        .to_vec(),
                ),
                (false, established.to_vec()),
                (true, split_hello.clone()),
                (false, b"\x16\x03\x03\x00\x02\x02\x00".to_vec()),
            ],
            3128,
            "rule",
        ),
        (
            "HTTP inside a CONNECT tunnel",
            vec![
                (
                    true,
                    b"CONNECT 203.0.113.5:80 HTTP/1.1\r\nHost: 203.0.113.5:80\r\n\r\n".to_vec(),
                ),
                (false, established.to_vec()),
                (true, MSN_GATEWAY_OPEN.to_vec()),
            ],
            3128,
            "signature",
        ),
        (
            "SOCKS5 to port 1863",
            vec![
                (true, vec![5, 1, 0]),
                (false, vec![5, 0]),
                (true, vec![5, 1, 0, 1, 203, 0, 113, 5, 0x07, 0x47]),
            ],
            1080,
            "port",
        ),
        (
            "SOCKS4a to the gateway by name",
            vec![(
                true,
                owned(&[&[4, 1, 1, 187, 0, 0, 0, 1], b"u\0gateway.messenger.hotmail.com\0"]),
            )],
            1080,
            "signature",
        ),
        (
            "ClientHello after SOCKS5 success",
            vec![
                (true, vec![5, 1, 0]),
                (false, vec![5, 0]),
                (true, vec![5, 1, 0, 1, 203, 0, 113, 5, 1, 187]),
                (false, vec![5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
                (true, hello.clone()),
            ],
            1080,
            "rule",
        ),
        (
            "ClientHello after SMTP STARTTLS",
            vec![
                (false, b"220 mail.example ESMTP\r\n".to_vec()),
                (true, b"EHLO client\r\n".to_vec()),
                (false, b"250-mail.example\r\n250 STARTTLS\r\n".to_vec()),
                (true, b"STARTTLS\r\n".to_vec()),
                (false, b"220 2.0.0 Ready to start TLS\r\n".to_vec()),
                (true, split_hello.clone()),
            ],
            25,
            "rule",
        ),
        (
            "ClientHello after XMPP starttls",
            vec![
                (true, b"<stream:stream to='example.com'>".to_vec()),
                (
                    false,
                    b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
                        .to_vec(),
                ),
                (
                    true,
                    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_vec(),
                ),
                (
                    false,
                    b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_vec(),
                ),
                (true, hello.clone()),
            ],
            5222,
            "rule",
        ),
        (
            "Upgrade to a raw stream, then MSNP",
            vec![
                (
                    true,
                    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                        .to_vec(),
                ),
                (
                    false,
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                        .to_vec(),
                ),
                (true, b"VER 1 MSNP8 CVR0\r\n".to_vec()),
            ],
            80,
            "signature",
        ),
        (
            "HTTP, then raw MSNP without an Upgrade",
            vec![
                (true, GET.to_vec()),
                (false, http_reply(100)),
                (true, b"VER 1 MSNP8 CVR0\r\n".to_vec()),
            ],
            80,
            "signature",
        ),
        (
            "HTTP with a reply past the depth, then raw MSNP in pieces",
            vec![
                (true, GET.to_vec()),
                (false, http_reply(20_000)),
                (true, b"VER 1 MSNP8 CVR0\r\n".to_vec()),
            ],
            80,
            "signature",
        ),
        (
            "blank lines before the gateway POST",
            vec![(true, owned(&[&b"\r\n".repeat(40), MSN_GATEWAY_OPEN]))],
            80,
            "signature",
        ),
        (
            "HTTP, then a request line without a version and MSNP lines",
            vec![
                (true, GET.to_vec()),
                (false, http_reply(100)),
                (true, b"GET Host: x\r\nVER 1 MSNP8\r\nVER 2 MSNP8\r\n".to_vec()),
            ],
            80,
            "signature",
        ),
        (
            "HTTP, then a ClientHello cut into records, no CONNECT",
            vec![
                (true, GET.to_vec()),
                (false, http_reply(100)),
                (true, split_hello.clone()),
            ],
            80,
            "rule",
        ),
        (
            "a head that breaks its own grammar, then MSNP",
            vec![
                (true, GET.to_vec()),
                (false, http_reply(100)),
                (
                    true,
                    b"GET / HTTP/1.1\r\nHost: a\r\n\rVER 1 MSNP8 CVR0\r\n".to_vec(),
                ),
            ],
            80,
            "signature",
        ),
        (
            "a chunked body that breaks its framing, then MSNP",
            vec![(
                true,
                b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nVER 1 MSNP8 CVR0\r\n"
                    .to_vec(),
            )],
            80,
            "signature",
        ),
        (
            "pipelined: a benign GET and the gateway POST in one segment",
            vec![(true, owned(&[GET, MSN_GATEWAY_OPEN]))],
            80,
            "signature",
        ),
        (
            "Expect: 100-continue, then the gateway POST",
            vec![
                (
                    true,
                    b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
                        .to_vec(),
                ),
                (false, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                (true, b"hello".to_vec()),
                (false, http_reply(20_000)),
                (true, MSN_GATEWAY_OPEN.to_vec()),
            ],
            80,
            "signature",
        ),
        (
            "chunked body skipped by framing, then the gateway POST",
            vec![(
                true,
                owned(&[
                    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n",
                    &[b'y'; 0x4000],
                    b"\r\n0\r\n\r\n",
                    MSN_GATEWAY_OPEN,
                ]),
            )],
            80,
            "signature",
        ),
        (
            "HEAD reply with Content-Length has no body",
            vec![
                (true, b"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
                (
                    false,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec(),
                ),
                (true, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
                (
                    false,
                    b"HTTP/1.1 200 OK\r\nX-MSN-Messenger: SessionID=1\r\nContent-Length: 0\r\n\r\n".to_vec(),
                ),
            ],
            80,
            "signature",
        ),
        ("benign hello, for contrast", vec![(true, benign_hello)], 443, ""),
    ]
}

/// Re-frames a one-record hello into records of `size` payload bytes.
fn split_records(h: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in h[5..].chunks(size) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
fn every_evasion_of_the_table_is_blocked_whatever_the_segment_size() {
    let e = engine();
    let mut failures = Vec::new();
    for (name, script, port, want) in evasions() {
        let s: Vec<(bool, &[u8])> = script.iter().map(|(c, b)| (*c, b.as_slice())).collect();
        for mss in [1460, 536, 7] {
            let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), port));
            b.mss = mss;
            let got = run_packets(&e, &b.packets(&s));
            let kind = got.blocked.as_deref().map(|b| b.split(':').next().unwrap_or(""));
            let ok = if want.is_empty() {
                kind.is_none()
            } else {
                kind == Some(want)
            };
            if !ok {
                failures.push(format!(
                    "{name} (mss {mss}): want {want:?}, got {:?}",
                    got.blocked
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
fn benign_look_alikes_pass() {
    let e = engine();
    let cases: Vec<(&str, Script, u16)> = vec![
        (
            "keep-alive downloads",
            vec![
                (true, GET.to_vec()),
                (false, http_reply(30_000)),
                (true, GET.to_vec()),
                (false, http_reply(100)),
                (true, b"GET /msn/gateway.html?x=gateway.dll HTTP/1.1\r\nHost: www.example.com\r\n\r\n".to_vec()),
                (false, http_reply(10)),
            ],
            80,
        ),
        (
            "a body sent without a length, a line of another protocol, CRLF after a POST body",
            vec![
                (true, b"POST /form HTTP/1.1\r\nHost: a\r\n\r\nname=value&msg=VER+1+MSNP8".to_vec()),
                (false, http_reply(10)),
                (true, b"HELLO 1 there\r\nVER is a word\r\n".to_vec()),
                (true, b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab\r\n".to_vec()),
                (true, GET.to_vec()),
                (false, http_reply(10)),
            ],
            80,
        ),
        (
            "URL host wins the other way: Host names the gateway, URL does not",
            vec![(true, b"GET http://www.example.com/ HTTP/1.1\r\nHost: gateway.messenger.hotmail.com\r\n\r\n".to_vec())],
            3128,
        ),
        (
            "CONNECT to a benign site, TLS inside",
            vec![
                (true, b"CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n".to_vec()),
                (false, b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec()),
                (true, tls_client_hello("www.example.com")),
            ],
            3128,
        ),
        (
            "SMTP mail that mentions STARTTLS and MSMSGS",
            vec![
                (false, b"220 mail.example ESMTP\r\n".to_vec()),
                (true, b"EHLO c\r\nMAIL FROM:<starttls@example.com>\r\nDATA\r\nSubject: MSMSGS VER 1\r\n\r\nhi\r\n.\r\n".to_vec()),
            ],
            25,
        ),
        (
            "a long SMTP session is not an oversized HTTP head",
            vec![(true, owned(&[b"EHLO x\r\nDATA\r\n", &b"line of mail text\r\n".repeat(5000)]))],
            25,
        ),
        ("binary stream starting with 5", vec![(true, vec![5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])], 9000),
    ];
    for (name, script, port) in cases {
        let s: Vec<(bool, &[u8])> = script.iter().map(|(c, b)| (*c, b.as_slice())).collect();
        let got = run(&e, &s, port);
        assert_eq!(got.blocked, None, "{name}");
    }
}
fn reply_direction_settles_in_the_kernel_while_requests_stay_queued() {
    let e = engine();
    // Ten keep-alive requests, each answered by 64 KiB.
    let reply = http_reply(64 * 1024);
    let mut script: Vec<(bool, &[u8])> = Vec::new();
    for _ in 0..10 {
        script.push((true, GET));
        script.push((false, &reply));
    }
    let got = run(&e, &script, 80);
    assert_eq!(got.blocked, None);
    let client_payload_packets = 10;
    // Every request is still judged; the reply direction stops after the
    // depth (8 KiB: about 6 segments of 1460 bytes) plus the handshake.
    assert!(got.queued >= client_payload_packets, "{got:?}");
    assert!(
        got.queued < got.packets / 4,
        "reply direction was not handed to the kernel: {got:?}"
    );
    // And the gateway POST after all of that is still blocked.
    script.push((true, MSN_GATEWAY_OPEN));
    assert!(run(&e, &script, 80).blocked.is_some());
    eprintln!(
        "fast path: {} of {} packets queued ({} requests, 10 x 64 KiB replies)",
        got.queued, got.packets, client_payload_packets
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever benign messages came before on the connection, an MSN
    /// gateway request is blocked, and a benign sequence alone never is.
    fn verdict_does_not_depend_on_what_came_before(
        prefix in proptest::collection::vec((0usize..4, 0usize..40_000), 0..6),
        mss in prop_oneof![Just(1460usize), Just(536), Just(97)],
    ) {
        let e = engine();
        let replies: Vec<Vec<u8>> = prefix.iter().map(|(_, n)| http_reply(*n)).collect();
        let requests: [&[u8]; 4] = [
            GET,
            b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET http://www.example.com/a/../b?c=%41 HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
            b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        let mut script: Vec<(bool, &[u8])> = Vec::new();
        for ((k, _), reply) in prefix.iter().zip(&replies) {
            script.push((true, requests[*k]));
            // A HEAD reply carries no body.
            script.push((false, if *k == 3 { b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" } else { reply }));
        }
        let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
        b.mss = mss;
        prop_assert_eq!(run_packets(&e, &b.packets(&script)).blocked, None);
        script.push((true, MSN_GATEWAY_OPEN));
        let got = run_packets(&e, &b.packets(&script)).blocked;
        prop_assert!(got.is_some_and(|r| r.starts_with("signature")));
    }
}
fn oversized_head_reason_is_named() {
    assert_eq!(Reason::OversizedHead.kind(), "oversized-http-head");
}
fn host_rules_see_the_host_header_of_origin_form_requests() {
    let rules = r#"
name = "site"
description = "imported"
[[rule]]
id = "dom"
[[rule.match]]
field = "host"
domains = [".messenger.hotmail.com"]
[[rule]]
id = "url"
[[rule.match]]
field = "url"
regex = ['gateway\.dll']
nocase = true
"#;
    let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), rules.to_string())]).unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 site\n").unwrap();
    let e = Engine::new(Policy::new(lib, &hosts, None).unwrap(), EngineConfig::default()).unwrap();
    for (req, blocked) in [
        (&b"GET / HTTP/1.1\r\nHost: gateway.messenger.hotmail.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"[..], true),
        (b"GET /gateway/GATEWAY.DLL?Action=poll HTTP/1.1\r\nHost: 198.51.100.10\r\n\r\n", true),
        (b"GET /news/msn.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n", false),
    ] {
        let got = run(&e, &[(true, req)], 80);
        assert_eq!(got.blocked.is_some(), blocked, "{}: {:?}", String::from_utf8_lossy(req), got.blocked);
    }
}

/// Pieces that arbitrary messages are made of.
const PIECES: [&[u8]; 17] = [
    b"GET ",
    b"POST ",
    b"CONNECT ",
    b"/gateway/gateway.dll",
    b"http://gateway.messenger.hotmail.com",
    b" HTTP/1.1\r\n",
    b"Host: x\r\n",
    b"User-Agent: MSMSGS\r\n",
    b"Content-Length: 4\r\n",
    b"\r\n",
    b"%2e%2E/",
    b"Transfer-Encoding: chunked\r\n",
    b"4\r\nabcd\r\n0\r\n\r\n",
    b"VER 1 MSNP8\r\n",
    b":1863",
    b"\x16\x03\x01",
    b"STARTTLS\r\n",
];

/// The engine with only the shipped library and one listed client (the
/// `http_messages` fuzz target's setup).
fn shipped_engine() -> Engine {
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 msn\n").unwrap();
    let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
    Engine::new(policy, EngineConfig::default()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// The `http_messages` fuzz invariant on arbitrary bytes that look a
    /// bit like HTTP: complete benign requests before them change nothing.
    fn arbitrary_messages_are_judged_alone(
        parts in proptest::collection::vec(0usize..PIECES.len(), 0..12),
        n in 0usize..3,
        mss in 1usize..200,
        answered in proptest::bool::ANY,
    ) {
        let rest: Vec<u8> = parts.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
        // SOCKS speaks only at a connection's start.
        prop_assume!(!rest.first().is_some_and(|&b| b == 4 || b == 5));
        let e = shipped_engine();
        let prefix: [&[u8]; 2] = [GET, b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"];
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        // The requests alone, or each answered by the server.
        let mut script: Vec<(bool, &[u8])> = Vec::new();
        for m in prefix.iter().cycle().take(n) {
            script.push((true, m));
            if answered {
                script.push((false, reply));
            }
        }
        script.push((true, &rest));
        let judge = |script: &[(bool, &[u8])]| {
            let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
            b.mss = mss;
            run_packets(&e, &b.packets(script)).blocked.is_some()
        };
        // Whatever follows complete messages is a message (or, if it is not
        // HTTP, a new stream from its first byte): judged alone.
        prop_assert_eq!(judge(&script), judge(&[(true, &rest)]), "{}", String::from_utf8_lossy(&rest));
    }
}
fn a_connection_that_closes_after_its_reply_is_handed_to_the_kernel() {
    let e = engine();
    let close_reply = {
        let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'x', 20_000));
        r
    };
    let got = run(&e, &[(true, GET), (false, &close_reply)], 80);
    assert_eq!(got.blocked, None);
    // Clean after the depth (8 KiB of the reply): the rest stays in the kernel.
    assert!(got.queued + 5 < got.packets, "never clean: {got:?}");
    // Without `close`, the client could send another request: not clean.
    let keep = http_reply(20_000);
    let got = run(&e, &[(true, GET), (false, &keep), (true, MSN_GATEWAY_OPEN)], 80);
    assert!(got.blocked.is_some(), "{got:?}");
}

/// What per-message inspection costs the kernel fast path on an upload: a
/// keep-alive client's body stays queued (scanned only to the depth).
fn upload_cost_is_counted() {
    let e = engine();
    let mut post = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    )
    .into_bytes();
    post.extend(std::iter::repeat_n(b'u', 1 << 20));
    let got = run(&e, &[(true, &post), (false, &http_reply(10))], 80);
    assert_eq!(got.blocked, None);
    eprintln!(
        "upload: {} of {} packets queued (1 MiB POST, keep-alive)",
        got.queued, got.packets
    );
    let closing = [&post[..], b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"].concat();
    let got2 = run(
        &e,
        &[
            (true, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
            (true, &closing),
        ],
        80,
    );
    eprintln!(
        "upload after Connection: close: {} of {} packets queued",
        got2.queued, got2.packets
    );
    assert!(got2.queued < got.queued);
}
/// Inputs the `http_messages` fuzz target found: MSNP lines inside a head
/// whose request line the first-line guess did not take for HTTP (the
/// walker did), and the same inside a CONNECT head. Judged alone and after
/// benign requests, the verdict must be the same.
fn fuzz_found_heads_are_judged_alone() {
    let e = shipped_engine();
    let long_qng = [&b"QNG 3M%n&?S"[..], &[0xcf; 104]].concat();
    let cases: [(&[u8], usize); 3] = [
        // A first line longer than the MSNP reader's buffer, still possibly
        // a request line when the stream ends.
        (&long_qng, 1),
        (b"POST /u HTTP/1.%o\xecPOST /gatewll?Ac8\x0dP./\x0d81P/1.\x09\x0aVER 1 MSNP8\x0d\x0aVER 1 MSNP8\x0d\x0a\x0d\x0a\x1d\x00\x00\x0a\x0a\x0d\x0aGE /u HTT;P/1.ZZZZZZZZZZ", 2),
        (b"CONNECT 203.0.O0\xdb3.0.113.5:18%3 HTTP/1NNNNNNNN\x06POST /gan HTTP/1?1\x0d\x0aHost:\x5c\x5c gateway.messenge\x8e\xd1hotma\x00\x00%\x00ontenrt-L\x00%o\xecPOST /gatewll?Ac8\x0dP./\x0d81P/1.\x09\x0aVE\x00\x00R 1 MSNP8\x0d\x0aVER 1 MSNP8\x0d\x0aVER 1 MSNP8\x0d\x0a\x0d\x0a/g\x06POST ayNNNN.1\x0d\x0a\x0d\x0a", 1),
    ];
    for (rest, n) in cases {
        for mss in [1usize, 7, 24, 93, 1460] {
            let judge = |s: &[u8]| {
                let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
                b.mss = mss;
                run_packets(&e, &b.packets(&[(true, s)])).blocked
            };
            let mut stream: Vec<u8> = GET.repeat(n);
            stream.extend_from_slice(rest);
            // Once the line cannot be a request line, it counts as MSNP.
            let ended = [rest, b" x\r\n"].concat();
            if rest == &long_qng[..] {
                let after = [GET, &ended[..]].concat();
                assert!(judge(&ended).is_some() && judge(&after).is_some(), "mss {mss}");
            }
            assert_eq!(
                judge(&stream).is_some(),
                judge(rest).is_some(),
                "mss {mss}: {}",
                String::from_utf8_lossy(rest)
            );
        }
    }
}

/// A new stream that begins at a segment's first byte still begins a
/// segment: an AIM FLAP frame sent after HTTP is matched by the
/// segment-start signature, as it is alone.
fn a_new_stream_at_a_segment_start_is_a_segment_start() {
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 aim\n").unwrap();
    let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
    let e = Engine::new(policy, EngineConfig::default()).unwrap();
    let flap: &[u8] = b"*\x02\x00\x07\x00\x0a\x00\x04\x00\x06\x00\x00\x00\x00\x00\x00";
    let reply = http_reply(100);
    for script in [
        vec![(true, flap)],
        vec![(true, GET), (false, &reply[..]), (true, flap)],
    ] {
        let got = run(&e, &script, 80);
        let why = got.blocked.unwrap_or_default();
        assert!(why.contains("flap-snac"), "{} segments: {why:?}", script.len());
    }
}

/// A `stream_split` fuzz find, rebuilt: the server leaves HTTP (its new
/// stream is MSNP), then the client's unfinished head goes on with
/// MSNP-looking header lines and breaks. Those lines are HTTP's: whether the
/// break falls in the same segment must not decide whether they count.
fn lines_of_a_head_that_breaks_are_http_in_any_segmentation() {
    let e = shipped_engine();
    let script: [(bool, &[u8]); 3] = [
        (true, b"GET / HTTP/1.1\r\nHost: a\r\n"),
        (
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\x00QNG 45\r\n",
        ),
        (
            true,
            b"NLN IDL a@example.com x 0\r\nNLN IDL b@example.com y 0\r\n\rX",
        ),
    ];
    let verdicts: Vec<Option<String>> = [1460, 7, 3]
        .into_iter()
        .map(|mss| {
            let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
            b.mss = mss;
            run_packets(&e, &b.packets(&script)).blocked
        })
        .collect();
    assert!(verdicts.iter().all(|v| v == &verdicts[0]), "{verdicts:?}");
}

/// A `stream_split` fuzz find, rebuilt: after XMPP's `<proceed .../>` the
/// new stream starts after the tag's `>` however the segments fall (it
/// used to start at the segment's end when the `>` came later), so what
/// the server sends next is judged the same way in every segmentation.
fn starttls_proceed_starts_the_new_stream_after_its_tag_in_any_segmentation() {
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 irc\n").unwrap();
    let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
    let e = Engine::new(policy, EngineConfig::default()).unwrap();
    let script: [(bool, &[u8]); 4] = [
        (true, b"<stream:stream to='example.com'>"),
        (false, b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"),
        (true, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        (false, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>NOTICE AUTH :*** Looking up your hostname\r\n"),
    ];
    for mss in [1460, 9, 1] {
        let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 5222));
        b.mss = mss;
        let got = run_packets(&e, &b.packets(&script)).blocked.unwrap_or_default();
        assert!(got.contains("auth-notice-old"), "mss {mss}: {got:?}");
    }
}

/// The proptest's first counterexample: a request line without a version
/// after a complete request, then MSNP lines. Alone it is a stream whose
/// lines are MSNP; after the GET it must be judged the same, whatever the
/// segment size (a message that is not HTTP starts a new stream from its
/// first byte, bytes of earlier segments included).
fn a_message_that_is_not_http_is_a_new_stream_from_its_first_byte() {
    let e = shipped_engine();
    let rest: &[u8] = b"GET Host: x\r\nVER 1 MSNP8\r\nVER 1 MSNP8\r\n";
    let mut stream = GET.to_vec();
    stream.extend_from_slice(rest);
    for mss in [1usize, 2, 3, 5, 8, 13, 40, 200] {
        let judge = |s: &[u8]| {
            let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 80));
            b.mss = mss;
            run_packets(&e, &b.packets(&[(true, s)])).blocked
        };
        let alone = judge(rest);
        assert!(alone.is_some(), "mss {mss}: alone not blocked");
        assert_eq!(judge(&stream), alone, "mss {mss}");
    }
}
