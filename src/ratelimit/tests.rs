//! The limiter's decisions with made-up usage: modes, budgets, refusals, `Retry-After`, reloads.

use super::*;

fn limiter(limits: &str, share: bool) -> RateLimiter {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.yml");
    std::fs::write(&path, limits).unwrap();
    let args = [
        "-read.url=http://a".to_string(),
        "-enable.rateLimit".to_string(),
        format!("-ratelimit.config={}", path.display()),
        format!("-ratelimit.shareUsage={share}"),
        "-datasource.url=http://ds".to_string(),
    ];
    let config = match crate::flags::parse(args, &|_| None) {
        Ok(crate::flags::Parsed::Run(c)) => c,
        other => panic!("{other:?}"),
    };
    let file = LimitsFile::parse(limits).unwrap();
    RateLimiter::new(&config, file, "me".into())
}

const T: Tenant = Tenant {
    account: 1,
    project: 5,
};
const OTHER: Tenant = Tenant {
    account: 2,
    project: 0,
};

#[test]
fn alone_a_queries_limit_admits_exactly_its_value_per_minute() {
    let l = limiter("limits:\n  - {type: queries, value: 5}\n", false);
    for _ in 0..5 {
        assert!(l.admit(T, false).unwrap().is_some());
    }
    let e = l.admit(T, false).err().unwrap();
    assert_eq!(e.kind, ErrorKind::TooManyRequests);
    assert!(e.message.starts_with("request was rate limited by: \"queries limit reached\" (tenant 1:5: 5 of 5 queries in the last minute"), "{}", e.message);
    let retry = e.retry_after.unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        l.admit(OTHER, false).unwrap().is_some(),
        "each tenant has its own budget"
    );
    assert!(
        l.admit(T, true).unwrap().is_none(),
        "a read limit never blocks writes"
    );
}

#[test]
fn globally_the_other_replicas_usage_counts_and_locally_each_gets_its_share() {
    let l = limiter("limits:\n  - {type: queries, value: 6}\n", true);
    // Before the first good read: local mode with one replica known, so the whole limit.
    assert_eq!(l.mode(&l.snapshot.load()), Mode::Local);
    l.snapshot.store(Arc::new(Snapshot::taken_now(
        3,
        &[(T, LimitType::Queries, Resolution::Minute, 4)],
    )));
    assert_eq!(l.mode(&l.snapshot.load()), Mode::Global);
    assert!(l.admit(T, false).unwrap().is_some());
    assert!(l.admit(T, false).unwrap().is_some());
    let e = l.admit(T, false).err().unwrap();
    assert!(e.message.contains("6 of 6"), "{}", e.message);
    // The datasource goes stale: each of the 3 replicas gets 2, and this one has used 2.
    let mut stale = Snapshot::taken_now(3, &[(T, LimitType::Queries, Resolution::Minute, 4)]);
    stale.taken = Some(Instant::now() - Duration::from_secs(60));
    l.snapshot.store(Arc::new(stale));
    assert_eq!(l.mode(&l.snapshot.load()), Mode::Local);
    let e = l.admit(T, false).err().unwrap();
    assert!(
        e.message
            .contains("share while the usage datasource is unavailable: 1/3 of 6"),
        "{}",
        e.message
    );
    assert!(
        l.admit(OTHER, false).unwrap().is_some(),
        "tenants under their share are served"
    );
    assert!(
        l.health().starts_with("rate limiting: local fallback"),
        "{}",
        l.health()
    );
}

#[test]
fn rows_count_after_acceptance_and_writes_can_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.yml");
    std::fs::write(&path, "limits:\n  - {type: rows_inserted, value: 100}\n").unwrap();
    let args = [
        "-write.url=http://a".to_string(),
        "-enable.rateLimit".to_string(),
        format!("-ratelimit.config={}", path.display()),
        "-ratelimit.shareUsage=false".to_string(),
        "-ratelimit.writeStatusCode=503".to_string(),
    ];
    let Ok(crate::flags::Parsed::Run(config)) = crate::flags::parse(args, &|_| None) else {
        panic!()
    };
    let l = RateLimiter::new(
        &config,
        LimitsFile::parse("limits:\n  - {type: rows_inserted, value: 100}\n").unwrap(),
        "me".into(),
    );
    let a = l.admit(T, true).unwrap().unwrap();
    assert!(a.count_rows, "single-node rows are counted by the gateway");
    l.rows_accepted(&a, 99);
    // 99 < 100: the next batch is judged before its size is known and goes through.
    let b = l.admit(T, true).unwrap().unwrap();
    l.rows_accepted(&b, 50);
    let e = l.admit(T, true).err().unwrap();
    assert_eq!(
        e.kind,
        ErrorKind::Unavailable,
        "-ratelimit.writeStatusCode=503"
    );
    assert!(
        e.message.contains("\"inserted rows limit reached\"")
            && e.message.contains("149 of 100 rows"),
        "{}",
        e.message
    );
    assert!(
        l.admit(T, false).unwrap().is_none(),
        "a write limit never blocks reads"
    );
    let mut text = String::new();
    l.render(&mut text);
    assert!(text.contains("tenantgate_tenant_inserted_rows_total{accountID=\"1\",projectID=\"5\",tenantgate_instance=\"me\"} 149"), "{text}");
    assert!(text.contains(
        "tenantgate_ratelimit_rejections_total{type=\"rows_inserted\",resolution=\"minute\"} 1"
    ));
    assert!(text.contains("tenantgate_ratelimit_usage{accountID=\"1\",projectID=\"5\",type=\"rows_inserted\",resolution=\"minute\"} 149"));
    assert!(text.contains("tenantgate_ratelimit_mode{mode=\"alone\"} 1"));
}

#[test]
fn a_reloaded_file_applies_to_tenants_already_seen() {
    let l = limiter("limits:\n  - {type: queries, value: 1}\n", false);
    assert!(l.admit(T, false).unwrap().is_some());
    assert!(l.admit(T, false).is_err());
    l.replace_file(
        LimitsFile::parse("limits:\n  - {type: queries, value: 10, account_id: 1}\n").unwrap(),
    );
    assert!(l.admit(T, false).unwrap().is_some());
    assert!(
        l.admit(OTHER, false).unwrap().is_none(),
        "no default any more"
    );
}

#[test]
fn series_limits_without_a_reading_are_not_judged() {
    let l = limiter("limits:\n  - {type: active_series, value: 10}\n", true);
    assert!(
        l.admit(T, true).unwrap().is_some(),
        "nothing measured yet: never block"
    );
    l.snapshot.store(Arc::new(Snapshot::taken_now(
        1,
        &[(T, LimitType::ActiveSeries, Resolution::Minute, 10)],
    )));
    let e = l.admit(T, true).err().unwrap();
    assert!(
        e.message.contains("\"active series limit reached\""),
        "{}",
        e.message
    );
}

#[test]
fn far_from_the_limit_bodies_are_estimated_from_a_ratio_measured_each_second() {
    use crate::ingest::rows::Format;
    let l = limiter("limits:\n  - {type: rows_inserted, value: 1000}\n", false);
    let a = l.admit(T, true).unwrap().unwrap();
    assert_eq!(
        a.rows_plan(&l, Format::RemoteWrite),
        RowsPlan::Exact,
        "no ratio yet"
    );
    l.rows_counted(&a, Format::RemoteWrite, 1000, 100);
    let b = l.admit(T, true).unwrap().unwrap();
    assert_eq!(b.rows_plan(&l, Format::RemoteWrite), RowsPlan::Estimate);
    assert_eq!(
        b.rows_plan(&l, Format::PrometheusText),
        RowsPlan::Exact,
        "per format"
    );
    l.rows_estimated(&b, Format::RemoteWrite, 3000);
    // 100 + 300 = 400 rows, under half of 1000: still estimated.
    let c = l.admit(T, true).unwrap().unwrap();
    assert_eq!(c.rows_plan(&l, Format::RemoteWrite), RowsPlan::Estimate);
    l.rows_estimated(&c, Format::RemoteWrite, 2000);
    // 600 rows: within half of the limit, every body is counted exactly.
    let d = l.admit(T, true).unwrap().unwrap();
    assert_eq!(d.rows_plan(&l, Format::RemoteWrite), RowsPlan::Exact);
}

#[test]
fn a_body_too_large_to_count_before_any_ratio_counts_as_the_whole_limit() {
    use crate::ingest::rows::Format;
    let l = limiter("limits:\n  - {type: rows_inserted, value: 1000}\n", false);
    let a = l.admit(T, true).unwrap().unwrap();
    // Forwarded, but larger than MAX_COUNTED_BODY: no copy, no ratio measured yet.
    l.rows_estimated(&a, Format::Csv, MAX_COUNTED_BODY as u64 + 1);
    let e = l.admit(T, true).err().expect("the limit is used up");
    assert_eq!(e.kind, ErrorKind::TooManyRequests);
}
