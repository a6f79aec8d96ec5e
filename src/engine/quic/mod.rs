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
pub mod error;
pub mod frames;
pub mod initial;
pub mod packet;

pub use crate::engine::hello::HelloInfo;
pub use detect::{QuicHello, QuicStatus};
pub use packet::Version;

pub use error::QuicError;
pub use initial::{CryptoFragment, InitialPayload, MIN_CLIENT_DATAGRAM, client_initial};

#[cfg(test)]
mod tests;
