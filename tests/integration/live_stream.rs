//! Live tests of stream inspection and of imported Squid rules: real
//! clients through a lab gateway running `appwall run` (root).

use std::net::SocketAddr;
use std::time::Duration;

use appwall::lab::{self, Lab, Outcome};

use crate::support::LAB;
use crate::support::exe;
use crate::support::lab::{stop, with_lab};

cases![
    live_one_byte_segments_cannot_hide_the_gateway_request: LAB,
    live_imported_squid_rules_block_what_squid_denies: LAB,
];

/// Sends `argv[3]` one byte per TCP segment (TCP_NODELAY, a pause between
/// sends), then prints what came back: ANSWER, CLOSED or BLOCKED.
const PY_DRIP: &str = r#"
import socket, sys, time
data = sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        s.send(data[i:i+1])
        time.sleep(0.003)
    d = s.recv(4096)
    print("ANSWER" if d else "CLOSED", len(d))
except Exception as e:
    print("BLOCKED", type(e).__name__)
"#;

fn drip(lab: &Lab, request: &str) -> String {
    let o = lab
        .exec(
            &lab.client,
            "python3",
            &["-c", PY_DRIP, lab::SERVER4, "80", request],
            Duration::from_secs(20),
        )
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn live_one_byte_segments_cannot_hide_the_gateway_request() {
    with_lab(|lab| {
        let hosts = lab.dir().join("hosts");
        std::fs::write(&hosts, "192.0.2.10 msn\n").unwrap();
        let mut f = lab.start(&hosts, &["--reset"], "drip");
        let msn = "POST /gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\\r\\n\
               Host: 198.51.100.10\\r\\nContent-Type: application/x-msn-messenger\\r\\nContent-Length: 0\\r\\n\\r\\n";
        let benign = "GET /index.html?ref=msn HTTP/1.1\\r\\nHost: 198.51.100.10\\r\\nUser-Agent: Mozilla/5.0\\r\\n\\r\\n";
        let got = drip(lab, benign);
        assert!(
            got.starts_with("ANSWER"),
            "benign request sent byte by byte: {got}\n{}",
            f.log_text()
        );
        let got = drip(lab, msn);
        assert!(
            !got.starts_with("ANSWER"),
            "tunnelled MSN sent byte by byte passed: {got}"
        );
        let events = f.events();
        assert!(
            events.iter().any(|e| e["alert"]["signature_id"] == "gateway-dll"
                || e["alert"]["signature_id"] == "gateway-content-type"),
            "no event for the blocked request: {events:?}"
        );
        stop(&mut f);
    });
}

const SQUID: &str = "acl msnd dstdomain .messenger.hotmail.com messenger.msn.com\n\
                     acl msn url_regex -i gateway\\.dll\n\
                     http_access deny msnd\n\
                     http_access deny msn\n";

fn live_imported_squid_rules_block_what_squid_denies() {
    with_lab(|lab| {
        let conf = lab.dir().join("squid.conf");
        std::fs::write(&conf, SQUID).unwrap();
        let rules = lab.dir().join("rules");
        std::fs::create_dir(&rules).unwrap();
        let out = std::process::Command::new(exe())
            .args(["import-squid", conf.to_str().unwrap(), "-o"])
            .arg(rules.join("site.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let hosts = lab.dir().join("hosts");
        // Only the imported app: what Squid denies, nothing else.
        std::fs::write(&hosts, "192.0.2.10 site\n").unwrap();
        let mut f = lab.start(&hosts, &["--rules", rules.to_str().unwrap()], "squid");
        let curl = |args: &[&str]| {
            let mut a = vec!["-sS", "--max-time", "4", "-o", "/dev/null", "-w", "%{http_code}"];
            a.extend_from_slice(args);
            let o = lab
                .exec(&lab.client, "curl", &a, Duration::from_secs(10))
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        // Denied by dstdomain (Host header) and by url_regex.
        assert_ne!(
            curl(&[
                "-H",
                "Host: gateway.messenger.hotmail.com",
                "http://198.51.100.10/"
            ]),
            "200"
        );
        assert_ne!(
            curl(&["http://198.51.100.10/gateway/GATEWAY.DLL?Action=poll"]),
            "200"
        );
        // Allowed: other hosts and paths.
        assert_eq!(
            curl(&[
                "-H",
                "Host: www.example.com",
                "http://198.51.100.10/news/msn.html"
            ]),
            "200"
        );
        // dstdomain also holds on 443 without a proxy: the TLS server name.
        let dst: SocketAddr = format!("{}:443", lab::SERVER4).parse().unwrap();
        let hello = appwall::sample::tls_client_hello("chat.messenger.hotmail.com");
        let (o, _) = lab::tcp_exchange(&lab.client, dst, &hello, hello.len(), Duration::from_secs(3));
        assert!(!o.passed(), "ClientHello for a denied domain passed: {o:?}");
        let hello = appwall::sample::tls_client_hello("www.example.com");
        let (o, _) = lab::tcp_exchange(&lab.client, dst, &hello, hello.len(), Duration::from_secs(3));
        assert!(
            matches!(o, Outcome::Answered(_)),
            "ClientHello for an allowed domain: {o:?}"
        );
        let reasons: Vec<String> = f
            .events()
            .iter()
            .map(|e| e["alert"]["reason"].to_string() + &e["alert"]["signature_id"].to_string())
            .collect();
        assert!(reasons.iter().any(|r| r.contains("squid-line-3")), "{reasons:?}");
        stop(&mut f);
    });
}
