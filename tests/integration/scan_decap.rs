//! `scan` sees through tunnels and fragments as the kernel would live, and
//! its JSON summary accounts for every frame.

use std::net::IpAddr;

use appwall::sample::{MSN_GATEWAY_OPEN, TcpFlowBuilder};
use appwall::source::capture::write_pcap;
use serde_json::Value;

use crate::support::run;

cases![tunnelled_and_fragmented_messenger_is_blocked_and_every_frame_counted];

/// IPv4 header checksum (RFC 791).
fn checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An outer IPv4 header (no options) around `payload` with protocol `proto`.
fn ipv4(proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(20 + payload.len()).unwrap();
    let mut h = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 203, 0, 113, 1, 203, 0, 113, 2,
    ];
    h[2..4].copy_from_slice(&len.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// GRE (RFC 2784, no options) carrying an IPv4 packet, inside IPv4.
fn gre(inner: &[u8]) -> Vec<u8> {
    let mut g = vec![0, 0, 0x08, 0x00];
    g.extend_from_slice(inner);
    ipv4(47, 7, 0, &g)
}

/// The packet's IP payload cut into two fragments at byte 24 of its payload.
fn fragments(packet: &[u8]) -> [Vec<u8>; 2] {
    let (hdr, payload) = packet.split_at(20);
    let (a, b) = payload.split_at(24);
    let frag = |data: &[u8], off: u16, more: bool| {
        let mut h = hdr.to_vec();
        let len = u16::try_from(20 + data.len()).unwrap();
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        h[6..8].copy_from_slice(&((off / 8) | if more { 0x2000 } else { 0 }).to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&h[..20]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(data);
        h
    };
    [frag(a, 0, true), frag(b, 24, false)]
}

fn tunnelled_and_fragmented_messenger_is_blocked_and_every_frame_counted() {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    // Two Messenger gateway requests: one through GRE, one fragmented.
    let a = TcpFlowBuilder::new((ip("192.0.2.10"), 40000), (ip("198.51.100.80"), 80))
        .packets(&[(true, MSN_GATEWAY_OPEN)]);
    let b = TcpFlowBuilder::new((ip("192.0.2.11"), 40001), (ip("198.51.100.80"), 80))
        .packets(&[(true, MSN_GATEWAY_OPEN)]);
    let mut frames: Vec<Vec<u8>> = a.iter().map(|p| gre(p)).collect();
    for p in &b {
        if p.len() > 20 + 20 + 24 && p[0] >> 4 == 4 {
            frames.extend(fragments(p));
        } else {
            frames.push(p.clone());
        }
    }
    let timed: Vec<(u64, Vec<u8>)> = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (1_000_000 * i as u64, f))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tunnels.pcap");
    write_pcap(&mut std::fs::File::create(&pcap).unwrap(), &timed).unwrap();
    let (code, out, err) = run(&["scan", "--json", pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (summary, flows) = lines.split_last().unwrap();
    assert_eq!(flows.len(), 2, "{out}");
    for f in flows {
        assert_eq!(f["alert"]["action"], "blocked", "{f}");
        assert_eq!(f["alert"]["signature_id"], "gateway-dll", "{f}");
    }
    assert_eq!(summary["event_type"], "stats");
    assert_eq!(summary["tunnelled"], a.len() as u64, "{summary}");
    assert_eq!(
        summary["reassembled"].as_u64().unwrap(),
        b.iter().filter(|p| p.len() > 64).count() as u64,
        "{summary}"
    );
    assert_eq!(
        summary["skipped"]["fragment-pending"].as_u64().unwrap(),
        summary["reassembled"].as_u64().unwrap(),
        "{summary}"
    );
    assert_eq!(summary["frames"].as_u64().unwrap(), timed.len() as u64);
}
