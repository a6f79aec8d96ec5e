//! Per-attempt state: the CRYPTO stream of a client's Initial packets,
//! rebuilt by offset, and the ClientHello parsed from it.
//!
//! A ClientHello with post-quantum key shares or many extensions no longer
//! fits one 1200-byte Initial, so clients spread it over several packets
//! (and datagrams), which the network may reorder or the client retransmit.
//! [`QuicHello`] gathers the CRYPTO data by offset until the ClientHello is
//! complete. Where two copies of the same offset disagree the first one is
//! kept and the disagreement is remembered ([`QuicHello::saw_conflict`]):
//! a server keeps whichever it got first too, and a caller may treat a
//! disagreement as an evasion attempt.

use super::crypto::InitialKeys;
use super::error::QuicError;
use super::initial::{Pinned, open_initials};
use super::packet::Version;
use crate::engine::hello::{self, Hello, HelloInfo};

/// Most CRYPTO stream bytes kept for one attempt (offsets past it are an
/// error): twice the largest ClientHello accepted.
pub const MAX_CRYPTO: usize = 64 * 1024;
/// Most separate received ranges kept: more means a sender slicing its
/// hello into crumbs to cost memory and time.
pub const MAX_RANGES: usize = 64;

/// The CRYPTO stream of one attempt: bytes by offset, with the ranges
/// received so far.
#[derive(Debug, Clone, Default)]
pub struct CryptoStream {
    buf: Vec<u8>,
    /// Received ranges, sorted, disjoint and not touching.
    filled: Vec<(usize, usize)>,
    conflict: bool,
}

impl CryptoStream {
    /// Adds `data` at `offset`; bytes already held are kept (a differing
    /// copy sets the conflict flag).
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), QuicError> {
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| QuicError::CryptoTooLong)?;
        let end = start
            .checked_add(data.len())
            .filter(|&e| e <= MAX_CRYPTO)
            .ok_or(QuicError::CryptoTooLong)?;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let mut pos = start;
        for &(fs, fe) in &self.filled {
            if fe <= pos {
                continue;
            }
            if fs >= end {
                break;
            }
            if fs > pos {
                self.buf[pos..fs].copy_from_slice(&data[pos - start..fs - start]);
            }
            let (os, oe) = (pos.max(fs), end.min(fe));
            if self.buf[os..oe] != data[os - start..oe - start] {
                self.conflict = true;
            }
            pos = oe;
        }
        if pos < end {
            self.buf[pos..end].copy_from_slice(&data[pos - start..]);
        }
        self.add_range(start, end);
        if self.filled.len() > MAX_RANGES {
            return Err(QuicError::TooFragmented);
        }
        Ok(())
    }

    fn add_range(&mut self, start: usize, end: usize) {
        let i = self.filled.partition_point(|&(s, _)| s < start);
        self.filled.insert(i, (start, end));
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.filled.len());
        for &(s, e) in &self.filled {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.filled = merged;
    }

    /// The bytes received without a gap from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        match self.filled.first() {
            Some(&(0, e)) => &self.buf[..e],
            _ => &[],
        }
    }

    /// Two copies of some offset differed.
    pub fn conflict(&self) -> bool {
        self.conflict
    }
}

/// What [`QuicHello::push_datagram`] knows after a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicStatus {
    /// No client Initial of a known version in this datagram, and none
    /// before it: not (readable) QUIC so far.
    NotQuic,
    /// An attempt has started; its ClientHello is not complete yet.
    NeedMore,
    /// The complete ClientHello.
    Done(HelloInfo),
    /// The handshake stream cannot be inspected (not a ClientHello, or past
    /// the bounds).
    Error(QuicError),
}

#[derive(Debug, Clone)]
struct Attempt {
    version: Version,
    /// The ID its keys come from (the client's first destination ID).
    dcid: Vec<u8>,
    keys: InitialKeys,
    stream: CryptoStream,
}

/// Follows the client side of one QUIC connection attempt (feed it the
/// client's datagrams) until its ClientHello is known.
///
/// An attempt is pinned by the version and destination connection ID of
/// the first Initial that decrypts. Later Initials sent to another ID (the
/// server's, once it has answered) are opened with the attempt's keys, as
/// the client protects them; one that decrypts only with its own ID's
/// keys, or has another version, starts over (a client does exactly that
/// after a Retry or Version Negotiation). Packets that do not decrypt are
/// ignored. Once the answer is [`QuicStatus::Done`] or
/// [`QuicStatus::Error`] it stays so and the buffers are freed.
#[derive(Debug, Clone, Default)]
pub struct QuicHello {
    /// Boxed: keys and buffers (about 1 KiB before any CRYPTO data) exist
    /// only while an attempt is followed.
    attempt: Option<Box<Attempt>>,
    result: Option<QuicStatus>,
    version: Option<Version>,
    conflict: bool,
}

impl QuicHello {
    /// A tracker with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one UDP payload sent by the client.
    pub fn push_datagram(&mut self, d: &[u8]) -> QuicStatus {
        if let Some(r) = &self.result {
            return r.clone();
        }
        let pinned = self.attempt.as_ref().map(|a| Pinned {
            version: a.version,
            dcid: &a.dcid,
            keys: &a.keys,
        });
        let payloads = open_initials(d, pinned).unwrap_or_default();
        if payloads.is_empty() {
            return match self.attempt {
                Some(_) => QuicStatus::NeedMore,
                None => QuicStatus::NotQuic,
            };
        }
        for p in payloads {
            let same = self
                .attempt
                .as_ref()
                .is_some_and(|a| a.version == p.version && a.dcid == p.dcid);
            if !same {
                self.version = Some(p.version);
                self.attempt = Some(Box::new(Attempt {
                    version: p.version,
                    keys: InitialKeys::client(p.version, &p.dcid),
                    dcid: p.dcid,
                    stream: CryptoStream::default(),
                }));
            }
            let Some(a) = self.attempt.as_mut() else {
                continue;
            };
            for f in &p.crypto {
                if let Err(e) = a.stream.insert(f.offset, &f.data) {
                    return self.finish(QuicStatus::Error(e));
                }
            }
            self.conflict |= a.stream.conflict();
        }
        let Some(a) = &self.attempt else {
            return QuicStatus::NeedMore;
        };
        let head = a.stream.contiguous();
        let status = match hello::parse_client_hello(head) {
            Hello::Done(h) => QuicStatus::Done(h.to_info()),
            Hello::NotHello => QuicStatus::Error(QuicError::NotHello),
            Hello::NeedMore => match hello::client_hello_len(head) {
                Some(n) if n > hello::MAX_HELLO => QuicStatus::Error(QuicError::HelloTooLong),
                _ => return QuicStatus::NeedMore,
            },
        };
        self.finish(status)
    }

    fn finish(&mut self, status: QuicStatus) -> QuicStatus {
        self.attempt = None;
        self.result = Some(status.clone());
        status
    }

    /// The version of the current (or finished) attempt.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Two copies of some CRYPTO offset differed in this attempt.
    pub fn saw_conflict(&self) -> bool {
        self.conflict
    }

    /// CRYPTO bytes held for the attempt in progress.
    pub fn buffered(&self) -> usize {
        self.attempt.as_ref().map_or(0, |a| a.stream.buf.len())
    }
}
