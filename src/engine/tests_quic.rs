//! QUIC through the engine: the server name of a client's Initials judged
//! like a TLS server name, the per-app QUIC and ECH policies, and address
//! lists judged at connection set-up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::engine::hello::build::{client_hello, unhex};
use crate::engine::quic::Version;
use crate::engine::quic::crypto::InitialKeys;
use crate::engine::quic::packet::PacketType;
use crate::engine::{Connection, Engine, EngineConfig, Reason, Verdict};
use crate::flow::Flow;
use crate::packet::PacketView;
use crate::policy::{AppLibrary, HostsFile, Policy};
use crate::sample::udp_packet;

const ONE: &str = include_str!("quic/testdata/aioquic_v1.hex");
const ONE_V2: &str = include_str!("quic/testdata/aioquic_v2.hex");
const SPLIT: &str = include_str!("quic/testdata/aioquic_v1_split.hex");

fn datagrams(text: &str) -> Vec<Vec<u8>> {
    text.lines().filter(|l| !l.is_empty()).map(unhex).collect()
}

/// An engine whose only app `site` matches `domains` by name, with `quic`.
fn engine(domains: &str, quic: &str) -> Engine {
    engine_of(&format!(
        "{quic}\n[[rule]]\nid = \"names\"\nmatch = [{{ field = \"host\", domains = [{domains}] }}]\n"
    ))
}

/// An engine whose only app `site` (listed for 192.0.2.10) has `body`.
fn engine_of(body: &str) -> Engine {
    engine_config(body, EngineConfig::default())
}

fn engine_config(body: &str, config: EngineConfig) -> Engine {
    let app = format!("name = \"site\"\ndescription = \"test\"\n{body}");
    let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), app)]).unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 site\n2001:db8:1::10 site\n").unwrap();
    Engine::new(Policy::new(lib, &hosts, None).unwrap(), config).unwrap()
}

/// Verdicts of the client's datagrams, in order, on one flow.
fn judge(e: &Engine, client: &str, payloads: &[Vec<u8>]) -> Vec<(Verdict, Reason)> {
    judge_to(e, client, "198.51.100.1", payloads).0
}

/// [`judge`] to `server`; also whether the flow noted ECH.
fn judge_to(e: &Engine, client: &str, server: &str, payloads: &[Vec<u8>]) -> (Vec<(Verdict, Reason)>, bool) {
    let c: IpAddr = client.parse().unwrap();
    let s: IpAddr = server.parse().unwrap();
    let packets: Vec<Vec<u8>> = payloads
        .iter()
        .map(|d| udp_packet((c, 50000), (s, 443), d))
        .collect();
    let mut conn: Option<Connection> = None;
    let v = packets
        .iter()
        .map(|b| {
            let p = PacketView::from_ip(b).unwrap();
            let conn = conn.get_or_insert_with(|| Flow::new(1, &p, 0));
            let d = e.judge(&p, conn);
            (d.verdict, d.reason)
        })
        .collect();
    (v, conn.is_some_and(|c| c.state.ech))
}

/// One 1200-byte client Initial (version 1) carrying `hello` whole.
fn initial_with(hello: &[u8]) -> Vec<u8> {
    let dcid = [0x5a; 8];
    let mut frame = vec![0x06, 0x00];
    let len = u16::try_from(hello.len()).unwrap();
    assert!(len < 0x4000);
    frame.extend_from_slice(&(0x4000 | len).to_be_bytes());
    frame.extend_from_slice(hello);
    let mut h = vec![0xc1 | Version::V1.type_bits(PacketType::Initial)];
    h.extend_from_slice(&Version::V1.wire().to_be_bytes());
    h.push(8);
    h.extend_from_slice(&dcid);
    h.extend_from_slice(&[0, 0]); // no source ID, no token
    let overhead = h.len() + 2 + 2 + 16;
    frame.resize(1200 - overhead, 0);
    h.extend_from_slice(&(0x4000 | u16::try_from(2 + frame.len() + 16).unwrap()).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    InitialKeys::client(Version::V1, &dcid).seal(&h, 0, &frame)
}

#[test]
fn quic_server_names_are_judged_like_tls_ones() {
    // aioquic's client names quic.example.org.
    for text in [ONE, ONE_V2] {
        let blocked = judge(&engine("\".example.org\"", ""), "192.0.2.10", &datagrams(text));
        assert_eq!(blocked[0].0, Verdict::Drop, "{blocked:?}");
        assert!(matches!(blocked[0].1, Reason::Rule(_)), "{blocked:?}");
        let other = judge(&engine("\".example.net\"", ""), "192.0.2.10", &datagrams(text));
        assert_eq!(other[0].0, Verdict::Accept, "another name passes: {other:?}");
    }
}

#[test]
fn a_quic_rule_block_keeps_the_server_name() {
    let e = engine("\".example.org\"", "");
    let c: IpAddr = "192.0.2.10".parse().unwrap();
    let s: IpAddr = "198.51.100.1".parse().unwrap();
    let mut conn: Option<Connection> = None;
    for d in datagrams(ONE) {
        let b = udp_packet((c, 50000), (s, 443), &d);
        let p = PacketView::from_ip(&b).unwrap();
        let conn = conn.get_or_insert_with(|| Flow::new(1, &p, 0));
        e.judge(&p, conn);
    }
    let m = conn
        .unwrap()
        .state
        .matched_request()
        .cloned()
        .expect("blocked by the rule");
    assert_eq!(m.host.map(|h| h.text).as_deref(), Some("quic.example.org"));
    assert!(m.url.is_none());
}

#[test]
fn a_hello_over_three_initials_is_judged_on_the_last() {
    let d = datagrams(SPLIT);
    assert_eq!(d.len(), 3);
    let v = judge(&engine("\".example.org\"", ""), "192.0.2.10", &d);
    assert_eq!(v[0].0, Verdict::Accept);
    assert_eq!(v[1].0, Verdict::Accept);
    assert_eq!(v[2].0, Verdict::Drop, "{v:?}");
    // Arriving in reverse order changes nothing but which datagram completes it.
    let mut r = d.clone();
    r.reverse();
    let v = judge(&engine("\".example.org\"", ""), "192.0.2.10", &r);
    assert!(v.iter().any(|x| x.0 == Verdict::Drop), "{v:?}");
}

#[test]
fn quic_policy_block_allow_and_unlisted_hosts() {
    let d = datagrams(ONE);
    // block: every QUIC attempt of the app's hosts, whatever the name.
    let v = judge(&engine("\".example.net\"", "quic = \"block\""), "192.0.2.10", &d);
    assert_eq!(v[0].0, Verdict::Drop);
    assert!(matches!(v[0].1, Reason::QuicBlocked { app: 0 }), "{v:?}");
    // allow: the app's names are not judged on QUIC.
    let v = judge(&engine("\".example.org\"", "quic = \"allow\""), "192.0.2.10", &d);
    assert_eq!(v[0].0, Verdict::Accept, "{v:?}");
    // A host that is not listed is untouched.
    let v = judge(&engine("\".example.org\"", "quic = \"block\""), "203.0.113.9", &d);
    assert_eq!(v[0], (Verdict::Accept, Reason::NotListed));
}

#[test]
fn other_udp_is_not_taken_for_quic() {
    let dns =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04quic\x07example\x03org\x00\x00\x01\x00\x01"
            .to_vec();
    let v = judge(
        &engine("\".example.org\"", "quic = \"block\""),
        "192.0.2.10",
        &[dns.clone(), dns],
    );
    assert!(v.iter().all(|x| x.0 == Verdict::Accept), "{v:?}");
    // Garbage shaped like a long header never blocks on its own.
    let mut junk = vec![0xc0, 0, 0, 0, 1];
    junk.resize(1200, 0xab);
    let v = judge(&engine("\".example.org\"", ""), "192.0.2.10", &[junk]);
    assert_eq!(v[0].0, Verdict::Accept, "{v:?}");
}

#[test]
fn ech_is_noted_and_blocked_where_the_app_says_so() {
    let with = initial_with(&client_hello(Some("public.example"), &["h3"], true, 0));
    let without = initial_with(&client_hello(Some("public.example"), &["h3"], false, 0));
    let rules = "[[rule]]\nid = \"names\"\nmatch = [{ field = \"host\", domains = [\".chat.example\"] }]\n";
    // Default (allow): judged by the outer name, ECH noted on the connection.
    let e = engine_of(rules);
    let (v, ech) = judge_to(&e, "192.0.2.10", "198.51.100.1", std::slice::from_ref(&with));
    assert_eq!(v[0].0, Verdict::Accept, "{v:?}");
    assert!(ech, "ECH is noted for the statistics");
    let (_, ech) = judge_to(&e, "192.0.2.10", "198.51.100.1", std::slice::from_ref(&without));
    assert!(!ech);
    // block: refused, the reason names the app; a hello without ECH passes.
    let e = engine_of(&format!("ech = \"block\"\n{rules}"));
    let (v, _) = judge_to(&e, "192.0.2.10", "198.51.100.1", std::slice::from_ref(&with));
    assert_eq!(v[0].0, Verdict::Drop, "{v:?}");
    assert_eq!(v[0].1, Reason::Ech { app: 0 });
    assert!(
        e.reason_text(&v[0].1).contains("app site"),
        "{}",
        e.reason_text(&v[0].1)
    );
    assert_eq!(e.reason_app(&v[0].1), Some("site"));
    let (v, _) = judge_to(&e, "192.0.2.10", "198.51.100.1", std::slice::from_ref(&without));
    assert_eq!(v[0].0, Verdict::Accept, "{v:?}");
    // Hosts not listed with the app are untouched.
    let (v, _) = judge_to(&e, "203.0.113.9", "198.51.100.1", std::slice::from_ref(&with));
    assert_eq!(v[0], (Verdict::Accept, Reason::NotListed));
    // An app with nothing but `ech = "block"` is inspected on its own.
    let e = engine_of("ech = \"block\"\n");
    assert_ne!(e.inspected_apps(), 0);
    let (v, _) = judge_to(&e, "192.0.2.10", "198.51.100.1", &[with]);
    assert_eq!(v[0].1, Reason::Ech { app: 0 }, "{v:?}");
}

#[test]
fn a_quic_block_app_without_rules_is_inspected() {
    let e = engine_of("quic = \"block\"\n");
    let v = judge(&e, "192.0.2.10", &datagrams(ONE));
    assert!(matches!(v[0].1, Reason::QuicBlocked { app: 0 }), "{v:?}");
}

#[test]
fn address_lists_block_the_listed_opener_at_set_up() {
    let body = "addresses = [\"198.51.100.0/24\", \"2001:db8:2::/48\"]\n";
    let e = engine_of(body);
    let dns = b"\x12\x34\x01\x00\x00\x01".to_vec();
    // (opener, destination, blocked)
    let table = [
        ("192.0.2.10", "198.51.100.1", true),
        ("192.0.2.10", "203.0.113.1", false),
        ("203.0.113.9", "198.51.100.1", false),
        ("2001:db8:1::10", "2001:db8:2::10", true),
        ("2001:db8:1::10", "2001:db8:3::10", false),
        // The listed host as destination: the list is about what it opens.
        ("198.51.100.1", "192.0.2.10", false),
    ];
    for (c, s, blocked) in table {
        let (v, _) = judge_to(&e, c, s, std::slice::from_ref(&dns));
        assert_eq!(v[0].0 == Verdict::Drop, blocked, "{c} -> {s}: {v:?}");
        if blocked {
            assert!(matches!(v[0].1, Reason::Address { app: 0, .. }), "{v:?}");
            let text = e.reason_text(&v[0].1);
            assert!(
                text.starts_with("address ") && text.ends_with(" of app site"),
                "{text}"
            );
            assert_eq!(v[0].1.kind(), "address");
        }
    }
    let (v, _) = judge_to(&e, "192.0.2.10", "198.51.100.1", std::slice::from_ref(&dns));
    assert_eq!(e.reason_text(&v[0].1), "address 198.51.100.0/24 of app site");
    // TCP is judged the same way on its SYN.
    let c: IpAddr = "192.0.2.10".parse().unwrap();
    let syn =
        crate::sample::TcpFlowBuilder::new((c, 40000), ("198.51.100.7".parse().unwrap(), 443)).packets(&[]);
    let p = PacketView::from_ip(&syn[0]).unwrap();
    let mut conn = Flow::new(1, &p, 0);
    assert_eq!(e.judge(&p, &mut conn).verdict, Verdict::Drop);
    // Signatures-only judging (no fast-path rules) leaves addresses alone.
    let off = EngineConfig {
        port_rules: false,
        ..EngineConfig::default()
    };
    let e = engine_config(body, off);
    let (v, _) = judge_to(&e, "192.0.2.10", "198.51.100.1", &[dns]);
    assert_eq!(v[0].0, Verdict::Accept, "{v:?}");
}
