//! Inspection of QUIC client Initial packets: the ClientHello (server name,
//! ALPN, Encrypted Client Hello) of a QUIC connection attempt, so host and
//! application rules apply to HTTP/3 as they do to TLS over TCP.
//!
//! A client's Initial packets are encrypted with keys derived from their
//! own destination connection ID and a salt published per version (RFC
//! 9001 5.2), so an observer can open them. This module does so for QUIC
//! versions 1 (RFC 9000/9001) and 2 (RFC 9369) and nothing else:
//!
//! - [`packet`]: long headers, coalesced packets in a datagram; Version
//!   Negotiation and Retry packets are recognised and skipped;
//! - [`crypto`]: Initial keys, header protection removal, AEAD decryption;
//! - [`frames`]: the frames an Initial may carry, CRYPTO among them;
//! - [`detect`]: [`QuicHello`], which joins the CRYPTO data of all the
//!   Initials of one attempt (in any order, overlapping or not) and parses
//!   the ClientHello with [`super::hello`].
//!
//! Guarantees: no panic on any input; per-attempt state is at most
//! [`detect::MAX_CRYPTO`] bytes of CRYPTO data plus a few fixed fields, and
//! is released once the answer is known. Like a server (RFC 9000 14.1),
//! Initials in datagrams shorter than 1200 bytes are ignored, so a decoy a
//! server would drop cannot shape what inspection sees.

pub mod crypto;
pub mod detect;
pub mod frames;
pub mod packet;

pub use crate::engine::hello::HelloInfo;
pub use detect::{QuicHello, QuicStatus};
pub use packet::Version;

use crypto::InitialKeys;
use frames::Frame;
use packet::{LongPacket, PacketType};

/// Smallest UDP payload that may carry a client's Initial (RFC 9000 14.1).
pub const MIN_CLIENT_DATAGRAM: usize = 1200;

/// Why a datagram, packet or handshake could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    /// The datagram does not start with a long-header packet.
    #[error("not a QUIC long-header packet")]
    NotLongHeader,
    /// A length runs past the bytes present.
    #[error("truncated QUIC packet or frame")]
    Truncated,
    /// A version whose Initial keys are unknown here.
    #[error("unsupported QUIC version {0:#010x}")]
    UnsupportedVersion(u32),
    /// A field outside what the RFCs allow.
    #[error("malformed QUIC packet: {0}")]
    Malformed(&'static str),
    /// The packet does not authenticate with the client's Initial keys.
    #[error("Initial packet does not decrypt with the client's Initial keys")]
    Decrypt,
    /// A frame type an Initial packet may not carry (or this parser does not
    /// read).
    #[error("unexpected frame type {0:#x} in an Initial packet")]
    UnexpectedFrame(u64),
    /// An Initial in a datagram shorter than [`MIN_CLIENT_DATAGRAM`].
    #[error("Initial in a {0}-byte datagram (servers drop those under 1200)")]
    ShortDatagram(usize),
    /// CRYPTO data beyond [`detect::MAX_CRYPTO`].
    #[error("CRYPTO data past the inspection bound")]
    CryptoTooLong,
    /// CRYPTO data in more separate pieces than are kept.
    #[error("CRYPTO data in too many separate pieces")]
    TooFragmented,
    /// The handshake stream does not start with a well-formed ClientHello.
    #[error("CRYPTO data is not a ClientHello")]
    NotHello,
    /// The ClientHello is longer than [`super::hello::MAX_HELLO`].
    #[error("ClientHello longer than the inspection bound")]
    HelloTooLong,
}

/// One CRYPTO frame's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoFragment {
    /// Offset in the connection's Initial handshake stream.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A decrypted client Initial packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialPayload {
    /// QUIC version.
    pub version: Version,
    /// Destination connection ID (what the keys were derived from).
    pub dcid: Vec<u8>,
    /// Packet number (as sent; see [`crypto::InitialKeys::open`]).
    pub packet_number: u64,
    /// The decrypted frames, padding included.
    pub plaintext: Vec<u8>,
    /// Its CRYPTO frames' data, in packet order.
    pub crypto: Vec<CryptoFragment>,
    /// Why frame parsing stopped early, if it did (the CRYPTO frames before
    /// that point are in `crypto`).
    pub frame_error: Option<QuicError>,
}

/// Decrypts the client Initial packets of one UDP datagram.
///
/// Returns one entry per Initial that authenticates; 0-RTT, Handshake,
/// Retry and Version Negotiation packets are skipped (the result may be
/// empty). Errors only when the datagram's first packet cannot be read: not
/// QUIC, an unknown version, truncated, an Initial that does not decrypt, or
/// an Initial in a datagram under 1200 bytes. A later packet that fails
/// ends the walk and keeps what was found before it.
pub fn client_initial(datagram: &[u8]) -> Result<Vec<InitialPayload>, QuicError> {
    open_initials(datagram, None)
}

/// The keys of an attempt in progress, tried on Initials sent to another
/// connection ID: once the server has answered, a client addresses its
/// retransmitted Initials to the server's chosen ID but keeps protecting
/// them with the keys of its first ID (RFC 9001 5.2).
pub(crate) struct Pinned<'k> {
    pub version: Version,
    pub dcid: &'k [u8],
    pub keys: &'k InitialKeys,
}

/// [`client_initial`], also trying an attempt's keys.
pub(crate) fn open_initials(
    datagram: &[u8],
    pinned: Option<Pinned<'_>>,
) -> Result<Vec<InitialPayload>, QuicError> {
    let mut out = Vec::new();
    let mut first = true;
    for item in packet::packets(datagram) {
        let was_first = std::mem::replace(&mut first, false);
        let (at, h) = match item {
            Ok((_, LongPacket::VersionNegotiation)) => break,
            Ok((at, LongPacket::Known(h))) => (at, h),
            Err(e) if was_first => return Err(e),
            Err(_) => break,
        };
        if h.kind != PacketType::Initial {
            continue;
        }
        let opened = if datagram.len() < MIN_CLIENT_DATAGRAM {
            Err(QuicError::ShortDatagram(datagram.len()))
        } else {
            let bytes = datagram.get(at..at + h.len).ok_or(QuicError::Truncated)?;
            open_one(bytes, &h, pinned.as_ref())
        };
        let (o, key_dcid) = match opened {
            Ok(x) => x,
            Err(e) if was_first => return Err(e),
            Err(_) => break,
        };
        let mut crypto = Vec::new();
        let mut frame_error = None;
        for f in frames::frames(&o.plaintext) {
            match f {
                Ok(Frame::Crypto { offset, data }) if !data.is_empty() => {
                    crypto.push(CryptoFragment {
                        offset,
                        data: data.to_vec(),
                    });
                }
                Ok(_) => {}
                Err(e) => frame_error = Some(e),
            }
        }
        out.push(InitialPayload {
            version: h.version,
            dcid: key_dcid.to_vec(),
            packet_number: o.packet_number,
            plaintext: o.plaintext,
            crypto,
            frame_error,
        });
    }
    Ok(out)
}

/// Opens one Initial with the keys of its own destination ID (reusing the
/// attempt's when they are those), else with the attempt's; returns the
/// plaintext and the ID the working keys came from.
fn open_one<'a>(
    bytes: &[u8],
    h: &packet::LongHeader<'a>,
    pinned: Option<&Pinned<'a>>,
) -> Result<(crypto::Opened, &'a [u8]), QuicError> {
    let same_version = pinned.filter(|p| p.version == h.version);
    if let Some(p) = same_version.filter(|p| p.dcid == h.dcid) {
        return p.keys.open(bytes, h.pn_offset).map(|o| (o, p.dcid));
    }
    let own = InitialKeys::client(h.version, h.dcid).open(bytes, h.pn_offset);
    match (own, same_version) {
        (Ok(o), _) => Ok((o, h.dcid)),
        (Err(e), None) => Err(e),
        (Err(e), Some(p)) => p
            .keys
            .open(bytes, h.pn_offset)
            .map(|o| (o, p.dcid))
            .map_err(|_| e),
    }
}

#[cfg(test)]
mod tests;
