//! A client's Initial packets opened: every long-header packet of a
//! datagram parsed, its header protection removed and its payload
//! decrypted with the keys of its destination connection ID, and the
//! CRYPTO frames collected.

use super::crypto::{self, InitialKeys};
use super::error::QuicError;
use super::frames::{self, Frame};
use super::packet::{self, LongPacket, PacketType, Version};

/// Smallest UDP payload that may carry a client's Initial (RFC 9000 14.1).
pub const MIN_CLIENT_DATAGRAM: usize = 1200;

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
