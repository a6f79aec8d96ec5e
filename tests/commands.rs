//! The small promises of `check`, `kernel-rules` and `demo` seen from the
//! command line: a hosts file listing nobody is valid but warned about; a
//! family without hosts gets a note instead of rules `run` would never
//! install; `demo --no-filter` expects every connection to pass.
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::path::PathBuf;
use std::process::Command;

/// Runs appwall; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_appwall"))
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn hosts(dir: &tempfile::TempDir, text: &str) -> String {
    let p: PathBuf = dir.path().join("hosts");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn check_warns_on_a_hosts_file_listing_nobody_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "# nobody yet\n\n   # still nobody\n"] {
        let h = hosts(&dir, text);
        let (code, out, err) = run(&["check", "--hosts", &h]);
        assert_eq!(code, 0, "{text:?}: {err}");
        assert!(
            err.contains(&format!("appwall: warning: {h} lists no hosts")),
            "{text:?}: {err}"
        );
        assert!(out.trim_end().ends_with("ok"), "{out}");
    }
    let h = hosts(&dir, "192.0.2.10\n");
    let (code, _, err) = run(&["check", "--hosts", &h]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn kernel_rules_for_a_family_without_hosts_print_only_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let h = hosts(&dir, "192.0.2.10 msn\n");
    for format in ["restore", "commands", "ipset"] {
        let (code, out, err) = run(&[
            "kernel-rules",
            "--hosts",
            &h,
            "--family",
            "ipv6",
            "--format",
            format,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out, "# the policy has no IPv6 hosts: appwall run installs no ip6tables rules\n",
            "{format}"
        );
    }
    // The family that has hosts still gets its rules.
    let (_, out, _) = run(&["kernel-rules", "--hosts", &h, "--family", "ipv4"]);
    assert!(out.contains("-A APPWALL "), "{out}");
    // An IPv6-only policy, the other way round.
    let h = hosts(&dir, "2001:db8::10\n");
    let (_, out, _) = run(&["kernel-rules", "--hosts", &h, "--family", "ipv4"]);
    assert_eq!(
        out,
        "# the policy has no IPv4 hosts: appwall run installs no iptables rules\n"
    );
    // Nobody at all.
    let h = hosts(&dir, "# nobody\n");
    let (code, out, _) = run(&["kernel-rules", "--hosts", &h]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "# the policy lists no hosts: appwall run installs no kernel rules\n"
    );
}

#[test]
fn demo_without_the_filter_expects_every_row_to_pass() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root; appwall demo needs it"
        );
        eprintln!("skipped: appwall demo needs root");
        return;
    }
    let (code, out, err) = run(&["demo", "--no-filter"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("traffic"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(rows.len() >= 8, "{out}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert!(
            row.contains(" pass ") && row.contains(" passed ") && !cols.contains(&"block"),
            "{row}"
        );
    }
    assert!(!out.contains("kernel port rule"), "{out}");
}
