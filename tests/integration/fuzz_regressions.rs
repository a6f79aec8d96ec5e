//! Regression tests for what the fuzz targets in `fuzz/` found, replayed
//! through the public API so they run with every `cargo test`.

use std::path::Path;

use appwall::engine::{ConnState, Engine, EngineConfig};
use appwall::flow::FlowTable;
use appwall::packet::PacketView;
use appwall::policy::{AppLibrary, HostsFile, Policy};
use etherparse::PacketBuilder;

cases![
    reorder_buffer_stays_within_its_bound,
    squid_src_values_become_valid_hosts_lines_or_notes,
    squid_header_names_are_checked_before_the_rule_file,
];

fn engine(config: EngineConfig) -> Engine {
    let hosts = HostsFile::parse(Path::new("hosts"), "0.0.0.0/0 all\n").unwrap();
    let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
    Engine::new(policy, config).unwrap()
}

fn segment(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 80], 64).tcp(40000, 8000, seq, 64_240);
    if syn {
        b = b.syn();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Found by `stream_engine` ("reorder buffer over its bound"): when a segment
/// ahead of a gap found the buffer full, the stream skipped only to the
/// earliest held segment and then held the new one anyway. With small held
/// segments separated by gaps, every big segment grew the buffer: held bytes
/// were bounded by the sequence window, not by `reorder_bytes`.
fn reorder_buffer_stays_within_its_bound() {
    let bound = 600;
    let e = engine(EngineConfig {
        reorder_bytes: bound,
        port_rules: false,
        ..EngineConfig::default()
    });
    let mut table = FlowTable::new(16, u64::MAX);
    let mut now = 0;
    let mut send = |table: &mut FlowTable<ConnState>, seq: u32, syn: bool, payload: &[u8]| {
        now += 1;
        let p = segment(seq, syn, payload);
        let v = PacketView::from_ip(&p).unwrap();
        let flow = table.get_or_insert(&v, now);
        e.judge(&v, flow);
        flow.state.dirs[0].reorder.as_ref().map_or(0, |r| r.bytes)
    };
    // Data starts at 1; every segment below lies ahead of a gap.
    send(&mut table, 0, true, b"");
    // 1-byte segments with one-byte gaps between them fill part of the buffer.
    for i in 0..100u32 {
        send(&mut table, 3 + 2 * i, false, b"x");
    }
    // Then big segments far ahead, each finding the buffer full.
    let big = vec![b'y'; 500];
    let mut most = 0;
    for i in 0..100u32 {
        let held = send(&mut table, 1_000_000 + 1000 * i, false, &big);
        most = most.max(held);
    }
    assert!(most <= bound, "held {most} bytes, bound {bound}");
}

/// Found by `squid_import` ("suggested hosts lines do not parse"): a `src`
/// ACL value was copied verbatim into the suggested hosts lines, so a typo,
/// Squid's `a-b` range or its netmask form gave lines the hosts file refuses.
/// Such a deny line is now reported as not translated instead; ranges and
/// netmasks (Squid syntax) are turned into CIDR networks.
fn squid_src_values_become_valid_hosts_lines_or_notes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    for (squid, hosts) in [
        ("192.0.2.1-192.0.2.3", &["192.0.2.1", "192.0.2.2/31"][..]),
        ("10.0.0.0/255.0.0.0", &["10.0.0.0/8"][..]),
        ("192.0.2.1/24", &["192.0.2.0/24"][..]),
    ] {
        let text =
            format!("acl msn url_regex gateway.dll\nacl office src {squid}\nhttp_access deny msn office\n");
        std::fs::write(&conf, text).unwrap();
        let imp = appwall::policy::squid::import(&conf, "site").unwrap();
        assert_eq!(imp.translated, 1, "{squid}");
        let want: Vec<String> = hosts.iter().map(|h| format!("{h} site")).collect();
        assert_eq!(imp.hosts, want, "{squid}");
        HostsFile::parse(Path::new("hosts"), &imp.hosts.join("\n")).unwrap();
    }
    for bad in ["192./.2.0/24", "10.0.0.0/255.0.255.0", "office.example"] {
        let text = format!(
            "acl msn url_regex gateway.dll\nacl office src 192.0.2.0/24 {bad}\nhttp_access deny msn office\n"
        );
        std::fs::write(&conf, text).unwrap();
        let imp = appwall::policy::squid::import(&conf, "site").unwrap();
        assert_eq!(imp.translated, 0, "{bad}");
        assert!(imp.hosts.is_empty(), "{bad}: {:?}", imp.hosts);
        assert!(
            imp.notes.iter().any(|n| n.line == 3 && n.message.contains(bad)),
            "{bad}: {:?}",
            imp.notes
        );
    }
    std::fs::write(
        &conf,
        "acl msn url_regex gateway.dll\nacl office src 192.0.2.0/24 2001:db8::1\nhttp_access deny msn office\n",
    )
    .unwrap();
    let imp = appwall::policy::squid::import(&conf, "site").unwrap();
    assert_eq!(imp.translated, 1);
    HostsFile::parse(Path::new("hosts"), &imp.hosts.join("\n")).unwrap();
    assert_eq!(imp.hosts.len(), 2);
}

/// Found by `squid_import` ("imported rule file does not load"): a
/// `req_header`/`rep_header` ACL's header name went into the rule file
/// unchecked, so `Us/er-Agent` made `import-squid` fail as a whole with an
/// error about its own output. Such a deny line is now reported as not
/// translated, and the rest of the file still imports.
fn squid_header_names_are_checked_before_the_rule_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    std::fs::write(
        &conf,
        "acl s ssl::server_name .live.com\nacl h req_header Us/er-Agent -i msmsgs\n\
         acl r rep_header X-MSN:Messenger .\nhttp_access deny s\nhttp_access deny h\nhttp_reply_access deny r\n",
    )
    .unwrap();
    let imp = appwall::policy::squid::import(&conf, "site").unwrap();
    assert_eq!(imp.translated, 1);
    for (line, name) in [(5, "Us/er-Agent"), (6, "X-MSN:Messenger")] {
        assert!(
            imp.notes
                .iter()
                .any(|n| n.line == line && n.message.contains(name)),
            "{name}: {:?}",
            imp.notes
        );
    }
    AppLibrary::from_texts(&[(Path::new("rules/site.toml").to_path_buf(), imp.toml)]).unwrap();
}
