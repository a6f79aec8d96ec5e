//! Metrics for Prometheus-style collectors: the status [`Snapshot`] as
//! OpenMetrics text, written beside the status file (`<status>.prom`, for
//! node_exporter's textfile collector) and served by an optional tiny HTTP
//! endpoint (`--metrics-listen ADDR`, `GET /metrics`).
//!
//! Guarantees: every family and every label value (each reason kind, each
//! app of the library) is present from the first write, with 0, so rates
//! and alerts never meet a missing series; the text ends with `# EOF`. The
//! endpoint is bounded: one connection at a time, two-second read and write
//! timeouts, a request head of at most 8 KiB, `Connection: close`, and the
//! snapshot behind it is taken at most once a second however often it is
//! scraped (taking one reads kernel counters through iptables).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::daemon::stages::{BUCKETS, StageSummary, bucket_bound_ns};
use crate::daemon::stats::Snapshot;
use crate::log::{Level, log};

/// The Content-Type of OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Largest request head the endpoint reads.
pub const MAX_REQUEST: usize = 8192;
/// Read and write timeout of one scrape.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    openmetrics: bool,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // OpenMetrics names a counter family without `_total`; the classic
        // text format (the textfile collector) names it as its samples.
        let fam = if kind == "counter" && !self.openmetrics {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        let _ = writeln!(self.text, "# TYPE {fam} {kind}");
        let _ = writeln!(self.text, "# HELP {fam} {help}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.text, "{name}");
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(&format!("{name}_total"), &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// `--stage-timings`: one histogram per stage, in seconds, cumulative
/// buckets at the powers of two the workers count in.
fn stage_histograms(o: &mut Out, stages: &[StageSummary]) {
    o.family(
        "appwall_stage_latency_seconds",
        "histogram",
        "Latency of a queued packet per stage (--stage-timings): queue_wait, judge, verdict.",
    );
    for st in stages {
        let mut cumulative = 0u64;
        for (i, c) in st.buckets.iter().enumerate() {
            cumulative += c;
            let le = if i < BUCKETS {
                format!("{:e}", bucket_bound_ns(i) as f64 / 1e9)
            } else {
                "+Inf".to_string()
            };
            o.sample(
                "appwall_stage_latency_seconds_bucket",
                &[("stage", st.stage), ("le", &le)],
                cumulative,
            );
        }
        o.sample(
            "appwall_stage_latency_seconds_count",
            &[("stage", st.stage)],
            st.count,
        );
        o.sample(
            "appwall_stage_latency_seconds_sum",
            &[("stage", st.stage)],
            st.sum_ns as f64 / 1e9,
        );
    }
}

/// The snapshot as OpenMetrics text (`openmetrics`), or as the classic
/// Prometheus text format the textfile collector reads (same samples, the
/// policy hash as a gauge instead of an info family).
pub fn render(s: &Snapshot, openmetrics: bool) -> String {
    let mut o = Out {
        text: String::new(),
        openmetrics,
    };
    let t = &s.totals;
    o.gauge(
        "appwall_up",
        "1 while the filter runs, 0 in the last write at exit.",
        u8::from(s.running),
    );
    o.gauge(
        "appwall_uptime_seconds",
        "Seconds since start.",
        format!("{:.3}", s.uptime),
    );
    o.counter("appwall_reloads", "Policy reloads applied.", s.reloads);
    o.counter(
        "appwall_reload_failures",
        "Policy reloads refused.",
        s.reload_failures,
    );
    o.gauge(
        "appwall_last_reload_success",
        "1 when the last reload was applied (or none was tried), 0 when it was refused.",
        u8::from(s.last_reload_ok),
    );
    if openmetrics {
        o.family(
            "appwall_policy",
            "info",
            "Short SHA-256 of the policy files in force.",
        );
        o.sample("appwall_policy_info", &[("hash", &s.policy_hash)], 1);
    } else {
        o.family(
            "appwall_policy_info",
            "gauge",
            "Short SHA-256 of the policy files in force.",
        );
        o.sample("appwall_policy_info", &[("hash", &s.policy_hash)], 1);
    }
    o.counter("appwall_bytes", "IP bytes judged.", t.bytes);
    o.family(
        "appwall_packets",
        "counter",
        "Packets judged, by verdict and reason.",
    );
    for (verdict, by_reason) in &s.packets_by_verdict {
        if let Some(m) = by_reason.as_object() {
            for (reason, n) in m {
                o.sample(
                    "appwall_packets_total",
                    &[("verdict", verdict), ("reason", reason)],
                    n.as_u64().unwrap_or(0),
                );
            }
        }
    }
    let per_app: [(&str, &str, &str); 3] = [
        (
            "appwall_blocked_connections",
            "blocked_connections",
            "Connections blocked in userspace, by app.",
        ),
        (
            "appwall_dropped_packets",
            "dropped_packets",
            "Packets dropped in userspace, by app.",
        ),
        (
            "appwall_kernel_blocked_packets",
            "kernel_blocked_packets",
            "Packets the kernel port rules dropped or rejected, by app.",
        ),
    ];
    for (name, key, help) in per_app {
        o.family(name, "counter", help);
        for (app, v) in &s.apps {
            o.sample(
                &format!("{name}_total"),
                &[("app", app)],
                v[key].as_u64().unwrap_or(0),
            );
        }
    }
    o.counter(
        "appwall_clean_connections",
        "Connections handed to the kernel as clean.",
        t.clean_connections,
    );
    o.counter(
        "appwall_conflicts",
        "Retransmissions whose bytes differed from the inspected ones.",
        t.conflicts,
    );
    o.counter(
        "appwall_ech_connections",
        "Settled connections that offered Encrypted Client Hello.",
        t.ech_connections,
    );
    o.counter(
        "appwall_resets_sent",
        "TCP resets sent for blocked connections.",
        t.resets_sent,
    );
    o.counter(
        "appwall_reset_errors",
        "TCP resets that could not be sent.",
        t.reset_errors,
    );
    o.counter(
        "appwall_events_dropped",
        "Events lost because the event writer fell behind.",
        t.events_dropped,
    );
    o.counter(
        "appwall_queue_overflow",
        "Packets no queue took because it was full (passed uninspected when failing open).",
        t.queue_overflow,
    );
    o.family(
        "appwall_queue_rate_limited",
        "counter",
        "Packets the per-source queue limit (--queue-rate) dropped in the kernel, by family.",
    );
    for (family, n) in [
        ("ipv4", t.queue_rate_limited_ipv4),
        ("ipv6", t.queue_rate_limited_ipv6),
    ] {
        o.sample("appwall_queue_rate_limited_total", &[("family", family)], n);
    }
    o.counter(
        "appwall_queue_dropped",
        "Packets the kernel dropped because a queue was full.",
        t.queue_dropped,
    );
    o.counter(
        "appwall_socket_dropped",
        "Packets the kernel could not hand to appwall's sockets.",
        t.socket_dropped,
    );
    o.counter(
        "appwall_overruns",
        "Socket overruns (ENOBUFS) seen by the workers.",
        t.overruns,
    );
    o.gauge(
        "appwall_flows",
        "Connections in the workers' tables.",
        s.queues.iter().map(|q| q.flows).sum::<u64>(),
    );
    if let Some(stages) = &s.stages {
        stage_histograms(&mut o, stages);
    }
    o.text.push_str("# EOF\n");
    o.text
}

/// What the endpoint answers for one request head.
fn respond(head: &[u8], body: &dyn Fn() -> String) -> (u16, &'static str, String) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return (400, "Bad Request", "bad request\n".into());
    }
    if method != "GET" && method != "HEAD" {
        return (405, "Method Not Allowed", "GET /metrics only\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return (404, "Not Found", "GET /metrics\n".into());
    }
    (200, "OK", body())
}

/// Serves one connection: reads the head (bounded), writes the answer.
fn serve_one(mut conn: TcpStream, body: &dyn Fn() -> String) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_REQUEST {
            let _ = conn.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            // Read a bounded rest so closing does not reset the answer away.
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = std::io::copy(&mut (&mut conn).take(1 << 16), &mut std::io::sink());
            return;
        }
    };
    if !complete {
        return;
    }
    let (code, why, text) = respond(&head, body);
    let ctype = if code == 200 {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let is_head = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {code} {why}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    if !is_head {
        out.push_str(&text);
    }
    let _ = conn.write_all(out.as_bytes());
}

/// Answers scrapes on `listener`, one connection at a time, until `stop`.
pub fn serve(listener: TcpListener, body: Arc<dyn Fn() -> String + Send + Sync>, stop: Arc<AtomicBool>) {
    if listener.set_nonblocking(true).is_err() {
        log(
            Level::Error,
            format_args!("metrics endpoint: cannot poll its socket; not serving"),
        );
        return;
    }
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                if conn.set_nonblocking(false).is_ok() {
                    serve_one(conn, &*body);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::stages::{Stage, summarize};
    use crate::daemon::stats::{WorkerStats, bump, snapshot};

    fn snap() -> Snapshot {
        let w = Arc::new(WorkerStats::new(0));
        bump(&w.blocked_by_app[1]);
        bump(&w.conflicts);
        let mut s = snapshot(&[w], &[], &["msn".into(), "irc".into()]);
        s.policy_hash = "0123456789ab".into();
        s
    }

    #[test]
    fn stage_latencies_are_cumulative_histograms_only_when_timed() {
        assert!(!render(&snap(), true).contains("appwall_stage_latency"));
        let w = Arc::new(WorkerStats::new(0));
        w.stages.record(Stage::Judge, Duration::from_nanos(100));
        w.stages.record(Stage::Judge, Duration::from_micros(3));
        let mut s = snapshot(std::slice::from_ref(&w), &[], &["msn".into()]);
        s.stages = Some(summarize([&w.stages]));
        let text = render(&s, true);
        assert!(
            text.contains("# TYPE appwall_stage_latency_seconds histogram"),
            "{text}"
        );
        let line = |le: &str| format!("appwall_stage_latency_seconds_bucket{{stage=\"judge\",le=\"{le}\"}} ");
        assert!(text.contains(&(line("1.28e-7") + "1\n")), "{text}");
        assert!(text.contains(&(line("4.096e-6") + "2\n")), "{text}");
        assert!(text.contains(&(line("+Inf") + "2\n")), "{text}");
        assert!(text.contains("appwall_stage_latency_seconds_count{stage=\"judge\"} 2\n"));
        assert!(text.contains("appwall_stage_latency_seconds_count{stage=\"queue_wait\"} 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_series_is_present_and_the_text_ends_with_eof() {
        let text = render(&snap(), true);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        // Every reason kind for both verdicts, zero or not.
        for r in crate::engine::Reason::KINDS {
            for v in ["accept", "drop"] {
                let line = format!("appwall_packets_total{{verdict=\"{v}\",reason=\"{r}\"}} 0");
                assert!(text.contains(&line), "{line} missing:\n{text}");
            }
        }
        assert!(
            text.contains("appwall_blocked_connections_total{app=\"irc\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("appwall_blocked_connections_total{app=\"msn\"} 0"),
            "{text}"
        );
        assert!(text.contains("appwall_kernel_blocked_packets_total{app=\"(hosts-file port)\"} 0"));
        assert!(text.contains("appwall_conflicts_total 1"), "{text}");
        assert!(text.contains("appwall_policy_info{hash=\"0123456789ab\"} 1"));
        // Each family is typed once, before its samples.
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(l.to_string()), "twice: {l}");
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let fam = name.strip_suffix("_total").unwrap_or(name);
            let fam = if fam == "appwall_policy_info" {
                "appwall_policy"
            } else {
                fam
            };
            assert!(
                seen.iter().any(|t| t.split(' ').nth(2) == Some(fam)),
                "{name} has no # TYPE before it"
            );
        }
        let classic = render(&snap(), false);
        assert!(classic.contains("# TYPE appwall_packets_total counter"));
        assert!(!classic.contains(" info\n"));
    }

    #[test]
    fn the_endpoint_answers_get_metrics_only() {
        let body = || "x 1\n# EOF\n".to_string();
        assert_eq!(respond(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &body).0, 200);
        assert_eq!(respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &body).0, 200);
        assert_eq!(respond(b"GET / HTTP/1.1\r\n\r\n", &body).0, 404);
        assert_eq!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &body).0, 405);
        assert_eq!(respond(b"GET /metrics\r\n\r\n", &body).0, 400);
        assert_eq!(respond(b"\xff\xfe", &body).0, 400);
    }

    #[test]
    fn the_endpoint_serves_a_real_socket_and_refuses_huge_heads() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || serve(l, Arc::new(|| "a 1\n# EOF\n".to_string()), stop)
        });
        let get = |req: &[u8]| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req).unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        };
        let ok = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE) && ok.ends_with("# EOF\n"), "{ok}");
        let big = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 10_000]].concat();
        assert!(get(&big).starts_with("HTTP/1.1 431"));
        stop.store(true, Relaxed);
        t.join().unwrap();
    }
}
