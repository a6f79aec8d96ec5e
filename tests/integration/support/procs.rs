//! What `/proc` says about a process: status fields, resident memory,
//! every thread's capability sets, and descriptors a child would inherit.

/// The text of /proc/PID/status (empty once the process is gone).
pub fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// One field of a /proc status text, trimmed (`key` with its colon).
pub fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(&proc_status(pid), "VmRSS:")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CapEff, CapPrm, CapInh, CapBnd, CapAmb, NoNewPrivs of every thread of `pid`.
pub fn thread_caps(pid: u32) -> Vec<[String; 6]> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let s = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        out.push(
            [
                "CapEff:",
                "CapPrm:",
                "CapInh:",
                "CapBnd:",
                "CapAmb:",
                "NoNewPrivs:",
            ]
            .map(|k| status_field(&s, k)),
        );
    }
    out
}

/// Descriptors above stderr of `pid` that are not close-on-exec, with what
/// they point to.
pub fn inheritable_fds(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok_and(|fd| fd <= 2) {
            continue;
        }
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
        // O_CLOEXEC is 02000000 in fdinfo's octal flags.
        if flags.is_some_and(|f| f & 0o2000000 == 0) {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{name}")).unwrap_or_default();
            out.push(format!("fd {name} -> {}", link.display()));
        }
    }
    out
}
