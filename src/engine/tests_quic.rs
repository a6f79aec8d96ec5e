//! QUIC through the engine: the server name of a client's Initials judged
//! like a TLS server name, and the per-app QUIC policy.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::engine::hello::build::unhex;
use crate::engine::{Connection, Engine, EngineConfig, Reason, Verdict};
use crate::flow::Flow;
use crate::packet::PacketView;
use crate::policy::{HostsFile, Policy, RuleLibrary};
use crate::sample::udp_packet;

const ONE: &str = include_str!("quic/testdata/aioquic_v1.hex");
const ONE_V2: &str = include_str!("quic/testdata/aioquic_v2.hex");
const SPLIT: &str = include_str!("quic/testdata/aioquic_v1_split.hex");

fn datagrams(text: &str) -> Vec<Vec<u8>> {
    text.lines().filter(|l| !l.is_empty()).map(unhex).collect()
}

/// An engine whose only app `site` matches `domains` by name, with `quic`.
fn engine(domains: &str, quic: &str) -> Engine {
    let app = format!(
        "name = \"site\"\ndescription = \"test\"\n{quic}\n[[rule]]\nid = \"names\"\nmatch = [{{ field = \"host\", domains = [{domains}] }}]\n"
    );
    let lib = RuleLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), app)]).unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 site\n").unwrap();
    Engine::new(Policy::new(lib, &hosts, None).unwrap(), EngineConfig::default()).unwrap()
}

/// Verdicts of the client's datagrams, in order, on one flow.
fn judge(e: &Engine, client: &str, payloads: &[Vec<u8>]) -> Vec<(Verdict, Reason)> {
    let c: IpAddr = client.parse().unwrap();
    let s: IpAddr = "198.51.100.1".parse().unwrap();
    let packets: Vec<Vec<u8>> = payloads
        .iter()
        .map(|d| udp_packet((c, 50000), (s, 443), d))
        .collect();
    let mut conn: Option<Connection> = None;
    packets
        .iter()
        .map(|b| {
            let p = PacketView::from_ip(b).unwrap();
            let conn = conn.get_or_insert_with(|| Flow::new(1, &p, 0));
            let d = e.judge(&p, conn);
            (d.verdict, d.reason)
        })
        .collect()
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
