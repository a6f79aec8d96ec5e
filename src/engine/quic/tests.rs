//! Tests against the RFCs' sample packets, and against Initials built here
//! with the same crates (split, reordered, overlapping, coalesced hellos).

use super::crypto::{InitialKeys, InitialSecrets};
use super::detect::{CryptoStream, MAX_CRYPTO, MAX_RANGES};
use super::packet::{PacketType, Version};
use super::*;
use crate::engine::hello::build::{client_hello, openssl_record, unhex};
use proptest::prelude::*;

const DCID: &str = "8394c8f03e515708";
const V1_PACKET: &str = include_str!("testdata/rfc9001_client_initial.hex");
const V2_PACKET: &str = include_str!("testdata/rfc9369_client_initial.hex");
/// The CRYPTO frame both RFCs' client Initials carry before their padding.
const CLIENT_CRYPTO: &str = include_str!("testdata/rfc9001_client_crypto.hex");
const V1_SERVER: &str = include_str!("testdata/rfc9001_server_initial.hex");
const V1_RETRY: &str = include_str!("testdata/rfc9001_retry.hex");
const V2_RETRY: &str = include_str!("testdata/rfc9369_retry.hex");

#[test]
fn initial_keys_of_rfc9001_a1_and_rfc9369_a1() {
    let table = [
        (
            Version::V1,
            "1f369613dd76d5467730efcbe3b1a22d",
            "fa044b2f42a3fd3b46fb255c",
            "9f50449e04a0e810283a1e9933adedd2",
        ),
        (
            Version::V2,
            "8b1a0bc121284290a29e0971b5cd045d",
            "91f73e2351d8fa91660e909f",
            "45b95e15235d6f45a6b19cbcb0294ba9",
        ),
    ];
    for (v, key, iv, hp) in table {
        let s = InitialSecrets::client(v, &unhex(DCID));
        assert_eq!(s.key.to_vec(), unhex(key), "{v:?} key");
        assert_eq!(s.iv.to_vec(), unhex(iv), "{v:?} iv");
        assert_eq!(s.hp.to_vec(), unhex(hp), "{v:?} hp");
    }
}

#[test]
fn header_protection_masks_of_the_rfcs() {
    let table = [
        (Version::V1, "d1b1c98dd7689fb8ec11d242b123dc9b", "437b9aec36"),
        (Version::V2, "ffe67b6abcdb4298b485dd04de806071", "94a0c95e80"),
    ];
    for (v, sample, mask) in table {
        let keys = InitialKeys::client(v, &unhex(DCID));
        let sample: [u8; 16] = unhex(sample).try_into().unwrap();
        assert_eq!(keys.hp_mask(&sample).to_vec(), unhex(mask), "{v:?}");
    }
}

/// The RFC's unprotected payload: its CRYPTO frame, then PADDING to 1162.
fn rfc_payload() -> Vec<u8> {
    let mut p = unhex(CLIENT_CRYPTO);
    p.resize(1162, 0);
    p
}

#[test]
fn opens_the_client_initials_of_rfc9001_a2_and_rfc9369_a2() {
    for (v, packet, wire) in [
        (Version::V1, V1_PACKET, 1u32),
        (Version::V2, V2_PACKET, 0x6b33_43cf),
    ] {
        let d = unhex(packet);
        assert_eq!(d.len(), 1200);
        let got = client_initial(&d).unwrap();
        assert_eq!(got.len(), 1, "{v:?}");
        let p = &got[0];
        assert_eq!((p.version, p.version.wire()), (v, wire));
        assert_eq!(p.dcid, unhex(DCID));
        assert_eq!(p.packet_number, 2);
        assert_eq!(p.plaintext, rfc_payload(), "{v:?} payload");
        assert_eq!(p.frame_error, None);
        let frame = unhex(CLIENT_CRYPTO);
        assert_eq!(p.crypto.len(), 1);
        assert_eq!(p.crypto[0].offset, 0);
        assert_eq!(p.crypto[0].data, &frame[4..], "CRYPTO data after 06 00 40f1");

        let mut q = QuicHello::new();
        let QuicStatus::Done(h) = q.push_datagram(&d) else {
            panic!("{v:?}: no hello");
        };
        assert_eq!(h.server_name_str(), Some("example.com"));
        assert_eq!(h.alpn, [b"alpn".to_vec()]);
        assert!(!h.ech);
        assert_eq!(h.supported_versions, [0x0304]);
        assert_eq!(q.version(), Some(v));
        assert_eq!(q.buffered(), 0, "state freed");
    }
}

/// The test-only sealer reproduces the RFCs' protected packets bit for bit,
/// so the packets the other tests build are protected as a client would.
#[test]
fn sealing_the_rfc_payload_gives_the_rfc_packet() {
    for (v, header, packet) in [
        (
            Version::V1,
            "c300000001088394c8f03e5157080000449e00000002",
            V1_PACKET,
        ),
        (
            Version::V2,
            "d36b3343cf088394c8f03e5157080000449e00000002",
            V2_PACKET,
        ),
    ] {
        let keys = InitialKeys::client(v, &unhex(DCID));
        assert_eq!(
            keys.seal(&unhex(header), 2, &rfc_payload()),
            unhex(packet),
            "{v:?}"
        );
    }
}

#[test]
fn any_flipped_bit_of_the_rfc_packet_is_refused_or_harmless() {
    let d = unhex(V1_PACKET);
    for i in (0..40).chain((40..d.len()).step_by(7)) {
        let mut x = d.clone();
        x[i] ^= 0x01;
        // Header bytes are authenticated data or key input: every flip
        // must end in an error (or, for version 0, a skipped Version
        // Negotiation packet), never in a different plaintext.
        let r = client_initial(&x);
        assert!(!matches!(&r, Ok(v) if !v.is_empty()), "byte {i}: {r:?}");
    }
}

#[test]
fn server_initial_retry_and_version_negotiation_are_not_a_client_hello() {
    // The RFC's server Initial: too short for a client's, and other keys.
    let server = unhex(V1_SERVER);
    assert_eq!(
        client_initial(&server),
        Err(QuicError::ShortDatagram(server.len()))
    );
    let mut padded = server.clone();
    padded.resize(1200, 0);
    assert_eq!(client_initial(&padded), Err(QuicError::Decrypt));

    let mut vn = vec![0xc5, 0, 0, 0, 0, 4, 1, 2, 3, 4, 4, 5, 6, 7, 8];
    vn.extend_from_slice(&[0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf]);
    for d in [unhex(V1_RETRY), unhex(V2_RETRY), vn] {
        assert_eq!(client_initial(&d), Ok(vec![]), "{d:02x?}");
        let mut q = QuicHello::new();
        assert_eq!(q.push_datagram(&d), QuicStatus::NotQuic);
        // Ignored mid-attempt too.
        let mut q = QuicHello::new();
        let hello = client_hello(Some("x.example"), &["h3"], false, 0);
        assert_eq!(
            q.push_datagram(&datagram(&[initial(
                Version::V1,
                b"attempt1",
                0,
                &crypto(0, &hello[..50]),
                1200
            )])),
            QuicStatus::NeedMore
        );
        assert_eq!(q.push_datagram(&d), QuicStatus::NeedMore);
    }
    for d in [&b""[..], b"\x00", b"GET / HTTP/1.1\r\n", &[0x40; 1300]] {
        assert_eq!(QuicHello::new().push_datagram(d), QuicStatus::NotQuic);
    }
    // An unknown version (draft-29) is not read.
    let mut draft = unhex(V1_PACKET);
    draft[1..5].copy_from_slice(&[0xff, 0, 0, 0x1d]);
    assert_eq!(
        client_initial(&draft),
        Err(QuicError::UnsupportedVersion(0xff00_001d))
    );
}

// ---- Builders of client Initials -------------------------------------------

fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=0x3f => vec![v as u8],
        0x40..=0x3fff => (0x4000 | v as u16).to_be_bytes().to_vec(),
        0x4000..=0x3fff_ffff => (0x8000_0000 | v as u32).to_be_bytes().to_vec(),
        _ => (0xc000_0000_0000_0000 | v).to_be_bytes().to_vec(),
    }
}

/// A CRYPTO frame.
fn crypto(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    f.extend(varint(offset));
    f.extend(varint(data.len() as u64));
    f.extend_from_slice(data);
    f
}

/// A protected client Initial of `version` to `dcid` carrying `frames`,
/// padded with PADDING frames to `size` bytes when shorter.
fn initial(version: Version, dcid: &[u8], pn: u16, frames: &[u8], size: usize) -> Vec<u8> {
    initial_keyed(version, dcid, dcid, pn, frames, size)
}

/// [`initial`] sent to `dcid` but protected with the keys of `key_dcid`.
fn initial_keyed(
    version: Version,
    dcid: &[u8],
    key_dcid: &[u8],
    pn: u16,
    frames: &[u8],
    size: usize,
) -> Vec<u8> {
    let scid = b"clnt";
    let mut h = vec![0xc1 | version.type_bits(PacketType::Initial)]; // 2-byte pn
    h.extend_from_slice(&version.wire().to_be_bytes());
    h.push(dcid.len() as u8);
    h.extend_from_slice(dcid);
    h.push(scid.len() as u8);
    h.extend_from_slice(scid);
    h.push(0); // no token
    let overhead = h.len() + 2 + 2 + 16;
    let mut payload = frames.to_vec();
    if payload.len() + overhead < size {
        payload.resize(size - overhead, 0);
    }
    h.extend_from_slice(&(0x4000 | (2 + payload.len() + 16) as u16).to_be_bytes());
    h.extend_from_slice(&pn.to_be_bytes());
    InitialKeys::client(version, key_dcid).seal(&h, u64::from(pn), &payload)
}

fn datagram(packets: &[Vec<u8>]) -> Vec<u8> {
    packets.concat()
}

const DCID2: &[u8] = b"\x01\x02\x03\x04\x05\x06\x07\x08";

/// A hello too long for one Initial, and its halves as two datagrams.
fn split_hello(version: Version) -> (HelloInfo, Vec<u8>, Vec<u8>) {
    let msg = client_hello(Some("split.example"), &["h3"], true, 1500);
    let Hello::Done(h) = crate::engine::hello::parse_client_hello(&msg) else {
        panic!("builder");
    };
    let cut = msg.len() / 2;
    let a = datagram(&[initial(version, DCID2, 0, &crypto(0, &msg[..cut]), 1200)]);
    let b = datagram(&[initial(version, DCID2, 1, &crypto(cut as u64, &msg[cut..]), 1200)]);
    (h.to_info(), a, b)
}
use crate::engine::hello::{Hello, HelloAssembler, Status};

#[test]
fn hello_split_over_two_initials_in_either_order() {
    for v in [Version::V1, Version::V2] {
        let (want, a, b) = split_hello(v);
        assert!(want.ech && want.alpn == [b"h3".to_vec()]);
        for (first, second) in [(&a, &b), (&b, &a)] {
            let mut q = QuicHello::new();
            assert_eq!(q.push_datagram(first), QuicStatus::NeedMore, "{v:?}");
            assert!(q.buffered() > 0);
            assert_eq!(q.push_datagram(second), QuicStatus::Done(want.clone()), "{v:?}");
            assert!(!q.saw_conflict());
            // Sticky, and later datagrams change nothing.
            assert_eq!(q.push_datagram(first), QuicStatus::Done(want.clone()));
        }
    }
}

#[test]
fn a_real_openssl_hello_over_three_initials_in_reverse() {
    let rec = openssl_record();
    let Status::Done(want) = HelloAssembler::new().push(&rec) else {
        panic!("not parsed");
    };
    let msg = &rec[5..]; // CRYPTO frames carry no record layer
    let mut q = QuicHello::new();
    let mut last = QuicStatus::NotQuic;
    for (pn, i) in (0..3u16).rev().enumerate() {
        let part = msg.chunks(180).nth(usize::from(i)).unwrap();
        let frame = crypto(u64::from(i) * 180, part);
        last = q.push_datagram(&datagram(&[initial(Version::V1, DCID2, pn as u16, &frame, 1200)]));
    }
    assert_eq!(last, QuicStatus::Done(want));
}

/// Datagrams of a hex file, one a line.
fn datagrams(text: &str) -> Vec<Vec<u8>> {
    text.lines().filter(|l| !l.is_empty()).map(unhex).collect()
}

#[test]
fn first_flights_of_a_real_client_v1_and_v2() {
    for (file, v) in [
        (include_str!("testdata/aioquic_v1.hex"), Version::V1),
        (include_str!("testdata/aioquic_v2.hex"), Version::V2),
    ] {
        let d = datagrams(file);
        assert_eq!(d.len(), 1);
        let p = client_initial(&d[0]).unwrap();
        assert_eq!((p.len(), p[0].version, p[0].frame_error.clone()), (1, v, None));
        let mut q = QuicHello::new();
        let QuicStatus::Done(h) = q.push_datagram(&d[0]) else {
            panic!("{v:?}: no hello");
        };
        assert_eq!(h.server_name_str(), Some("quic.example.org"));
        assert_eq!(h.alpn, [b"h3".to_vec()]);
        assert_eq!(h.supported_versions, [0x0304]);
    }
}

#[test]
fn a_real_clients_hello_over_three_datagrams_in_every_order() {
    let d = datagrams(include_str!("testdata/aioquic_v1_split.hex"));
    assert_eq!(d.len(), 3);
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let mut q = QuicHello::new();
        let got: Vec<QuicStatus> = order.iter().map(|&i| q.push_datagram(&d[i])).collect();
        assert_eq!(
            got[..2],
            [QuicStatus::NeedMore, QuicStatus::NeedMore],
            "{order:?}"
        );
        let QuicStatus::Done(h) = &got[2] else {
            panic!("{order:?}: {:?}", got[2]);
        };
        assert_eq!(h.server_name_str(), Some("quic.example.org"));
        assert_eq!(h.alpn.len(), 26);
        assert_eq!(h.alpn[0], b"h3");
        assert!(h.alpn[25].starts_with(b"x024y"));
    }
}

#[test]
fn reordered_overlapping_frames_with_pings_acks_and_padding() {
    let msg = client_hello(Some("frames.example"), &["h3", "hq"], false, 400);
    let n = msg.len();
    let mut frames = Vec::new();
    frames.push(0x01); // PING
    frames.extend(crypto(300, &msg[300..]));
    frames.extend([0x00, 0x00, 0x00]); // PADDING between frames
    frames.extend([0x02, 0x00, 0x00, 0x00, 0x00]); // ACK
    frames.extend(crypto(100, &msg[100..350])); // overlaps both sides
    frames.extend(crypto(0, &msg[..120]));
    frames.extend(crypto(0, &msg[..120])); // duplicate
    let d = datagram(&[initial(Version::V1, DCID2, 0, &frames, 1200)]);
    let mut q = QuicHello::new();
    let QuicStatus::Done(h) = q.push_datagram(&d) else {
        panic!("no hello");
    };
    assert_eq!(h.server_name_str(), Some("frames.example"));
    assert!(!q.saw_conflict());
    assert!(n > 350);
}

#[test]
fn differing_overlap_keeps_the_first_copy_and_is_flagged() {
    let real = client_hello(Some("blocked.example"), &[], false, 0);
    let decoy = client_hello(Some("benign.example"), &[], false, 0);
    // The decoy's length differs; what matters is that the first bytes win.
    let d1 = datagram(&[initial(Version::V1, DCID2, 0, &crypto(0, &real[..40]), 1200)]);
    let d2 = datagram(&[initial(Version::V1, DCID2, 1, &crypto(0, &decoy), 1200)]);
    let mut q = QuicHello::new();
    assert_eq!(q.push_datagram(&d1), QuicStatus::NeedMore);
    // The real hello is one byte longer than the decoy: its length field,
    // kept from the first copy, still waits for that byte.
    assert_eq!(real.len(), decoy.len() + 1);
    assert_eq!(q.push_datagram(&d2), QuicStatus::NeedMore);
    assert!(q.saw_conflict());
}

#[test]
fn coalesced_packets_in_one_datagram() {
    let msg = client_hello(Some("coalesced.example"), &["h3"], false, 700);
    let cut = 500;
    // Initial, Initial, a 0-RTT packet (skipped), another connection's
    // Initial (skipped), then zero padding.
    let zero_rtt = {
        let mut p = vec![0xc0 | Version::V1.type_bits(PacketType::ZeroRtt)];
        p.extend_from_slice(&1u32.to_be_bytes());
        p.push(DCID2.len() as u8);
        p.extend_from_slice(DCID2);
        p.extend_from_slice(&[0, 0x05, 1, 2, 3, 4, 5]);
        p
    };
    let other = initial(Version::V1, b"otherdcid", 0, &crypto(0, b"\x02junk"), 0);
    let mut d = datagram(&[
        initial(Version::V1, DCID2, 0, &crypto(0, &msg[..cut]), 0),
        initial(Version::V1, DCID2, 1, &crypto(cut as u64, &msg[cut..]), 0),
        zero_rtt,
        other,
    ]);
    d.resize(d.len().max(1200) + 20, 0);
    let got = client_initial(&d).unwrap();
    assert_eq!(got.iter().map(|p| p.packet_number).collect::<Vec<_>>(), [0, 1]);
    let QuicStatus::Done(h) = QuicHello::new().push_datagram(&d) else {
        panic!("no hello");
    };
    assert_eq!(h.server_name_str(), Some("coalesced.example"));
}

#[test]
fn short_datagrams_are_ignored() {
    let msg = client_hello(Some("short.example"), &[], false, 0);
    let d = datagram(&[initial(Version::V1, DCID2, 0, &crypto(0, &msg), 0)]);
    assert!(d.len() < MIN_CLIENT_DATAGRAM);
    assert_eq!(client_initial(&d), Err(QuicError::ShortDatagram(d.len())));
    assert_eq!(QuicHello::new().push_datagram(&d), QuicStatus::NotQuic);
}

#[test]
fn a_new_connection_id_starts_over() {
    // After a Retry the client resends its hello to the server's new ID.
    let msg = client_hello(Some("retry.example"), &[], false, 0);
    let mut q = QuicHello::new();
    let first = datagram(&[initial(Version::V1, b"first-id", 0, &crypto(0, &msg[..30]), 1200)]);
    assert_eq!(q.push_datagram(&first), QuicStatus::NeedMore);
    let second = datagram(&[initial(Version::V2, b"server-chosen", 1, &crypto(0, &msg), 1200)]);
    let QuicStatus::Done(h) = q.push_datagram(&second) else {
        panic!("no hello");
    };
    assert_eq!(h.server_name_str(), Some("retry.example"));
    assert_eq!(q.version(), Some(Version::V2));
}

#[test]
fn retransmission_to_the_servers_id_keeps_the_first_keys() {
    let msg = client_hello(Some("late.example"), &["h3"], false, 900);
    let (a, b) = msg.split_at(600);
    let first = initial(Version::V2, b"client-first", 0, &crypto(0, a), 1200);
    let late = initial_keyed(Version::V2, b"srv", b"client-first", 3, &crypto(600, b), 1200);
    // Alone, the late packet does not open: its keys are not its ID's.
    assert_eq!(client_initial(&late), Err(QuicError::Decrypt));
    let mut q = QuicHello::new();
    assert_eq!(q.push_datagram(&first), QuicStatus::NeedMore);
    let QuicStatus::Done(h) = q.push_datagram(&late) else {
        panic!("no hello");
    };
    assert_eq!(h.server_name_str(), Some("late.example"));
}

#[test]
fn bounds_and_refusals() {
    let one = |frames: &[u8]| {
        let mut q = QuicHello::new();
        q.push_datagram(&datagram(&[initial(Version::V1, DCID2, 0, frames, 1200)]))
    };
    assert_eq!(
        one(&crypto(MAX_CRYPTO as u64 - 1, b"ab")),
        QuicStatus::Error(QuicError::CryptoTooLong)
    );
    assert_eq!(
        one(&crypto((1 << 62) - 3, b"ab")),
        QuicStatus::Error(QuicError::CryptoTooLong)
    );
    // Past 2^62 - 1 the frame itself is malformed: no attempt starts on it.
    let d = datagram(&[initial(
        Version::V1,
        DCID2,
        0,
        &crypto((1 << 62) - 2, b"ab"),
        1200,
    )]);
    let p = client_initial(&d).unwrap();
    assert_eq!(
        p[0].frame_error,
        Some(QuicError::Malformed("CRYPTO frame past 2^62"))
    );
    assert!(p[0].crypto.is_empty());
    assert_eq!(
        one(&crypto(0, b"\x02\x00\x00\x10")),
        QuicStatus::Error(QuicError::NotHello)
    );
    assert_eq!(
        one(&crypto(0, b"\x01\x00\x90\x00")),
        QuicStatus::Error(QuicError::HelloTooLong)
    );
    let crumbs: Vec<u8> = (0..=MAX_RANGES as u64)
        .flat_map(|i| crypto(10 + 2 * i, b"x"))
        .collect();
    assert_eq!(one(&crumbs), QuicStatus::Error(QuicError::TooFragmented));
    // An unknown frame ends parsing, keeping the CRYPTO data before it.
    let msg = client_hello(Some("unknown-frame.example"), &[], false, 0);
    let mut frames = crypto(0, &msg);
    frames.extend([0x08, 0x00, 0x00]); // STREAM: not allowed in Initial
    let d = datagram(&[initial(Version::V1, DCID2, 0, &frames, 1200)]);
    let p = client_initial(&d).unwrap();
    assert_eq!(p[0].frame_error, Some(QuicError::UnexpectedFrame(8)));
    assert!(matches!(QuicHello::new().push_datagram(&d), QuicStatus::Done(_)));
}

#[test]
fn crypto_stream_ranges() {
    let mut s = CryptoStream::default();
    s.insert(4, b"efgh").unwrap();
    assert_eq!(s.contiguous(), b"");
    s.insert(0, b"abc").unwrap();
    assert_eq!(s.contiguous(), b"abc");
    s.insert(2, b"cde").unwrap();
    assert_eq!(s.contiguous(), b"abcdefgh");
    assert!(!s.conflict());
    s.insert(1, b"X").unwrap();
    assert!(s.conflict());
    assert_eq!(s.contiguous(), b"abcdefgh", "first copy kept");
    s.insert(20, b"z").unwrap();
    s.insert(8, b"ijkl").unwrap();
    assert_eq!(s.contiguous(), b"abcdefghijkl");
}

proptest! {
    #[test]
    fn garbage_datagrams_never_panic(d in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let _ = client_initial(&d);
        let mut q = QuicHello::new();
        let _ = q.push_datagram(&d);
        let _ = frames::frames(&d).count();
    }

    #[test]
    fn long_header_garbage_never_panics(
        first in 0x80u8..=0xff,
        v2 in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..1300),
    ) {
        let mut d = vec![first];
        d.extend_from_slice(&if v2 { Version::V2 } else { Version::V1 }.wire().to_be_bytes());
        d.extend_from_slice(&rest);
        let _ = client_initial(&d);
        let _ = QuicHello::new().push_datagram(&d);
    }

}

proptest! {
    // Each case seals up to 8 packets: fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn crypto_frames_in_any_order_give_the_hello(seed in any::<u64>(), parts in 2usize..8) {
        let msg = client_hello(Some("shuffle.example"), &["h3"], false, 900);
        let size = msg.len().div_ceil(parts);
        let mut chunks: Vec<(usize, &[u8])> =
            msg.chunks(size).enumerate().map(|(i, c)| (i * size, c)).collect();
        // A cheap deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..chunks.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            chunks.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut q = QuicHello::new();
        let mut last = QuicStatus::NeedMore;
        for (pn, (off, c)) in chunks.iter().enumerate() {
            let d = datagram(&[initial(Version::V2, DCID2, pn as u16, &crypto(*off as u64, c), 1200)]);
            last = q.push_datagram(&d);
        }
        let QuicStatus::Done(h) = last else { panic!("{last:?}") };
        prop_assert_eq!(h.server_name_str(), Some("shuffle.example"));
    }
}
