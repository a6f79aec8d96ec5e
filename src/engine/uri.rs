//! Request-target normalisation: the one view of a URL that signatures,
//! host signatures and message rules all match against.
//!
//! A server or proxy resolves `/a/%2E%2E/gateway//gateway.dll`,
//! `HTTP://Gateway.Messenger.Hotmail.COM:80/x` and
//! `GET http://gateway.../ HTTP/1.1` + `Host: www.example.com` to one
//! resource; matching the raw bytes lets a client pick the spelling the
//! filter misses. Here a target is rewritten the way servers read it
//! (RFC 3986 6.2.2, RFC 9112 3.2): percent-decoding (once), dot segments
//! removed, repeated and back slashes folded to one `/`, scheme and host in
//! lower case, a trailing dot and the scheme's default port dropped; the
//! host of an absolute-form target wins over `Host` (RFC 9112 3.2.2).
//!
//! Pure functions over bounded input (the caller caps a head at 64 KiB);
//! never panics, allocates only into the caller's buffer.

/// Where the parts of a normalised target lie in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    /// The target was in absolute form (`scheme://authority/...`).
    pub absolute: bool,
    /// Default port of the scheme (80 for http, 443 for https; 80 otherwise).
    pub default_port: u16,
    /// Host range (lower case, no port, no trailing dot); empty when none.
    pub host: (usize, usize),
    /// Port named in the authority, if any (after dropping a default one).
    pub port: Option<u16>,
    /// Range of path and query (starts with `/`, or is `*`).
    pub path: (usize, usize),
}

impl Target {
    /// The host in `buf`.
    pub fn host<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.host.0..self.host.1).unwrap_or_default()
    }

    /// The path and query in `buf`.
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.path.0..self.path.1).unwrap_or_default()
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Appends `s` percent-decoded (once; invalid escapes kept literally).
fn decode_into(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h << 4) | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
}

/// Normalises a decoded path in place from `start`: `\\` and repeated `/`
/// become one `/`, `.` and `..` segments are resolved (never above root).
/// Works within `buf` (no allocation: it runs once per request): after a
/// leading `/` is ensured, the output never outgrows the input read so far.
fn clean_path(buf: &mut Vec<u8>, start: usize) {
    let is_sep = |c: u8| c == b'/' || c == b'\\';
    let ends_with_slash = buf.len() > start && is_sep(buf[buf.len() - 1]);
    if buf.len() == start || !is_sep(buf[start]) {
        buf.insert(start, b'/');
    }
    let end = buf.len();
    let (mut r, mut w, mut segs) = (start, start, 0usize);
    // True when the last segment was `.` or `..` (the path names a directory).
    let mut dot_last = false;
    while r < end {
        if is_sep(buf[r]) {
            r += 1;
            continue;
        }
        let s = r;
        while r < end && !is_sep(buf[r]) {
            r += 1;
        }
        match &buf[s..r] {
            b"." => dot_last = true,
            b".." => {
                if segs > 0 {
                    // Back to the `/` that opened the last segment written.
                    while buf[w - 1] != b'/' {
                        w -= 1;
                    }
                    w -= 1;
                    segs -= 1;
                }
                dot_last = true;
            }
            _ => {
                // A separator precedes `s`, so `w < s`: nothing unread is overwritten.
                buf[w] = b'/';
                buf.copy_within(s..r, w + 1);
                w += 1 + (r - s);
                segs += 1;
                dot_last = false;
            }
        }
    }
    if segs == 0 {
        buf[start] = b'/';
        w = start + 1;
    }
    buf.truncate(w);
    if (dot_last || ends_with_slash) && segs > 0 {
        buf.push(b'/');
    }
}

/// Splits `host[:port]` / `[v6]:port` (userinfo dropped) into host and port.
pub fn split_authority(a: &[u8]) -> (&[u8], Option<&[u8]>) {
    let a = match a.iter().rposition(|&c| c == b'@') {
        Some(i) => &a[i + 1..],
        None => a,
    };
    if let Some(rest) = a.strip_prefix(b"[") {
        let end = rest.iter().position(|&c| c == b']').unwrap_or(rest.len());
        let after = rest.get(end + 1..).unwrap_or_default();
        return (&rest[..end], after.strip_prefix(b":"));
    }
    match a.iter().position(|&c| c == b':') {
        Some(i) if a[i + 1..].iter().all(|&c| c != b':') => (&a[..i], Some(&a[i + 1..])),
        _ => (a, None),
    }
}

/// Parses a port (digits only, at most 5).
pub fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(p).ok()?.parse().ok()
}

/// Appends a normalised host (lower case, no trailing dot) to `out`;
/// returns its range.
pub fn push_host(host: &[u8], out: &mut Vec<u8>) -> (usize, usize) {
    let start = out.len();
    decode_into(host, out);
    if out.len() > start && out[out.len() - 1] == b'.' {
        out.pop();
    }
    out[start..].make_ascii_lowercase();
    (start, out.len())
}

/// Normalises a request target into `out` (cleared first). `connect` is
/// true for a CONNECT request, whose target is an authority.
pub fn normalise(raw: &[u8], connect: bool, out: &mut Vec<u8>) -> Target {
    out.clear();
    let mut t = Target {
        default_port: 80,
        ..Target::default()
    };
    if connect {
        let (h, p) = split_authority(raw);
        t.host = push_host(h, out);
        t.port = p.and_then(parse_port);
        if let Some(p) = t.port {
            out.push(b':');
            out.extend_from_slice(p.to_string().as_bytes());
        }
        t.path = (out.len(), out.len());
        return t;
    }
    let mut rest = raw;
    if let Some(k) = raw.windows(3).position(|w| w == b"://")
        && k > 0
        && raw[..k]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        t.absolute = true;
        let scheme = &raw[..k];
        out.extend(scheme.iter().map(u8::to_ascii_lowercase));
        out.extend_from_slice(b"://");
        if scheme.eq_ignore_ascii_case(b"https") {
            t.default_port = 443;
        }
        let after = &raw[k + 3..];
        let end = after
            .iter()
            .position(|&c| matches!(c, b'/' | b'?' | b'#' | b'\\'))
            .unwrap_or(after.len());
        let (h, p) = split_authority(&after[..end]);
        let v6 = h.contains(&b':');
        if v6 {
            out.push(b'[');
        }
        t.host = push_host(h, out);
        if v6 {
            out.push(b']');
        }
        t.port = p.and_then(parse_port).filter(|&p| p != t.default_port);
        if let Some(p) = t.port {
            out.push(b':');
            out.extend_from_slice(p.to_string().as_bytes());
        }
        rest = &after[end..];
    }
    let path_start = out.len();
    if rest == b"*" {
        out.push(b'*');
        t.path = (path_start, out.len());
        return t;
    }
    // The fragment is never sent to a server; the query keeps its bytes
    // (decoded) but no dot-segment rules.
    let rest = &rest[..rest.iter().position(|&c| c == b'#').unwrap_or(rest.len())];
    let (path, query) = match rest.iter().position(|&c| c == b'?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    decode_into(path, out);
    clean_path(out, path_start);
    if let Some(q) = query {
        out.push(b'?');
        decode_into(q, out);
    }
    t.path = (path_start, out.len());
    t
}

#[cfg(test)]
mod tests {
    /// The allocating version clean_path replaced: the reference it must equal.
    /// Normalises a decoded path in place from `start`: `\` and repeated `/`
    /// become one `/`, `.` and `..` segments are resolved (never above root).
    fn clean_path_reference(buf: &mut Vec<u8>, start: usize) {
        let raw: Vec<u8> = buf.split_off(start);
        // Segments between slashes; a path that does not start with `/` gets one.
        let mut segs: Vec<&[u8]> = Vec::new();
        let mut trailing = false;
        for seg in raw.split(|&c| c == b'/' || c == b'\\') {
            trailing = false;
            match seg {
                b"" => {}
                b"." => trailing = true,
                b".." => {
                    segs.pop();
                    trailing = true;
                }
                s => segs.push(s),
            }
        }
        let ends_with_slash = raw.last().is_some_and(|&c| c == b'/' || c == b'\\');
        buf.push(b'/');
        for (i, s) in segs.iter().enumerate() {
            if i > 0 {
                buf.push(b'/');
            }
            buf.extend_from_slice(s);
        }
        if (trailing || ends_with_slash) && !segs.is_empty() {
            buf.push(b'/');
        }
    }

    proptest::proptest! {
        #[test]
        fn clean_path_equals_its_allocating_reference(
            prefix in proptest::collection::vec(proptest::sample::select(b"ab".to_vec()), 0..3),
            path in proptest::collection::vec(proptest::sample::select(b"ab./\\".to_vec()), 0..40),
        ) {
            let mut mine = prefix.clone();
            mine.extend_from_slice(&path);
            let mut theirs = mine.clone();
            clean_path(&mut mine, prefix.len());
            clean_path_reference(&mut theirs, prefix.len());
            proptest::prop_assert_eq!(mine, theirs);
        }
    }

    use super::*;

    fn norm(raw: &str) -> (String, String, Option<u16>) {
        let mut out = Vec::new();
        let t = normalise(raw.as_bytes(), false, &mut out);
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(t.host(&out)).into_owned(),
            t.port,
        )
    }

    #[test]
    fn targets_normalise_as_servers_read_them() {
        for (raw, want, host, port) in [
            ("/gateway/gateway.dll?x=1", "/gateway/gateway.dll?x=1", "", None),
            ("/a/../gateway/./gateway.dll", "/gateway/gateway.dll", "", None),
            (
                "/a/%2e%2E/gateway%2Fgateway%2Edll",
                "/gateway/gateway.dll",
                "",
                None,
            ),
            ("//gateway///gateway.dll", "/gateway/gateway.dll", "", None),
            ("\\gateway\\gateway.dll", "/gateway/gateway.dll", "", None),
            ("/../../etc", "/etc", "", None),
            ("/a/b/..", "/a/", "", None),
            ("/a/./", "/a/", "", None),
            ("", "/", "", None),
            ("*", "*", "", None),
            ("/x?a=/../b&c=%41", "/x?a=/../b&c=A", "", None),
            (
                "HTTP://Gateway.Messenger.HOTMAIL.com.:80/gateway/gateway.dll",
                "http://gateway.messenger.hotmail.com/gateway/gateway.dll",
                "gateway.messenger.hotmail.com",
                None,
            ),
            (
                "http://user@Example.com:8080",
                "http://example.com:8080/",
                "example.com",
                Some(8080),
            ),
            ("https://a.b:443/x", "https://a.b/x", "a.b", None),
            (
                "http://[2001:db8::1]:81/",
                "http://[2001:db8::1]:81/",
                "2001:db8::1",
                Some(81),
            ),
            ("/p%zz%4", "/p%zz%4", "", None),
            ("/f#frag/../x", "/f", "", None),
        ] {
            let (n, h, p) = norm(raw);
            assert_eq!((n.as_str(), h.as_str(), p), (want, host, port), "{raw}");
        }
    }

    #[test]
    fn connect_targets_keep_their_port() {
        let mut out = Vec::new();
        let t = normalise(b"Messenger.Hotmail.COM:1863", true, &mut out);
        assert_eq!(t.host(&out), b"messenger.hotmail.com");
        assert_eq!(t.port, Some(1863));
        assert_eq!(parse_port(b"99999"), None);
        assert_eq!(split_authority(b"[::1]:443"), (&b"::1"[..], Some(&b"443"[..])));
    }

    #[test]
    fn never_panics_on_any_short_input() {
        let alphabet = b"/.%2eE?#:@[]\\a";
        let mut out = Vec::new();
        for n in 0..4usize {
            let total = alphabet.len().pow(u32::try_from(n).unwrap());
            for mut k in 0..total {
                let mut s = Vec::new();
                for _ in 0..n {
                    s.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let t = normalise(&s, false, &mut out);
                assert!(t.path.1 <= out.len() && t.host.1 <= out.len());
                let _ = normalise(&s, true, &mut out);
            }
        }
    }
}
