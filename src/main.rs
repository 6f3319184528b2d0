//! The `fhirguard` command: parse the command line, load the configuration, hand over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fhirguard::cli;

/// mimalloc: fewer cycles per allocation than the system allocator on the request path, and
/// memory of closed connections goes back to the OS sooner (see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Authorization sidecar for FHIR servers.
#[derive(Debug, Parser)]
#[command(name = "fhirguard", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (YAML or JSON).
        #[arg(long, env = "FHIRGUARD_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every error.
    Check {
        /// Configuration file (YAML or JSON).
        #[arg(long, env = "FHIRGUARD_CONFIG")]
        config: PathBuf,
        /// Also fetch each authority's discovery document and key set.
        #[arg(long)]
        probe: bool,
    },
    /// Run the full decision for one request without forwarding it, and print each step.
    Explain {
        /// Configuration file (YAML or JSON).
        #[arg(long, env = "FHIRGUARD_CONFIG")]
        config: PathBuf,
        /// The bearer token, or `-` to read it from standard input.
        #[arg(long)]
        token: String,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path and query relative to the FHIR base.
        #[arg(long, default_value = "/")]
        path: String,
        /// A batch/transaction bundle (JSON) to decide with `--method POST --path /`, or a
        /// create's or update's body to check under a patient context.
        #[arg(long)]
        body: Option<PathBuf>,
        /// A request header, `Name: value`; repeatable (e.g. `Origin: …` for a preflight).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
    },
    /// A self-contained demonstration on loopback: development identity provider, in-memory FHIR
    /// stand-in and the proxy, with ready-to-paste curl commands.
    Demo {
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin address (/metrics, /healthz, /readyz).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Serve { config } => cli::serve(&config),
        Command::Check { config, probe } => cli::check(&config, probe),
        Command::Explain {
            config,
            token,
            method,
            path,
            body,
            headers,
        } => cli::explain(&cli::ExplainRequest {
            config: &config,
            token: &token,
            method: &method,
            path: &path,
            body: body.as_deref(),
            headers: &headers,
        }),
        Command::Demo {
            listen,
            admin_listen,
        } => cli::demo(listen, admin_listen),
    }
}
