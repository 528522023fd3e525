//! The WebSocket protocol's pure parts: close codes by name, the client messages (a tagged enum
//! decoded by serde), message assembly from fragments, and the answer to a client's close frame.
//! No I/O: `conn` drives them, and the unit tests below exercise them byte by byte.

use fastwebsockets::{OpCode, WebSocketError};
use serde::Deserialize;

use crate::http::ErrorCode;

/// A close frame's status code (RFC 6455 section 7.4), named where the server sends it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The client closed and the server agrees, or the client's close had no code.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The server is shutting down; the reason names the seq to resume from.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// A frame or message the protocol does not allow.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A binary message: the protocol is JSON text.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Text that is not UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// A message over `--ws-max-message-bytes`.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The server cannot go on (the store failed under a replay).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// The client fell behind its outbox bound or the global budget; resume with `since`.
    pub const LAGGED: CloseCode = CloseCode(4008);
    /// The client answered two pings with no pong.
    pub const HEARTBEAT: CloseCode = CloseCode(4009);

    /// Whether a peer may send this code in a close frame: 1000-1003, 1007-1011 and the
    /// registered and private ranges 3000-4999 (1004-1006 and 1015 are reserved, never sent).
    pub fn valid_on_the_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

/// A client message: `{"op": "subscribe" | "unsubscribe" | "ping", …}`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientOp {
    /// Every event (no `project_id`) or one project's, replayed after `since` when given.
    Subscribe {
        #[serde(default)]
        project_id: Option<String>,
        #[serde(default)]
        since: Option<u64>,
    },
    Unsubscribe {
        #[serde(default)]
        project_id: Option<String>,
    },
    Ping,
}

impl ClientOp {
    /// Every op's name, as the error for an unknown one lists them.
    pub const NAMES: [&str; 3] = ["subscribe", "unsubscribe", "ping"];

    /// A client message from its text, or the error frame's code and message.
    pub fn decode(bytes: &[u8]) -> Result<ClientOp, (ErrorCode, String)> {
        let error = match serde_json::from_slice::<ClientOp>(bytes) {
            Ok(op) => return Ok(op),
            Err(e) => e,
        };
        /// Just the op's name, to tell an unknown op from a known one with bad fields.
        #[derive(Deserialize)]
        struct Named {
            op: String,
        }
        match serde_json::from_slice::<Named>(bytes) {
            Ok(Named { op }) if !Self::NAMES.contains(&op.as_str()) => Err((
                ErrorCode::UnknownOp,
                format!("unknown op `{op}`; allowed: {}", Self::NAMES.join(", ")),
            )),
            _ => Err((
                ErrorCode::MalformedMessage,
                format!("not a client message: {error}"),
            )),
        }
    }
}

/// Why a message cannot be assembled: the connection closes with this code and reason.
pub type Refusal = (CloseCode, &'static str);

/// Collects a message's fragments, refusing oversize ones and invalid UTF-8 as early as they
/// can be seen. Control frames (ping, pong, close) may arrive between fragments and never reach
/// it: the reader answers them and leaves the message being assembled as it is.
pub struct Assembler {
    /// A fragmented message being assembled: opcode, bytes, and how far it is valid UTF-8.
    message: Option<(OpCode, Vec<u8>, usize)>,
    max_message: usize,
}

impl Assembler {
    pub fn new(max_message: usize) -> Assembler {
        Assembler {
            message: None,
            max_message,
        }
    }

    /// A data frame (text, binary or continuation): the whole message once its last fragment
    /// arrived, `None` while more are due.
    pub fn push(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
    ) -> Result<Option<(OpCode, Vec<u8>)>, Refusal> {
        let kind = match (opcode, self.message.is_some()) {
            (OpCode::Continuation, false) => {
                return Err((CloseCode::PROTOCOL_ERROR, "continuation without a message"));
            }
            (OpCode::Continuation, true) => None,
            (_, true) => {
                return Err((
                    CloseCode::PROTOCOL_ERROR,
                    "a new message inside a fragmented one",
                ));
            }
            (kind, false) => Some(kind),
        };
        if let Some(kind) = kind {
            if fin {
                // A whole text frame was checked for UTF-8 by the frame reader.
                return Ok(Some((kind, payload.to_vec())));
            }
            self.message = Some((kind, Vec::new(), 0));
        }
        let Some((kind, buffer, valid)) = self.message.as_mut() else {
            unreachable!("a message is being assembled")
        };
        if buffer.len() + payload.len() > self.max_message {
            return Err((CloseCode::TOO_BIG, "message too big"));
        }
        buffer.extend_from_slice(payload);
        if *kind == OpCode::Text {
            match std::str::from_utf8(&buffer[*valid..]) {
                Ok(_) => *valid = buffer.len(),
                Err(e) if e.error_len().is_some() => {
                    return Err((CloseCode::INVALID_PAYLOAD, "invalid UTF-8"));
                }
                // A character split across fragments: valid so far, the rest is due.
                Err(e) => {
                    *valid += e.valid_up_to();
                    if fin {
                        return Err((CloseCode::INVALID_PAYLOAD, "invalid UTF-8"));
                    }
                }
            }
        }
        if !fin {
            return Ok(None);
        }
        Ok(self.message.take().map(|(kind, buffer, _)| (kind, buffer)))
    }
}

/// The close a reading error calls for; none when the peer is simply gone.
pub fn close_for(error: &WebSocketError) -> Option<Refusal> {
    match error {
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::SendError(_) => None,
        WebSocketError::InvalidUTF8 => Some((CloseCode::INVALID_PAYLOAD, "invalid UTF-8")),
        WebSocketError::FrameTooLarge => Some((CloseCode::TOO_BIG, "message too big")),
        _ => Some((CloseCode::PROTOCOL_ERROR, "protocol error")),
    }
}

/// The answer to a client's close frame: its code echoed, or 1002/1007 for a malformed one.
pub fn answer_to_close(payload: &[u8]) -> (CloseCode, &'static str) {
    match payload.len() {
        0 => return (CloseCode::NORMAL, ""),
        1 => return (CloseCode::PROTOCOL_ERROR, "malformed close frame"),
        n if n > 125 => return (CloseCode::PROTOCOL_ERROR, "close frame too long"),
        _ => {}
    }
    let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
    if !code.valid_on_the_wire() {
        return (CloseCode::PROTOCOL_ERROR, "invalid close code");
    }
    if std::str::from_utf8(&payload[2..]).is_err() {
        return (CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in close reason");
    }
    (code, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assembled(frames: &[(OpCode, bool, &[u8])]) -> Result<Vec<(OpCode, Vec<u8>)>, Refusal> {
        let mut assembler = Assembler::new(64);
        let mut messages = Vec::new();
        for (opcode, fin, payload) in frames {
            if let Some(message) = assembler.push(*opcode, *fin, payload)? {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    #[test]
    fn fragments_make_one_message_in_order() {
        let messages = assembled(&[
            (OpCode::Text, false, br#"{"op":"#),
            (OpCode::Continuation, false, br#""pi"#),
            (OpCode::Continuation, true, br#"ng"}"#),
            (OpCode::Binary, true, b"\x00\x01"),
        ])
        .unwrap();
        assert_eq!(
            messages,
            vec![
                (OpCode::Text, br#"{"op":"ping"}"#.to_vec()),
                (OpCode::Binary, vec![0, 1]),
            ]
        );
    }

    #[test]
    fn a_character_split_across_fragments_is_valid() {
        // "é" is C3 A9; "€" is E2 82 AC, split after each of its first two bytes.
        let messages = assembled(&[
            (OpCode::Text, false, b"caf\xC3"),
            (OpCode::Continuation, false, b"\xA9 \xE2"),
            (OpCode::Continuation, false, b"\x82"),
            (OpCode::Continuation, true, b"\xAC"),
        ])
        .unwrap();
        assert_eq!(messages, vec![(OpCode::Text, "café €".as_bytes().to_vec())]);
    }

    #[test]
    fn invalid_utf8_is_refused_at_the_fragment_that_shows_it() {
        let mut assembler = Assembler::new(64);
        assert_eq!(assembler.push(OpCode::Text, false, b"ok"), Ok(None));
        // 0xFF can start no character: refused before the message ends.
        assert_eq!(
            assembler.push(OpCode::Continuation, false, b"\xFF"),
            Err((CloseCode::INVALID_PAYLOAD, "invalid UTF-8"))
        );
        // A character still incomplete at the last fragment.
        assert_eq!(
            assembled(&[
                (OpCode::Text, false, b"a\xE2"),
                (OpCode::Continuation, true, b"\x82"),
            ]),
            Err((CloseCode::INVALID_PAYLOAD, "invalid UTF-8"))
        );
        // A continuation byte where a new character must start.
        assert_eq!(
            assembled(&[
                (OpCode::Text, false, b"a\xC3"),
                (OpCode::Continuation, true, b"bc"),
            ]),
            Err((CloseCode::INVALID_PAYLOAD, "invalid UTF-8"))
        );
        // Binary messages are bytes, never checked.
        assert_eq!(
            assembled(&[
                (OpCode::Binary, false, b"\xFF"),
                (OpCode::Continuation, true, b"\xC3"),
            ]),
            Ok(vec![(OpCode::Binary, vec![0xFF, 0xC3])])
        );
    }

    #[test]
    fn fragments_out_of_order_and_oversize_messages_are_refused() {
        assert_eq!(
            assembled(&[(OpCode::Continuation, true, b"x")]),
            Err((CloseCode::PROTOCOL_ERROR, "continuation without a message"))
        );
        assert_eq!(
            assembled(&[(OpCode::Text, false, b"x"), (OpCode::Text, true, b"y")]),
            Err((
                CloseCode::PROTOCOL_ERROR,
                "a new message inside a fragmented one"
            ))
        );
        // 64 bytes fit; the 65th byte, in a later fragment, is refused.
        let mut assembler = Assembler::new(64);
        assert_eq!(assembler.push(OpCode::Binary, false, &[0; 40]), Ok(None));
        assert_eq!(
            assembler.push(OpCode::Continuation, false, &[0; 24]),
            Ok(None)
        );
        assert_eq!(
            assembler.push(OpCode::Continuation, true, &[0; 1]),
            Err((CloseCode::TOO_BIG, "message too big"))
        );
    }

    #[test]
    fn a_message_after_a_fragmented_one_starts_afresh() {
        let messages = assembled(&[
            (OpCode::Text, false, b"ab"),
            (OpCode::Continuation, true, b"c"),
            (OpCode::Text, false, b"d"),
            (OpCode::Continuation, true, b"e"),
        ])
        .unwrap();
        assert_eq!(
            messages,
            vec![
                (OpCode::Text, b"abc".to_vec()),
                (OpCode::Text, b"de".to_vec())
            ]
        );
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    #[test]
    fn close_frames_are_echoed_or_refused() {
        assert_eq!(answer_to_close(b""), (CloseCode::NORMAL, ""));
        assert_eq!(
            answer_to_close(b"\x03"),
            (CloseCode::PROTOCOL_ERROR, "malformed close frame")
        );
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert_eq!(
                answer_to_close(&close_payload(code, b"bye")),
                (CloseCode(code), ""),
                "{code}"
            );
        }
        for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535] {
            assert_eq!(
                answer_to_close(&close_payload(code, b"")),
                (CloseCode::PROTOCOL_ERROR, "invalid close code"),
                "{code}"
            );
        }
        assert_eq!(
            answer_to_close(&close_payload(1000, b"caf\xC3")),
            (CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in close reason")
        );
        assert_eq!(
            answer_to_close(&close_payload(1000, &[b'a'; 124])),
            (CloseCode::PROTOCOL_ERROR, "close frame too long")
        );
        // 125 bytes, the most a control frame holds.
        assert_eq!(
            answer_to_close(&close_payload(1000, &[b'a'; 123])),
            (CloseCode::NORMAL, "")
        );
    }

    #[test]
    fn client_messages_decode_to_their_op_or_a_coded_error() {
        assert_eq!(ClientOp::decode(br#"{"op":"ping"}"#), Ok(ClientOp::Ping));
        assert_eq!(
            ClientOp::decode(br#"{"since":7,"op":"subscribe","project_id":"p"}"#),
            Ok(ClientOp::Subscribe {
                project_id: Some("p".into()),
                since: Some(7)
            })
        );
        assert_eq!(
            ClientOp::decode(br#"{"op":"subscribe"}"#),
            Ok(ClientOp::Subscribe {
                project_id: None,
                since: None
            })
        );
        assert_eq!(
            ClientOp::decode(br#"{"op":"unsubscribe","project_id":null}"#),
            Ok(ClientOp::Unsubscribe { project_id: None })
        );
        let (code, message) = ClientOp::decode(br#"{"op":"dance"}"#).unwrap_err();
        assert_eq!(code, ErrorCode::UnknownOp);
        assert_eq!(
            message,
            "unknown op `dance`; allowed: subscribe, unsubscribe, ping"
        );
        for bad in [
            &br#"not json"#[..],
            br#"{"project_id":"p"}"#,
            br#"{"op":7}"#,
            br#"{"op":"subscribe","since":"yesterday"}"#,
            br#"{"op":"subscribe","since":-1}"#,
        ] {
            let (code, message) = ClientOp::decode(bad).unwrap_err();
            assert_eq!(code, ErrorCode::MalformedMessage, "{message}");
            assert!(message.starts_with("not a client message: "), "{message}");
        }
    }
}
