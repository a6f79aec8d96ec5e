//! What can go wrong reading a QUIC datagram: one error type for every layer.

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
    /// An Initial in a datagram shorter than [`super::initial::MIN_CLIENT_DATAGRAM`].
    #[error("Initial in a {0}-byte datagram (servers drop those under 1200)")]
    ShortDatagram(usize),
    /// CRYPTO data beyond [`super::detect::MAX_CRYPTO`].
    #[error("CRYPTO data past the inspection bound")]
    CryptoTooLong,
    /// CRYPTO data in more separate pieces than are kept.
    #[error("CRYPTO data in too many separate pieces")]
    TooFragmented,
    /// The handshake stream does not start with a well-formed ClientHello.
    #[error("CRYPTO data is not a ClientHello")]
    NotHello,
    /// The ClientHello is longer than [`crate::engine::hello::MAX_HELLO`].
    #[error("ClientHello longer than the inspection bound")]
    HelloTooLong,
}
