//! A sustained, bounded run of mixed reads and writes from many tokens and teams through tenantgate into
//! real VictoriaMetrics: zero unexpected errors, no answer with another team's data, and flat memory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn mixed_load_from_many_tenants_has_no_errors_and_flat_memory() {
    const RUN: Duration = Duration::from_secs(20);
    const TEAMS: [&str; 4] = ["dev", "ops", "web", "db"];
    let vm = Victoria::start();
    let signer = Arc::new(Signer::ec());
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", vm.url),
            format!("-write.url={}", vm.url),
            "-auth.tokenCacheSize=64".into(),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (signer, stop, requests) = (signer.clone(), stop.clone(), requests.clone());
            let url = gate.url.clone();
            std::thread::spawn(move || {
                let team = TEAMS[w % TEAMS.len()];
                // Many distinct tokens per team, more than the cache holds, so verification runs too.
                let tokens: Vec<String> = (0..40)
                    .map(|i| {
                        signer.token(&format!(
                            r#"{{"extra_labels":{{"team":"{team}"}},"extra_filters":["{{worker!=\"none{i}\"}}"]}}"#
                        ))
                    })
                    .collect();
                let client = http_client();
                let mut i = 0usize;
                let mut problems = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let token = &tokens[i % tokens.len()];
                    if i.is_multiple_of(3) {
                        let body = import_lines(&[(&format!(r#"load_metric{{worker="{w}",team="other"}}"#), i as f64)]);
                        let r = client
                            .post(format!("{url}/api/v1/import/prometheus"))
                            .bearer_auth(token)
                            .body(body)
                            .send();
                        match r {
                            Ok(r) if r.status() == 204 => {}
                            Ok(r) => problems.push(format!("write {}", r.status())),
                            Err(e) => problems.push(format!("write {e}")),
                        }
                    } else {
                        let r = client
                            .get(format!("{url}/api/v1/query?query=load_metric"))
                            .bearer_auth(token)
                            .send();
                        match r.map(|r| (r.status(), r.json::<serde_json::Value>())) {
                            Ok((s, Ok(v))) if s == 200 => {
                                for series in v["data"]["result"].as_array().unwrap() {
                                    if series["metric"]["team"] != team {
                                        problems.push(format!("{team} saw {}", series["metric"]));
                                    }
                                }
                            }
                            Ok((s, _)) => problems.push(format!("read {s}")),
                            Err(e) => problems.push(format!("read {e}")),
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                problems
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(RUN / 4);
    let early_rss = rss_kib(gate.proc.pid());
    std::thread::sleep(RUN - RUN / 4);
    let late_rss = rss_kib(gate.proc.pid());
    stop.store(true, Ordering::Relaxed);
    let problems: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let total = requests.load(Ordering::Relaxed);
    assert!(
        problems.is_empty(),
        "{} problems in {total} requests, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(
        total > 1000,
        "only {total} requests in {:?}",
        started.elapsed()
    );
    // Flat memory: the second three quarters may not grow the process by more than a quarter (+4 MiB slack).
    assert!(
        late_rss <= early_rss + early_rss / 4 + 4096,
        "RSS grew from {early_rss} KiB to {late_rss} KiB"
    );
    // Every write landed with its team, never the sender's "other".
    vm.flush();
    let stored = vm.series("load_metric");
    assert_eq!(stored.len(), 8, "{stored:?}");
    assert!(stored.iter().all(|s| s["team"] != "other"));
    eprintln!(
        "{total} requests in {:?}, RSS {early_rss} -> {late_rss} KiB",
        started.elapsed()
    );
}
