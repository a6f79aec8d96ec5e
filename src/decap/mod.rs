//! Getting the TCP/UDP packet out of every captured frame: tunnels peeled,
//! fragments reassembled, and every frame that still gives nothing counted
//! under a named cause.
//!
//! The live filter never needs this: the kernel reassembles before NFQUEUE
//! and tunnels end on the router. Captures taken elsewhere hold PPPoE, GRE,
//! IP-in-IP, VXLAN, GTP-U and fragments, and `scan` used to skip those
//! silently. [`Decapsulator::push`] turns one frame into zero or one IP
//! packet ready for [`crate::packet::PacketView::from_ip`], or a
//! [`SkipCause`] that [`Decapsulator::stats`] counts.
//!
//! Guarantees:
//! - never panics on any input; bounded work per frame (at most
//!   [`tunnel::MAX_STEPS`] headers, [`tunnel::MAX_LAYERS`] tunnels,
//!   [`MAX_ROUNDS`] reassemblies);
//! - bounded memory: pending fragments are capped by [`DefragConfig`]
//!   (datagrams, bytes, 65535-byte datagrams) and expire after its timeout,
//!   measured on the capture's own clock (`ts_ns`), never the wall clock;
//! - packets that need no reassembly are borrowed from the frame, not copied;
//! - a reassembled packet has a consistent header (lengths fixed, fragment
//!   fields cleared, IPv6 fragment header removed);
//! - overlapping fragments drop the whole datagram (RFC 5722, as Linux does
//!   for IPv4 and IPv6), so no overlap can make the scan see bytes the
//!   receiver would not;
//! - every frame ends in exactly one outcome: `frames` in [`DecapStats`]
//!   equals `packets` plus the sum of the skip counters.

pub mod defrag;
pub mod ip;
pub mod tunnel;

use std::borrow::Cow;

use serde::Serialize;

use crate::packet::LinkType;

pub use defrag::{DefragConfig, DefragResult, DefragStats, Defragmenter, DropCause};
pub use tunnel::{Decap, Inner, Layer, Layers, Stage, peel, peel_ip};

/// Most reassemblies for one frame (a fragmented tunnel carrying fragments).
pub const MAX_ROUNDS: usize = 4;

/// Why a frame gave no packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipCause {
    /// No IP inside (ARP, LLDP, PPPoE discovery, PPP control, non-IP GTP-U PDU).
    NotIp,
    /// A link, tunnel or IP header cut short or inconsistent.
    Malformed(Stage),
    /// A recognised encapsulation this module does not decode (GRE source
    /// routing or unknown version, unknown ERSPAN version).
    Unsupported(Stage),
    /// More tunnels, headers or reassembly rounds than the bounds allow.
    TooDeep,
    /// A fragment held for reassembly: its bytes come out with the frame that
    /// completes the datagram, or are counted by a defrag drop (timeout...).
    FragmentPending,
    /// A copy of fragment data already held: ignored (the first copy wins).
    FragmentDuplicate,
    /// A fragment dropped, with the datagram when the cause says so.
    FragmentDropped(DropCause),
}

impl SkipCause {
    /// Stable short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            SkipCause::NotIp => "not-ip",
            SkipCause::Malformed(_) => "malformed",
            SkipCause::Unsupported(_) => "unsupported-encapsulation",
            SkipCause::TooDeep => "too-deep",
            SkipCause::FragmentPending => "fragment-pending",
            SkipCause::FragmentDuplicate => "fragment-duplicate",
            SkipCause::FragmentDropped(c) => c.skip_name(),
        }
    }
}

/// What one frame gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// An IP packet for `PacketView::from_ip` (which may still find neither
    /// TCP nor UDP in it, e.g. ICMP).
    Packet {
        /// The packet: borrowed from the frame, owned when reassembled.
        ip: Cow<'a, [u8]>,
        /// Tunnels peeled (and reassemblies), outermost first.
        layers: Layers,
    },
    /// No packet, and why.
    Skip(SkipCause),
}

/// Frame counts by outcome; serialises with the skip causes' stable names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DecapStats {
    /// Frames pushed.
    pub frames: u64,
    /// Frames that gave a packet.
    pub packets: u64,
    /// Packets that came out of at least one tunnel.
    pub tunnelled: u64,
    /// Packets that were reassembled from fragments.
    pub reassembled: u64,
    /// Skipped: `not-ip`.
    pub not_ip: u64,
    /// Skipped: `malformed`.
    pub malformed: u64,
    /// Skipped: `unsupported-encapsulation`.
    pub unsupported_encapsulation: u64,
    /// Skipped: `too-deep`.
    pub too_deep: u64,
    /// Skipped: `fragment-pending`.
    pub fragment_pending: u64,
    /// Skipped: `fragment-duplicate`.
    pub fragment_duplicate: u64,
    /// Skipped: `fragment-dropped-overlap`.
    pub fragment_dropped_overlap: u64,
    /// Skipped: `fragment-dropped-too-big`.
    pub fragment_dropped_too_big: u64,
    /// Skipped: `fragment-dropped-table-full`.
    pub fragment_dropped_table_full: u64,
    /// Skipped: `fragment-dropped-inconsistent`.
    pub fragment_dropped_inconsistent: u64,
    /// Skipped: `fragment-dropped-tiny`.
    pub fragment_dropped_tiny: u64,
    /// Skipped: `fragment-dropped-truncated`.
    pub fragment_dropped_truncated: u64,
}

impl DecapStats {
    /// Skipped frames by stable cause name, zero counts included.
    pub fn skipped(&self) -> [(&'static str, u64); 12] {
        [
            ("not-ip", self.not_ip),
            ("malformed", self.malformed),
            ("unsupported-encapsulation", self.unsupported_encapsulation),
            ("too-deep", self.too_deep),
            ("fragment-pending", self.fragment_pending),
            ("fragment-duplicate", self.fragment_duplicate),
            ("fragment-dropped-overlap", self.fragment_dropped_overlap),
            ("fragment-dropped-too-big", self.fragment_dropped_too_big),
            ("fragment-dropped-table-full", self.fragment_dropped_table_full),
            (
                "fragment-dropped-inconsistent",
                self.fragment_dropped_inconsistent,
            ),
            ("fragment-dropped-tiny", self.fragment_dropped_tiny),
            ("fragment-dropped-truncated", self.fragment_dropped_truncated),
        ]
    }

    fn count(&mut self, cause: SkipCause) {
        let c = match cause {
            SkipCause::NotIp => &mut self.not_ip,
            SkipCause::Malformed(_) => &mut self.malformed,
            SkipCause::Unsupported(_) => &mut self.unsupported_encapsulation,
            SkipCause::TooDeep => &mut self.too_deep,
            SkipCause::FragmentPending => &mut self.fragment_pending,
            SkipCause::FragmentDuplicate => &mut self.fragment_duplicate,
            SkipCause::FragmentDropped(d) => match d {
                DropCause::Overlap => &mut self.fragment_dropped_overlap,
                DropCause::TooBig => &mut self.fragment_dropped_too_big,
                DropCause::TableFull => &mut self.fragment_dropped_table_full,
                DropCause::Inconsistent => &mut self.fragment_dropped_inconsistent,
                DropCause::Tiny => &mut self.fragment_dropped_tiny,
                DropCause::Truncated => &mut self.fragment_dropped_truncated,
                // Timeouts happen to earlier frames, never to the one pushed.
                DropCause::Timeout => &mut self.fragment_pending,
            },
        };
        *c += 1;
    }
}

/// Tunnel peeling plus fragment reassembly for one capture.
#[derive(Debug)]
pub struct Decapsulator {
    defrag: Defragmenter,
    stats: DecapStats,
}

impl Default for Decapsulator {
    fn default() -> Self {
        Decapsulator::new(DefragConfig::default())
    }
}

impl Decapsulator {
    /// A decapsulator whose reassembly is bounded by `config`.
    pub fn new(config: DefragConfig) -> Decapsulator {
        Decapsulator {
            defrag: Defragmenter::new(config),
            stats: DecapStats::default(),
        }
    }

    /// Frame counts so far.
    pub fn stats(&self) -> &DecapStats {
        &self.stats
    }

    /// Reassembly counters (fragments, datagrams, drops including timeouts).
    pub fn defrag_stats(&self) -> &DefragStats {
        self.defrag.stats()
    }

    /// Ends the capture: datagrams still incomplete are dropped and counted
    /// as timed out in [`Decapsulator::defrag_stats`].
    pub fn finish(&mut self) {
        self.defrag.expire_all();
    }

    /// Turns one captured frame into at most one IP packet.
    pub fn push<'a>(&mut self, link: LinkType, ts_ns: u64, frame: &'a [u8]) -> Outcome<'a> {
        self.stats.frames += 1;
        let d = tunnel::peel(link, frame);
        let outcome = match d.inner {
            Inner::Ip(ip) if !defrag::is_fragment(ip) => Outcome::Packet {
                ip: Cow::Borrowed(ip),
                layers: d.layers,
            },
            Inner::Ip(ip) => self.reassemble(ts_ns, ip, d.layers),
            other => Outcome::Skip(skip_of(other)),
        };
        match &outcome {
            Outcome::Packet { layers, .. } => {
                self.stats.packets += 1;
                let s = layers.as_slice();
                if s.iter().any(|l| *l != Layer::Reassembled) {
                    self.stats.tunnelled += 1;
                }
                if s.contains(&Layer::Reassembled) {
                    self.stats.reassembled += 1;
                }
            }
            Outcome::Skip(c) => self.stats.count(*c),
        }
        outcome
    }

    fn reassemble(&mut self, ts_ns: u64, first: &[u8], mut layers: Layers) -> Outcome<'static> {
        let mut owned = match self.defrag.push(ts_ns, first) {
            DefragResult::Complete(v) => v,
            DefragResult::Pending => return Outcome::Skip(SkipCause::FragmentPending),
            DefragResult::Duplicate => return Outcome::Skip(SkipCause::FragmentDuplicate),
            DefragResult::Dropped(c) => return Outcome::Skip(SkipCause::FragmentDropped(c)),
            // is_fragment said yes; stay consistent if the two ever disagree.
            DefragResult::NotFragment => first.to_vec(),
        };
        for _ in 0..MAX_ROUNDS {
            if !layers.push(Layer::Reassembled) {
                return Outcome::Skip(SkipCause::TooDeep);
            }
            let d = tunnel::peel_ip(&owned);
            if !layers.extend(&d.layers) {
                return Outcome::Skip(SkipCause::TooDeep);
            }
            let ip = match d.inner {
                Inner::Ip(ip) => ip,
                other => return Outcome::Skip(skip_of(other)),
            };
            if !defrag::is_fragment(ip) {
                // Cut the inner packet out of the reassembled buffer.
                let v = if ip.len() == owned.len() {
                    owned
                } else {
                    ip.to_vec()
                };
                return Outcome::Packet {
                    ip: Cow::Owned(v),
                    layers,
                };
            }
            let inner = ip.to_vec();
            owned = match self.defrag.push(ts_ns, &inner) {
                DefragResult::Complete(v) => v,
                DefragResult::Pending => return Outcome::Skip(SkipCause::FragmentPending),
                DefragResult::Duplicate => return Outcome::Skip(SkipCause::FragmentDuplicate),
                DefragResult::Dropped(c) => return Outcome::Skip(SkipCause::FragmentDropped(c)),
                DefragResult::NotFragment => inner,
            };
        }
        Outcome::Skip(SkipCause::TooDeep)
    }
}

fn skip_of(inner: Inner<'_>) -> SkipCause {
    match inner {
        Inner::NotIp => SkipCause::NotIp,
        Inner::Malformed(s) => SkipCause::Malformed(s),
        Inner::Unsupported(s) => SkipCause::Unsupported(s),
        Inner::TooDeep | Inner::Ip(_) => SkipCause::TooDeep,
    }
}

#[cfg(test)]
mod tests;
