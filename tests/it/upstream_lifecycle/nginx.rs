//! fhirguard with `upstream.http2: true` in front of Debian's nginx speaking h2c (`listen …
//! http2`), whose default `keepalive_requests 1000` ends every connection with a GOAWAY after
//! 1,000 requests — streams the client opened past the GOAWAY's last-stream-id are not
//! processed. Under load, no request may fail, and nginx's access log (the connection, its
//! request count and each request's nonce) shows every request read once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::{proxy, retries, NONCE};
use crate::support::client::HttpClient;
use crate::support::poll::eventually;

/// Requests sent, and at once.
const REQUESTS: usize = 5_000;
const CONCURRENCY: usize = 32;

/// nginx on a port of its own, stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(binary: &Path) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        // A free port: nginx binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let root = dir.path().display();
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format nonces '$connection $connection_requests $http_x_test_nonce';
    access_log {root}/access.log nonces;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            default_type application/fhir+json;
            return 200 '{{"resourceType":"Patient","id":"1"}}';
        }}
    }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Nginx { child, port, dir }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx binary, installed with the Debian package when missing (as `.ci/run` does); `None`
/// (the test skipped, with a message) when it cannot be had outside CI.
fn nginx_binary() -> Option<PathBuf> {
    let find = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    };
    if find().is_none() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status();
    }
    let found = find();
    if found.is_none() {
        let hint = "install the Debian package nginx";
        assert!(
            std::env::var_os("CI").is_none_or(|ci| ci.is_empty()),
            "nginx is missing under CI: {hint}"
        );
        let _ = writeln!(std::io::stderr(), "SKIPPED: nginx is not installed; {hint}");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_when_nginx_ends_h2_connections_with_goaway() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let nginx = Nginx::start(&binary);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], nginx.port));
    eventually("nginx listens", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(address).await.is_ok()
    })
    .await;
    let guard = Arc::new(proxy(address, "http2: true").await);
    let token = guard.stack.token();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, token) = (Arc::clone(&next), token.clone());
            let proxy = guard.running.proxy_address;
            tokio::spawn(async move {
                let client = HttpClient::default();
                let authorization = format!("Bearer {token}");
                let mut failed = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= REQUESTS {
                        return failed;
                    }
                    let nonce = format!("n{n}");
                    let headers = [("authorization", authorization.as_str()), (NONCE, &nonce)];
                    match client.send("GET", proxy, "/Patient/1", &headers).await {
                        Ok((StatusCode::OK, _)) => {}
                        other => failed.push(format!("{nonce}: {other:?}")),
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for worker in workers {
        failed.extend(worker.await.unwrap());
    }
    let text = guard.metrics().await;
    Arc::into_inner(guard).unwrap().running.stop().await;
    let (refused, unsent) = (retries(&text, "refused_stream"), retries(&text, "unsent"));
    let access = nginx.log("access.log");
    let error_log = nginx.log("error.log");
    drop(nginx);

    assert!(
        failed.is_empty(),
        "{} failed: {failed:?}\n{error_log}",
        failed.len()
    );
    // Each line: the connection, its request count, the nonce.
    let mut nonces: BTreeMap<&str, usize> = BTreeMap::new();
    let mut connections = BTreeSet::new();
    let mut most = 0;
    for line in access.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [connection, requests, nonce] = fields[..] else {
            panic!("access log line {line:?}");
        };
        connections.insert(connection);
        most = most.max(requests.parse::<usize>().unwrap());
        *nonces.entry(nonce).or_default() += 1;
    }
    assert_eq!(nonces.len(), REQUESTS, "every request read");
    assert!(nonces.values().all(|n| *n == 1), "a nonce read twice");
    assert_eq!(
        most, 1_000,
        "nginx's default keepalive_requests ended the connections"
    );
    assert!(
        connections.len() >= REQUESTS / 1_000,
        "{} connections",
        connections.len()
    );
    // Streams in flight past a GOAWAY's last-stream-id, sent again (tens a run).
    assert!(refused > 0.0, "no refused stream was sent again");
    let _ = writeln!(
        std::io::stderr(),
        "nginx h2c: {REQUESTS} requests, {} connections, {refused} refused streams sent again, \
         {unsent} unsent",
        connections.len()
    );
}
