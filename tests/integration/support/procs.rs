//! What `/proc` says about a process: status fields, resident memory, and
//! every thread's capability sets.

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
