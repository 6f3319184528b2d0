//! `fhirguard demo` end to end: start it on ephemeral ports, run every printed `curl` command
//! and check the status it promised, then stop it with SIGINT.

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

#[test]
fn demo_commands_answer_as_printed() {
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
    let mut demo = Demo(child);

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
    assert!(checked >= 6, "only {checked} commands were printed");

    // SIGINT stops the demo cleanly.
    let pid = demo.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = demo.0.try_wait().expect("wait") {
            assert!(status.success(), "demo exited with {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
