//! The verdict engine: where every verdict is made.
//!
//! [`Engine::judge`] is a pure function of (packet, connection state) to a
//! [`Decision`]: it touches no clock, socket, file or lock, so the live
//! filter, the capture scanner and the benchmarks all run exactly this code.
//! An `Engine` is immutable and `Send + Sync`; a reload builds a new one and
//! swaps it whole, and connections notice the new generation and restart
//! their match state, so no packet is judged by a mix of two policies.
//!
//! Order of checks for a connection's first packet: host lookup (both
//! endpoints), then the fast-path port rules exactly as the kernel applies
//! them (opener's source listed, opener's destination port), then payload
//! inspection until a signature matches or the inspection depth is passed.

pub mod compiled;
pub mod http;
pub mod matcher;
pub mod message_rules;
pub mod names;
pub mod state;
pub mod stream;
pub mod tls;
pub mod tunnel;
pub mod uri;
pub mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::packet::{PacketView, Proto};
use crate::policy::{AppSet, Policy, PortSpec};
use compiled::{CompileError, Compiled};
use matcher::{Hit, Matcher, StartState};
pub use state::{ConnState, Connection, FlowDecision};
use stream::Found;
pub use verdict::{Decision, FlowMark, Reason, Verdict};

/// Tunables of inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// A connection is clean once one direction has passed this many
    /// inspected payload bytes with no match, counted from the start of its
    /// current stream (a tunnel restarts the count). An HTTP client
    /// direction is never settled while it can send requests: the depth
    /// then bounds each message's body scan, and once the reply direction
    /// passes it, only the reply direction is handed to the kernel.
    pub depth_bytes: u64,
    /// ...or, when non-zero, once this many payload segments (both
    /// directions) were inspected. Off by default: counting packets lets a
    /// sender that cuts its bytes into tiny segments reach "clean" early.
    pub depth_packets: u32,
    /// Bytes per direction held for segments that arrive ahead of a gap.
    pub reorder_bytes: usize,
    /// Block a connection whose retransmitted bytes differ from the bytes
    /// already inspected (an evasion attempt; see README).
    pub block_conflicts: bool,
    /// Apply the fast-path port rules (off: judge by payload alone, as
    /// `scan --signatures-only` does to measure signature coverage).
    pub port_rules: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            depth_bytes: 8192,
            depth_packets: 0,
            reorder_bytes: 16 * 1024,
            block_conflicts: true,
            port_rules: true,
        }
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A compiled policy, ready to judge packets.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    compiled: Compiled,
    config: EngineConfig,
    generation: u64,
}

/// Errors building an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Signatures or message rules could not be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

impl Engine {
    /// Compiles a policy.
    pub fn new(policy: Policy, config: EngineConfig) -> Result<Engine, EngineError> {
        let compiled = Compiled::build(&policy)?;
        Ok(Engine {
            policy,
            compiled,
            config,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The policy it was built from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The compiled signatures.
    pub fn matcher(&self) -> &Matcher {
        &self.compiled.sigs
    }

    /// Apps with payload signatures or message rules: the hosts listed for
    /// them are queued to userspace; the others are port-only.
    pub fn inspected_apps(&self) -> AppSet {
        self.compiled.inspected_apps()
    }

    /// The generation of this engine: every engine built gets a new one, so
    /// a connection can tell which policy its state belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Its tunables.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Judges one packet of the connection `flow` (created for it by the
    /// caller's [`crate::flow::FlowTable`]).
    pub fn judge(&self, p: &PacketView<'_>, conn: &mut Connection) -> Decision {
        let side = conn.side_of(p);
        let (orig_dport, proto) = (conn.orig_dport, conn.proto);
        let (orig_src, orig_dst) = (conn.orig_src, conn.orig_dst);
        let flow = &mut conn.state;
        match flow.decision {
            FlowDecision::Blocked(r) => return Decision::drop(r),
            FlowDecision::Clean => return Decision::accept(Reason::Clean),
            FlowDecision::Ignored => {
                return Decision::accept(if flow.apps == 0 {
                    Reason::NotListed
                } else {
                    Reason::PortsOnly
                });
            }
            FlowDecision::Inspecting => {}
        }
        if flow.engine_gen != self.generation {
            let first = flow.engine_gen == 0;
            flow.engine_gen = self.generation;
            if !first {
                for d in &mut flow.dirs {
                    d.reset_matching();
                }
            }
            if let Some(d) = self.setup(flow, orig_src, orig_dst, proto, orig_dport) {
                return d;
            }
        }
        if flow.reply_settled && side as usize == 1 {
            // Sent before the kernel took the reply direction over.
            return Decision::accept(Reason::Clean);
        }
        let found = match p.proto {
            Proto::Udp => {
                // Datagrams are judged alone, but count towards the depth so
                // a long UDP conversation is handed to the kernel too.
                let dir = &mut flow.dirs[side as usize];
                dir.bytes += p.payload.len() as u64;
                dir.unit_bytes += p.payload.len() as u64;
                dir.payload_packets += u32::from(!p.payload.is_empty());
                self.inspect_datagram(p.payload, flow.apps).map(Found::Sig)
            }
            Proto::Tcp => {
                let tcp = p.tcp.unwrap_or_default();
                let ctx = stream::Ctx {
                    c: &self.compiled,
                    cfg: &self.config,
                    apps: flow.apps,
                    port: orig_dport,
                };
                let [a, b] = &mut flow.dirs;
                let pair = if side as usize == 0 {
                    stream::Pair { dir: a, other: b }
                } else {
                    stream::Pair { dir: b, other: a }
                };
                stream::inspect_segment(ctx, pair, tcp, p.payload)
            }
        };
        if let Some(found) = found {
            let r = match found {
                Found::Sig(hit) => Reason::Signature(hit.sig),
                Found::Rule(r) => Reason::Rule(r),
                Found::Conflict => Reason::Evasion,
                Found::Port(app, port) => Reason::Port { app: Some(app), port },
                Found::OversizedHead => Reason::OversizedHead,
            };
            flow.decision = FlowDecision::Blocked(r);
            flow.release_inspection();
            return Decision::drop(r).marked(FlowMark::Blocked);
        }
        let d = &flow.dirs;
        let packets = d[0].payload_packets + d[1].payload_packets;
        let depth = self.config.depth_bytes;
        // An HTTP client can send another request at any time: its
        // direction is never settled, whatever came before.
        let client_live = d[0].http.is_live();
        let deep = d[0].unit_bytes.max(d[1].unit_bytes) >= depth
            || (self.config.depth_packets > 0 && packets >= self.config.depth_packets);
        if deep && !client_live {
            flow.decision = FlowDecision::Clean;
            flow.release_inspection();
            return Decision::accept(Reason::Clean).marked(FlowMark::Clean);
        }
        if client_live && !flow.reply_settled && d[1].unit_bytes >= depth {
            // Replies so far were judged clean; requests stay queued.
            flow.reply_settled = true;
            let mut dec = Decision::accept(Reason::Inspecting);
            dec.settle_reply = true;
            return dec;
        }
        Decision::accept(Reason::Inspecting)
    }

    /// First packet of a connection: host lookup and port rules.
    fn setup(
        &self,
        flow: &mut ConnState,
        orig_src: std::net::IpAddr,
        orig_dst: std::net::IpAddr,
        proto: Proto,
        orig_dport: u16,
    ) -> Option<Decision> {
        let table = self.policy.table();
        let opener = table.lookup(orig_src);
        let other = table.lookup(orig_dst);
        flow.apps = opener.map_or(0, |r| r.apps) | other.map_or(0, |r| r.apps);
        if let Some(rule) = opener.filter(|_| self.config.port_rules)
            && let Some(r) = self.port_rule(rule.apps, &rule.ports, proto, orig_dport)
        {
            flow.decision = FlowDecision::Blocked(r);
            return Some(Decision::drop(r).marked(FlowMark::Blocked));
        }
        if flow.apps & self.compiled.inspected_apps() == 0 {
            flow.decision = FlowDecision::Ignored;
            let r = if opener.is_none() && other.is_none() {
                Reason::NotListed
            } else {
                Reason::PortsOnly
            };
            return Some(Decision::accept(r));
        }
        None
    }

    fn port_rule(&self, apps: AppSet, ports: &[PortSpec], proto: Proto, dport: u16) -> Option<Reason> {
        if let Some(p) = ports.iter().find(|p| p.contains(proto, dport)) {
            return Some(Reason::Port { app: None, port: *p });
        }
        for (i, app) in self.policy.library().apps().iter().enumerate() {
            if apps & (1u64 << i) == 0 {
                continue;
            }
            if let Some(p) = app.ports.iter().find(|p| p.contains(proto, dport)) {
                return Some(Reason::Port {
                    app: Some(i as u8),
                    port: *p,
                });
            }
        }
        None
    }

    /// A UDP datagram is a message on its own: no state crosses datagrams.
    fn inspect_datagram(&self, data: &[u8], apps: AppSet) -> Option<Hit> {
        if data.is_empty() {
            return None;
        }
        let m = &self.compiled.sigs;
        let mut start = StartState::default();
        let anchored = Hit::first(
            m.find_segment_start(data, apps),
            m.feed_stream_start(&mut start, data, apps),
        );
        Hit::first(anchored, stream::scan_with_context(m, b"\n", data, apps))
    }

    /// The app a reason names, if any.
    pub fn reason_app(&self, r: &Reason) -> Option<&str> {
        let apps = self.policy.library().apps();
        match r {
            Reason::Port { app: Some(i), .. } => apps.get(*i as usize).map(|a| a.name.as_str()),
            Reason::Signature(s) => apps.get(s.app as usize).map(|a| a.name.as_str()),
            Reason::Rule(r) => apps.get(r.app as usize).map(|a| a.name.as_str()),
            _ => None,
        }
    }

    /// A one-line description of a reason (`signature msn/gateway-dll in http-target`).
    pub fn reason_text(&self, r: &Reason) -> String {
        let apps = self.policy.library().apps();
        match r {
            Reason::Port { app: Some(i), port } => {
                format!(
                    "port {port} of app {}",
                    apps.get(*i as usize).map_or("?", |a| &a.name)
                )
            }
            Reason::Port { app: None, port } => format!("port {port} from the hosts file"),
            Reason::Signature(s) => match apps
                .get(s.app as usize)
                .and_then(|a| a.signatures.get(s.sig as usize).map(|g| (a, g)))
            {
                Some((a, g)) => format!("signature {}/{} in {}", a.name, g.id, g.scope),
                None => "signature ?".to_string(),
            },
            Reason::Evasion => "evasion: retransmitted bytes differ from the inspected ones".to_string(),
            Reason::OversizedHead => format!(
                "oversized-http-head: an HTTP head longer than {} bytes",
                http::MAX_HEAD
            ),
            Reason::Inspecting => "no match".to_string(),
            Reason::Rule(r) => match apps
                .get(r.app as usize)
                .and_then(|a| a.rules.get(r.rule as usize).map(|x| (a, x)))
            {
                Some((a, x)) if x.why.is_empty() => format!("rule {}/{}", a.name, x.id),
                Some((a, x)) => format!("rule {}/{} ({})", a.name, x.id, x.why),
                None => "rule ?".to_string(),
            },
            other => other.kind().to_string(),
        }
    }

    /// The id of the signature or rule a reason names, if any.
    pub fn reason_id(&self, r: &Reason) -> Option<&str> {
        let apps = self.policy.library().apps();
        match r {
            Reason::Signature(_) => self.reason_signature(r).map(|s| s.id.as_str()),
            Reason::Rule(x) => apps
                .get(x.app as usize)
                .and_then(|a| a.rules.get(x.rule as usize))
                .map(|x| x.id.as_str()),
            _ => None,
        }
    }

    /// The signature a reason names, if any.
    pub fn reason_signature(&self, r: &Reason) -> Option<&crate::policy::Signature> {
        match r {
            Reason::Signature(s) => self
                .policy
                .library()
                .apps()
                .get(s.app as usize)
                .and_then(|a| a.signatures.get(s.sig as usize)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
