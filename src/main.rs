//! The `tenantgate` binary: parse flags, set up logging, run the gateway. Nothing else lives here.

use std::process::ExitCode;

use tenantgate::flags::{self, Parsed};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let config = match flags::parse(std::env::args().skip(1), &env) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("tenantgate-{}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tenantgate: {e}\nRun tenantgate -help for the list of flags.");
            return ExitCode::from(2);
        }
    };
    if config.auth.check.is_some() {
        // Check mode: only warnings and errors beside the report.
        let mut log = config.log.clone();
        log.level = flags::LogLevel::Warn;
        let _ = tenantgate::logging::init(&log);
        let (report, code) = tenantgate::check::run(config);
        print!("{report}");
        return ExitCode::from(code);
    }
    if let Err(e) = tenantgate::logging::init(&config.log) {
        eprintln!("tenantgate: {e}");
        return ExitCode::from(2);
    }
    let dashed = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("-{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !config.compat.licence_flags_seen.is_empty() {
        tracing::info!(
            "ignoring {}: tenantgate is open source and needs no licence",
            dashed(&config.compat.licence_flags_seen)
        );
    }
    if !config.compat.ignored_flags_seen.is_empty() {
        tracing::info!(
            "ignoring {}: Go runtime and storage tuning has no meaning in tenantgate",
            dashed(&config.compat.ignored_flags_seen)
        );
    }
    for warning in &config.compat.warnings {
        tracing::warn!("{warning}");
    }
    match tenantgate::listen::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", e.message);
            eprintln!("tenantgate: {}", e.message);
            ExitCode::from(e.exit_code)
        }
    }
}
