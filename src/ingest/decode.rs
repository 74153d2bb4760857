//! Bounded decompression of write bodies: snappy blocks, zstd, gzip and zlib ("deflate").
//!
//! A write body is attacker-controlled, and a few kilobytes of zstd or gzip can expand to gigabytes,
//! so every decoder here stops at a caller-given limit instead of trusting the input. Snappy blocks
//! declare their decoded length up front; it is checked before anything is allocated. zstd and gzip
//! are stream-decoded and cut off one byte past the limit, and zstd's window is capped so a frame
//! cannot make the decoder reserve more memory than the limit justifies.

use std::fmt;
use std::io::Read;

/// Why a body could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body would be larger than the limit.
    TooLarge { limit: usize },
    /// Not a valid snappy block.
    Snappy,
    /// Not a valid zstd stream (or a frame needs a larger window than allowed).
    Zstd,
    /// Not a valid gzip stream.
    Gzip,
    /// Not a valid zlib stream.
    Zlib,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { limit } => {
                write!(f, "decompressed body exceeds {limit} bytes")
            }
            DecodeError::Snappy => f.write_str("invalid snappy block"),
            DecodeError::Zstd => f.write_str("invalid zstd stream"),
            DecodeError::Gzip => f.write_str("invalid gzip stream"),
            DecodeError::Zlib => f.write_str("invalid deflate (zlib) stream"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a snappy block (the raw format, not the framed stream format) into `out`.
pub fn snappy_block(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|_| DecodeError::Snappy)?;
    if len > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    out.clear();
    out.resize(len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(|_| DecodeError::Snappy)?;
    out.truncate(n);
    Ok(())
}

/// Largest zstd window accepted, as log2: the library's own default ceiling (128 MiB).
const ZSTD_MAX_WINDOW_LOG: u32 = 27;
/// Smallest ceiling we ever impose: 8 MiB windows are what streaming encoders (Go's klauspost
/// encoder among them) use by default, even for small bodies.
const ZSTD_MIN_WINDOW_LOG: u32 = 23;

/// Decodes a zstd stream (one or more frames) into `out`.
pub fn zstd(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(body).map_err(|_| DecodeError::Zstd)?;
    // A window never needs to exceed the whole decoded body, so the limit bounds it too.
    let wanted = usize::BITS - limit.max(1).leading_zeros();
    let window_log = wanted.clamp(ZSTD_MIN_WINDOW_LOG, ZSTD_MAX_WINDOW_LOG);
    decoder
        .window_log_max(window_log)
        .map_err(|_| DecodeError::Zstd)?;
    read_limited(decoder, limit, out, DecodeError::Zstd)
}

/// Decodes a gzip stream into `out`. Concatenated members are read in turn, as Go's reader does.
pub fn gzip(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    read_limited(
        flate2::read::MultiGzDecoder::new(body),
        limit,
        out,
        DecodeError::Gzip,
    )
}

/// Decodes a zlib stream into `out`: what VictoriaMetrics reads for `Content-Encoding: deflate`.
pub fn zlib(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    read_limited(
        flate2::read::ZlibDecoder::new(body),
        limit,
        out,
        DecodeError::Zlib,
    )
}

fn read_limited(
    reader: impl Read,
    limit: usize,
    out: &mut Vec<u8>,
    invalid: DecodeError,
) -> Result<(), DecodeError> {
    out.clear();
    // One byte more than allowed tells "exactly at the limit" from "over it".
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(out).map_err(|_| invalid)?;
    if out.len() > limit {
        out.clear();
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn snappy_checks_the_declared_length_first() {
        let data = vec![7u8; 10_000];
        let block = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut out = Vec::new();
        snappy_block(&block, 10_000, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            snappy_block(&block, 9_999, &mut out),
            Err(DecodeError::TooLarge { limit: 9_999 })
        );
        // A header claiming 4 GiB and nothing behind it: refused without allocating.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(
            snappy_block(&bomb, 1 << 20, &mut out),
            Err(DecodeError::TooLarge { limit: 1 << 20 })
        );
        assert_eq!(
            snappy_block(&[0x05, 0x00], 100, &mut out),
            Err(DecodeError::Snappy)
        );
        assert_eq!(snappy_block(&[], 100, &mut out), Err(DecodeError::Snappy));
    }

    #[test]
    fn zstd_stops_at_the_limit() {
        let data = vec![0u8; 1 << 20];
        let frame = zstd::bulk::compress(&data, 3).unwrap();
        assert!(frame.len() < 1000);
        let mut out = Vec::new();
        zstd(&frame, 1 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 1 << 20);
        assert_eq!(
            zstd(&frame, (1 << 20) - 1, &mut out),
            Err(DecodeError::TooLarge {
                limit: (1 << 20) - 1
            })
        );
        // Two frames back to back decode as one body.
        let two = [
            zstd::bulk::compress(b"ab", 1).unwrap(),
            zstd::bulk::compress(b"cd", 1).unwrap(),
        ]
        .concat();
        zstd(&two, 100, &mut out).unwrap();
        assert_eq!(out, b"abcd");
        assert_eq!(zstd(b"not zstd", 100, &mut out), Err(DecodeError::Zstd));
    }

    #[test]
    fn gzip_and_zlib() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[1u8; 5000]).unwrap();
        let gz = gz.finish().unwrap();
        let mut out = Vec::new();
        gzip(&gz, 5000, &mut out).unwrap();
        assert_eq!(out.len(), 5000);
        assert_eq!(
            gzip(&gz, 4999, &mut out),
            Err(DecodeError::TooLarge { limit: 4999 })
        );
        let twice = [gz.clone(), gz].concat();
        gzip(&twice, 10_000, &mut out).unwrap();
        assert_eq!(out.len(), 10_000);
        assert_eq!(gzip(b"plain", 100, &mut out), Err(DecodeError::Gzip));

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"hello").unwrap();
        let z = z.finish().unwrap();
        zlib(&z, 5, &mut out).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(zlib(b"plain", 100, &mut out), Err(DecodeError::Zlib));
    }
}
