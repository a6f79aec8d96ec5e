//! The frames an Initial packet may carry (RFC 9000 12.4 and 19): PADDING,
//! PING, ACK, CRYPTO and CONNECTION_CLOSE.
//!
//! Parsing stops at the first frame of another type or a malformed one: the
//! iterator yields that error once and ends, so every CRYPTO frame before
//! it is still used and nothing after it is guessed at.

use super::error::QuicError;
use super::packet::varint;

/// Largest CRYPTO stream offset plus length (RFC 9000 19.6: 2^62 - 1).
const MAX_STREAM_END: u64 = (1 << 62) - 1;

/// One frame of a decrypted Initial payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A run of this many PADDING bytes.
    Padding(usize),
    /// PING.
    Ping,
    /// ACK (its ranges are checked for shape but not kept).
    Ack,
    /// CRYPTO: `data` at `offset` of the handshake stream.
    Crypto {
        /// Stream offset of the first byte.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// CONNECTION_CLOSE with its error code.
    ConnectionClose(u64),
}

/// The frames of a decrypted payload, in order.
pub fn frames(payload: &[u8]) -> Frames<'_> {
    Frames {
        b: payload,
        at: 0,
        done: false,
    }
}

/// Iterator returned by [`frames`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    b: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    fn frame(&mut self) -> Result<Frame<'a>, QuicError> {
        let b = self.b;
        let at = &mut self.at;
        let typ = varint(b, at)?;
        match typ {
            0x00 => {
                // Count the whole run as one frame.
                let run = b[*at..].iter().take_while(|&&x| x == 0).count();
                *at += run;
                Ok(Frame::Padding(run + 1))
            }
            0x01 => Ok(Frame::Ping),
            0x02 | 0x03 => {
                varint(b, at)?; // largest acknowledged
                varint(b, at)?; // delay
                let ranges = varint(b, at)?;
                varint(b, at)?; // first range
                // Each range takes at least two bytes: a count beyond the
                // payload ends in Truncated without a long loop.
                for _ in 0..ranges {
                    varint(b, at)?; // gap
                    varint(b, at)?; // length
                }
                if typ == 0x03 {
                    for _ in 0..3 {
                        varint(b, at)?; // ECN counts
                    }
                }
                Ok(Frame::Ack)
            }
            0x06 => {
                let offset = varint(b, at)?;
                let len = varint(b, at)?;
                if offset.checked_add(len).is_none_or(|end| end > MAX_STREAM_END) {
                    return Err(QuicError::Malformed("CRYPTO frame past 2^62"));
                }
                let len = usize::try_from(len).map_err(|_| QuicError::Truncated)?;
                let data = b.get(*at..at.saturating_add(len)).ok_or(QuicError::Truncated)?;
                *at += len;
                Ok(Frame::Crypto { offset, data })
            }
            0x1c | 0x1d => {
                let code = varint(b, at)?;
                if typ == 0x1c {
                    varint(b, at)?; // frame type
                }
                let len = usize::try_from(varint(b, at)?).map_err(|_| QuicError::Truncated)?;
                b.get(*at..at.saturating_add(len)).ok_or(QuicError::Truncated)?;
                *at += len;
                Ok(Frame::ConnectionClose(code))
            }
            other => Err(QuicError::UnexpectedFrame(other)),
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, QuicError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.b.len() {
            return None;
        }
        let f = self.frame();
        self.done = f.is_err();
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind_of_frame() {
        let payload = [
            0x01, // PING
            0x02, 0x05, 0x00, 0x01, 0x00, 0x01, 0x02, // ACK, one more range
            0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, // ACK_ECN
            0x06, 0x40, 0x10, 0x03, b'a', b'b', b'c', // CRYPTO at 16
            0x1c, 0x0a, 0x06, 0x02, b'n', b'o', // CONNECTION_CLOSE
            0x00, 0x00, 0x00, // PADDING
        ];
        let got: Vec<_> = frames(&payload).collect();
        assert_eq!(
            got,
            [
                Ok(Frame::Ping),
                Ok(Frame::Ack),
                Ok(Frame::Ack),
                Ok(Frame::Crypto {
                    offset: 16,
                    data: b"abc"
                }),
                Ok(Frame::ConnectionClose(10)),
                Ok(Frame::Padding(3)),
            ]
        );
    }

    #[test]
    fn stops_at_unknown_or_truncated() {
        type Row = (&'static [u8], Vec<Result<Frame<'static>, QuicError>>);
        let table: &[Row] = &[
            (
                &[0x01, 0x08, 0x06, 0x00, 0x01, b'x'],
                vec![Ok(Frame::Ping), Err(QuicError::UnexpectedFrame(8))],
            ),
            (&[0x06, 0x00, 0x05, b'x'], vec![Err(QuicError::Truncated)]),
            (
                &[0x02, 0x00, 0x00, 0x3f, 0x00, 0x00],
                vec![Err(QuicError::Truncated)],
            ),
            (
                &[0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, b'x'],
                vec![Err(QuicError::Malformed("CRYPTO frame past 2^62"))],
            ),
            (&[0x1c, 0x00, 0x00, 0x10], vec![Err(QuicError::Truncated)]),
        ];
        for (payload, want) in table {
            assert_eq!(&frames(payload).collect::<Vec<_>>(), want, "{payload:02x?}");
        }
    }
}
