#!/usr/bin/env python3
"""Prints bench/run's table from results.tsv: each figure as a ratio to the same round's nginx figure.

Usage (by bench/run): report.py RESULTS HEADER RSS_IDLE_KIB RSS_PEAK_KIB RSS_AFTER_KIB C1000_RESULT WRITE_BYTES
"""
import statistics
import sys

MIB = 1024 * 1024


def parse(path):
    rows = {}
    for line in open(path):
        rnd, target, load, result = line.rstrip("\n").split("\t")
        fields = dict(kv.split("=") for kv in result.split())
        fields = {k: float(v) for k, v in fields.items()}
        fields["load"] = float(load.split()[0])
        rows.setdefault(target, {})[int(rnd)] = fields
    return rows


def main():
    results, header, rss_idle, rss_peak, rss_after, c1000, write_bytes = sys.argv[1:8]
    write_mib = int(write_bytes) / MIB
    rows = parse(results)
    rounds = sorted(rows["nginx"])
    print(open(header).read().rstrip())
    print()

    def ratios(target, ref, key="rps"):
        return [rows[target][r][key] / rows[ref][r][key] for r in rounds if r in rows[target]]

    def mean(target, key):
        return statistics.mean(rows[target][r][key] for r in rounds)

    def fmt_ratio(rs):
        if len(rs) == 1:
            return f"{rs[0]:.2f}x"
        return f"{statistics.mean(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"

    print("| target | req/s | vs nginx | p50 ms | p99 ms | p99.9 ms | non-2xx+sock err | load 1m |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    order = ["direct", "nginx", "hyper-bare", "tg-rs256", "base-rs256", "tg-1worker", "tg-es256", "tg-nocache", "tg-rotate", "nginx-post",
             "tg-post", "base-post", "nginx-write", "tg-write", "base-write", "tg-grants", "tg-rl-rs256", "tg-rl-write", "tg-rlc-write",
             "tg-prom-post", "tg-prom-write", "tg-opaque", "tg-2read", "tg-2write", "tg-2stream", "paced-nginx", "paced-tg"]
    for t in order:
        if t not in rows:
            continue
        ref = {"tg-write": "nginx-write", "nginx-write": "nginx-write", "tg-rl-write": "nginx-write",
               "tg-rlc-write": "nginx-write", "tg-prom-write": "nginx-write", "base-write": "nginx-write",
               "tg-2write": "nginx-write", "tg-2stream": "nginx-write",
               "tg-prom-post": "nginx-post"}.get(t, "nginx")
        rps = mean(t, "rps")
        errs = sum(rows[t][r]["non2xx"] + rows[t][r]["sockerr"] for r in rounds)
        loads = [rows[t][r]["load"] for r in rounds]
        extra = ""
        if t.endswith("write") or t == "tg-2stream":
            extra = f" = {rps * write_mib:.0f} MiB/s"
        rel = "" if t.startswith("paced") else fmt_ratio(ratios(t, ref))
        if t in ("nginx-write",):
            rel = "1.00x (ref)"
        print(f"| {t} | {rps:,.0f}{extra} | {rel} | {mean(t, 'p50'):.3f} | {mean(t, 'p99'):.3f} | "
              f"{mean(t, 'p999'):.3f} | {errs:.0f} | {min(loads):.2f}-{max(loads):.2f} |")
    print()
    print(f"Write rows: {write_mib:.2f} MiB remote-write bodies (10,000 series); 'vs nginx' there is against nginx-write.")
    if "base-rs256" in rows:
        print("base-* rows: the TG_BASELINE binary, same flags and scripts as the tg-* row above it.")
    print("Paced rows: both at half of the same round's nginx req/s (wrk lua delay(), see bench/run).")
    print()

    checks = []

    def ratio_check(name, target, ref, want):
        if target not in rows or ref not in rows:
            return  # not run (bench/run --only)
        rs = ratios(target, ref)
        m = statistics.mean(rs)
        checks.append((name, f">= {want:.2f}x", fmt_ratio(rs), m >= want, f"{(m / want - 1) * 100:+.0f}%"))

    ratio_check("cached RS256 req/s", "tg-rs256", "nginx", 1.2)
    ratio_check("cached ES256 req/s", "tg-es256", "nginx", 1.2)
    ratio_check("10,000 rotating tokens req/s", "tg-rotate", "nginx", 1.0)
    ratio_check("cache off RS256 req/s", "tg-nocache", "nginx", 0.6)
    ratio_check("POST form rewrite req/s (vs nginx GET)", "tg-post", "nginx", 1.0)
    ratio_check("POST form rewrite req/s (vs nginx POST)", "tg-post", "nginx-post", 1.0)
    ratio_check("remote-write bytes/s", "tg-write", "nginx-write", 0.95)
    ratio_check("grants-file token, cached (vs a vm_access token)", "tg-grants", "tg-rs256", 0.95)
    ratio_check("rate limits, cached reads (vs tg-rs256)", "tg-rl-rs256", "tg-rs256", 0.95)
    ratio_check("rate limits, cluster remote write (vs tg-write)", "tg-rlc-write", "tg-write", 0.95)
    ratio_check("rate limits, single-node remote write with row counting (vs tg-write)", "tg-rl-write", "tg-write", 0.75)
    ratio_check("PromQL-enforced range query, POST (vs nginx POST)", "tg-prom-post", "nginx-post", 0.8)
    ratio_check("PromQL-enforced range query (vs tg-post, VictoriaMetrics path)", "tg-prom-post", "tg-post", 0.9)
    ratio_check("one backend, cached reads (vs the baseline binary)", "tg-rs256", "base-rs256", 0.98)
    ratio_check("one backend, remote write (vs the baseline binary)", "tg-write", "base-write", 0.98)
    ratio_check("opaque token, cached introspection (vs a cached JWT)", "tg-opaque", "tg-rs256", 0.95)
    ratio_check("two backends, cached reads (vs one)", "tg-2read", "tg-rs256", 1.0)
    ratio_check("two backends, remote write (vs one)", "tg-2write", "tg-write", 1.0)
    ratio_check("two backends, remote write streamed, no retry buffer (vs one)", "tg-2stream", "tg-write", 1.0)
    if "tg-prom-write" in rows:
        # No same-run baseline does this job (nginx only relays bytes; prom-label-proxy has no remote
        # write): report the throughput, which is CPU-bound decoding and re-encoding of every body.
        rs = ratios("tg-prom-write", "nginx-write") if "nginx-write" in rows else []
        samples = mean("tg-prom-write", "rps") * 10_000
        checks.append(("remote write relabelled for Prometheus", "(info)",
                       f"{samples / 1e6:.2f}M samples/s, {fmt_ratio(rs) if rs else '?'} of nginx-write's bytes/s",
                       True, ""))
    if "paced-tg" in rows and "paced-nginx" in rows:
        diffs = [rows["paced-tg"][r]["p99"] - rows["paced-nginx"][r]["p99"] for r in rounds]
        d = statistics.mean(diffs)
        rates = [f"{rows['paced-tg'][r]['rps']:,.0f}/{rows['paced-nginx'][r]['rps']:,.0f}" for r in rounds]
        checks.append(("p99 at half nginx peak (tg - nginx)", "<= +0.300 ms", f"{d:+.3f} ms (req/s tg/nginx: "
                       + ", ".join(rates) + ")", d <= 0.3, ""))
    idle, peak, after = (int(x) / 1024 for x in (rss_idle, rss_peak, rss_after))
    checks.append(("RSS idle (fresh)", "<= 15 MiB", f"{idle:.1f} MiB", idle <= 15, ""))
    c1000_rps = ""
    if c1000:
        f = dict(kv.split("=") for kv in c1000.split())
        c1000_rps = f" at {float(f['rps']):,.0f} req/s, {int(f['non2xx']) + int(f['sockerr'])} errors"
    if c1000:
        checks.append(("RSS peak, 1,000 connections", "<= 64 MiB", f"{peak:.1f} MiB{c1000_rps}", peak <= 64, ""))
    checks.append(("RSS idle after all runs", "(info)", f"{after:.1f} MiB", True, ""))
    print("| target | wanted | measured | met |")
    print("|---|---|---|---|")
    for name, want, got, ok, margin in checks:
        print(f"| {name} | {want} | {got} | {'yes' if ok else 'NO'} {margin} |")


if __name__ == "__main__":
    main()
