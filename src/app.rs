//! Wiring: the shared state, the proxy and admin listeners, the key-set refresher and graceful
//! shutdown on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::audit::{AuditError, Auditor};
use crate::auth::KeyStore;
use crate::body::BodyBuffers;
use crate::config::Config;
use crate::metrics::Metrics;
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
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    SharedState(#[from] SetupError),
}

/// A running fhirguard: its bound addresses and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    pub proxy_address: SocketAddr,
    pub admin_address: SocketAddr,
    pub proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    /// `shutdownGracePeriod`: also how long the audit queue may take to empty at the end.
    grace: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
    let config = &generation.config;
    let client_certificates = config.sender.request_client_certificates;
    let tls = config
        .tls
        .as_ref()
        .map(|tls| server::tls_acceptor(tls, client_certificates))
        .transpose()?;
    let proxy_listener = server::bind(config.listen).await?;
    let admin_listener = server::bind(config.admin_listen).await?;
    let proxy_address = proxy_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            address: config.listen,
            source,
        })?;
    let admin_address = admin_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            address: config.admin_listen,
            source,
        })?;
    tracing::info!(listener = "proxy", address = %proxy_address, tls = tls.is_some(), "listening");
    tracing::info!(listener = "admin", address = %admin_address, "listening");

    let limits = config.limits.clone();
    let keys = Arc::new(KeyStore::new());
    let metrics = Metrics::new();
    let auditor = Auditor::start(&generation.config, &metrics)?;
    // `sharedState` is read at start-up: the connection is made once, lazily, and remade in the
    // background whenever it breaks.
    let shared = (generation.config.shared_state.as_ref())
        .map(|settings| SharedStore::new(settings, metrics.shared.clone()).map(Arc::new))
        .transpose()?;
    if let (Some(store), Some(true)) = (
        &shared,
        (generation.config.shared_state.as_ref()).map(|s| s.introspection),
    ) {
        keys.introspector().share(Arc::clone(store));
    }
    let replay =
        crate::proxy::replay::ReplayCache::new(generation.config.sender.replay_cache_entries)
            .sharing(shared.clone());
    let proxy = Arc::new(Proxy {
        auditor,
        replay,
        shared,
        tokens: TokenCache::default(),
        generation: ArcSwap::from_pointee(generation),
        keys: Arc::clone(&keys),
        buffers: BodyBuffers::new(
            metrics.buffered_request_bytes.clone(),
            metrics.buffer_full_refusals.clone(),
            metrics.body_read_timeouts.clone(),
        ),
        metrics,
    });
    proxy.metrics.config_generation.set(1);
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = Vec::new();

    // Key sets are fetched before the proxy reports ready; requests that come earlier get 503.
    let prefetch_proxy = Arc::clone(&proxy);
    tasks.push(tokio::spawn(async move {
        let generation = prefetch_proxy.generation.load_full();
        prefetch_proxy.keys.prefetch(&generation.config).await;
    }));
    let refresher = keys.spawn_refresher(Arc::clone(&proxy));
    let mut refresher_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        let _ = refresher_stop.wait_for(|stop| *stop).await;
        refresher.abort();
    }));

    if let Some(path) = options.config_path {
        let reloader = Reloader::new(path, Arc::clone(&proxy)).spawn();
        let mut reloader_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = reloader_stop.wait_for(|stop| *stop).await;
            reloader.abort();
        }));
    }

    let head_timeouts = |listener| proxy.metrics.head_timeouts.with_label_values(&[listener]);
    let handler_proxy = Arc::clone(&proxy);
    let proxy_service = move |mut request: http::Request<_>, connection: &server::Connection| {
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
        Arc::clone(&handler_proxy).serve(request, peer, Arc::clone(&connection.memo))
    };
    tasks.push(tokio::spawn(server::serve(
        proxy_listener,
        ListenerSettings {
            limits: limits.clone(),
            tls,
            head_timeouts: head_timeouts("proxy"),
        },
        proxy_service,
        stop.clone(),
        grace,
    )));
    let admin_proxy = Arc::clone(&proxy);
    let admin_service = move |request, _connection: &server::Connection| {
        let proxy = Arc::clone(&admin_proxy);
        async move { Ok(crate::admin::handle(proxy, request).await) }
    };
    tasks.push(tokio::spawn(server::serve(
        admin_listener,
        ListenerSettings {
            limits,
            tls: None,
            head_timeouts: head_timeouts("admin"),
        },
        admin_service,
        stop,
        grace,
    )));

    Ok(Running {
        proxy_address,
        admin_address,
        proxy,
        shutdown,
        grace,
        tasks,
    })
}

/// Runs until SIGTERM or SIGINT, then drains within `shutdownGracePeriod`.
pub async fn run(config: Config, config_path: PathBuf) -> Result<(), StartError> {
    let options = StartOptions {
        config_path: Some(config_path),
        grace: config.shutdown_grace_period,
    };
    let running = start(config, options).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
