//! The row counter against the real thing: starts VictoriaMetrics v1.79.5 (Debian's build) on
//! loopback, sends it bodies of every counted format, and checks that `vm_rows_inserted_total`
//! moved by exactly what `count_rows` says. Besides hand-picked bodies, each text format gets a few
//! hundred randomly mutated lines (seeded, so failures reproduce) to compare line-level parse
//! decisions, and remote write gets generated and corrupted bodies.
//!
//! VictoriaMetrics caches its `/metrics` page for a second (`lib/httpserver/metrics.go`), so
//! counters are read after a pause, and bodies are grouped to keep the pauses few: a group's total
//! is compared, and a group that differs is bisected down to the bodies responsible.
//!
//! The binary is the harness's (`scripts/deps`). v1.79.5 knows neither zstd remote write nor native
//! histograms; those are covered by unit and property tests only.

#[path = "common/mod.rs"]
mod harness;
#[path = "support/rw_model.rs"]
mod model;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::{Histogram, Number, Rng, Series, Span, Unknown, WriteRequest};
use tenantgate::ingest::rows::{count_rows, encoding_from_header, Counted, Dialect, Format};

const DIALECT: Dialect = Dialect::V1_79_5;
const MAX_DECODED: usize = 64 << 20;

struct Vm {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// The last value read of each `vm_rows_inserted_total{type}`, so a batch costs one read (and one
    /// pause for the `/metrics` cache) instead of two.
    last: std::cell::RefCell<std::collections::HashMap<String, u64>>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The harness's VictoriaMetrics binary (installed by scripts/deps; a missing one fails the test).
fn binary() -> PathBuf {
    PathBuf::from(harness::deps().get("TG_VICTORIA_METRICS"))
}

impl Vm {
    fn start(bin: &PathBuf) -> Vm {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("ingest-vm-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("vm.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let vm = Vm {
            child,
            port,
            dir,
            last: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = vm.request("GET", "/health", &[], b"") {
                return vm;
            }
            assert!(Instant::now() < deadline, "VictoriaMetrics did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One HTTP/1.0 exchange (so the answer is neither chunked nor kept alive).
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let status = std::str::from_utf8(resp.get(9..12).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body_at = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(resp.len(), |p| p + 4);
        Ok((status, resp[body_at..].to_vec()))
    }

    /// `vm_rows_inserted_total{type=vm_type}`, read once the `/metrics` cache has expired.
    fn rows_inserted(&self, vm_type: &str) -> u64 {
        std::thread::sleep(Duration::from_millis(1100));
        let (status, body) = self.request("GET", "/metrics", &[], b"").unwrap();
        assert_eq!(status, 200);
        let prefix = format!("vm_rows_inserted_total{{type=\"{vm_type}\"}} ");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| {
                l.strip_prefix(&prefix)
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap_or(0)
    }

    fn post(&self, target: &str, encoding: Option<&str>, body: &[u8]) -> u16 {
        let headers: Vec<(&str, &str)> = encoding
            .map(|e| ("Content-Encoding", e))
            .into_iter()
            .collect();
        self.request("POST", target, &headers, body).unwrap().0
    }

    /// Sends the bodies, returning their statuses and the rows the backend counted for all of them.
    fn send_all(
        &self,
        format: Format,
        target: &str,
        encoding: Option<&str>,
        bodies: &[Vec<u8>],
    ) -> (Vec<u16>, u64) {
        let vm_type = format.vm_type().unwrap();
        let known = self.last.borrow().get(vm_type).copied();
        let before = known.unwrap_or_else(|| self.rows_inserted(vm_type));
        let statuses = bodies
            .iter()
            .map(|b| self.post(target, encoding, b))
            .collect();
        let after = self.rows_inserted(vm_type);
        self.last.borrow_mut().insert(vm_type.to_string(), after);
        (statuses, after - before)
    }
}

fn csv_arg(target: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("format="))
        .map(|v| v.replace("%3A", ":").replace("%2C", ","))
}

fn ours(
    format: Format,
    target: &str,
    encoding: Option<&str>,
    body: &[u8],
) -> Result<Counted, String> {
    let enc = encoding_from_header(encoding, format, &DIALECT).map_err(|e| e.to_string())?;
    let csv = csv_arg(target);
    count_rows(&DIALECT, format, enc, csv.as_deref(), body, MAX_DECODED).map_err(|e| e.to_string())
}

/// Sends a body that must be accepted and counted exactly.
fn check(vm: &Vm, format: Format, target: &str, encoding: Option<&str>, body: &[u8]) -> u64 {
    let (statuses, vm_rows) = vm.send_all(format, target, encoding, &[body.to_vec()]);
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "{target}: status {statuses:?}"
    );
    let counted = ours(format, target, encoding, body).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(
        counted.rows,
        vm_rows,
        "{target} {encoding:?}: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    vm_rows
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).unwrap();
    gz.finish().unwrap()
}

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

const PROM_SEEDS: &[&str] = &[
    "m 1",
    "m{a=\"b\"} 2 1700000000000",
    "m{a=\"b\",c=\"d\"} 3.5e2",
    "  # HELP m some help",
    "# TYPE m counter",
    "m{a=\"x\\\"y\",b=\"\\\\\"} 1 1700000000",
    "m NaN",
    "m -Inf 1700000000123",
    "m 1 # comment",
    "m{} 1",
    "m { a = \"b\" } 1",
    "m\t1\t2",
    "{a=\"b\"} 1",
    "m .5",
    "m 5.",
    "m{a=1,b=\"c\"} 1",
    "m{\"q\"} 1",
    "foo_bar{job=\"x\",instance=\"y:9090\"} 12345.678 1700000000000",
];

const JSON_SEEDS: &[&str] = &[
    r#"{"metric":{"__name__":"m","job":"x"},"values":[1,2.5,-3e2],"timestamps":[1700000000000,1700000001000,1700000002000]}"#,
    r#"{"metric":{"a":1,"b":null},"values":[1],"timestamps":[1700000000000]}"#,
    r#"{"metric":{"":"x"},"values":[1],"timestamps":[1700000000000]}"#,
    r#"{"metric":{"a":"b"},"values":[NaN,-Inf,+inf],"timestamps":[1,2,3]}"#,
    r#"{"metric":{"a":"b"},"values":[null,"NaN"],"timestamps":[1,2]}"#,
    r#"{"m\u0065tric":{"a":"b"},"values":[1],"timestamps":[1]}"#,
    r#"{"metric":{"a":"b"},"v\u0061lues":[1,2],"values":[1],"timestamps":[1]}"#,
    r#" { "metric" : { "a" : "b" } , "values" : [ 1 , 2 ] , "timestamps" : [ -1 , 0 ] } "#,
    r#"{"metric":{"a":"b"},"values":[.5,5.],"timestamps":[1,2]}"#,
    r#"{"x":[{"y":[nan,true,false,null,"s\"q"]}],"metric":{"a":"b"},"values":[1],"timestamps":[1]}"#,
];

const INFLUX_SEEDS: &[&str] = &[
    "cpu,host=a usage=1,idle=2i,ok=t 1700000000000000000",
    "mem free=3u",
    "disk,dev=sda used=0.5,label=\"a string, with = and space\",flag=FALSE",
    "m s=\"has \\\" quote\",n=1 123",
    "m\\ x,t\\,a=b\\ c f\\=g=1",
    " f=1",
    "m,t=,=v f=1",
    "m f=1 ",
    "m f=abc",
    "m f=-9223372036854775808i 1",
    "# comment",
    "m a=\"x=1,y 2\",b=2 10",
];

const CSV_FORMAT: &str = "1:metric:ask,2:metric:bid,3:time:unix_ms,4:label:ticker";
const CSV_SEEDS: &[&str] = &[
    "1.5,1.6,1700000000000,GOOG",
    "\"1\",\"2\",\"3\",\"a,b\"\"c\"",
    ",2,3,T",
    "1,2,,T",
    "1,2,3,",
    "1,2,3,T,extra,\"x\"",
    "'1',2,3,T",
    "ask,bid,time,ticker",
    "1,2,1.5,T",
    ".5,5.,1,T",
];

fn mutate(rng: &mut Rng, seed: &str, alphabet: &[u8]) -> Vec<u8> {
    let mut s = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(s.len() + 1);
        match rng.below(4) {
            0 => s.insert(at, *rng.pick(alphabet)),
            1 if at < s.len() => {
                s.remove(at);
            }
            2 if at < s.len() => s[at] = *rng.pick(alphabet),
            _ => {
                let end = (at + rng.below(6)).min(s.len());
                let piece = s[at..end].to_vec();
                s.splice(at..at, piece);
            }
        }
    }
    s.retain(|b| *b != b'\n');
    s
}

fn accepted(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Sends each body as its own request, in groups, and returns the bodies whose count differs from
/// the backend's: bodies it accepted that we cannot count, and (by bisecting groups whose totals
/// differ) bodies counted differently. Inexact counts are left out of the comparison.
fn differential(vm: &Vm, format: Format, target: &str, bodies: &[Vec<u8>]) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut mismatches = Vec::new();
    for group in bodies.chunks(200) {
        let comparable: Vec<Vec<u8>> = group
            .iter()
            .filter(|b| !matches!(ours(format, target, None, b), Ok(c) if !c.exact))
            .cloned()
            .collect();
        total += bisect(vm, format, target, &comparable, &mut mismatches);
    }
    (total, mismatches)
}

fn bisect(
    vm: &Vm,
    format: Format,
    target: &str,
    bodies: &[Vec<u8>],
    mismatches: &mut Vec<String>,
) -> u64 {
    if bodies.is_empty() {
        return 0;
    }
    let (statuses, vm_rows) = vm.send_all(format, target, None, bodies);
    let mut expected = 0;
    for (body, status) in bodies.iter().zip(&statuses) {
        match ours(format, target, None, body) {
            Ok(c) if accepted(*status) => expected += c.rows,
            Ok(_) => {}
            Err(e) if accepted(*status) => {
                mismatches.push(format!(
                    "{:?}: accepted, but ours: {e}",
                    String::from_utf8_lossy(body)
                ));
            }
            Err(_) => {}
        }
    }
    if expected != vm_rows {
        if let [body] = bodies {
            mismatches.push(format!(
                "{:?}: vm {vm_rows}, ours {expected}",
                String::from_utf8_lossy(body)
            ));
        } else {
            let (a, b) = bodies.split_at(bodies.len() / 2);
            bisect(vm, format, target, a, mismatches);
            bisect(vm, format, target, b, mismatches);
        }
    }
    vm_rows
}

fn random_request(rng: &mut Rng) -> WriteRequest {
    let names = ["__name__", "job", "instance", "team", "a", "b"];
    let mut wr = WriteRequest::default();
    for _ in 0..rng.below(6) {
        let labels = (0..rng.below(5))
            .map(|_| (rng.pick(&names).to_string(), format!("v{}", rng.below(100))))
            .collect();
        let samples = (0..rng.below(5))
            .map(|i| (rng.below(1000) as f64, 1_700_000_000_000 + i as i64 * 1000))
            .collect();
        let histograms = (0..rng.below(2))
            .map(|_| Histogram {
                count: Number::Int(rng.below(10) as u64),
                sum: 1.5,
                schema: 3,
                zero_threshold: 1e-9,
                zero_count: Number::Int(rng.below(3) as u64),
                negative_spans: vec![],
                negative_deltas: vec![],
                negative_counts: vec![],
                positive_spans: vec![Span {
                    offset: 0,
                    length: 3,
                }],
                positive_deltas: vec![1, 0, -1],
                positive_counts: vec![],
                reset_hint: 0,
                timestamp: 1_700_000_000_000,
                packed: rng.below(2) == 0,
            })
            .collect();
        let unknown = (0..rng.below(2))
            .map(|_| Unknown {
                number: 10 + rng.below(5) as u32,
                wire_type: 0,
                payload: vec![1],
            })
            .collect();
        wr.series.push(Series {
            labels,
            samples,
            exemplars: vec![],
            histograms,
            unknown,
        });
    }
    wr
}

#[test]
fn counts_match_victoria_metrics_v1_79_5() {
    let vm = Vm::start(&binary());
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut mismatches = Vec::new();

    // Remote write: generated bodies, with exemplars, histograms (ignored by v1.79.5), metadata and
    // unknown fields; then corrupted copies, which must be refused or counted alike.
    let mut generated = Vec::new();
    for i in 0..200 {
        let mut wr = random_request(&mut rng);
        if i % 7 == 0 {
            wr.metadata.push(model::Metadata {
                kind: 1,
                family: "m".into(),
                help: "h".into(),
                unit: String::new(),
            });
        }
        let body = snappy(&wr.encode());
        assert_eq!(
            ours(Format::RemoteWrite, "", None, &body)
                .map(|c| c.rows)
                .ok(),
            wr.expected_rows(&DIALECT)
        );
        generated.push(body);
    }
    let (rw_rows, found) = differential(&vm, Format::RemoteWrite, "/api/v1/write", &generated);
    mismatches.extend(found);
    // The generated bodies are valid: VictoriaMetrics stored every row of them, as we counted.
    let counted: u64 = generated
        .iter()
        .filter_map(|b| ours(Format::RemoteWrite, "/api/v1/write", None, b).ok())
        .filter(|c| c.exact)
        .map(|c| c.rows)
        .sum();
    assert!(
        rw_rows > 0,
        "VictoriaMetrics counted no remote-write rows at all"
    );
    assert_eq!(rw_rows, counted);
    let mut corrupted = Vec::new();
    while corrupted.len() < 300 {
        let mut raw = random_request(&mut rng).encode();
        if raw.is_empty() {
            continue;
        }
        for _ in 0..=rng.below(3) {
            let at = rng.below(raw.len());
            raw[at] = rng.next() as u8;
        }
        corrupted.push(snappy(&raw));
    }
    let (corrupt_rows, found) = differential(&vm, Format::RemoteWrite, "/api/v1/write", &corrupted);
    mismatches.extend(found);
    let refused = corrupted
        .iter()
        .filter(|b| ours(Format::RemoteWrite, "", None, b).is_err())
        .count();
    eprintln!("remote write: {rw_rows} rows in 200 generated bodies; 300 corrupted bodies: {corrupt_rows} rows, {refused} not countable");

    // Hand-picked bodies of every text format, plain and gzipped.
    let prom = PROM_SEEDS.join("\n");
    let json = JSON_SEEDS.join("\n");
    let influx = INFLUX_SEEDS.join("\n");
    let csv = CSV_SEEDS.join("\r\n");
    let csv_target = format!("/api/v1/import/csv?format={CSV_FORMAT}");
    let cases: [(Format, &str, &str); 5] = [
        (Format::PrometheusText, "/api/v1/import/prometheus", &prom),
        (Format::JsonLines, "/api/v1/import", &json),
        (Format::Influx, "/influx/write", &influx),
        (Format::Influx, "/influx/api/v2/write", &influx),
        (Format::Csv, &csv_target, &csv),
    ];
    for (format, target, body) in cases {
        let rows = check(&vm, format, target, None, body.as_bytes());
        assert!(rows > 0, "{target}");
        assert_eq!(
            check(&vm, format, target, Some("gzip"), &gzip(body.as_bytes())),
            rows
        );
        // v1.79.5 reads anything but gzip as it is: a zstd body is garbage text to it.
        let z = zstd::bulk::compress(body.as_bytes(), 3).unwrap();
        check(&vm, format, target, Some("zstd"), &z);
        eprintln!("{target}: {rows} rows");
    }
    let rfc_target = "/api/v1/import/csv?format=1:time:rfc3339,2:metric:m,3:label:l";
    let rfc_body = "2024-02-29T23:59:59Z,1,a\n2024-01-01T00:00:00.5+05:30,2,b\n2023-02-29T00:00:00Z,3,c\n2024-01-01 00:00:00Z,4,d\nnope,5,e";
    assert_eq!(
        check(&vm, Format::Csv, rfc_target, None, rfc_body.as_bytes()),
        2
    );

    // Mutated lines, format by format, one request each.
    let plans: [(Format, &str, &[&str], &[u8]); 4] = [
        (
            Format::PrometheusText,
            "/api/v1/import/prometheus",
            PROM_SEEDS,
            b" \t{}\",=\\#.e-+aZ19_:'",
        ),
        (
            Format::JsonLines,
            "/api/v1/import",
            JSON_SEEDS,
            b" {}[]\",:\\.e-+1nNaIu0tf",
        ),
        (
            Format::Influx,
            "/influx/write",
            INFLUX_SEEDS,
            b" ,=\\\"#.e-+iut1x",
        ),
        (Format::Csv, &csv_target, CSV_SEEDS, b",\"'.e-+1x \r"),
    ];
    for (format, target, seeds, alphabet) in plans {
        let lines: Vec<Vec<u8>> = (0..400)
            .map(|_| {
                let seed = *rng.pick(seeds);
                mutate(&mut rng, seed, alphabet)
            })
            .collect();
        let (rows, found) = differential(&vm, format, target, &lines);
        eprintln!(
            "{target}: 400 mutated lines, {rows} rows, {} mismatches",
            found.len()
        );
        mismatches.extend(found);
    }
    assert!(
        mismatches.is_empty(),
        "counts differ from VictoriaMetrics:\n{}",
        mismatches.join("\n")
    );

    // Native: export everything ingested so far and import it again, plain and gzipped.
    let (status, native) = vm
        .request(
            "GET",
            "/api/v1/export/native?match[]=%7B__name__!%3D%22%22%7D&start=0",
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(status, 200);
    let counted = ours(Format::Native, "", None, &native).unwrap();
    assert!(
        !counted.exact,
        "v1.79.5 block headers cannot prove the count"
    );
    let (statuses, vm_rows) = vm.send_all(
        Format::Native,
        "/api/v1/import/native",
        None,
        std::slice::from_ref(&native),
    );
    assert!(accepted(statuses[0]));
    assert!(vm_rows > 0);
    assert_eq!(counted.rows, vm_rows, "native");
    let gz = gzip(&native);
    let (_, vm_rows_gz) = vm.send_all(
        Format::Native,
        "/api/v1/import/native",
        Some("gzip"),
        std::slice::from_ref(&gz),
    );
    assert_eq!(
        ours(Format::Native, "", Some("gzip"), &gz).unwrap().rows,
        vm_rows_gz
    );
    eprintln!("native: {} bytes, {vm_rows} rows", native.len());
}
