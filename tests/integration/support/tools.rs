//! Stand-ins for the rule tools (`iptables-save`, `iptables-restore`,
//! `ip6tables-*`, `ipset`) put first on the filter's `PATH`: they log who
//! ran them with which arguments, fail on demand, and trap any shell.

use std::path::{Path, PathBuf};

/// Stand-ins for the rule tools, first on the filter's `PATH`: each logs
/// its parent's name and its arguments, fails when a `fail-TOOL` file
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
        for t in tools {
            let real = which(t);
            write(
                t,
                format!(
                    "#!/bin/sh\n\
                     echo \"$(/bin/cat /proc/$PPID/comm) {t} $*\" >> {log}\n\
                     if [ -e {dir}/fail-{t} ]; then echo \"simulated failure of {t}\" >&2; exit 1; fi\n\
                     exec {real} \"$@\"\n",
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

    /// Makes `tool` fail (`on`) or run the real one again.
    pub fn fail(&self, tool: &str, on: bool) {
        let f = self.dir.join(format!("fail-{tool}"));
        if on {
            std::fs::write(f, "").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
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
