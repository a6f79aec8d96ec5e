//! Fuzz target `quic_hello`: the QUIC Initial path (`client_initial`,
//! `QuicHello`, the frame parser, the CRYPTO reassembler) and the TLS
//! ClientHello parser and assembler, on arbitrary bytes.
//!
//! Must hold: no panic; the record assembler gives the same answer
//! whether the input comes in one chunk or cut in two; the CRYPTO stream
//! never holds more than its bound.
//!
//! Not yet registered (the body belongs in `src/run.rs` by this crate's
//! convention): add a `[[bin]]` named `quic_hello` for this file to
//! `Cargo.toml` and `quic_hello:4096` to `ci.sh`'s `TARGETS_ALL`.
#![no_main]

use appwall::engine::hello::{HelloAssembler, Status, parse_client_hello};
use appwall::engine::quic::detect::{CryptoStream, MAX_CRYPTO};
use appwall::engine::quic::{QuicHello, client_initial, frames};

libfuzzer_sys::fuzz_target!(|data: &[u8]| quic_hello(data));

fn quic_hello(data: &[u8]) {
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
