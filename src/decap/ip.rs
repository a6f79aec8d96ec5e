//! The IP header facts decapsulation and reassembly both need: version,
//! header chain, fragment fields, bounds-checked reads. Shared by
//! [`super::tunnel`] and [`super::defrag`], importing neither.

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Why an IP header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpError {
    /// Fewer bytes than the headers need.
    Truncated,
    /// A version, length or header field that cannot be right.
    Bad,
}

/// Fragment fields of an IPv4 header or IPv6 Fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragInfo {
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: usize,
    /// More fragments follow.
    pub more: bool,
    /// Identification (16 bits for IPv4).
    pub id: u32,
    /// IPv6: where the Fragment header starts (the unfragmentable part's length).
    pub frag_at: usize,
    /// IPv6: the byte holding the Next Header value that names the Fragment header.
    pub nh_at: usize,
}

/// What the shared IP walk learned about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpInfo {
    /// 4 or 6.
    pub version: u8,
    /// Where the upper-layer header starts (for fragments: the fragment data).
    pub hdr_len: usize,
    /// The upper-layer protocol (for fragments: the one the datagram carries).
    pub proto: u8,
    /// The packet's length: its header's, or what was captured if less.
    pub len: usize,
    /// Fewer bytes captured than the header declares.
    pub truncated: bool,
    /// Set for fragments, IPv6 atomic fragments included (offset 0, `more` false).
    pub frag: Option<FragInfo>,
}

/// Most IPv6 extension headers walked before giving up.
const MAX_EXT_HEADERS: usize = 16;

/// Reads an IPv4 or IPv6 header, walking IPv6 extension headers up to the
/// upper layer or the Fragment header.
pub(crate) fn parse_ip(b: &[u8]) -> Result<IpInfo, IpError> {
    let v = b.first().ok_or(IpError::Truncated)? >> 4;
    match v {
        4 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            if ihl < 20 {
                return Err(IpError::Bad);
            }
            if b.len() < ihl {
                return Err(IpError::Truncated);
            }
            let total = usize::from(be16(b, 2).ok_or(IpError::Truncated)?);
            let ff = be16(b, 6).ok_or(IpError::Truncated)?;
            let offset = usize::from(ff & 0x1fff) * 8;
            let more = ff & 0x2000 != 0;
            let frag = (offset != 0 || more).then(|| FragInfo {
                offset,
                more,
                id: u32::from(be16(b, 4).unwrap_or(0)),
                frag_at: ihl,
                nh_at: 9,
            });
            let (len, truncated) = if total == 0 && frag.is_none() {
                // Segmentation offload on the capturing host leaves 0 here.
                (b.len(), false)
            } else if total < ihl {
                return Err(IpError::Bad);
            } else {
                (total.min(b.len()), b.len() < total)
            };
            Ok(IpInfo {
                version: 4,
                hdr_len: ihl,
                proto: b[9],
                len,
                truncated,
                frag,
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(IpError::Truncated);
            }
            let plen = usize::from(be16(b, 4).ok_or(IpError::Truncated)?);
            let (len, truncated) = if plen == 0 {
                // Jumbogram or offload: trust the capture.
                (b.len(), false)
            } else {
                ((40 + plen).min(b.len()), b.len() < 40 + plen)
            };
            let pkt = b.get(..len).ok_or(IpError::Truncated)?;
            let mut nh = b[6];
            let mut nh_at = 6;
            let mut at = 40;
            for _ in 0..MAX_EXT_HEADERS {
                let ext_len = match nh {
                    // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
                    0 | 43 | 60 | 135 | 139 | 140 => {
                        (usize::from(*pkt.get(at + 1).ok_or(IpError::Truncated)?) + 1) * 8
                    }
                    // Authentication header counts 4-byte units minus 2.
                    51 => (usize::from(*pkt.get(at + 1).ok_or(IpError::Truncated)?) + 2) * 4,
                    44 => {
                        if plen == 0 {
                            // A fragment's length must be declared to be reassembled.
                            return Err(IpError::Bad);
                        }
                        let fh = pkt.get(at..at + 8).ok_or(IpError::Truncated)?;
                        let ff = u16::from_be_bytes([fh[2], fh[3]]);
                        return Ok(IpInfo {
                            version: 6,
                            hdr_len: at + 8,
                            proto: fh[0],
                            len,
                            truncated,
                            frag: Some(FragInfo {
                                offset: usize::from(ff & 0xfff8),
                                more: ff & 1 != 0,
                                id: be32(fh, 4).unwrap_or(0),
                                frag_at: at,
                                nh_at,
                            }),
                        });
                    }
                    _ => {
                        return Ok(IpInfo {
                            version: 6,
                            hdr_len: at,
                            proto: nh,
                            len,
                            truncated,
                            frag: None,
                        });
                    }
                };
                nh = *pkt.get(at).ok_or(IpError::Truncated)?;
                nh_at = at;
                at += ext_len;
                if at > pkt.len() {
                    return Err(IpError::Truncated);
                }
            }
            Err(IpError::Bad)
        }
        _ => Err(IpError::Bad),
    }
}
