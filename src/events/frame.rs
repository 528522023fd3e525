//! Server-to-client WebSocket frames, encoded once with their header. Server frames are not
//! masked, so the same bytes can go to every subscriber.

use bytes::{BufMut, Bytes, BytesMut};

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One complete, final, unmasked frame.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

pub fn text(payload: &[u8]) -> Bytes {
    encode(OP_TEXT, payload)
}

/// A close frame with a code and a reason cut to fit the 125-byte control frame limit.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut reason = reason;
    while reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason = &reason[..end];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc_6455() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let medium = text(&[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let large = encode(OP_BINARY, &vec![0u8; 70_000]);
        assert_eq!(&large[..10], &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        let c = close(4008, &"é".repeat(100));
        assert!(c.len() <= 127);
        assert_eq!(&c[..4], &[0x88, (c.len() - 2) as u8, 0x0f, 0xa8]);
        assert!(std::str::from_utf8(&c[4..]).is_ok());
    }
}
