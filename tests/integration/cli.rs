//! The binary's command line: check, rules (golden), scan, sample.

use std::path::Path;

use crate::support::{Need, run, temp_file};

/// Root (to become an unprivileged user for the check) and `su`.
const CAN_SU: &[Need] = &[Need::Root, Need::Tools(&["su"]), Need::User("nobody")];

cases![
    check_accepts_the_example_and_summarises,
    check_reports_every_error_with_path_and_line,
    check_reports_rule_file_errors_with_line,
    rules_output_is_golden,
    queue_rate_values_are_checked_by_check_rules_and_run,
    rules_merge_overlaps_and_use_ipsets_for_large_lists,
    sample_capture_scans_as_expected,
    damaged_captures_are_reported_not_fatal,
    bad_command_lines_are_usage_errors,
    run_without_privileges_says_what_it_needs: CAN_SU,
];

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rules/hosts.example")
        .display()
        .to_string()
}

fn check_accepts_the_example_and_summarises() {
    let (code, out, err) = run(&["check", "--hosts", &example()]);
    assert_eq!(code, 0, "{err}");
    assert_out!(out.contains("hosts: 5 (4 IPv4, 1 IPv6 entries"), out);
    assert_out!(out.contains("msn"), out);
    assert_out!(out.contains("iptables-restore: "), out);
    assert_out!(out.contains("ip6tables-restore: "), out);
    assert_out!(out.trim_end().ends_with("ok"), out);
}

fn check_reports_every_error_with_path_and_line() {
    let (_d, hosts) = temp_file(
        "hosts",
        b"192.0.2.1\n192.0.2.300\n\n192.0.2.2 -j ACCEPT\n192.0.2.3 gtalk\n192.0.2.4:99999\n",
    );
    let h = hosts.display().to_string();
    let (code, out, err) = run(&["check", "--hosts", &h]);
    assert_eq!(code, 2, "{out}{err}");
    for line in [2, 4, 6] {
        assert_out!(err.contains(&format!("{h}:{line}: ")), err);
    }
    assert_out!(!err.contains(&format!("{h}:1:")), err);
    // Unknown apps are found in a second pass once the syntax is right.
    let (_d2, hosts) = temp_file("hosts", b"192.0.2.1 msn\n192.0.2.3 gtalk\n");
    let h = hosts.display().to_string();
    let (code, _, err) = run(&["check", "--hosts", &h]);
    assert_eq!(code, 2);
    assert_out!(err.contains(&format!("{h}:2: unknown app \"gtalk\"")), err);
    // A missing file.
    let (code, _, err) = run(&["check", "--hosts", "/nonexistent/hosts"]);
    assert_eq!(code, 2);
    assert_out!(err.contains("/nonexistent/hosts: cannot read"), err);
}

fn check_reports_rule_file_errors_with_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"bad\"\ndescription = \"x\"\n[[signature]]\nid = \"a\"\nscope = \"everywhere\"\ntext = \"x\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        "name = \"typo\"\ndescripton = \"x\"\n",
    )
    .unwrap();
    let (_d, hosts) = temp_file("hosts", b"192.0.2.1\n");
    let (code, _, err) = run(&[
        "check",
        "--hosts",
        hosts.to_str().unwrap(),
        "--rules",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_out!(err.contains("bad.toml:3: unknown scope \"everywhere\""), err);
    assert_out!(err.contains("typo.toml:2: unknown field `descripton`"), err);
}

/// Compares with tests/golden/NAME, or rewrites it when UPDATE_GOLDEN is set.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "output differs from {} (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn rules_output_is_golden() {
    let ex = example();
    let cases: &[(&str, &[&str])] = &[
        ("example.ipv4.rules", &["--family", "ipv4"]),
        ("example.ipv6.rules", &["--family", "ipv6"]),
        (
            "example.commands.sh",
            &["--family", "ipv4", "--format", "commands"],
        ),
        (
            "example.reject-reset-balance.ipv4.rules",
            &[
                "--family",
                "ipv4",
                "--port-action",
                "reject",
                "--reset",
                "--queues",
                "2",
                "--queue",
                "3",
                "--fail-closed",
                "--queue-rate",
                "500",
            ],
        ),
        (
            "example.no-queue-rate.ipv4.rules",
            &["--family", "ipv4", "--queue-rate", "off"],
        ),
        (
            "example.ipset.ipv4.rules",
            &["--family", "ipv4", "--ipset-threshold", "0"],
        ),
        (
            "example.ipset.ipv4.ipset",
            &["--family", "ipv4", "--ipset-threshold", "0", "--format", "ipset"],
        ),
    ];
    for (name, extra) in cases {
        let mut args = vec!["rules", "--hosts", &ex];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{name}: {err}");
        golden(name, &out);
    }
}

/// `check`, `rules` and `run` take the same `--queue-rate`; bad values are
/// usage errors (exit 2) naming the option, before anything is read.
fn queue_rate_values_are_checked_by_check_rules_and_run() {
    let ex = example();
    let (code, out, err) = run(&["check", "--hosts", &ex, "--queue-rate", "800/80"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("queue rate: 800 packets/s per source, bursts of 80"),
        "{out}"
    );
    let (code, out, _) = run(&["check", "--hosts", &ex]);
    assert_eq!(code, 0);
    assert!(
        out.contains("queue rate: 10000 packets/s per source, bursts of 2000"),
        "{out}"
    );
    let (code, out, _) = run(&["check", "--hosts", &ex, "--queue-rate", "off"]);
    assert_eq!(code, 0);
    assert!(out.contains("queue rate: off"), "{out}");
    for cmd in ["check", "rules", "run"] {
        for bad in ["0", "fast", "10/0", "2000000", "10/x", ""] {
            let (code, _, err) = run(&[cmd, "--hosts", &ex, "--queue-rate", bad]);
            assert_eq!(code, 2, "{cmd} --queue-rate {bad:?}: {err}");
            assert!(err.contains("--queue-rate"), "{cmd} {bad:?}: {err}");
        }
    }
}

fn rules_merge_overlaps_and_use_ipsets_for_large_lists() {
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!("198.51.100.{i} msn\n"));
    }
    text.push_str("198.51.100.0/24 msn\n"); // covers all of the above
    let (_d, hosts) = temp_file("hosts", text.as_bytes());
    let (code, out, err) = run(&["rules", "--hosts", hosts.to_str().unwrap(), "--family", "ipv4"]);
    assert_eq!(code, 0, "{err}");
    // Aggregated to one network: no ipset needed, one rule per direction.
    assert_out!(
        out.contains("-A APPWALL -s 198.51.100.0/24 -j APPWALL_INSPECT"),
        out
    );
    assert_out!(!out.contains("198.51.100.7/32"), out);

    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!("203.0.113.{} msn\n", i * 2));
    }
    let (_d, hosts) = temp_file("hosts", text.as_bytes());
    let (code, out, _) = run(&["rules", "--hosts", hosts.to_str().unwrap(), "--family", "ipv4"]);
    assert_eq!(code, 0);
    assert_out!(
        out.contains("-m set --match-set appwall4-inspect src -j APPWALL_INSPECT"),
        out
    );
    assert_out!(
        // The msn port rule shares the inspection set (same hosts): no copy.
        out.contains("--match-set appwall4-inspect src -p tcp -m multiport --dports 1863"),
        out
    );
    let (_, sets, _) = run(&[
        "rules",
        "--hosts",
        hosts.to_str().unwrap(),
        "--family",
        "ipv4",
        "--format",
        "ipset",
    ]);
    assert_out!(
        sets.contains("create appwall4-inspect hash:net family inet hashsize 1024 maxelem 65536 -exist"),
        sets
    );
    assert_eq!(
        sets.lines()
            .filter(|l| l.starts_with("add appwall4-inspect "))
            .count(),
        40
    );
}

fn sample_capture_scans_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sample.pcap");
    let (code, out, err) = run(&["sample", pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let expected: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().split_once(' ').map(|(v, _)| v))
        .filter(|v| *v == "block" || *v == "allow")
        .collect();
    let (code, out, err) = run(&["scan", "--json", "--hosts", &example(), pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // One line per flow, then one summary line that accounts for every frame.
    let (summary, got) = all.split_last().unwrap();
    assert_eq!(summary["event_type"], "stats", "{summary}");
    assert!(got.iter().all(|v| v["event_type"] == "flow"));
    let skipped: u64 = summary["skipped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        summary["frames"].as_u64().unwrap(),
        summary["packets"].as_u64().unwrap() + skipped + summary["unsupported_link"].as_u64().unwrap(),
        "every frame is a packet or a counted skip: {summary}"
    );
    assert_eq!(summary["flows"].as_u64().unwrap(), got.len() as u64);
    let verdicts: Vec<&str> = got
        .iter()
        .map(|v| {
            if v["alert"]["action"] == "blocked" {
                "block"
            } else {
                "allow"
            }
        })
        .collect();
    assert_eq!(verdicts, expected);
    // The tunnelled request is caught by its request target, not by the port.
    assert_eq!(got[0]["app_proto"], "msn");
    assert_eq!(got[0]["alert"]["signature_id"], "gateway-dll");
    assert_eq!(got[0]["alert"]["category"], "signature");
    assert_eq!(got[0]["dest_port"], 80);
    assert!(got[0]["community_id"].as_str().unwrap().starts_with("1:"));
    assert_eq!(got[2]["alert"]["reason"], "port tcp/1863 of app msn");
    assert_eq!(got[2]["alert"]["category"], "port");
    assert_eq!(
        got[3]["alert"]["signature_id"], "gateway-dll",
        "7-byte segments: {}",
        got[3]
    );
    assert_eq!(got[5]["alert"]["reason"], "not-listed");
    assert_eq!(got[5]["app_proto"], serde_json::Value::Null);
    // Table output names the flows too.
    let (code, table, _) = run(&["scan", "--hosts", &example(), pcap.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_out!(table.contains("8 flows: 5 blocked, 3 allowed"), table);
}

fn damaged_captures_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sample.pcap");
    assert_eq!(run(&["sample", pcap.to_str().unwrap()]).0, 0);
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, out, err) = run(&["scan", cut.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_out!(err.contains("cut.pcap: packet") && err.contains("cut short"), err);
    assert_out!(out.contains("flows"), out);
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let (code, _, err) = run(&["scan", junk.to_str().unwrap(), pcap.to_str().unwrap()]);
    assert_eq!(code, 2, "an unreadable capture fails the run");
    assert_out!(err.contains("junk.pcap: not a pcap or pcapng file"), err);
    let (code, _, err) = run(&["scan", "/nonexistent.pcap"]);
    assert_eq!(code, 2);
    assert_out!(err.contains("/nonexistent.pcap: cannot open"), err);
}

fn bad_command_lines_are_usage_errors() {
    // Exit codes: 2 for bad input or usage, whatever the subcommand.
    let (code, _, err) = run(&["rules"]);
    assert_eq!(code, 2);
    assert_out!(err.contains("--hosts FILE is required"), err);
    let (code, _, err) = run(&["kernel-rules"]);
    assert_eq!(code, 2, "the new name and the old alias behave alike");
    assert_out!(err.contains("--hosts FILE is required"), err);
    let (code, _, err) = run(&["scan"]);
    assert_eq!(code, 2);
    assert_out!(err.contains("CAPTURE"), err);
    let (code, _, _) = run(&["rules", "--hosts", "x", "--queues", "0"]);
    assert_eq!(code, 2);
}

fn run_without_privileges_says_what_it_needs() {
    let cmd = format!("{} run --hosts {}", env!("CARGO_BIN_EXE_appwall"), example());
    let out = std::process::Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c", &cmd])
        .output()
        .expect("run su");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_out!(err.contains("run it as root or with CAP_NET_ADMIN"), err);
}
