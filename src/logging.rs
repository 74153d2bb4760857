//! Log output: `-loggerFormat` (default or json) and `-loggerLevel`, on stderr as VictoriaMetrics does.

use tracing_subscriber::filter::LevelFilter;

use crate::flags::{LogFormat, LogLevel};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat, level: LogLevel) {
    let filter = match level {
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => LevelFilter::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Default => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
