//! Helpers shared by the integration tests: running the binary, finding the
//! shared captures, and deciding when a privileged test may be skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `appwall` binary under test.
pub fn appwall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_appwall"))
}

/// Runs `appwall` with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out: Output = appwall().args(args).output().expect("run appwall");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True when running under CI (missing prerequisites are failures there).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips (returns false after printing why) or fails under CI.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("prerequisite missing under CI: {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

/// The shared captures folder, when present.
pub fn captures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/captures");
    let ok = dir.join("flows.tsv").is_file();
    if prerequisite(
        ok,
        "../shared/captures is absent (real captures are not in the repo)",
    ) {
        Some(dir)
    } else {
        None
    }
}

/// True when the process runs as root (needed for namespaces and iptables).
pub fn is_root() -> bool {
    // /proc/self/status "Uid:" real uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A scratch file in a temp dir that lives as long as the returned guard.
pub fn temp_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write temp file");
    (dir, path)
}

/// Asserts a condition on command output, printing the output when it fails.
#[macro_export]
macro_rules! assert_out {
    ($cond:expr, $out:expr) => {
        assert!($cond, "condition {} failed; output:\n{}", stringify!($cond), $out)
    };
}
