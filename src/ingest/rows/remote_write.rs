//! Rows of a decoded remote-write `WriteRequest`.
//!
//! VictoriaMetrics adds `len(ts.Samples)` of every series to `vm_rows_inserted_total{type=
//! "promremotewrite"}` before relabeling or limits can drop the series
//! (`app/vminsert/promremotewrite/request_handler.go:47` at master, `:47` at v1.79.5), so a sample
//! counts as soon as the body decodes. Exemplars (`TimeSeries` field 3) are never counted: master
//! skips the field (`lib/prompb/write_request_unmarshaler.go:135-176`), v1.79.5's generated decoder
//! does not know it (`lib/prompb/types.proto:26-29`). Metadata (`WriteRequest` field 3) goes to
//! `vm_metadata_rows_inserted_total`, not to rows.
//!
//! Native histograms (`TimeSeries` field 4) count since v1.143 (LTS v1.122.22, v1.136.9): each one
//! is turned into classic series (`write_request_unmarshaler.go:377-483`) with one sample each, and
//! those samples are in `len(ts.Samples)`:
//!
//! * none at all if the series' first `__name__` label is empty or missing (`:397-400`);
//! * otherwise `_count` and `_sum` (2), plus one `_bucket` for a zero bucket with a count above 0
//!   (`:416`), plus one per positive and negative bucket whose count is above 0 (`:470`), walking
//!   the spans in order and stopping a side early when its deltas (integer histograms) or counts
//!   (float histograms, used whenever any count is present) run out (`:456-467`).
//!
//! A series with both samples and histograms fails the whole body there (`:181`). Before v1.143
//! field 4 is skipped like any unknown field and histograms are zero rows.
//!
//! Validation follows the decoders: fields VictoriaMetrics reads must have their wire type (labels,
//! samples, histograms and their parts; metadata too since v1.121), unknown fields are skipped.

use crate::ingest::protowire::{self, Reader, Repeated, WireError, FIXED64, VARINT};
use crate::ingest::rows::{CountError, Dialect};

/// Rows in `buf`, a decoded `WriteRequest`.
pub(super) fn count(buf: &[u8], dialect: &Dialect) -> Result<u64, CountError> {
    let mut rows = 0u64;
    let mut fields = Reader::new(buf);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 => rows = rows.saturating_add(series_rows(f.bytes()?, dialect)?),
            3 if dialect.remote_write_metadata => check_metadata(f.bytes()?)?,
            _ => {}
        }
    }
    Ok(rows)
}

fn series_rows(ts: &[u8], dialect: &Dialect) -> Result<u64, CountError> {
    let mut samples = 0u64;
    let mut histograms = 0u64;
    let mut pos = 0;
    while pos < ts.len() {
        // Labels and samples with a one-byte length are nearly every field there is: handle them
        // without the general field reader.
        match protowire::short_len_field(ts, pos) {
            Some((0x0a, payload, end)) => {
                check_label(payload)?;
                pos = end;
                continue;
            }
            Some((0x12, payload, end)) => {
                check_sample(payload)?;
                samples += 1;
                pos = end;
                continue;
            }
            _ => {}
        }
        let mut fields = Reader::at(ts, pos);
        let Some(f) = fields.next_field()? else {
            break;
        };
        pos = fields.position();
        match f.number {
            1 => check_label(f.bytes()?)?,
            2 => {
                check_sample(f.bytes()?)?;
                samples += 1;
            }
            4 if dialect.native_histograms => {
                f.bytes()?;
                histograms += 1;
            }
            _ => {}
        }
    }
    if histograms == 0 {
        return Ok(samples);
    }
    if samples > 0 {
        return Err(CountError::SamplesAndHistograms);
    }
    // Histograms are validated whether or not the series has a name: VictoriaMetrics decodes them
    // before it looks for one.
    let named = metric_name(ts)?.is_some_and(|name| !name.is_empty());
    let mut rows = 0u64;
    let mut fields = Reader::new(ts);
    while let Some(f) = fields.next_field()? {
        if f.number == 4 {
            let n = histogram_rows(f.bytes()?)?;
            if named {
                rows = rows.saturating_add(n);
            }
        }
    }
    Ok(rows)
}

#[inline]
fn check_label(buf: &[u8]) -> Result<(), WireError> {
    // The usual encoding, name then value, each shorter than 128 bytes.
    if let [0x0a, n, rest @ ..] = buf {
        if let Some([0x12, m, value @ ..]) = rest.get(usize::from(*n)..) {
            if *n < 0x80 && *m < 0x80 && value.len() == usize::from(*m) {
                return Ok(());
            }
        }
    }
    label(buf).map(|_| ())
}

/// `(name, value)` of a `Label`; the last occurrence of each field wins, as in any protobuf decoder.
fn label(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut fields = Reader::new(buf);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 => name = f.bytes()?,
            2 => value = f.bytes()?,
            _ => {}
        }
    }
    Ok((name, value))
}

/// The value of the series' first `__name__` label.
fn metric_name(ts: &[u8]) -> Result<Option<&[u8]>, WireError> {
    let mut fields = Reader::new(ts);
    while let Some(f) = fields.next_field()? {
        if f.number == 1 {
            let (name, value) = label(f.bytes()?)?;
            if name == b"__name__" {
                return Ok(Some(value));
            }
        }
    }
    Ok(None)
}

#[inline]
fn check_sample(buf: &[u8]) -> Result<(), WireError> {
    // The usual encoding, value then timestamp, checked without the generic walk.
    if let [0x09, _, _, _, _, _, _, _, _, 0x10, rest @ ..] = buf {
        let mut pos = 0;
        protowire::read_varint(rest, &mut pos)?;
        if pos == rest.len() {
            return Ok(());
        }
    }
    let mut fields = Reader::new(buf);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 => {
                f.fixed64()?;
            }
            2 => {
                f.varint()?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_metadata(buf: &[u8]) -> Result<(), WireError> {
    let mut fields = Reader::new(buf);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 | 11 | 12 => {
                f.varint_u32()?;
            }
            2 | 4 | 5 => {
                f.bytes()?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Samples one native histogram becomes (for a named series).
fn histogram_rows(h: &[u8]) -> Result<u64, WireError> {
    let mut zero_int = 0u64;
    let mut zero_float = 0f64;
    let mut zero_is_float = false;
    let mut positive_counts = false;
    let mut negative_counts = false;
    let mut fields = Reader::new(h);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 | 15 => {
                f.varint()?;
            }
            2 | 3 | 5 => {
                f.fixed64()?;
            }
            4 => {
                f.varint_u32()?;
            }
            6 => zero_int = f.varint()?,
            7 => {
                zero_float = f64::from_bits(f.fixed64()?);
                zero_is_float = true;
            }
            8 | 11 => {
                span(f.bytes()?)?;
            }
            9 | 12 => check_deltas(f)?,
            10 => negative_counts |= check_repeated_counts(f)?,
            13 => positive_counts |= check_repeated_counts(f)?,
            _ => {}
        }
    }
    let zero = if zero_is_float {
        zero_float
    } else {
        // A count's magnitude is all that matters: above zero or not.
        zero_int as f64
    };
    let mut rows = 2 + u64::from(zero > 0.0);
    rows += side_rows(h, 11, 12, 13, positive_counts)?;
    rows += side_rows(h, 8, 9, 10, negative_counts)?;
    Ok(rows)
}

/// Validates one occurrence of a `repeated sint64` field, packed or not.
fn check_deltas(f: protowire::Field<'_>) -> Result<(), WireError> {
    match f.value {
        protowire::Value::Varint(_) => Ok(()),
        protowire::Value::Len(b) => {
            let mut pos = 0;
            while pos < b.len() {
                protowire::read_varint(b, &mut pos)?;
            }
            Ok(())
        }
        _ => Err(WireError::WrongWireType {
            field: f.number,
            wire_type: f.wire_type(),
        }),
    }
}

/// Validates one occurrence of a `repeated double` field; whether it holds any value.
fn check_repeated_counts(f: protowire::Field<'_>) -> Result<bool, WireError> {
    match f.value {
        protowire::Value::Fixed64(_) => Ok(true),
        protowire::Value::Len(b) if b.len() % 8 == 0 => Ok(!b.is_empty()),
        protowire::Value::Len(_) => Err(WireError::BadValue { field: f.number }),
        _ => Err(WireError::WrongWireType {
            field: f.number,
            wire_type: f.wire_type(),
        }),
    }
}

/// `length` of a `BucketSpan` (validating `offset` too).
fn span(buf: &[u8]) -> Result<u32, WireError> {
    let mut length = 0;
    let mut fields = Reader::new(buf);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 => {
                f.varint_u32()?;
            }
            2 => length = f.varint_u32()?,
            _ => {}
        }
    }
    Ok(length)
}

/// Buckets above zero on one side of a histogram.
fn side_rows(
    h: &[u8],
    spans_field: u32,
    deltas_field: u32,
    counts_field: u32,
    float_counts: bool,
) -> Result<u64, WireError> {
    let mut values = if float_counts {
        Repeated::new(h, counts_field, FIXED64)
    } else {
        Repeated::new(h, deltas_field, VARINT)
    };
    let mut cumulative = 0i64;
    let mut rows = 0u64;
    let mut fields = Reader::new(h);
    while let Some(f) = fields.next_field()? {
        if f.number != spans_field {
            continue;
        }
        // Bounded by the values left, not by the declared length.
        for _ in 0..span(f.bytes()?)? {
            let Some(v) = values.next_value()? else {
                return Ok(rows);
            };
            let above_zero = if float_counts {
                f64::from_bits(v) > 0.0
            } else {
                // Go's int64 addition wraps; so does this.
                cumulative = cumulative.wrapping_add(protowire::zigzag64(v));
                cumulative > 0
            };
            rows += u64::from(above_zero);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::protowire::{put_len_field, put_tag, put_varint, FIXED64, LEN, VARINT};

    fn label_msg(name: &str, value: &str) -> Vec<u8> {
        let mut l = Vec::new();
        put_len_field(&mut l, 1, name.as_bytes());
        put_len_field(&mut l, 2, value.as_bytes());
        l
    }

    fn sample_msg(v: f64, t: i64) -> Vec<u8> {
        let mut s = Vec::new();
        put_tag(&mut s, 1, FIXED64);
        s.extend_from_slice(&v.to_bits().to_le_bytes());
        put_tag(&mut s, 2, VARINT);
        put_varint(&mut s, t as u64);
        s
    }

    fn series(labels: &[(&str, &str)], samples: usize, histograms: &[Vec<u8>]) -> Vec<u8> {
        let mut ts = Vec::new();
        for (n, v) in labels {
            put_len_field(&mut ts, 1, &label_msg(n, v));
        }
        for i in 0..samples {
            put_len_field(
                &mut ts,
                2,
                &sample_msg(i as f64, 1_700_000_000_000 + i as i64),
            );
        }
        for h in histograms {
            put_len_field(&mut ts, 4, h);
        }
        ts
    }

    fn request(series: &[Vec<u8>]) -> Vec<u8> {
        let mut wr = Vec::new();
        for s in series {
            put_len_field(&mut wr, 1, s);
        }
        wr
    }

    fn zz(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    /// An integer histogram: spans `(offset, length)` and bucket deltas, packed.
    fn int_histogram(
        zero_count: u64,
        positive: (&[(i32, u32)], &[i64]),
        negative: (&[(i32, u32)], &[i64]),
    ) -> Vec<u8> {
        let mut h = Vec::new();
        put_tag(&mut h, 1, VARINT);
        put_varint(&mut h, 10);
        put_tag(&mut h, 3, FIXED64);
        h.extend_from_slice(&12.5f64.to_bits().to_le_bytes());
        put_tag(&mut h, 4, VARINT);
        put_varint(&mut h, zz(3) as u32 as u64);
        put_tag(&mut h, 6, VARINT);
        put_varint(&mut h, zero_count);
        for (spans_field, deltas_field, (spans, deltas)) in [(8, 9, negative), (11, 12, positive)] {
            for (offset, length) in spans {
                let mut s = Vec::new();
                put_tag(&mut s, 1, VARINT);
                put_varint(&mut s, zz(i64::from(*offset)) as u32 as u64);
                put_tag(&mut s, 2, VARINT);
                put_varint(&mut s, u64::from(*length));
                put_len_field(&mut h, spans_field, &s);
            }
            let mut packed = Vec::new();
            for d in deltas.iter() {
                put_varint(&mut packed, zz(*d));
            }
            if !packed.is_empty() {
                put_len_field(&mut h, deltas_field, &packed);
            }
        }
        put_tag(&mut h, 15, VARINT);
        put_varint(&mut h, 1_700_000_000_000);
        h
    }

    fn count_latest(buf: &[u8]) -> Result<u64, CountError> {
        count(buf, &Dialect::LATEST)
    }

    #[test]
    fn samples_of_every_series() {
        let wr = request(&[
            series(&[("__name__", "a"), ("job", "x")], 3, &[]),
            series(&[("__name__", "b")], 1, &[]),
            series(&[], 2, &[]), // no labels: dropped by VM, but counted first
            series(&[("__name__", "c")], 0, &[]),
        ]);
        assert_eq!(count_latest(&wr), Ok(6));
        assert_eq!(count(&wr, &Dialect::V1_79_5), Ok(6));
        assert_eq!(count_latest(&[]), Ok(0));
    }

    #[test]
    fn exemplars_metadata_and_unknown_fields_are_not_rows() {
        let mut ts = series(&[("__name__", "a")], 2, &[]);
        let mut exemplar = Vec::new();
        put_len_field(&mut exemplar, 1, &label_msg("trace_id", "abc"));
        put_tag(&mut exemplar, 2, FIXED64);
        exemplar.extend_from_slice(&[0; 8]);
        put_len_field(&mut ts, 3, &exemplar);
        put_tag(&mut ts, 99, VARINT);
        put_varint(&mut ts, 5);
        let mut wr = request(&[ts]);
        let mut md = Vec::new();
        put_tag(&mut md, 1, VARINT);
        put_varint(&mut md, 1);
        put_len_field(&mut md, 2, b"a");
        put_len_field(&mut md, 4, b"help");
        put_len_field(&mut wr, 3, &md);
        put_tag(&mut wr, 7, FIXED64);
        wr.extend_from_slice(&[0; 8]);
        assert_eq!(count_latest(&wr), Ok(2));
        assert_eq!(count(&wr, &Dialect::V1_79_5), Ok(2));
    }

    #[test]
    fn malformed_metadata_depends_on_the_release() {
        let mut wr = request(&[series(&[("__name__", "a")], 1, &[])]);
        let mut md = Vec::new();
        put_tag(&mut md, 2, VARINT); // metric_family_name must be a string
        put_varint(&mut md, 1);
        put_len_field(&mut wr, 3, &md);
        assert!(count_latest(&wr).is_err());
        assert_eq!(count(&wr, &Dialect::V1_79_5), Ok(1));
        assert_eq!(count(&wr, &Dialect::for_version(1, 120, 0)), Ok(1));
    }

    #[test]
    fn wrong_wire_types_and_truncation() {
        let mut ts = Vec::new();
        put_tag(&mut ts, 2, VARINT); // samples must be messages
        put_varint(&mut ts, 1);
        assert!(count_latest(&request(&[ts])).is_err());

        let mut sample = Vec::new();
        put_tag(&mut sample, 1, VARINT); // value must be a double
        put_varint(&mut sample, 1);
        let mut ts = Vec::new();
        put_len_field(&mut ts, 2, &sample);
        assert!(count_latest(&request(&[ts])).is_err());

        let mut lbl = Vec::new();
        put_tag(&mut lbl, 1, FIXED64);
        lbl.extend_from_slice(&[0; 8]);
        let mut ts = Vec::new();
        put_len_field(&mut ts, 1, &lbl);
        assert!(count_latest(&request(&[ts])).is_err());

        let wr = request(&[series(&[("__name__", "a")], 2, &[])]);
        for cut in 1..wr.len() {
            assert!(count_latest(&wr[..cut]).is_err(), "cut at {cut}");
        }
        let mut wr = Vec::new();
        put_tag(&mut wr, 1, VARINT);
        put_varint(&mut wr, 1);
        assert!(count_latest(&wr).is_err());
        let _ = LEN;
    }

    #[test]
    fn samples_in_any_encoding() {
        // Timestamp before value, a padded varint, an unknown field: all fine.
        let mut s = Vec::new();
        put_tag(&mut s, 2, VARINT);
        s.extend_from_slice(&[0x81, 0x80, 0x00]);
        put_tag(&mut s, 1, FIXED64);
        s.extend_from_slice(&[0; 8]);
        put_tag(&mut s, 5, VARINT);
        put_varint(&mut s, 1);
        let mut ts = Vec::new();
        put_len_field(&mut ts, 2, &s);
        put_len_field(&mut ts, 2, &[]); // an empty sample is a sample
        assert_eq!(count_latest(&request(&[ts])), Ok(2));
    }

    #[test]
    fn native_histograms() {
        // 2 (count, sum) + zero bucket + positive buckets above zero.
        // deltas 1, 1, -2, 3 -> counts 1, 2, 0, 3: three above zero.
        let h = int_histogram(4, (&[(0, 2), (3, 2)], &[1, 1, -2, 3]), (&[], &[]));
        let wr = request(&[series(&[("__name__", "rpc")], 0, std::slice::from_ref(&h))]);
        assert_eq!(count_latest(&wr), Ok(2 + 1 + 3));
        // Older releases ignore histograms.
        assert_eq!(count(&wr, &Dialect::V1_79_5), Ok(0));
        assert_eq!(count(&wr, &Dialect::for_version(1, 142, 0)), Ok(0));

        // No zero bucket count, negative side: deltas 2, -1 -> 2, 1.
        let h = int_histogram(0, (&[], &[]), (&[(-1, 2)], &[2, -1]));
        let wr = request(&[series(&[("__name__", "rpc")], 0, &[h.clone(), h])]);
        assert_eq!(count_latest(&wr), Ok(2 * (2 + 2)));
    }

    #[test]
    fn histogram_spans_longer_than_their_deltas_stop_early() {
        let h = int_histogram(0, (&[(0, u32::MAX)], &[1, 0, 0]), (&[], &[]));
        let wr = request(&[series(&[("__name__", "x")], 0, &[h])]);
        assert_eq!(count_latest(&wr), Ok(2 + 3));
    }

    #[test]
    fn unnamed_histograms_are_dropped_but_validated() {
        let h = int_histogram(1, (&[(0, 1)], &[1]), (&[], &[]));
        let wr = request(&[series(&[("job", "x")], 0, std::slice::from_ref(&h))]);
        assert_eq!(count_latest(&wr), Ok(0));
        let wr = request(&[series(
            &[("__name__", ""), ("__name__", "late")],
            0,
            std::slice::from_ref(&h),
        )]);
        assert_eq!(count_latest(&wr), Ok(0));
        let mut bad = h.clone();
        put_tag(&mut bad, 3, VARINT); // sum must be a double
        put_varint(&mut bad, 1);
        let wr = request(&[series(&[("job", "x")], 0, &[bad])]);
        assert!(count_latest(&wr).is_err());
    }

    #[test]
    fn samples_and_histograms_together_fail_the_body() {
        let h = int_histogram(0, (&[], &[]), (&[], &[]));
        let wr = request(&[series(&[("__name__", "x")], 1, &[h])]);
        assert_eq!(count_latest(&wr), Err(CountError::SamplesAndHistograms));
        assert_eq!(count(&wr, &Dialect::V1_79_5), Ok(1));
    }

    #[test]
    fn float_histograms_use_counts() {
        let mut h = Vec::new();
        put_tag(&mut h, 2, FIXED64);
        h.extend_from_slice(&3.0f64.to_bits().to_le_bytes());
        put_tag(&mut h, 7, FIXED64); // zero_count_float 0.5
        h.extend_from_slice(&0.5f64.to_bits().to_le_bytes());
        let mut s = Vec::new();
        put_tag(&mut s, 2, VARINT);
        put_varint(&mut s, 4);
        put_len_field(&mut h, 11, &s);
        let mut counts = Vec::new();
        for c in [1.0f64, 0.0, f64::NAN, 2.5] {
            counts.extend_from_slice(&c.to_bits().to_le_bytes());
        }
        put_len_field(&mut h, 13, &counts);
        // Deltas are ignored when counts are present.
        put_len_field(&mut h, 12, &[2, 2, 2, 2]);
        let wr = request(&[series(&[("__name__", "f")], 0, &[h])]);
        assert_eq!(count_latest(&wr), Ok(2 + 1 + 2));
    }
}
