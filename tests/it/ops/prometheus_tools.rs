//! The tools of the Debian package `prometheus` for tests/it/ops.rs: finding promtool and the
//! server on PATH (skip with a message when missing, fail under CI), running a child process with
//! a deadline, and a real Prometheus server on loopback that is killed on drop.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::poll::eventually_blocking;

/// The path of `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The path of `tool` on PATH, installing the Debian package `prometheus` once
/// (tests/ops/install.sh) when it is missing, so the README's test command sets itself up.
/// Still missing: `None` with a message, or a failure under CI.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if on_path(name).is_none() {
        INSTALLED.get_or_init(|| {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ops/install.sh");
            let _ = Command::new("bash")
                .arg(script)
                .stdin(Stdio::null())
                .status();
        });
    }
    let found = on_path(name);
    if found.is_none() {
        let hint = "install the Debian package prometheus (tests/ops/install.sh)";
        assert!(
            std::env::var_os("CI").is_none_or(|ci| ci.is_empty()),
            "{name} is missing under CI: {hint}"
        );
        // Straight to stderr: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {name} is not installed; {hint}"
        );
    }
    found
}

/// Waits for `child` (whose stdin is closed) at most `timeout`, killing it past that.
pub(crate) fn wait_with_deadline(mut child: Child, timeout: Duration) -> std::process::Output {
    if eventually_blocking(timeout, || child.try_wait().expect("wait")).is_none() {
        let _ = child.kill();
        panic!("{child:?} did not finish within {timeout:?}");
    }
    child.wait_with_output().expect("output")
}

/// A Prometheus server on 127.0.0.1, killed on drop.
pub(crate) struct PrometheusServer {
    child: Child,
    pub(crate) address: SocketAddr,
    log: PathBuf,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `target` every second, with its storage in `dir`. The port
    /// is found free and then handed over, so a rare clash is retried.
    pub(crate) fn start(binary: &Path, dir: &Path, target: SocketAddr) -> PrometheusServer {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fhirguard\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        for attempt in 1..=3 {
            let address = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port");
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus log"))
                .spawn()
                .expect("start prometheus");
            let mut server = PrometheusServer {
                child,
                address,
                log: log.clone(),
            };
            if server.listening(Duration::from_secs(60)) {
                return server;
            }
            eprintln!("prometheus did not come up on {address} (attempt {attempt})");
        }
        panic!(
            "prometheus never came up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Waits until the web listener accepts; false if the process exited first.
    fn listening(&mut self, timeout: Duration) -> bool {
        eventually_blocking(timeout, || {
            if self.child.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            std::net::TcpStream::connect_timeout(&self.address, Duration::from_millis(200))
                .ok()
                .map(|_| true)
        })
        .unwrap_or(false)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of an instant query's values, if the query succeeded and returned any series.
pub(crate) fn query_sum(answer: &Value) -> Option<f64> {
    if answer["status"] != "success" {
        return None;
    }
    let series = answer["data"]["result"].as_array()?;
    if series.is_empty() {
        return None;
    }
    series
        .iter()
        .map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .sum()
}
