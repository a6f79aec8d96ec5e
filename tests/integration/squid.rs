//! `appwall import-squid` end to end: a squid.conf becomes a rule file, and
//! generated traffic scanned through it is judged as Squid would; hostile
//! values in a squid.conf never reach the kernel rules. No lab needed.

use std::net::IpAddr;

use appwall::sample::TcpFlowBuilder;
use appwall::source::capture::write_pcap;
use serde_json::Value;

use crate::support::{appwall, run};

cases![
    imported_rules_judge_traffic_like_squid,
    imported_first_match_src_and_exceptions_judge_like_squid,
    import_reports_unreadable_input,
    injection_squid_values_never_reach_iptables,
];

const SQUID_CONF: &str = "\
# Block Messenger for everyone behind the proxy
acl msn url_regex -i gateway.dll
acl msnd dstdomain messenger.msn.com gateway.messenger.hotmail.com
acl msn1 req_mime_type ^application/x-msn-messenger$
acl Skype_UA browser ^skype
acl SSL_ports port 443
acl CONNECT method CONNECT
acl auth proxy_auth REQUIRED
http_access deny msnd
http_access deny msn
http_access deny msn1
http_access deny Skype_UA
http_access deny CONNECT !SSL_ports
http_access allow auth
";

/// `appwall scan --json` of `frames` (written as a pcap in `dir`) with
/// `hosts` and the library `rules`: its output and its flow lines.
fn scan_flows(
    dir: &std::path::Path,
    frames: &[(u64, Vec<u8>)],
    hosts: &str,
    rules: &std::path::Path,
) -> (String, Vec<Value>) {
    let pcap = dir.join("traffic.pcap");
    write_pcap(&mut std::fs::File::create(&pcap).unwrap(), frames).unwrap();
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, hosts).unwrap();
    let (code, out, err) = run(&[
        "scan",
        "--json",
        "--hosts",
        hosts_file.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        pcap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let flows = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event_type"] == "flow")
        .collect();
    (out, flows)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn imported_rules_judge_traffic_like_squid() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    std::fs::write(&conf, SQUID_CONF).unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let out = rules.join("site.toml");
    let (code, _, err) = run(&[
        "import-squid",
        conf.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_out!(err.contains("translated 5 deny line(s)"), err);
    assert_out!(
        err.contains("squid.conf:14: not translated: `http_access allow auth`"),
        err
    );
    let toml = std::fs::read_to_string(&out).unwrap();
    assert_out!(
        toml.contains("why = \"squid.conf:9: http_access deny msnd\""),
        toml
    );

    // A request whose URL is longer than an event keeps (512 bytes).
    let long = format!(
        "GET /gateway.dll?{} HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "q=é".repeat(200)
    );
    // Traffic: (client port, server port, request, expected verdict by Squid's rules)
    let cases: Vec<(u16, &[u8], bool)> = vec![
        (80, b"POST /gateway/gateway.dll?Action=open HTTP/1.1\r\nHost: 198.51.100.80\r\n\r\n", true),
        (80, b"GET / HTTP/1.1\r\nHost: gateway.messenger.hotmail.com\r\n\r\n", true),
        (80, b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: 0\r\n\r\n", true),
        (80, b"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: skype/8.0\r\n\r\n", true),
        (80, b"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: Skype/8.0\r\n\r\n", false), // case-sensitive without -i
        (3128, b"CONNECT chat.example:5222 HTTP/1.1\r\nHost: chat.example:5222\r\n\r\n", true),
        (3128, b"CONNECT www.example:443 HTTP/1.1\r\nHost: www.example:443\r\n\r\n", false),
        (80, b"GET /news/msn.html HTTP/1.1\r\nHost: www.msn.com\r\nUser-Agent: Mozilla/5.0 (skype-compatible)\r\n\r\n", false),
        (80, b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/x-msn-messenger-like\r\nContent-Length: 0\r\n\r\n", false),
        (80, long.as_bytes(), true),
    ];
    // The host and URL each blocked request's event names (normalised).
    let matched = [
        Some((
            "198.51.100.80",
            "http://198.51.100.80/gateway/gateway.dll?Action=open",
        )),
        Some((
            "gateway.messenger.hotmail.com",
            "http://gateway.messenger.hotmail.com/",
        )),
        Some(("a.example", "http://a.example/x")),
        Some(("a.example", "http://a.example/")),
        None,
        Some(("chat.example", "chat.example:5222")),
        None,
        None,
        None,
        None,
    ];
    let mut frames = Vec::new();
    for (i, (port, req, _)) in cases.iter().enumerate() {
        // Cut every request into 5-byte segments: rules see whole heads.
        let mut b = TcpFlowBuilder::new((ip("192.0.2.10"), 41000 + i as u16), (ip("198.51.100.80"), *port));
        b.mss = 5;
        for p in b.packets(&[(true, req)]) {
            frames.push((1_000_000_000 * (i as u64 + 1) + frames.len() as u64, p));
        }
    }
    let (out, flows) = scan_flows(dir.path(), &frames, "192.0.2.0/24 site\n", &rules);
    assert_eq!(flows.len(), cases.len(), "{out}");
    for ((flow, (_, req, blocked)), want) in flows.iter().zip(&cases).zip(matched) {
        let got = flow["alert"]["action"] == "blocked";
        assert_eq!(got, *blocked, "{}\n{flow}", String::from_utf8_lossy(req));
        if let Some((host, url)) = want {
            assert_eq!(flow["alert"]["host"], host, "{flow}");
            assert_eq!(flow["alert"]["url"], url, "{flow}");
            assert!(flow["alert"].get("truncated").is_none(), "{flow}");
        } else if !got {
            assert!(flow["alert"].get("url").is_none(), "{flow}");
        }
        if got {
            assert_eq!(flow["app_proto"], "site", "{flow}");
            assert_eq!(flow["alert"]["category"], "rule", "{flow}");
            assert!(
                flow["alert"]["reason"].as_str().unwrap().contains("squid.conf:"),
                "{flow}"
            );
        }
    }
    // The long URL: its first 512 bytes at most, cut between characters
    // (`é` is two bytes), and marked.
    let cut = &flows[cases.len() - 1]["alert"];
    let url = cut["url"].as_str().unwrap();
    let prefix = "http://a.example/gateway.dll?";
    let query = url.strip_prefix(prefix).expect("the normalised URL");
    // A prefix of the query; 511 or 512 bytes in all, as `é` is two.
    assert!("q=é".repeat(200).starts_with(query), "{cut}");
    assert!(matches!(url.len(), 511 | 512), "{cut}");
    assert_eq!(cut["truncated"], true, "{cut}");
    assert_eq!(cut["host"], "a.example", "{cut}");
}

fn import_reports_unreadable_input() {
    let (code, _, err) = run(&["import-squid", "/nonexistent/squid.conf"]);
    assert_eq!(code, 2, "unreadable input is bad input");
    assert_out!(err.contains("/nonexistent/squid.conf: cannot read"), err);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    std::fs::write(&conf, "http_port 3128\nhttp_access allow all\n").unwrap();
    let (code, _, err) = run(&["import-squid", conf.to_str().unwrap()]);
    assert_eq!(code, 2, "a conf with nothing to translate is bad input");
    assert_out!(
        err.contains("no http_access/http_reply_access deny line could be translated"),
        err
    );
}

/// Hostile values in a squid.conf: port values are checked (only digits
/// reach iptables), everything else becomes userspace matching and never
/// reaches the kernel rules. Hosts and rule files: see `injection.rs`.
fn injection_squid_values_never_reach_iptables() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    std::fs::write(
        &conf,
        "acl ok port 5050\nacl p port 1863 -j ACCEPT\nacl q port 5050;reboot\nacl r port $(reboot)\n\
         acl d dstdomain .evil.example -j ACCEPT\nacl s src 192.0.2.1 -j ACCEPT\n\
         http_access deny ok\nhttp_access deny p\nhttp_access deny q\nhttp_access deny r\n\
         http_access deny d\nhttp_access deny s d\n",
    )
    .unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let out = appwall()
        .args(["import-squid", conf.to_str().unwrap(), "-o"])
        .arg(rules.join("site.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for line in [8, 9, 10, 12] {
        assert!(
            err.contains(&format!("squid.conf:{line}: not translated")),
            "{err}"
        );
    }
    let h = dir.path().join("hosts");
    std::fs::write(&h, "192.0.2.10 site\n2001:db8:1::10 site\n").unwrap();
    for format in ["restore", "commands", "ipset"] {
        let (code, text, err) = run(&[
            "rules",
            "--hosts",
            h.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--ipset-threshold",
            "0",
            "--format",
            format,
        ]);
        assert_eq!(code, 0, "{err}");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        for bad in ["reboot", "evil", "ACCEPT", "$(", ";"] {
            assert!(
                !body.contains(bad),
                "{format}: {bad:?} reached the rules:\n{text}"
            );
        }
        if format == "restore" {
            assert!(text.contains("--dports 5050 "), "the valid port is in:\n{text}");
        }
    }
}

/// First match, `src`, `!src` and exceptions, scanned (no lab): the same
/// request is judged by who sends it and by the allow lines before the deny.
fn imported_first_match_src_and_exceptions_judge_like_squid() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    std::fs::write(
        &conf,
        "acl boss src 192.0.2.7\nacl lan src 192.0.2.0/24\nacl admins src 203.0.113.0/24\n\
         acl gw url_regex -i gateway\\.dll\nacl news urlpath_regex ^/news/\nacl put method PUT\n\
         http_access allow boss\nhttp_access allow news\nhttp_access deny gw lan\n\
         http_access deny put !admins\nhttp_access allow all\n",
    )
    .unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let (code, _, err) = run(&[
        "import-squid",
        conf.to_str().unwrap(),
        "-o",
        rules.join("site.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // (client, request, blocked by Squid's first match)
    let gw: &[u8] = b"GET /gateway/gateway.dll HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let news: &[u8] = b"GET /news/gateway.dll HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let put: &[u8] = b"PUT /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\n\r\n";
    let cases: Vec<(&str, &[u8], bool)> = vec![
        ("192.0.2.10", gw, true),
        ("192.0.2.7", gw, false),    // allow boss comes first
        ("203.0.113.5", gw, false),  // not in lan
        ("192.0.2.10", news, false), // allow news comes first
        ("192.0.2.7", put, false),
        ("192.0.2.10", put, true),
        ("203.0.113.5", put, false), // !admins
        ("198.51.100.9", put, true),
    ];
    let mut frames = Vec::new();
    for (i, (src, req, _)) in cases.iter().enumerate() {
        let b = TcpFlowBuilder::new((ip(src), 42000 + i as u16), (ip("198.51.100.80"), 80));
        for p in b.packets(&[(true, req)]) {
            frames.push((1_000_000_000 * (i as u64 + 1) + frames.len() as u64, p));
        }
    }
    let (out, flows) = scan_flows(dir.path(), &frames, "0.0.0.0/0 site\n", &rules);
    assert_eq!(flows.len(), cases.len(), "{out}");
    for (flow, (src, req, blocked)) in flows.iter().zip(&cases) {
        assert_eq!(
            flow["alert"]["action"] == "blocked",
            *blocked,
            "{src} {}\n{flow}",
            String::from_utf8_lossy(req)
        );
    }
}
