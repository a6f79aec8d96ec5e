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
#![deny(missing_docs)]

pub mod bench;
pub mod capture;
pub mod cli;
pub mod commands;
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
