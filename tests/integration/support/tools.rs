//! Stand-ins for the rule tools (`iptables-save`, `iptables-restore`,
//! `ip6tables-*`, `ipset`) put first on the filter's `PATH`: they log who
//! ran them with which arguments and which descriptors they inherited,
//! fail or hang on demand, and trap any shell.

use std::path::{Path, PathBuf};

/// Stand-ins for the rule tools, first on the filter's `PATH`: each lists
/// its open descriptors, logs its parent's name and its arguments, fails
/// when a `fail-TOOL` file exists, hangs 4 s when a `hang-TOOL` file
/// exists, and otherwise runs the real tool. `sh`, `bash` and `dash` are
/// traps that log `SHELL`: appwall must never run a shell.
pub struct ToolShim {
    dir: PathBuf,
}

/// The rule tools appwall runs.
pub const TOOLS: [&str; 5] = [
    "iptables-save",
    "iptables-restore",
    "ip6tables-save",
    "ip6tables-restore",
    "ipset",
];

impl ToolShim {
    /// `tools`: which stand-ins exist (the others are missing from PATH).
    pub fn new(parent: &Path, tools: &[&str]) -> ToolShim {
        use std::os::unix::fs::PermissionsExt;
        let dir = parent.join("shim");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("calls.log");
        let write = |name: &str, body: String| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let (ls, sleep) = (which("ls"), which("sleep"));
        for t in tools {
            let real = which(t);
            write(
                t,
                format!(
                    "#!/bin/sh\n\
                     {ls} -l /proc/$$/fd/ > {dir}/fds-{t}-$$.txt 2>&1\n\
                     echo \"$(/bin/cat /proc/$PPID/comm) {t} $*\" >> {log}\n\
                     if [ -e {dir}/fail-{t} ]; then echo \"simulated failure of {t}\" >&2; exit 1; fi\n\
                     if [ -e {dir}/hang-{t} ]; then : > {dir}/hung-{t}; {sleep} 4; : > {dir}/woke-{t}; fi\n\
                     exec {real} \"$@\"\n",
                    ls = ls.display(),
                    sleep = sleep.display(),
                    log = log.display(),
                    dir = dir.display(),
                    real = real.display()
                ),
            );
        }
        for t in ["sh", "bash", "dash"] {
            write(
                t,
                format!("#!/bin/sh\necho \"SHELL {t} $*\" >> {}\nexit 1\n", log.display()),
            );
        }
        // `ip netns exec` itself is looked up through this PATH.
        std::os::unix::fs::symlink(which("ip"), dir.join("ip")).unwrap();
        ToolShim { dir }
    }

    /// The shim directory, as the filter's `PATH`.
    pub fn path(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// The shim directory, then this process's `PATH` (tools without a
    /// stand-in run from the system), as the filter's `PATH`.
    pub fn path_then_system(&self) -> String {
        format!("{}:{}", self.path(), std::env::var("PATH").unwrap_or_default())
    }

    /// Makes `tool` fail (`on`) or run the real one again.
    pub fn fail(&self, tool: &str, on: bool) {
        self.flag(&format!("fail-{tool}"), on);
    }

    /// Makes every later run of `tool` hang 4 s before it runs the real
    /// one (`on`), or not.
    pub fn hang(&self, tool: &str, on: bool) {
        self.flag(&format!("hang-{tool}"), on);
    }

    /// A run of `tool` has started hanging ([`ToolShim::hang`]).
    pub fn hung(&self, tool: &str) -> bool {
        self.dir.join(format!("hung-{tool}")).exists()
    }

    /// A run of `tool` has finished hanging and goes on to the real tool.
    pub fn woke(&self, tool: &str) -> bool {
        self.dir.join(format!("woke-{tool}")).exists()
    }

    fn flag(&self, name: &str, on: bool) {
        let f = self.dir.join(name);
        if on {
            std::fs::write(f, "").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The open descriptors of every run of `tool` so far (`ls -l` of
    /// `/proc/PID/fd`, one listing a run, taken as the stand-in starts).
    pub fn fd_listings(&self, tool: &str) -> Vec<String> {
        let prefix = format!("fds-{tool}-");
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    }

    /// Every tool run so far: `parent-comm tool args...`.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The first `tool` on this process's `PATH`.
pub fn which(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}
