//! The JSON Schemas in docs/schemas/ against real output: `scan --json`
//! lines, an event line and a status snapshot made by the library's own
//! code. The checker is a small one written here (the `jsonschema` crate
//! pulls in an HTTP client and a regex engine of its own for what four
//! files need): it knows the keywords these schemas use and refuses any
//! other, so a schema cannot silently say more than is checked; and it
//! treats fields an object's schema does not declare as errors, so the
//! schemas stay complete as the output grows.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::support::run;

cases![
    scan_lines_match_their_schemas,
    event_lines_match_their_schema,
    status_snapshots_match_their_schema,
    the_checker_catches_what_it_should,
];

fn schema(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// Errors of `v` against `s`, with JSON-pointer-like paths.
fn check(s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let obj = s.as_object().expect("a schema is an object");
    for k in obj.keys() {
        let known = [
            "$schema",
            "$id",
            "title",
            "description",
            "type",
            "const",
            "enum",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "minimum",
            "maximum",
            "pattern",
        ];
        assert!(
            known.contains(&k.as_str()),
            "{at}: keyword {k} is not checked here"
        );
    }
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => panic!("bad type"),
        };
        if !ok {
            errs.push(format!("{at}: {v} is not {t}"));
            return;
        }
    }
    if let Some(c) = obj.get("const")
        && c != v
    {
        errs.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = obj.get("enum")
        && !e.as_array().unwrap().contains(v)
    {
        errs.push(format!("{at}: {v} not in {e}"));
    }
    if let (Some(m), Some(n)) = (obj.get("minimum"), v.as_f64())
        && n < m.as_f64().unwrap()
    {
        errs.push(format!("{at}: {n} < {m}"));
    }
    if let (Some(m), Some(n)) = (obj.get("maximum"), v.as_f64())
        && n > m.as_f64().unwrap()
    {
        errs.push(format!("{at}: {n} > {m}"));
    }
    if let (Some(p), Some(text)) = (obj.get("pattern"), v.as_str())
        && !regex::Regex::new(p.as_str().unwrap()).unwrap().is_match(text)
    {
        errs.push(format!("{at}: {text:?} does not match {p}"));
    }
    if let Some(o) = v.as_object() {
        for r in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !o.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: missing {r}"));
            }
        }
        let props = obj.get("properties").and_then(Value::as_object);
        for (k, x) in o {
            let path = format!("{at}/{k}");
            match (props.and_then(|p| p.get(k)), obj.get("additionalProperties")) {
                (Some(ps), _) => check(ps, x, &path, errs),
                (None, Some(Value::Bool(true))) => {}
                (None, Some(ap @ Value::Object(_))) => check(ap, x, &path, errs),
                (None, _) => errs.push(format!("{path}: not declared in the schema")),
            }
        }
    }
    if let (Some(items), Some(a)) = (obj.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            check(items, x, &format!("{at}/{i}"), errs);
        }
    }
}

/// Asserts `v` is valid against docs/schemas/`schema_name`.
pub fn assert_valid(schema_name: &str, v: &Value) {
    let mut errs = Vec::new();
    check(&schema(schema_name), v, "", &mut errs);
    assert!(errs.is_empty(), "{schema_name}: {errs:#?}\n{v:#}");
}

fn scan_lines_match_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sample.pcap");
    let (code, _, err) = run(&["sample", pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let hosts = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/hosts.example");
    let (code, out, err) = run(&[
        "scan",
        "--json",
        "--hosts",
        hosts.to_str().unwrap(),
        pcap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (stats, flows) = lines.split_last().unwrap();
    assert!(flows.len() >= 5, "{out}");
    for f in flows {
        assert_valid("scan-flow.json", f);
    }
    assert!(flows.iter().any(|f| f["alert"]["action"] == "blocked"));
    assert!(flows.iter().any(|f| f["alert"]["action"] == "allowed"));
    assert_valid("scan-stats.json", stats);
}

fn engine() -> Arc<appwall::engine::Engine> {
    use appwall::policy::{AppLibrary, HostsFile, Policy};
    let h = HostsFile::parse(Path::new("hosts"), "192.0.2.10 msn\n2001:db8::10 msn\n").unwrap();
    let p = Policy::new(AppLibrary::embedded().unwrap(), &h, None).unwrap();
    Arc::new(appwall::engine::Engine::new(p, appwall::engine::EngineConfig::default()).unwrap())
}

fn event_lines_match_their_schema() {
    use appwall::daemon::events::BlockEvent;
    use appwall::engine::Reason;
    use appwall::packet::Proto;
    let e = engine();
    let port = appwall::policy::PortSpec {
        proto: Proto::Tcp,
        first: 1863,
        last: 1863,
    };
    // A message rule's event carries the host and URL it judged (here one
    // cut to 512 bytes).
    let app = e
        .policy()
        .library()
        .apps()
        .iter()
        .position(|a| !a.rules.is_empty())
        .unwrap();
    let rule = Reason::Rule(appwall::engine::message_rules::RuleRef {
        app: u8::try_from(app).unwrap(),
        rule: 0,
    });
    let long = format!("http://a.example/{}", "x".repeat(600));
    let request = appwall::engine::MatchedRequest::new(Some(b"a.example"), Some(long.as_bytes()));
    for (reason, src, dst, request) in [
        (
            Reason::Port { app: Some(0), port },
            "192.0.2.10",
            "198.51.100.1",
            None,
        ),
        (Reason::Evasion, "2001:db8::10", "2001:db8::80", None),
        (rule, "192.0.2.10", "198.51.100.1", Some(Box::new(request))),
    ] {
        let ev = BlockEvent {
            time: std::time::SystemTime::now(),
            queue: 2,
            flow_id: 7,
            proto: Proto::Tcp,
            src: src.parse().unwrap(),
            sport: 40000,
            dst: dst.parse().unwrap(),
            dport: 1863,
            reason,
            engine: Arc::clone(&e),
            request,
        };
        let v: Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_valid("event.json", &v);
        if v["alert"]["category"] == "rule" {
            assert_eq!(v["alert"]["host"], "a.example", "{v}");
            assert_eq!(v["alert"]["url"].as_str().unwrap().len(), 512, "{v}");
            assert_eq!(v["alert"]["truncated"], true, "{v}");
        }
    }
}

fn status_snapshots_match_their_schema() {
    use appwall::daemon::stats::{WorkerStats, bump, snapshot};
    use appwall::source::nfqueue::KernelQueue;
    let w = Arc::new(WorkerStats::new(0));
    bump(&w.blocked_by_app[0]);
    let k = KernelQueue {
        queue: 0,
        ..KernelQueue::default()
    };
    let mut s = snapshot(&[w, Arc::new(WorkerStats::new(1))], &[k], &["msn".into()]);
    s.policy_hash = "0123456789ab".into();
    assert_valid("status.json", &serde_json::to_value(&s).unwrap());
}

fn the_checker_catches_what_it_should() {
    let s = schema("event.json");
    let good = serde_json::json!({
        "timestamp": "2026-01-02T03:04:05.000006Z", "event_type": "alert", "queue": 0,
        "flow_id": 1, "src_ip": "192.0.2.1", "src_port": 1, "dest_ip": "192.0.2.2", "dest_port": 2,
        "proto": "TCP", "app_proto": null, "community_id": "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        "alert": {"action": "blocked", "app": null, "signature_id": null, "signature": null,
                  "reason": "r", "category": "port"}
    });
    let mut errs = Vec::new();
    check(&s, &good, "", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    for (field, bad) in [
        ("timestamp", serde_json::json!("2026-01-02 03:04:05")),
        ("proto", serde_json::json!("tcp")),
        ("dest_port", serde_json::json!(70000)),
        ("community_id", serde_json::json!("abc")),
        ("extra", serde_json::json!(1)),
    ] {
        let mut v = good.clone();
        v[field] = bad;
        let mut errs = Vec::new();
        check(&s, &v, "", &mut errs);
        assert!(!errs.is_empty(), "{field} accepted");
    }
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("alert");
    let mut errs = Vec::new();
    check(&s, &v, "", &mut errs);
    assert!(errs.iter().any(|e| e.contains("missing")), "{errs:?}");
}
