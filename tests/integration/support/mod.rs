//! What the integration tests share: the test list with its prerequisites
//! (this binary runs on `libtest-mimic`, so a test whose prerequisite is
//! missing shows as *ignored* with the reason, never as passed), running
//! the binary, the shared captures, and the lab fixture ([`lab`]) with the
//! traffic, keep-alive, process and tool helpers the live tests drive it
//! with.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use libtest_mimic::{Completion, Failed, Trial};

pub mod keepalive;
pub mod lab;
pub mod procs;
pub mod py;
pub mod tools;
pub mod traffic;

/// Something a test needs from the machine, checked when the list is built.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Running as root (namespaces, iptables, switching users).
    Root,
    /// These programs on `PATH`.
    Tools(&'static [&'static str]),
    /// The shared captures ([`captures_dir`]) with their `flows.tsv`.
    Captures,
    /// This user account exists.
    User(&'static str),
    /// This Python module imports in `python3` (`pip install NAME`).
    PyModule(&'static str),
}

/// Programs every lab test drives.
pub const LAB_TOOLS: &[&str] = &[
    "ip",
    "iptables-restore",
    "ipset",
    "conntrack",
    "curl",
    "nc",
    "python3",
];

/// A live test: root and the lab's programs.
pub const LAB: &[Need] = &[Need::Root, Need::Tools(LAB_TOOLS)];

/// A live test replaying a shared capture.
pub const LAB_CAPTURES: &[Need] = &[Need::Root, Need::Tools(LAB_TOOLS), Need::Captures];

impl Need {
    /// Why the test cannot run here, or `None` when the need is met.
    fn missing(&self) -> Option<String> {
        match self {
            Need::Root => (!is_root()).then(|| "needs root".to_string()),
            Need::Tools(tools) => {
                let absent: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
                (!absent.is_empty()).then(|| format!("needs {} on PATH", absent.join(", ")))
            }
            Need::Captures => {
                let dir = captures_dir();
                (!dir.join("flows.tsv").is_file()).then(|| {
                    format!(
                        "needs the shared captures in {} (set APPWALL_CAPTURES)",
                        dir.display()
                    )
                })
            }
            Need::User(name) => (!matches!(nix::unistd::User::from_name(name), Ok(Some(_))))
                .then(|| format!("needs user {name}")),
            Need::PyModule(m) => {
                let ok = Command::new("python3")
                    .args(["-c", &format!("import {m}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                (!ok).then(|| format!("needs the python3 module {m} (pip install {m}; .ci/setup)"))
            }
        }
    }
}

/// One test of the list: its name as libtest would print it
/// (`module::function`), what it needs, and its body (which panics to fail).
pub struct Case {
    name: String,
    needs: &'static [Need],
    body: fn(),
}

impl Case {
    /// `module` is the `module_path!()` of the test's file.
    pub fn new(module: &str, function: &str, needs: &'static [Need], body: fn()) -> Case {
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        Case {
            name: format!("{module}::{function}"),
            needs,
            body,
        }
    }

    /// The trial to run: the body when every need is met; otherwise ignored
    /// with the reason, or failed when `ci` (a CI run must not skip).
    pub fn trial(self, ci: bool) -> Trial {
        let missing: Vec<String> = self.needs.iter().filter_map(Need::missing).collect();
        let body = self.body;
        if missing.is_empty() {
            return Trial::test(self.name, move || {
                body();
                Ok(())
            });
        }
        let reason = missing.join("; ");
        if ci {
            Trial::test(self.name, move || {
                Err(Failed::from(format!("prerequisite missing under CI: {reason}")))
            })
        } else {
            Trial::ignorable_test(self.name, move || Ok(Completion::ignored_with(reason)))
        }
    }
}

/// The list of a test file: `cases![a, b: LAB, c: &[Need::Root]]` defines
/// `pub fn cases() -> Vec<Case>` with each function named once. A test
/// function left out of the list is dead code, which the lints refuse.
#[macro_export]
macro_rules! cases {
    ($($name:ident $(: $needs:expr)?),* $(,)?) => {
        /// The tests of this file, for the list in `main.rs`.
        pub fn cases() -> Vec<$crate::support::Case> {
            vec![$($crate::support::Case::new(
                module_path!(),
                stringify!($name),
                $crate::cases!(@needs $($needs)?),
                $name,
            )),*]
        }
    };
    (@needs) => {
        &[]
    };
    (@needs $needs:expr) => {
        $needs
    };
}

/// True when running under CI (missing prerequisites are failures there).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// True when the process runs as root (needed for namespaces and iptables).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when `tool` is on `PATH`.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The shared real captures (`APPWALL_CAPTURES`, see
/// [`appwall::sample::captures_dir`]); tests that read them declare
/// [`Need::Captures`].
pub fn captures_dir() -> PathBuf {
    appwall::sample::captures_dir()
}

/// The `appwall` binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appwall"))
}

/// A command running the `appwall` binary under test.
pub fn appwall() -> Command {
    Command::new(exe())
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

/// A process's exit status and output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
