use super::*;
use crate::flags::UpstreamTls;
use proptest::prelude::*;

fn pool(n: usize, policy: Policy) -> Backends {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://127.0.0.1:{}", 10_000 + i))
        .collect();
    let balance = Balance {
        policy,
        fail_timeout: Duration::from_secs(3),
        retry_statuses: vec![503],
        max_body_to_retry: 1 << 20,
        retry_buffer: 1 << 30,
        discovery: None,
    };
    let timeouts = (Duration::from_secs(1), Duration::from_secs(1));
    Backends::new(
        "read",
        &urls,
        &UpstreamTls::default(),
        timeouts,
        balance,
        "/health",
    )
    .unwrap()
}

fn set_down(p: &Backends, i: usize, since: u64) {
    p.set.load()[i].down_since.store(since, Ordering::Relaxed);
}

fn choose(p: &Backends, tried: u64) -> Option<usize> {
    p.choose(&p.set.load(), tried)
}

#[test]
fn least_loaded_spreads_an_idle_pool_round_robin() {
    let p = pool(3, Policy::LeastLoaded);
    let picks: Vec<usize> = (0..6).map(|_| choose(&p, 0).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn least_loaded_takes_the_fewest_in_flight() {
    let p = pool(3, Policy::LeastLoaded);
    p.set.load()[0].in_flight.store(5, Ordering::Relaxed);
    p.set.load()[1].in_flight.store(2, Ordering::Relaxed);
    p.set.load()[2].in_flight.store(3, Ordering::Relaxed);
    for _ in 0..5 {
        assert_eq!(choose(&p, 0), Some(1));
    }
}

#[test]
fn first_available_keeps_to_the_first_healthy_backend() {
    let p = pool(3, Policy::FirstAvailable);
    p.set.load()[0].in_flight.store(100, Ordering::Relaxed);
    assert_eq!(
        choose(&p, 0),
        Some(0),
        "spares stay idle however busy the first is"
    );
    set_down(&p, 0, 5);
    assert_eq!(choose(&p, 0), Some(1));
    assert_eq!(choose(&p, 0b10), Some(2), "a retry goes to the next spare");
}

#[test]
fn down_backends_are_skipped_and_the_oldest_failure_is_the_last_resort() {
    let p = pool(3, Policy::LeastLoaded);
    set_down(&p, 0, 10);
    set_down(&p, 2, 20);
    for _ in 0..4 {
        assert_eq!(choose(&p, 0), Some(1));
    }
    set_down(&p, 1, 30);
    assert_eq!(
        choose(&p, 0),
        Some(0),
        "every one down: the one that failed longest ago"
    );
    assert_eq!(
        choose(&p, 0b001),
        None,
        "a retry never goes to a backend known down"
    );
    set_down(&p, 2, 0);
    assert_eq!(choose(&p, 0b001), Some(2), "but to one that is up");
    assert_eq!(
        choose(&p, 0b101),
        None,
        "each backend at most once per request"
    );
}

#[test]
fn one_backend_is_always_used_once() {
    let p = pool(1, Policy::LeastLoaded);
    set_down(&p, 0, 1);
    assert_eq!(choose(&p, 0), Some(0));
    assert_eq!(choose(&p, 1), None);
}

#[test]
fn failures_mark_down_once_and_count() {
    let p = pool(2, Policy::LeastLoaded);
    let set = p.set.load_full();
    p.failed(&set, &set[0], "test");
    p.failed(&set, &set[0], "test");
    assert_eq!(p.up(), (1, 2));
    assert_eq!(set[0].errors.load(Ordering::Relaxed), 2);
    let mut text = String::new();
    p.render(&mut text);
    assert!(
        text.contains("tenantgate_backend_up{direction=\"read\",backend=\"127.0.0.1:10000\"} 0")
    );
    assert!(
        text.contains("tenantgate_backend_up{direction=\"read\",backend=\"127.0.0.1:10001\"} 1")
    );
}

proptest! {
    /// Whatever the state, a request's attempts visit distinct backends, every backend at most once,
    /// and a healthy untried backend is always chosen before a down one.
    #[test]
    fn attempts_are_distinct_and_healthy_first(
        n in 1usize..12,
        down in proptest::collection::vec(0u64..4, 12),
        load in proptest::collection::vec(0u32..4, 12),
        first in any::<bool>(),
    ) {
        let p = pool(n, if first { Policy::FirstAvailable } else { Policy::LeastLoaded });
        for i in 0..n {
            set_down(&p, i, down[i]);
            p.set.load()[i].in_flight.store(load[i], Ordering::Relaxed);
        }
        let mut tried = 0u64;
        let mut seen = Vec::new();
        while let Some(i) = choose(&p, tried) {
            prop_assert!(tried & (1 << i) == 0, "backend {} chosen twice", i);
            let healthy_left = (0..n).any(|j| tried & (1 << j) == 0 && down[j] == 0);
            if healthy_left && n > 1 {
                prop_assert_eq!(down[i], 0, "a down backend was chosen over a healthy one");
            }
            if tried != 0 && n > 1 {
                prop_assert_eq!(down[i], 0, "a retry went to a backend known down");
            }
            tried |= 1 << i;
            seen.push(i);
        }
        // The first attempt always goes somewhere; retries reach every healthy backend.
        let healthy = (0..n).filter(|&j| down[j] == 0).count();
        let first_down = seen.first().is_some_and(|&i| down[i] != 0);
        prop_assert_eq!(seen.len(), if n == 1 { 1 } else { healthy + usize::from(first_down) });
    }
}

#[test]
fn srv_records_without_a_target_are_not_backends() {
    let srv = |target: &str, port| dns::Record::Srv {
        target: target.into(),
        port,
    };
    let records = vec![
        srv("vm-0.test", 8480),
        srv("", 8480), // the root name: "not available here" (RFC 2782)
        srv(".", 8480),
        srv("vm-1.test", 0),
        dns::Record::Addr([127, 0, 0, 1].into()),
        srv("vm-2.test", 8481),
    ];
    let kept: Vec<_> = srv_targets(records).collect();
    assert_eq!(
        kept,
        [
            ("vm-0.test".to_string(), 8480),
            ("vm-2.test".to_string(), 8481)
        ]
    );
}

#[tokio::test]
async fn srv_names_are_not_dialled_before_discovery_finds_them() {
    let balance = Balance {
        policy: Policy::LeastLoaded,
        fail_timeout: Duration::from_secs(3),
        retry_statuses: vec![],
        max_body_to_retry: 1 << 20,
        retry_buffer: 1 << 30,
        discovery: Some(crate::flags::Discovery {
            interval: Duration::from_secs(10),
            server: Some("127.0.0.1:9".into()),
        }),
    };
    let urls = [
        "http://srv+_vm._tcp.test".to_string(),
        "https://vm.test:8443".to_string(),
    ];
    let timeouts = (Duration::from_secs(1), Duration::from_secs(1));
    let p = Backends::new(
        "write",
        &urls,
        &UpstreamTls::default(),
        timeouts,
        balance,
        "/health",
    )
    .unwrap();
    assert_eq!(p.names(), ["vm.test:8443"]);
    let found = Found {
        scheme: "https",
        addr: "127.0.0.1:8443".parse().unwrap(),
        host: "vm.test:8443".into(),
    };
    let upstream = p.discovered(&found).unwrap();
    assert!(
        upstream.tls.is_some(),
        "a discovered backend keeps its URL's scheme"
    );
    assert_eq!(upstream.host(), "vm.test:8443");
}
