//! One 0.9.0 frame (`StreamRequest` / `StreamResponse`) as the router holds it: the gRPC
//! message's own bytes, never decoded into a struct and re-encoded.
//!
//! `StreamRequest` and `StreamResponse` have the same fields and numbers (`bytes payload =
//! 1; FrameType frame_type = 2;`), so the bytes of a request are a valid response: the h2
//! relay forwards them as they came, unknown fields included. [`Frame::parse`] checks the
//! protobuf wire format as strictly as prost's decoding of `StreamRequest` does (so a
//! malformed message still fails its own stream with the same INTERNAL status as before)
//! and notes where the payload lies and which frame type the message carries; it skips the
//! payload by its length and copies nothing. The h2↔QUIC bridge reads both from there and
//! builds its own messages with [`Frame::data`] and [`Frame::goaway`].
//!
//! As prost does: the last occurrence of a field wins, unknown fields (groups included, to
//! a nesting depth of 100) are skipped, a frame type is any varint (truncated to 32 bits;
//! values the enum does not name are kept and forwarded).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// Field number of `payload`.
const PAYLOAD_FIELD: u32 = 1;
/// Field number of `frame_type`.
const FRAME_TYPE_FIELD: u32 = 2;
/// `FRAME_TYPE_GOAWAY`.
const GOAWAY: u8 = 7;

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Nesting depth of unknown groups skipped at most: prost's recursion limit.
const MAX_GROUP_DEPTH: usize = 100;

/// A frame: its message bytes, where its payload lies in them, and its frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    message: Bytes,
    payload: Range<usize>,
    frame_type: i32,
}

/// Why a message is not a well-formed `StreamRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("buffer underflow")]
    Underflow,
    #[error("invalid varint")]
    Varint,
    #[error("invalid key value: {0}")]
    Key(u64),
    #[error("invalid tag value: 0")]
    ZeroTag,
    #[error("invalid wire type value: {0}")]
    WireTypeValue(u8),
    #[error("invalid wire type: {found} (expected {expected}) for field {field}")]
    WireType { field: u32, found: u8, expected: u8 },
    #[error("unexpected end group tag")]
    EndGroup,
    #[error("recursion limit reached")]
    Depth,
}

impl Frame {
    /// Checks `message` and notes its payload and frame type; copies nothing.
    pub(crate) fn parse(message: Bytes) -> Result<Frame, Malformed> {
        let mut reader = Reader {
            bytes: &message,
            at: 0,
        };
        let mut payload = 0..0;
        let mut frame_type = 0;
        while !reader.done() {
            let (field, wire_type) = reader.key()?;
            match field {
                PAYLOAD_FIELD => {
                    expect(field, wire_type, LENGTH_DELIMITED)?;
                    payload = reader.length_delimited()?;
                }
                FRAME_TYPE_FIELD => {
                    expect(field, wire_type, VARINT)?;
                    // prost decodes an enum as int32: the varint truncated to 32 bits.
                    frame_type = reader.varint()? as i32;
                }
                _ => reader.skip(field, wire_type)?,
            }
        }
        Ok(Frame {
            message,
            payload,
            frame_type,
        })
    }

    /// A `FRAME_TYPE_DATA` frame carrying `payload` (copied once, into the message).
    pub(crate) fn data(payload: &[u8]) -> Frame {
        let mut message = BytesMut::with_capacity(1 + 10 + payload.len());
        // The key of field 1, length-delimited; DATA (0) is the default and omitted, as
        // every protobuf encoder does.
        message.put_u8((PAYLOAD_FIELD << 3) as u8 | LENGTH_DELIMITED);
        put_varint(&mut message, payload.len() as u64);
        let start = message.len();
        message.put_slice(payload);
        Frame {
            payload: start..message.len(),
            message: message.freeze(),
            frame_type: 0,
        }
    }

    /// An empty `FRAME_TYPE_GOAWAY` frame.
    pub(crate) fn goaway() -> Frame {
        Frame {
            message: Bytes::from_static(&[(FRAME_TYPE_FIELD << 3) as u8 | VARINT, GOAWAY]),
            payload: 0..0,
            frame_type: i32::from(GOAWAY),
        }
    }

    /// The frame type (a `FrameType` value, or one the enum does not name).
    pub(crate) fn frame_type(&self) -> i32 {
        self.frame_type
    }

    /// The payload, sharing the message's memory.
    pub(crate) fn payload(&self) -> Bytes {
        self.message.slice(self.payload.clone())
    }

    /// Bytes of the payload.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// The whole message, as it came (or as built).
    pub(crate) fn message(&self) -> &Bytes {
        &self.message
    }
}

fn expect(field: u32, found: u8, expected: u8) -> Result<(), Malformed> {
    if found == expected {
        Ok(())
    } else {
        Err(Malformed::WireType {
            field,
            found,
            expected,
        })
    }
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// A cursor over a message.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(Malformed::Underflow);
            };
            self.at += 1;
            // The tenth byte holds bit 63 only.
            if i == 9 && byte > 1 {
                return Err(Malformed::Varint);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed::Varint)
    }

    /// A field key: its number and wire type.
    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(Malformed::Key(key));
        }
        let wire_type = (key & 0x7) as u8;
        if wire_type > FIXED32 {
            return Err(Malformed::WireTypeValue(wire_type));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(Malformed::ZeroTag);
        }
        Ok((field, wire_type))
    }

    fn advance(&mut self, len: u64) -> Result<Range<usize>, Malformed> {
        let remaining = self.bytes.len() - self.at;
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= remaining)
            .ok_or(Malformed::Underflow)?;
        let range = self.at..self.at + len;
        self.at += len;
        Ok(range)
    }

    fn length_delimited(&mut self) -> Result<Range<usize>, Malformed> {
        let len = self.varint()?;
        self.advance(len)
    }

    /// Skips the value of an unknown field `field` of `wire_type`.
    fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), Malformed> {
        // Open groups, innermost last, by field number.
        let mut groups: Vec<u32> = Vec::new();
        let (mut field, mut wire_type) = (field, wire_type);
        loop {
            match wire_type {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.advance(8)?;
                }
                LENGTH_DELIMITED => {
                    self.length_delimited()?;
                }
                FIXED32 => {
                    self.advance(4)?;
                }
                START_GROUP => {
                    if groups.len() >= MAX_GROUP_DEPTH {
                        return Err(Malformed::Depth);
                    }
                    groups.push(field);
                }
                END_GROUP => {
                    if groups.pop() != Some(field) {
                        return Err(Malformed::EndGroup);
                    }
                }
                other => return Err(Malformed::WireTypeValue(other)),
            }
            if groups.is_empty() {
                return Ok(());
            }
            (field, wire_type) = self.key()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    fn parse(bytes: &[u8]) -> Result<Frame, Malformed> {
        Frame::parse(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn built_frames_decode_as_responses() {
        let data = Frame::data(b"hello");
        let decoded = StreamResponse::decode(data.message().clone()).expect("decodes");
        assert_eq!(decoded.payload, b"hello");
        assert_eq!(decoded.frame_type, FrameType::Data as i32);
        assert_eq!(parse(data.message()).expect("parses"), data);

        let goaway = Frame::goaway();
        let decoded = StreamResponse::decode(goaway.message().clone()).expect("decodes");
        assert!(decoded.payload.is_empty());
        assert_eq!(decoded.frame_type, FrameType::Goaway as i32);
        assert_eq!(parse(goaway.message()).expect("parses"), goaway);
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped_and_kept() {
        // payload "ab", an unknown varint field 9, frame type PING, an unknown group 5
        // holding a fixed32 field, an unknown fixed64 field 6.
        let message = [
            0x0a, 2, b'a', b'b', 0x48, 0x96, 0x01, 0x10, 6, 0x2b, 0x0d, 1, 2, 3, 4, 0x2c, 0x31, 0,
            0, 0, 0, 0, 0, 0, 0,
        ];
        let frame = parse(&message).expect("parses");
        assert_eq!(frame.payload().as_ref(), b"ab");
        assert_eq!(frame.frame_type(), FrameType::Ping as i32);
        assert_eq!(frame.message().as_ref(), message);
    }

    #[test]
    fn malformed_messages_are_refused() {
        for (message, error) in [
            (&[0x0a, 5, 1][..], Malformed::Underflow),
            (&[0x10][..], Malformed::Underflow),
            (&[0x00, 1][..], Malformed::ZeroTag),
            (&[0x0e][..], Malformed::WireTypeValue(6)),
            (
                &[0x08, 1][..],
                Malformed::WireType {
                    field: 1,
                    found: 0,
                    expected: 2,
                },
            ),
            (
                &[0x12, 0][..],
                Malformed::WireType {
                    field: 2,
                    found: 2,
                    expected: 0,
                },
            ),
            (&[0x2c][..], Malformed::EndGroup),
            (&[0x2b, 0x34][..], Malformed::EndGroup),
            (&[0x2b][..], Malformed::Underflow),
            (
                &[
                    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ][..],
                Malformed::Varint,
            ),
        ] {
            assert_eq!(parse(message), Err(error.clone()), "{message:?}");
            assert!(
                StreamRequest::decode(message).is_err(),
                "prost refuses {message:?} too"
            );
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x2b, MAX_GROUP_DEPTH + 1).collect();
        assert_eq!(parse(&deep), Err(Malformed::Depth));
    }

    proptest! {
        /// Whatever prost encodes, the frame reads the same payload and frame type.
        #[test]
        fn agrees_with_prost_on_encoded_requests(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            frame_type in any::<i32>(),
        ) {
            let request = StreamRequest { payload: payload.clone(), frame_type };
            let frame = Frame::parse(Bytes::from(request.encode_to_vec())).expect("parses");
            prop_assert_eq!(frame.payload(), &payload[..]);
            prop_assert_eq!(frame.payload_len(), payload.len());
            prop_assert_eq!(frame.frame_type(), frame_type);
        }

        /// On any bytes, the frame accepts exactly what prost accepts, and reads the same.
        #[test]
        fn agrees_with_prost_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let ours = parse(&bytes);
            match StreamRequest::decode(&bytes[..]) {
                Ok(request) => {
                    let frame = ours.expect("prost accepts it, so do we");
                    prop_assert_eq!(frame.payload(), &request.payload[..]);
                    prop_assert_eq!(frame.frame_type(), request.frame_type);
                }
                Err(error) => prop_assert!(ours.is_err(), "prost refuses it ({}), we accept", error),
            }
        }
    }
}
