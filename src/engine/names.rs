//! Header names as the HTTP walker and the message rules both see them:
//! a hash of the lower-cased name, computed byte by byte while parsing, so
//! neither side stores or compares name strings on the packet path.

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub(crate) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of a lower-cased header name; the parser computes it byte by byte.
pub const fn name_hash(name: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() {
        h = (h ^ name[i].to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}
