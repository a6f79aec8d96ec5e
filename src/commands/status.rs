//! `appwall status`: what the running instance of this network namespace
//! reports, read from its status file (no privileges needed beyond reading
//! it), for a person or (`--json`) as the file has it.
//!
//! Exit code 0 while the instance runs; 1 when it stopped, its process is
//! gone (a stale file), or there is no readable status file.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::StatusArgs;
use crate::commands::AppError;
use crate::daemon::status::default_status_path;

/// Runs `appwall status`.
pub fn run(args: &StatusArgs) -> Result<ExitCode, AppError> {
    let path = args.status_file.clone().unwrap_or_else(default_status_path);
    let text = std::fs::read_to_string(&path).map_err(|source| AppError::StatusFile {
        path: path.clone(),
        why: format!("{source} (is appwall run running in this network namespace?)"),
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| AppError::StatusFile {
        path: path.clone(),
        why: format!("not a status file: {e}"),
    })?;
    let running = is_running(&v);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", text.trim_end())?;
    } else {
        write!(out, "{}", describe(&v, &path, running))?;
    }
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// True when the file says it runs and its process still exists.
fn is_running(v: &Value) -> bool {
    let pid = v["pid"].as_u64().unwrap_or(0);
    v["running"] == true && pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn duration(secs: f64) -> String {
    // Whole seconds are all a person needs; negative or absurd values show as 0.
    let s = if secs.is_finite() && secs > 0.0 {
        // Saturating float-to-integer conversion (Rust's `as` on floats).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = secs as u64;
        whole
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The status in a few lines for a person.
pub fn describe(v: &Value, path: &std::path::Path, running: bool) -> String {
    let t = &v["totals"];
    let mut s = String::new();
    let state = if running {
        "running"
    } else if v["running"] == true {
        "not running (stale status file: its process is gone)"
    } else {
        "stopped"
    };
    s += &format!(
        "appwall: {state}, pid {}, up {}; status of {} ({})\n",
        n(&v["pid"]),
        duration(v["uptime"].as_f64().unwrap_or(0.0)),
        v["timestamp"].as_str().unwrap_or("?"),
        path.display()
    );
    let last = match (&v["last_reload"], v["last_reload_ok"] == true) {
        (Value::String(at), true) => format!("; last at {at}: applied"),
        (Value::String(at), false) => format!("; last at {at}: REFUSED, the earlier policy is in force"),
        _ => String::new(),
    };
    s += &format!(
        "policy: {}; {} reloads, {} refused{last}\n",
        v["policy_hash"].as_str().unwrap_or("?"),
        n(&v["reloads"]),
        n(&v["reload_failures"]),
    );
    s += &format!(
        "packets: {} judged ({} accepted, {} dropped); connections: {} blocked, {} clean\n",
        n(&t["packets"]),
        n(&t["accepted"]),
        n(&t["dropped"]),
        n(&t["blocked_connections"]),
        n(&t["clean_connections"]),
    );
    let mut apps: Vec<String> = Vec::new();
    if let Some(m) = v["apps"].as_object() {
        for (name, a) in m {
            let (c, k) = (n(&a["blocked_connections"]), n(&a["kernel_blocked_packets"]));
            if c + k > 0 {
                apps.push(format!("{name} {c} connections, {k} packets by port rule"));
            }
        }
    }
    s += &format!(
        "blocked by app: {}\n",
        if apps.is_empty() {
            "none".to_string()
        } else {
            apps.join("; ")
        }
    );
    s += &format!(
        "resets sent: {} ({} failed); conflicts: {}; ECH connections: {}; events lost: {}\n",
        n(&t["resets_sent"]),
        n(&t["reset_errors"]),
        n(&t["conflicts"]),
        n(&t["ech_connections"]),
        n(&t["events_dropped"]),
    );
    s += &format!(
        "kernel queues: {} overflowed, {} queue-full drops, {} socket drops, {} overruns\n",
        n(&t["queue_overflow"]),
        n(&t["queue_dropped"]),
        n(&t["socket_dropped"]),
        n(&t["overruns"]),
    );
    s += &format!(
        "per-source limit (--queue-rate): {} dropped ({} IPv4, {} IPv6)\n",
        n(&t["queue_rate_limited"]),
        n(&t["queue_rate_limited_ipv4"]),
        n(&t["queue_rate_limited_ipv6"]),
    );
    for q in v["queues"].as_array().into_iter().flatten() {
        s += &format!(
            "  queue {}: {} packets, {} connections tracked, {} waiting in the kernel\n",
            n(&q["queue"]),
            n(&q["packets"]),
            n(&q["flows"]),
            n(&q["kernel"]["waiting"]),
        );
    }
    if let Some(stages) = v["stages"].as_array() {
        s += "stage latency (--stage-timings; upper bounds): ";
        let parts: Vec<String> = stages
            .iter()
            .map(|st| {
                let ns = |k: &str| st[k].as_u64().map_or("-".to_string(), micros);
                format!(
                    "{} p50 {} p99 {} ({} samples)",
                    st["stage"].as_str().unwrap_or("?"),
                    ns("p50_ns"),
                    ns("p99_ns"),
                    n(&st["count"])
                )
            })
            .collect();
        s += &parts.join("; ");
        s.push('\n');
    }
    s
}

/// Nanoseconds as microseconds for a person (`>67ms` past the last bucket).
fn micros(ns: u64) -> String {
    if ns == u64::MAX {
        ">67ms".into()
    } else if ns >= 1_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{:.1}us", ns as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::stats::{WorkerStats, bump, snapshot};
    use std::sync::Arc;

    #[test]
    fn stage_latencies_show_only_when_timed() {
        let w = Arc::new(WorkerStats::new(0));
        let v = serde_json::to_value(snapshot(std::slice::from_ref(&w), &[], &[])).unwrap();
        assert!(!describe(&v, std::path::Path::new("s"), true).contains("stage latency"));
        w.stages.record(
            crate::daemon::stages::Stage::Judge,
            std::time::Duration::from_nanos(900),
        );
        let mut snap = snapshot(std::slice::from_ref(&w), &[], &[]);
        snap.stages = Some(crate::daemon::stages::summarize([&w.stages]));
        let text = describe(
            &serde_json::to_value(&snap).unwrap(),
            std::path::Path::new("s"),
            true,
        );
        assert!(
            text.contains("queue_wait p50 - p99 - (0 samples); judge p50 1.0us p99 1.0us (1 samples)"),
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_reads_back_for_a_person() {
        let w = Arc::new(WorkerStats::new(0));
        bump(&w.blocked_by_app[0]);
        bump(&w.marked_blocked);
        bump(&w.resets_sent);
        let mut snap = snapshot(&[w], &[], &["msn".into(), "irc".into()]);
        snap.policy_hash = "abc123abc123".into();
        snap.last_reload = Some("2026-01-01T00:00:00.000000Z".into());
        snap.last_reload_ok = false;
        let v = serde_json::to_value(&snap).unwrap();
        // Our own pid: running.
        assert!(is_running(&v));
        let text = describe(&v, std::path::Path::new("/x/status.json"), true);
        assert!(text.starts_with("appwall: running, pid "), "{text}");
        assert!(
            text.contains("policy: abc123abc123; 0 reloads, 0 refused; last at 2026"),
            "{text}"
        );
        assert!(text.contains("REFUSED"), "{text}");
        assert!(text.contains("blocked by app: msn 1 connections"), "{text}");
        assert!(
            !text.contains("irc"),
            "apps with nothing blocked are left out: {text}"
        );
        assert!(text.contains("resets sent: 1"), "{text}");
        let mut gone = v.clone();
        gone["pid"] = u64::from(u32::MAX).into();
        assert!(!is_running(&gone));
        assert!(describe(&gone, std::path::Path::new("s"), false).contains("stale"));
        gone["running"] = false.into();
        assert!(describe(&gone, std::path::Path::new("s"), false).contains("stopped"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5.9), "5s");
        assert_eq!(duration(125.0), "2m 5s");
        assert_eq!(duration(3.0 * 3600.0 + 120.0), "3h 2m");
        assert_eq!(duration(-1.0), "0s");
        assert_eq!(duration(f64::NAN), "0s");
    }
}
