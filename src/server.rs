//! The listeners: accept loop, optional TLS (rustls), HTTP/1.1 and h2 on one port
//! (hyper-util auto), header size limit, graceful shutdown, and the first-head deadline: a
//! connection has `limits.headerReadTimeout` from the moment it is accepted to deliver its
//! first request head — TLS handshake, HTTP/2 preface and SETTINGS included (SPEC §7) — or it
//! is closed. hyper's own HTTP/1.1 header timeout only starts once the protocol is known, and
//! hyper-util's protocol detection waits for the 24-byte preface without any: a connection that
//! sends nothing, or half a preface, would otherwise stay open for good. Later heads on a
//! keep-alive connection are timed by hyper (HTTP/1.1; an idle keep-alive connection closing is
//! normal, so those are not counted as head timeouts) or belong to open streams (h2).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::config::{Limits, Tls};
use crate::proxy::session::ConnectionMemo;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `listen` or `adminListen` could not be bound (in use, no permission, no such address).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address as configured.
        address: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// `tls.certFile` or `tls.keyFile` could not be read.
    #[error("cannot read {path}: {source}")]
    ReadPem {
        /// The file as configured.
        path: String,
        /// The read error.
        source: io::Error,
    },
    /// `tls.certFile` or `tls.keyFile` is not PEM.
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        /// The file as configured.
        path: String,
        /// What the PEM reader found wrong.
        source: pem::Error,
    },
    /// `tls.keyFile` holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{0} holds no private key")]
    NoKey(String),
    /// `tls.certFile` holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The listen backlog: room for a burst of new connections (a sidecar restarted under load, a
/// load balancer opening its pool) without SYN retries; the kernel caps it at `somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener, reporting the address in the error.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ServerError> {
    let bind = || {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As std and tokio do for listeners: a restart may bind while old connections linger.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| ServerError::Bind { address, source })
}

/// Builds the rustls acceptor from PEM files, offering h2 and http/1.1 by ALPN.
/// `client_certificates`: ask clients for an (optional) certificate, for certificate-bound
/// tokens (RFC 8705 §2.2, `AnyClientCertificate`).
pub fn tls_acceptor(tls: &Tls, client_certificates: bool) -> Result<TlsAcceptor, ServerError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServerError::ReadPem {
            path: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read(&tls.cert_file)?;
    let key_pem = read(&tls.key_file)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServerError::Pem {
            path: tls.cert_file.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate(
            tls.cert_file.display().to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| {
        let path = tls.key_file.display().to_string();
        match source {
            pem::Error::NoItemsFound => ServerError::NoKey(path),
            source => ServerError::Pem { path, source },
        }
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_certificates {
        true => builder.with_client_cert_verifier(Arc::new(AnyClientCertificate(provider))),
        false => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// RFC 8705 §2.2 (self-signed certificate mutual TLS): any client certificate is accepted at
/// the handshake, which still proves the client holds its private key (the CertificateVerify
/// signature is checked); what the certificate is good for is decided per request, by the
/// token's `cnf.x5t#S256`. A client without a certificate connects too.
#[derive(Debug)]
struct AnyClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The connection settings of a listener.
#[derive(Clone)]
pub struct ListenerSettings {
    /// The header and body limits and read timeouts (`limits`).
    pub limits: Limits,
    /// The TLS acceptor when the listener terminates TLS (`tls`); plain HTTP otherwise.
    pub tls: Option<TlsAcceptor>,
    /// Counts connections closed for want of a request head in time.
    pub head_timeouts: IntCounter,
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What a service knows of the connection a request came on.
#[derive(Debug)]
pub struct Connection {
    /// The client's address as the socket sees it (a proxy's, behind one).
    pub peer: SocketAddr,
    /// The listener terminated TLS.
    pub https: bool,
    /// The connection's last token (see [`ConnectionMemo`]).
    pub memo: Arc<ConnectionMemo>,
    /// SHA-256 of the DER of the TLS client certificate, once the handshake has shown one
    /// (`None` on a plain listener).
    pub client_certificate: Option<Arc<OnceLock<[u8; 32]>>>,
}

/// Serves connections until `shutdown` turns true, then stops accepting and waits up to
/// `grace` for the connections in flight to finish.
pub async fn serve<S, F>(
    listener: TcpListener,
    settings: ListenerSettings,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    S: Fn(Request<Incoming>, &Connection) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let builder = connection_builder(&settings.limits);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The first head is due this long after accept, whatever comes before it.
        let deadline = tokio::time::Instant::now() + settings.limits.header_read_timeout;
        let started = Arc::new(AtomicBool::new(false));
        let https = settings.tls.is_some();
        let service = service.clone();
        // The service's own future, not wrapped in another: it is moved on every request.
        let client_certificate = https.then(|| Arc::new(OnceLock::new()));
        let connection = Connection {
            peer,
            https,
            memo: Arc::default(),
            client_certificate: client_certificate.clone(),
        };
        let first_head = Arc::clone(&started);
        let handler = service_fn(move |request| {
            first_head.store(true, Ordering::Relaxed);
            service(request, &connection)
        });
        let first_head = FirstHead {
            deadline,
            started,
            head_timeouts: settings.head_timeouts.clone(),
            peer,
        };
        // One spawn a protocol, so a plain connection's task is not sized for the TLS one's.
        match settings.tls.clone() {
            None => {
                let connection = builder
                    .serve_connection(TokioIo::new(stream), handler)
                    .into_owned();
                tokio::spawn(first_head.watch(Box::pin(graceful.watch(connection))));
            }
            Some(acceptor) => {
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(first_head.watch(Box::pin(async move {
                    let tls = acceptor.accept(stream).await?;
                    let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                    if let (Some(cell), Some(certificate)) = (&client_certificate, presented) {
                        let _ = cell.set(Sha256::digest(certificate).into());
                    }
                    let connection = builder
                        .serve_connection(TokioIo::new(tls), handler)
                        .into_owned();
                    watcher.watch(connection).await
                })));
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections finished"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}

/// A boxed future of an answer, as hyper's service wants it: a `Result` that cannot fail.
/// Not an `async` block around the future, which would copy the future's state into its own
/// when first polled.
pub struct Answer<F: ?Sized>(pub Pin<Box<F>>);

impl<F: ?Sized> std::fmt::Debug for Answer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

impl<F: Future + ?Sized> Future for Answer<F> {
    type Output = Result<F::Output, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// The first-head deadline of one connection.
struct FirstHead {
    deadline: tokio::time::Instant,
    /// Set by the service when the first request head has arrived.
    started: Arc<AtomicBool>,
    head_timeouts: IntCounter,
    peer: SocketAddr,
}

impl FirstHead {
    /// Serves a connection (TLS handshake included) to its end, closing it when no request
    /// head has come by the deadline, and counts that.
    ///
    /// `served` comes boxed: an async fn keeps its arguments apart from its locals, so a future
    /// passed by value would take its (large) size twice in the connection's task.
    async fn watch<F>(self, served: Pin<Box<F>>)
    where
        F: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + ?Sized,
    {
        let peer = self.peer;
        match first_head_by(self.deadline, &self.started, served).await {
            Some(Ok(())) => {}
            // hyper's own HTTP/1.1 header timer, started a moment after accept, may fire in
            // the same tick: a first head not in time all the same.
            Some(Err(error))
                if !self.started.load(Ordering::Relaxed) && is_header_timeout(&*error) =>
            {
                self.head_timeouts.inc();
                tracing::debug!(%peer, "no request head within limits.headerReadTimeout; closed");
            }
            Some(Err(error)) => {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            None => {
                self.head_timeouts.inc();
                tracing::debug!(%peer, "no request head within limits.headerReadTimeout of accept; closed");
            }
        }
    }
}

/// Runs a connection to its end, unless no request head has come by `deadline` (`started` is
/// still false): then it is dropped, which closes the socket, and the answer is `None`.
async fn first_head_by<F: Future + ?Sized>(
    deadline: tokio::time::Instant,
    started: &AtomicBool,
    mut served: Pin<Box<F>>,
) -> Option<F::Output> {
    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
    // Once the first head has come the timer is never polled again: every later wake-up of the
    // connection (one or more a request) costs an atomic load, not a timer poll.
    std::future::poll_fn(|cx| {
        if let Poll::Ready(ended) = served.as_mut().poll(cx) {
            return Poll::Ready(Some(ended));
        }
        if started.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// hyper's HTTP/1.1 header-read timeout.
fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// The HTTP/1.1 and h2 settings of every listener (public for `examples/bare_proxy.rs`).
pub fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when the head outgrows its buffer (minimum 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8192))
        // A response's head and (small) body copied into one buffer and written at once,
        // instead of a vectored write: one TLS record made from one slice. Measured with
        // callgrind (benches/README.md, issue 23): 0.4–1.8 % fewer instructions a request over
        // TLS, 0.3–0.8 % plain, the same system calls.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}
