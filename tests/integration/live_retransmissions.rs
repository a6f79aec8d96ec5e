//! Retransmission quirks of real stacks through a live gateway: crafted TCP
//! segments from the listed client (a raw socket), counted where they
//! arrive (a packet socket in the server's namespace, whose own stack is
//! told to stay silent). Benign quirks pass; a decoy cannot hide Messenger.
//!
//! - placeholder: a few zero bytes on an ACK, then the real request at the
//!   same sequence number (some stacks do this);
//! - re-sent record: a TLS record, then different bytes (an alert) re-sent
//!   at the same sequence number, never acknowledged;
//! - decoy: benign bytes, then MSNP re-sent at the same sequence number
//!   (the receiver may keep either copy: both are inspected).

use std::time::Duration;

use appwall::lab::{self, Outcome, tcp_exchange};

use crate::support::LAB;
use crate::support::lab::{HOSTS, stop, with_lab};
use crate::support::py::Py;
use crate::support::traffic::{ECHO_PORT, EchoServer, echo_addr};

cases![
    live_retransmission_quirks_pass_and_decoys_are_caught: LAB,
    live_mail_quoting_msnp_passes_and_msnp_itself_is_blocked: LAB,
];

/// Counts TCP segments with payload to port 9999 arriving in this
/// namespace, per source port: prints `SEEN <sport> <payload bytes>` lines
/// when told `argv[1]` seconds are up.
const PY_SNIFF: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.settimeout(0.2)
print("READY", flush=True)
seen = {}
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if len(ip) < 40 or ip[9] != 6:
        continue
    ihl = (ip[0] & 15) * 4
    tcp = ip[ihl:]
    sport, dport = struct.unpack("!HH", tcp[:4])
    if dport != 9999:
        continue
    tot = struct.unpack("!H", ip[2:4])[0]
    data = ip[ihl + (tcp[12] >> 4) * 4:tot]
    if data:
        seen[sport] = seen.get(sport, 0) + len(data)
for p, n in sorted(seen.items()):
    print("SEEN", p, n, flush=True)
print("DONE", flush=True)
"#;

/// Sends crafted segments from `argv[1]` to `argv[2]`:9999, one scenario
/// per source port: `argv[3]` is a list of `sport:kind` to play.
const PY_CRAFT: &str = r#"
import socket, struct, sys, time
src, dst = sys.argv[1], sys.argv[2]
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def seg(sport, seq, flags, data=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, 9999, seq, 1, 5 << 4, flags, 65535, 0, 0) + data
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    c = csum(ph + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sport, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
SYN, ACK, PSH = 2, 16, 8
GET = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
TLS = bytes.fromhex("16030100a5010000a10303") + b"\x11" * 32 + b"\x00\x00\x02\x13\x01\x01\x00"
ALERT = bytes.fromhex("15030300020230") + b"\x00" * (len(TLS) - 7)
MSNP = b"VER 1 MSNP8 CVR0\r\nCVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS a@b.c\r\n"
BENIGN = b"x" * len(MSNP)
for item in sys.argv[3].split(","):
    sport, kind = item.split(":")
    sport = int(sport)
    isn = 1000
    s.sendto(seg(sport, isn, SYN), (dst, 0)); time.sleep(0.05)
    if kind == "placeholder":
        s.sendto(seg(sport, isn + 1, ACK, b"\0\0\0\0"), (dst, 0)); time.sleep(0.05)
        s.sendto(seg(sport, isn + 1, ACK | PSH, GET), (dst, 0))
    elif kind == "resent":
        s.sendto(seg(sport, isn + 1, ACK | PSH, TLS), (dst, 0)); time.sleep(0.05)
        s.sendto(seg(sport, isn + 1, ACK | PSH, ALERT), (dst, 0))
    elif kind == "decoy":
        s.sendto(seg(sport, isn + 1, ACK | PSH, BENIGN), (dst, 0)); time.sleep(0.05)
        s.sendto(seg(sport, isn + 1, ACK | PSH, MSNP), (dst, 0))
    time.sleep(0.1)
    # One more segment after the scenario: it arrives unless the connection was blocked.
    s.sendto(seg(sport, isn + 1 + 4096, ACK | PSH, b"after\r\n"), (dst, 0))
    time.sleep(0.1)
print("SENT", flush=True)
"#;

fn live_retransmission_quirks_pass_and_decoys_are_caught() {
    with_lab(|lab| {
        // The server's own stack stays silent (no RST to crafted segments);
        // the packet socket still sees what the gateway forwarded.
        lab.exec(
            &lab.server,
            "iptables",
            &["-w", "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "DROP"],
            Duration::from_secs(10),
        )
        .unwrap();
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &[], "quirks");
        let mut sniff = Py::start(lab, &lab.server, PY_SNIFF, &["6"]);
        sniff.expect("READY", Duration::from_secs(5));
        let plays = "41001:placeholder,41002:resent,41003:decoy";
        let mut craft = Py::start(lab, &lab.client, PY_CRAFT, &[lab::CLIENT4, lab::SERVER4, plays]);
        craft.expect("SENT", Duration::from_secs(10));
        let mut seen = std::collections::BTreeMap::new();
        loop {
            let l = sniff.expect("", Duration::from_secs(10));
            if l == "DONE" {
                break;
            }
            if let Some(rest) = l.strip_prefix("SEEN ") {
                let (p, n) = rest.split_once(' ').unwrap();
                seen.insert(p.parse::<u16>().unwrap(), n.parse::<usize>().unwrap());
            }
        }
        let events = f.events();
        eprintln!("arrived payload bytes per scenario: {seen:?}; events: {events:?}");
        // placeholder (4) + request + "after": everything arrives.
        assert!(
            seen.get(&41001).is_some_and(|&n| n > 50),
            "placeholder then request was cut: {seen:?}"
        );
        // TLS record + re-sent alert + "after": everything arrives.
        assert!(
            seen.get(&41002).is_some_and(|&n| n > 100),
            "re-sent record was cut: {seen:?}"
        );
        // The decoy: the benign copy (77 bytes) arrives, the MSNP copy (77
        // bytes) and what follows (7) do not.
        assert_eq!(
            seen.get(&41003),
            Some(&77),
            "the MSNP copy behind a decoy passed: {seen:?}"
        );
        assert!(
            events.iter().any(|e| e.to_string().contains("41003")),
            "no event for the decoy: {events:?}"
        );
        assert!(
            !events.iter().any(|e| {
                let t = e.to_string();
                t.contains("41001") || t.contains("41002")
            }),
            "a benign quirk was blocked: {events:?}"
        );
        stop(&mut f);
    });
}

/// A mail session whose body quotes MSNP commands passes the gateway (the
/// stream opened as SMTP is not MSNP); the same lines as a stream of their
/// own are Messenger and are blocked.
fn live_mail_quoting_msnp_passes_and_msnp_itself_is_blocked() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &[], "mail");
        let quoted: &[&str] = &[
            "VER 1 MSNP8 CVR0",
            "CHG 0031337 approved",
            "CAL 2026 budget",
            "USR 3 TWN I a@b.c",
        ];
        let mut mail = String::from(
            "EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: notes\r\n\r\n",
        );
        for l in quoted {
            mail.push_str(l);
            mail.push_str("\r\n");
        }
        mail.push_str(".\r\nQUIT\r\n");
        let (o, _) = tcp_exchange(
            &lab.client,
            echo_addr(),
            mail.as_bytes(),
            mail.len(),
            Duration::from_secs(3),
        );
        assert!(
            matches!(o, Outcome::Answered(ref b) if b == mail.as_bytes()),
            "the mail was cut: {o:?}"
        );
        let msnp = b"VER 1 MSNP8 CVR0\r\n";
        let (o, _) = tcp_exchange(&lab.client, echo_addr(), msnp, msnp.len(), Duration::from_secs(3));
        assert!(!matches!(o, Outcome::Answered(_)), "MSNP passed: {o:?}");
        stop(&mut f);
    });
}
