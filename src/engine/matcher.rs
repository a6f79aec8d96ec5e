//! Compiled signatures: every literal of every app in as few automata as the
//! scopes need, plus the anchored (wildcard) patterns.
//!
//! - Stream literals (`anywhere`, and `line-start` as `"\n" + literal`) go into
//!   one leftmost-first Aho-Corasick automaton per case mode, which gets the
//!   SIMD "packed" prefilter; an overlapping twin is kept for the rare case
//!   where the first hit belongs to an app the flow does not block.
//! - HTTP field literals (`http-target`, `http-header`) go into DFAs that are
//!   stepped byte by byte as the HTTP parser walks a field, so a field split
//!   across segments needs only a 4-byte automaton state.
//! - Anchored patterns (`stream-start`, `segment-start`) are masked compares.
//!
//! Nothing here allocates or locks after [`Matcher::build`].

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind, StartKind};

use crate::policy::library::Grammar;
use crate::policy::library::MAX_STREAM_SIG_LEN;
use crate::policy::{AppSet, Policy, Scope};

use super::names::name_hash;

pub use aho_corasick::automaton::StateID;

/// A signature by position in the library: `apps()[app].signatures[sig]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SigRef {
    /// App index (bit in an [`AppSet`]).
    pub app: u8,
    /// Signature index within the app.
    pub sig: u16,
}

/// A signature hit and where it ended in the bytes searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The signature.
    pub sig: SigRef,
    /// Offset just past the match in the searched bytes (ranks hits in one segment).
    pub end: usize,
}

impl Hit {
    /// The earlier of two optional hits.
    #[inline]
    pub fn first(a: Option<Hit>, b: Option<Hit>) -> Option<Hit> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if y.end < x.end { y } else { x }),
            (x, None) => x,
            (None, y) => y,
        }
    }
}

impl SigRef {
    #[inline]
    fn enabled(self, apps: AppSet) -> bool {
        apps & (1u64 << self.app) != 0
    }
}

/// Most bytes a direction carries over between segments (the longest
/// stream literal minus one is at most this).
pub const MAX_CARRY: usize = 64;

/// Errors while compiling signatures (the library was validated when it
/// loaded, so these mean a size limit of the automata was reached).
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// Header-scoped signatures name more distinct headers than fit an id.
    #[error("cannot compile signatures: more than 255 distinct HTTP headers")]
    TooManyHeaders,
    /// An app with more signatures than a signature reference can name (65,536).
    #[error("cannot compile signatures: more than 65536 signatures in one app")]
    TooManySignatures,
    /// More stream-start signatures than the per-direction bitmap holds.
    #[error("cannot compile signatures: more than 64 stream-start signatures")]
    TooManyStreamStart,
    /// The automaton builder refused the pattern set.
    #[error("cannot compile signatures: {0}")]
    Automaton(#[from] aho_corasick::BuildError),
}

/// One automaton over stream bytes with its pattern-to-signature table.
#[derive(Debug)]
struct StreamSet {
    first: AhoCorasick,
    all: AhoCorasick,
    ids: Vec<SigRef>,
}

impl StreamSet {
    fn build(pats: &[(Vec<u8>, SigRef)], nocase: bool) -> Result<Option<StreamSet>, MatcherError> {
        if pats.is_empty() {
            return Ok(None);
        }
        let bytes: Vec<&[u8]> = pats.iter().map(|(b, _)| b.as_slice()).collect();
        let first = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .ascii_case_insensitive(nocase)
            .kind(Some(AhoCorasickKind::DFA))
            .prefilter(true)
            .build(&bytes)?;
        let all = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(nocase)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&bytes)?;
        Ok(Some(StreamSet {
            first,
            all,
            ids: pats.iter().map(|(_, r)| *r).collect(),
        }))
    }

    #[inline]
    fn find(&self, hay: &[u8], apps: AppSet) -> Option<Hit> {
        let m = self.first.find(Input::new(hay))?;
        let r = self.ids[m.pattern().as_usize()];
        if r.enabled(apps) {
            return Some(Hit { sig: r, end: m.end() });
        }
        // Slow path: the leftmost hit is for an app this flow allows; look at
        // every overlapping hit instead.
        self.all
            .find_overlapping_iter(hay)
            .map(|m| Hit {
                sig: self.ids[m.pattern().as_usize()],
                end: m.end(),
            })
            .find(|h| h.sig.enabled(apps))
    }
}

/// A DFA stepped one byte at a time over an HTTP field.
#[derive(Debug)]
struct FieldSet {
    dfa: DFA,
    /// Signature and, for header scopes, the header id it belongs to.
    ids: Vec<(SigRef, u8)>,
}

impl FieldSet {
    fn build(pats: &[(Vec<u8>, SigRef, u8)], nocase: bool) -> Result<Option<FieldSet>, MatcherError> {
        if pats.is_empty() {
            return Ok(None);
        }
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(nocase)
            .start_kind(StartKind::Unanchored)
            .build(pats.iter().map(|(b, _, _)| b.as_slice()))?;
        Ok(Some(FieldSet {
            dfa,
            ids: pats.iter().map(|(_, r, h)| (*r, *h)).collect(),
        }))
    }

    fn start(&self) -> StateID {
        self.dfa
            .start_state(Anchored::No)
            .expect("unanchored start state exists")
    }
}

/// A masked pattern compared at a fixed offset.
#[derive(Debug, Clone)]
struct AnchoredPat {
    bytes: Vec<u8>,
    mask: Vec<bool>,
    nocase: bool,
    sig: SigRef,
}

impl AnchoredPat {
    #[inline]
    fn byte_ok(&self, i: usize, b: u8) -> bool {
        !self.mask[i] || self.bytes[i] == b || (self.nocase && self.bytes[i].eq_ignore_ascii_case(&b))
    }
}

/// The automaton states of one HTTP field walk (case-sensitive, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldState {
    cs: StateID,
    ci: StateID,
}

/// Progress of the `stream-start` comparison in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartState {
    /// Stream bytes compared so far.
    pub offset: u16,
    /// Patterns still possible (bit i = `stream_start[i]`); 0 when done.
    pub alive: u64,
    /// Set once the comparison has been initialised.
    pub begun: bool,
}

/// Header ids for the parser: 0 means "not a header we look at".
pub type HeaderId = u8;

/// Every compiled signature of a policy.
#[derive(Debug)]
pub struct Matcher {
    stream_cs: Option<StreamSet>,
    stream_ci: Option<StreamSet>,
    carry: usize,
    stream_start: Vec<AnchoredPat>,
    segment_start: Vec<AnchoredPat>,
    max_start_len: usize,
    target_cs: Option<FieldSet>,
    target_ci: Option<FieldSet>,
    header_cs: Option<FieldSet>,
    header_ci: Option<FieldSet>,
    /// Lower-case names of the headers signatures look at; id = index + 1.
    headers: Vec<String>,
    /// `name_hash` of each entry of `headers`.
    header_hashes: Vec<u64>,
    /// Header-presence signatures: (header id, signature).
    presence: Vec<(HeaderId, SigRef)>,
    /// Apps with at least one signature or rule (others are port-only).
    inspected_apps: AppSet,
    /// `line-start` MSNP signatures: (literal, nocase, signature), confirmed
    /// by [`crate::engine::msnp`]'s grammar.
    msnp_lines: Vec<(Vec<u8>, bool, SigRef)>,
    /// `anywhere` MSNP signatures (case-sensitive, case-insensitive), counted
    /// only in streams known as MSNP.
    msnp_any: [Option<StreamSet>; 2],
    /// Apps with MSNP-scoped signatures.
    msnp_apps: AppSet,
    /// `line-start` IRC signatures: (literal, nocase, signature).
    irc_lines: Vec<(Vec<u8>, bool, SigRef)>,
    /// Apps with signatures the line reader checks (MSNP or IRC).
    line_apps: AppSet,
    /// Datagram signatures confirmed by a header check ([`crate::engine::protocols`]).
    datagram: Vec<(AnchoredPat, Grammar)>,
}

impl Matcher {
    /// Compiles all signatures of all apps of the policy's library.
    pub fn build(policy: &Policy) -> Result<Matcher, MatcherError> {
        let mut stream = [Vec::new(), Vec::new()];
        let mut target = [Vec::new(), Vec::new()];
        let mut header = [Vec::new(), Vec::new()];
        let mut stream_start = Vec::new();
        let mut segment_start = Vec::new();
        let mut headers: Vec<String> = Vec::new();
        let mut presence = Vec::new();
        let mut inspected_apps = 0;
        let mut msnp_lines = Vec::new();
        let mut msnp_any = [Vec::new(), Vec::new()];
        let mut msnp_apps = 0;
        let mut irc_lines = Vec::new();
        let mut line_apps = 0;
        let mut datagram = Vec::new();
        for (ai, app) in policy.library().apps().iter().enumerate() {
            for (si, s) in app.signatures.iter().enumerate() {
                inspected_apps |= 1u64 << ai;
                let r = SigRef {
                    // The library holds at most 64 apps.
                    app: u8::try_from(ai).map_err(|_| MatcherError::TooManySignatures)?,
                    sig: u16::try_from(si).map_err(|_| MatcherError::TooManySignatures)?,
                };
                let case = usize::from(s.nocase);
                match s.protocol {
                    Some(Grammar::Irc) => {
                        line_apps |= 1u64 << ai;
                        irc_lines.push((s.bytes.clone(), s.nocase, r));
                        continue;
                    }
                    Some(Grammar::Msnp) => {
                        msnp_apps |= 1u64 << ai;
                        line_apps |= 1u64 << ai;
                        if s.scope == Scope::LineStart {
                            msnp_lines.push((s.bytes.clone(), s.nocase, r));
                        } else {
                            msnp_any[case].push((s.bytes.clone(), r));
                        }
                        continue;
                    }
                    Some(g @ (Grammar::Oicq | Grammar::Utp)) => {
                        let pat = AnchoredPat {
                            mask: s.mask.clone().unwrap_or_else(|| vec![true; s.bytes.len()]),
                            bytes: s.bytes.clone(),
                            nocase: s.nocase,
                            sig: r,
                        };
                        datagram.push((pat, g));
                        continue;
                    }
                    None => {}
                }
                match &s.scope {
                    Scope::Anywhere => stream[case].push((s.bytes.clone(), r)),
                    Scope::LineStart => {
                        let mut b = Vec::with_capacity(s.bytes.len() + 1);
                        b.push(b'\n');
                        b.extend_from_slice(&s.bytes);
                        stream[case].push((b, r));
                    }
                    Scope::StreamStart | Scope::SegmentStart => {
                        let pat = AnchoredPat {
                            mask: s.mask.clone().unwrap_or_else(|| vec![true; s.bytes.len()]),
                            bytes: s.bytes.clone(),
                            nocase: s.nocase,
                            sig: r,
                        };
                        if s.scope == Scope::StreamStart {
                            stream_start.push(pat);
                        } else {
                            segment_start.push(pat);
                        }
                    }
                    Scope::HttpTarget => target[case].push((s.bytes.clone(), r, 0)),
                    Scope::HttpHeader(name) => {
                        let id = match headers.iter().position(|h| h == name) {
                            Some(i) => i + 1,
                            None => {
                                headers.push(name.clone());
                                headers.len()
                            }
                        };
                        let id = u8::try_from(id).map_err(|_| MatcherError::TooManyHeaders)?;
                        if s.bytes.is_empty() {
                            presence.push((id, r));
                        } else {
                            header[case].push((s.bytes.clone(), r, id));
                        }
                    }
                }
            }
        }
        if stream_start.len() > 64 {
            return Err(MatcherError::TooManyStreamStart);
        }
        let carry = stream
            .iter()
            .chain(msnp_any.iter())
            .flatten()
            .map(|(b, _)| b.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        debug_assert!(carry < MAX_STREAM_SIG_LEN + 1);
        let [scs, sci] = stream;
        let [tcs, tci] = target;
        let [hcs, hci] = header;
        let [mcs, mci] = msnp_any;
        Ok(Matcher {
            msnp_lines,
            msnp_any: [StreamSet::build(&mcs, false)?, StreamSet::build(&mci, true)?],
            msnp_apps,
            irc_lines,
            line_apps,
            datagram,
            stream_cs: StreamSet::build(&scs, false)?,
            stream_ci: StreamSet::build(&sci, true)?,
            carry,
            max_start_len: stream_start.iter().map(|p| p.bytes.len()).max().unwrap_or(0),
            stream_start,
            segment_start,
            target_cs: FieldSet::build(&tcs, false)?,
            target_ci: FieldSet::build(&tci, true)?,
            header_cs: FieldSet::build(&hcs, false)?,
            header_ci: FieldSet::build(&hci, true)?,
            header_hashes: headers.iter().map(|h| name_hash(h.as_bytes())).collect(),
            headers,
            presence,
            inspected_apps,
        })
    }

    /// Apps that have payload signatures (message rules add theirs in
    /// [`crate::engine::compiled::Compiled::inspected_apps`]).
    pub fn signature_apps(&self) -> AppSet {
        self.inspected_apps
    }

    /// Bytes of context a direction must keep so a stream literal split
    /// across segments is still found (longest stream literal minus one).
    pub fn carry(&self) -> usize {
        self.carry
    }

    /// True when any HTTP-scoped signature exists.
    pub fn wants_http(&self) -> bool {
        self.target_cs.is_some()
            || self.target_ci.is_some()
            || self.header_cs.is_some()
            || self.header_ci.is_some()
            || !self.presence.is_empty()
    }

    /// Searches stream literals in `hay` for an app in `apps`.
    #[inline]
    pub fn find_stream(&self, hay: &[u8], apps: AppSet) -> Option<Hit> {
        let cs = self.stream_cs.as_ref().and_then(|s| s.find(hay, apps));
        let ci = self.stream_ci.as_ref().and_then(|s| s.find(hay, apps));
        Hit::first(cs, ci)
    }

    /// Compares `segment-start` patterns against one segment or datagram.
    #[inline]
    pub fn find_segment_start(&self, data: &[u8], apps: AppSet) -> Option<Hit> {
        self.segment_start
            .iter()
            .filter(|p| p.sig.enabled(apps) && data.len() >= p.bytes.len())
            .find(|p| {
                data.iter()
                    .enumerate()
                    .take(p.bytes.len())
                    .all(|(i, &b)| p.byte_ok(i, b))
            })
            .map(|p| Hit {
                sig: p.sig,
                end: p.bytes.len(),
            })
    }

    /// Feeds the next stream bytes to the `stream-start` comparison.
    #[inline]
    pub fn feed_stream_start(&self, st: &mut StartState, data: &[u8], apps: AppSet) -> Option<Hit> {
        if !st.begun {
            st.begun = true;
            st.offset = 0;
            st.alive = self
                .stream_start
                .iter()
                .enumerate()
                .filter(|(_, p)| p.sig.enabled(apps))
                .fold(0, |m, (i, _)| m | (1u64 << i));
        }
        if st.alive == 0 {
            return None;
        }
        let off = st.offset as usize;
        let mut alive = st.alive;
        let mut hit = None;
        while alive != 0 {
            let i = alive.trailing_zeros() as usize;
            alive &= alive - 1;
            let p = &self.stream_start[i];
            let end = p.bytes.len().min(off + data.len());
            let ok = (off..end).all(|k| p.byte_ok(k, data[k - off]));
            if !ok {
                st.alive &= !(1u64 << i);
            } else if end == p.bytes.len() {
                st.alive &= !(1u64 << i);
                let h = Hit {
                    sig: p.sig,
                    end: p.bytes.len() - off,
                };
                hit = Hit::first(hit, Some(h));
            }
        }
        // max_start_len is at most the longest anchored pattern (256 bytes).
        st.offset = u16::try_from((off + data.len()).min(self.max_start_len)).unwrap_or(u16::MAX);
        if st.offset as usize >= self.max_start_len {
            st.alive = 0;
        }
        hit
    }

    /// True when an app in `apps` has MSNP-scoped signatures.
    #[inline]
    pub fn has_msnp(&self, apps: AppSet) -> bool {
        self.msnp_apps & apps != 0
    }

    /// True when an app in `apps` has signatures the line reader checks.
    #[inline]
    pub fn has_lines(&self, apps: AppSet) -> bool {
        self.line_apps & apps != 0
    }

    /// The MSNP `line-start` signature whose literal begins `line` (a line
    /// the grammar accepted), for an app in `apps`.
    pub fn msnp_line_sig(&self, line: &[u8], apps: AppSet) -> Option<SigRef> {
        line_sig(&self.msnp_lines, line, apps)
    }

    /// The IRC `line-start` signature whose literal begins `line`, for an
    /// app in `apps` (the caller checks the grammar).
    pub fn irc_line_sig(&self, line: &[u8], apps: AppSet) -> Option<SigRef> {
        line_sig(&self.irc_lines, line, apps)
    }

    /// Searches the `anywhere` MSNP literals (the caller knows the stream is MSNP).
    #[inline]
    pub fn find_msnp_anywhere(&self, hay: &[u8], apps: AppSet) -> Option<Hit> {
        let [cs, ci] = &self.msnp_any;
        Hit::first(
            cs.as_ref().and_then(|s| s.find(hay, apps)),
            ci.as_ref().and_then(|s| s.find(hay, apps)),
        )
    }

    /// Datagram signatures whose prefix matches and whose header check passes.
    pub fn find_datagram(&self, data: &[u8], apps: AppSet) -> Option<Hit> {
        self.datagram
            .iter()
            .filter(|(p, _)| p.sig.enabled(apps) && data.len() >= p.bytes.len())
            .filter(|(p, _)| {
                data.iter()
                    .enumerate()
                    .take(p.bytes.len())
                    .all(|(i, &b)| p.byte_ok(i, b))
            })
            .find(|(_, g)| match g {
                Grammar::Oicq => super::protocols::oicq_datagram(data),
                Grammar::Utp => super::protocols::utp_datagram(data),
                Grammar::Msnp | Grammar::Irc => false,
            })
            .map(|(p, _)| Hit {
                sig: p.sig,
                end: data.len(),
            })
    }

    /// Lower-case names of the headers signatures look at (id = index + 1).
    pub fn header_names(&self) -> &[String] {
        &self.headers
    }

    /// The id of the header whose lower-cased name hashes to `hash` (0: none).
    #[inline]
    pub fn header_id(&self, hash: u64) -> HeaderId {
        self.header_hashes
            .iter()
            .position(|&h| h == hash)
            .map_or(0, |i| HeaderId::try_from(i + 1).unwrap_or(0))
    }

    /// Presence signatures of a header, for an app in `apps`.
    #[inline]
    pub fn header_present(&self, id: HeaderId, apps: AppSet) -> Option<SigRef> {
        self.presence
            .iter()
            .find(|(h, r)| *h == id && r.enabled(apps))
            .map(|(_, r)| *r)
    }

    /// Automaton states at the start of a request target.
    pub fn target_start(&self) -> FieldState {
        field_start(&self.target_cs, &self.target_ci)
    }

    /// Automaton states at the start of a header value.
    pub fn header_start(&self) -> FieldState {
        field_start(&self.header_cs, &self.header_ci)
    }

    /// Steps the request-target automata by one (decoded) byte.
    #[inline]
    pub fn step_target(&self, st: &mut FieldState, b: u8, apps: AppSet) -> Option<SigRef> {
        step_pair(&self.target_cs, &self.target_ci, st, b, 0, apps)
    }

    /// Steps the header-value automata by one byte of header `id`'s value.
    #[inline]
    pub fn step_header(&self, st: &mut FieldState, b: u8, id: HeaderId, apps: AppSet) -> Option<SigRef> {
        step_pair(&self.header_cs, &self.header_ci, st, b, id, apps)
    }
}

/// The first signature of `set` (for an app in `apps`) whose literal begins `line`.
fn line_sig(set: &[(Vec<u8>, bool, SigRef)], line: &[u8], apps: AppSet) -> Option<SigRef> {
    set.iter()
        .find(|(lit, nocase, r)| {
            r.enabled(apps)
                && line.len() >= lit.len()
                && if *nocase {
                    line[..lit.len()].eq_ignore_ascii_case(lit)
                } else {
                    line[..lit.len()] == lit[..]
                }
        })
        .map(|(_, _, r)| *r)
}

fn field_start(cs: &Option<FieldSet>, ci: &Option<FieldSet>) -> FieldState {
    FieldState {
        cs: cs.as_ref().map(FieldSet::start).unwrap_or_default(),
        ci: ci.as_ref().map(FieldSet::start).unwrap_or_default(),
    }
}

#[inline]
fn step_pair(
    cs: &Option<FieldSet>,
    ci: &Option<FieldSet>,
    st: &mut FieldState,
    b: u8,
    header: HeaderId,
    apps: AppSet,
) -> Option<SigRef> {
    let mut hit = None;
    if let Some(set) = cs {
        st.cs = set.dfa.next_state(Anchored::No, st.cs, b);
        hit = hit.or_else(|| field_hit(set, st.cs, header, apps));
    }
    if let Some(set) = ci {
        st.ci = set.dfa.next_state(Anchored::No, st.ci, b);
        hit = hit.or_else(|| field_hit(set, st.ci, header, apps));
    }
    hit
}

#[inline]
fn field_hit(set: &FieldSet, sid: StateID, header: HeaderId, apps: AppSet) -> Option<SigRef> {
    if !set.dfa.is_match(sid) {
        return None;
    }
    (0..set.dfa.match_len(sid))
        .map(|i| set.ids[set.dfa.match_pattern(sid, i).as_usize()])
        .find(|(r, h)| *h == header && r.enabled(apps))
        .map(|(r, _)| r)
}
