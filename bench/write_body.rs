//! The remote-write body the benchmarks send: a real `prometheus.WriteRequest` as vmagent batches it
//! (one sample a series, ten labels each), snappy-compressed. Shared by `bench/mint_tokens.rs` (which
//! writes it for `bench/run`) and `benches/promql.rs` (which relabels it in process).

/// A `prometheus.WriteRequest` of `series` series (one sample each, at `now_ms`), snappy-compressed.
pub fn remote_write_body(series: usize, now_ms: i64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let ts = now_ms;
    let mut request = Vec::new();
    for i in 0..series {
        let mut ts_msg = Vec::new();
        let labels: Vec<(String, String)> = [
            ("__name__", format!("bench_metric_{}", i % 50)),
            ("instance", format!("host-{}:9100", i % 200)),
            ("job", "node".to_string()),
            ("cpu", format!("{}", i % 16)),
            ("mode", "user".to_string()),
            ("region", "eu-west-1".to_string()),
            ("zone", format!("eu-west-1{}", ["a", "b", "c"][i % 3])),
            ("env", "prod".to_string()),
            ("service", format!("svc-{}", i % 40)),
            ("series", i.to_string()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        for (name, value) in &labels {
            let mut label = Vec::new();
            field(&mut label, 1, name.as_bytes());
            field(&mut label, 2, value.as_bytes());
            field(&mut ts_msg, 1, &label);
        }
        let mut sample = vec![9]; // field 1 (value), fixed64
        sample.extend_from_slice(&(i as f64).to_le_bytes());
        sample.push(16); // field 2 (timestamp), varint
        varint(&mut sample, ts as u64);
        field(&mut ts_msg, 2, &sample);
        field(&mut request, 1, &ts_msg);
    }
    snap::raw::Encoder::new()
        .compress_vec(&request)
        .expect("snappy")
}
