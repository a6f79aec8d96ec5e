//! Protocol recognition from structure rather than literals.
//!
//! Two jobs, both pure functions of the bytes given:
//! - the first line of a TCP direction tells which line-based protocol a
//!   stream speaks (mail, news, FTP, HTTP): MSNP- or IRC-looking lines inside
//!   such a stream are text of that protocol ([`first_line`]), and an IRC
//!   command line must have its command's shape ([`irc_line`]);
//! - datagram headers whose literal prefix is too short to be a signature on
//!   its own (QQ/OICQ, uTP) are confirmed by checking every header field
//!   ([`oicq_datagram`], [`utp_datagram`]).
//!
//! Nothing here allocates or panics on any input.

/// A text protocol recognised by the first line of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextProtocol {
    /// `220 ` / `220-` banner (SMTP and FTP greet alike) or `EHLO`/`HELO`.
    SmtpOrFtp,
    /// POP3 `+OK` greeting.
    Pop3,
    /// IMAP `* OK` / `* PREAUTH` / `* BYE` greeting.
    Imap,
    /// NNTP `200` / `201` greeting.
    Nntp,
    /// An HTTP, RTSP or SIP request or status line (not CONNECT).
    Http,
    /// An HTTP CONNECT request: what follows is tunnelled, not HTTP.
    Connect,
    /// SSH version exchange.
    Ssh,
}

/// Recognises the protocol of a stream by its first line (`line` without
/// or with its line end; a prefix of a long line is enough).
pub fn first_line(line: &[u8]) -> Option<TextProtocol> {
    let line = trim_eol(line);
    let starts = |p: &[u8]| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"220 ") || starts(b"220-") || line == b"220" {
        return Some(TextProtocol::SmtpOrFtp);
    }
    if starts(b"EHLO ") || starts(b"HELO ") {
        return Some(TextProtocol::SmtpOrFtp);
    }
    if starts(b"+OK") {
        return Some(TextProtocol::Pop3);
    }
    if starts(b"* OK") || starts(b"* PREAUTH") || starts(b"* BYE") {
        return Some(TextProtocol::Imap);
    }
    if starts(b"200 ") || starts(b"201 ") {
        return Some(TextProtocol::Nntp);
    }
    if starts(b"SSH-") {
        return Some(TextProtocol::Ssh);
    }
    if starts(b"HTTP/1.") || starts(b"HTTP/2") || starts(b"RTSP/1.") || starts(b"SIP/2.0 ") {
        return Some(TextProtocol::Http);
    }
    request_line(line)
}

/// `METHOD SP target SP HTTP/1.x` (or RTSP/SIP), method in upper case.
fn request_line(line: &[u8]) -> Option<TextProtocol> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let method = &line[..sp];
    if method.is_empty() || method.len() > 20 || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-')
    {
        return None;
    }
    let rest = &line[sp + 1..];
    let sp2 = rest.iter().rposition(|&b| b == b' ')?;
    let version = &rest[sp2 + 1..];
    let known = [&b"HTTP/1."[..], b"HTTP/2.0", b"RTSP/1.", b"SIP/2.0"];
    if !known.iter().any(|k| version.starts_with(k)) {
        return None;
    }
    Some(if method == b"CONNECT" {
        TextProtocol::Connect
    } else {
        TextProtocol::Http
    })
}

fn trim_eol(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = line {
        line = rest;
    }
    line
}

/// An IRC client command line of the kinds the library's signatures name
/// (RFC 2812): `NICK <nickname> [<hopcount>]`, `PRIVMSG <targets> :<text>`,
/// `JOIN <#channels> [<keys>]`, and the server's `NOTICE AUTH :` greeting.
/// `complete` is false when only the line's first bytes are given (a long
/// message): the parts named above must still be visible.
pub fn irc_line(line: &[u8], complete: bool) -> bool {
    let line = trim_eol(line);
    if let Some(rest) = line.strip_prefix(b"NICK ") {
        let rest = rest.strip_prefix(b":").unwrap_or(rest);
        let (nick, more) = split_word(rest);
        let hop_ok = more.is_none_or(|h| !h.is_empty() && h.len() <= 3 && h.iter().all(u8::is_ascii_digit));
        complete && nickname(nick) && hop_ok
    } else if let Some(rest) = line.strip_prefix(b"PRIVMSG ") {
        let (targets, more) = split_word(rest);
        !targets.is_empty()
            && targets.first() != Some(&b':')
            && targets
                .split(|&b| b == b',')
                .all(|t| channel(t) || mask_or_nick(t))
            && more.is_some_and(|m| m.starts_with(b":"))
    } else if let Some(rest) = line.strip_prefix(b"JOIN ") {
        let (chans, keys) = split_word(rest);
        let keys_ok = keys.is_none_or(|k| !k.is_empty() && !k.contains(&b' '));
        complete && chans.split(|&b| b == b',').all(channel) && keys_ok
    } else {
        line.starts_with(b"NOTICE AUTH :")
    }
}

/// The first word and what follows its space, if anything.
fn split_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b' ') {
        Some(k) => (&s[..k], Some(&s[k + 1..])),
        None => (s, None),
    }
}

/// RFC 2812 2.3.1: a letter or special, then letters, digits, specials, '-'
/// (networks allow longer names than RFC's nine characters).
fn nickname(n: &[u8]) -> bool {
    let special = |b: &u8| b"[]\\`_^{|}".contains(b);
    n.first().is_some_and(|b| b.is_ascii_alphabetic() || special(b))
        && n.len() <= 50
        && n.iter()
            .all(|b| b.is_ascii_alphanumeric() || special(b) || *b == b'-')
}

/// A channel name: a prefix `#&+!`, then no space, comma, BEL or control byte.
fn channel(c: &[u8]) -> bool {
    c.len() >= 2
        && b"#&+!".contains(&c[0])
        && c.len() <= 200
        && c[1..].iter().all(|&b| b > b' ' && b != b',' && b != 0x7f)
}

/// A nickname or a `nick!user@host` / server mask as a message target.
fn mask_or_nick(t: &[u8]) -> bool {
    let nick_end = t
        .iter()
        .position(|&b| b == b'!' || b == b'@' || b == b'%')
        .unwrap_or(t.len());
    (nickname(&t[..nick_end]) || t.first() == Some(&b'$')) && t.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// QQ/OICQ over UDP: `0x02`, 2-byte client version (non-zero), 2-byte
/// command (below 0x100 and non-zero), 2-byte sequence number, body, and the
/// closing `0x03`. The shortest real packet (a server ack) has a few body
/// bytes; client packets add the 4-byte QQ number.
pub fn oicq_datagram(d: &[u8]) -> bool {
    const MIN: usize = 1 + 2 + 2 + 2 + 4 + 1;
    if d.len() < MIN || d[0] != 0x02 || d[d.len() - 1] != 0x03 {
        return false;
    }
    let version = u16::from_be_bytes([d[1], d[2]]);
    let command = u16::from_be_bytes([d[3], d[4]]);
    version != 0 && command != 0 && command < 0x100
}

/// Header length of uTP (BEP 29): type/version, extension, connection id,
/// two timestamps, window, sequence and ack numbers.
const UTP_HEADER: usize = 20;

/// uTP (BEP 29) header: version 1 in the low nibble and a type 0-4 in the
/// high nibble of byte 0, a valid extension chain, and a length that fits the
/// type: ST_STATE, ST_FIN, ST_RESET and ST_SYN carry no data, so they end
/// right after the header and extensions. ST_DATA counts only when it
/// carries the BitTorrent handshake (the first data of every uTP peer
/// connection), since a data packet's header alone is too weak a proof.
pub fn utp_datagram(d: &[u8]) -> bool {
    if d.len() < UTP_HEADER {
        return false;
    }
    let (kind, version) = (d[0] >> 4, d[0] & 0x0f);
    if version != 1 || kind > 4 {
        return false;
    }
    // Extension chain: (next type, length, bytes), ending with type 0.
    let mut next = d[1];
    let mut at = UTP_HEADER;
    let mut hops = 0;
    while next != 0 {
        // Known extensions: 1 selective ack, 2 extension bits.
        if next > 2 || hops > 4 {
            return false;
        }
        let (Some(&ty), Some(&len)) = (d.get(at), d.get(at + 1)) else {
            return false;
        };
        let len = usize::from(len);
        if len == 0 || (next == 1 && len % 4 != 0) {
            return false;
        }
        at += 2 + len;
        if at > d.len() {
            return false;
        }
        next = ty;
        hops += 1;
    }
    let body = &d[at..];
    match kind {
        0 => body.starts_with(b"\x13BitTorrent protocol"),
        _ => body.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines() {
        let table: &[(&[u8], Option<TextProtocol>)] = &[
            (
                b"220 mail.example.org ESMTP Postfix\r\n",
                Some(TextProtocol::SmtpOrFtp),
            ),
            (b"220-FileZilla Server\r\n", Some(TextProtocol::SmtpOrFtp)),
            (b"EHLO client.example\r\n", Some(TextProtocol::SmtpOrFtp)),
            (b"helo x\r\n", Some(TextProtocol::SmtpOrFtp)),
            (b"+OK POP3 server ready\r\n", Some(TextProtocol::Pop3)),
            (b"* OK IMAP4rev1 ready\r\n", Some(TextProtocol::Imap)),
            (b"200 news.example.org ready\r\n", Some(TextProtocol::Nntp)),
            (b"201 no posting\r\n", Some(TextProtocol::Nntp)),
            (b"GET /msnp.txt HTTP/1.1\r\n", Some(TextProtocol::Http)),
            (b"PRI * HTTP/2.0\r\n", Some(TextProtocol::Http)),
            (b"HTTP/1.1 200 OK\r\n", Some(TextProtocol::Http)),
            (
                b"CONNECT messenger.hotmail.com:1863 HTTP/1.0\r\n",
                Some(TextProtocol::Connect),
            ),
            (b"SSH-2.0-OpenSSH_9.6\r\n", Some(TextProtocol::Ssh)),
            (b"VER 1 MSNP8 CVR0\r\n", None),
            (b"USR 1 a@b.c 1.2.3\r\n", None),
            (b"PNG\r\n", None),
            (b"GET / HTTP", None),
            (b"", None),
        ];
        for (line, want) in table {
            assert_eq!(first_line(line), *want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn irc_lines() {
        let good: &[&[u8]] = &[
            b"NICK brotest\r\n",
            b"NICK :molo[ch]test\r\n",
            b"NICK bob 1\r\n",
            b"PRIVMSG #brotest :hello there\r\n",
            b"PRIVMSG alice,#ops :hi\r\n",
            b"PRIVMSG alice!a@example.org :hi\r\n",
            b"JOIN #brotest\r\n",
            b"JOIN #a,#b key1,key2\r\n",
            b"NOTICE AUTH :*** Looking up your hostname\r\n",
        ];
        for l in good {
            assert!(irc_line(l, true), "{}", String::from_utf8_lossy(l));
        }
        assert!(irc_line(
            b"PRIVMSG #c :a long message cut by the line buff",
            false
        ));
        let bad: &[&[u8]] = &[
            b"NICK Jones will present the results\r\n",
            b"NICK 42\r\n",
            b"PRIVMSG is a command of IRC\r\n",
            b"PRIVMSG #chan\r\n",
            b"JOIN #marketing for the launch party\r\n",
            b"JOIN #\r\n",
            b"NOTICE everyone\r\n",
        ];
        for l in bad {
            assert!(!irc_line(l, true), "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn oicq() {
        let mut real = hex("023b0b00010017561f0c7b0000000000");
        real.extend_from_slice(&[0x55; 27]);
        real.push(0x03);
        assert!(oicq_datagram(&real));
        let mut bad = real.clone();
        *bad.last_mut().unwrap() = 0x04;
        assert!(!oicq_datagram(&bad), "no closing 0x03");
        let mut bad = real.clone();
        bad[3] = 0x12;
        assert!(!oicq_datagram(&bad), "command out of range");
        let mut bad = real.clone();
        bad[1] = 0;
        bad[2] = 0;
        assert!(!oicq_datagram(&bad), "version 0");
        assert!(!oicq_datagram(&[0x02, 0x03]));
        assert!(!oicq_datagram(&[]));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn utp(kind: u8, ext: &[u8], body: &[u8]) -> Vec<u8> {
        let mut d = vec![(kind << 4) | 1, ext.first().copied().unwrap_or(0)];
        d.extend_from_slice(&[0x12, 0x34, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0]);
        d.extend_from_slice(&ext[ext.len().min(1)..]);
        d.extend_from_slice(body);
        d
    }

    #[test]
    fn utp_headers() {
        assert!(utp_datagram(&utp(4, &[], b"")), "ST_SYN");
        assert!(utp_datagram(&utp(2, &[], b"")), "ST_STATE");
        assert!(utp_datagram(&utp(1, &[], b"")), "ST_FIN");
        // ST_STATE with a selective ack (type 1, 4 bytes).
        assert!(utp_datagram(&utp(2, &[1, 0, 4, 1, 2, 3, 4], b"")));
        // ST_DATA carrying the BitTorrent handshake.
        assert!(utp_datagram(&utp(
            0,
            &[],
            b"\x13BitTorrent protocol\0\0\0\0\0\x10\0\x05"
        )));
        assert!(
            !utp_datagram(&utp(0, &[], b"random data")),
            "data without handshake"
        );
        assert!(!utp_datagram(&utp(2, &[], b"x")), "state with data");
        assert!(!utp_datagram(&utp(5, &[], b"")), "type 5");
        let mut v2 = utp(4, &[], b"");
        v2[0] = 0x42;
        assert!(!utp_datagram(&v2), "version 2");
        assert!(
            !utp_datagram(&utp(2, &[1, 0, 3, 1, 2, 3], b"")),
            "sack length not a multiple of 4"
        );
        assert!(!utp_datagram(&utp(2, &[1, 0, 40], b"")), "extension past the end");
        assert!(
            !utp_datagram(&utp(2, &[9, 0, 4, 1, 2, 3, 4], b"")),
            "unknown extension"
        );
        assert!(!utp_datagram(&[0x41; 19]), "short");
    }
}
