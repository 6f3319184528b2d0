//! The subcommands behind the thin `main`: `serve`, `check`, `explain` and `demo`.

pub mod check;
pub mod demo;
pub mod explain;
mod logging;

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

pub use check::check;
pub use demo::demo;
pub use explain::{explain, ExplainRequest};

/// `EX_USAGE` (sysexits.h): the configuration is invalid.
pub const EXIT_CONFIG: u8 = 64;
/// The process could not start (a port in use, an unreadable TLS file, …).
pub const EXIT_START: u8 = 1;

/// `fhirguard serve --config FILE`.
pub fn serve(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "fhirguard: invalid configuration {}:\n{errors}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init(&config.logging);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // `workerThreads`; tokio's default is one per core (or `TOKIO_WORKER_THREADS`).
    if let Some(threads) = config.worker_threads {
        builder.worker_threads(threads.get());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fhirguard: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_START);
        }
    };
    match runtime.block_on(crate::app::run(config, path.to_path_buf())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("fhirguard: {error}");
            ExitCode::from(EXIT_START)
        }
    }
}
