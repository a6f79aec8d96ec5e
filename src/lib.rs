//! appwall: a userspace NFQUEUE inspection filter that blocks chat
//! applications (MSN Messenger and friends) by port and by payload, even when
//! they tunnel through HTTP.
//!
//! Layout, one room per concern:
//! - [`policy`]: hosts file and rule library, validated into a [`policy::Policy`];
//! - [`packet`]: checked views over untrusted packet bytes;
//! - [`flow`]: per-connection state and the bounded connection table;
//! - [`engine`]: **where every verdict is made** ([`engine::Engine::judge`]);
//! - [`iptables`]: **where kernel rules are written** (pure text generation);
//! - [`capture`]: pcap/pcapng reading for `scan` and `bench`;
//! - [`queue`], [`install`], [`stats`]: the live filter's workers, rule
//!   installer and counters; [`privilege`]: capability drop for `run`;
//!   [`lab`]: network-namespace lab for `demo` and tests;
//! - [`bench`]: verdict throughput measurement (replay loop, synthetic mixes);
//! - [`squid`]: translating Squid deny rules into a rule file;
//! - [`sample`]: synthetic traffic for the sample capture, tests and benches;
//! - [`commands`]: the thin front ends behind each CLI subcommand.
//!
//! The whole pipeline in a few lines: a policy, the engine, a connection
//! table, and Messenger tunnelled through HTTP judged packet by packet.
//!
//! ```
//! use std::path::Path;
//! use appwall::engine::{Engine, EngineConfig, Verdict};
//! use appwall::flow::FlowTable;
//! use appwall::packet::PacketView;
//! use appwall::policy::{HostsFile, Policy, RuleLibrary};
//! use appwall::sample::{MSN_GATEWAY_OPEN, TcpFlowBuilder};
//!
//! let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 msn\n").unwrap();
//! let policy = Policy::new(RuleLibrary::embedded().unwrap(), &hosts, None).unwrap();
//! let engine = Engine::new(policy, EngineConfig::default()).unwrap();
//! let mut table = FlowTable::new(1024, u64::MAX);
//!
//! let client = ("192.0.2.10".parse().unwrap(), 40000);
//! let server = ("198.51.100.80".parse().unwrap(), 80);
//! let packets = TcpFlowBuilder::new(client, server).packets(&[(true, MSN_GATEWAY_OPEN)]);
//! let mut verdicts = Vec::new();
//! for (i, bytes) in packets.iter().enumerate() {
//!     let p = PacketView::from_ip(bytes).unwrap();
//!     let d = engine.judge(&p, table.get_or_insert(&p, i as u64));
//!     verdicts.push(d.verdict);
//!     if d.verdict == Verdict::Drop {
//!         assert_eq!(engine.reason_text(&d.reason), "signature msn/gateway-dll in http-target");
//!     }
//! }
//! // The handshake passes; the request is dropped, and so is the rest.
//! assert_eq!(&verdicts[..3], &[Verdict::Accept; 3]);
//! assert!(verdicts[3..].iter().all(|v| *v == Verdict::Drop));
//! ```
#![deny(missing_docs)]

pub mod bench;
pub mod capture;
pub mod cli;
pub mod commands;
pub mod decap;
pub mod engine;
pub mod flow;
pub mod install;
pub mod iptables;
pub mod lab;
pub mod packet;
pub mod policy;
pub mod privilege;
pub mod queue;
pub mod sample;
pub mod squid;
pub mod stats;
