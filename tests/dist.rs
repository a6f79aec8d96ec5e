//! The packaged files in `dist/` stay true to the code: the man pages and
//! shell completions are regenerated from the command line and compared
//! with the checked-in copies, and the systemd unit, logrotate snippet and
//! Debian metadata name only files that exist.
//!
//! After a change to `src/cli.rs`, `cargo run -- generate all dist`
//! rewrites the generated files (docs/guide.md, "Packaging").
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// File name -> contents of every file in `dir`.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// Differences between the checked-in and the fresh directory, in words.
fn differences(checked_in: &Path, fresh: &Path) -> Vec<String> {
    let (old, new) = (files(checked_in), files(fresh));
    let mut diffs = Vec::new();
    for (name, bytes) in &new {
        match old.get(name) {
            None => diffs.push(format!("{name}: missing from {}", checked_in.display())),
            Some(b) if b != bytes => diffs.push(format!("{name}: differs")),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        diffs.push(format!("{name}: no longer generated"));
    }
    diffs
}

#[test]
fn man_pages_and_completions_match_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_appwall"))
        .args(["generate", "all"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut diffs = Vec::new();
    for sub in ["man", "completions"] {
        diffs.extend(differences(&root().join("dist").join(sub), &tmp.path().join(sub)));
    }
    assert!(
        diffs.is_empty(),
        "dist/ is out of date with src/cli.rs; run `cargo run -- generate all dist`:\n  {}",
        diffs.join("\n  ")
    );
    // The comparison can fail: a page for every documented subcommand.
    assert!(files(&tmp.path().join("man")).contains_key("appwall-run.8"));
}

#[test]
fn the_comparison_notices_a_changed_file() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("x.8"), "one").unwrap();
    std::fs::write(b.path().join("x.8"), "two").unwrap();
    std::fs::write(b.path().join("y.8"), "new").unwrap();
    assert_eq!(differences(a.path(), b.path()).len(), 2);
}

/// `key=value` lines of the unit's `[Service]` section, continuation
/// lines (`\` at the end) joined.
fn unit_service() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("dist/appwall.service")).unwrap();
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if current.is_empty() && (line.starts_with('#') || line.is_empty()) {
            continue;
        }
        let (body, more) = match line.strip_suffix('\\') {
            Some(b) => (b.trim(), true),
            None => (line, false),
        };
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(body);
        if !more {
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut section = "";
    let mut out = Vec::new();
    for line in &logical {
        if line.starts_with('[') {
            section = line;
        } else if let Some((k, v)) = line.split_once('=').filter(|_| section == "[Service]") {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn the_unit_keeps_the_policy_across_a_crash_and_checks_before_reload() {
    let svc = unit_service();
    let get = |k: &str| -> Vec<&str> {
        svc.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    // Removing the rules belongs to a clean stop, which the daemon does on SIGTERM.
    for (k, v) in &svc {
        assert!(!(k.starts_with("ExecStop") && v.contains("uninstall")), "{k}={v}");
    }
    assert!(
        matches!(get("Restart").as_slice(), ["on-failure"] | ["always"]),
        "{svc:?}"
    );
    let start = get("ExecStart");
    let reload = get("ExecReload");
    assert_eq!(start.len(), 1, "{svc:?}");
    let run_args: Vec<&str> = start[0]
        .split_once(" run ")
        .expect("ExecStart runs appwall run")
        .1
        .split_whitespace()
        .collect();
    // The check runs first, with arguments `run` also gets, then the signal.
    assert_eq!(reload.len(), 2, "{reload:?}");
    let check_args: Vec<&str> = reload[0]
        .split_once(" check ")
        .expect("the first ExecReload runs appwall check")
        .1
        .split_whitespace()
        .collect();
    assert!(!check_args.is_empty());
    for arg in &check_args {
        assert!(
            run_args.contains(arg),
            "ExecReload checks {arg}, which ExecStart does not pass"
        );
    }
    let env = get("Environment").join(" ");
    assert!(env.contains("APPWALL_POLICY=--hosts /etc/appwall/hosts"), "{env}");
    assert!(reload[1].contains("kill -HUP $MAINPID"), "{reload:?}");
    for dir in ["RuntimeDirectory", "StateDirectory", "LogsDirectory"] {
        assert_eq!(get(dir), ["appwall"], "{dir}");
    }
    // Readiness and the watchdog come from the daemon (daemon/notify.rs),
    // and only from it; a watchdog abort is a crash, restarted.
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("NotifyAccess"), ["main"]);
    let wd = get("WatchdogSec");
    let secs: u64 = wd
        .first()
        .and_then(|v| v.strip_suffix('s'))
        .and_then(|v| v.parse().ok())
        .expect("WatchdogSec=<n>s");
    assert!((10..=120).contains(&secs), "WatchdogSec={secs}s");
}

#[test]
fn the_debian_assets_exist() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let cargo: toml::Table = text.parse().unwrap();
    let deb = &cargo["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("assets");
    let mut checked = 0;
    // Each asset is [source, destination, mode]; the binary is built, not checked in.
    for asset in assets {
        let src = asset[0].as_str().unwrap();
        if src.starts_with("target/") {
            continue;
        }
        if src.contains('*') {
            let dir = Path::new(src).parent().unwrap();
            assert!(root().join(dir).is_dir(), "deb asset {src}: no directory");
        } else {
            assert!(root().join(src).is_file(), "deb asset {src} is missing");
        }
        checked += 1;
    }
    assert!(checked >= 10, "found {checked} assets");
    // cargo-deb's systemd-units (and dist/build-deb.sh) package dist/<unit-name>.service.
    let units = &deb["systemd-units"];
    let unit = Path::new(units["unit-scripts"].as_str().unwrap())
        .join(format!("{}.service", units["unit-name"].as_str().unwrap()));
    assert!(root().join(&unit).is_file(), "{}", unit.display());
    for conf in deb["conf-files"].as_array().unwrap() {
        let conf = conf.as_str().unwrap().trim_start_matches('/');
        assert!(
            assets.iter().any(|a| a[1].as_str() == Some(conf)),
            "conffile {conf} is not an asset"
        );
    }
}
