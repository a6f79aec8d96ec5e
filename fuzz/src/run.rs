//! The body of every fuzz target, as plain functions: a target file is one
//! `fuzz_target!` line around one of these, and a crash input can be
//! replayed from a test or a debugger without libFuzzer.
//!
//! Each function must not panic on any input; the ones that check an
//! invariant panic with a message that says what differed.

use appwall::engine::hello::{HelloAssembler, Status, parse_client_hello};
use appwall::engine::quic::detect::{CryptoStream, MAX_CRYPTO};
use appwall::engine::quic::{QuicHello, client_initial, frames};
use std::io::Cursor;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use appwall::engine::FlowDecision;
use appwall::engine::{Decision, Engine, Reason, Verdict};
use appwall::flow::Flow;
use appwall::kernel::iptables::{self, Family, KernelRuleOptions, PortAction};
use appwall::packet::{LinkType, PacketView};
use appwall::policy::{AppLibrary, HostsFile, Policy};
use appwall::source::Tracker;
use appwall::source::capture::CaptureReader;

use crate::wire::{self, SeqTracker, SplitInput, StreamInput};
use crate::{Flags, Which};

/// A decision must be consistent with its reason: these reasons accept,
/// every other one (port, signature, message rule, evasion) drops.
fn check_decision(d: &Decision) {
    let accept = matches!(
        d.reason,
        Reason::Inspecting | Reason::Clean | Reason::NotListed | Reason::PortsOnly | Reason::Unparsable
    );
    assert_eq!(
        d.verdict == Verdict::Accept,
        accept,
        "verdict {:?} does not fit reason {:?}",
        d.verdict,
        d.reason
    );
}

/// Judges one view with a fresh connection, as the first packet of a flow.
fn judge_alone(engine: &Engine, v: &PacketView<'_>) {
    let mut flow = Flow::new(1, v, 0);
    check_decision(&engine.judge(v, &mut flow));
}

// ------------------------------------------------------------------ packet_view

/// `packet_view`: first byte picks the link type, the rest is the frame.
/// Every view must point inside the input; views are then judged.
pub fn packet_view(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = wire::link_of(sel);
    let res = PacketView::from_link(link, frame);
    if link == LinkType::RawIp {
        assert_eq!(res, PacketView::from_ip(frame), "RawIp must equal from_ip");
    }
    if let Ok(v) = res {
        let range = frame.as_ptr_range();
        let p = v.payload.as_ptr_range();
        assert!(
            v.payload.is_empty() || (range.start <= p.start && p.end <= range.end),
            "payload outside the frame"
        );
        assert_eq!(v.tcp.is_some(), v.proto == appwall::policy::Proto::Tcp);
        judge_alone(crate::engine(Which::All), &v);
        judge_alone(crate::engine(Which::Everyone), &v);
    }
}

// ---------------------------------------------------------------- stream_engine

fn endpoints(ipv6: bool, port: u8, conn: u8) -> ((IpAddr, u16), (IpAddr, u16)) {
    let (c, s): (IpAddr, IpAddr) = if ipv6 {
        (
            "2001:db8::10".parse().expect("static"),
            "2001:db8:1::80".parse().expect("static"),
        )
    } else {
        (
            "192.0.2.10".parse().expect("static"),
            "198.51.100.80".parse().expect("static"),
        )
    };
    let server_port = wire::PORTS[usize::from(port) % wire::PORTS.len()];
    ((c, 40000 + u16::from(conn)), (s, server_port))
}

/// `stream_engine`: a sequence of TCP segments (any sequence numbers, flags
/// and payloads, both directions, up to 16 connections in a 4-slot table)
/// through the shared `Tracker` step (connection table and `Engine::judge`).
pub fn stream_engine(data: &[u8]) {
    let input = StreamInput::decode(data);
    let engine = crate::engine(match input.engine {
        0 => Which::Everyone,
        2 => Which::Tight,
        _ => Which::All,
    });
    let mut table = Tracker::new(4, 300_000_000_000);
    let mut decided: std::collections::HashMap<u64, FlowDecision> = std::collections::HashMap::new();
    let mut seqs = SeqTracker::new(input.isn);
    let mut now = 0u64;
    for s in &input.segments {
        now += 1_000_000;
        if s.pause {
            now += 200_000_000_000;
        }
        let (client, server) = endpoints(input.ipv6, input.port, s.conn);
        let (src, dst) = if s.reply {
            (server, client)
        } else {
            (client, server)
        };
        let seq = seqs.resolve(s);
        let bytes = if s.udp {
            crate::udp_packet(src, dst, &s.payload)
        } else {
            let ack = seqs.peek(s.conn, !s.reply);
            let flags = Flags {
                syn: s.syn,
                ack: s.ack,
                fin: s.fin,
                rst: s.rst,
                psh: s.psh,
            };
            crate::tcp_packet(src, dst, seq, ack, flags, &s.payload)
        };
        let v = PacketView::from_ip(&bytes).expect("a built packet parses");
        assert_eq!(v.payload, &s.payload[..], "payload survives building and parsing");
        let j = table.judge_view(engine, v, now);
        let (d, flow) = (j.decision, j.conn);
        let before = decided.get(&flow.id).copied().unwrap_or_default();
        decided.insert(flow.id, flow.state.decision);
        check_decision(&d);
        if let FlowDecision::Blocked(r) = before {
            assert_eq!(
                d,
                Decision {
                    verdict: Verdict::Drop,
                    reason: r,
                    mark: None,
                    conflict: false,
                    settle_reply: false,
                },
                "a blocked flow stays blocked"
            );
        }
        // While inspecting, held bytes stay within `reorder_bytes`. The
        // packet that blocks a flow may leave up to one more segment held
        // (inspection stops at the hit); nothing is added after that.
        let slack = match flow.state.decision {
            FlowDecision::Inspecting => 0,
            _ => wire::MAX_SEGMENT,
        };
        for dir in &flow.state.dirs {
            if let Some(r) = &dir.reorder {
                assert!(
                    r.bytes <= engine.config().reorder_bytes + slack,
                    "reorder buffer over its bound: {} held, decision {:?}",
                    r.bytes,
                    flow.state.decision
                );
            }
        }
        assert!(table.len() <= table.table().capacity());
    }
}

// ----------------------------------------------------------------- stream_split

/// The flow's verdict after each message of a conversation cut one way.
fn verdicts(engine: &Engine, input: &SplitInput, cut: &[u8; 8]) -> (Vec<bool>, Option<Reason>) {
    let (client, server) = endpoints(input.ipv6, input.port, 0);
    let mut table = Tracker::new(4, u64::MAX);
    let mut next = input.isn;
    let mut now = 0u64;
    let mut feed = |table: &mut Tracker, reply: bool, flags: Flags, seq: u32, ack: u32, payload: &[u8]| {
        now += 1_000;
        let (src, dst) = if reply { (server, client) } else { (client, server) };
        let bytes = crate::tcp_packet(src, dst, seq, ack, flags, payload);
        let v = PacketView::from_ip(&bytes).expect("a built packet parses");
        let j = table.judge_view(engine, v, now);
        check_decision(&j.decision);
        match j.conn.state.decision {
            FlowDecision::Blocked(r) => Some(r),
            _ => None,
        }
    };
    let mut blocked = None;
    if input.handshake {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        blocked = blocked.or(feed(&mut table, false, syn, next[0], 0, b""));
        next[0] = next[0].wrapping_add(1);
        let synack = Flags {
            syn: true,
            ack: true,
            ..Flags::default()
        };
        blocked = blocked.or(feed(&mut table, true, synack, next[1], next[0], b""));
        next[1] = next[1].wrapping_add(1);
    }
    let mut after = Vec::with_capacity(input.messages.len());
    let mut turn = 0usize;
    for (reply, bytes) in capped(engine, input) {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let size = match cut[turn % cut.len()] {
                0 => 1460,
                n => usize::from(n),
            };
            turn += 1;
            let (seg, r) = rest.split_at(size.min(rest.len()));
            rest = r;
            let d = usize::from(reply);
            let flags = Flags {
                ack: true,
                psh: true,
                ..Flags::default()
            };
            blocked = blocked.or(feed(&mut table, reply, flags, next[d], next[1 - d], seg));
            next[d] = next[d].wrapping_add(seg.len() as u32);
        }
        after.push(blocked.is_some());
    }
    (after, blocked)
}

/// The messages, each direction cut short below the inspection depth (past
/// it the verdict depends on where the depth falls, by design).
fn capped(engine: &Engine, input: &SplitInput) -> Vec<(bool, Vec<u8>)> {
    let limit = (engine.config().depth_bytes as usize).saturating_sub(1);
    let mut used = [0usize; 2];
    let mut out = Vec::new();
    for (reply, bytes) in &input.messages {
        let d = usize::from(*reply);
        let take = bytes.len().min(limit - used[d]);
        used[d] += take;
        out.push((*reply, bytes[..take].to_vec()));
    }
    out
}

/// `stream_split`: the same in-order byte stream (no retransmissions, no
/// reordering) cut two ways must get the same verdict after every message.
pub fn stream_split(data: &[u8]) {
    if let Err(e) = split_invariant(crate::split_engine(), &SplitInput::decode(data)) {
        panic!("{e}");
    }
}

/// The `stream_split` check against any engine: `Err` says what differed.
pub fn split_invariant(engine: &Engine, input: &SplitInput) -> Result<(), String> {
    let (a, ra) = verdicts(engine, input, &input.cut_a);
    let (b, rb) = verdicts(engine, input, &input.cut_b);
    if a == b {
        return Ok(());
    }
    let say = |r: Option<Reason>| r.map_or("not blocked".to_string(), |r| engine.reason_text(&r));
    Err(format!(
        "segmentation changed the verdict: cut {:?} -> {:?} ({}), cut {:?} -> {:?} ({})\ninput: {:?}",
        input.cut_a,
        a,
        say(ra),
        input.cut_b,
        b,
        say(rb),
        input
    ))
}

// ---------------------------------------------------------- hosts and rule files

/// Builds the iptables, ip6tables and ipset text of a policy in several
/// option sets and checks every line of it.
pub fn check_policy_text(policy: &Policy, inspected: u64) {
    let options = [
        KernelRuleOptions::default(),
        KernelRuleOptions {
            queues: 4,
            fail_closed: true,
            port_action: PortAction::Reject,
            reset: true,
            ipset_threshold: 0,
            ..KernelRuleOptions::default()
        },
    ];
    for opts in &options {
        for fam in [Family::V4, Family::V6] {
            let restore = iptables::restore_input(policy, inspected, fam, opts);
            if let Err(e) = crate::iptables_text::check_restore(&restore) {
                panic!("unsafe restore input: {e}\n{restore}");
            }
            let cmds = iptables::commands(policy, inspected, fam, opts);
            if let Err(e) = crate::iptables_text::check_commands(&cmds) {
                panic!("unsafe commands: {e}\n{cmds}");
            }
            let sets = iptables::ipset_input(policy, inspected, fam, opts);
            if let Err(e) = crate::iptables_text::check_ipset(&sets) {
                panic!("unsafe ipset input: {e}\n{sets}");
            }
        }
    }
}

/// `hosts_file`: any text through `HostsFile::parse` and `Policy::new`
/// (library defaults, and a `--default-apps` list); an accepted file's
/// kernel rules must hold only safe tokens.
pub fn hosts_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hosts) = HostsFile::parse(Path::new("hosts"), text) else {
        return;
    };
    let lib = crate::embedded_library();
    let inspected = crate::engine(Which::All).inspected_apps();
    let defaults = ["msn".to_string(), "mysql".to_string()];
    for default_apps in [None, Some(&defaults[..])] {
        if let Ok(policy) = Policy::new(lib.clone(), &hosts, default_apps) {
            check_policy_text(&policy, inspected);
            // Every listed network must be found again by the lookup table.
            for e in policy.entries() {
                let hit = policy.table().lookup(e.net.network());
                assert!(hit.is_some(), "{} listed but not found", e.net);
            }
        }
    }
}

/// `rule_files`: up to four rule files separated by NUL bytes, each
/// `STEM\nTOML`; a leading `+` adds them to the shipped files. An accepted
/// library is compiled and judges the sample scenarios, and its kernel
/// rules must hold only safe tokens.
pub fn rule_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (extend, text) = match text.strip_prefix('+') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if extend {
        for (name, t) in appwall::policy::library::EMBEDDED {
            files.push((Path::new("rules").join(name), t.to_string()));
        }
    }
    for part in text.split('\0').take(4) {
        let (stem, body) = part.split_once('\n').unwrap_or((part, ""));
        files.push((PathBuf::from(format!("rules/{stem}.toml")), body.to_string()));
    }
    let Ok(lib) = AppLibrary::from_texts(&files) else {
        return;
    };
    for policy in [Policy::everyone(lib.clone()), crate::all_apps_policy(lib)] {
        let Ok(engine) = Engine::new(policy, Default::default()) else {
            continue;
        };
        check_policy_text(engine.policy(), engine.inspected_apps());
        for s in appwall::sample::scenarios() {
            let mut table = Tracker::new(16, u64::MAX);
            for (i, p) in s.packets.iter().enumerate() {
                let v = PacketView::from_ip(p).expect("sample packets parse");
                let d = table.judge_view(&engine, v, i as u64).decision;
                check_decision(&d);
                let _ = engine.reason_text(&d.reason);
            }
        }
    }
}

/// `capture_reader`: any bytes as a pcap/pcapng file, read to the end (or
/// the first error); every frame of a known link type is parsed.
pub fn capture_reader(data: &[u8]) {
    let Ok(mut r) = CaptureReader::new(Path::new("fuzz.pcap"), Box::new(Cursor::new(data.to_vec()))) else {
        return;
    };
    let mut frames = 0u64;
    loop {
        match r.next_frame() {
            Ok(Some(f)) => {
                frames += 1;
                assert!(f.data.len() <= appwall::source::capture::MAX_FRAME);
                if let Some(link) = LinkType::from_pcap(f.linktype) {
                    let _ = PacketView::from_link(link, f.data);
                }
            }
            Ok(None) => break,
            Err(e) => {
                assert_eq!(e.packets_read(), frames, "error counts the frames read");
                let _ = e.to_string();
                break;
            }
        }
        assert!(frames as usize <= data.len(), "more frames than bytes");
    }
    assert_eq!(r.packets_read(), frames);
}

// ------------------------------------------------------------------ squid_import

/// `squid_import`: any text as a squid.conf through `squid::import`. When a
/// deny line was translated, the rule file must load and compile, and the
/// suggested hosts lines must parse (`import-squid` promises both).
/// Quoted include paths may only name files next to the configuration
/// (`list.txt` exists there), so no input reads `/dev/zero` or the like.
pub fn squid_import(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("\"/") || text.contains("..") || text.contains('\0') {
        return;
    }
    let dir = squid_dir();
    let conf = dir.join("squid.conf");
    std::fs::write(&conf, text).expect("write squid.conf");
    let Ok(imp) = appwall::policy::squid::import(&conf, "site") else {
        return;
    };
    if imp.translated == 0 {
        return;
    }
    let lib = match AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), imp.toml.clone())]) {
        Ok(lib) => lib,
        Err(e) => panic!("imported rule file does not load: {e}\n{}", imp.toml),
    };
    if let Err(e) = Engine::new(crate::all_apps_policy(lib), Default::default()) {
        panic!("imported rule file does not compile: {e}\n{}", imp.toml);
    }
    let hosts = imp.hosts.join("\n");
    if let Err(e) = HostsFile::parse(Path::new("hosts"), &hosts) {
        panic!("suggested hosts lines do not parse: {e}\n{hosts}");
    }
}

/// A private directory holding the fuzzed squid.conf and an include file.
fn squid_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("appwall-fuzz-squid-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create squid fuzz directory");
        std::fs::write(
            d.join("list.txt"),
            "gateway.dll\n.messenger.hotmail.com\n# comment\n^http://.*msn\n",
        )
        .expect("write include file");
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invariant check is not vacuous: a `segment-start` signature
    /// (which depends on segmentation by design) trips it, and the
    /// segmentation-free engine does not.
    #[test]
    fn split_invariant_sees_segment_start() {
        // An AIM channel-2 FLAP frame behind 3 bytes of other data: a
        // segment starts at the frame only when the first segment is 3 bytes.
        let mut bytes = b"abc".to_vec();
        bytes.extend_from_slice(&[0x2a, 0x02, 0, 1, 0, 10, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0]);
        let input = SplitInput {
            handshake: true,
            ipv6: false,
            port: crate::wire::port_index(8000),
            isn: [1, 2],
            cut_a: [3, 0, 0, 0, 0, 0, 0, 0],
            cut_b: [0; 8],
            messages: vec![(false, bytes)],
        };
        let err = split_invariant(crate::engine(Which::All), &input).unwrap_err();
        assert!(err.contains("flap-snac"), "{err}");
        split_invariant(crate::split_engine(), &input).unwrap();
    }
}

// ------------------------------------------------------------------ quic_hello

/// `quic_hello`: the QUIC Initial path (`client_initial`, `QuicHello`, the
/// frame parser, the CRYPTO reassembler) and the TLS ClientHello parser and
/// assembler, on arbitrary bytes. Must hold: no panic; the record assembler
/// gives the same answer whether the input comes in one chunk or cut in
/// two; the CRYPTO stream never holds more than its bound.
pub fn quic_hello(data: &[u8]) {
    let _ = parse_client_hello(data);
    let _ = client_initial(data);
    let _ = frames::frames(data).count();

    // Datagrams: 2-byte length prefixes, as many as fit.
    let mut q = QuicHello::new();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let _ = q.push_datagram(&tail[..n]);
        rest = &tail[n..];
    }

    // CRYPTO fragments: (2-byte offset, 1-byte length) headers.
    let mut s = CryptoStream::default();
    let mut rest = data;
    while let [hi, lo, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let off = u64::from(u16::from_be_bytes([*hi, *lo]));
        if s.insert(off, &tail[..n]).is_err() {
            break;
        }
        assert!(s.contiguous().len() <= MAX_CRYPTO);
        rest = &tail[n..];
    }

    // Split invariance of the record assembler.
    let cut = data.first().map_or(0, |&b| usize::from(b) * data.len() / 256);
    let whole = HelloAssembler::new().push(data);
    let mut a = HelloAssembler::new();
    let split = match a.push(&data[..cut]) {
        Status::NeedMore => a.push(&data[cut..]),
        other => other,
    };
    assert_eq!(whole, split, "cut at {cut}");
}
