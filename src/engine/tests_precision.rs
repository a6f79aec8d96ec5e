//! Precision and recall of the shipped library with every app enabled for
//! every host: mail, news, FTP and web sessions that talk *about* MSN must
//! pass; MSNP itself, in every version and on any port, must not.

use std::net::IpAddr;
use std::path::Path;

use crate::engine::{Engine, EngineConfig, Reason, Verdict};
use crate::flow::FlowTable;
use crate::packet::PacketView;
use crate::packet::tests::tcp4;
use crate::policy::{AppLibrary, HostsFile, Policy};
use crate::sample::{TcpFlowBuilder, udp_packet};

fn all_apps(config: EngineConfig) -> Engine {
    let hosts = HostsFile::parse(Path::new("all"), "0.0.0.0/0 all\n::/0 all\n").unwrap();
    let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
    Engine::new(policy, config).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs packets through one flow table; the blocking reason as
/// `app/signature` (or the reason kind), or `None`.
fn verdict(e: &Engine, packets: &[Vec<u8>]) -> Option<String> {
    let mut table = FlowTable::new(16, u64::MAX);
    for (i, p) in packets.iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let d = e.judge(&v, table.get_or_insert(&v, i as u64));
        if d.verdict == Verdict::Drop {
            return Some(match (e.reason_app(&d.reason), e.reason_id(&d.reason)) {
                (Some(a), Some(s)) => format!("{a}/{s}"),
                _ => d.reason.kind().to_string(),
            });
        }
    }
    None
}

fn script_verdict(e: &Engine, port: u16, script: &[(bool, &[u8])], mss: usize) -> Option<String> {
    let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), port));
    b.mss = mss;
    verdict(e, &b.packets(script))
}

/// Text that talks about MSN: lines that look like MSNP (some of them
/// grammatical!), MSN MIME types, Messenger names.
const MSN_TALK: &[u8] = b"Hi team,\r\n\
\r\n\
Minutes of the review:\r\n\
CHG 0031337 approved\r\n\
CAL 2026 budget\r\n\
USR 3 logs in as admin\r\n\
VER 2 of the draft is attached.\r\n\
ANS 42 is the answer\r\n\
JOI us for lunch\r\n\
NICK Jones will present\r\n\
\r\n\
Our IRC log from the outage:\r\n\
NICK bob\r\n\
JOIN #ops\r\n\
PRIVMSG #ops :deploying the fix now\r\n\
\r\n\
For the record, the MSN Messenger (msnmsgr.exe) login looks like this:\r\n\
VER 1 MSNP8 CVR0\r\n\
CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS alice@hotmail.com\r\n\
USR 3 TWN I alice@hotmail.com\r\n\
XFR 3 NS 207.46.106.145:1863 0 207.46.104.20:1863\r\n\
CHG 12 NLN 0\r\n\
CAL 5 bob@hotmail.com\r\n\
MSG 6 U 89\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/x-msmsgscontrol\r\n\
TypingUser: alice@hotmail.com\r\n\
\r\n\
\r\n\
MIME-Version: 1.0\r\n\
Content-Type: application/x-msnmsgrp2p\r\n\
PNG\r\n\
QNG 45\r\n\
The gateway is POST /gateway/gateway.dll?Action=open on gateway.messenger.hotmail.com\r\n\
with Content-Type: application/x-msn-messenger and User-Agent: MSMSGS.\r\n\
OUT\r\n\
BYE\r\n";

fn mail(to_smtp: bool) -> Vec<u8> {
    let mut m = Vec::new();
    if to_smtp {
        m.extend_from_slice(b"From: carol@example.org\r\nTo: dave@example.net\r\nSubject: MSN notes\r\n\r\n");
    } else {
        m.extend_from_slice(b"Return-Path: <carol@example.org>\r\nSubject: MSN notes\r\n\r\n");
    }
    m.extend_from_slice(MSN_TALK);
    m
}

/// A session: (name, server port, script of (from client?, bytes)).
type Session = (&'static str, u16, Vec<(bool, Vec<u8>)>);

/// An MSNP session: (name, port, script, the `app/signature` that must block it).
type MsnpSession = (&'static str, u16, Vec<(bool, &'static [u8])>, &'static str);

fn benign_sessions() -> Vec<Session> {
    let body = mail(true);
    let http_body = MSN_TALK.to_vec();
    let response = [
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            http_body.len()
        )
        .into_bytes(),
        http_body.clone(),
    ]
    .concat();
    let upload = [
        format!(
            "POST /upload/notes.txt HTTP/1.1\r\nHost: files.example.org\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            http_body.len()
        )
        .into_bytes(),
        http_body.clone(),
    ]
    .concat();
    let pop_mail = [b"+OK 1234 octets\r\n".to_vec(), mail(false), b".\r\n".to_vec()].concat();
    let imap_fetch = [
        format!("* 1 FETCH (BODY[] {{{}}}\r\n", mail(false).len()).into_bytes(),
        mail(false),
        b")\r\na2 OK FETCH completed\r\n".to_vec(),
    ]
    .concat();
    let article = [
        b"220 1 <msn@example.org> article\r\n".to_vec(),
        b"Newsgroups: comp.protocols.im\r\nSubject: MSNP\r\n\r\n".to_vec(),
        MSN_TALK.to_vec(),
        b".\r\n".to_vec(),
    ]
    .concat();
    let ftp_lines = b"USER anonymous\r\nPASS x\r\nCWD /pub/msn\r\nRETR msnp.txt\r\nQUIT\r\n".to_vec();
    vec![
        (
            "SMTP submission of a mail about MSNP",
            587,
            vec![
                (false, b"220 mail.example.org ESMTP Postfix\r\n".to_vec()),
                (true, b"EHLO client.example.org\r\n".to_vec()),
                (false, b"250-mail.example.org\r\n250 8BITMIME\r\n".to_vec()),
                (
                    true,
                    b"MAIL FROM:<carol@example.org>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\n".to_vec(),
                ),
                (false, b"250 OK\r\n250 OK\r\n354 go ahead\r\n".to_vec()),
                (true, [body.clone(), b".\r\nQUIT\r\n".to_vec()].concat()),
                (false, b"250 queued\r\n221 bye\r\n".to_vec()),
            ],
        ),
        (
            "SMTP relay on port 25",
            25,
            vec![
                (false, b"220 mx.example.net ESMTP\r\n".to_vec()),
                (true, b"HELO mx.example.org\r\n".to_vec()),
                (true, [b"DATA\r\n".to_vec(), body.clone()].concat()),
            ],
        ),
        (
            "POP3 retrieval",
            110,
            vec![
                (false, b"+OK POP3 ready\r\n".to_vec()),
                (true, b"USER dave\r\nPASS x\r\nRETR 1\r\n".to_vec()),
                (false, pop_mail),
            ],
        ),
        (
            "IMAP fetch",
            143,
            vec![
                (false, b"* OK [CAPABILITY IMAP4rev1] ready\r\n".to_vec()),
                (true, b"a1 LOGIN dave x\r\na2 FETCH 1 BODY[]\r\n".to_vec()),
                (false, imap_fetch),
            ],
        ),
        (
            "NNTP article",
            119,
            vec![
                (false, b"200 news.example.org ready\r\n".to_vec()),
                (true, b"GROUP comp.protocols.im\r\nARTICLE 1\r\n".to_vec()),
                (false, article),
            ],
        ),
        (
            "NNTP post by a client",
            119,
            vec![
                (false, b"201 news.example.org no posting\r\n".to_vec()),
                (
                    true,
                    [b"POST\r\n".to_vec(), MSN_TALK.to_vec(), b".\r\n".to_vec()].concat(),
                ),
            ],
        ),
        (
            "FTP control channel",
            21,
            vec![(false, b"220 FTP ready\r\n".to_vec()), (true, ftp_lines)],
        ),
        (
            "HTTP download of a text about MSNP",
            80,
            vec![
                (
                    true,
                    b"GET /docs/msnp-login.txt HTTP/1.1\r\nHost: docs.example.org\r\n\r\n".to_vec(),
                ),
                (false, response.clone()),
            ],
        ),
        (
            "HTTP download on 8080, two requests on one connection",
            8080,
            vec![
                (true, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
                (false, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
                (true, b"GET /docs/msnp.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
                (false, response),
            ],
        ),
        ("HTTP upload of a text about MSNP", 80, vec![(true, upload)]),
        (
            "a chat about Messenger (no protocol)",
            5000,
            vec![(
                true,
                b"Is MSN Messenger still around? I used msnmsgr.exe and the MSNP8 protocol.\r\nCAL me\r\n"
                    .to_vec(),
            )],
        ),
    ]
}

#[test]
fn talk_about_msn_in_other_protocols_passes() {
    let e = all_apps(EngineConfig {
        depth_bytes: u64::MAX,
        ..EngineConfig::default()
    });
    for (name, port, script) in benign_sessions() {
        let s: Vec<(bool, &[u8])> = script.iter().map(|(c, b)| (*c, b.as_slice())).collect();
        for mss in [1460, 536, 7, 1] {
            assert_eq!(
                script_verdict(&e, port, &s, mss),
                None,
                "{name} (segments of {mss})"
            );
        }
    }
}

#[test]
fn quoted_irc_blocks_only_as_its_own_stream() {
    let e = all_apps(EngineConfig::default());
    let start = MSN_TALK.windows(8).position(|w| w == b"NICK bob").unwrap();
    assert_eq!(
        script_verdict(&e, 5000, &[(true, &MSN_TALK[start..])], 1460).as_deref(),
        Some("irc/nick")
    );
}

#[test]
fn the_same_text_as_an_msnp_stream_is_blocked() {
    // Control for the test above: the grammar does accept those lines.
    let e = all_apps(EngineConfig::default());
    let start = MSN_TALK.windows(11).position(|w| w == b"VER 1 MSNP8").unwrap();
    assert_eq!(
        script_verdict(&e, 5000, &[(true, &MSN_TALK[start..])], 1460).as_deref(),
        Some("msn/msnp-ver")
    );
}

fn msnp_sessions() -> Vec<MsnpSession> {
    vec![
        (
            "MSNP8 login",
            1864,
            vec![
                (true, b"VER 1 MSNP8 CVR0\r\n"),
                (false, b"VER 1 MSNP8 CVR0\r\n"),
                (true, b"CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS alice@hotmail.com\r\n"),
            ],
            "msn/msnp-ver",
        ),
        (
            "MSNP9 login without CVR0",
            443,
            vec![(true, b"VER 1 MSNP9\r\n"), (false, b"VER 1 MSNP9\r\n")],
            "msn/msnp-ver",
        ),
        (
            "MSNP15 SSO login, server speaks first after a resumed pickup",
            8080,
            vec![(false, b"USR 3 SSO S MBI_KEY_OLD 8CLhG/xfgYZ7TyPJ4zIZ1k==\r\n")],
            "msn/msnp-usr",
        ),
        (
            "MSNP18 with several versions offered",
            1863,
            vec![(true, b"VER 1 MSNP18 MSNP17 MSNP16 CVR0\r\n")],
            "msn/msnp-ver",
        ),
        (
            "MSNP18 presence with network ids",
            5000,
            vec![(false, b"NLN NLN 1:bob@live.com Bob 2789003324:48 0\r\n")],
            "msn/msnp-nln",
        ),
        (
            "switchboard on port 443",
            443,
            vec![
                (true, b"USR 1 alice@hotmail.com 17262740.1050826919.32308\r\n"),
                (false, b"USR 1 OK alice@hotmail.com Alice\r\n"),
            ],
            "msn/msnp-usr",
        ),
        (
            "switchboard invitation on an odd port",
            31337,
            vec![(false, b"RNG 11752013 207.46.108.38:1863 CKI 849102291.520491113 alice@hotmail.com Alice\r\n"), (true, b"ANS 1 bob@hotmail.com 849102291.520491113 11752013\r\n")],
            "msn/msnp-ans",
        ),
        (
            "typing notification on port 80",
            80,
            vec![(
                true,
                b"MSG 77 U 89\r\nMIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: jujurius@msn.com\r\n\r\n\r\n",
            )],
            "msn/msnp-msg",
        ),
        (
            "keep-alive only",
            1863,
            vec![(true, b"PNG\r\n"), (false, b"QNG 45\r\n")],
            "msn/msnp-png",
        ),
        (
            "picked up inside a message: two framed commands confirm",
            2000,
            vec![(
                true,
                b"TypingUser: a@hotmail.com\r\n\r\n\r\nMSG 78 U 89\r\nMIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: jujurius@msn.com\r\n\r\n\r\nCAL 79 cecile@hotmail.com\r\n",
            )],
            "msn/msnp-cal",
        ),
    ]
}

#[test]
fn msnp_sessions_are_blocked_on_any_port_and_segmentation() {
    let e = all_apps(EngineConfig {
        port_rules: false,
        ..EngineConfig::default()
    });
    for (name, port, script, want) in msnp_sessions() {
        for mss in [1460, 10, 3, 1] {
            assert_eq!(
                script_verdict(&e, port, &script, mss).as_deref(),
                Some(want),
                "{name} (segments of {mss})"
            );
        }
    }
}

#[test]
fn http_gateway_is_found_by_its_own_markers() {
    let e = all_apps(EngineConfig::default());
    let open: &[u8] = b"POST http://gateway.messenger.hotmail.com/gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: 18\r\n\r\nVER 5 MSNP8 CVR0\r\n";
    let got = script_verdict(&e, 8080, &[(true, open)], 1460).unwrap();
    assert!(got.starts_with("msn/gateway"), "{got}");
}

fn seg(seq: u32, payload: &[u8]) -> Vec<u8> {
    tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 6000, seq, payload)
}

/// Judges packets; returns (blocking reason, packets flagged as conflicts).
fn conflicts(e: &Engine, packets: &[Vec<u8>]) -> (Option<String>, usize) {
    let mut table = FlowTable::new(16, u64::MAX);
    let mut n = 0;
    for (i, p) in packets.iter().enumerate() {
        let v = PacketView::from_ip(p).unwrap();
        let d = e.judge(&v, table.get_or_insert(&v, i as u64));
        n += usize::from(d.conflict);
        if d.verdict == Verdict::Drop {
            let r = match d.reason {
                Reason::Signature(_) => e.reason_id(&d.reason).unwrap().to_string(),
                other => other.kind().to_string(),
            };
            return (Some(r), n);
        }
    }
    (None, n)
}

#[test]
fn zero_bytes_overwritten_by_data_are_no_conflict() {
    let e = all_apps(EngineConfig::default());
    let strict = all_apps(EngineConfig {
        block_conflicts: true,
        ..EngineConfig::default()
    });
    for n in 2..=6 {
        let zeros = vec![0u8; n];
        // Benign data replaces the zeros: no verdict, no conflict, even strict.
        let benign = [seg(1, &zeros), seg(1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")];
        assert_eq!(conflicts(&strict, &benign), (None, 0), "{n} zeros");
        // The zeros cannot hide MSNP that follows at the same sequence number.
        let msnp = [seg(1, &zeros), seg(1, b"VER 1 MSNP8 CVR0\r\n")];
        assert_eq!(conflicts(&e, &msnp).0.as_deref(), Some("msnp-ver"), "{n} zeros");
    }
    // A placeholder that arrives late, over data already inspected.
    let late = [
        seg(1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        seg(1, &[0, 0, 0, 0]),
    ];
    assert_eq!(conflicts(&strict, &late), (None, 0));
    // Zeros that the stream goes on after were real data: inspected in order.
    let e2 = all_apps(EngineConfig::default());
    let real = [seg(1, &[0, 0, 0, 0]), seg(5, b"<stream:stream to='x'>")];
    assert_eq!(conflicts(&e2, &real).0.as_deref(), Some("stream-header"));
}

#[test]
fn a_record_resent_differently_passes_and_is_counted() {
    let e = all_apps(EngineConfig::default());
    let mut data = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    data.extend_from_slice(&[0xab; 32]);
    let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let (r, n) = conflicts(&e, &[seg(1, &data), seg(1, &alert)]);
    assert_eq!((r, n), (None, 1));
    // Strict mode keeps the old behaviour.
    let strict = all_apps(EngineConfig {
        block_conflicts: true,
        ..EngineConfig::default()
    });
    assert_eq!(
        conflicts(&strict, &[seg(1, &data), seg(1, &alert)]).0.as_deref(),
        Some("evasion")
    );
}

#[test]
fn a_decoy_cannot_hide_a_signature_in_either_version() {
    let e = all_apps(EngineConfig::default());
    // Decoy first, the real command second (the receiver may keep either).
    let (r, n) = conflicts(
        &e,
        &[seg(1, b"XXXXXXXXXXXXXXXXXX"), seg(1, b"VER 1 MSNP8 CVR0\r\n")],
    );
    assert_eq!((r.as_deref(), n), (Some("msnp-ver"), 1));
    // Real command first, decoy second: the stream already saw it.
    let (r, _) = conflicts(
        &e,
        &[seg(1, b"VER 1 MSNP8 CVR0\r\n"), seg(1, b"XXXXXXXXXXXXXXXXXX")],
    );
    assert_eq!(r.as_deref(), Some("msnp-ver"));
    // A line-start literal right after inspected bytes, only in the copy.
    let (r, n) = conflicts(
        &e,
        &[
            seg(1, b"hello\r\n"),
            seg(8, b"zzzzzzzzzz"),
            seg(8, b"NICK bob\r\n"),
        ],
    );
    assert_eq!(r.as_deref(), Some("nick"));
    assert_eq!(n, 1);
}

#[test]
fn udp_structures() {
    let e = all_apps(EngineConfig::default());
    let dgram = |dport: u16, payload: &[u8]| {
        verdict(
            &e,
            &[udp_packet(
                (ip("192.0.2.10"), 40000),
                (ip("198.51.100.1"), dport),
                payload,
            )],
        )
    };
    let mut oicq = vec![0x02, 0x3b, 0x0b, 0x00, 0x01, 0x00, 0x17, 0x56, 0x1f, 0x0c, 0x7b];
    oicq.extend_from_slice(&[0; 32]);
    oicq.push(0x03);
    assert_eq!(dgram(8000, &oicq).as_deref(), Some("qq/oicq-frame"));
    assert_eq!(dgram(53000, &oicq).as_deref(), Some("qq/oicq-frame"));
    // Other traffic on UDP 8000 is no longer QQ by port.
    assert_eq!(
        dgram(
            8000,
            &[0x24, 0x01, 0x00, 0x00, 0x55, 0x66, 0x77, 0x88, 0, 0, 0, 0]
        ),
        None
    );
    let mut syn = vec![0x41, 0x00, 0x12, 0x34];
    syn.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0]);
    assert_eq!(dgram(51413, &syn).as_deref(), Some("bittorrent/utp-header"));
    assert_eq!(
        dgram(
            6771,
            b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: 0123\r\n\r\n"
        )
        .as_deref(),
        Some("bittorrent/lsd-search")
    );
    assert_eq!(
        dgram(6881, b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").as_deref(),
        Some("bittorrent/dht-query")
    );
    // A TLS record and a KCP-like segment on the old BitTorrent ports pass.
    assert_eq!(
        dgram(
            6881,
            &[
                0x16, 0x03, 0x01, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
            ]
        ),
        None
    );
    let mut kcp = vec![0x41, 0x00, 0, 0, 0x51, 0, 0x00, 0x01];
    kcp.extend_from_slice(&[0; 16]);
    assert_eq!(dgram(8000, &kcp), None);
}

#[test]
fn port_rules_left_are_reported_as_port() {
    let e = all_apps(EngineConfig::default());
    for (port, app) in [(1863, "msn"), (5050, "yahoo"), (5190, "aim"), (6667, "irc")] {
        let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), port));
        b.handshake = true;
        let pkts = b.packets(&[(true, b"hello")]);
        let v = PacketView::from_ip(&pkts[0]).unwrap();
        let mut table = FlowTable::new(4, u64::MAX);
        let d = e.judge(&v, table.get_or_insert(&v, 0));
        assert_eq!(d.reason.kind(), "port", "{port}");
        assert_eq!(e.reason_app(&d.reason), Some(app));
        assert!(
            e.reason_text(&d.reason).starts_with("port "),
            "{}",
            e.reason_text(&d.reason)
        );
    }
    // The dropped ranges are payload-only now.
    for port in [5222, 5223, 6660, 6789, 6881, 7000] {
        let b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), port));
        assert_eq!(
            verdict(&e, &b.packets(&[(true, b"\x16\x03\x01\x00\x05hello")])),
            None,
            "{port}"
        );
    }
}

/// Lines a stream is built from in the property test below.
const LINES: &[&[u8]] = &[
    b"VER 1 MSNP8 CVR0\r\n",
    b"CHG 0031337 approved\r\n",
    b"CAL 2026 budget\r\n",
    b"MSG 5 U 20\r\nMIME-Version: 1.0\r\n\r\n",
    b"CAL 9 bob@hotmail.com\r\n",
    b"220 mail.example.org ESMTP\r\n",
    b"GET / HTTP/1.1\r\n",
    b"hello world, this line is rather long and goes past the ninety-six bytes of line the MSNP reader keeps\r\n",
    b"\r\n",
    b"PNG\r\n",
    b"\x00\xff\x13binary",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// However a stream of MSNP, look-alike, foreign and junk lines is cut
    /// into segments, the verdict is the one of the whole stream.
    #[test]
    fn msnp_verdict_does_not_depend_on_segmentation(
        picks in proptest::collection::vec(0usize..LINES.len(), 1..8),
        cuts in proptest::collection::vec(1usize..40, 1..10),
    ) {
        let e = all_apps(EngineConfig { port_rules: false, ..EngineConfig::default() });
        let stream: Vec<u8> = picks.iter().flat_map(|&i| LINES[i].iter().copied()).collect();
        let whole = script_verdict(&e, 5000, &[(true, &stream)], 1460);
        let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 5000));
        b.cuts = cuts.clone();
        let cut = verdict(&e, &b.packets(&[(true, &stream)]));
        proptest::prop_assert_eq!(whole, cut, "{:?} cut as {:?}", String::from_utf8_lossy(&stream), cuts);
    }

    /// Any bytes, any segmentation, either direction: the engine answers.
    #[test]
    fn any_bytes_through_the_line_reader(
        data in proptest::collection::vec(proptest::prop_oneof![
            proptest::num::u8::ANY,
            proptest::sample::select(&b"\r\n MSGVER0123456789@.:"[..]),
        ], 0..600),
        cuts in proptest::collection::vec(1usize..80, 1..6),
        from_client: bool,
    ) {
        let e = all_apps(EngineConfig::default());
        let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.1"), 5000));
        b.cuts = cuts;
        let _ = verdict(&e, &b.packets(&[(from_client, &data), (!from_client, &data)]));
    }

    /// The grammar and header checks take any bytes without panicking.
    #[test]
    fn structure_checks_take_any_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200), complete: bool) {
        let _ = crate::engine::msnp::command(&data, complete);
        let _ = crate::engine::protocols::first_line(&data);
        let _ = crate::engine::protocols::oicq_datagram(&data);
        let _ = crate::engine::protocols::utp_datagram(&data);
    }
}

#[test]
fn protocol_key_goes_with_fitting_scopes_only() {
    let lib = |sig: &str| {
        let text =
            format!("name = \"t\"\ndescription = \"t\"\n[[signature]]\nid = \"s\"\n{sig}\nwhy = \"x\"\n");
        AppLibrary::from_texts(&[(std::path::PathBuf::from("rules/t.toml"), text)]).map_err(|e| e.to_string())
    };
    assert!(lib("scope = \"line-start\"\nprotocol = \"msnp\"\ntext = \"VER \"").is_ok());
    assert!(lib("scope = \"anywhere\"\nprotocol = \"msnp\"\ntext = \"x-msmsgs\"").is_ok());
    assert!(lib("scope = \"stream-start\"\nprotocol = \"oicq\"\nhex = \"02\"").is_ok());
    assert!(lib("scope = \"stream-start\"\nprotocol = \"utp\"\nhex = \"??\"").is_ok());
    let refused = [
        (
            "scope = \"http-target\"\nprotocol = \"msnp\"\ntext = \"VER \"",
            "does not go with",
        ),
        (
            "scope = \"line-start\"\nprotocol = \"oicq\"\ntext = \"VER \"",
            "does not go with",
        ),
        (
            "scope = \"stream-start\"\nprotocol = \"msn\"\ntext = \"VER \"",
            "unknown protocol",
        ),
    ];
    for (sig, why) in refused {
        let e = lib(sig).unwrap_err();
        assert!(e.contains(why) && e.contains("rules/t.toml:3"), "{e}");
    }
}

#[test]
fn a_connect_tunnel_is_not_a_foreign_protocol() {
    let e = all_apps(EngineConfig::default());
    let script: &[(bool, &[u8])] = &[
        (
            true,
            b"CONNECT messenger.hotmail.com:1863 HTTP/1.1\r\nHost: messenger.hotmail.com:1863\r\n\r\n",
        ),
        (false, b"HTTP/1.1 200 Connection established\r\n\r\n"),
        (true, b"VER 1 MSNP8 CVR0\r\n"),
        (false, b"VER 1 MSNP8 CVR0\r\n"),
        (
            true,
            b"CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS alice@hotmail.com\r\n",
        ),
    ];
    // The CONNECT's destination port is Messenger's: blocked right there.
    let got = script_verdict(&e, 3128, script, 1460);
    assert_eq!(got.as_deref(), Some("port"));
    // To a port of no app, MSNP inside the tunnel is still read as MSNP.
    let mut other = script.to_vec();
    other[0].1 = b"CONNECT messenger.hotmail.com:443 HTTP/1.1\r\nHost: messenger.hotmail.com:443\r\n\r\n";
    let got = script_verdict(&e, 3128, &other, 1460);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("msn/msnp-")),
        "{got:?}"
    );
}

#[test]
fn the_msnp_reader_costs_its_line_buffer_and_a_few_bytes() {
    // Two per connection, inline: keep the per-connection memory in view.
    let size = std::mem::size_of::<crate::engine::msnp::MsnpDir>();
    assert!(size <= crate::engine::msnp::LINE_MAX + 16, "{size}");
}
