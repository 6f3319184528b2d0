//! The real OpenID provider of the interop suites (npm `oidc-provider`,
//! `tests/interop/oidc-provider.mjs`) as a child process, for the sender-constrained token
//! suites (`dpop`, `mtls`): started with `npm ci` first when its packages are missing, killed
//! when dropped. Without Node.js the suites are skipped, except under CI (env `CI`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The resource indicator (RFC 8707) the provider issues access tokens for: their `aud`.
pub const RESOURCE: &str = "https://fhir.example.test";

/// A running provider; killed and reaped when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// `Some(())` when Node.js runs and the locked packages are installed (installing them when
/// missing); `None` (skip) only outside CI.
pub fn prepared() -> Option<()> {
    crate::interop_oidc::node_available()?;
    crate::interop_oidc::ensure_node_modules();
    Some(())
}

/// Starts the provider on an ephemeral loopback port and reads its greeting.
pub fn start() -> OidcProvider {
    let mut child = Command::new("node")
        .arg("oidc-provider.mjs")
        .arg("0")
        .current_dir(interop_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let greeting: Option<Value> = read.ok().and_then(|_| serde_json::from_str(&line).ok());
    let issuer = greeting.as_ref().and_then(|g| g["issuer"].as_str());
    let Some(issuer) = issuer.map(str::to_owned) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("oidc-provider: bad greeting {line:?}");
    };
    OidcProvider { child, issuer }
}
