//! The `process_*` metrics every Prometheus exporter and VictoriaMetrics component has (memory, CPU,
//! file descriptors, start time, threads, I/O), read from `/proc/self` when `/metrics` is scraped. Nothing
//! here runs on the request path. A file that cannot be read (another OS, a locked-down container) just
//! leaves its series out.

use std::fmt::Write as _;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on every architecture Linux
/// exposes to user space (`sysconf(_SC_CLK_TCK)`; reading it would need `unsafe` libc calls).
const TICKS_PER_SECOND: f64 = 100.0;

/// Appends the process metrics; `metadata` adds `# HELP` and `# TYPE` lines.
pub fn render(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().and_then(stat_fields);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| status_kib(&status, key).map(|k| k * 1024.0);
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    };
    let field = |i: usize| {
        fields
            .as_ref()
            .and_then(|f| f.get(i))
            .and_then(|v| v.parse::<f64>().ok())
    };
    // Fields after the command, counted from 3 (state) as in proc(5): utime 14, stime 15,
    // num_threads 20, starttime 22, minflt 10, majflt 12.
    let at = |n: usize| field(n - 3);
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        at(14).zip(at(15)).map(|(u, s)| (u + s) / TICKS_PER_SECOND),
    );
    metric(
        "process_cpu_seconds_user_total",
        "counter",
        "User CPU time spent in seconds.",
        at(14).map(|u| u / TICKS_PER_SECOND),
    );
    metric(
        "process_cpu_seconds_system_total",
        "counter",
        "System CPU time spent in seconds.",
        at(15).map(|s| s / TICKS_PER_SECOND),
    );
    metric(
        "process_minor_pagefaults_total",
        "counter",
        "Minor page faults.",
        at(10),
    );
    metric(
        "process_major_pagefaults_total",
        "counter",
        "Major page faults.",
        at(12),
    );
    metric(
        "process_num_threads",
        "gauge",
        "Number of OS threads.",
        at(20),
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        at(22).and_then(|ticks| boot_time().map(|boot| boot + ticks / TICKS_PER_SECOND)),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        kib("VmRSS:"),
    );
    metric(
        "process_resident_memory_anon_bytes",
        "gauge",
        "Resident anonymous memory in bytes.",
        kib("RssAnon:"),
    );
    metric(
        "process_resident_memory_file_bytes",
        "gauge",
        "Resident file-backed memory in bytes.",
        kib("RssFile:"),
    );
    metric(
        "process_resident_memory_shared_bytes",
        "gauge",
        "Resident shared memory in bytes.",
        kib("RssShmem:"),
    );
    metric(
        "process_resident_memory_peak_bytes",
        "gauge",
        "Peak resident memory size in bytes.",
        kib("VmHWM:"),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        kib("VmSize:"),
    );
    metric(
        "process_virtual_memory_peak_bytes",
        "gauge",
        "Peak virtual memory size in bytes.",
        kib("VmPeak:"),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
    );
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds(),
    );
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let io_value = |key: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    for (name, key, help) in [
        (
            "process_io_read_bytes_total",
            "rchar:",
            "Bytes read by the process, from storage or not.",
        ),
        (
            "process_io_written_bytes_total",
            "wchar:",
            "Bytes written by the process, to storage or not.",
        ),
        (
            "process_io_read_syscalls_total",
            "syscr:",
            "Read system calls.",
        ),
        (
            "process_io_write_syscalls_total",
            "syscw:",
            "Write system calls.",
        ),
        (
            "process_io_storage_read_bytes_total",
            "read_bytes:",
            "Bytes read from storage.",
        ),
        (
            "process_io_storage_written_bytes_total",
            "write_bytes:",
            "Bytes written to storage.",
        ),
    ] {
        metric(name, "counter", help, io_value(key));
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces and parentheses, so
/// it is skipped up to its last `)`), starting with `state`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds since the epoch at which the machine booted (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of open files.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(f64::INFINITY),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_usual_process_metrics_on_linux() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_num_threads",
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in\n{out}"));
            let value: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
            assert!(value > 0.0, "{line}");
        }
        let start = out
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse::<f64>()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }

    #[test]
    fn command_names_with_parentheses_do_not_shift_fields() {
        let stat = "42 (a) b (c)) S 1 2 3";
        assert_eq!(stat_fields(stat).unwrap()[0], "S");
    }
}
