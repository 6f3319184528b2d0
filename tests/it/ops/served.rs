//! The real `fhirguard serve --config FILE` process, for what only a process shows: its signal
//! handling, its exit status, and its log lines. Stderr (JSON lines) is collected on a thread;
//! the listeners' addresses come from the `listening` lines, so the config can use port 0. The
//! process is killed if a test fails half-way.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// A running `fhirguard serve`.
#[derive(Debug)]
pub(crate) struct Served {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Served {
    /// Starts the binary on `config` with `FHIRGUARD_LOG` set to `log_filter`.
    pub(crate) fn spawn(config: &Path, log_filter: &str) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("FHIRGUARD_LOG", log_filter)
            .env_remove("FHIRGUARD_CONFIG")
            // Colour is decided by the terminal; NO_COLOR in the test's environment would hide it.
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fhirguard serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Served {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The lines logged so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The address of `listener` ("proxy" or "admin"), from the line
    /// `{"message":"listening","listener":…,"address":…}`.
    pub(crate) async fn address(&mut self, listener: &str) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.lines().iter().find_map(|line| {
                let line: Value = serde_json::from_str(line).ok()?;
                (line["message"] == "listening" && line["listener"] == listener)
                    .then(|| line["address"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(address) = found {
                return address;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "fhirguard exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no 'listening' line for the {listener} listener:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub(crate) async fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for fhirguard") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fhirguard did not exit within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After the exit: every line the process wrote to stderr.
    pub(crate) fn all_lines(mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            // The pipe closed when the process exited, so the reader ends.
            reader.join().expect("stderr reader");
        }
        self.lines()
    }

    /// The log so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        self.lines().join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON objects among `lines`; panics on a line that is not one (JSON is the default format).
pub(crate) fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(value.is_object(), "not a JSON object: {line}");
            value
        })
        .collect()
}

/// A config file in a new directory; the directory lives as long as the returned guard.
pub(crate) fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}
