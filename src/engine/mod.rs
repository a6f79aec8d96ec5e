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

pub mod http;
pub mod matcher;
pub mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::{DirState, FlowDecision, FlowState, MAX_CARRY, Side};
use crate::packet::{PacketView, TcpInfo};
use crate::policy::{AppSet, Policy, Proto};
use matcher::{Hit, Matcher, MatcherError, StartState};
pub use verdict::{Decision, FlowMark, Reason, Verdict};

/// Tunables of inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// A connection is clean once one direction has passed this many
    /// inspected payload bytes with no match.
    pub depth_bytes: u64,
    /// ...or once this many payload-carrying packets (both directions) passed.
    pub depth_packets: u32,
    /// Out-of-order segments in a row before the stream position resyncs.
    pub max_ahead: u32,
    /// Apply the fast-path port rules (off: judge by payload alone, as
    /// `scan --signatures-only` does to measure signature coverage).
    pub port_rules: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            depth_bytes: 8192,
            depth_packets: 16,
            max_ahead: 8,
            port_rules: true,
        }
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A compiled policy, ready to judge packets.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    matcher: Matcher,
    config: EngineConfig,
    generation: u64,
}

/// Errors building an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Signatures could not be compiled.
    #[error(transparent)]
    Matcher(#[from] MatcherError),
}

impl Engine {
    /// Compiles a policy.
    pub fn new(policy: Policy, config: EngineConfig) -> Result<Engine, EngineError> {
        let matcher = Matcher::build(&policy)?;
        Ok(Engine {
            policy,
            matcher,
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
        &self.matcher
    }

    /// Its tunables.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Judges one packet of the connection `flow` (created for it by the
    /// caller's [`crate::flow::FlowTable`]).
    pub fn judge(&self, p: &PacketView<'_>, flow: &mut FlowState) -> Decision {
        flow.packets += 1;
        let side = flow.side_of(p);
        if let Some(t) = p.tcp {
            if t.rst {
                flow.reset = true;
            }
            if t.fin {
                flow.dirs[side as usize].fin = true;
            }
        }
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
            if let Some(d) = self.setup(flow) {
                return d;
            }
        }
        let hit = match p.proto {
            Proto::Udp => self.inspect_datagram(p.payload, flow.apps),
            Proto::Tcp => {
                let tcp = p.tcp.unwrap_or_default();
                let apps = flow.apps;
                let dir = &mut flow.dirs[side as usize];
                self.inspect_segment(dir, tcp, p.payload, apps)
            }
        };
        if let Some(hit) = hit {
            let r = Reason::Signature(hit.sig);
            flow.decision = FlowDecision::Blocked(r);
            return Decision::drop(r).marked(FlowMark::Blocked);
        }
        let d = &flow.dirs;
        let deep = d[0].bytes.max(d[1].bytes) >= self.config.depth_bytes
            || d[0].payload_packets + d[1].payload_packets >= self.config.depth_packets;
        if deep {
            flow.decision = FlowDecision::Clean;
            return Decision::accept(Reason::Clean).marked(FlowMark::Clean);
        }
        Decision::accept(Reason::Inspecting)
    }

    /// First packet of a connection: host lookup and port rules.
    fn setup(&self, flow: &mut FlowState) -> Option<Decision> {
        let table = self.policy.table();
        let opener = table.lookup(flow.orig_src);
        let other = table.lookup(flow.orig_dst);
        flow.apps = opener.map_or(0, |r| r.apps) | other.map_or(0, |r| r.apps);
        if let Some(rule) = opener.filter(|_| self.config.port_rules)
            && let Some(r) = self.port_rule(rule.apps, &rule.ports, flow.proto, flow.orig_dport)
        {
            flow.decision = FlowDecision::Blocked(r);
            return Some(Decision::drop(r).marked(FlowMark::Blocked));
        }
        if flow.apps & self.matcher.inspected_apps() == 0 {
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

    fn port_rule(
        &self,
        apps: AppSet,
        ports: &[crate::policy::PortSpec],
        proto: Proto,
        dport: u16,
    ) -> Option<Reason> {
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
        let m = &self.matcher;
        let mut start = StartState::default();
        let anchored = Hit::first(
            m.find_segment_start(data, apps),
            m.feed_stream_start(&mut start, data, apps),
        );
        Hit::first(anchored, self.scan_with_context(b"\n", data, apps))
    }

    /// Stream literals in `data`, including those that begin in `context`.
    #[inline]
    fn scan_with_context(&self, context: &[u8], data: &[u8], apps: AppSet) -> Option<Hit> {
        let carry = self.matcher.carry();
        if !context.is_empty() && carry > 0 {
            let mut junction = [0u8; 2 * MAX_CARRY];
            let c = &context[context.len().saturating_sub(carry)..];
            let d = &data[..data.len().min(carry)];
            junction[..c.len()].copy_from_slice(c);
            junction[c.len()..c.len() + d.len()].copy_from_slice(d);
            if let Some(h) = self.matcher.find_stream(&junction[..c.len() + d.len()], apps) {
                // A match that straddles the boundary ends early in `data`.
                return Some(Hit {
                    sig: h.sig,
                    end: h.end.saturating_sub(c.len()),
                });
            }
        }
        self.matcher.find_stream(data, apps)
    }

    /// One TCP segment: sequence bookkeeping, then in-order inspection.
    fn inspect_segment(&self, dir: &mut DirState, tcp: TcpInfo, payload: &[u8], apps: AppSet) -> Option<Hit> {
        let data_seq = tcp.seq.wrapping_add(u32::from(tcp.syn));
        if tcp.syn {
            dir.next_seq = Some(data_seq);
        }
        if payload.is_empty() {
            return None;
        }
        let m = &self.matcher;
        let next = *dir.next_seq.get_or_insert(data_seq);
        let diff = data_seq.wrapping_sub(next) as i32;
        let fresh: &[u8] = if diff == 0 {
            payload
        } else if diff < 0 {
            // Retransmission or overlap: bytes before `next` were inspected
            // already. A copy whose bytes differ could smuggle a signature past
            // the stream, so the whole segment is also scanned on its own.
            let overlap = (diff.unsigned_abs() as usize).min(payload.len());
            if let Some(r) = m
                .find_segment_start(payload, apps)
                .or_else(|| m.find_stream(payload, apps))
            {
                return Some(r);
            }
            &payload[overlap..]
        } else {
            // Ahead of a gap: judge it alone so the gap cannot hide a
            // signature inside it; resync after too many in a row.
            dir.payload_packets += 1;
            if let Some(r) = m
                .find_segment_start(payload, apps)
                .or_else(|| self.scan_with_context(b"", payload, apps))
            {
                return Some(r);
            }
            if dir.payload_packets > self.config.max_ahead && dir.bytes == 0 {
                dir.next_seq = Some(data_seq.wrapping_add(payload.len() as u32));
                dir.tail_len = 0;
            }
            return None;
        };
        if fresh.is_empty() {
            return None;
        }
        dir.next_seq = Some(next.wrapping_add(fresh.len() as u32));
        dir.payload_packets += 1;
        // Every scope is checked; the hit that ends first in the stream is the reason.
        let mut hit = if diff == 0 {
            m.find_segment_start(fresh, apps)
        } else {
            None
        };
        hit = Hit::first(hit, m.feed_stream_start(&mut dir.start, fresh, apps));
        hit = Hit::first(
            hit,
            self.scan_with_context(&dir.tail[..dir.tail_len as usize], fresh, apps),
        );
        if m.wants_http() && !dir.http.is_off() {
            hit = Hit::first(hit, dir.http.feed(m, fresh, apps).map(|(h, _)| h));
        }
        dir.bytes += fresh.len() as u64;
        self.update_tail(dir, fresh);
        hit
    }

    fn update_tail(&self, dir: &mut DirState, fresh: &[u8]) {
        let carry = self.matcher.carry();
        if fresh.len() >= carry {
            dir.tail[..carry].copy_from_slice(&fresh[fresh.len() - carry..]);
            dir.tail_len = carry as u8;
        } else {
            let old = dir.tail_len as usize;
            let keep = (carry - fresh.len()).min(old);
            dir.tail.copy_within(old - keep..old, 0);
            dir.tail[keep..keep + fresh.len()].copy_from_slice(fresh);
            dir.tail_len = (keep + fresh.len()) as u8;
        }
    }

    /// The app a reason names, if any.
    pub fn reason_app(&self, r: &Reason) -> Option<&str> {
        let apps = self.policy.library().apps();
        match r {
            Reason::Port { app: Some(i), .. } => apps.get(*i as usize).map(|a| a.name.as_str()),
            Reason::Signature(s) => apps.get(s.app as usize).map(|a| a.name.as_str()),
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
            Reason::Inspecting => "no match".to_string(),
            other => other.kind().to_string(),
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

    /// The side convention, re-exported for callers that print flows.
    pub fn side_of(flow: &FlowState, p: &PacketView<'_>) -> Side {
        flow.side_of(p)
    }
}

#[cfg(test)]
mod tests;
