//! Log lines as VictoriaMetrics components write them, so the log pipelines operators built for
//! vmgateway keep working: `-loggerFormat=default` is `<ts>\t<level>\t<caller>\t<msg>`, `json` is
//! `{"ts":..,"level":..,"caller":..,"msg":..}` (fields renamable with `-loggerJSONFields`), timestamps
//! with milliseconds in `-loggerTimezone`, `-loggerOutput`, and per-second limits on errors and warnings
//! whose overflow is summarised in one line instead of flooding the log.
//!
//! It is a small `tracing` layer rather than tracing-subscriber's formatter, whose layout and field names
//! are its own. Structured fields of an event (`status = 502`) follow the message as `key=value` in the
//! default format and become their own keys in JSON. A line is written with one `write_all` on a locked
//! stream, so lines from different threads never interleave.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;

use jiff::tz::TimeZone;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::flags::{timezone, LogConfig, LogFormat, LogLevel, LogOutput};

/// Shortens a logged argument longer than `max` the way VictoriaMetrics' `-loggerMaxArgLen` does: its
/// first and last `max/2 - 1` characters joined by `..` (so the result is at most `max` long; `max` is at
/// least 4). `max == 0` means no limit.
pub fn truncate_arg(value: &str, max: usize) -> Cow<'_, str> {
    let max = if max == 0 { 0 } else { max.max(4) };
    if max == 0 || value.chars().count() <= max {
        return Cow::Borrowed(value);
    }
    let half = max / 2 - 1;
    let head: String = value.chars().take(half).collect();
    let tail: Vec<char> = value.chars().rev().take(half).collect();
    let tail: String = tail.into_iter().rev().collect();
    Cow::Owned(format!("{head}..{tail}"))
}

/// Installs the global logger. Call once, before anything logs; a second call (tests) keeps the first.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match config.level {
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => LevelFilter::ERROR,
    };
    let layer = VmLogger::new(config)?;
    let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// The names JSON lines use for the four standard fields.
struct FieldNames {
    ts: String,
    level: String,
    caller: String,
    msg: String,
}

/// Formats and writes every event.
pub struct VmLogger {
    format: LogFormat,
    output: LogOutput,
    timezone: TimeZone,
    timestamps: bool,
    names: FieldNames,
    errors: PerSecond,
    warns: PerSecond,
}

impl VmLogger {
    fn new(config: &LogConfig) -> Result<VmLogger, String> {
        let mut names = FieldNames {
            ts: "ts".into(),
            level: "level".into(),
            caller: "caller".into(),
            msg: "msg".into(),
        };
        for (from, to) in &config.json_fields {
            match from.as_str() {
                "ts" => names.ts = to.clone(),
                "level" => names.level = to.clone(),
                "caller" => names.caller = to.clone(),
                "msg" => names.msg = to.clone(),
                _ => {}
            }
        }
        Ok(VmLogger {
            format: config.format,
            output: config.output,
            timezone: timezone(&config.timezone)?,
            timestamps: !config.disable_timestamps,
            names,
            errors: PerSecond::new(config.errors_per_second),
            warns: PerSecond::new(config.warns_per_second),
        })
    }

    /// The timestamp as VictoriaMetrics writes it: `2006-01-02T15:04:05.000Z` (or `+0100` for zones
    /// other than UTC).
    fn timestamp(&self) -> String {
        let now = jiff::Timestamp::now().to_zoned(self.timezone.clone());
        let offset = now.offset().seconds();
        let mut out = now.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string();
        if offset == 0 {
            out.push('Z');
        } else {
            let _ = write!(out, "{}", now.strftime("%z"));
        }
        out
    }

    fn line(
        &self,
        level: &str,
        caller: &str,
        message: &str,
        fields: &[(&'static str, String)],
    ) -> String {
        let mut line = String::with_capacity(128 + message.len());
        match self.format {
            LogFormat::Default => {
                if self.timestamps {
                    line.push_str(&self.timestamp());
                    line.push('\t');
                }
                line.push_str(level);
                line.push('\t');
                line.push_str(caller);
                line.push('\t');
                line.push_str(message);
                for (name, value) in fields {
                    let _ = write!(line, " {name}={value}");
                }
            }
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                if self.timestamps {
                    object.insert(self.names.ts.clone(), self.timestamp().into());
                }
                object.insert(self.names.level.clone(), level.into());
                object.insert(self.names.caller.clone(), caller.into());
                object.insert(self.names.msg.clone(), message.into());
                for (name, value) in fields {
                    object
                        .entry(name.to_string())
                        .or_insert_with(|| value.clone().into());
                }
                line.push_str(&serde_json::Value::Object(object).to_string());
            }
        }
        line.push('\n');
        line
    }

    fn write(&self, line: &str) {
        // Nothing sensible can be done if the log stream is gone.
        let _ = match self.output {
            LogOutput::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            LogOutput::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
        };
    }
}

impl<S: Subscriber> Layer<S> for VmLogger {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let (level, limiter) = match *meta.level() {
            Level::ERROR => ("error", Some(&self.errors)),
            Level::WARN => ("warn", Some(&self.warns)),
            Level::INFO => ("info", None),
            Level::DEBUG | Level::TRACE => ("debug", None),
        };
        let mut visitor = Fields::default();
        if let Some(limiter) = limiter {
            match limiter.admit(meta.callsite()) {
                Admit::Yes => {}
                Admit::No => return,
                Admit::Last => {
                    visitor.message = format!(
                        "suppressing log message with rate limit={}: ",
                        limiter.limit
                    );
                }
            }
        }
        event.record(&mut visitor);
        let caller = match (meta.file(), meta.line()) {
            (Some(file), Some(line)) => format!("tenantgate/{file}:{line}"),
            _ => format!("tenantgate/{}", meta.target()),
        };
        self.write(&self.line(level, &caller, &visitor.message, &visitor.fields));
    }
}

/// An event's message and other fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

/// A per-second budget of lines at one level for each place in the code that logs
/// (`-loggerErrorsPerSecondLimit`, `-loggerWarnsPerSecondLimit`), as VictoriaMetrics counts them: the
/// first `limit` lines of a second are written, the next one with a `suppressing log message with rate
/// limit=N: ` prefix, the rest dropped until the second is over. Only warnings and errors pass here, so the
/// lock is never on a busy path.
struct PerSecond {
    limit: usize,
    /// The second being counted, and lines per call site in it.
    counts: Mutex<(i64, HashMap<tracing::callsite::Identifier, usize>)>,
}

enum Admit {
    Yes,
    No,
    /// Write it with the suppression prefix: the lines after it are dropped.
    Last,
}

impl PerSecond {
    fn new(limit: usize) -> PerSecond {
        PerSecond {
            limit,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(&self, callsite: tracing::callsite::Identifier) -> Admit {
        if self.limit == 0 {
            return Admit::Yes;
        }
        let now = jiff::Timestamp::now().as_second();
        let mut counts = match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if counts.0 != now {
            counts.0 = now;
            counts.1.clear();
        }
        let n = counts.1.entry(callsite).or_insert(0);
        *n += 1;
        match (*n).cmp(&(self.limit + 1)) {
            std::cmp::Ordering::Less => Admit::Yes,
            std::cmp::Ordering::Equal => Admit::Last,
            std::cmp::Ordering::Greater => Admit::No,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(format: LogFormat) -> LogConfig {
        LogConfig {
            format,
            level: LogLevel::Info,
            output: LogOutput::Stderr,
            timezone: "UTC".into(),
            json_fields: vec![("ts".into(), "timestamp".into())],
            max_arg_len: 1000,
            disable_timestamps: false,
            errors_per_second: 0,
            warns_per_second: 2,
            audit: None,
        }
    }

    #[test]
    fn default_lines_are_tab_separated_like_victoriametrics() {
        let logger = VmLogger::new(&config(LogFormat::Default)).unwrap();
        let line = logger.line(
            "info",
            "tenantgate/src/x.rs:1",
            "hello",
            &[("status", "502".into())],
        );
        let parts: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(parts.len(), 4, "{line}");
        assert!(parts[0].ends_with('Z') && parts[0].len() == "2006-01-02T15:04:05.000Z".len());
        assert_eq!(
            &parts[1..],
            ["info", "tenantgate/src/x.rs:1", "hello status=502"]
        );
    }

    #[test]
    fn json_lines_rename_fields_and_keep_structured_ones() {
        let logger = VmLogger::new(&config(LogFormat::Json)).unwrap();
        let line = logger.line("warn", "c", "m", &[("route", "read".into())]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["timestamp"].is_string() && v.get("ts").is_none());
        assert_eq!(
            (v["level"].as_str(), v["msg"].as_str(), v["route"].as_str()),
            (Some("warn"), Some("m"), Some("read"))
        );
    }

    #[test]
    fn other_zones_print_their_offset() {
        let mut c = config(LogFormat::Default);
        c.timezone = "Etc/GMT-3".into();
        let logger = VmLogger::new(&c).unwrap();
        assert!(
            logger.timestamp().ends_with("+0300"),
            "{}",
            logger.timestamp()
        );
        assert!(timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn long_arguments_keep_their_ends() {
        assert_eq!(truncate_arg("abcdefghij", 4), "a..j");
        assert_eq!(truncate_arg("abcdefghij", 6), "ab..ij");
        assert_eq!(truncate_arg("abc", 4), "abc");
        assert_eq!(truncate_arg("abcdefghij", 0), "abcdefghij");
        assert_eq!(truncate_arg("ééééé", 2), "é..é");
    }

    #[test]
    fn each_call_site_gets_its_budget_per_second() {
        let limiter = PerSecond::new(2);
        let site_a = tracing::callsite::Identifier(&A);
        let site_b = tracing::callsite::Identifier(&B);
        // Stay within one second (retry if the clock ticks over mid-test).
        for _ in 0..5 {
            let start = jiff::Timestamp::now().as_second();
            let a: Vec<u8> = (0..5)
                .map(|_| match limiter.admit(site_a.clone()) {
                    Admit::Yes => 1,
                    Admit::Last => 2,
                    Admit::No => 0,
                })
                .collect();
            let b = limiter.admit(site_b.clone());
            if jiff::Timestamp::now().as_second() == start {
                assert_eq!(a, [1, 1, 2, 0, 0]);
                assert!(
                    matches!(b, Admit::Yes),
                    "another call site has its own budget"
                );
                return;
            }
        }
        panic!("the clock kept ticking over");
    }

    // Not zero-sized, so the two statics have distinct addresses (identifiers compare addresses).
    struct Site(#[allow(dead_code)] u8);
    static A: Site = Site(1);
    static B: Site = Site(2);
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!("not used by the limiter")
        }
    }
}
