//! The frames of `GET /replication/log`: each a 1-byte kind, an 8-byte LSN, a 4-byte payload
//! length and a CRC-32 of those and the payload (all little-endian), then the payload. A record
//! carries a log record's LSN and payload (its operations, as the leader's log holds them); a
//! heartbeat, sent when the leader has had nothing to send for a second, carries the leader's
//! newest LSN and its clock (8 bytes of microseconds), from which a follower measures its lag.

use bytes::{Buf, Bytes, BytesMut};

const RECORD: u8 = 1;
const HEARTBEAT: u8 = 2;
/// Bytes before a frame's payload.
pub const HEAD: usize = 17;
/// The largest payload a follower accepts: a record is one batch of the leader's writer.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Record { lsn: u64, payload: Bytes },
    Heartbeat { latest: u64, micros: i64 },
}

fn encode(out: &mut BytesMut, kind: u8, lsn: u64, payload: &[u8]) {
    let mut head = [0u8; HEAD];
    head[0] = kind;
    head[1..9].copy_from_slice(&lsn.to_le_bytes());
    head[9..13].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..13]);
    crc.update(payload);
    head[13..17].copy_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

/// Appends record `lsn`'s frame to `out`.
pub fn record(out: &mut BytesMut, lsn: u64, payload: &[u8]) {
    encode(out, RECORD, lsn, payload);
}

/// A heartbeat's frame.
pub fn heartbeat(latest: u64, micros: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(HEAD + 8);
    encode(&mut out, HEARTBEAT, latest, &micros.to_le_bytes());
    out.freeze()
}

/// Frames read back from a stream's chunks as they come.
#[derive(Default)]
pub struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole frame, `Ok(None)` until one is there; an error for a frame that is not one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buffer.len() < HEAD {
            return Ok(None);
        }
        let head: [u8; HEAD] = self.buffer[..HEAD].try_into().expect("HEAD bytes");
        let len = u32::from_le_bytes(head[9..13].try_into().expect("4")) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("a frame of {len} bytes is beyond any record"));
        }
        if self.buffer.len() < HEAD + len {
            return Ok(None);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[..13]);
        crc.update(&self.buffer[HEAD..HEAD + len]);
        if crc.finalize() != u32::from_le_bytes(head[13..17].try_into().expect("4")) {
            return Err("a frame fails its checksum".into());
        }
        self.buffer.advance(HEAD);
        let payload = self.buffer.split_to(len).freeze();
        let lsn = u64::from_le_bytes(head[1..9].try_into().expect("8"));
        match head[0] {
            RECORD => Ok(Some(Frame::Record { lsn, payload })),
            HEARTBEAT if len == 8 => Ok(Some(Frame::Heartbeat {
                latest: lsn,
                micros: i64::from_le_bytes(payload[..].try_into().expect("8")),
            })),
            kind => Err(format!("a frame of unknown kind {kind}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_across_any_split_and_a_flipped_bit_fails_them() {
        let mut out = BytesMut::new();
        record(&mut out, 7, b"seven");
        record(&mut out, 8, b"");
        out.extend_from_slice(&heartbeat(8, 1234));
        let bytes = out.freeze();
        let expected = vec![
            Frame::Record {
                lsn: 7,
                payload: Bytes::from_static(b"seven"),
            },
            Frame::Record {
                lsn: 8,
                payload: Bytes::new(),
            },
            Frame::Heartbeat {
                latest: 8,
                micros: 1234,
            },
        ];
        for split in 0..=bytes.len() {
            let mut decoder = Decoder::default();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                decoder.push(part);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, expected, "split at {split}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut decoder = Decoder::default();
            decoder.push(&flipped);
            let mut got = Vec::new();
            let outcome = loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => got.push(frame),
                    other => break other,
                }
            };
            // A flipped length may leave a frame waiting for bytes that never come; it never
            // reads as the frames sent.
            assert!(
                outcome.is_err() || got != expected,
                "bit {bit} went unnoticed"
            );
            assert!(got.len() < expected.len(), "bit {bit} went unnoticed");
        }
    }
}
