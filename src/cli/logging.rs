//! Log set-up: JSON lines by default (fields flattened, one object per line), text when asked;
//! the level from the config, overridden by `FHIRGUARD_LOG`. Text is coloured only on a
//! terminal: a file, a pipe or a log collector would keep ANSI escape codes as bytes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Logging};

/// Installs the global subscriber once; later calls are ignored.
pub(crate) fn init(logging: &Logging) {
    let filter = EnvFilter::try_from_env("FHIRGUARD_LOG")
        .or_else(|_| EnvFilter::try_new(&logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match logging.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .try_init(),
    };
}

/// Colour for text logs: only on a terminal, and never when `NO_COLOR` is set to anything but
/// the empty string (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
