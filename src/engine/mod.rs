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
//! endpoints), then the fast-path port and address rules exactly as the
//! kernel applies them (opener's source listed, opener's destination port,
//! then opener's destination address in an app's `addresses`), then
//! payload inspection until a signature matches or the inspection depth is
//! passed.

pub mod compiled;
pub mod config;
pub mod hello;
pub mod http;
pub mod matcher;
pub mod message_rules;
pub mod msnp;
pub mod names;
pub mod protocols;
pub mod quic;
pub mod state;
pub mod stream;
pub mod tunnel;
pub mod uri;
pub mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::Side;
use crate::packet::{PacketView, Proto};
use crate::policy::{AppSet, EchPolicy, Policy, PortSpec, QuicPolicy};
use compiled::{CompileError, Compiled};
pub use config::EngineConfig;
use matcher::{Hit, Matcher, StartState};
use message_rules::Message;
use quic::{QuicHello, QuicStatus};
pub use state::{ConnState, Connection, FlowDecision};
use stream::Found;
pub use verdict::{BoundedText, Decision, FlowMark, MatchedRequest, Reason, Verdict};

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A compiled policy, ready to judge packets.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    compiled: Compiled,
    config: EngineConfig,
    /// Apps whose hosts may not use QUIC (`quic = "block"`).
    quic_block: AppSet,
    /// Apps whose message rules do not apply to QUIC (`quic = "allow"`).
    quic_allow: AppSet,
    /// Apps whose hosts may not offer Encrypted Client Hello (`ech = "block"`).
    ech_block: AppSet,
    /// Every app's destination networks (`addresses`), with its index:
    /// looked at only when the opener is listed with one of `addr_apps`.
    addresses: Vec<(u8, u16, ipnet::IpNet)>,
    /// Apps with an address list.
    addr_apps: AppSet,
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
        let quic_apps = |want: QuicPolicy| {
            policy
                .library()
                .apps()
                .iter()
                .enumerate()
                .filter(|(_, a)| a.quic == want)
                .fold(0, |s, (i, _)| s | (1u64 << i))
        };
        let (quic_block, quic_allow) = (quic_apps(QuicPolicy::Block), quic_apps(QuicPolicy::Allow));
        let apps = policy.library().apps();
        let ech_block = apps
            .iter()
            .enumerate()
            .filter(|(_, a)| a.ech == EchPolicy::Block)
            .fold(0, |s, (i, _)| s | (1u64 << i));
        // At most MAX_APPS apps and MAX_ADDRESSES networks each (the
        // library refuses more), so the indices fit.
        let addresses: Vec<(u8, u16, ipnet::IpNet)> = apps
            .iter()
            .enumerate()
            .flat_map(|(i, a)| {
                a.addresses
                    .iter()
                    .enumerate()
                    .filter_map(move |(j, n)| Some((u8::try_from(i).ok()?, u16::try_from(j).ok()?, *n)))
            })
            .collect();
        let addr_apps = addresses.iter().fold(0, |s, (i, _, _)| s | (1u64 << i));
        Ok(Engine {
            policy,
            compiled,
            quic_block,
            quic_allow,
            ech_block,
            addresses,
            addr_apps,
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

    /// Apps with payload signatures, message rules, `quic = "block"` or
    /// `ech = "block"`: the hosts listed for them are queued to userspace;
    /// the others are port-only (ports and addresses).
    pub fn inspected_apps(&self) -> AppSet {
        self.compiled.inspected_apps() | self.quic_block | self.ech_block
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
        // A policy reload comes first: what an older engine settled short of
        // blocking (not listed, ports only, clean) is decided again, so no
        // stale "not listed" outlives the reload that lists the host.
        if flow.engine_gen != self.generation && flow.engine_gen != 0 {
            flow.reopen();
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
            if let Some(d) = self.setup(flow, orig_src, orig_dst, proto, orig_dport) {
                return d;
            }
        }
        if flow.reply_settled && side == Side::Reply {
            // Sent before the kernel took the reply direction over.
            return Decision::accept(Reason::Clean);
        }
        let mut conflict = false;
        let found = match p.proto {
            Proto::Udp => {
                // Datagrams are judged alone, but count towards the depth so
                // a long UDP conversation is handed to the kernel too.
                let dir = &mut flow.dirs[side as usize];
                dir.bytes += p.payload.len() as u64;
                dir.unit_bytes += p.payload.len() as u64;
                dir.payload_packets += u32::from(!p.payload.is_empty());
                let quic = if side == Side::Orig && !flow.quic_done {
                    self.inspect_quic(flow, p.payload, orig_dport, orig_src)
                } else {
                    None
                };
                quic.or_else(|| {
                    self.inspect_datagram(p.payload, flow.apps)
                        .map(|h| Reason::Signature(h.sig))
                })
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
                msnp::share(&mut a.msnp, &mut b.msnp);
                // Rules with `src` conditions judge by the client's address.
                a.http.src = Some(orig_src);
                b.http.src = Some(orig_src);
                let pair = if side == Side::Orig {
                    stream::Pair { dir: a, other: b }
                } else {
                    stream::Pair { dir: b, other: a }
                };
                let before = pair.dir.conflicts;
                let found = stream::inspect_segment(ctx, pair, tcp, p.payload);
                conflict = flow.dirs[side as usize].conflicts != before;
                // A TLS hello offering Encrypted Client Hello: its server
                // name is the provider's; apps with `ech = "block"` refuse it.
                let ech = flow.dirs[Side::Orig as usize].hello_ech;
                flow.ech |= ech;
                let ech_apps = flow.apps & self.ech_block;
                found
                    .map(|found| match found {
                        Found::Sig(hit) => Reason::Signature(hit.sig),
                        Found::Rule(r) => Reason::Rule(r),
                        Found::Conflict => Reason::Evasion,
                        Found::Port(app, port) => Reason::Port { app: Some(app), port },
                        Found::OversizedHead => Reason::OversizedHead,
                    })
                    .or_else(|| {
                        (ech && ech_apps != 0).then(|| Reason::Ech {
                            app: u8::try_from(ech_apps.trailing_zeros()).unwrap_or(u8::MAX),
                        })
                    })
            }
        };
        if let Some(r) = found {
            flow.decision = FlowDecision::Blocked(r);
            flow.release_inspection();
            return Decision::drop(r)
                .marked(FlowMark::Blocked)
                .with_conflict(conflict);
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
            return Decision::accept(Reason::Clean)
                .marked(FlowMark::Clean)
                .with_conflict(conflict);
        }
        if client_live && !flow.reply_settled && d[1].unit_bytes >= depth {
            // Replies so far were judged clean; requests stay queued.
            flow.reply_settled = true;
            let mut dec = Decision::accept(Reason::Inspecting).with_conflict(conflict);
            dec.settle_reply = true;
            return dec;
        }
        Decision::accept(Reason::Inspecting).with_conflict(conflict)
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
        if let Some(rule) = opener.filter(|r| self.config.port_rules && r.apps & self.addr_apps != 0)
            && let Some(r) = self.address_rule(rule.apps, orig_dst)
        {
            flow.decision = FlowDecision::Blocked(r);
            return Some(Decision::drop(r).marked(FlowMark::Blocked));
        }
        if flow.apps & self.inspected_apps() == 0 {
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
                    app: u8::try_from(i).ok(),
                    port: *p,
                });
            }
        }
        None
    }

    /// The first network of an app of `apps` that holds `dst`.
    fn address_rule(&self, apps: AppSet, dst: std::net::IpAddr) -> Option<Reason> {
        self.addresses
            .iter()
            .find(|(app, _, net)| apps & (1u64 << app) != 0 && net.contains(&dst))
            .map(|&(app, net, _)| Reason::Address { app, net })
    }

    /// The opener's datagrams of a UDP flow, read as QUIC client Initials:
    /// the app's QUIC policy, then the ClientHello's server name against the
    /// message rules, as for TLS over TCP. Once the answer is in (or the
    /// flow is not QUIC), the flow is not looked at as QUIC again.
    fn inspect_quic(
        &self,
        flow: &mut ConnState,
        data: &[u8],
        port: u16,
        src: std::net::IpAddr,
    ) -> Option<Reason> {
        let wanted = self.compiled.rules.needs_host() || flow.apps & (self.quic_block | self.ech_block) != 0;
        if !wanted || data.is_empty() {
            flow.quic_done = true;
            return None;
        }
        let blocked = || {
            let b = flow.apps & self.quic_block;
            (b != 0).then(|| Reason::QuicBlocked {
                app: u8::try_from(b.trailing_zeros()).unwrap_or(u8::MAX),
            })
        };
        let status = flow
            .quic
            .get_or_insert_with(|| Box::new(QuicHello::new()))
            .push_datagram(data);
        match status {
            QuicStatus::NotQuic => {
                flow.quic = None;
                flow.quic_done = true;
                None
            }
            // QUIC, not yet readable (or of a version without known keys):
            // only the block policy can decide now.
            QuicStatus::NeedMore => blocked(),
            QuicStatus::Error(_) => {
                flow.quic = None;
                flow.quic_done = true;
                blocked()
            }
            QuicStatus::Done(info) => {
                flow.quic = None;
                flow.quic_done = true;
                flow.ech |= info.ech;
                if let Some(r) = blocked() {
                    return Some(r);
                }
                let ech = flow.apps & self.ech_block;
                if info.ech && ech != 0 {
                    return Some(Reason::Ech {
                        app: u8::try_from(ech.trailing_zeros()).unwrap_or(u8::MAX),
                    });
                }
                let name = info.server_name.as_deref()?;
                let mut lower = [0u8; 256];
                let n = name.len().min(lower.len());
                for (o, c) in lower.iter_mut().zip(&name[..n]) {
                    *o = c.to_ascii_lowercase();
                }
                let msg = Message {
                    host: Some(&lower[..n]),
                    port,
                    src: Some(src),
                    ..Message::default()
                };
                let r = self.compiled.rules.eval(&msg, flow.apps & !self.quic_allow)?;
                flow.dirs[Side::Orig as usize].matched =
                    Some(Box::new(MatchedRequest::new(Some(&lower[..n]), None)));
                Some(Reason::Rule(r))
            }
        }
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
        let anchored = Hit::first(anchored, m.find_datagram(data, apps));
        Hit::first(anchored, stream::scan_with_context(m, b"\n", data, apps))
    }

    /// The app a reason names, if any.
    pub fn reason_app(&self, r: &Reason) -> Option<&str> {
        let apps = self.policy.library().apps();
        match r {
            Reason::Port { app: Some(i), .. } => apps.get(*i as usize).map(|a| a.name.as_str()),
            Reason::Signature(s) => apps.get(s.app as usize).map(|a| a.name.as_str()),
            Reason::Rule(r) => apps.get(r.app as usize).map(|a| a.name.as_str()),
            Reason::QuicBlocked { app } | Reason::Ech { app } | Reason::Address { app, .. } => {
                apps.get(*app as usize).map(|a| a.name.as_str())
            }
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
            Reason::QuicBlocked { app } => format!(
                "QUIC blocked for app {} (the client falls back to TCP, where TLS is judged)",
                apps.get(*app as usize).map_or("?", |a| &a.name)
            ),
            Reason::OversizedHead => format!(
                "oversized-http-head: an HTTP head longer than {} bytes",
                http::MAX_HEAD
            ),
            Reason::Address { app, net } => {
                let a = apps.get(*app as usize);
                match a.and_then(|a| a.addresses.get(usize::from(*net))) {
                    Some(n) => format!("address {n} of app {}", a.map_or("?", |a| a.name.as_str())),
                    None => "address ?".to_string(),
                }
            }
            Reason::Ech { app } => format!(
                "encrypted client hello refused for app {} (ech = \"block\")",
                apps.get(*app as usize).map_or("?", |a| &a.name)
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
#[cfg(test)]
mod tests_precision;
#[cfg(test)]
mod tests_quic;
