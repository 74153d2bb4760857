//! Forcing a token's labels onto every series of a remote-write body, for receivers that do not
//! understand VictoriaMetrics' `extra_label` argument.
//!
//! Against VictoriaMetrics, tenantgate restricts writes by adding `extra_label=name=value` to the
//! upstream URL and the backend sets those labels on every row. Prometheus (with
//! `--web.enable-remote-write-receiver`), Thanos Receive, Mimir and Cortex have no such argument, so
//! for them the gateway rewrites the body instead: in every `TimeSeries` the sender's labels with an
//! enforced name are dropped, the enforced labels are added, and the labels are written sorted by
//! name, because Mimir and Cortex refuse unsorted label sets and Prometheus sorts them anyway
//! (`prompb/codec.go` `labelProtosToLabels`). A series that would carry two labels with one name is
//! refused: Prometheus drops such series silently (`storage/remote/write_handler.go`
//! `HasDuplicateLabelNames`), Mimir and Cortex fail the request, and either way the sender should
//! hear about it. Label names and values must be UTF-8, as Prometheus requires.
//!
//! The rewrite works on the protobuf wire format, not on decoded structs, so everything else stays
//! byte for byte: samples, exemplars, native histograms, unknown fields of `TimeSeries` and of each
//! `Label`, and every `WriteRequest` field other than the series, among them metadata (field 3).
//! Metadata is left alone on purpose: it describes a metric family by name (type, help, unit) and
//! carries no series labels, so there is nothing in it to enforce, and the families it names are
//! exactly the ones the rewritten series still have. Within a series the labels are written first
//! and the other fields follow in their original order; protobuf gives field order no meaning.
//!
//! An enforced label with an empty value only removes the sender's label of that name: in the
//! Prometheus data model an empty value is the same as no label, and some receivers refuse empty
//! values.
//!
//! Remote Write 2.0 (`io.prometheus.write.v2.Request`, with labels as references into a symbol
//! table) has a different layout and is out of scope: it can only be told apart by its
//! `Content-Type`, so the caller must check [`is_remote_write_v1`] and refuse the rest (HTTP 415)
//! before calling [`enforce_labels`].

use std::fmt;
use std::ops::Range;

use crate::ingest::decode::{self, DecodeError};
use crate::ingest::protowire::{self, Reader, WireError};

/// Why a body could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelabelError {
    /// The body is not a snappy block, or decodes to more than the limit.
    Decode(DecodeError),
    /// The decoded body is not a valid `WriteRequest`.
    Protobuf(WireError),
    /// A label name or value is not UTF-8.
    InvalidUtf8,
    /// A series would carry this label name twice.
    DuplicateLabel(String),
    /// The enforced set itself is unusable: an empty name, or a name given twice.
    InvalidEnforced(String),
    /// The rewritten body is too large to snappy-encode (over 4 GiB).
    Encode,
}

impl fmt::Display for RelabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelabelError::Decode(e) => write!(f, "cannot decode remote-write body: {e}"),
            RelabelError::Protobuf(e) => write!(f, "invalid remote-write body: {e}"),
            RelabelError::InvalidUtf8 => f.write_str("a label name or value is not valid UTF-8"),
            RelabelError::DuplicateLabel(name) => {
                write!(f, "a series has more than one label named {name:?}")
            }
            RelabelError::InvalidEnforced(why) => write!(f, "invalid enforced labels: {why}"),
            RelabelError::Encode => f.write_str("rewritten body too large to encode"),
        }
    }
}

impl std::error::Error for RelabelError {}

impl From<WireError> for RelabelError {
    fn from(e: WireError) -> RelabelError {
        RelabelError::Protobuf(e)
    }
}

/// Whether a `Content-Type` announces remote write 1.0 (`prometheus.WriteRequest`): none at all,
/// `application/x-protobuf`, or that with `proto=prometheus.WriteRequest`. Anything else, notably
/// `proto=io.prometheus.write.v2.Request`, is a body [`enforce_labels`] cannot handle.
pub fn is_remote_write_v1(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type.map(str::trim).filter(|ct| !ct.is_empty()) else {
        return true;
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return false;
    }
    parts.all(|param| {
        let Some((key, value)) = param.split_once('=') else {
            return param.trim().is_empty();
        };
        if !key.trim().eq_ignore_ascii_case("proto") {
            return true;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        value == "prometheus.WriteRequest"
    })
}

/// The labels to enforce, validated, sorted and encoded once (per token, ideally) so each body
/// only copies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    /// `(name, encoded TimeSeries.labels field)`, sorted by name; empty values have no field.
    labels: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first bytes of the names, so most sender labels are told apart without a comparison.
    first_bytes: [bool; 256],
}

impl Enforced {
    pub fn new(labels: &[(String, String)]) -> Result<Enforced, RelabelError> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(labels.len());
        for (name, value) in labels {
            if name.is_empty() {
                return Err(RelabelError::InvalidEnforced(
                    "empty label name".to_string(),
                ));
            }
            let mut label = Vec::with_capacity(name.len() + value.len() + 4);
            protowire::put_len_field(&mut label, 1, name.as_bytes());
            protowire::put_len_field(&mut label, 2, value.as_bytes());
            let mut field = Vec::with_capacity(label.len() + 3);
            if !value.is_empty() {
                protowire::put_len_field(&mut field, 1, &label);
            }
            out.push((name.as_bytes().to_vec(), field));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = out.windows(2).find(|w| matches!(w, [a, b] if a.0 == b.0)) {
            let name = w
                .first()
                .map(|l| String::from_utf8_lossy(&l.0).into_owned());
            return Err(RelabelError::InvalidEnforced(format!(
                "label {:?} given twice",
                name.unwrap_or_default()
            )));
        }
        let mut first_bytes = [false; 256];
        for (name, _) in &out {
            if let Some(slot) = name
                .first()
                .and_then(|b| first_bytes.get_mut(usize::from(*b)))
            {
                *slot = true;
            }
        }
        Ok(Enforced {
            labels: out,
            first_bytes,
        })
    }

    /// [`enforce_labels`] with these labels.
    pub fn enforce(&self, body: &[u8], max_decoded: usize) -> Result<Vec<u8>, RelabelError> {
        let mut decoded = Vec::new();
        decode::snappy_block(body, max_decoded, &mut decoded).map_err(RelabelError::Decode)?;
        let mut out = Vec::new();
        enforce_labels_decoded(&decoded, self, &mut out)?;
        snap::raw::Encoder::new()
            .compress_vec(&out)
            .map_err(|_| RelabelError::Encode)
    }

    fn is_enforced(&self, name: &[u8]) -> bool {
        let candidate = name
            .first()
            .and_then(|b| self.first_bytes.get(usize::from(*b)))
            .copied()
            .unwrap_or(true);
        candidate
            && self
                .labels
                .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                .is_ok()
    }
}

/// Rewrites a remote-write 1.0 body (a snappy block) so every series carries exactly `labels`,
/// returning the new snappy block. The decoded body may not exceed `max_decoded` bytes.
pub fn enforce_labels(
    body: &[u8],
    labels: &[(String, String)],
    max_decoded: usize,
) -> Result<Vec<u8>, RelabelError> {
    Enforced::new(labels)?.enforce(body, max_decoded)
}

/// A sender label kept in a series: its name (for sorting) and where its encoded `labels` field
/// lies in the series.
type Kept<'a> = (&'a [u8], Range<usize>);

/// What a series scan leaves behind, reused from series to series so a body allocates it once.
#[derive(Default)]
struct Scratch<'a> {
    kept: Vec<Kept<'a>>,
    /// Where the series' fields other than labels lie, adjacent ones merged (usually one range).
    others: Vec<Range<usize>>,
}

/// [`enforce_labels`] on an already decoded `WriteRequest`, appending the rewritten (uncompressed)
/// message to `out`; after an error `out` holds a partial message to discard. Useful when the
/// caller decodes the body anyway, e.g. to count its rows with `rows::count_decoded_rows`.
pub fn enforce_labels_decoded(
    decoded: &[u8],
    enforced: &Enforced,
    out: &mut Vec<u8>,
) -> Result<(), RelabelError> {
    let extra: usize = enforced.labels.iter().map(|(_, f)| f.len()).sum();
    out.reserve(decoded.len() + decoded.len() / 8 + extra);
    let mut scratch = Scratch::default();
    let mut fields = Reader::new(decoded);
    while let Some(f) = fields.next_field()? {
        if f.number == 1 {
            rewrite_series(f.bytes()?, enforced, &mut scratch, out)?;
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(())
}

/// A field of a series: its number, its payload when it is a label (else empty), and where it ends.
type SeriesField<'a> = (u32, &'a [u8], usize);

/// The field of a series at `pos`, or `None` at the end.
#[inline]
fn series_field(ts: &[u8], pos: usize) -> Result<Option<SeriesField<'_>>, RelabelError> {
    // Most fields of a series are short length-delimited ones (labels); read those inline.
    if let Some((tag, payload, end)) = protowire::short_len_field(ts, pos) {
        return Ok(Some((u32::from(tag >> 3), payload, end)));
    }
    let mut fields = Reader::at(ts, pos);
    let Some(f) = fields.next_field()? else {
        return Ok(None);
    };
    let payload = if f.number == 1 { f.bytes()? } else { &[] };
    Ok(Some((f.number, payload, fields.position())))
}

fn rewrite_series<'a>(
    ts: &'a [u8],
    enforced: &Enforced,
    scratch: &mut Scratch<'a>,
    out: &mut Vec<u8>,
) -> Result<(), RelabelError> {
    let Scratch { kept, others } = scratch;
    kept.clear();
    others.clear();
    // One scan: the sender's labels not enforced, in their order, noting whether that order is
    // already sorted (Prometheus senders sort; vmagent keeps the scrape's order), and the ranges of
    // everything else.
    let mut sorted = true;
    let mut pos = 0;
    while pos < ts.len() {
        let Some((number, payload, end)) = series_field(ts, pos)? else {
            break;
        };
        let range = pos..end;
        pos = end;
        if number != 1 {
            match others.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => others.push(range),
            }
            continue;
        }
        let name = label_name(payload)?;
        if enforced.is_enforced(name) {
            continue;
        }
        if let Some((last, _)) = kept.last() {
            match cmp_names(last, name) {
                std::cmp::Ordering::Greater => sorted = false,
                std::cmp::Ordering::Equal => return Err(duplicate(name)),
                std::cmp::Ordering::Less => {}
            }
        }
        kept.push((name, range));
    }
    if !sorted {
        kept.sort_unstable_by(|a, b| cmp_names(a.0, b.0));
        if let Some(w) = kept.windows(2).find(|w| matches!(w, [a, b] if a.0 == b.0)) {
            return Err(duplicate(w.first().map_or(&[][..], |k| k.0)));
        }
    }

    let len = |r: &Range<usize>| r.end - r.start;
    let series_len = kept.iter().map(|(_, r)| len(r)).sum::<usize>()
        + enforced.labels.iter().map(|(_, f)| f.len()).sum::<usize>()
        + others.iter().map(len).sum::<usize>();
    protowire::put_tag(out, 1, protowire::LEN);
    // usize always fits u64 on the platforms Rust supports.
    protowire::put_varint(out, series_len as u64);

    // The labels sorted, the enforced ones merged in (no kept name is enforced, so no name can
    // meet itself here), then the other fields in their order. Neighbouring ranges of the sender's
    // series are copied in one go: a sorted sender's labels are mostly one run.
    let mut run = Run::new(ts);
    let mut theirs = kept.iter().peekable();
    for (name, field) in enforced.labels.iter().filter(|(_, f)| !f.is_empty()) {
        while let Some((_, r)) = theirs.next_if(|(n, _)| cmp_names(n, name).is_lt()) {
            run.copy(r, out);
        }
        run.flush(out);
        out.extend_from_slice(field);
    }
    for (_, r) in theirs {
        run.copy(r, out);
    }
    for r in others.iter() {
        run.copy(r, out);
    }
    run.flush(out);
    Ok(())
}

fn duplicate(name: &[u8]) -> RelabelError {
    RelabelError::DuplicateLabel(String::from_utf8_lossy(name).into_owned())
}

/// Copies ranges of one source buffer to `out`, joining a range that starts where the last ended.
struct Run<'a> {
    src: &'a [u8],
    pending: Range<usize>,
}

impl<'a> Run<'a> {
    fn new(src: &'a [u8]) -> Run<'a> {
        Run { src, pending: 0..0 }
    }

    #[inline]
    fn copy(&mut self, r: &Range<usize>, out: &mut Vec<u8>) {
        if r.start != self.pending.end {
            self.flush(out);
            self.pending.start = r.start;
        }
        self.pending.end = r.end;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.src.get(self.pending.clone()).unwrap_or_default());
        self.pending = self.pending.end..self.pending.end;
    }
}

/// Byte order of label names, deciding on the first byte inline: label names mostly differ there,
/// and a general slice comparison is a `memcmp` call.
#[inline]
fn cmp_names(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match a.first().cmp(&b.first()) {
        std::cmp::Ordering::Equal => a.cmp(b),
        other => other,
    }
}

/// The name of a `Label` (its last `name` field), checking that name and value are UTF-8.
#[inline]
fn label_name(buf: &[u8]) -> Result<&[u8], RelabelError> {
    // The usual encoding, name then value, each shorter than 128 bytes; an all-ASCII message is
    // valid UTF-8 throughout (its tags and lengths are ASCII bytes too).
    if let [0x0a, n, rest @ ..] = buf {
        let n = usize::from(*n);
        if let (Some(name), Some([0x12, m, value @ ..])) = (rest.get(..n), rest.get(n..)) {
            if n < 0x80 && *m < 0x80 && value.len() == usize::from(*m) && buf.is_ascii() {
                return Ok(name);
            }
        }
    }
    let mut name: &[u8] = &[];
    let mut fields = Reader::new(buf);
    while let Some(f) = fields.next_field()? {
        match f.number {
            1 => name = f.bytes()?,
            2 => {
                std::str::from_utf8(f.bytes()?).map_err(|_| RelabelError::InvalidUtf8)?;
            }
            _ => {}
        }
    }
    std::str::from_utf8(name).map_err(|_| RelabelError::InvalidUtf8)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::protowire::{put_len_field, put_tag, put_varint, FIXED64, VARINT};

    fn label(name: &str, value: &str) -> Vec<u8> {
        let mut l = Vec::new();
        put_len_field(&mut l, 1, name.as_bytes());
        put_len_field(&mut l, 2, value.as_bytes());
        l
    }

    fn sample(v: f64, t: u64) -> Vec<u8> {
        let mut s = Vec::new();
        put_tag(&mut s, 1, FIXED64);
        s.extend_from_slice(&v.to_bits().to_le_bytes());
        put_tag(&mut s, 2, VARINT);
        put_varint(&mut s, t);
        s
    }

    fn series(labels: &[(&str, &str)], extra: &[u8]) -> Vec<u8> {
        let mut ts = Vec::new();
        for (n, v) in labels {
            put_len_field(&mut ts, 1, &label(n, v));
        }
        put_len_field(&mut ts, 2, &sample(1.0, 1000));
        ts.extend_from_slice(extra);
        ts
    }

    fn request(series: &[Vec<u8>]) -> Vec<u8> {
        let mut wr = Vec::new();
        for s in series {
            put_len_field(&mut wr, 1, s);
        }
        wr
    }

    fn labels_of(ts: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut r = Reader::new(ts);
        while let Some(f) = r.next_field().unwrap() {
            if f.number == 1 {
                let mut lr = Reader::new(f.bytes().unwrap());
                let (mut n, mut v) = (String::new(), String::new());
                while let Some(lf) = lr.next_field().unwrap() {
                    let s = String::from_utf8(lf.bytes().unwrap().to_vec()).unwrap();
                    match lf.number {
                        1 => n = s,
                        2 => v = s,
                        _ => {}
                    }
                }
                out.push((n, v));
            }
        }
        out
    }

    fn series_of(wr: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut r = Reader::new(wr);
        while let Some(f) = r.next_field().unwrap() {
            if f.number == 1 {
                out.push(f.bytes().unwrap().to_vec());
            }
        }
        out
    }

    fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn rewrite(wr: &[u8], labels: &[(&str, &str)]) -> Result<Vec<u8>, RelabelError> {
        let enforced = Enforced::new(&owned(labels))?;
        let mut out = Vec::new();
        enforce_labels_decoded(wr, &enforced, &mut out)?;
        Ok(out)
    }

    #[test]
    fn adds_replaces_and_sorts() {
        let wr = request(&[
            series(&[("__name__", "up"), ("team", "evil"), ("job", "x")], &[]),
            series(&[("zone", "b"), ("__name__", "down")], &[]),
        ]);
        let out = rewrite(&wr, &[("team", "dev"), ("env", "prod")]).unwrap();
        let s = series_of(&out);
        assert_eq!(
            labels_of(&s[0]),
            owned(&[
                ("__name__", "up"),
                ("env", "prod"),
                ("job", "x"),
                ("team", "dev")
            ])
        );
        assert_eq!(
            labels_of(&s[1]),
            owned(&[
                ("__name__", "down"),
                ("env", "prod"),
                ("team", "dev"),
                ("zone", "b")
            ])
        );
    }

    #[test]
    fn keeps_everything_else_byte_for_byte() {
        let mut extra = Vec::new();
        let mut exemplar = Vec::new();
        put_len_field(&mut exemplar, 1, &label("trace_id", "t1"));
        put_len_field(&mut extra, 3, &exemplar);
        put_len_field(
            &mut extra,
            4,
            b"\x08\x05\x19\x00\x00\x00\x00\x00\x00\xf0\x3f",
        );
        put_tag(&mut extra, 42, VARINT);
        put_varint(&mut extra, 7);
        let mut wr = request(&[series(&[("__name__", "m")], &extra)]);
        let mut metadata = Vec::new();
        put_tag(&mut metadata, 1, VARINT);
        put_varint(&mut metadata, 1);
        put_len_field(&mut metadata, 2, b"m");
        put_len_field(&mut wr, 3, &metadata);
        put_tag(&mut wr, 9, FIXED64);
        wr.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);

        let out = rewrite(&wr, &[("team", "dev")]).unwrap();
        let mut expected_series = Vec::new();
        put_len_field(&mut expected_series, 1, &label("__name__", "m"));
        put_len_field(&mut expected_series, 1, &label("team", "dev"));
        put_len_field(&mut expected_series, 2, &sample(1.0, 1000));
        expected_series.extend_from_slice(&extra);
        let mut expected = Vec::new();
        put_len_field(&mut expected, 1, &expected_series);
        put_len_field(&mut expected, 3, &metadata);
        put_tag(&mut expected, 9, FIXED64);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(out, expected);
    }

    #[test]
    fn no_labels_to_enforce_only_sorts() {
        let wr = request(&[series(&[("b", "1"), ("a", "2")], &[])]);
        let out = rewrite(&wr, &[]).unwrap();
        assert_eq!(
            labels_of(&series_of(&out)[0]),
            owned(&[("a", "2"), ("b", "1")])
        );
        let sorted = request(&[series(&[("a", "2"), ("b", "1")], &[])]);
        assert_eq!(rewrite(&sorted, &[]).unwrap(), sorted);
    }

    #[test]
    fn empty_enforced_value_removes_the_label() {
        let wr = request(&[series(&[("__name__", "m"), ("team", "x")], &[])]);
        let out = rewrite(&wr, &[("team", "")]).unwrap();
        assert_eq!(labels_of(&series_of(&out)[0]), owned(&[("__name__", "m")]));
    }

    #[test]
    fn refuses_duplicates_and_bad_utf8() {
        let wr = request(&[series(&[("a", "1"), ("a", "2")], &[])]);
        assert_eq!(
            rewrite(&wr, &[]),
            Err(RelabelError::DuplicateLabel("a".into()))
        );
        // Duplicates of an enforced name are fine: they are all replaced.
        assert!(rewrite(&wr, &[("a", "3")]).is_ok());

        let mut bad = Vec::new();
        put_len_field(&mut bad, 1, b"n");
        put_len_field(&mut bad, 2, b"\xff");
        let mut ts = Vec::new();
        put_len_field(&mut ts, 1, &bad);
        assert_eq!(
            rewrite(&request(&[ts]), &[]),
            Err(RelabelError::InvalidUtf8)
        );

        assert!(matches!(
            Enforced::new(&owned(&[("a", "1"), ("a", "2")])),
            Err(RelabelError::InvalidEnforced(_))
        ));
        assert!(matches!(
            Enforced::new(&owned(&[("", "1")])),
            Err(RelabelError::InvalidEnforced(_))
        ));
    }

    #[test]
    fn refuses_malformed_bodies() {
        let wr = request(&[series(&[("a", "1")], &[])]);
        for cut in 1..wr.len() {
            assert!(rewrite(&wr[..cut], &[("t", "v")]).is_err(), "cut at {cut}");
        }
        let mut wrong = Vec::new();
        put_tag(&mut wrong, 1, VARINT);
        put_varint(&mut wrong, 3);
        assert!(rewrite(&wrong, &[]).is_err());
        assert!(matches!(
            enforce_labels(b"\xff\xff\xff\xff\x0f", &[], 1 << 20),
            Err(RelabelError::Decode(DecodeError::TooLarge { .. }))
        ));
        assert!(matches!(
            enforce_labels(b"", &[], 1 << 20),
            Err(RelabelError::Decode(DecodeError::Snappy))
        ));
    }

    #[test]
    fn snappy_round_trip() {
        let wr = request(&[series(&[("__name__", "m")], &[])]);
        let body = snap::raw::Encoder::new().compress_vec(&wr).unwrap();
        let out = enforce_labels(&body, &owned(&[("team", "dev")]), 1 << 20).unwrap();
        let decoded = snap::raw::Decoder::new().decompress_vec(&out).unwrap();
        assert_eq!(
            labels_of(&series_of(&decoded)[0]),
            owned(&[("__name__", "m"), ("team", "dev")])
        );
    }

    #[test]
    fn content_types() {
        assert!(is_remote_write_v1(None));
        assert!(is_remote_write_v1(Some("")));
        assert!(is_remote_write_v1(Some("application/x-protobuf")));
        assert!(is_remote_write_v1(Some(
            "Application/X-Protobuf; proto=prometheus.WriteRequest"
        )));
        assert!(is_remote_write_v1(Some(
            "application/x-protobuf;proto=\"prometheus.WriteRequest\""
        )));
        assert!(!is_remote_write_v1(Some(
            "application/x-protobuf;proto=io.prometheus.write.v2.Request"
        )));
        assert!(!is_remote_write_v1(Some("application/json")));
        assert!(!is_remote_write_v1(Some("application/x-protobuf;proto=")));
    }
}
