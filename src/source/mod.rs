//! Where packets come from, and the one step every front end takes with
//! each of them: parse, find its connection, judge.
//!
//! The live filter reads a kernel queue ([`nfqueue`]), `scan` and `bench`
//! read captures ([`capture`]), tests and fuzzing build packets in memory;
//! all of them hand the bytes to a [`Tracker`], so every front end runs the
//! same parse -> connection -> [`crate::engine::Engine::judge`] path.
//! [`PacketSource`] is the interface of a queue that expects a verdict back
//! for each packet (the NFQUEUE socket, or a mock in tests).

pub mod capture;
pub mod nfqueue;
mod tracker;

use std::io;

pub use crate::flow::CtDir;

pub use tracker::{Judged, Tracker};

/// What the worker tells the kernel about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueVerdict {
    /// `NF_ACCEPT`.
    Accept,
    /// `NF_DROP`.
    Drop,
    /// `NF_REPEAT` with this nfmark: the mangle chain saves it to the
    /// connection and acts on it.
    Repeat(u32),
}

/// One receive attempt.
#[derive(Debug)]
pub enum Received<P> {
    /// A packet waiting for its verdict.
    Packet(P),
    /// Nothing arrived within the poll interval.
    Idle,
    /// The socket buffer overflowed (ENOBUFS): packets were lost before
    /// reaching userspace; keep going.
    Overrun,
    /// A message from the kernel could not be read and was skipped; keep going.
    Malformed,
}

/// Where queued packets come from and where their verdicts go.
pub trait PacketSource {
    /// A packet waiting for its verdict; must be passed back to [`PacketSource::verdict`].
    type Packet;
    /// Waits up to the poll interval for the next packet.
    fn recv(&mut self) -> Result<Received<Self::Packet>, QueueError>;
    /// Layer-3 bytes of a packet.
    fn payload(p: &Self::Packet) -> &[u8];
    /// The packet's current nfmark.
    fn mark(p: &Self::Packet) -> u32;
    /// True for a GSO super-packet.
    fn is_gso(p: &Self::Packet) -> bool;
    /// True when the copy range cut the packet short.
    fn is_truncated(p: &Self::Packet) -> bool;
    /// When the kernel received the packet, if it says (for the queue-wait
    /// stage of `--stage-timings`).
    fn timestamp(_p: &Self::Packet) -> Option<std::time::SystemTime> {
        None
    }
    /// Returns the packet to the kernel with a verdict.
    fn verdict(&mut self, p: Self::Packet, v: QueueVerdict) -> Result<(), QueueError>;
    /// From now on `recv` must not wait: the worker drains what is left.
    fn start_draining(&mut self) {}
}

/// Errors of the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The netlink socket could not be opened.
    #[error("cannot open the netfilter queue socket: {0} (appwall run needs root or CAP_NET_ADMIN)")]
    Open(#[source] io::Error),
    /// Another process owns the queue.
    #[error(
        "NFQUEUE queue {queue} is already bound by another process (netlink port id {portid}); \
         only one appwall may own a queue: stop the other instance or choose another --queue"
    )]
    Busy {
        /// Queue number.
        queue: u16,
        /// The owner's netlink port id (usually its pid).
        portid: u32,
    },
    /// A queue setting was refused.
    #[error("queue {queue}: cannot {what}: {source}")]
    Config {
        /// Queue number.
        queue: u16,
        /// The setting.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Receiving failed for good.
    #[error("queue {queue}: receive failed: {source}")]
    Recv {
        /// Queue number.
        queue: u16,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kernel did not take a verdict.
    #[error("queue {queue}: verdict not sent: {source}")]
    Verdict {
        /// Queue number.
        queue: u16,
        /// The error.
        #[source]
        source: io::Error,
    },
}
