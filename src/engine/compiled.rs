//! A policy compiled for inspection: payload signatures and message rules,
//! built together and handed together to the stream and HTTP inspectors.
//!
//! The two halves stay separate types ([`Matcher`] knows signatures only,
//! [`MessageRules`] owns Squid-style rule semantics) so neither imports the
//! other; this is the one place that joins them.

use crate::engine::matcher::{Matcher, MatcherError};
use crate::engine::message_rules::{MessageRules, RuleError};
use crate::policy::{AppSet, Policy, PortSpec};

/// Everything the inspectors match against.
#[derive(Debug)]
pub struct Compiled {
    /// Payload signatures of every app.
    pub sigs: Matcher,
    /// Message rules (AND of conditions per HTTP head or TLS hello).
    pub rules: MessageRules,
    /// TCP ports of each app (by app index), for destinations named inside
    /// a stream (CONNECT, SOCKS).
    pub ports: Vec<Vec<PortSpec>>,
    /// Some app refuses Encrypted Client Hello (`ech = "block"`): TLS
    /// hellos are read even without host rules.
    pub ech_block: bool,
}

/// Errors compiling a policy for inspection.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Signatures could not be compiled.
    #[error(transparent)]
    Signatures(#[from] MatcherError),
    /// Message rules could not be compiled.
    #[error(transparent)]
    Rules(#[from] RuleError),
}

impl Compiled {
    /// Compiles the signatures and message rules of a policy's library.
    pub fn build(policy: &Policy) -> Result<Compiled, CompileError> {
        Ok(Compiled {
            sigs: Matcher::build(policy)?,
            rules: MessageRules::build(policy)?,
            ports: policy
                .library()
                .apps()
                .iter()
                .map(|a| {
                    a.ports
                        .iter()
                        .filter(|p| p.proto == crate::packet::Proto::Tcp)
                        .copied()
                        .collect()
                })
                .collect(),
            ech_block: policy
                .library()
                .apps()
                .iter()
                .any(|a| a.ech == crate::policy::EchPolicy::Block),
        })
    }

    /// The first app in `apps` whose TCP ports hold `port`, and that port rule.
    pub fn app_port(&self, apps: AppSet, port: u16) -> Option<(u8, PortSpec)> {
        self.ports.iter().enumerate().find_map(|(i, ports)| {
            let bit = 1u64.checked_shl(u32::try_from(i).ok()?)?;
            if apps & bit == 0 {
                return None;
            }
            let p = ports
                .iter()
                .find(|p| p.contains(crate::packet::Proto::Tcp, port))?;
            Some((u8::try_from(i).ok()?, *p))
        })
    }

    /// Apps with at least one signature or rule (others are port-only).
    pub fn inspected_apps(&self) -> AppSet {
        self.sigs.signature_apps() | self.rules.apps()
    }

    /// True when a TLS ClientHello at a stream's start must be read.
    pub fn wants_hello(&self) -> bool {
        self.rules.needs_host() || self.ech_block
    }

    /// True when the HTTP walker has anything to look for.
    pub fn wants_http(&self) -> bool {
        self.rules.any() || self.sigs.wants_http()
    }
}
