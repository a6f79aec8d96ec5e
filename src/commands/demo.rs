//! `appwall demo`: builds a lab of network namespaces (see [`crate::lab`]),
//! runs the real `appwall run` (this executable) in its gateway, drives
//! chat and web traffic through it, and prints what was blocked and why.
//! Everything is removed afterwards, also on error or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cli::DemoArgs;
use crate::commands::AppError;
use crate::lab::{self, Lab, Outcome};

/// One piece of demo traffic.
struct Scenario {
    what: &'static str,
    from_listed: bool,
    v6: bool,
    port: u16,
    payload: Vec<u8>,
    expect_blocked: bool,
}

const MSNP: &[u8] = b"VER 1 MSNP8 CVR0\r\n";

fn gateway_post() -> Vec<u8> {
    let body = b"VER 1 MSNP8 CVR0\r\n";
    let mut v = format!(
        "POST /gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\n\
         Host: 198.51.100.10\r\nUser-Agent: Mozilla/4.0\r\nContent-Type: application/x-msn-messenger\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn web_get() -> Vec<u8> {
    b"GET /index.html?q=msn+news HTTP/1.1\r\nHost: 198.51.100.10\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
        .to_vec()
}

fn web_post() -> Vec<u8> {
    let body = "name=alice&comment=see+you+on+msn+later";
    format!(
        "POST /form HTTP/1.1\r\nHost: 198.51.100.10\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn scenarios() -> Vec<Scenario> {
    let s = |what, from_listed, v6, port, payload: Vec<u8>, expect_blocked| Scenario {
        what,
        from_listed,
        v6,
        port,
        payload,
        expect_blocked,
    };
    vec![
        s("MSNP to 1863", true, false, 1863, MSNP.to_vec(), true),
        s(
            "MSN in HTTP (gateway.dll POST) to 80",
            true,
            false,
            80,
            gateway_post(),
            true,
        ),
        s("MSNP on port 443", true, false, 443, MSNP.to_vec(), true),
        s("MSNP on port 8080", true, false, 8080, MSNP.to_vec(), true),
        s("ordinary GET to 80", true, false, 80, web_get(), false),
        s("ordinary POST to 80", true, false, 80, web_post(), false),
        s(
            "MSNP to 1863, client not listed",
            false,
            false,
            1863,
            MSNP.to_vec(),
            false,
        ),
        s(
            "MSN gateway POST, client not listed",
            false,
            false,
            80,
            gateway_post(),
            false,
        ),
        s("IPv6: MSNP on port 443", true, true, 443, MSNP.to_vec(), true),
        s("IPv6: ordinary GET to 80", true, true, 80, web_get(), false),
    ]
}

/// How the demo runs the filter in its gateway; the table's explanations
/// take the port action from here, so they say what this mode does.
const FILTER_ARGS: [&str; 3] = ["--reset", "--port-action", PORT_ACTION];

/// The `--port-action` of [`FILTER_ARGS`].
const PORT_ACTION: &str = "reject";

/// The kernel port rule a listed client meets on `port` (`msn (tcp/1863)`),
/// from the built-in library the demo's hosts file uses.
fn port_rule(port: u16) -> Option<String> {
    let lib = crate::policy::AppLibrary::embedded().ok()?;
    let app = lib.apps().iter().find(|a| a.name == "msn")?;
    let spec = app
        .ports
        .iter()
        .find(|p| p.contains(crate::packet::Proto::Tcp, port))?;
    Some(format!("{} ({spec})", app.name))
}

/// Why a blocked connection left no event: the kernel port rule (when the
/// filter runs and the port is one of the app's) and what its `action`
/// did, else what was seen.
fn explain_unlogged(rule: Option<&str>, action: &str, outcome: &Outcome) -> String {
    let seen = match outcome {
        Outcome::Timeout => "no answer".to_string(),
        Outcome::Reset => "connection reset".to_string(),
        Outcome::Error(e) => e.clone(),
        Outcome::Answered(_) => "empty answer".to_string(),
    };
    match rule {
        Some(rule) => {
            let what = match (action, outcome) {
                ("reject", Outcome::Reset) => "rejected with a TCP reset".to_string(),
                ("drop", Outcome::Timeout) => "dropped".to_string(),
                (action, _) => format!("--port-action {action}, seen: {seen}"),
            };
            format!("kernel port rule for {rule}: {what}, never queued")
        }
        None => seen,
    }
}

fn check_root() -> Result<(), AppError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(AppError::NeedsRoot("demo"));
    }
    Ok(())
}

/// Runs `appwall demo`.
pub fn run(args: &DemoArgs) -> Result<ExitCode, AppError> {
    check_root()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted)).map_err(AppError::Signals)?;
    }
    let dir = std::env::temp_dir().join(format!("appwall-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(args, &dir, &interrupted);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(args: &DemoArgs, dir: &std::path::Path, interrupted: &AtomicBool) -> Result<ExitCode, AppError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "building the lab (namespaces client, other, gateway, server)..."
    )?;
    let mut lab = Lab::new(dir)?;
    lab.start_server()?;
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "# the demo's listed client\n{} msn\n{} msn\n",
            lab::CLIENT4,
            lab::CLIENT6
        ),
    )?;
    let exe = std::env::current_exe()?;
    let mut filter = if args.no_filter {
        writeln!(
            out,
            "no filter (--no-filter): every connection is expected to pass"
        )?;
        None
    } else {
        writeln!(
            out,
            "starting appwall run {} in the gateway...",
            FILTER_ARGS.join(" ")
        )?;
        Some(lab.start_filter(&exe, &hosts, &FILTER_ARGS, "demo")?)
    };
    let mut rows = Vec::new();
    for s in scenarios() {
        if interrupted.load(Ordering::Relaxed) {
            return Err(AppError::Interrupted);
        }
        let (ns, server) = match (s.from_listed, s.v6) {
            (true, false) => (&lab.client, lab::SERVER4),
            (true, true) => (&lab.client, lab::SERVER6),
            (false, false) => (&lab.other, lab::SERVER4),
            (false, true) => (&lab.other, lab::SERVER6),
        };
        let addr: SocketAddr = SocketAddr::new(
            server
                .parse()
                .map_err(|_| AppError::Lab(lab::LabError::Address(server.to_string())))?,
            s.port,
        );
        let (outcome, port) = lab::tcp_exchange(ns, addr, &s.payload, 1, Duration::from_secs(3));
        rows.push((s, outcome, port));
    }
    // Let the event writer catch up, then stop the filter and read its events.
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = match filter.as_mut() {
        Some(f) => {
            let st = f.stop(Duration::from_secs(10))?;
            if !st.success() {
                writeln!(out, "appwall run exited with {st}")?;
            }
            (f.events(), f.log_text())
        }
        None => (Vec::new(), String::new()),
    };
    writeln!(out)?;
    writeln!(
        out,
        "{:<40} {:<8} {:<9} {:<5} why",
        "traffic", "expected", "result", "ok"
    )?;
    writeln!(out, "{}", "-".repeat(100))?;
    let mut bad = 0;
    for (s, outcome, port) in &rows {
        let blocked = !outcome.passed();
        let why = if blocked {
            events
                .iter()
                .find(|e| e["sport"] == *port && *port != 0)
                .map(|e| {
                    format!(
                        "{} ({})",
                        e["rule"].as_str().unwrap_or("?"),
                        if e["kind"] == "port" {
                            "kernel fast path"
                        } else {
                            "queue"
                        }
                    )
                })
                .unwrap_or_else(|| {
                    let rule = if filter.is_some() && s.from_listed {
                        port_rule(s.port)
                    } else {
                        None
                    };
                    explain_unlogged(rule.as_deref(), PORT_ACTION, outcome)
                })
        } else {
            "answered by the server".into()
        };
        // Without the filter nothing may be blocked: a block then is the lab's fault.
        let expect_blocked = s.expect_blocked && filter.is_some();
        let ok = blocked == expect_blocked;
        if !ok {
            bad += 1;
        }
        writeln!(
            out,
            "{:<40} {:<8} {:<9} {:<5} {}",
            s.what,
            if expect_blocked { "block" } else { "pass" },
            if blocked { "BLOCKED" } else { "passed" },
            if ok { "yes" } else { "NO" },
            why
        )?;
    }
    let left = lab.gateway_leftovers()?;
    writeln!(out)?;
    if left.is_empty() {
        writeln!(
            out,
            "after stop: no appwall rule, chain, set or queue binding left in the gateway"
        )?;
    } else {
        bad += 1;
        writeln!(out, "after stop, left in the gateway:")?;
        for l in &left {
            writeln!(out, "  {l}")?;
        }
    }
    if args.verbose || bad > 0 {
        writeln!(out, "\nappwall run log:\n{log}")?;
    }
    drop(lab);
    writeln!(out, "lab removed")?;
    if bad > 0 {
        writeln!(out, "{bad} result(s) differ from what was expected")?;
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rule_names_the_library_port() {
        assert_eq!(port_rule(1863).as_deref(), Some("msn (tcp/1863)"));
        assert_eq!(port_rule(80), None);
    }

    #[test]
    fn the_explanation_follows_the_mode_and_what_was_seen() {
        let rule = Some("msn (tcp/1863)");
        let cases: [(Option<&str>, &str, Outcome, &str); 6] = [
            (
                rule,
                "reject",
                Outcome::Reset,
                "kernel port rule for msn (tcp/1863): rejected with a TCP reset, never queued",
            ),
            (
                rule,
                "drop",
                Outcome::Timeout,
                "kernel port rule for msn (tcp/1863): dropped, never queued",
            ),
            // A mode and an outcome that disagree are shown as seen.
            (
                rule,
                "reject",
                Outcome::Timeout,
                "kernel port rule for msn (tcp/1863): --port-action reject, seen: no answer, never queued",
            ),
            (
                rule,
                "drop",
                Outcome::Reset,
                "kernel port rule for msn (tcp/1863): --port-action drop, seen: connection reset, never queued",
            ),
            // No filter, or not a port rule: never claim one.
            (None, "reject", Outcome::Reset, "connection reset"),
            (None, "reject", Outcome::Timeout, "no answer"),
        ];
        for (rule, action, outcome, want) in cases {
            assert_eq!(explain_unlogged(rule, action, &outcome), want);
        }
    }
}
