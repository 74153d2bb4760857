//! Not one sample lost: real vmagent remote-writes through tenantgate into real VictoriaMetrics while
//! tenantgate is restarted with SIGTERM five times, and while VictoriaMetrics itself restarts. Afterwards
//! every scrape vmagent made is in VictoriaMetrics exactly once per timestamp, with no gap.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Timestamps (ms) of the `up` samples vmagent wrote for its self-scrape, straight from VictoriaMetrics.
fn up_timestamps(vm: &Victoria) -> Vec<i64> {
    let mut all = Vec::new();
    for (metric, timestamps) in vm.samples(r#"up{job="self"}"#) {
        assert_eq!(
            metric["team"], "agents",
            "the token's label is on every sample"
        );
        all.extend(timestamps);
    }
    all.sort();
    all
}

/// Waits until VictoriaMetrics holds at least as many samples as vmagent has scraped, then checks that
/// the timestamps have no duplicates and no gap longer than two scrape intervals.
fn assert_complete(vm: &Victoria, agent: &Vmagent) {
    let scraped = agent.metric_sum("vm_promscrape_scrapes_total");
    assert!(scraped >= 10.0, "vmagent scraped only {scraped} times");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ts = loop {
        let ts = up_timestamps(vm);
        if ts.len() as f64 >= scraped {
            break ts;
        }
        assert!(
            Instant::now() < deadline,
            "VictoriaMetrics has {} samples, vmagent scraped {scraped}; vmagent log:\n{}",
            ts.len(),
            agent.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut dedup = ts.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), ts.len(), "duplicate samples");
    for pair in ts.windows(2) {
        assert!(
            pair[1] - pair[0] <= 2_000,
            "gap of {} ms in the series",
            pair[1] - pair[0]
        );
    }
    assert_eq!(
        agent.metric_sum("vmagent_remotewrite_packets_dropped_total"),
        0.0
    );
}

/// VictoriaMetrics, and tenantgate with a test key in front of it.
fn setup() -> (Victoria, Gate, Signer) {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let gate = Gate::start_secured(&signer, &read_write(&vm.url));
    (vm, gate, signer)
}

#[test]
fn gateway_restarts_lose_nothing() {
    let (vm, mut gate, signer) = setup();
    let token = signer.token(r#"{"extra_labels":{"team":"agents"}}"#);
    let agent = Vmagent::start(&format!("{}/api/v1/write", gate.url), &token);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            gate.proc.stop(Duration::from_secs(15)),
            Some(0),
            "{}",
            gate.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
        gate.respawn();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_complete(&vm, &agent);
    // The restarts really interrupted delivery: vmagent had to retry.
    assert!(agent.metric_sum("vmagent_remotewrite_retries_count_total") > 0.0);
}

#[test]
fn backend_restarts_lose_nothing() {
    let (mut vm, gate, signer) = setup();
    let token = signer.token(r#"{"extra_labels":{"team":"agents"}}"#);
    let agent = Vmagent::start(&format!("{}/api/v1/write", gate.url), &token);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(3000));
        vm.restart(Duration::from_millis(1500));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_complete(&vm, &agent);
    assert!(agent.metric_sum("vmagent_remotewrite_retries_count_total") > 0.0);
    assert!(
        gate.metric("tenantgate_requests_total{route=\"write\",code=\"502\"}") > 0.0,
        "the backend outage was answered with 502 (retryable)"
    );
}
