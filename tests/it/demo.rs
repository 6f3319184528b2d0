//! `fhirguard demo` end to end: start it on ephemeral ports, run every printed `curl` command
//! and check the status it promised, then stop it with SIGINT. Its browser SMART app is driven
//! in [`browser_app`].

mod browser_app;

use crate::support::poll::eventually_blocking;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the demo if the test fails half-way.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fhirguard demo` on ephemeral ports; the demo and the walkthrough it printed.
fn start() -> (Demo, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fhirguard demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Demo(child);

    // Read the walkthrough on a thread so a silent demo fails by deadline, not by hanging.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo printed its walkthrough in time");
        let done = line.starts_with("Press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    (demo, lines)
}

/// The proxy's base URL, as printed.
fn proxy_url(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|line| line.trim().strip_prefix("proxy:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the proxy address is printed")
        .to_owned()
}

#[test]
fn demo_commands_answer_as_printed() {
    let (mut demo, lines) = start();

    let mut checked = 0;
    let mut expected = None;
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# ") {
            expected = rest
                .rsplit_once("(expect ")
                .and_then(|(_, status)| status.trim_end_matches(')').parse::<u16>().ok());
            continue;
        }
        let (Some(status), Some(command)) = (expected.take(), line.strip_prefix("curl -i ")) else {
            continue;
        };
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {command}"
            ))
            .output()
            .expect("run curl");
        let got = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert_eq!(got, status.to_string(), "command: curl -i {command}");
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} commands were printed");

    // The printed token-endpoint commands issue tokens that pass: a SMART v2 patient token and
    // a backend-services token.
    let proxy = proxy_url(&lines);
    let mut issued = 0;
    for line in lines
        .iter()
        .filter(|l| l.starts_with("curl -s -d grant_type="))
    {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{line} --max-time 10"))
            .output()
            .expect("run curl");
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the token endpoint answers JSON");
        let token = answer["access_token"].as_str().expect("access_token");
        let target = if line.contains("system/") {
            "Patient/other"
        } else {
            "Patient/example"
        };
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{proxy}/{target}"))
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "200", "{line}");
        issued += 1;
    }
    assert_eq!(issued, 2, "a patient and a backend token command");

    // SIGINT stops the demo cleanly.
    let pid = demo.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = eventually_blocking(Duration::from_secs(15), || demo.0.try_wait().expect("wait"))
        .expect("demo did not stop on SIGINT");
    assert!(status.success(), "demo exited with {status}");
}
