//! appwall: a userspace NFQUEUE inspection filter that blocks chat
//! applications (MSN Messenger and friends) by port and by payload, even when
//! they tunnel through HTTP.
//!
//! The rooms follow a packet's path; imports only run down this list
//! (a test keeps it so):
//! - [`packet`]: checked views over untrusted packet bytes (+ [`packet::Proto`]);
//! - [`decap`]: tunnels (PPPoE, GRE, IP-in-IP, VXLAN, GTP-U) and IP fragments
//!   peeled off captured frames before the view (`scan`; live, the kernel
//!   reassembles);
//! - [`log`]: log lines on stderr / the journal;
//! - [`policy`]: hosts file, app library (`rules/`), Squid import, loading;
//!   validated into one immutable [`policy::Policy`];
//! - [`flow`]: a generic bounded connection table;
//! - [`engine`]: **where every verdict is made** ([`engine::Engine::judge`]),
//!   with what it remembers per connection in [`engine::state`];
//! - [`source`]: where packets come from (NFQUEUE, captures) and the one
//!   parse -> connection -> judge step ([`source::Tracker`]) every front end uses;
//! - [`kernel`]: **where kernel rules are written** ([`kernel::iptables`]) and
//!   installed, and the connmark contract ([`kernel::marks`]);
//! - [`daemon`]: the live filter (`appwall run`): workers, reload, lock,
//!   counters, status, metrics, events, resets, privileges;
//! - [`sample`], [`bench`](mod@bench), [`lab`]: synthetic traffic, verdict throughput
//!   measurement, the network-namespace lab of `demo` and the live tests;
//! - [`cli`], [`commands`]: the command line and one thin front end per subcommand.
//!
//! Three words keep their meaning everywhere: the **app library** (one TOML
//! file per app under `rules/`, with ports and signatures), **message rules**
//! (Squid-style `[[rule]]` conditions on HTTP heads and TLS hellos, in the
//! app library), and **kernel rules** (the iptables/ipset text appwall
//! installs).
//!
//! The whole pipeline in a few lines: a policy, the engine, a connection
//! table, and Messenger tunnelled through HTTP judged packet by packet.
//!
//! ```
//! use std::path::Path;
//! use appwall::engine::{Engine, EngineConfig, Verdict};
//! use appwall::packet::LinkType;
//! use appwall::source::Tracker;
//! use appwall::policy::{HostsFile, Policy, AppLibrary};
//! use appwall::sample::{MSN_GATEWAY_OPEN, TcpFlowBuilder};
//!
//! let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 msn\n").unwrap();
//! let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
//! let engine = Engine::new(policy, EngineConfig::default()).unwrap();
//! let mut tracker = Tracker::new(1024, u64::MAX);
//!
//! let client = ("192.0.2.10".parse().unwrap(), 40000);
//! let server = ("198.51.100.80".parse().unwrap(), 80);
//! let packets = TcpFlowBuilder::new(client, server).packets(&[(true, MSN_GATEWAY_OPEN)]);
//! let mut verdicts = Vec::new();
//! for (i, bytes) in packets.iter().enumerate() {
//!     let d = tracker.judge(&engine, LinkType::RawIp, bytes, i as u64).unwrap().decision;
//!     verdicts.push(d.verdict);
//!     if d.verdict == Verdict::Drop {
//!         assert_eq!(engine.reason_text(&d.reason), "signature msn/gateway-dll in http-target");
//!     }
//! }
//! // The handshake passes; the request is dropped, and so is the rest.
//! assert_eq!(&verdicts[..3], &[Verdict::Accept; 3]);
//! assert!(verdicts[3..].iter().all(|v| *v == Verdict::Drop));
//! ```
// Test-only builders fold lengths and counters into header fields on purpose.
#![cfg_attr(
    test,
    allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss
    )
)]

pub mod bench;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod decap;
pub mod engine;
pub mod flow;
pub mod kernel;
pub mod lab;
pub mod log;
pub mod packet;
pub mod policy;
pub mod sample;
pub mod source;

#[cfg(test)]
mod layering;
