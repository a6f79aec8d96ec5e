//! Initial packet protection (RFC 9001 5, RFC 9369 3.3): key derivation from
//! the client's destination connection ID, header protection removal, and
//! AEAD decryption.
//!
//! Initial keys are public by design (anyone who sees the connection ID can
//! derive them), so opening a client's Initial reveals nothing secret; it
//! is what lets a middlebox read the ClientHello of QUIC. All primitives
//! come from the RustCrypto crates (`hkdf`, `sha2`, `aes`, `aes-gcm`);
//! nothing cryptographic is written here beyond the RFCs' plumbing.

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::error::QuicError;
use super::packet::Version;

/// Length of the AEAD tag of AES-128-GCM.
pub const TAG_LEN: usize = 16;
/// Length of the header protection sample.
pub const SAMPLE_LEN: usize = 16;

/// Initial salt of version 1 (RFC 9001 5.2).
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc,
    0xbb, 0x7f, 0x0a,
];
/// Initial salt of version 2 (RFC 9369 3.3.1).
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9,
    0xbd, 0x2e, 0xd9,
];

/// Per-version parts of the derivation: salt and the key, IV and header
/// protection labels (RFC 9369 3.3.2 renamed the last three).
fn params(v: Version) -> (&'static [u8; 20], [&'static str; 3]) {
    match v {
        Version::V1 => (&SALT_V1, ["quic key", "quic iv", "quic hp"]),
        Version::V2 => (&SALT_V2, ["quicv2 key", "quicv2 iv", "quicv2 hp"]),
    }
}

/// HKDF-Expand-Label of TLS 1.3 (RFC 8446 7.1) with an empty context.
fn expand_label<const N: usize>(secret: &Hkdf<Sha256>, label: &str) -> [u8; N] {
    // HkdfLabel: length (u16), label "tls13 " + label (u8 length), context (empty).
    let full = ["tls13 ", label].concat();
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&u16::try_from(N).unwrap_or(u16::MAX).to_be_bytes());
    info.push(u8::try_from(full.len()).unwrap_or(u8::MAX));
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    let mut out = [0u8; N];
    // Only fails for outputs over 255 hash lengths; ours are at most 32.
    secret
        .expand(&info, &mut out)
        .expect("HKDF output length is a small constant");
    out
}

/// The client's Initial secrets of one connection attempt.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialSecrets {
    /// AEAD key.
    pub key: [u8; 16],
    /// AEAD IV.
    pub iv: [u8; 12],
    /// Header protection key.
    pub hp: [u8; 16],
}

impl std::fmt::Debug for InitialSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitialSecrets(..)")
    }
}

impl InitialSecrets {
    /// Derives the secrets protecting the client's Initial packets sent to
    /// `dcid` (RFC 9001 5.2): extract with the version's salt, expand
    /// "client in", then the key, IV and header protection labels.
    pub fn client(version: Version, dcid: &[u8]) -> InitialSecrets {
        let (salt, [key_label, iv_label, hp_label]) = params(version);
        let initial = Hkdf::<Sha256>::new(Some(salt), dcid);
        let client: [u8; 32] = expand_label(&initial, "client in");
        // A 32-byte PRK is always accepted.
        let client = Hkdf::<Sha256>::from_prk(&client).expect("SHA-256 sized PRK");
        InitialSecrets {
            key: expand_label(&client, key_label),
            iv: expand_label(&client, iv_label),
            hp: expand_label(&client, hp_label),
        }
    }
}

/// Ready-to-use ciphers for a client's Initial packets.
#[derive(Clone)]
pub struct InitialKeys {
    aead: Aes128Gcm,
    hp: Aes128,
    iv: [u8; 12],
}

impl std::fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitialKeys(..)")
    }
}

/// An opened (decrypted) packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The packet number (the truncated value; see [`InitialKeys::open`]).
    pub packet_number: u64,
    /// The unprotected first byte.
    pub first_byte: u8,
    /// The frames.
    pub plaintext: Vec<u8>,
}

impl InitialKeys {
    /// Ciphers for the client's Initial packets of `version` to `dcid`.
    pub fn client(version: Version, dcid: &[u8]) -> InitialKeys {
        InitialKeys::from_secrets(&InitialSecrets::client(version, dcid))
    }

    /// Ciphers from derived secrets.
    pub fn from_secrets(s: &InitialSecrets) -> InitialKeys {
        InitialKeys {
            aead: Aes128Gcm::new(&s.key.into()),
            hp: Aes128::new(&s.hp.into()),
            iv: s.iv,
        }
    }

    /// The 5-byte header protection mask for a sample (RFC 9001 5.4.3).
    pub fn hp_mask(&self, sample: &[u8; SAMPLE_LEN]) -> [u8; 5] {
        let mut block = (*sample).into();
        self.hp.encrypt_block(&mut block);
        let mut mask = [0u8; 5];
        mask.copy_from_slice(&block[..5]);
        mask
    }

    /// The AEAD nonce of a packet number (RFC 9001 5.3).
    fn nonce(&self, pn: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        n.into()
    }

    /// Removes header protection from, and decrypts, one long-header packet
    /// (`packet` is exactly that packet; `pn_offset` where its packet number
    /// starts). The packet number is taken as sent, without reconstruction
    /// from a largest acknowledged number: a client's Initials are numbered
    /// from 0 and are few, so the truncated value is the full one.
    pub fn open(&self, packet: &[u8], pn_offset: usize) -> Result<Opened, QuicError> {
        let sample_at = pn_offset.checked_add(4).ok_or(QuicError::Truncated)?;
        let sample: &[u8; SAMPLE_LEN] = packet
            .get(sample_at..sample_at + SAMPLE_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(QuicError::Truncated)?;
        let mask = self.hp_mask(sample);
        let first = packet.first().ok_or(QuicError::Truncated)? ^ (mask[0] & 0x0f);
        let pn_len = usize::from(first & 0x03) + 1;
        let payload_at = pn_offset + pn_len;
        let tag_at = packet
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= payload_at)
            .ok_or(QuicError::Truncated)?;
        let mut header = packet[..payload_at].to_vec();
        header[0] = first;
        let mut pn = 0u64;
        for (h, m) in header[pn_offset..].iter_mut().zip(&mask[1..]) {
            *h ^= m;
            pn = pn << 8 | u64::from(*h);
        }
        let mut plaintext = packet[payload_at..tag_at].to_vec();
        let tag = Tag::try_from(&packet[tag_at..]).map_err(|_| QuicError::Truncated)?;
        self.aead
            .decrypt_inout_detached(&self.nonce(pn), &header, plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| QuicError::Decrypt)?;
        Ok(Opened {
            packet_number: pn,
            first_byte: first,
            plaintext,
        })
    }

    /// Protects a packet as a client would (tests build Initials with it).
    /// `header` is the unprotected header ending with a `pn_len`-byte packet
    /// number `pn`; its Length field must already count `payload` + 16.
    #[cfg(test)]
    pub(crate) fn seal(&self, header: &[u8], pn: u64, payload: &[u8]) -> Vec<u8> {
        let pn_len = usize::from(header[0] & 0x03) + 1;
        let pn_offset = header.len() - pn_len;
        let mut body = payload.to_vec();
        let tag = self
            .aead
            .encrypt_inout_detached(&self.nonce(pn), header, body.as_mut_slice().into())
            .unwrap();
        let mut out = header.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        let sample: [u8; SAMPLE_LEN] = out[pn_offset + 4..pn_offset + 4 + SAMPLE_LEN].try_into().unwrap();
        let mask = self.hp_mask(&sample);
        out[0] ^= mask[0] & 0x0f;
        for (b, m) in out[pn_offset..pn_offset + pn_len].iter_mut().zip(&mask[1..]) {
            *b ^= m;
        }
        out
    }
}
