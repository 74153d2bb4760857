//! Rows of a native body (`/api/v1/import/native`, what `/api/v1/export/native` produces).
//!
//! The body is a time range (two big-endian zigzag int64s) followed by `(metric name, block)`
//! pairs, each prefixed by a big-endian uint32 size of at most 1 MiB
//! (`lib/protoparser/native/stream/streamparser.go:22-110` at master). VictoriaMetrics adds, per
//! block, the number of its rows inside the time range (`app/vminsert/native/request_handler.go:40`
//! at master, `:44` at v1.79.5, after `AppendRowsWithTimeRangeFilter`). Counting those would mean
//! decompressing every block's timestamps, so this reads only each block header's `rowsCount` and
//! time bounds (`lib/storage/block_header.go:169` `unmarshalPortable`):
//!
//! * since v1.82 the header has both the minimum and maximum timestamp, and VictoriaMetrics
//!   refuses blocks whose rows fall outside them; a block entirely inside the range counts
//!   `rowsCount`, one entirely outside counts 0, both exactly;
//! * a block straddling a range edge, and every block of older releases (whose header has only the
//!   first timestamp), counts `rowsCount` as an upper bound and makes the result inexact.
//!
//! Exports cover whole blocks with their range, so in practice the count is exact on current
//! releases. A body that ends mid-block or has an oversized size field fails here as there.

use crate::ingest::protowire::{read_varint, zigzag64};

use super::{CountError, Counted, Dialect};

/// VictoriaMetrics' limit on a metric name and on a block.
const MAX_PART: usize = 1024 * 1024;

fn take<'a>(data: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], CountError> {
    let (head, rest) = data.split_at_checked(n).ok_or(CountError::Native(what))?;
    *data = rest;
    Ok(head)
}

fn be_u32(b: &[u8]) -> usize {
    b.iter().fold(0usize, |v, x| (v << 8) | usize::from(*x))
}

fn be_zigzag64(b: &[u8]) -> i64 {
    zigzag64(b.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
}

pub(super) fn count(mut data: &[u8], dialect: &Dialect) -> Result<Counted, CountError> {
    let range = take(&mut data, 16, "missing time range")?;
    let (min, max) = range.split_at_checked(8).unwrap_or_default();
    let (tr_min, tr_max) = (be_zigzag64(min), be_zigzag64(max));
    let mut rows = 0u64;
    let mut exact = true;
    while !data.is_empty() {
        let name_len = be_u32(take(&mut data, 4, "truncated metric name size")?);
        if name_len > MAX_PART {
            return Err(CountError::Native("metric name over 1 MiB"));
        }
        take(&mut data, name_len, "truncated metric name")?;
        let block_len = be_u32(take(&mut data, 4, "truncated block size")?);
        if block_len > MAX_PART {
            return Err(CountError::Native("block over 1 MiB"));
        }
        let block = take(&mut data, block_len, "truncated block")?;
        let (n, sure) = block_rows(block, tr_min, tr_max, dialect)?;
        rows = rows.saturating_add(n);
        exact &= sure;
    }
    Ok(Counted { rows, exact })
}

fn block_rows(
    block: &[u8],
    tr_min: i64,
    tr_max: i64,
    dialect: &Dialect,
) -> Result<(u64, bool), CountError> {
    let bad = |_| CountError::Native("corrupt block header");
    let mut pos = 0;
    let first = zigzag64(read_varint(block, &mut pos).map_err(bad)?);
    let last = if dialect.native_max_timestamp {
        Some(zigzag64(read_varint(block, &mut pos).map_err(bad)?))
    } else {
        None
    };
    read_varint(block, &mut pos).map_err(bad)?; // first value
    let rows = read_varint(block, &mut pos).map_err(bad)?;
    if rows > u64::from(u32::MAX) {
        return Err(CountError::Native("rowsCount over 2^32"));
    }
    if first > tr_max || last.is_some_and(|l| l < tr_min) {
        return Ok((0, true));
    }
    let inside = first >= tr_min && last.is_some_and(|l| l <= tr_max);
    Ok((rows, inside))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::protowire::put_varint;

    fn zz(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    fn body(tr: (i64, i64), blocks: &[(i64, i64, u64)], with_max: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&zz(tr.0).to_be_bytes());
        b.extend_from_slice(&zz(tr.1).to_be_bytes());
        for (min, max, rows) in blocks {
            let name = b"\x00\x00\x00\x00\x00\x00\x00\x00metric";
            b.extend_from_slice(&(name.len() as u32).to_be_bytes());
            b.extend_from_slice(name);
            let mut h = Vec::new();
            put_varint(&mut h, zz(*min));
            if with_max {
                put_varint(&mut h, zz(*max));
            }
            put_varint(&mut h, zz(42));
            put_varint(&mut h, *rows);
            h.extend_from_slice(&[0, 1, 2, 3, 4, 5]); // scale, types, data: not read
            b.extend_from_slice(&(h.len() as u32).to_be_bytes());
            b.extend_from_slice(&h);
        }
        b
    }

    #[test]
    fn blocks_inside_outside_and_across_the_range() {
        let d = Dialect::LATEST;
        let inside = body((0, 1000), &[(10, 20, 5), (0, 1000, 7)], true);
        assert_eq!(
            count(&inside, &d),
            Ok(Counted {
                rows: 12,
                exact: true
            })
        );
        let outside = body(
            (0, 1000),
            &[(10, 20, 5), (2000, 3000, 9), (-50, -1, 4)],
            true,
        );
        assert_eq!(
            count(&outside, &d),
            Ok(Counted {
                rows: 5,
                exact: true
            })
        );
        let across = body((0, 1000), &[(900, 1100, 5)], true);
        assert_eq!(
            count(&across, &d),
            Ok(Counted {
                rows: 5,
                exact: false
            })
        );
        let empty = body((0, 1000), &[], true);
        assert_eq!(
            count(&empty, &d),
            Ok(Counted {
                rows: 0,
                exact: true
            })
        );
    }

    #[test]
    fn old_headers_only_bound_the_count() {
        let d = Dialect::V1_79_5;
        let b = body((0, 1000), &[(10, 0, 5), (2000, 0, 9)], false);
        assert_eq!(
            count(&b, &d),
            Ok(Counted {
                rows: 5,
                exact: false
            })
        );
    }

    #[test]
    fn malformed_bodies() {
        let d = Dialect::LATEST;
        assert!(count(&[0; 15], &d).is_err());
        let b = body((0, 1000), &[(10, 20, 5)], true);
        for cut in 17..b.len() {
            assert!(count(&b[..cut], &d).is_err(), "cut at {cut}");
        }
        let mut big = body((0, 1000), &[], true);
        big.extend_from_slice(&(2u32 << 20).to_be_bytes());
        assert_eq!(
            count(&big, &d),
            Err(CountError::Native("metric name over 1 MiB"))
        );
    }
}
