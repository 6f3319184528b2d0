//! Wiring: the shared state, the proxy and admin listeners, the key-set refresher and graceful
//! shutdown on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditError, Auditor};
use crate::auth::KeyStore;
use crate::body::BodyBuffers;
use crate::config::{Config, Limits};
use crate::metrics::Metrics;
use crate::proxy::replay::ReplayCache;
use crate::proxy::sender::ClientCertificate;
use crate::proxy::session::TokenCache;
use crate::proxy::{Generation, Peer, Proxy};
use crate::reload::Reloader;
use crate::server::{self, ListenerSettings, ServerError};
use crate::shared::{SetupError, SharedStore};
use crate::upstream::UpstreamError;

/// Why fhirguard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind, or its TLS certificate and key could not be loaded.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The client to the FHIR server could not be built (its URL, CA file or TLS).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The auditor could not start (`audit.fhirServer`'s client).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The `sharedState` store could not be set up (its CA file, password or settings).
    #[error(transparent)]
    SharedState(#[from] SetupError),
}

/// A running fhirguard: its bound addresses and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens (`listen`; the port the OS chose when it was 0).
    pub proxy_address: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`adminListen`).
    pub admin_address: SocketAddr,
    /// The proxy serving requests: its configuration in force, caches and metrics.
    pub proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    /// `shutdownGracePeriod`: also how long the audit queue may take to empty at the end.
    grace: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, waits for the listeners to drain, then sends what the audit queue
    /// holds (within the grace period).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.proxy.auditor.shutdown(self.grace).await;
    }

    /// Waits until the listeners end (after [`Running::signal_stop`] or a signal).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Asks the listeners to stop.
    pub fn signal_stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// How to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The file the config came from: watched for changes, reloaded on SIGHUP. None: no reload.
    pub config_path: Option<PathBuf>,
    /// How long in-flight requests may take to finish after a stop.
    pub grace: Duration,
}

/// Binds both listeners, starts the key-set fetches and serves until stopped.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let grace = options.grace;
    // Generation 1 is built the way every reload builds the next one; its digest is that of the
    // bytes `config` was parsed from, which the reloader compares later reads against.
    let generation = Generation::from_config(1, config)?;
    let listeners = Listeners::bind(&generation.config).await?;
    let proxy = Arc::new(proxy(generation)?);
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = key_set_tasks(&proxy, &stop);
    if let Some(path) = options.config_path {
        let reloader = Reloader::new(path, Arc::clone(&proxy)).spawn();
        tasks.push(abort_on_stop(reloader, stop.clone()));
    }
    let (proxy_address, admin_address) = (listeners.proxy_address, listeners.admin_address);
    tasks.extend(listeners.serve(&proxy, stop, grace));
    Ok(Running {
        proxy_address,
        admin_address,
        proxy,
        shutdown,
        grace,
        tasks,
    })
}

/// The proxy and admin listeners, bound, and the proxy's TLS acceptor (`tls`).
struct Listeners {
    proxy: TcpListener,
    proxy_address: SocketAddr,
    admin: TcpListener,
    admin_address: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: Limits,
}

impl Listeners {
    /// The TLS acceptor first (a bad certificate fails before anything is bound), then both
    /// listeners.
    async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let client_certificates = config.sender.request_client_certificates;
        let tls = (config.tls.as_ref())
            .map(|tls| server::tls_acceptor(tls, client_certificates))
            .transpose()?;
        let (proxy, proxy_address) = bind(config.listen).await?;
        let (admin, admin_address) = bind(config.admin_listen).await?;
        tracing::info!(listener = "proxy", address = %proxy_address, tls = tls.is_some(), "listening");
        tracing::info!(listener = "admin", address = %admin_address, "listening");
        Ok(Listeners {
            proxy,
            proxy_address,
            admin,
            admin_address,
            tls,
            limits: config.limits.clone(),
        })
    }

    /// Serves both listeners until `stop`, each draining within `grace`.
    fn serve(
        self,
        proxy: &Arc<Proxy>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> [JoinHandle<()>; 2] {
        let head_timeouts = |listener| proxy.metrics.head_timeouts.with_label_values(&[listener]);
        let proxy_settings = ListenerSettings {
            limits: self.limits.clone(),
            tls: self.tls,
            head_timeouts: head_timeouts("proxy"),
        };
        let admin_settings = ListenerSettings {
            limits: self.limits,
            tls: None,
            head_timeouts: head_timeouts("admin"),
        };
        [
            serve_proxy(self.proxy, proxy_settings, proxy, stop.clone(), grace),
            serve_admin(self.admin, admin_settings, proxy, stop, grace),
        ]
    }
}

/// One listener, bound, and the address it got (port 0 picks one).
async fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = server::bind(address).await?;
    let bound = (listener.local_addr()).map_err(|source| ServerError::Bind { address, source })?;
    Ok((listener, bound))
}

/// The proxy's state around generation 1: the key sets and introspection client, the metrics,
/// the audit queue, the shared store, the DPoP replay cache, the verified-token cache and the
/// buffered-bytes budget.
fn proxy(generation: Generation) -> Result<Proxy, StartError> {
    let keys = KeyStore::new();
    let metrics = Metrics::new();
    let config = &generation.config;
    let auditor = Auditor::start(config, &metrics)?;
    let shared = shared_store(config, &metrics, &keys)?;
    let replay = ReplayCache::new(config.sender.replay_cache_entries).sharing(shared.clone());
    let buffers = BodyBuffers::new(
        metrics.buffered_request_bytes.clone(),
        metrics.buffer_full_refusals.clone(),
        metrics.body_read_timeouts.clone(),
    );
    metrics.config_generation.set(1);
    Ok(Proxy {
        auditor,
        replay,
        shared,
        tokens: TokenCache::default(),
        generation: ArcSwap::from_pointee(generation),
        keys: Arc::new(keys),
        buffers,
        metrics,
    })
}

/// The store the replicas share (`sharedState`), read at start-up: the connection is made once,
/// lazily, and remade in the background whenever it breaks. With `sharedState.introspection`,
/// introspection answers go through it.
fn shared_store(
    config: &Config,
    metrics: &Metrics,
    keys: &KeyStore,
) -> Result<Option<Arc<SharedStore>>, SetupError> {
    let Some(settings) = config.shared_state.as_ref() else {
        return Ok(None);
    };
    let store = Arc::new(SharedStore::new(settings, metrics.shared.clone())?);
    if settings.introspection {
        keys.introspector().share(Arc::clone(&store));
    }
    Ok(Some(store))
}

/// Key sets are fetched before the proxy reports ready (requests that come earlier get 503),
/// then refreshed in the background until `stop`.
fn key_set_tasks(proxy: &Arc<Proxy>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let prefetch_proxy = Arc::clone(proxy);
    let prefetch = tokio::spawn(async move {
        let generation = prefetch_proxy.generation.load_full();
        prefetch_proxy.keys.prefetch(&generation.config).await;
    });
    let refresher = proxy.keys.spawn_refresher(Arc::clone(proxy));
    vec![prefetch, abort_on_stop(refresher, stop.clone())]
}

/// A task that ends `task` once `stop` turns true.
fn abort_on_stop(task: JoinHandle<()>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        task.abort();
    })
}

/// The proxy listener: each request goes to [`Proxy::handle`] with its peer and connection.
fn serve_proxy(
    listener: TcpListener,
    settings: ListenerSettings,
    proxy: &Arc<Proxy>,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> JoinHandle<()> {
    let proxy = Arc::clone(proxy);
    let service = move |mut request: http::Request<_>, connection: &server::Connection| {
        let peer = Peer {
            address: connection.peer,
            https: connection.https,
        };
        // The TLS client certificate rides with the request (RFC 8705 §3): nothing is added,
        // and nothing grows, for a connection without one.
        let certificate = connection.client_certificate.as_ref();
        if let Some(digest) = certificate.and_then(|cell| cell.get()) {
            request.extensions_mut().insert(ClientCertificate(*digest));
        }
        // Boxed: the request's future (5 KiB) lives only while the request does. Unboxed,
        // hyper's HTTP/1.1 connection keeps a slot of its size for the connection's whole life
        // (5,000 kept connections: 137 -> 112 MiB), and h2 copies it into every stream's task
        // (-5 % instructions a request on h2, +0.6 % plain: benches/README.md, round 3).
        let memo = Some(Arc::clone(&connection.memo));
        server::Answer(Box::pin(Arc::clone(&proxy).handle(request, peer, memo)))
    };
    tokio::spawn(server::serve(listener, settings, service, stop, grace))
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz` ([`crate::admin`]).
fn serve_admin(
    listener: TcpListener,
    settings: ListenerSettings,
    proxy: &Arc<Proxy>,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> JoinHandle<()> {
    let proxy = Arc::clone(proxy);
    let service = move |request, _connection: &server::Connection| {
        let proxy = Arc::clone(&proxy);
        async move { Ok(crate::admin::handle(proxy, request).await) }
    };
    tokio::spawn(server::serve(listener, settings, service, stop, grace))
}

/// Runs until SIGTERM or SIGINT, then drains within `shutdownGracePeriod`.
pub async fn run(config: Config, config_path: PathBuf) -> Result<(), StartError> {
    // Caught before the listeners open: a SIGTERM right after the "listening" line drains
    // instead of killing the process with the signal's default action.
    let shutdown = ShutdownSignal::install();
    let options = StartOptions {
        config_path: Some(config_path),
        grace: config.shutdown_grace_period,
    };
    let running = start(config, options).await?;
    shutdown.received().await;
    tracing::info!("shutdown signal received; draining");
    running.stop().await;
    Ok(())
}

/// SIGTERM and SIGINT, registered when installed so that none is missed while starting.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignal {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    async fn received(self) {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = (self.terminate, self.interrupt);
            if terminate.is_none() && interrupt.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                () = received(terminate.as_mut()) => {}
                () = received(interrupt.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The next delivery of `signal`; never, for a signal that could not be registered.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
