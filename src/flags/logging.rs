//! Flags about log lines (VictoriaMetrics' `-logger*`: format, level, output, time zone, JSON field
//! names, argument length, rate limits) and tenantgate's opt-in audit log.

use std::path::PathBuf;

use super::values::{parse_bool, parse_string, parse_usize};
use super::{flag, FlagError, FlagSpec, Given, Kind};

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("loggerFormat", Kind::String, "default", "Format for logs. Possible values: default, json"),
    flag("loggerLevel", Kind::String, "INFO", "Minimum level of errors to log. Possible values: INFO, WARN, ERROR, FATAL, PANIC"),
    flag("loggerOutput", Kind::String, "stderr", "Output for the logs. Supported values: stderr, stdout"),
    flag("loggerTimezone", Kind::String, "UTC", "Timezone to use for timestamps in logs. Timezone must be a valid IANA Time Zone. For example: America/New_York, Europe/Berlin, Etc/GMT+3 or Local"),
    flag("loggerJSONFields", Kind::String, "", "Allows renaming fields in JSON formatted logs. Example: \"ts:timestamp,msg:message\" renames \"ts\" to \"timestamp\" and \"msg\" to \"message\". Supported fields: ts, level, caller, msg"),
    flag("loggerMaxArgLen", Kind::Int, "1000", "The maximum length of a single logged argument (such as a request path and query in the audit log). Longer arguments are replaced with value_start..value_end, where value_start and value_end are prefix and suffix of the original value with the length of -loggerMaxArgLen / 2"),
    flag("loggerDisableTimestamps", Kind::Bool, "false", "Whether to disable writing timestamps in logs"),
    flag("loggerErrorsPerSecondLimit", Kind::Int, "0", "Per-second limit on the number of ERROR messages. If more than the given number of errors are emitted per second, the remaining errors are suppressed. Zero values disable the rate limit"),
    flag("loggerWarnsPerSecondLimit", Kind::Int, "0", "Per-second limit on the number of WARN messages. If more than the given number of warns are emitted per second, then the remaining warns are suppressed. Zero values disable the rate limit"),
    flag("auditLog", Kind::String, "", "Where to write the audit log: one JSON line per request (time, client address, the token's sub and client_id, tenant, labels granted, route, method, path with query cut at -loggerMaxArgLen, status, duration, bytes in and out; never the token). stdout, stderr or a file path (appended; reopened on SIGHUP for log rotation). Empty disables it"),
];

/// Log output format (`-loggerFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Tab-separated lines, as VictoriaMetrics writes them.
    Default,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Minimum level of logs to emit (`-loggerLevel`), with VictoriaMetrics' level names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `INFO`: everything.
    Info,
    /// `WARN`: warnings and errors.
    Warn,
    /// `ERROR`: errors only.
    Error,
    /// `FATAL`: only messages logged right before exiting.
    Fatal,
    /// `PANIC`: only messages logged on a crash.
    Panic,
}

/// Where log lines go (`-loggerOutput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard error, VictoriaMetrics' default.
    Stderr,
    /// Standard output.
    Stdout,
}

/// Where the audit log goes (`-auditLog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard output.
    Stdout,
    /// Standard error, among the other log lines.
    Stderr,
    /// A file, appended to and reopened on SIGHUP.
    File(PathBuf),
}

/// How log lines look and where they go.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `-loggerFormat`.
    pub format: LogFormat,
    /// `-loggerLevel`.
    pub level: LogLevel,
    /// `-loggerOutput`.
    pub output: LogOutput,
    /// `-loggerTimezone`: an IANA name, `UTC` or `Local`; checked when logging starts.
    pub timezone: String,
    /// `-loggerJSONFields`: `(field, new name)` for `ts`, `level`, `caller`, `msg`.
    pub json_fields: Vec<(String, String)>,
    /// `-loggerMaxArgLen`; 0 means no limit.
    pub max_arg_len: usize,
    /// `-loggerDisableTimestamps`.
    pub disable_timestamps: bool,
    /// `-loggerErrorsPerSecondLimit`; 0 means unlimited.
    pub errors_per_second: usize,
    /// `-loggerWarnsPerSecondLimit`; 0 means unlimited.
    pub warns_per_second: usize,
    /// `-auditLog`.
    pub audit: Option<AuditTarget>,
}

pub(super) fn build(given: &Given) -> Result<LogConfig, FlagError> {
    Ok(LogConfig {
        format: given.get("loggerFormat", parse_log_format)?,
        level: given.get("loggerLevel", parse_log_level)?,
        output: given.get("loggerOutput", parse_log_output)?,
        timezone: given.get("loggerTimezone", parse_timezone_name)?,
        json_fields: given
            .get_opt("loggerJSONFields", parse_json_fields)?
            .unwrap_or_default(),
        max_arg_len: given.get("loggerMaxArgLen", parse_usize)?,
        disable_timestamps: given.get("loggerDisableTimestamps", parse_bool)?,
        errors_per_second: given.get("loggerErrorsPerSecondLimit", parse_usize)?,
        warns_per_second: given.get("loggerWarnsPerSecondLimit", parse_usize)?,
        audit: given.get_opt("auditLog", parse_audit_target)?,
    })
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "default" => Ok(LogFormat::Default),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected default or json".to_string()),
    }
}

fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    match text.to_ascii_uppercase().as_str() {
        "INFO" => Ok(LogLevel::Info),
        "WARN" => Ok(LogLevel::Warn),
        "ERROR" => Ok(LogLevel::Error),
        "FATAL" => Ok(LogLevel::Fatal),
        "PANIC" => Ok(LogLevel::Panic),
        _ => Err("expected INFO, WARN, ERROR, FATAL or PANIC".to_string()),
    }
}

fn parse_log_output(text: &str) -> Result<LogOutput, String> {
    match text {
        "stderr" => Ok(LogOutput::Stderr),
        "stdout" => Ok(LogOutput::Stdout),
        _ => Err("expected stderr or stdout".to_string()),
    }
}

/// A time zone name: checked against the time zone database here, so a typo stops start-up.
fn parse_timezone_name(text: &str) -> Result<String, String> {
    timezone(text).map(|_| text.to_string())
}

/// Looks up `-loggerTimezone`: `UTC`, `Local` (the system's), or an IANA name. Here, not in
/// `crate::logging`, so flags depend on nothing of the logger's (the logger reads flags).
pub fn timezone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    use jiff::tz::TimeZone;
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::system()),
        name => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}")),
    }
}

/// `ts:timestamp,msg:message`.
fn parse_json_fields(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields = Vec::new();
    for item in text.split(',').filter(|item| !item.is_empty()) {
        let (from, to) = item
            .split_once(':')
            .ok_or_else(|| format!("{item:?}: expected field:new_name"))?;
        let from = from.trim();
        let to = to.trim();
        if !["ts", "level", "caller", "msg"].contains(&from) {
            return Err(format!(
                "{from:?} cannot be renamed; supported fields: ts, level, caller, msg"
            ));
        }
        if to.is_empty() || to.contains(['"', '\\']) || to.chars().any(char::is_control) {
            return Err(format!("{to:?} is not a usable JSON field name"));
        }
        fields.push((from.to_string(), to.to_string()));
    }
    Ok(fields)
}

fn parse_audit_target(text: &str) -> Result<AuditTarget, String> {
    Ok(match parse_string(text)?.as_str() {
        "stdout" => AuditTarget::Stdout,
        "stderr" => AuditTarget::Stderr,
        path => AuditTarget::File(PathBuf::from(path)),
    })
}
