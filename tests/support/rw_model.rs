//! Test support: a small `prometheus.WriteRequest` model with its own encoder and decoder, written
//! independently of the crate's wire walker so the tests do not check that code against itself,
//! plus a seeded random generator for the differential tests.

#![allow(dead_code)]

use tenantgate::ingest::rows::Dialect;

#[derive(Debug, Clone, PartialEq)]
pub enum Number {
    Int(u64),
    Float(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub count: Number,
    pub sum: f64,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: Number,
    pub negative_spans: Vec<Span>,
    pub negative_deltas: Vec<i64>,
    pub negative_counts: Vec<f64>,
    pub positive_spans: Vec<Span>,
    pub positive_deltas: Vec<i64>,
    pub positive_counts: Vec<f64>,
    pub reset_hint: u64,
    pub timestamp: i64,
    /// Encode the repeated scalars packed (the proto3 default) or one field per value.
    pub packed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: i64,
}

/// An unknown field: number, and an already encoded value (wire type chosen by the generator).
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown {
    pub number: u32,
    pub wire_type: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(f64, i64)>,
    pub exemplars: Vec<Exemplar>,
    pub histograms: Vec<Histogram>,
    pub unknown: Vec<Unknown>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub kind: u32,
    pub family: String,
    pub help: String,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteRequest {
    pub series: Vec<Series>,
    pub metadata: Vec<Metadata>,
    pub unknown: Vec<Unknown>,
}

// ---- encoding ----

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

pub fn bytes_field(out: &mut Vec<u8>, field: u32, payload: &[u8]) {
    tag(out, field, 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn double_field(out: &mut Vec<u8>, field: u32, v: f64) {
    tag(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 0);
    varint(out, v);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn encode_label(name: &str, value: &str) -> Vec<u8> {
    let mut l = Vec::new();
    bytes_field(&mut l, 1, name.as_bytes());
    bytes_field(&mut l, 2, value.as_bytes());
    l
}

fn encode_unknown(out: &mut Vec<u8>, u: &Unknown) {
    tag(out, u.number, u.wire_type);
    if u.wire_type == 2 {
        varint(out, u.payload.len() as u64);
    }
    out.extend_from_slice(&u.payload);
}

impl Histogram {
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::new();
        match self.count {
            Number::Int(v) => varint_field(&mut h, 1, v),
            Number::Float(v) => double_field(&mut h, 2, v),
        }
        double_field(&mut h, 3, self.sum);
        varint_field(&mut h, 4, u64::from(zigzag(i64::from(self.schema)) as u32));
        double_field(&mut h, 5, self.zero_threshold);
        match self.zero_count {
            Number::Int(v) => varint_field(&mut h, 6, v),
            Number::Float(v) => double_field(&mut h, 7, v),
        }
        let sides = [
            (
                8,
                9,
                10,
                &self.negative_spans,
                &self.negative_deltas,
                &self.negative_counts,
            ),
            (
                11,
                12,
                13,
                &self.positive_spans,
                &self.positive_deltas,
                &self.positive_counts,
            ),
        ];
        for (sf, df, cf, spans, deltas, counts) in sides {
            for s in spans {
                let mut m = Vec::new();
                varint_field(&mut m, 1, u64::from(zigzag(i64::from(s.offset)) as u32));
                varint_field(&mut m, 2, u64::from(s.length));
                bytes_field(&mut h, sf, &m);
            }
            if self.packed {
                if !deltas.is_empty() {
                    let mut p = Vec::new();
                    for d in deltas {
                        varint(&mut p, zigzag(*d));
                    }
                    bytes_field(&mut h, df, &p);
                }
                if !counts.is_empty() {
                    let mut p = Vec::new();
                    for c in counts {
                        p.extend_from_slice(&c.to_le_bytes());
                    }
                    bytes_field(&mut h, cf, &p);
                }
            } else {
                for d in deltas {
                    varint_field(&mut h, df, zigzag(*d));
                }
                for c in counts {
                    double_field(&mut h, cf, *c);
                }
            }
        }
        varint_field(&mut h, 14, self.reset_hint);
        varint_field(&mut h, 15, self.timestamp as u64);
        h
    }

    /// Samples VictoriaMetrics >= v1.143 makes of it (for a named series): `_count`, `_sum`, a
    /// non-empty zero bucket, and every bucket above zero until the deltas or counts run out.
    pub fn expected_rows(&self) -> u64 {
        let zero = match self.zero_count {
            Number::Int(v) => v as f64,
            Number::Float(v) => v,
        };
        let mut rows = 2 + u64::from(zero > 0.0);
        for (spans, deltas, counts) in [
            (
                &self.positive_spans,
                &self.positive_deltas,
                &self.positive_counts,
            ),
            (
                &self.negative_spans,
                &self.negative_deltas,
                &self.negative_counts,
            ),
        ] {
            let floats = !counts.is_empty();
            let mut idx = 0usize;
            let mut cum = 0i64;
            'side: for s in spans {
                for _ in 0..s.length {
                    let above = if floats {
                        let Some(c) = counts.get(idx) else {
                            break 'side;
                        };
                        *c > 0.0
                    } else {
                        let Some(d) = deltas.get(idx) else {
                            break 'side;
                        };
                        cum = cum.wrapping_add(*d);
                        cum > 0
                    };
                    idx += 1;
                    rows += u64::from(above);
                }
            }
        }
        rows
    }
}

impl Series {
    pub fn encode(&self) -> Vec<u8> {
        let mut ts = Vec::new();
        for (n, v) in &self.labels {
            bytes_field(&mut ts, 1, &encode_label(n, v));
        }
        for (v, t) in &self.samples {
            let mut s = Vec::new();
            double_field(&mut s, 1, *v);
            varint_field(&mut s, 2, *t as u64);
            bytes_field(&mut ts, 2, &s);
        }
        for e in &self.exemplars {
            let mut m = Vec::new();
            for (n, v) in &e.labels {
                bytes_field(&mut m, 1, &encode_label(n, v));
            }
            double_field(&mut m, 2, e.value);
            varint_field(&mut m, 3, e.timestamp as u64);
            bytes_field(&mut ts, 3, &m);
        }
        for h in &self.histograms {
            bytes_field(&mut ts, 4, &h.encode());
        }
        for u in &self.unknown {
            encode_unknown(&mut ts, u);
        }
        ts
    }

    fn name(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == "__name__")
            .map(|(_, v)| v.as_str())
    }
}

impl WriteRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut wr = Vec::new();
        for s in &self.series {
            bytes_field(&mut wr, 1, &s.encode());
        }
        for m in &self.metadata {
            let mut md = Vec::new();
            varint_field(&mut md, 1, u64::from(m.kind));
            bytes_field(&mut md, 2, m.family.as_bytes());
            bytes_field(&mut md, 4, m.help.as_bytes());
            bytes_field(&mut md, 5, m.unit.as_bytes());
            bytes_field(&mut wr, 3, &md);
        }
        for u in &self.unknown {
            encode_unknown(&mut wr, u);
        }
        wr
    }

    /// Rows VictoriaMetrics (`dialect`) counts, or `None` when it refuses the body.
    pub fn expected_rows(&self, dialect: &Dialect) -> Option<u64> {
        let mut rows = 0;
        for s in &self.series {
            rows += s.samples.len() as u64;
            if !dialect.native_histograms || s.histograms.is_empty() {
                continue;
            }
            if !s.samples.is_empty() {
                return None;
            }
            if s.name().is_some_and(|n| !n.is_empty()) {
                rows += s
                    .histograms
                    .iter()
                    .map(Histogram::expected_rows)
                    .sum::<u64>();
            }
        }
        Some(rows)
    }
}

// ---- decoding (for checking rewritten bodies) ----

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// `(field number, payload or value bytes, whole raw field)` of each field; panics on malformed
/// input, which the tests only feed it when they expect a valid body.
pub fn fields(buf: &[u8]) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos);
        let number = (key >> 3) as u32;
        let payload = match key & 7 {
            0 => {
                let s = pos;
                read_varint(buf, &mut pos);
                buf[s..pos].to_vec()
            }
            1 => {
                pos += 8;
                buf[pos - 8..pos].to_vec()
            }
            2 => {
                let len = read_varint(buf, &mut pos) as usize;
                pos += len;
                buf[pos - len..pos].to_vec()
            }
            5 => {
                pos += 4;
                buf[pos - 4..pos].to_vec()
            }
            w => panic!("wire type {w}"),
        };
        out.push((number, payload, buf[start..pos].to_vec()));
    }
    out
}

/// A label message's `(name, value)`, the last occurrence of each winning.
pub fn decode_label(buf: &[u8]) -> (String, String) {
    let (mut n, mut v) = (String::new(), String::new());
    for (number, payload, _) in fields(buf) {
        match number {
            1 => n = String::from_utf8(payload).unwrap(),
            2 => v = String::from_utf8(payload).unwrap(),
            _ => {}
        }
    }
    (n, v)
}

// ---- randomness ----

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
