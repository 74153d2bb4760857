//! Property tests: row counts of generated remote-write bodies, label enforcement on them, and no
//! panics on arbitrary input anywhere.

#[path = "support/rw_model.rs"]
mod model;

use model::{
    decode_label, fields, Exemplar, Histogram, Metadata, Number, Series, Span, Unknown,
    WriteRequest,
};
use proptest::prelude::*;
use tenantgate::ingest::relabel::{enforce_labels, RelabelError};
use tenantgate::ingest::rows::{
    count_rows, encoding_from_header, CountError, Counted, Dialect, Encoding, Format,
};

const NAMES: &[&str] = &[
    "__name__", "job", "instance", "team", "env", "a", "b", "zone", "",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(str::to_string),
        1 => "[a-z_][a-z0-9_]{0,6}",
    ]
}

fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((name(), ".{0,8}"), 0..6)
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        (0u64..4).prop_map(Number::Int),
        any::<u64>().prop_map(Number::Int),
        prop_oneof![
            Just(0.0),
            Just(-1.0),
            Just(f64::NAN),
            Just(2.5),
            any::<f64>()
        ]
        .prop_map(Number::Float),
    ]
}

fn spans() -> impl Strategy<Value = Vec<Span>> {
    proptest::collection::vec(
        (any::<i32>(), prop_oneof![4 => 0u32..6, 1 => any::<u32>()])
            .prop_map(|(offset, length)| Span { offset, length }),
        0..4,
    )
}

fn deltas() -> impl Strategy<Value = Vec<i64>> {
    proptest::collection::vec(prop_oneof![4 => -4i64..5, 1 => any::<i64>()], 0..10)
}

fn counts() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => proptest::collection::vec(prop_oneof![Just(0.0), Just(1.5), Just(-2.0), Just(f64::NAN), any::<f64>()], 0..10),
    ]
}

fn histogram() -> impl Strategy<Value = Histogram> {
    (
        (number(), any::<f64>(), -4i32..9, any::<f64>(), number()),
        (spans(), deltas(), counts(), spans(), deltas(), counts()),
        (0u64..4, any::<i64>(), any::<bool>()),
    )
        .prop_map(|(scalars, sides, tail)| {
            let (count, sum, schema, zero_threshold, zero_count) = scalars;
            let (
                negative_spans,
                negative_deltas,
                negative_counts,
                positive_spans,
                positive_deltas,
                positive_counts,
            ) = sides;
            let (reset_hint, timestamp, packed) = tail;
            Histogram {
                count,
                sum,
                schema,
                zero_threshold,
                zero_count,
                negative_spans,
                negative_deltas,
                negative_counts,
                positive_spans,
                positive_deltas,
                positive_counts,
                reset_hint,
                timestamp,
                packed,
            }
        })
}

/// Unknown fields with numbers the schema does not use at that level.
fn unknown(numbers: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = Vec<Unknown>> {
    let field = (
        numbers,
        0usize..4,
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(number, kind, bytes)| {
            let (wire_type, payload) = match kind {
                0 => {
                    let mut p = Vec::new();
                    model::varint(
                        &mut p,
                        bytes
                            .iter()
                            .fold(0u64, |v, b| v.wrapping_mul(31) ^ u64::from(*b)),
                    );
                    (0, p)
                }
                1 => (
                    1,
                    bytes
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(0))
                        .take(8)
                        .collect(),
                ),
                2 => (2, bytes),
                _ => (
                    5,
                    bytes
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(0))
                        .take(4)
                        .collect(),
                ),
            };
            Unknown {
                number,
                wire_type,
                payload,
            }
        });
    proptest::collection::vec(field, 0..3)
}

fn series() -> impl Strategy<Value = Series> {
    let exemplar =
        (labels(), any::<f64>(), any::<i64>()).prop_map(|(labels, value, timestamp)| Exemplar {
            labels,
            value,
            timestamp,
        });
    (
        labels(),
        proptest::collection::vec((any::<f64>(), any::<i64>()), 0..5),
        proptest::collection::vec(exemplar, 0..2),
        prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(histogram(), 1..3)],
        unknown(5..=40),
        any::<bool>(),
    )
        .prop_map(
            |(labels, mut samples, exemplars, histograms, unknown, keep_both)| {
                // Mostly keep series valid for newer releases (samples or histograms, not both).
                if !histograms.is_empty() && !keep_both {
                    samples.clear();
                }
                Series {
                    labels,
                    samples,
                    exemplars,
                    histograms,
                    unknown,
                }
            },
        )
}

fn write_request() -> impl Strategy<Value = WriteRequest> {
    let metadata =
        (0u32..8, name(), ".{0,6}", "[a-z]{0,3}").prop_map(|(kind, family, help, unit)| Metadata {
            kind,
            family,
            help,
            unit,
        });
    (
        proptest::collection::vec(series(), 0..8),
        proptest::collection::vec(metadata, 0..3),
        unknown(4..=40).prop_map(|u| u.into_iter().filter(|f| f.number != 3).collect()),
    )
        .prop_map(|(series, metadata, unknown)| WriteRequest {
            series,
            metadata,
            unknown,
        })
}

const DIALECTS: [Dialect; 3] = [
    Dialect::LATEST,
    Dialect::V1_79_5,
    Dialect::for_version(1, 142, 0),
];

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn remote_write_counts_match_the_model(wr in write_request()) {
        let encoded = wr.encode();
        let body = snappy(&encoded);
        for dialect in &DIALECTS {
            let got = count_rows(dialect, Format::RemoteWrite, Encoding::Snappy, None, &body, 1 << 24);
            match wr.expected_rows(dialect) {
                Some(rows) => prop_assert_eq!(got, Ok(Counted { rows, exact: true })),
                None => prop_assert_eq!(got, Err(CountError::SamplesAndHistograms)),
            }
        }
        let zstd = zstd::bulk::compress(&encoded, 1).unwrap();
        let d = Dialect::LATEST;
        let enc = encoding_from_header(Some("zstd"), Format::RemoteWrite, &d).unwrap();
        let got = count_rows(&d, Format::RemoteWrite, enc, None, &zstd, 1 << 24).map(|c| c.rows);
        prop_assert_eq!(got.ok(), wr.expected_rows(&d));
        // A zstd body under a snappy header still counts: the backend falls back.
        let got = count_rows(&d, Format::RemoteWrite, Encoding::Snappy, None, &zstd, 1 << 24).map(|c| c.rows);
        prop_assert_eq!(got.ok(), wr.expected_rows(&d));
    }

    #[test]
    fn enforced_labels_replace_sort_and_keep_the_rest(
        wr in write_request(),
        enforced in proptest::collection::btree_map(
            proptest::sample::select(&NAMES[..NAMES.len() - 1]).prop_map(str::to_string),
            prop_oneof![4 => ".{1,6}", 1 => Just(String::new())],
            0..4,
        ),
    ) {
        let enforced: Vec<(String, String)> = enforced.into_iter().collect();
        let input = wr.encode();
        let result = enforce_labels(&snappy(&input), &enforced, 1 << 24);

        // What each series must end up with.
        let mut expected = Vec::new();
        let mut duplicate = None;
        for s in &wr.series {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(n, _)| !enforced.iter().any(|(e, _)| e == n))
                .cloned()
                .chain(enforced.iter().filter(|(_, v)| !v.is_empty()).cloned())
                .collect();
            labels.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
                duplicate.get_or_insert(w[0].0.clone());
            }
            expected.push(labels);
        }
        if duplicate.is_some() {
            prop_assert!(matches!(result, Err(RelabelError::DuplicateLabel(_))), "{:?}", result);
            return Ok(());
        }
        let output = snap::raw::Decoder::new().decompress_vec(&result.unwrap()).unwrap();

        let before = fields(&input);
        let after = fields(&output);
        prop_assert_eq!(before.len(), after.len());
        let mut series_index = 0;
        for ((bn, _, braw), (an, apayload, araw)) in before.iter().zip(&after) {
            prop_assert_eq!(bn, an);
            if *bn != 1 {
                prop_assert_eq!(braw, araw);
                continue;
            }
            let old: Vec<_> = fields(&before.iter().filter(|f| f.0 == 1).nth(series_index).unwrap().1);
            let new = fields(apayload);
            let labels: Vec<(String, String)> =
                new.iter().filter(|f| f.0 == 1).map(|f| decode_label(&f.1)).collect();
            prop_assert_eq!(&labels, &expected[series_index]);
            // Labels come first, then every other field unchanged and in order.
            let first_other = new.iter().position(|f| f.0 != 1).unwrap_or(new.len());
            prop_assert!(new[first_other..].iter().all(|f| f.0 != 1));
            let old_rest: Vec<_> = old.iter().filter(|f| f.0 != 1).map(|f| &f.2).collect();
            let new_rest: Vec<_> = new.iter().filter(|f| f.0 != 1).map(|f| &f.2).collect();
            prop_assert_eq!(old_rest, new_rest);
            series_index += 1;
        }

        // Samples do not change (histogram rows may: enforcing `__name__` names unnamed series).
        let d = Dialect::V1_79_5;
        let rows_in = count_rows(&d, Format::RemoteWrite, Encoding::Snappy, None, &snappy(&input), 1 << 24);
        let rows_out = count_rows(&d, Format::RemoteWrite, Encoding::Snappy, None, &snappy(&output), 1 << 24);
        prop_assert_eq!(rows_in, rows_out);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        csv_format in ".{0,40}",
    ) {
        let formats = [
            Format::RemoteWrite, Format::PrometheusText, Format::JsonLines, Format::Influx,
            Format::Csv, Format::Native, Format::Other,
        ];
        let snappied = snappy(&bytes);
        let encodings = [
            (Encoding::Identity, &bytes),
            (Encoding::Snappy, &bytes),
            (Encoding::Snappy, &snappied),
            (Encoding::Zstd, &bytes),
            (Encoding::Gzip, &bytes),
            (Encoding::Deflate, &bytes),
        ];
        for dialect in &DIALECTS {
            for format in formats {
                for (encoding, body) in &encodings {
                    for csv in [Some(csv_format.as_str()), Some("1:metric:m,2:time:rfc3339,3:label:l"), None] {
                        let _ = count_rows(dialect, format, *encoding, csv, body, 1 << 20);
                    }
                }
                // Readable text from the same bytes, so the line parsers see structure.
                const ALPHABET: &[u8] = b" {}\",=\\#\n\t.e-+:[]0123456789aNIiu'";
                let text: Vec<u8> = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()]).collect();
                let _ = count_rows(dialect, format, Encoding::Identity, Some("1:metric:m,2:metric:n,3:time:unix_ms"), &text, 1 << 20);
            }
        }
        let _ = enforce_labels(&bytes, &[("team".into(), "x".into())], 1 << 20);
        let _ = enforce_labels(&snappied, &[("team".into(), "x".into())], 1 << 20);
    }

    #[test]
    fn mutated_remote_write_bodies_never_panic(wr in write_request(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut encoded = wr.encode();
        if encoded.is_empty() {
            return Ok(());
        }
        for (at, b) in flips {
            let i = at % encoded.len();
            encoded[i] = b;
        }
        for dialect in &DIALECTS {
            let _ = count_rows(dialect, Format::RemoteWrite, Encoding::Snappy, None, &snappy(&encoded), 1 << 24);
        }
        let _ = enforce_labels(&snappy(&encoded), &[("team".into(), "x".into())], 1 << 24);
    }
}
