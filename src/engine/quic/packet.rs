//! QUIC long-header parsing (RFC 9000 17.2, RFC 8999 for the
//! version-independent part, RFC 9369 3.2 for version 2's type bits).
//!
//! Only the unprotected parts are read here: the packet number and the
//! low bits of the first byte are still under header protection, which
//! [`super::crypto`] removes. Every length is checked against the datagram;
//! a packet whose length runs past the datagram is an error, never a panic.

use super::error::QuicError;

/// The QUIC versions whose Initial packets can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// QUIC version 1 (RFC 9000), wire value 0x00000001.
    V1,
    /// QUIC version 2 (RFC 9369), wire value 0x6b3343cf.
    V2,
}

impl Version {
    /// The version for a wire value, if it is one this module knows.
    pub fn from_wire(v: u32) -> Option<Version> {
        match v {
            0x0000_0001 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// The wire value.
    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => 0x0000_0001,
            Version::V2 => 0x6b33_43cf,
        }
    }

    /// The long-header packet type that the two type bits name.
    pub fn packet_type(self, first_byte: u8) -> PacketType {
        let bits = (first_byte >> 4) & 0x03;
        // Version 2 rotated the values by one (RFC 9369 3.2).
        let v1_bits = match self {
            Version::V1 => bits,
            Version::V2 => bits.wrapping_sub(1) & 0x03,
        };
        match v1_bits {
            0 => PacketType::Initial,
            1 => PacketType::ZeroRtt,
            2 => PacketType::Handshake,
            _ => PacketType::Retry,
        }
    }

    /// The two type bits (already shifted into place) of `t` in this version.
    pub fn type_bits(self, t: PacketType) -> u8 {
        let v1_bits: u8 = match t {
            PacketType::Initial => 0,
            PacketType::ZeroRtt => 1,
            PacketType::Handshake => 2,
            PacketType::Retry => 3,
        };
        let bits = match self {
            Version::V1 => v1_bits,
            Version::V2 => (v1_bits + 1) & 0x03,
        };
        bits << 4
    }
}

/// Long-header packet types of versions 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// Initial: carries the ClientHello.
    Initial,
    /// 0-RTT application data.
    ZeroRtt,
    /// Handshake.
    Handshake,
    /// Retry (server to client; no length field, fills the datagram).
    Retry,
}

/// What one long-header packet at the start of some bytes is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LongPacket<'a> {
    /// A Version Negotiation packet (version 0): fills the datagram.
    VersionNegotiation,
    /// A packet of a version this module knows.
    Known(LongHeader<'a>),
}

/// The unprotected fields of a long-header packet of a known version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongHeader<'a> {
    /// Its version.
    pub version: Version,
    /// Its type.
    pub kind: PacketType,
    /// Destination connection ID.
    pub dcid: &'a [u8],
    /// Source connection ID.
    pub scid: &'a [u8],
    /// Token (Initial only; empty otherwise).
    pub token: &'a [u8],
    /// Offset of the (protected) packet number from the packet's start;
    /// equal to `len` for a Retry, which has none.
    pub pn_offset: usize,
    /// Bytes of the datagram this packet occupies.
    pub len: usize,
}

/// Reads a variable-length integer (RFC 9000 16) at `*at`, advancing it.
pub fn varint(b: &[u8], at: &mut usize) -> Result<u64, QuicError> {
    let first = *b.get(*at).ok_or(QuicError::Truncated)?;
    let n = 1usize << (first >> 6);
    let bytes = b.get(*at..*at + n).ok_or(QuicError::Truncated)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = v << 8 | u64::from(x);
    }
    *at += n;
    Ok(v)
}

/// A varint used as a length within `b`: it must fit in memory.
fn varint_len(b: &[u8], at: &mut usize) -> Result<usize, QuicError> {
    usize::try_from(varint(b, at)?).map_err(|_| QuicError::Truncated)
}

/// A connection ID with its one-byte length; at most 20 bytes in versions 1
/// and 2 (RFC 9000 17.2).
fn cid<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8], QuicError> {
    let n = usize::from(*b.get(*at).ok_or(QuicError::Truncated)?);
    if n > 20 {
        return Err(QuicError::Malformed("connection ID over 20 bytes"));
    }
    let id = b.get(*at + 1..*at + 1 + n).ok_or(QuicError::Truncated)?;
    *at += 1 + n;
    Ok(id)
}

/// Parses the long-header packet at the start of `b` (the rest of a
/// datagram). Errors: not a long header, an unknown version, or lengths
/// that do not fit.
pub fn parse_long(b: &[u8]) -> Result<LongPacket<'_>, QuicError> {
    let first = *b.first().ok_or(QuicError::Truncated)?;
    if first & 0x80 == 0 {
        return Err(QuicError::NotLongHeader);
    }
    let v = b.get(1..5).ok_or(QuicError::Truncated)?;
    let wire = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    if wire == 0 {
        return Ok(LongPacket::VersionNegotiation);
    }
    let version = Version::from_wire(wire).ok_or(QuicError::UnsupportedVersion(wire))?;
    let kind = version.packet_type(first);
    let mut at = 5;
    let dcid = cid(b, &mut at)?;
    let scid = cid(b, &mut at)?;
    if kind == PacketType::Retry {
        return Ok(LongPacket::Known(LongHeader {
            version,
            kind,
            dcid,
            scid,
            token: &[],
            pn_offset: b.len(),
            len: b.len(),
        }));
    }
    let mut token: &[u8] = &[];
    if kind == PacketType::Initial {
        let n = varint_len(b, &mut at)?;
        token = b.get(at..at.saturating_add(n)).ok_or(QuicError::Truncated)?;
        at += n;
    }
    let length = varint_len(b, &mut at)?;
    let end = at.checked_add(length).ok_or(QuicError::Truncated)?;
    if end > b.len() {
        return Err(QuicError::Truncated);
    }
    Ok(LongPacket::Known(LongHeader {
        version,
        kind,
        dcid,
        scid,
        token,
        pn_offset: at,
        len: end,
    }))
}

/// The packets of one UDP datagram (RFC 9000 12.2), as (offset, packet).
///
/// Stops at a short-header packet (which runs to the end of the datagram
/// and cannot be read without its connection's keys), at trailing zero
/// padding, and after the first error, which it yields. Packets whose
/// destination connection ID differs from the first packet's are skipped:
/// a receiver must ignore them, so inspection does too.
pub fn packets(datagram: &[u8]) -> Packets<'_> {
    Packets {
        d: datagram,
        at: 0,
        first_dcid: None,
        done: false,
    }
}

/// Iterator returned by [`packets`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    d: &'a [u8],
    at: usize,
    first_dcid: Option<&'a [u8]>,
    done: bool,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<(usize, LongPacket<'a>), QuicError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let rest = self.d.get(self.at..).unwrap_or_default();
            let first = *rest.first()?;
            if first & 0x80 == 0 && self.at > 0 {
                self.done = true; // short header or padding: the end
                return None;
            }
            let at = self.at;
            match parse_long(rest) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(LongPacket::VersionNegotiation) => {
                    self.done = true;
                    return Some(Ok((at, LongPacket::VersionNegotiation)));
                }
                Ok(LongPacket::Known(h)) => {
                    self.at += h.len;
                    let first_dcid = *self.first_dcid.get_or_insert(h.dcid);
                    if h.len == 0 || first_dcid != h.dcid {
                        continue;
                    }
                    return Some(Ok((at, LongPacket::Known(h))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_rfc9000_appendix_a1() {
        let table: &[(&[u8], u64)] = &[
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
            (&[0x40, 0x25], 37),
        ];
        for (bytes, want) in table {
            let mut at = 0;
            assert_eq!(varint(bytes, &mut at), Ok(*want));
            assert_eq!(at, bytes.len());
            let mut at = 0;
            assert_eq!(
                varint(&bytes[..bytes.len() - 1], &mut at),
                Err(QuicError::Truncated)
            );
        }
    }

    #[test]
    fn type_bits_round_trip() {
        for v in [Version::V1, Version::V2] {
            for t in [
                PacketType::Initial,
                PacketType::ZeroRtt,
                PacketType::Handshake,
                PacketType::Retry,
            ] {
                assert_eq!(v.packet_type(0xc0 | v.type_bits(t)), t);
            }
        }
        // RFC 9369 3.2: Initial is 0b01 and Retry 0b00 in version 2.
        assert_eq!(Version::V2.type_bits(PacketType::Initial), 0x10);
        assert_eq!(Version::V2.type_bits(PacketType::Retry), 0x00);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let table: &[(&[u8], QuicError)] = &[
            (&[], QuicError::Truncated),
            (&[0x40, 1, 2, 3], QuicError::NotLongHeader),
            (&[0xc0, 0, 0, 0], QuicError::Truncated),
            (
                &[0xc0, 0xff, 0, 0, 0x1d, 0],
                QuicError::UnsupportedVersion(0xff00_001d),
            ),
            (
                &[0xc0, 0, 0, 0, 1, 21],
                QuicError::Malformed("connection ID over 20 bytes"),
            ),
            (&[0xc0, 0, 0, 0, 1, 1, 9, 0, 0, 0x40], QuicError::Truncated),
            // Length 16 with only one byte following.
            (&[0xc0, 0, 0, 0, 1, 0, 0, 0, 0x10, 0], QuicError::Truncated),
            // A token longer than the datagram.
            (&[0xc0, 0, 0, 0, 1, 0, 0, 0x44, 0, 0], QuicError::Truncated),
        ];
        for (bytes, want) in table {
            assert_eq!(parse_long(bytes), Err(want.clone()), "{bytes:02x?}");
        }
    }
}
