//! Verdicts and the reasons behind them: the engine's whole answer.

use crate::engine::matcher::SigRef;
use crate::engine::message_rules::RuleRef;
use crate::policy::PortSpec;

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Drop it.
    Drop,
}

/// Why a verdict was reached; small and `Copy` so it can live in flow state
/// and counters without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reason {
    /// A fast-path port rule: the listed opener's destination port belongs to
    /// an app (`app` = its index) or to an `IP:PORT` line (`app` = `None`).
    Port {
        /// App index, if the port came from an app's port list.
        app: Option<u8>,
        /// The port rule that matched.
        port: PortSpec,
    },
    /// A payload signature matched.
    Signature(SigRef),
    /// A message rule held for an HTTP head or TLS hello.
    Rule(RuleRef),
    /// A QUIC connection attempt of a host whose app says `quic = "block"`
    /// (`app` = its index): dropped so the client falls back to TCP.
    QuicBlocked {
        /// App index.
        app: u8,
    },
    /// A listed host opened a connection into a network of its app's
    /// address list (`addresses = [...]`).
    Address {
        /// App index.
        app: u8,
        /// Index of the network in the app's list.
        net: u16,
    },
    /// A hello offering Encrypted Client Hello from a host whose app says
    /// `ech = "block"` (`app` = its index).
    Ech {
        /// App index.
        app: u8,
    },
    /// Retransmitted bytes differed from the bytes already inspected, and
    /// [`crate::engine::EngineConfig::block_conflicts`] is on (by default a
    /// conflict is only counted: [`Decision::conflict`]).
    Evasion,
    /// Still inspecting, nothing found so far.
    #[default]
    Inspecting,
    /// Passed the inspection depth with no match.
    Clean,
    /// Neither endpoint is listed.
    NotListed,
    /// Listed, but none of its apps has payload signatures.
    PortsOnly,
    /// Not a TCP/UDP packet appwall can read; accepted.
    Unparsable,
    /// An HTTP message head longer than
    /// [`crate::engine::http::MAX_HEAD`] on an inspected host: what lies
    /// beyond cannot be judged, so it is not let through.
    OversizedHead,
}

impl Reason {
    /// Number of distinct reason kinds.
    pub const COUNT: usize = 13;
    /// Machine names of the reason kinds, indexed by [`Reason::index`]: the
    /// one table counters, status, events and scan output all use.
    pub const KINDS: [&'static str; Reason::COUNT] = [
        "port",
        "signature",
        "inspecting",
        "clean",
        "not-listed",
        "ports-only",
        "unparsable",
        "evasion",
        "rule",
        "oversized-http-head",
        "quic",
        "address",
        "ech",
    ];

    /// Position of this reason's kind in [`Reason::KINDS`].
    #[inline]
    pub fn index(&self) -> usize {
        match self {
            Reason::Port { .. } => 0,
            Reason::Signature(_) => 1,
            Reason::Inspecting => 2,
            Reason::Clean => 3,
            Reason::NotListed => 4,
            Reason::PortsOnly => 5,
            Reason::Unparsable => 6,
            Reason::Evasion => 7,
            Reason::Rule(_) => 8,
            Reason::OversizedHead => 9,
            Reason::QuicBlocked { .. } => 10,
            Reason::Address { .. } => 11,
            Reason::Ech { .. } => 12,
        }
    }

    /// Short machine name of the outcome, for counters and JSON.
    pub fn kind(&self) -> &'static str {
        Reason::KINDS[self.index()]
    }
}

/// Flow-level outcome reached on this packet, for the kernel fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMark {
    /// The connection is blocked: the kernel may drop the rest.
    Blocked,
    /// The connection is clean: the kernel may stop queueing it.
    Clean,
}

// The reply-only fast path is a separate flag of [`Decision`]
// (`settle_reply`), not a third `FlowMark`, so the worker's exhaustive
// match keeps compiling until it learns the new mark
// ([`crate::kernel::marks::MarkBits::reply_clean_mark`]).

/// The engine's answer for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Accept or drop.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// Set on the packet that settled the connection's fate (once per flow).
    pub mark: Option<FlowMark>,
    /// This packet retransmitted bytes that differ from the ones already
    /// inspected (both versions were inspected; see
    /// [`crate::engine::EngineConfig::block_conflicts`]). For counters.
    pub conflict: bool,
    /// Set once, on the packet after which the reply direction may bypass
    /// the queue while the originator's payload stays queued (an HTTP
    /// client can still send requests): answer it with NF_REPEAT and
    /// [`crate::kernel::marks::MarkBits::reply_clean_mark`].
    pub settle_reply: bool,
}

impl Decision {
    pub(crate) fn accept(reason: Reason) -> Decision {
        Decision {
            verdict: Verdict::Accept,
            reason,
            mark: None,
            conflict: false,
            settle_reply: false,
        }
    }

    pub(crate) fn drop(reason: Reason) -> Decision {
        Decision {
            verdict: Verdict::Drop,
            reason,
            mark: None,
            conflict: false,
            settle_reply: false,
        }
    }

    pub(crate) fn marked(mut self, mark: FlowMark) -> Decision {
        self.mark = Some(mark);
        self
    }

    pub(crate) fn with_conflict(mut self, conflict: bool) -> Decision {
        self.conflict = conflict;
        self
    }
}

/// Longest host or URL kept with a blocked connection, bytes
/// ([`MatchedRequest`]).
pub const MAX_MATCHED: usize = 512;

/// Text of untrusted bytes, at most [`MAX_MATCHED`] bytes of UTF-8 (other
/// bytes shown as U+FFFD), cut on a character boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedText {
    /// The text, cut when longer than [`MAX_MATCHED`] bytes.
    pub text: String,
    /// True when `text` is only the start of the original.
    pub cut: bool,
}

impl BoundedText {
    /// The bounded text of `bytes`.
    pub fn new(bytes: &[u8]) -> BoundedText {
        // Lossy decoding only grows the text: decode what can be kept.
        let head = &bytes[..bytes.len().min(MAX_MATCHED)];
        let mut text = String::from_utf8_lossy(head).into_owned();
        let mut cut = head.len() < bytes.len();
        if text.len() > MAX_MATCHED {
            let mut end = MAX_MATCHED;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            cut = true;
        } else if cut {
            // The byte limit may have split a character: its start bytes
            // became U+FFFD; drop that stub rather than show it.
            let valid = match std::str::from_utf8(head) {
                Ok(_) => head.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => head.len(),
            };
            if valid < head.len() {
                text = String::from_utf8_lossy(&head[..valid]).into_owned();
            }
        }
        BoundedText { text, cut }
    }
}

/// What a message rule judged when it blocked a connection: the request's
/// normalised host (lower case, no port) and, for HTTP, its resolved URL
/// (`scheme://authority/path?query`, as the rule saw it). A rule on a
/// reply head judges headers only and keeps none. Kept only on the
/// blocking path (once per connection), so accepted traffic never
/// allocates one; events and `scan --json` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRequest {
    /// The host the rule saw (HTTP `Host` or URL host, TLS or QUIC server
    /// name, tunnel destination), if any.
    pub host: Option<BoundedText>,
    /// The URL the rule saw (HTTP requests only).
    pub url: Option<BoundedText>,
}

impl MatchedRequest {
    /// The request of `host` and `url` (empty ones count as absent).
    pub fn new(host: Option<&[u8]>, url: Option<&[u8]>) -> MatchedRequest {
        let keep = |b: Option<&[u8]>| b.filter(|b| !b.is_empty()).map(BoundedText::new);
        MatchedRequest {
            host: keep(host),
            url: keep(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_is_cut_on_a_char_boundary_and_marked() {
        let short = BoundedText::new(b"messenger.msn.com");
        assert_eq!(short.text, "messenger.msn.com");
        assert!(!short.cut);
        let exact = BoundedText::new(&[b'a'; MAX_MATCHED]);
        assert_eq!((exact.text.len(), exact.cut), (MAX_MATCHED, false));
        let long = BoundedText::new(&[b'a'; MAX_MATCHED + 1]);
        assert_eq!((long.text.len(), long.cut), (MAX_MATCHED, true));
        // A two-byte character across the limit is left out whole.
        let mut split = vec![b'a'; MAX_MATCHED - 1];
        split.extend_from_slice("é tail".as_bytes());
        let s = BoundedText::new(&split);
        assert!(s.cut && s.text.len() == MAX_MATCHED - 1, "{}", s.text.len());
        assert!(s.text.chars().all(|c| c == 'a'));
        // Invalid bytes become U+FFFD (three bytes each), still bounded.
        let bad = BoundedText::new(&[0xff; MAX_MATCHED]);
        assert!(bad.cut && bad.text.len() <= MAX_MATCHED);
        assert!(bad.text.chars().all(|c| c == '\u{fffd}'));
        let m = MatchedRequest::new(Some(b"h"), Some(b""));
        assert_eq!(m.host.map(|h| h.text), Some("h".into()));
        assert!(m.url.is_none());
    }
}
