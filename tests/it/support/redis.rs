//! A real `redis-server` (the Debian package, `.ci/run` installs it) on a free loopback port,
//! started and stopped by the test that needs it: no persistence, its files in a temporary
//! directory. [`RedisServer::kill`] and [`RedisServer::restart`] take it away and bring it back on
//! the same port, as an outage would; with [`RedisServer::start_tls`] it speaks TLS only, with
//! a `localhost` certificate whose PEM is the test CA.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::poll::eventually_blocking;
use super::tls::ServerCertificate;

/// How long a starting server may take to accept connections.
const START: Duration = Duration::from_secs(30);

pub struct RedisServer {
    child: Option<Child>,
    pub address: SocketAddr,
    /// The certificate of a TLS server; its PEM is the CA a client trusts.
    pub tls: Option<ServerCertificate>,
    dir: TempDir,
}

impl RedisServer {
    /// A plain `redis://` server.
    pub fn start() -> RedisServer {
        RedisServer::launch(None)
    }

    /// A `rediss://` server (TLS only, no client certificates asked for).
    pub fn start_tls() -> RedisServer {
        RedisServer::launch(Some(ServerCertificate::localhost()))
    }

    /// Found free, then handed over: a rare clash fails the test, naming the port.
    fn launch(tls: Option<ServerCertificate>) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut server = RedisServer {
            child: None,
            address,
            tls,
            dir,
        };
        assert!(server.spawn(), "redis-server came up on {address}");
        server
    }

    /// The URL fhirguard's `sharedState.redis.url` names.
    pub fn url(&self) -> String {
        match &self.tls {
            Some(_) => format!("rediss://localhost:{}/0", self.address.port()),
            None => format!("redis://{}/0", self.address),
        }
    }

    /// The CA file of a TLS server.
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().expect("a TLS server").cert_file.clone()
    }

    /// Starts the process on `address` and waits until it accepts connections.
    fn spawn(&mut self) -> bool {
        let port = self.address.port().to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        match &self.tls {
            Some(certificate) => {
                command
                    .args([
                        "--port",
                        "0",
                        "--tls-port",
                        &port,
                        "--tls-auth-clients",
                        "no",
                    ])
                    .arg("--tls-cert-file")
                    .arg(&certificate.cert_file)
                    .arg("--tls-key-file")
                    .arg(&certificate.key_file);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let address = self.address;
        eventually_blocking(START, || TcpStream::connect(address).ok()).is_some()
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server came back on {}", self.address);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
