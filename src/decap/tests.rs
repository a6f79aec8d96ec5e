//! Tests for tunnel peeling, reassembly and the decapsulator.

use std::borrow::Cow;

use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::*;
use crate::packet::{LinkType, PacketView};
use crate::policy::Proto;

const A4: [u8; 4] = [192, 0, 2, 1];
const B4: [u8; 4] = [198, 51, 100, 2];
const A6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn tcp4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(A4, B4, 64)
        .tcp(40000, 1863, 7, 65535)
        .ack(1)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn tcp6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(A6, B6, 64)
        .tcp(40000, 1863, 7, 65535)
        .ack(1)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(A6, B6, 64)
        .udp(5000, 53)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An Ethernet frame of the given ethertype.
fn eth(et: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    v.extend_from_slice(&et.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A hand-made IPv4 header (no checksum: nothing here checks it).
fn ip4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap();
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&[0, 9, 0, 0, 64, proto, 0, 0]);
    v.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    v.extend_from_slice(payload);
    v
}

fn ip6(nh: u8, payload: &[u8]) -> Vec<u8> {
    let plen = u16::try_from(payload.len()).unwrap();
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&plen.to_be_bytes());
    v.extend_from_slice(&[nh, 64]);
    v.extend_from_slice(&A6);
    v.extend_from_slice(&B6);
    v.extend_from_slice(payload);
    v
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

fn gre(flags: u16, proto: u16, words: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&proto.to_be_bytes());
    for w in words {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn vxlan(inner_eth: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
    v.extend_from_slice(inner_eth);
    v
}

fn pppoe(ppp_proto: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len() + 2).unwrap();
    let mut v = vec![0x11, 0, 0x12, 0x34];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&ppp_proto.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn names(l: &Layers) -> Vec<&'static str> {
    l.as_slice().iter().map(|l| l.name()).collect()
}

/// Peels an Ethernet frame and expects `want` inside, under these layers.
fn expect_ip(frame: &[u8], want: &[u8], layers: &[&str]) {
    let d = peel(LinkType::Ethernet, frame);
    assert_eq!(d.inner, Inner::Ip(want), "layers {}", d.layers);
    assert_eq!(names(&d.layers), layers);
}

#[test]
fn plain_and_padded_ethernet() {
    let ip = tcp4(b"x");
    let mut frame = eth(0x0800, &ip);
    frame.extend_from_slice(&[0; 6]); // link padding is cut off
    expect_ip(&frame, &ip, &[]);
    let mut tagged = vec![0u8; 12];
    tagged.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd]);
    let ip6 = tcp6(b"y");
    tagged.extend_from_slice(&ip6);
    expect_ip(&tagged, &ip6, &[]);
}

#[test]
fn pppoe_session() {
    let ip = tcp4(b"hello");
    let mut frame = eth(0x8864, &pppoe(0x0021, &ip));
    frame.extend_from_slice(&[0xee; 10]); // padding beyond the PPPoE length
    expect_ip(&frame, &ip, &["pppoe"]);
    let ip6 = tcp6(b"hello");
    expect_ip(&eth(0x8864, &pppoe(0x0057, &ip6)), &ip6, &["pppoe"]);
    // LCP, discovery, and a wrong version are not user data.
    assert_eq!(
        peel(LinkType::Ethernet, &eth(0x8864, &pppoe(0xc021, b"lcp"))).inner,
        Inner::NotIp
    );
    assert_eq!(
        peel(LinkType::Ethernet, &eth(0x8863, &[0x11, 9, 0, 0, 0, 0])).inner,
        Inner::NotIp
    );
    let mut bad = pppoe(0x0021, &ip);
    bad[0] = 0x21;
    assert_eq!(
        peel(LinkType::Ethernet, &eth(0x8864, &bad)).inner,
        Inner::Malformed(Stage::Pppoe)
    );
}

#[test]
fn gre_variants() {
    let ip = tcp4(b"inside gre");
    // Key and sequence number.
    let f = eth(0x0800, &ip4(47, &gre(0x3000, 0x0800, &[0xdead, 7], &ip)));
    expect_ip(&f, &ip, &["gre"]);
    // Checksum, key and sequence number.
    let f = eth(0x0800, &ip4(47, &gre(0xb000, 0x0800, &[0, 1, 2], &ip)));
    expect_ip(&f, &ip, &["gre"]);
    // IPv6 payload over an IPv6 underlay.
    let i6 = tcp6(b"v6");
    let f = eth(0x86dd, &ip6(47, &gre(0, 0x86dd, &[], &i6)));
    expect_ip(&f, &i6, &["gre"]);
    // Transparent Ethernet bridging.
    let f = eth(0x0800, &ip4(47, &gre(0x2000, 0x6558, &[5], &eth(0x0800, &ip))));
    expect_ip(&f, &ip, &["gre", "eth"]);
    // ERSPAN type II (sequence set, version 1) and type I (no header).
    let mut e2 = vec![0x10, 1, 0, 0, 0, 0, 0, 0];
    e2.extend_from_slice(&eth(0x0800, &ip));
    let f = eth(0x0800, &ip4(47, &gre(0x1000, 0x88be, &[1], &e2)));
    expect_ip(&f, &ip, &["gre", "erspan"]);
    let f = eth(0x0800, &ip4(47, &gre(0, 0x88be, &[], &eth(0x0800, &ip))));
    expect_ip(&f, &ip, &["gre", "erspan"]);
    // ERSPAN type III with the platform subheader.
    let mut e3 = vec![0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    e3.extend_from_slice(&[0; 8]);
    e3.extend_from_slice(&eth(0x0800, &ip));
    let f = eth(0x0800, &ip4(47, &gre(0x1000, 0x22eb, &[1], &e3)));
    expect_ip(&f, &ip, &["gre", "erspan"]);
    // PPTP: enhanced GRE v1 with sequence, PPP with address/control.
    let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
    ppp.extend_from_slice(&ip);
    let f = eth(0x0800, &ip4(47, &gre(0x3001, 0x880b, &[0x0010_0001, 3], &ppp)));
    expect_ip(&f, &ip, &["gre-ppp"]);
    // Unsupported and malformed.
    let f = eth(0x0800, &ip4(47, &gre(0x0002, 0x0800, &[], &ip)));
    assert_eq!(peel(LinkType::Ethernet, &f).inner, Inner::Unsupported(Stage::Gre));
    let f = eth(0x0800, &ip4(47, &gre(0x4000, 0x0800, &[0, 0], &ip)));
    assert_eq!(peel(LinkType::Ethernet, &f).inner, Inner::Unsupported(Stage::Gre));
    let f = eth(0x0800, &ip4(47, &gre(0x3000, 0x0800, &[], &[])));
    assert_eq!(peel(LinkType::Ethernet, &f).inner, Inner::Malformed(Stage::Gre));
}

#[test]
fn ip_in_ip() {
    let i4 = tcp4(b"a");
    let i6 = tcp6(b"b");
    expect_ip(&eth(0x0800, &ip4(4, &i4)), &i4, &["ipip"]);
    expect_ip(&eth(0x0800, &ip4(41, &i6)), &i6, &["6in4"]);
    expect_ip(&eth(0x86dd, &ip6(41, &i6)), &i6, &["6in6"]);
    expect_ip(&eth(0x86dd, &ip6(4, &i4)), &i4, &["4in6"]);
    // Protocol 41 must carry IPv6.
    assert_eq!(
        peel(LinkType::Ethernet, &eth(0x0800, &ip4(41, &i4))).inner,
        Inner::Malformed(Stage::Ip)
    );
    // IPv6 extension headers are walked to reach the tunnel.
    let mut hbh = vec![41, 0, 0, 0, 0, 0, 0, 0];
    hbh.extend_from_slice(&i6);
    expect_ip(&eth(0x86dd, &ip6(0, &hbh)), &i6, &["6in6"]);
}

#[test]
fn vxlan_and_nesting() {
    let ip = tcp4(b"in vxlan");
    let f = eth(0x0800, &ip4(17, &udp(50000, 4789, &vxlan(&eth(0x0800, &ip)))));
    expect_ip(&f, &ip, &["vxlan"]);
    // Without the I flag it is just UDP to port 4789.
    let mut not = vxlan(&eth(0x0800, &ip));
    not[0] = 0;
    let outer = ip4(17, &udp(50000, 4789, &not));
    expect_ip(&eth(0x0800, &outer), &outer, &[]);
    // VXLAN inside GRE inside PPPoE.
    let inner = ip4(17, &udp(50000, 4789, &vxlan(&eth(0x0800, &ip))));
    let f = eth(0x8864, &pppoe(0x0021, &ip4(47, &gre(0, 0x0800, &[], &inner))));
    expect_ip(&f, &ip, &["pppoe", "gre", "vxlan"]);
}

#[test]
fn gtpu() {
    let ip = tcp4(b"from a phone");
    // Version 1, PT, E set; sequence, N-PDU, next extension 0x85 (PDU session container).
    let mut g = vec![0x34, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85];
    g.extend_from_slice(&[1, 0x10, 0x05, 0]); // one 4-byte extension, last
    g.extend_from_slice(&ip);
    let len = u16::try_from(g.len() - 8).unwrap().to_be_bytes();
    g[2..4].copy_from_slice(&len);
    let f = eth(0x0800, &ip4(17, &udp(2152, 2152, &g)));
    expect_ip(&f, &ip, &["gtp-u"]);
    // Plain header (no optional fields).
    let mut g = vec![0x30, 0xff, 0, 0, 0, 0, 0, 1];
    g.extend_from_slice(&ip);
    let len = u16::try_from(g.len() - 8).unwrap().to_be_bytes();
    g[2..4].copy_from_slice(&len);
    expect_ip(&eth(0x0800, &ip4(17, &udp(2152, 2152, &g))), &ip, &["gtp-u"]);
    // Echo request: signalling, the UDP packet itself.
    let echo = ip4(17, &udp(2152, 2152, &[0x32, 1, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0]));
    expect_ip(&eth(0x0800, &echo), &echo, &[]);
    // An extension header of length 0 is malformed.
    let mut g = vec![0x34, 0xff, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0x85, 0, 0, 0, 0];
    g.extend_from_slice(&ip);
    let f = eth(0x0800, &ip4(17, &udp(2152, 2152, &g)));
    assert_eq!(peel(LinkType::Ethernet, &f).inner, Inner::Malformed(Stage::GtpU));
}

#[test]
fn depth_is_bounded() {
    let mut p = tcp4(b"deep");
    for _ in 0..(tunnel::MAX_LAYERS + 1) {
        p = ip4(4, &p);
    }
    assert_eq!(peel(LinkType::RawIp, &p).inner, Inner::TooDeep);
    let mut q = tcp4(b"ok");
    for _ in 0..tunnel::MAX_LAYERS {
        q = ip4(4, &q);
    }
    assert!(matches!(peel(LinkType::RawIp, &q).inner, Inner::Ip(_)));
    // A long VLAN stack runs out of steps.
    let mut tags = vec![0u8; 12];
    for _ in 0..tunnel::MAX_STEPS {
        tags.extend_from_slice(&[0x81, 0, 0, 1]);
    }
    tags.extend_from_slice(&[0x08, 0]);
    tags.extend_from_slice(&tcp4(b""));
    assert_eq!(peel(LinkType::Ethernet, &tags).inner, Inner::TooDeep);
}

/// Splits an IPv4 packet (20-byte header) into fragments at these data offsets.
fn frag4(pkt: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let data = &pkt[20..];
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|c| *c > 0 && *c < data.len()));
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(data.len());
    bounds
        .windows(2)
        .map(|w| frag4_piece(pkt, w[0], w[1], w[1] < data.len()))
        .collect()
}

fn frag4_piece(pkt: &[u8], start: usize, end: usize, more: bool) -> Vec<u8> {
    let mut v = pkt[..20].to_vec();
    v.extend_from_slice(&pkt[20 + start..20 + end]);
    let total = u16::try_from(v.len()).unwrap();
    v[2..4].copy_from_slice(&total.to_be_bytes());
    let off = u16::try_from(start / 8).unwrap();
    let ff = (u16::from(pkt[6] & 0x40) << 8) | if more { 0x2000 } else { 0 } | off;
    v[6..8].copy_from_slice(&ff.to_be_bytes());
    v
}

/// Splits an IPv6 packet (no extension headers) with a Fragment header.
fn frag6(pkt: &[u8], cuts: &[usize], id: u32) -> Vec<Vec<u8>> {
    let data = &pkt[40..];
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|c| *c > 0 && *c < data.len()));
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(data.len());
    bounds
        .windows(2)
        .map(|w| frag6_piece(pkt, w[0], w[1], w[1] < data.len(), id))
        .collect()
}

fn frag6_piece(pkt: &[u8], start: usize, end: usize, more: bool, id: u32) -> Vec<u8> {
    let mut v = pkt[..40].to_vec();
    v[6] = 44;
    let off = u16::try_from(start).unwrap() | u16::from(more);
    v.extend_from_slice(&[pkt[6], 0]);
    v.extend_from_slice(&off.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&pkt[40 + start..40 + end]);
    let plen = u16::try_from(v.len() - 40).unwrap();
    v[4..6].copy_from_slice(&plen.to_be_bytes());
    v
}

fn push_all(d: &mut Defragmenter, frags: &[Vec<u8>]) -> Vec<DefragResult> {
    frags.iter().map(|f| d.push(0, f)).collect()
}

fn completed(results: &[DefragResult]) -> Vec<Vec<u8>> {
    results
        .iter()
        .filter_map(|r| match r {
            DefragResult::Complete(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

#[test]
fn reassembles_v4_in_order_and_out_of_order() {
    let pkt = tcp4(&payload(3000));
    let frags = frag4(&pkt, &[1480, 2960]);
    assert_eq!(frags.len(), 3);
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let mut d = Defragmenter::new(DefragConfig::default());
        let shuffled: Vec<Vec<u8>> = order.iter().map(|i| frags[*i].clone()).collect();
        let r = push_all(&mut d, &shuffled);
        assert_eq!(r[0], DefragResult::Pending);
        assert_eq!(r[1], DefragResult::Pending);
        assert_eq!(completed(&r), vec![pkt.clone()], "order {order:?}");
        assert_eq!(d.bytes_held(), 0);
        assert_eq!(d.stats().reassembled, 1);
        let (h, _) = etherparse::Ipv4Header::from_slice(&completed(&r)[0]).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }
    // Clearing MF/offset but keeping DF: an original without DF comes back without it.
    let mut nodf = pkt.clone();
    nodf[6] = 0;
    let mut d = Defragmenter::new(DefragConfig::default());
    let out = completed(&push_all(&mut d, &frag4(&nodf, &[8])));
    let (h, _) = etherparse::Ipv4Header::from_slice(&out[0]).unwrap();
    assert!(!h.dont_fragment && !h.more_fragments && h.fragment_offset.value() == 0);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn duplicates_are_ignored_and_overlaps_drop_the_datagram() {
    let pkt = tcp4(&payload(64));
    let frags = frag4(&pkt, &[40, 80]);
    let mut d = Defragmenter::new(DefragConfig::default());
    assert_eq!(d.push(0, &frags[0]), DefragResult::Pending);
    assert_eq!(d.push(0, &frags[0]), DefragResult::Duplicate);
    assert_eq!(d.push(0, &frags[1]), DefragResult::Pending);
    // Inside the contiguous run 0..80: a duplicate even though it spans two fragments.
    assert_eq!(
        d.push(0, &frag4_piece(&pkt, 32, 48, true)),
        DefragResult::Duplicate
    );
    assert_eq!(completed(&[d.push(0, &frags[2])]), vec![pkt.clone()]);
    assert_eq!(d.stats().duplicates, 2);

    // A fragment that overlaps and extends past held data: whole datagram gone.
    let mut d = Defragmenter::new(DefragConfig::default());
    assert_eq!(d.push(0, &frags[0]), DefragResult::Pending);
    assert_eq!(
        d.push(0, &frag4_piece(&pkt, 32, 64, true)),
        DefragResult::Dropped(DropCause::Overlap)
    );
    assert_eq!(d.bytes_held(), 0);
    // The rest cannot complete it (the first fragment went with it).
    assert_eq!(d.push(0, &frags[1]), DefragResult::Pending);
    assert_eq!(d.push(0, &frags[2]), DefragResult::Pending);
    assert_eq!(d.stats().dropped_overlap, 1);

    // RFC 1858 overwrite: offset 8 rewriting the TCP flags of a held first fragment.
    let mut d = Defragmenter::new(DefragConfig::default());
    assert_eq!(d.push(0, &frag4_piece(&pkt, 0, 24, true)), DefragResult::Pending);
    assert_eq!(
        d.push(0, &frag4_piece(&pkt, 8, 40, true)),
        DefragResult::Dropped(DropCause::Overlap)
    );
}

#[test]
fn timeout_uses_capture_clock() {
    let pkt = tcp4(&payload(100));
    let frags = frag4(&pkt, &[48]);
    let cfg = DefragConfig {
        timeout_ns: 1_000,
        ..DefragConfig::default()
    };
    let mut d = Defragmenter::new(cfg);
    assert_eq!(d.push(10, &frags[0]), DefragResult::Pending);
    // Within the timeout: completes.
    assert_eq!(completed(&[d.push(1_009, &frags[1])]), vec![pkt.clone()]);
    let mut d = Defragmenter::new(cfg);
    assert_eq!(d.push(10, &frags[0]), DefragResult::Pending);
    // After it: the first fragment expired, the second waits alone.
    assert_eq!(d.push(1_010, &frags[1]), DefragResult::Pending);
    assert_eq!(d.stats().dropped_timeout, 1);
    assert_eq!(d.stats().pending, 1);
    d.expire_all();
    assert_eq!(d.stats().dropped_timeout, 2);
    assert_eq!(d.bytes_held(), 0);
}

fn v4_with_id(id: u16, n: usize) -> Vec<u8> {
    let mut p = tcp4(&payload(n));
    p[4..6].copy_from_slice(&id.to_be_bytes());
    let (mut h, _) = etherparse::Ipv4Header::from_slice(&p).unwrap();
    h.header_checksum = h.calc_header_checksum();
    p[10..12].copy_from_slice(&h.header_checksum.to_be_bytes());
    p
}

#[test]
fn table_bounds_evict_the_oldest() {
    let cfg = DefragConfig {
        max_datagrams: 2,
        ..DefragConfig::default()
    };
    let mut d = Defragmenter::new(cfg);
    let pk: Vec<Vec<u8>> = (1..=3).map(|i| v4_with_id(i, 40)).collect();
    let fr: Vec<Vec<Vec<u8>>> = pk.iter().map(|p| frag4(p, &[24])).collect();
    for f in &fr {
        assert_eq!(d.push(0, &f[0]), DefragResult::Pending);
    }
    // Datagram 1 was evicted for 3; 2 and 3 still complete.
    assert_eq!(d.stats().dropped_table_full, 1);
    assert_eq!(d.push(0, &fr[0][1]), DefragResult::Pending);
    assert_eq!(completed(&[d.push(0, &fr[2][1])]), vec![pk[2].clone()]);

    // Byte bound: a datagram bigger than the budget is refused, others survive.
    let cfg = DefragConfig {
        max_bytes: 600,
        ..DefragConfig::default()
    };
    let mut d = Defragmenter::new(cfg);
    let small = v4_with_id(7, 100);
    let sf = frag4(&small, &[64]);
    assert_eq!(d.push(0, &sf[0]), DefragResult::Pending);
    let big = v4_with_id(8, 2000);
    let bf = frag4(&big, &[400, 800]);
    assert_eq!(d.push(0, &bf[0]), DefragResult::Pending);
    assert!(d.bytes_held() <= 600);
    assert_eq!(d.push(0, &bf[1]), DefragResult::Dropped(DropCause::TableFull));
    assert!(d.bytes_held() <= 600);
    assert_eq!(d.stats().dropped_table_full, 2, "small evicted, then big refused");
}

#[test]
fn size_and_consistency_checks() {
    let pkt = tcp4(&payload(100));
    let mut d = Defragmenter::new(DefragConfig::default());
    // A fragment ending beyond 65535 bytes.
    let mut far = frag4_piece(&pkt, 0, 16, true);
    far[6..8].copy_from_slice(&(0x2000u16 | 8190).to_be_bytes());
    assert_eq!(d.push(0, &far), DefragResult::Dropped(DropCause::TooBig));
    // Two different ends.
    let f = frag4(&pkt, &[48]);
    assert_eq!(d.push(0, &f[1]), DefragResult::Pending);
    let other_end = frag4_piece(&pkt, 48, 64, false);
    assert_eq!(
        d.push(0, &other_end),
        DefragResult::Dropped(DropCause::Inconsistent)
    );
    // An empty fragment.
    let empty = frag4_piece(&pkt, 48, 48, true);
    assert_eq!(d.push(0, &empty), DefragResult::Dropped(DropCause::Inconsistent));
    // A fragment the capture cut short.
    let cut = &f[0][..f[0].len() - 1];
    assert_eq!(d.push(0, cut), DefragResult::Dropped(DropCause::Truncated));
    // Not fragments at all.
    assert_eq!(d.push(0, &pkt), DefragResult::NotFragment);
    assert_eq!(d.push(0, b"\x45"), DefragResult::NotFragment);
}

#[test]
fn v4_odd_fragment_is_cut_to_eight_bytes() {
    // A non-last fragment of 30 bytes counts as 24 (Linux), so the next one
    // starting at 24 neither overlaps nor leaves a hole.
    let pkt = tcp4(&payload(60));
    let mut d = Defragmenter::new(DefragConfig::default());
    assert_eq!(d.push(0, &frag4_piece(&pkt, 0, 30, true)), DefragResult::Pending);
    let last = frag4_piece(&pkt, 24, pkt.len() - 20, false);
    assert_eq!(completed(&[d.push(0, &last)]), vec![pkt]);
}

#[test]
fn v4_tiny_first_fragment_reassembles() {
    // 8 bytes of TCP header in the first fragment (RFC 1858), flags in the second.
    let pkt = tcp4(b"tiny");
    let mut d = Defragmenter::new(DefragConfig::default());
    let r = push_all(&mut d, &frag4(&pkt, &[8]));
    assert_eq!(completed(&r), vec![pkt]);
}

#[test]
fn reassembles_v6() {
    let pkt = tcp6(&payload(2000));
    let frags = frag6(&pkt, &[1232, 1600], 0x1234_5678);
    let mut d = Defragmenter::new(DefragConfig::default());
    let r = push_all(&mut d, &[frags[2].clone(), frags[0].clone(), frags[1].clone()]);
    assert_eq!(completed(&r), vec![pkt.clone()]);
    let whole = completed(&r);
    let v = PacketView::from_ip(&whole[0]).unwrap();
    assert_eq!(v.payload, &payload(2000)[..]);
    // IPv6: any overlap drops, even one that ends on held data.
    let mut d = Defragmenter::new(DefragConfig::default());
    assert_eq!(d.push(0, &frags[0]), DefragResult::Pending);
    assert_eq!(
        d.push(0, &frag6_piece(&pkt, 1224, 1600, true, 0x1234_5678)),
        DefragResult::Dropped(DropCause::Overlap)
    );
    // A non-last fragment whose length is not a multiple of 8.
    assert_eq!(
        d.push(0, &frag6_piece(&pkt, 0, 30, true, 9)),
        DefragResult::Dropped(DropCause::Inconsistent)
    );
    // Atomic fragment: returned at once without the Fragment header.
    let small = udp6(b"atomic");
    let atomic = frag6(&small, &[], 77);
    assert_eq!(atomic.len(), 1);
    assert_eq!(d.push(0, &atomic[0]), DefragResult::Complete(small));
}

#[test]
fn v6_tiny_first_fragment_is_dropped() {
    let pkt = tcp6(&payload(100));
    let mut d = Defragmenter::new(DefragConfig::default());
    // 16 bytes cannot hold the 20-byte TCP header.
    let f = frag6(&pkt, &[16], 5);
    assert_eq!(d.push(0, &f[0]), DefragResult::Dropped(DropCause::Tiny));
    assert_eq!(d.stats().dropped_tiny, 1);
    // 24 bytes can.
    let f = frag6(&pkt, &[24], 6);
    assert_eq!(completed(&push_all(&mut d, &f)), vec![pkt]);
}

#[test]
fn v6_extension_headers_before_fragment_are_kept() {
    // Hop-by-hop, then Fragment: the hop-by-hop's Next Header is patched.
    let inner = tcp6(&payload(80));
    let mut with_hbh = inner[..40].to_vec();
    with_hbh[6] = 0;
    with_hbh.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    with_hbh.extend_from_slice(&inner[40..]);
    let plen = u16::try_from(with_hbh.len() - 40).unwrap();
    with_hbh[4..6].copy_from_slice(&plen.to_be_bytes());
    // Fragment by hand: unfragmentable part = fixed header + hop-by-hop.
    let data = &with_hbh[48..];
    let mut pieces = Vec::new();
    for (start, end) in [(0usize, 48usize), (48, data.len())] {
        let mut v = with_hbh[..48].to_vec();
        v[40] = 44;
        let off = u16::try_from(start).unwrap() | u16::from(end < data.len());
        v.extend_from_slice(&[6, 0]);
        v.extend_from_slice(&off.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 3]);
        v.extend_from_slice(&data[start..end]);
        let plen = u16::try_from(v.len() - 40).unwrap();
        v[4..6].copy_from_slice(&plen.to_be_bytes());
        pieces.push(v);
    }
    let mut d = Defragmenter::new(DefragConfig::default());
    assert_eq!(completed(&push_all(&mut d, &pieces)), vec![with_hbh.clone()]);
    assert!(PacketView::from_ip(&with_hbh).is_ok());
}

#[test]
fn decapsulator_fragmented_tunnel_and_stats() {
    let inner = tcp4(&payload(1000));
    let outer = ip4(47, &gre(0x2000, 0x0800, &[1], &inner));
    let frags = frag4(&outer, &[504]);
    let mut dc = Decapsulator::default();
    assert_eq!(
        dc.push(LinkType::Ethernet, 1, &eth(0x0800, &frags[0])),
        Outcome::Skip(SkipCause::FragmentPending)
    );
    match dc.push(LinkType::Ethernet, 2, &eth(0x0800, &frags[1])) {
        Outcome::Packet {
            ip: Cow::Owned(v),
            layers,
        } => {
            assert_eq!(v, inner);
            assert_eq!(names(&layers), ["reassembled", "gre"]);
        }
        other => panic!("got {other:?}"),
    }
    // An unfragmented tunnel is borrowed.
    let ip = tcp4(b"b");
    let frame = eth(0x0800, &ip4(4, &ip));
    match dc.push(LinkType::Ethernet, 3, &frame) {
        Outcome::Packet {
            ip: Cow::Borrowed(b),
            layers,
        } => {
            assert_eq!(b, &ip[..]);
            let v = PacketView::from_ip(b).unwrap();
            assert_eq!((v.proto, v.dport), (Proto::Tcp, 1863));
            assert_eq!(names(&layers), ["ipip"]);
        }
        other => panic!("got {other:?}"),
    }
    // Fragments inside a tunnel.
    let frags = frag4(&tcp4(&payload(200)), &[96]);
    let f0 = eth(0x0800, &ip4(4, &frags[0]));
    let f1 = eth(0x0800, &ip4(4, &frags[1]));
    assert_eq!(
        dc.push(LinkType::Ethernet, 4, &f0),
        Outcome::Skip(SkipCause::FragmentPending)
    );
    assert!(matches!(
        dc.push(LinkType::Ethernet, 5, &f1),
        Outcome::Packet { .. }
    ));
    assert_eq!(
        dc.push(LinkType::Ethernet, 6, &eth(0x0806, &[0; 28])),
        Outcome::Skip(SkipCause::NotIp)
    );
    assert_eq!(
        dc.push(LinkType::Ethernet, 7, &[1, 2, 3]),
        Outcome::Skip(SkipCause::Malformed(Stage::Link))
    );
    let s = *dc.stats();
    assert_eq!((s.frames, s.packets, s.tunnelled, s.reassembled), (7, 3, 3, 2));
    assert_eq!((s.fragment_pending, s.not_ip, s.malformed), (2, 1, 1));
    let skipped: u64 = s.skipped().iter().map(|(_, n)| n).sum();
    assert_eq!(s.frames, s.packets + skipped);
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["fragment-pending"], 2);
    assert_eq!(json["not-ip"], 1);
    for (name, n) in s.skipped() {
        assert_eq!(json[name], n, "{name}");
    }
    assert_eq!(
        SkipCause::FragmentDropped(DropCause::Overlap).name(),
        "fragment-dropped-overlap"
    );
}

/// A little-endian microsecond pcap of Ethernet frames, one per second.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).unwrap();
        v.extend_from_slice(&u32::try_from(i).unwrap().to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(f);
    }
    v
}

#[test]
fn capture_to_views_end_to_end() {
    use crate::source::capture::CaptureReader;
    // Messenger login inside VXLAN, its second half as a fragment over PPPoE,
    // and an ARP frame: two views and every frame accounted for.
    let login = tcp4(b"VER 1 MSNP8 CVR0\r\nUSR 2 TWN I someone@example.com\r\n");
    let frags = frag4(&login, &[32]);
    let frames = vec![
        eth(0x0800, &ip4(17, &udp(40000, 4789, &vxlan(&eth(0x0800, &login))))),
        eth(0x8864, &pppoe(0x0021, &frags[0])),
        eth(0x0806, &[0; 28]),
        eth(0x8864, &pppoe(0x0021, &frags[1])),
    ];
    let bytes = pcap(&frames);
    let mut r = CaptureReader::new(
        std::path::Path::new("mem.pcap"),
        Box::new(std::io::Cursor::new(bytes)),
    )
    .unwrap();
    let mut dc = Decapsulator::default();
    let mut seen = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        let link = LinkType::from_pcap(f.linktype).unwrap();
        if let Outcome::Packet { ip, layers } = dc.push(link, f.ts_ns, f.data) {
            let v = PacketView::from_ip(&ip).unwrap();
            assert!(v.payload.starts_with(b"VER 1 MSNP8"));
            seen.push(layers.to_string());
        }
    }
    dc.finish();
    assert_eq!(seen, ["vxlan", "pppoe/reassembled"]);
    let s = dc.stats();
    assert_eq!((s.frames, s.packets, s.not_ip, s.fragment_pending), (4, 2, 1, 1));
    assert_eq!(dc.defrag_stats().dropped_timeout, 0);
}

fn count_all_links(dc: &mut Decapsulator, bytes: &[u8]) {
    for link in [
        LinkType::RawIp,
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
    ] {
        if let Outcome::Packet { ip, .. } = dc.push(link, 0, bytes) {
            let _ = PacketView::from_ip(&ip);
        }
    }
}

/// Cut points (multiples of 8) for a payload of `len` bytes from random numbers.
fn cuts_from(raw: &[u16], len: usize) -> Vec<usize> {
    raw.iter().map(|r| usize::from(*r) % len.max(1) / 8 * 8).collect()
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % u64::try_from(i + 1).unwrap()).unwrap();
        v.swap(i, j);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut dc = Decapsulator::default();
        count_all_links(&mut dc, &bytes);
        let s = *dc.stats();
        let skipped: u64 = s.skipped().iter().map(|(_, n)| n).sum();
        prop_assert_eq!(s.frames, s.packets + skipped);
    }

    #[test]
    fn mutated_tunnels_never_panic(seed in any::<u64>(), flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6)) {
        let ip = tcp4(b"payload");
        let inner = ip4(17, &udp(1, 4789, &vxlan(&eth(0x0800, &ip))));
        let mut frame = eth(0x8864, &pppoe(0x0021, &ip4(47, &gre(0x3000, 0x0800, &[1, 2], &inner))));
        for (at, b) in flips {
            let i = usize::from(at) % frame.len();
            frame[i] = b;
        }
        let cut = usize::try_from(seed % u64::try_from(frame.len() + 1).unwrap()).unwrap();
        let mut dc = Decapsulator::default();
        count_all_links(&mut dc, &frame);
        count_all_links(&mut dc, &frame[..cut]);
    }

    #[test]
    fn fragments_reassemble_in_any_order(
        len in 1usize..3000,
        raw in proptest::collection::vec(any::<u16>(), 0..12),
        seed in any::<u64>(),
        v6 in any::<bool>(),
    ) {
        let pkt = if v6 { tcp6(&payload(len)) } else { tcp4(&payload(len)) };
        let data_len = pkt.len() - if v6 { 40 } else { 20 };
        // IPv6 first fragments must hold the TCP header.
        let mut cuts = cuts_from(&raw, data_len);
        if v6 {
            cuts.retain(|c| *c >= 24);
        }
        let mut frags = if v6 { frag6(&pkt, &cuts, 42) } else { frag4(&pkt, &cuts) };
        shuffle(&mut frags, seed);
        // Repeat one fragment before the one that completes: must not matter.
        // (After completion a copy would rightly start a new datagram.)
        if frags.len() > 1 {
            let n = u64::try_from(frags.len() - 1).unwrap();
            let src = usize::try_from(seed % n).unwrap();
            let at = usize::try_from((seed >> 32) % n).unwrap();
            let dup = frags[src].clone();
            frags.insert(at.max(src + 1).min(frags.len() - 1), dup);
        }
        let mut dc = Decapsulator::default();
        let mut out = Vec::new();
        for f in &frags {
            if let Outcome::Packet { ip, .. } = dc.push(LinkType::RawIp, 0, f) {
                out.push(ip.into_owned());
            }
        }
        prop_assert_eq!(out, vec![pkt]);
        prop_assert_eq!(dc.defrag_stats().pending, 0);
    }

    #[test]
    fn hostile_fragment_streams_stay_within_bounds(
        frags in proptest::collection::vec(
            (0u16..4, 0u16..8192, 0usize..600, any::<bool>(), any::<bool>(), 0u64..50),
            1..60,
        ),
    ) {
        let cfg = DefragConfig { max_datagrams: 3, max_bytes: 2000, timeout_ns: 20 };
        let mut d = Defragmenter::new(cfg);
        let base = tcp4(&payload(1200));
        let mut ts = 0;
        for (id, off, len, more, v6, step) in frags {
            ts += step;
            let bytes = if v6 {
                let mut v = frag6_piece(&udp6(&payload(600)), 0, len.min(600), more, u32::from(id));
                v[42..44].copy_from_slice(&((off & 0x1fff) << 3 | u16::from(more)).to_be_bytes());
                v
            } else {
                let mut v = frag4_piece(&base, 0, len.min(1200), more);
                v[4..6].copy_from_slice(&id.to_be_bytes());
                v[6..8].copy_from_slice(&(off & 0x1fff | if more { 0x2000 } else { 0 }).to_be_bytes());
                v
            };
            if let DefragResult::Complete(p) = d.push(ts, &bytes) {
                // Whatever completes parses and has a consistent length.
                prop_assert!(p.len() <= 65535 + 40);
                let h = super::ip::parse_ip(&p);
                prop_assert!(matches!(h, Ok(i) if i.frag.is_none() && !i.truncated && i.len == p.len()));
            }
            prop_assert!(d.bytes_held() <= cfg.max_bytes);
            prop_assert!(d.stats().pending <= 3);
        }
        d.expire_all();
        prop_assert_eq!(d.bytes_held(), 0);
    }
}
