//! Acceptance on the real shared captures (`APPWALL_CAPTURES`, by default
//! ../shared/captures): the ground truth in flows.tsv, flow by flow.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::{Need, captures_dir, run};

cases![
    every_flow_matches_the_ground_truth: &[Need::Captures],
    signatures_alone_catch_every_chat_flow_with_payload_evidence: &[Need::Captures],
    false_positive_trap_stays_clean_even_when_inspected_to_the_end: &[Need::Captures],
];

/// (file, proto, endpoint a, endpoint b) -> (expected verdict text, app text)
type Truth = HashMap<(String, String, String, String), (String, String)>;

fn truth(dir: &std::path::Path) -> Truth {
    let tsv = std::fs::read_to_string(dir.join("flows.tsv")).unwrap();
    let mut t = Truth::new();
    for line in tsv.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (a, b) = if f[2] <= f[3] { (f[2], f[3]) } else { (f[3], f[2]) };
        t.insert(
            (
                f[0].to_string(),
                f[1].to_lowercase(),
                a.to_string(),
                b.to_string(),
            ),
            (f[7].to_string(), f[6].to_string()),
        );
    }
    t
}

/// The app appwall should name for a ground-truth app description.
fn app_of(desc: &str) -> Option<&'static str> {
    if desc.contains("QQ") {
        // Before AIM/ICQ: "QQ/OICQ" contains "ICQ".
        Some("qq")
    } else if desc.contains("MSN") {
        Some("msn")
    } else if desc.contains("AIM") || desc.contains("ICQ") {
        Some("aim")
    } else if desc.contains("XMPP") || desc.contains("5223") {
        Some("xmpp")
    } else if desc.contains("IRC") {
        Some("irc")
    } else {
        None
    }
}

fn scan_all(dir: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(
        files.len() >= 19,
        "expected the 19 shared captures, found {}",
        files.len()
    );
    let mut args = vec!["scan", "--json"];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "scan failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|v| v["event_type"] == "flow")
        .collect()
}

fn key(v: &Value) -> (String, String, String, String) {
    let file = std::path::Path::new(v["file"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ep = |a: &str, p: &str| format!("{}:{}", v[a].as_str().unwrap(), v[p].as_u64().unwrap());
    let (x, y) = (ep("src_ip", "src_port"), ep("dest_ip", "dest_port"));
    let (a, b) = if x <= y { (x, y) } else { (y, x) };
    (file, v["proto"].as_str().unwrap().to_lowercase(), a, b)
}

/// "block" or "allow", from a flow line's alert object.
fn verdict_of(v: &Value) -> &'static str {
    if v["alert"]["action"] == "blocked" {
        "block"
    } else {
        "allow"
    }
}

fn every_flow_matches_the_ground_truth() {
    let dir = captures_dir();
    let truth = truth(&dir);
    let flows = scan_all(&dir, &[]);
    for k in [
        "timestamp",
        "file",
        "flow_id",
        "proto",
        "src_ip",
        "src_port",
        "dest_ip",
        "dest_port",
        "app_proto",
        "community_id",
        "flow",
        "alert",
    ] {
        assert!(flows[0].get(k).is_some(), "JSON key {k} missing: {}", flows[0]);
    }
    assert_eq!(flows.len(), truth.len(), "one scan flow per ground-truth flow");
    let mut checked = 0;
    for v in &flows {
        let k = key(v);
        let (expected, desc) = truth
            .get(&k)
            .unwrap_or_else(|| panic!("flow not in flows.tsv: {v}"));
        let verdict = verdict_of(v);
        match expected.as_str() {
            "allow" => assert_eq!(verdict, "allow", "benign flow blocked: {v}"),
            // Binary frames (type, 2-byte length) of a push service on 5223,
            // not XMPP: 5223 is no port rule any more (docs/precision.md).
            "block only by port 5223 rule" => assert_eq!(verdict, "allow", "5223 push flow blocked: {v}"),
            "block" => {
                assert_eq!(verdict, "block", "chat flow allowed: {v}");
                assert_eq!(v["app_proto"].as_str(), app_of(desc), "wrong app: {v}");
            }
            // Real TLS that only an IP list could catch: exempt.
            _ => {}
        }
        checked += 1;
    }
    assert_eq!(checked, truth.len());
}

fn signatures_alone_catch_every_chat_flow_with_payload_evidence() {
    let dir = captures_dir();
    let truth = truth(&dir);
    let flows = scan_all(&dir, &["--signatures-only"]);
    for v in &flows {
        let (expected, desc) = &truth[&key(v)];
        let verdict = verdict_of(v);
        let app = app_of(desc);
        // Only flows that need an IP list (real TLS) are exempt.
        let port_only = expected != "block";
        if expected == "allow" {
            assert_eq!(verdict, "allow", "benign flow blocked by a signature: {v}");
        } else if !port_only {
            assert_eq!(verdict, "block", "signatures missed a chat flow: {v}");
            assert!(
                v["alert"]["reason"].as_str().unwrap().starts_with("signature"),
                "{v}"
            );
            assert_eq!(v["alert"]["category"], "signature", "{v}");
            assert_eq!(v["app_proto"].as_str(), app, "{v}");
            if app == Some("msn") {
                // Native MSNP is found by the grammar-checked command signatures.
                let sig = v["alert"]["signature_id"].as_str().unwrap_or("");
                assert!(sig.starts_with("msnp-"), "{v}");
            }
        }
    }
}

fn false_positive_trap_stays_clean_even_when_inspected_to_the_end() {
    let dir = captures_dir();
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("benign_") || name.starts_with("fp_") {
            files.push(p.display().to_string());
        }
    }
    assert_eq!(files.len(), 10, "nine benign captures and the PostgreSQL trap");
    let mut args = vec![
        "scan",
        "--json",
        "--depth-bytes",
        "1000000000",
        "--depth-packets",
        "1000000000",
    ];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let blocked: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"action\":\"blocked\""))
        .collect();
    assert!(
        blocked.is_empty(),
        "benign flows blocked with unlimited depth:\n{}",
        blocked.join("\n")
    );
    // The trap's capture is cut short in its last packet: reported, not fatal.
    assert!(
        err.contains("fp_pgsql_rows_contain_msn_rule_text_suricata.pcap"),
        "{err}"
    );
    assert!(err.contains("after 785 packets"), "{err}");
}
