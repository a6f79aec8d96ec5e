//! `appwall scan`: judge captures offline with the live filter's engine and
//! report per flow.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::cli::ScanArgs;
use crate::commands::{AppError, build_engine, engine_config, load_policy};
use crate::daemon::eve::{self, Alert, FlowFields};
use crate::decap::{DecapStats, Decapsulator, DefragStats, Outcome};
use crate::engine::{Engine, MatchedRequest, Reason, Verdict};
use crate::packet::LinkType;
use crate::policy::Proto;
use crate::source::Tracker;
use crate::source::capture::CaptureReader;

/// What a scan learned about one connection.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// Connection id within the capture.
    pub id: u64,
    /// Capture time of its first packet, nanoseconds since the epoch.
    pub first_ns: u64,
    /// Protocol.
    pub proto: Proto,
    /// First-seen source.
    pub src: IpAddr,
    /// First-seen source port.
    pub sport: u16,
    /// First-seen destination.
    pub dst: IpAddr,
    /// First-seen destination port.
    pub dport: u16,
    /// Packets seen.
    pub packets: u64,
    /// Payload bytes seen.
    pub bytes: u64,
    /// The reason of the first drop, if any packet was dropped.
    pub blocked: Option<Reason>,
    /// Packet number (1-based, within the flow) of the first drop.
    pub blocked_at: Option<u64>,
    /// The reason given to the last packet.
    pub last: Reason,
    /// Packets that retransmitted bytes differing from the inspected ones.
    pub conflicts: u64,
    /// The host and URL a message rule judged when it blocked the flow.
    pub request: Option<MatchedRequest>,
}

/// Counts of one capture's frames, so that none is dropped silently.
#[derive(Debug, Clone, Default)]
pub struct ScanCounts {
    /// Frames read.
    pub frames: u64,
    /// Frames of an unsupported link type.
    pub unsupported_link: u64,
    /// IP packets (after decapsulation and reassembly) that are not TCP/UDP.
    pub not_tcp_udp: u64,
    /// What decapsulation made of the frames (tunnels peeled, skips by cause).
    pub decap: DecapStats,
    /// Fragment reassembly counters.
    pub defrag: DefragStats,
}

/// The result of scanning one capture.
#[derive(Debug)]
pub struct ScanResult {
    /// Flows in first-seen order.
    pub flows: Vec<FlowReport>,
    /// Frame counts.
    pub counts: ScanCounts,
    /// Damage met while reading (the flows hold what came before it).
    pub damage: Option<String>,
}

/// Scans one capture with `engine`, a fresh connection table per file.
pub fn scan_capture(
    engine: &Engine,
    path: &Path,
    max_flows: usize,
    timeout_ns: u64,
) -> Result<ScanResult, AppError> {
    let mut reader = CaptureReader::open(path)?;
    let mut tracker = Tracker::new(max_flows, timeout_ns);
    let mut decap = Decapsulator::default();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut flows: Vec<FlowReport> = Vec::new();
    let mut counts = ScanCounts::default();
    let damage = loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        };
        counts.frames += 1;
        let Some(link) = LinkType::from_pcap(frame.linktype) else {
            counts.unsupported_link += 1;
            continue;
        };
        // Tunnels and fragments first, as the kernel would have done live.
        let ip = match decap.push(link, frame.ts_ns, frame.data) {
            Outcome::Packet { ip, .. } => ip,
            Outcome::Skip(_) => continue,
        };
        let Ok(j) = tracker.judge(engine, LinkType::RawIp, &ip, frame.ts_ns) else {
            counts.not_tcp_udp += 1;
            continue;
        };
        let (p, flow, d) = (j.packet, j.conn, j.decision);
        let i = *index.entry(flow.id).or_insert_with(|| {
            flows.push(FlowReport {
                id: flow.id,
                first_ns: frame.ts_ns,
                proto: flow.proto,
                src: flow.orig_src,
                sport: flow.orig_sport,
                dst: flow.orig_dst,
                dport: flow.orig_dport,
                packets: 0,
                bytes: 0,
                blocked: None,
                blocked_at: None,
                last: Reason::Inspecting,
                conflicts: 0,
                request: None,
            });
            flows.len() - 1
        });
        let r = &mut flows[i];
        r.packets += 1;
        r.bytes += p.payload.len() as u64;
        r.last = d.reason;
        r.conflicts += u64::from(d.conflict);
        if d.verdict == Verdict::Drop && r.blocked.is_none() {
            r.blocked = Some(d.reason);
            r.blocked_at = Some(r.packets);
            r.request = flow.state.matched_request().cloned();
        }
    };
    decap.finish();
    counts.decap = *decap.stats();
    counts.defrag = *decap.defrag_stats();
    Ok(ScanResult {
        flows,
        counts,
        damage,
    })
}

/// The last line for each capture in `--json` (docs/schemas/scan-stats.json):
/// what became of every frame.
#[derive(Serialize)]
struct JsonSummary<'a> {
    timestamp: String,
    /// Always "stats".
    event_type: &'static str,
    file: &'a str,
    frames: u64,
    packets: u64,
    flows: u64,
    blocked: u64,
    tunnelled: u64,
    reassembled: u64,
    not_tcp_udp: u64,
    unsupported_link: u64,
    skipped: std::collections::BTreeMap<&'static str, u64>,
    defrag: &'a DefragStats,
    damage: Option<&'a str>,
}

/// Per-flow counters of a `--json` line.
#[derive(Serialize)]
struct JsonFlowCounts {
    packets: u64,
    bytes: u64,
    blocked_at_packet: Option<u64>,
    conflicts: u64,
}

/// One flow in `--json` (docs/schemas/scan-flow.json): the event log's
/// vocabulary ([`crate::daemon::eve`]) with `event_type` "flow".
#[derive(Serialize)]
struct JsonFlow<'a> {
    timestamp: String,
    /// Always "flow".
    event_type: &'static str,
    file: &'a str,
    #[serde(flatten)]
    fields: FlowFields,
    flow: JsonFlowCounts,
    alert: Alert,
}

/// Runs `appwall scan`.
pub fn run(args: &ScanArgs) -> Result<ExitCode, AppError> {
    let policy = load_policy(&args.policy, true)?;
    let mut config = engine_config(&args.engine);
    config.port_rules = !args.signatures_only;
    let engine = build_engine(policy, config)?;
    let timeout_ns = args.engine.flow_timeout.saturating_mul(1_000_000_000);
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    let mut total = (0u64, 0u64, 0u64);
    for path in &args.captures {
        let res = match scan_capture(&engine, path, args.engine.max_flows, timeout_ns) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("appwall: error: {e}");
                failed = true;
                continue;
            }
        };
        let name = path.display().to_string();
        if let Some(d) = &res.damage {
            eprintln!("appwall: warning: {d}; results cover what was read");
        }
        let blocked = res.flows.iter().filter(|f| f.blocked.is_some()).count() as u64;
        total.0 += res.flows.len() as u64;
        total.1 += blocked;
        total.2 += res.counts.frames;
        if args.json {
            for f in &res.flows {
                let reason = f.blocked.unwrap_or(f.last);
                let alert =
                    Alert::new(&engine, &reason, f.blocked.is_some()).with_request(f.request.as_ref());
                let app = if f.blocked.is_some() {
                    alert.app.as_deref()
                } else {
                    None
                };
                let j = JsonFlow {
                    timestamp: eve::timestamp_ns(f.first_ns),
                    event_type: "flow",
                    file: &name,
                    fields: FlowFields::new(f.id, f.proto, (f.src, f.sport), (f.dst, f.dport), app),
                    flow: JsonFlowCounts {
                        packets: f.packets,
                        bytes: f.bytes,
                        blocked_at_packet: f.blocked_at,
                        conflicts: f.conflicts,
                    },
                    alert,
                };
                serde_json::to_writer(&mut out, &j)?;
                writeln!(out)?;
            }
            let d = &res.counts.decap;
            let summary = JsonSummary {
                timestamp: eve::timestamp(std::time::SystemTime::now()),
                event_type: "stats",
                file: &name,
                frames: res.counts.frames,
                packets: d.packets,
                flows: res.flows.len() as u64,
                blocked,
                tunnelled: d.tunnelled,
                reassembled: d.reassembled,
                not_tcp_udp: res.counts.not_tcp_udp,
                unsupported_link: res.counts.unsupported_link,
                skipped: d.skipped().into_iter().collect(),
                defrag: &res.counts.defrag,
                damage: res.damage.as_deref(),
            };
            serde_json::to_writer(&mut out, &summary)?;
            writeln!(out)?;
        } else {
            writeln!(out, "== {name}")?;
            writeln!(
                out,
                "{:<5} {:<41} {:<41} {:>6}  {:<7} {:<10} REASON",
                "PROTO", "SOURCE", "DESTINATION", "PKTS", "VERDICT", "APP"
            )?;
            for f in res
                .flows
                .iter()
                .filter(|f| !args.blocked_only || f.blocked.is_some())
            {
                let reason = f.blocked.unwrap_or(f.last);
                writeln!(
                    out,
                    "{:<5} {:<41} {:<41} {:>6}  {:<7} {:<10} {}",
                    f.proto.name(),
                    endpoint(f.src, f.sport),
                    endpoint(f.dst, f.dport),
                    f.packets,
                    if f.blocked.is_some() { "block" } else { "allow" },
                    f.blocked
                        .as_ref()
                        .and_then(|r| engine.reason_app(r))
                        .unwrap_or("-"),
                    engine.reason_text(&reason)
                )?;
            }
            writeln!(
                out,
                "-- {} frames, {} flows: {} blocked, {} allowed; {} frames not TCP/UDP, {} of unsupported link type",
                res.counts.frames,
                res.flows.len(),
                blocked,
                res.flows.len() as u64 - blocked,
                res.counts.not_tcp_udp,
                res.counts.unsupported_link
            )?;
            let d = &res.counts.decap;
            let skipped: Vec<String> = d
                .skipped()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| format!("{n} {c}"))
                .collect();
            if d.tunnelled + d.reassembled > 0 || !skipped.is_empty() {
                writeln!(
                    out,
                    "-- decapsulated: {} from tunnels, {} reassembled from fragments; skipped: {}",
                    d.tunnelled,
                    d.reassembled,
                    if skipped.is_empty() {
                        "none".to_string()
                    } else {
                        skipped.join(", ")
                    }
                )?;
            }
        }
    }
    if !args.json && args.captures.len() > 1 {
        writeln!(
            out,
            "== total: {} frames, {} flows, {} blocked",
            total.2, total.0, total.1
        )?;
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
