//! Message rules: AND-combinations of conditions on one HTTP request, HTTP
//! reply or TLS ClientHello (what Squid ACL lines express), minus their
//! exceptions (Squid's earlier `allow` lines), with the connection's client
//! address for `src` conditions. Schedules (`when`) are not seen here: the
//! daemon compiles only the rules in force (`Policy::at`).
//!
//! The HTTP walker collects the fields rules look at (method, URL, path, host,
//! wanted headers; bounded) and calls [`MessageRules::eval`] once per message
//! head, so a rule sees the whole head however it was segmented. Regular
//! expressions are prefiltered: the literal prefixes every match must start
//! with are searched first (Aho-Corasick), and the regex runs only when one is
//! present.

use std::collections::HashSet;

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::engine::names::name_hash;
use crate::engine::uri;
use crate::policy::{AppSet, Field, Policy, PortSpec, Proto, Test};

/// A rule by position in the library: `apps()[app].rules[rule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// App index.
    pub app: u8,
    /// Rule index within the app.
    pub rule: u16,
}

/// Errors compiling rules (regexes were validated when the library loaded,
/// so this means a size limit was hit).
#[derive(Debug, thiserror::Error)]
#[error("cannot compile rule {app}/{rule}: {message}")]
pub struct RuleError {
    app: String,
    rule: String,
    message: String,
}

/// The fields of one message head, as collected by the HTTP walker or the
/// TLS ClientHello parser. `None` means the message has no such field.
#[derive(Debug, Default, Clone, Copy)]
pub struct Message<'a> {
    /// Request method.
    pub method: Option<&'a [u8]>,
    /// Full URL.
    pub url: Option<&'a [u8]>,
    /// Path and query.
    pub path: Option<&'a [u8]>,
    /// Host name, lower case, without port.
    pub host: Option<&'a [u8]>,
    /// Every instance of the wanted headers, by slot.
    pub headers: Headers<'a>,
    /// Destination port of the connection.
    pub port: u16,
    /// True for a reply head.
    pub reply: bool,
    /// Address of the client that opened the connection, when known.
    pub src: Option<std::net::IpAddr>,
}

#[derive(Debug)]
struct DomainSet {
    exact: HashSet<Vec<u8>>,
    suffix: HashSet<Vec<u8>>,
}

impl DomainSet {
    fn new(domains: &[String]) -> DomainSet {
        let mut exact = HashSet::new();
        let mut suffix = HashSet::new();
        for d in domains {
            match d.strip_prefix('.') {
                Some(s) => suffix.insert(s.as_bytes().to_vec()),
                None => exact.insert(d.as_bytes().to_vec()),
            };
        }
        DomainSet { exact, suffix }
    }

    fn contains(&self, host: &[u8]) -> bool {
        let host = host.strip_suffix(b".").unwrap_or(host);
        if self.exact.contains(host) || self.suffix.contains(host) {
            return true;
        }
        host.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'.')
            .any(|(i, _)| self.suffix.contains(&host[i + 1..]))
    }
}

#[derive(Debug)]
enum CTest {
    Regex(Vec<(Regex, Option<AhoCorasick>)>),
    Text(AhoCorasick),
    Domains(DomainSet),
    Values(Vec<Vec<u8>>),
    Ports(Vec<PortSpec>),
    Nets(Vec<ipnet::IpNet>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CField {
    Url,
    Path,
    Host,
    Method,
    Header(usize),
    Port,
    Src,
}

#[derive(Debug)]
struct CCond {
    field: CField,
    negate: bool,
    test: CTest,
}

#[derive(Debug)]
struct CRule {
    r: RuleRef,
    reply: bool,
    conds: Vec<CCond>,
    /// Exceptions: the rule does not hold when all of one's conditions do.
    except: Vec<Vec<CCond>>,
}

/// Every message rule of a policy, compiled.
#[derive(Debug, Default)]
pub struct MessageRules {
    rules: Vec<CRule>,
    /// Wanted header names (lower case) and their name hashes; slot = index.
    headers: Vec<(u64, String)>,
    needs_host: bool,
    apps: AppSet,
}

/// Regex prefilter: the literal prefixes every match starts with, when
/// there is a short finite set of them.
fn prefilter(re: &str, nocase: bool) -> Option<AhoCorasick> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .unicode(false)
        .build()
        .parse(re)
        .ok()?;
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix);
    let seq = ex.extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > 64 || lits.iter().any(|l| l.as_bytes().len() < 3) {
        return None;
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(nocase)
        .build(lits.iter().map(|l| l.as_bytes()))
        .ok()
}

impl MessageRules {
    /// Compiles the rules of every app of the policy's library.
    pub fn build(policy: &Policy) -> Result<MessageRules, RuleError> {
        let mut out = MessageRules::default();
        for (ai, app) in policy.library().apps().iter().enumerate() {
            for (ri, rule) in app.rules.iter().enumerate() {
                let err = |m: String| RuleError {
                    app: app.name.clone(),
                    rule: rule.id.clone(),
                    message: m,
                };
                let mut conds = Vec::new();
                let mut except: Vec<Vec<CCond>> = rule.except.iter().map(|_| Vec::new()).collect();
                // The rule's conditions (group None), then each exception's.
                let all = rule.conditions.iter().map(|c| (None, c)).chain(
                    rule.except
                        .iter()
                        .enumerate()
                        .flat_map(|(i, e)| e.conditions.iter().map(move |c| (Some(i), c))),
                );
                for (group, c) in all {
                    let field = match &c.field {
                        Field::Url => CField::Url,
                        Field::Path => CField::Path,
                        Field::Host => {
                            out.needs_host = true;
                            CField::Host
                        }
                        Field::Method => CField::Method,
                        Field::Port => CField::Port,
                        Field::Src => CField::Src,
                        Field::Header(h) => {
                            let hash = name_hash(h.as_bytes());
                            let slot = match out.headers.iter().position(|(x, _)| *x == hash) {
                                Some(i) => i,
                                None => {
                                    out.headers.push((hash, h.clone()));
                                    out.headers.len() - 1
                                }
                            };
                            if slot >= 64 {
                                return Err(err("more than 64 distinct headers in rules".into()));
                            }
                            CField::Header(slot)
                        }
                    };
                    let test = match &c.test {
                        Test::Regex(v) => {
                            let mut res = Vec::new();
                            for re in v {
                                let compiled = RegexBuilder::new(re)
                                    .case_insensitive(c.nocase)
                                    .unicode(false)
                                    .size_limit(1 << 20)
                                    .build()
                                    .or_else(|_| {
                                        RegexBuilder::new(re)
                                            .case_insensitive(c.nocase)
                                            .size_limit(1 << 20)
                                            .build()
                                    })
                                    .map_err(|e| err(e.to_string()))?;
                                res.push((compiled, prefilter(re, c.nocase)));
                            }
                            CTest::Regex(res)
                        }
                        Test::Text(v) => CTest::Text(
                            AhoCorasick::builder()
                                .ascii_case_insensitive(c.nocase)
                                .build(v)
                                .map_err(|e| err(e.to_string()))?,
                        ),
                        Test::Domains(v) => CTest::Domains(DomainSet::new(v)),
                        Test::Values(v) => CTest::Values(v.iter().map(|s| s.as_bytes().to_vec()).collect()),
                        Test::Ports(v) => CTest::Ports(v.clone()),
                        Test::Networks(v) => CTest::Nets(v.clone()),
                    };
                    let cond = CCond {
                        field,
                        negate: c.negate,
                        test,
                    };
                    match group {
                        None => conds.push(cond),
                        Some(i) => except[i].push(cond),
                    }
                }
                out.apps |= 1u64 << ai;
                out.rules.push(CRule {
                    r: RuleRef {
                        // At most 64 apps; rule ids past u16 are refused below.
                        app: u8::try_from(ai).unwrap_or(u8::MAX),
                        rule: u16::try_from(ri).map_err(|_| RuleError {
                            app: app.name.clone(),
                            rule: rule.id.clone(),
                            message: "more than 65536 rules in one app".into(),
                        })?,
                    },
                    reply: rule.reply,
                    conds,
                    except,
                });
            }
        }
        Ok(out)
    }

    /// True when any rule exists.
    pub fn any(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Apps that have rules.
    pub fn apps(&self) -> AppSet {
        self.apps
    }

    /// True when a rule looks at the host (so TLS server names are parsed).
    pub fn needs_host(&self) -> bool {
        self.needs_host
    }

    /// Number of header slots rules want.
    pub fn header_slots(&self) -> usize {
        self.headers.len()
    }

    /// The slot of the header whose lower-cased name hashes to `hash`.
    #[inline]
    pub fn header_slot(&self, hash: u64) -> Option<usize> {
        self.headers.iter().position(|(h, _)| *h == hash)
    }

    /// The first rule of an app in `apps` that holds for `msg`.
    pub fn eval(&self, msg: &Message<'_>, apps: AppSet) -> Option<RuleRef> {
        self.rules
            .iter()
            .filter(|r| r.reply == msg.reply && apps & (1u64 << r.r.app) != 0)
            .find(|r| {
                r.conds.iter().all(|c| c.holds(msg))
                    && !r.except.iter().any(|e| e.iter().all(|c| c.holds(msg)))
            })
            .map(|r| r.r)
    }
}

impl CCond {
    fn holds(&self, m: &Message<'_>) -> bool {
        let value: Option<&[u8]> = match self.field {
            CField::Url => m.url,
            CField::Path => m.path,
            CField::Host => m.host,
            CField::Method => m.method,
            CField::Header(slot) => {
                // Every instance of a repeated header is tested on its own;
                // the condition holds when one of them matches.
                let mut any_value = false;
                let mut hit = false;
                for v in m.headers.values(slot) {
                    any_value = true;
                    if self.test_value(v) {
                        hit = true;
                        break;
                    }
                }
                return if any_value {
                    hit != self.negate
                } else {
                    self.negate
                };
            }
            CField::Port | CField::Src => None,
        };
        let hit = match (&self.test, self.field) {
            (CTest::Ports(p), CField::Port) => p.iter().any(|p| p.contains(Proto::Tcp, m.port)),
            (_, CField::Port) => false,
            // An unknown client address matches no network.
            (CTest::Nets(n), CField::Src) => m.src.is_some_and(|a| n.iter().any(|n| n.contains(&a))),
            (_, CField::Src) => false,
            // A field the message does not have never matches.
            (_, _) => value.is_some_and(|v| self.test_value(v)),
        };
        hit != self.negate
    }

    fn test_value(&self, v: &[u8]) -> bool {
        match &self.test {
            CTest::Regex(res) => res
                .iter()
                .any(|(re, pre)| pre.as_ref().is_none_or(|p| p.is_match(v)) && re.is_match(v)),
            CTest::Text(ac) => ac.is_match(v),
            CTest::Domains(d) => d.contains(v),
            CTest::Values(vals) => vals.iter().any(|x| x.as_slice() == v),
            CTest::Ports(_) | CTest::Nets(_) => false,
        }
    }
}

/// Longest method kept (bytes).
pub(crate) const MAX_METHOD: usize = 24;

/// Every instance of the wanted headers of one head: values in one arena,
/// (slot, start, end) per instance, so a repeated header is matched
/// instance by instance instead of as one joined list.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    arena: &'a [u8],
    spans: &'a [(u8, u32, u32)],
}

impl<'a> Headers<'a> {
    /// A view over collected values.
    pub fn new(arena: &'a [u8], spans: &'a [(u8, u32, u32)]) -> Headers<'a> {
        Headers { arena, spans }
    }

    /// The values of header slot `slot`, in order of appearance.
    pub fn values(&self, slot: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        let arena = self.arena;
        self.spans
            .iter()
            .filter(move |(s, _, _)| usize::from(*s) == slot)
            .map(move |&(_, a, b)| {
                let (a, b) = (a as usize, b as usize);
                arena.get(a..b).unwrap_or_default()
            })
    }
}

/// The fields of the current head that message rules and host signatures
/// look at. The whole head is bounded (64 KiB, [`crate::engine::http::MAX_HEAD`]),
/// so the fields are too.
#[derive(Debug, Clone, Default)]
pub struct HeadFields {
    pub(crate) method: Vec<u8>,
    /// Raw request target.
    pub(crate) target: Vec<u8>,
    /// Raw value of the first `Host` header.
    pub(crate) host: Vec<u8>,
    pub(crate) host_seen: bool,
    /// Values of wanted headers, every instance.
    pub(crate) values: Vec<u8>,
    pub(crate) spans: Vec<(u8, u32, u32)>,
    /// Normalised target ([`uri::normalise`]) and where its parts lie.
    pub(crate) norm: Vec<u8>,
    pub(crate) norm_at: uri::Target,
    /// The resolved URL of the request (`scheme://authority/path?query`).
    pub(crate) url: Vec<u8>,
    /// Host (lower case, no port), authority and path ranges in `url`;
    /// port named by the URL or Host.
    pub(crate) url_host: (usize, usize),
    pub(crate) url_authority: (usize, usize),
    pub(crate) url_path: Option<(usize, usize)>,
    pub(crate) url_port: Option<u16>,
}

impl HeadFields {
    /// Forgets the previous head, keeping (small) buffers.
    pub(crate) fn clear(&mut self) {
        for v in [
            &mut self.method,
            &mut self.target,
            &mut self.host,
            &mut self.values,
            &mut self.norm,
            &mut self.url,
        ] {
            v.clear();
            // A 64 KiB head once should not pin 64 KiB per connection.
            if v.capacity() > 4096 {
                v.shrink_to(1024);
            }
        }
        self.spans.clear();
        self.host_seen = false;
        self.norm_at = uri::Target::default();
        self.url_host = (0, 0);
        self.url_authority = (0, 0);
        self.url_path = None;
        self.url_port = None;
    }

    /// True when the request is CONNECT.
    pub(crate) fn is_connect(&self) -> bool {
        self.method == b"CONNECT"
    }

    /// Normalises the collected target (at the end of the request line).
    pub(crate) fn normalise_target(&mut self) {
        let connect = self.is_connect();
        self.norm_at = uri::normalise(&self.target, connect, &mut self.norm);
    }

    /// Resolves the request's URL once the head is complete: the host of an
    /// absolute-form (or CONNECT) target wins over `Host` (RFC 9112 3.2.2).
    pub(crate) fn resolve(&mut self) {
        let t = self.norm_at;
        self.url.clear();
        if t.absolute || self.is_connect() {
            self.url.extend_from_slice(&self.norm);
            self.url_host = t.host;
            let auth_start = if t.host.0 > 0 && self.norm.get(t.host.0 - 1) == Some(&b'[') {
                t.host.0 - 1
            } else {
                t.host.0
            };
            self.url_authority = (auth_start, t.path.0);
            self.url_path = (!self.is_connect()).then_some(t.path);
            self.url_port = if self.is_connect() {
                t.port
            } else {
                Some(t.port.unwrap_or(t.default_port))
            };
            return;
        }
        self.url.extend_from_slice(b"http://");
        let (h, p) = uri::split_authority(&self.host);
        let v6 = h.contains(&b':');
        let auth_start = self.url.len();
        if v6 {
            self.url.push(b'[');
        }
        self.url_host = uri::push_host(h, &mut self.url);
        if v6 {
            self.url.push(b']');
        }
        let port = p.and_then(uri::parse_port);
        self.url_port = port;
        if let Some(p) = port.filter(|&p| p != 80) {
            self.url.push(b':');
            self.url.extend_from_slice(p.to_string().as_bytes());
        }
        self.url_authority = (auth_start, self.url.len());
        let path_start = self.url.len();
        self.url.extend_from_slice(t.path(&self.norm));
        self.url_path = Some((path_start, self.url.len()));
    }

    /// The request's host (lower case, no port), once resolved.
    pub(crate) fn url_host(&self) -> &[u8] {
        self.url.get(self.url_host.0..self.url_host.1).unwrap_or_default()
    }

    /// The request's authority (`host[:port]`, default port dropped).
    pub(crate) fn url_authority(&self) -> &[u8] {
        self.url
            .get(self.url_authority.0..self.url_authority.1)
            .unwrap_or_default()
    }
}

/// Judges the collected head against the message rules.
impl MessageRules {
    /// Judges one collected HTTP head (request or reply) against the rules,
    /// with Squid's URL semantics on the normalised target: the URL and its
    /// host and port come from the request target when it is in absolute
    /// form, else from `Host`. The head must have been
    /// resolved by `HeadFields::resolve` (requests). `src` is the address of
    /// the client that opened the connection.
    pub fn eval_head(
        &self,
        f: &HeadFields,
        reply: bool,
        apps: AppSet,
        port: u16,
        src: Option<std::net::IpAddr>,
    ) -> Option<RuleRef> {
        let headers = Headers::new(&f.values, &f.spans);
        if reply {
            let msg = Message {
                headers,
                port,
                reply: true,
                src,
                ..Message::default()
            };
            return self.eval(&msg, apps);
        }
        let host = f.url_host();
        let msg = Message {
            method: Some(&f.method),
            url: Some(&f.url),
            path: f.url_path.and_then(|(a, b)| f.url.get(a..b)),
            host: (!host.is_empty()).then_some(host),
            headers,
            // Squid's `port` is the URL's port; the connection's only when
            // the request names none.
            port: f.url_port.unwrap_or(port),
            reply: false,
            src,
        };
        self.eval(&msg, apps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_follow_squid_dstdomain() {
        let d = DomainSet::new(&["messenger.msn.com".into(), ".hotmail.com".into()]);
        for (host, want) in [
            ("messenger.msn.com", true),
            ("x.messenger.msn.com", false),
            ("hotmail.com", true),
            ("gateway.messenger.hotmail.com", true),
            ("nothotmail.com", false),
            ("hotmail.com.", true),
            ("msn.com", false),
        ] {
            assert_eq!(d.contains(host.as_bytes()), want, "{host}");
        }
    }

    /// `src` conditions and exceptions (Squid's first match: an earlier
    /// allow wins), on a library as the Squid import writes it.
    #[test]
    fn src_conditions_and_exceptions() {
        use crate::policy::{AppLibrary, HostsFile};
        use std::path::{Path, PathBuf};
        let text = r#"
name = "site"
description = "t"
[[rule]]
id = "gw"
[[rule.match]]
field = "url"
regex = ["gateway\\.dll"]
[[rule.match]]
field = "src"
networks = ["192.0.2.0/24"]
[[rule.except]]
why = "allow boss"
[[rule.except.match]]
field = "src"
networks = ["192.0.2.7"]
[[rule.except]]
why = "allow news"
[[rule.except.match]]
field = "path"
regex = ["^/news/"]
[[rule]]
id = "not-admins"
[[rule.match]]
field = "method"
values = ["PUT"]
[[rule.match]]
field = "src"
networks = ["203.0.113.0/24"]
negate = true
"#;
        let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), text.to_string())]).unwrap();
        let hosts = HostsFile::parse(Path::new("hosts"), "0.0.0.0/0 site\n").unwrap();
        let policy = Policy::new(lib, &hosts, None).unwrap();
        let rules = MessageRules::build(&policy).unwrap();
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        let table = [
            ("GET", "/gateway/gateway.dll", ip("192.0.2.10"), Some(0)),
            ("GET", "/gateway/gateway.dll", ip("198.51.100.1"), None),
            ("GET", "/gateway/gateway.dll", ip("192.0.2.7"), None),
            ("GET", "/news/gateway.dll", ip("192.0.2.10"), None),
            ("GET", "/gateway/gateway.dll", None, None),
            ("PUT", "/x", ip("192.0.2.10"), Some(1)),
            ("PUT", "/x", ip("203.0.113.5"), None),
            ("PUT", "/x", None, Some(1)),
        ];
        for (method, path, src, want) in table {
            let url = format!("http://h{path}");
            let msg = Message {
                method: Some(method.as_bytes()),
                url: Some(url.as_bytes()),
                path: Some(path.as_bytes()),
                src,
                ..Message::default()
            };
            let got = rules.eval(&msg, u64::MAX).map(|r| r.rule);
            assert_eq!(got, want, "{method} {path} from {src:?}");
        }
    }

    #[test]
    fn regex_prefilters_are_sound() {
        for (re, hay, nocase) in [
            ("gateway\\.dll", "/gateway/gateway.dll?x", false),
            ("^http://.*\\.msn\\.com/", "http://a.msn.com/", false),
            ("(msn|yahoo)messenger", "x yahoomessenger", false),
            ("GATEWAY\\.DLL", "/gateway/gateway.dll", true),
        ] {
            let rx = RegexBuilder::new(re).case_insensitive(nocase).build().unwrap();
            assert!(rx.is_match(hay.as_bytes()));
            if let Some(p) = prefilter(re, nocase) {
                assert!(p.is_match(hay), "prefilter of {re} rejects a match");
            }
        }
        assert!(prefilter("gateway\\.dll", false).is_some());
        assert!(prefilter(".*", false).is_none());
    }
}
