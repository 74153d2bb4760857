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
    tenantgate::logging::init(config.logger_format, config.logger_level);
    if !config.licence_flags_seen.is_empty() {
        let names: Vec<String> = config
            .licence_flags_seen
            .iter()
            .map(|n| format!("-{n}"))
            .collect();
        tracing::info!(
            "ignoring {}: tenantgate is open source and needs no licence",
            names.join(", ")
        );
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
