//! Protobuf wire-format reading (and the little writing relabeling needs), for remote-write bodies.
//!
//! Both the row counter ([`crate::ingest::rows`]) and the label enforcer ([`crate::ingest::relabel`]) walk
//! `prometheus.WriteRequest` messages without decoding them into structs: counting needs no
//! allocation at all, and relabeling must keep every field it does not touch byte for byte, which a
//! decode/encode round trip through generated types would not (unknown fields, field order, packed vs
//! unpacked encodings). So this module reads one field at a time from a byte slice and hands back the
//! field number, its value and its raw bytes, borrowing from the input.
//!
//! It is strict where protobuf is strict and VictoriaMetrics and Prometheus agree: a truncated field,
//! a varint longer than ten bytes (or overflowing 64 bits in its tenth), a length running past the end
//! of its message, field number 0, and the group wire types (3, 4) and the undefined ones (6, 7) are
//! errors. proto3 has no groups and no real sender emits them; refusing them keeps the walker
//! non-recursive.

use std::fmt;

/// Why a message did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The message ends inside a tag, a value or a length-delimited payload.
    Truncated,
    /// A varint runs past ten bytes or does not fit in 64 bits.
    VarintOverflow,
    /// Wire type 3, 4, 6 or 7.
    UnsupportedWireType(u8),
    /// Field number 0 (or one above `u32::MAX`).
    InvalidFieldNumber,
    /// A known field arrived with a wire type its schema does not allow.
    WrongWireType { field: u32, wire_type: u8 },
    /// A value outside what its type can hold (a `uint32` above `u32::MAX`, a packed `double` array
    /// whose length is not a multiple of 8).
    BadValue { field: u32 },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated protobuf message"),
            WireError::VarintOverflow => f.write_str("protobuf varint longer than 64 bits"),
            WireError::UnsupportedWireType(w) => write!(f, "unsupported protobuf wire type {w}"),
            WireError::InvalidFieldNumber => f.write_str("invalid protobuf field number"),
            WireError::WrongWireType { field, wire_type } => {
                write!(
                    f,
                    "protobuf field {field} has unexpected wire type {wire_type}"
                )
            }
            WireError::BadValue { field } => {
                write!(f, "protobuf field {field} has an invalid value")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// Wire type of varint fields.
pub const VARINT: u8 = 0;
/// Wire type of 8-byte fields (`double`, `fixed64`).
pub const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (messages, strings, bytes, packed arrays).
pub const LEN: u8 = 2;
/// Wire type of 4-byte fields (`float`, `fixed32`).
pub const FIXED32: u8 = 5;

/// A field's value as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    /// The whole encoded field, tag included, for copying it unchanged.
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The field's wire type.
    pub fn wire_type(&self) -> u8 {
        match self.value {
            Value::Varint(_) => VARINT,
            Value::Fixed64(_) => FIXED64,
            Value::Len(_) => LEN,
            Value::Fixed32(_) => FIXED32,
        }
    }

    fn wrong(&self) -> WireError {
        WireError::WrongWireType {
            field: self.number,
            wire_type: self.wire_type(),
        }
    }

    /// The payload of a message, string or bytes field.
    #[inline]
    pub fn bytes(&self) -> Result<&'a [u8], WireError> {
        match self.value {
            Value::Len(b) => Ok(b),
            _ => Err(self.wrong()),
        }
    }

    /// The value of a varint field (`int64`, `uint64`, `bool`, enums).
    #[inline]
    pub fn varint(&self) -> Result<u64, WireError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.wrong()),
        }
    }

    /// The value of a `uint32`/`sint32`/enum field, refusing values that do not fit 32 bits (as
    /// VictoriaMetrics' decoder does).
    #[inline]
    pub fn varint_u32(&self) -> Result<u32, WireError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| WireError::BadValue { field: self.number })
    }

    /// The bits of a `double`/`fixed64` field.
    #[inline]
    pub fn fixed64(&self) -> Result<u64, WireError> {
        match self.value {
            Value::Fixed64(v) => Ok(v),
            _ => Err(self.wrong()),
        }
    }
}

/// Reads a varint at `*pos`, advancing it.
#[inline]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let start = *pos;
    // One-byte varints are most tags, lengths and small values: keep them out of the loop.
    match buf.get(start) {
        None => return Err(WireError::Truncated),
        Some(&b) if b < 0x80 => {
            *pos = start + 1;
            return Ok(u64::from(b));
        }
        Some(_) => {}
    }
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf.get(start + i).ok_or(WireError::Truncated)?;
        if i == 9 && b > 1 {
            return Err(WireError::VarintOverflow);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    Err(WireError::VarintOverflow)
}

/// Reads `len` bytes at `*pos`, advancing it.
#[inline]
fn read_slice<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], WireError> {
    let start = *pos;
    let rest = buf.len().saturating_sub(start);
    let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
    if len > rest {
        return Err(WireError::Truncated);
    }
    let end = start + len;
    *pos = end;
    buf.get(start..end).ok_or(WireError::Truncated)
}

/// Reads the fields of one message in order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// A reader starting at byte `pos` of `buf` (which must be a field boundary).
    pub fn at(buf: &'a [u8], pos: usize) -> Reader<'a> {
        Reader { buf, pos }
    }

    /// Where the next field starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next field, `Ok(None)` at the end of the message.
    #[inline]
    pub fn next_field(&mut self) -> Result<Option<Field<'a>>, WireError> {
        let start = self.pos;
        // Fast path for what remote write is made of: a one-byte tag of a length-delimited field
        // with a length below 128 (labels, samples, short strings).
        if let Some([tag, len, ..]) = self.buf.get(start..) {
            let (tag, len) = (*tag, usize::from(*len));
            if tag & 0x87 == LEN && tag >= 8 && len < 0x80 {
                let end = start + 2 + len;
                if let (Some(payload), Some(raw)) =
                    (self.buf.get(start + 2..end), self.buf.get(start..end))
                {
                    self.pos = end;
                    return Ok(Some(Field {
                        number: u32::from(tag >> 3),
                        value: Value::Len(payload),
                        raw,
                    }));
                }
                return Err(WireError::Truncated);
            }
        }
        self.next_field_slow()
    }

    fn next_field_slow(&mut self) -> Result<Option<Field<'a>>, WireError> {
        let start = self.pos;
        if start >= self.buf.len() {
            return Ok(None);
        }
        let mut pos = start;
        let tag = read_varint(self.buf, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| WireError::InvalidFieldNumber)?;
        if number == 0 {
            return Err(WireError::InvalidFieldNumber);
        }
        // The mask keeps the value below 8, so the cast cannot truncate.
        let wire_type = (tag & 7) as u8;
        let value = match wire_type {
            VARINT => Value::Varint(read_varint(self.buf, &mut pos)?),
            FIXED64 => {
                let b = read_slice(self.buf, &mut pos, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            LEN => {
                let len = read_varint(self.buf, &mut pos)?;
                Value::Len(read_slice(self.buf, &mut pos, len)?)
            }
            FIXED32 => {
                let b = read_slice(self.buf, &mut pos, 4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            other => return Err(WireError::UnsupportedWireType(other)),
        };
        self.pos = pos;
        let raw = self.buf.get(start..pos).ok_or(WireError::Truncated)?;
        Ok(Some(Field { number, value, raw }))
    }
}

/// The length-delimited field at `pos` if it has a one-byte tag and a length below 128, which is
/// nearly every field of a remote-write body: `(tag, payload, end)`. `None` means "not that
/// shape, use [`Reader`]" (which also reports a truncated field), never an error.
///
/// Hot loops use this instead of [`Reader::next_field`]: returning the general field through
/// `Result<Option<_>>` costs a store-forwarding stall per field.
#[inline(always)]
pub fn short_len_field(buf: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let [tag, n, rest @ ..] = buf.get(pos..)? else {
        return None;
    };
    if *tag & 0x87 != LEN || *tag < 8 || *n >= 0x80 {
        return None;
    }
    let n = usize::from(*n);
    Some((*tag, rest.get(..n)?, pos + 2 + n))
}

/// The values of a repeated scalar field that may arrive packed (one length-delimited run) or
/// unpacked (one field per value), or as any mix of both: protobuf parsers must accept all of them.
///
/// It walks the enclosing message again, so it costs no allocation; `wire_type` is the unpacked
/// encoding (`VARINT` or `FIXED64`).
#[derive(Debug, Clone)]
pub struct Repeated<'a> {
    fields: Reader<'a>,
    number: u32,
    wire_type: u8,
    packed: &'a [u8],
}

impl<'a> Repeated<'a> {
    pub fn new(message: &'a [u8], number: u32, wire_type: u8) -> Repeated<'a> {
        Repeated {
            fields: Reader::new(message),
            number,
            wire_type,
            packed: &[],
        }
    }

    /// The next raw value (varint value or the bits of a fixed64), `Ok(None)` when none is left.
    pub fn next_value(&mut self) -> Result<Option<u64>, WireError> {
        loop {
            if !self.packed.is_empty() {
                return self.next_packed().map(Some);
            }
            let Some(field) = self.fields.next_field()? else {
                return Ok(None);
            };
            if field.number != self.number {
                continue;
            }
            match field.value {
                Value::Len(b) => self.packed = b,
                Value::Varint(v) if self.wire_type == VARINT => return Ok(Some(v)),
                Value::Fixed64(v) if self.wire_type == FIXED64 => return Ok(Some(v)),
                _ => return Err(field.wrong()),
            }
        }
    }

    fn next_packed(&mut self) -> Result<u64, WireError> {
        if self.wire_type == VARINT {
            let mut pos = 0;
            let v = read_varint(self.packed, &mut pos)?;
            self.packed = self.packed.get(pos..).unwrap_or_default();
            Ok(v)
        } else {
            let (head, tail) = self
                .packed
                .split_first_chunk::<8>()
                .ok_or(WireError::BadValue { field: self.number })?;
            self.packed = tail;
            Ok(u64::from_le_bytes(*head))
        }
    }
}

/// Appends `v` as a varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation to the low seven bits (plus the continuation bit) is the encoding.
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes `v` takes as a varint.
#[inline]
pub fn varint_len(v: u64) -> usize {
    // 1 + floor(bits / 7), with 0 taking one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends a field tag.
#[inline]
pub fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// Appends a length-delimited field.
#[inline]
pub fn put_len_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_tag(out, number, LEN);
    // usize always fits u64 on the platforms Rust supports.
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Decodes a zigzag-encoded `sint64`.
#[inline]
pub fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, WireError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some(f) = r.next_field()? {
            out.push((f.number, f.value));
        }
        Ok(out)
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(read_varint(&buf, &mut pos), Ok(v));
            assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn overlong_and_truncated_varints() {
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0x80; 11], &mut pos),
            Err(WireError::VarintOverflow)
        );
        let ten = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(read_varint(&ten, &mut 0), Err(WireError::VarintOverflow));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&max, &mut 0), Ok(u64::MAX));
        assert_eq!(
            read_varint(&[0x80, 0x80], &mut 0),
            Err(WireError::Truncated)
        );
        assert_eq!(read_varint(&[], &mut 0), Err(WireError::Truncated));
        // Padded (non-minimal) encodings are legal protobuf.
        assert_eq!(read_varint(&[0x81, 0x80, 0x00], &mut 0), Ok(1));
    }

    #[test]
    fn reads_every_wire_type() {
        let mut buf = Vec::new();
        put_tag(&mut buf, 1, VARINT);
        put_varint(&mut buf, 150);
        put_tag(&mut buf, 2, FIXED64);
        buf.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        put_len_field(&mut buf, 3, b"abc");
        put_tag(&mut buf, 4, FIXED32);
        buf.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            fields(&buf),
            Ok(vec![
                (1, Value::Varint(150)),
                (2, Value::Fixed64(1.5f64.to_bits())),
                (3, Value::Len(b"abc")),
                (4, Value::Fixed32(7)),
            ])
        );
    }

    #[test]
    fn raw_covers_the_whole_field() {
        let mut buf = Vec::new();
        put_len_field(&mut buf, 1, b"xy");
        put_tag(&mut buf, 2, VARINT);
        put_varint(&mut buf, 300);
        let mut r = Reader::new(&buf);
        let a = r.next_field().unwrap().unwrap();
        let b = r.next_field().unwrap().unwrap();
        assert_eq!([a.raw, b.raw].concat(), buf);
    }

    #[test]
    fn refuses_malformed_fields() {
        // Length past the end.
        assert_eq!(fields(&[0x0a, 0x05, 1, 2]), Err(WireError::Truncated));
        // Fixed64 cut short.
        assert_eq!(fields(&[0x09, 1, 2, 3]), Err(WireError::Truncated));
        // Groups and undefined wire types.
        for w in [3u8, 4, 6, 7] {
            assert_eq!(fields(&[0x08 | w]), Err(WireError::UnsupportedWireType(w)));
        }
        // Field number zero.
        assert_eq!(fields(&[0x00, 0x01]), Err(WireError::InvalidFieldNumber));
        // A length that does not fit usize or the buffer.
        let mut buf = vec![0x0a];
        put_varint(&mut buf, u64::MAX);
        assert_eq!(fields(&buf), Err(WireError::Truncated));
    }

    #[test]
    fn typed_accessors_check_wire_types() {
        let f = Field {
            number: 2,
            value: Value::Varint(1),
            raw: &[],
        };
        assert_eq!(
            f.bytes(),
            Err(WireError::WrongWireType {
                field: 2,
                wire_type: 0
            })
        );
        assert_eq!(f.varint(), Ok(1));
        let big = Field {
            number: 4,
            value: Value::Varint(u64::from(u32::MAX) + 1),
            raw: &[],
        };
        assert_eq!(big.varint_u32(), Err(WireError::BadValue { field: 4 }));
    }

    #[test]
    fn repeated_mixes_packed_and_unpacked() {
        let mut msg = Vec::new();
        put_tag(&mut msg, 9, VARINT);
        put_varint(&mut msg, 3);
        let mut packed = Vec::new();
        put_varint(&mut packed, 4);
        put_varint(&mut packed, 300);
        put_len_field(&mut msg, 9, &packed);
        put_len_field(&mut msg, 1, b"other");
        put_tag(&mut msg, 9, VARINT);
        put_varint(&mut msg, 5);
        let mut r = Repeated::new(&msg, 9, VARINT);
        let mut got = Vec::new();
        while let Some(v) = r.next_value().unwrap() {
            got.push(v);
        }
        assert_eq!(got, vec![3, 4, 300, 5]);

        let mut doubles = Vec::new();
        put_len_field(&mut doubles, 10, &[0u8; 12]);
        let mut r = Repeated::new(&doubles, 10, FIXED64);
        assert_eq!(r.next_value(), Ok(Some(0)));
        assert_eq!(r.next_value(), Err(WireError::BadValue { field: 10 }));
    }

    #[test]
    fn short_fields() {
        let mut buf = vec![0xff];
        put_len_field(&mut buf, 2, b"abc");
        assert_eq!(short_len_field(&buf, 1), Some((0x12, &b"abc"[..], 6)));
        assert_eq!(short_len_field(&buf, 0), None);
        assert_eq!(short_len_field(&buf[..5], 1), None);
        assert_eq!(short_len_field(&[0x08, 0x01], 0), None);
        let mut long = Vec::new();
        put_len_field(&mut long, 1, &[0; 200]);
        assert_eq!(short_len_field(&long, 0), None);
    }

    #[test]
    fn zigzag() {
        assert_eq!(zigzag64(0), 0);
        assert_eq!(zigzag64(1), -1);
        assert_eq!(zigzag64(2), 1);
        assert_eq!(zigzag64(u64::MAX), i64::MIN);
        assert_eq!(zigzag64(u64::MAX - 1), i64::MAX);
    }
}
