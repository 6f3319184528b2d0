//! The subcommands behind the thin `main`: `serve`, `check`, `explain` and `demo`.

pub mod check;
pub mod demo;
pub mod explain;
mod logging;

use std::num::NonZeroUsize;
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
    // `workerThreads`; the default is one per core the process may run on.
    let threads = config
        .worker_threads
        .map_or_else(available_cores, NonZeroUsize::get);
    // One worker: a current-thread runtime does the same work without the cross-thread
    // scheduling a multi-thread one pays for on every wake-up.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
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

/// The cores this process may run on (its CPU affinity), at least one.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}
