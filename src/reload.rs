//! Configuration hot reload (SPEC §5): file-system events in the config file's directory (an
//! in-place edit, an editor's rename-over, the Kubernetes ConfigMap `..data` symlink swap) and
//! SIGHUP lead to one path — read the file once, compare its digest with the serving generation's,
//! build a [`Generation`] from that same buffer (the validation start-up and `fhirguard check`
//! use), then swap it in atomically. A file that fails keeps the old generation serving; it is
//! logged with every error and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigFile};
use crate::proxy::{Generation, Proxy};

/// Events closer together than this are one change (editors write, rename and chmod in bursts).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new generation is serving.
    Applied {
        /// The new generation's number (`fhirguard_config_generation`).
        generation: u64,
    },
    /// The file's content did not change.
    Unchanged,
    /// The file is invalid or could not be built; the old generation keeps serving.
    Failed {
        /// Every mistake found (`path: message`), or why the new generation could not be
        /// built.
        errors: Vec<String>,
    },
}

/// Watches the config file and reloads on change or SIGHUP, until the task is aborted.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    proxy: Arc<Proxy>,
}

impl Reloader {
    /// A reloader of `path` for `proxy`. The file is not read here: "unchanged" is judged
    /// against the digest of the generation serving, which start-up parsed from its own read.
    pub fn new(path: PathBuf, proxy: Arc<Proxy>) -> Reloader {
        Reloader { path, proxy }
    }

    /// Starts the watcher and the SIGHUP listener; the returned task runs until aborted.
    ///
    /// Both are armed before this returns (it must be called within the runtime): a change
    /// made once start-up is over is never missed, and a SIGHUP is never left to its default
    /// action, which terminates the process.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watcher = match watch_directory(&self.path, tx.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot watch the configuration directory; only SIGHUP reloads");
                None
            }
        };
        spawn_sighup(tx);
        tokio::spawn(async move {
            // The watcher lives as long as the task.
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                // Debounce: let the burst settle, then take everything queued as one change.
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                self.reload().await;
            }
        })
    }

    /// Reads the file once and applies it, if its content changed. `&mut`: one reload at a time,
    /// so two cannot both build the next generation number.
    pub async fn reload(&mut self) -> ReloadOutcome {
        match ConfigFile::read(&self.path) {
            Ok(file) => self.apply(&file).await,
            Err(errors) => self.failed(errors.0.iter().map(ToString::to_string).collect()),
        }
    }

    /// Validates, builds and swaps in `file` unless its digest is the serving generation's. The
    /// decision and the new generation come from this one buffer: the path is not read again,
    /// so a writer racing the reload cannot make the digest describe other bytes than those
    /// parsed.
    async fn apply(&mut self, file: &ConfigFile) -> ReloadOutcome {
        let current = self.proxy.generation.load_full();
        if current.digest() == file.digest() {
            return ReloadOutcome::Unchanged;
        }
        let generation = match Generation::build(current.number + 1, file) {
            Ok(generation) => generation,
            Err(error) => return self.failed(error.messages()),
        };
        warn_restart_needed(&current.config, &generation.config);
        // New authorities are fetched before they are needed; unchanged ones keep their keys.
        self.proxy.keys.prefetch(&generation.config).await;
        let number = generation.number;
        self.proxy.generation.store(Arc::new(generation));
        // Verifications judged under the old rules are dropped now rather than left to age out
        // (the cache would not reuse them anyway: each entry records its config fingerprint).
        self.proxy.tokens.invalidate_all();
        self.proxy
            .metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        self.proxy
            .metrics
            .config_generation
            .set(i64::try_from(number).unwrap_or(i64::MAX));
        tracing::info!(generation = number, "configuration reloaded");
        ReloadOutcome::Applied { generation: number }
    }

    fn failed(&self, errors: Vec<String>) -> ReloadOutcome {
        self.proxy
            .metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc();
        tracing::error!(
            path = %self.path.display(),
            errors = errors.join("; "),
            "configuration reload failed; the previous configuration stays in force"
        );
        ReloadOutcome::Failed { errors }
    }
}

/// Listeners are bound once (a reload never rebinds), and what was handed to them or to the log
/// subscriber at start-up stays: changing it needs a restart, which one warning says, naming the
/// keys. The reload itself goes ahead for everything else.
fn warn_restart_needed(old: &Config, new: &Config) {
    let keys = restart_only_changes(old, new);
    if !keys.is_empty() {
        tracing::warn!(
            keys = keys.join(", "),
            "these settings changed but take effect only after a restart"
        );
    }
}

/// The start-up-only keys whose values differ.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let tls_files = |config: &Config| {
        config
            .tls
            .as_ref()
            .map(|tls| (tls.cert_file.clone(), tls.key_file.clone()))
    };
    [
        ("listen", old.listen != new.listen),
        ("adminListen", old.admin_listen != new.admin_listen),
        ("tls", tls_files(old) != tls_files(new)),
        (
            "limits.headerReadTimeout",
            old.limits.header_read_timeout != new.limits.header_read_timeout,
        ),
        (
            "limits.maxHeaderBytes",
            old.limits.max_header_bytes != new.limits.max_header_bytes,
        ),
        ("logging.format", old.logging.format != new.logging.format),
        ("logging.level", old.logging.level != new.logging.level),
        (
            "shutdownGracePeriod",
            old.shutdown_grace_period != new.shutdown_grace_period,
        ),
        ("workerThreads", old.worker_threads != new.worker_threads),
        // The store's connection, failure mode and introspection sharing (issue 22).
        ("sharedState", old.shared_state != new.shared_state),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Watches the directory, not the file: editors replace files by rename and Kubernetes swaps the
/// `..data` symlink, both of which a watch on the file itself would lose.
fn watch_directory(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::UnboundedSender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::UnboundedSender<()>) {}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\nauthenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  audience: \"https://fhir.example.org\"\n";

    fn config(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}")).expect("valid config")
    }

    /// Loopback only, and an authority that refuses at once, so a reload's key prefetch ends
    /// quickly without a network.
    const LOCAL: &str = "listen: \"127.0.0.1:0\"\nadminListen: \"127.0.0.1:0\"\nallowHttpAuthorities: true\nkeySets: {fetchTimeout: 1s}\nupstream: \"http://127.0.0.1:1/fhir\"\nauthenticationConfiguration:\n  authority: \"http://127.0.0.1:1/t\"\n  audience: \"https://fhir.example.org\"\n";

    /// The "unchanged" decision and the applied generation come from the one buffer that was
    /// read: the file on disk says something else throughout, and never takes part.
    #[tokio::test]
    async fn the_unchanged_decision_and_the_applied_config_come_from_one_read() {
        let first = ConfigFile::from_text(LOCAL.to_owned());
        // The test runs a whole proxy (app wiring sits above this module) to own a real one.
        let options = crate::app::StartOptions {
            config_path: None,
            grace: Duration::from_secs(1),
        };
        let config = Config::from_file(&first).expect("valid");
        let running = crate::app::start(config, options).await.expect("starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "listen: [not valid").expect("write");
        let mut reloader = Reloader::new(path.clone(), Arc::clone(&running.proxy));

        // Generation 1's digest is that of the bytes start-up parsed.
        assert_eq!(reloader.apply(&first).await, ReloadOutcome::Unchanged);
        let second = ConfigFile::from_text(format!("{LOCAL}clockSkew: 7s\n"));
        assert_eq!(
            reloader.apply(&second).await,
            ReloadOutcome::Applied { generation: 2 }
        );
        let serving = running.proxy.generation.load_full();
        assert_eq!(serving.digest(), second.digest());
        assert_eq!(serving.config.clock_skew, Duration::from_secs(7));
        assert_eq!(reloader.apply(&second).await, ReloadOutcome::Unchanged);

        // `reload` reads the path once: the invalid file fails and generation 2 keeps serving;
        // the same bytes as generation 2's are unchanged.
        let ReloadOutcome::Failed { errors } = reloader.reload().await else {
            panic!("the file on disk is invalid");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(running.proxy.generation.load().number, 2);
        std::fs::write(&path, second.text()).expect("write");
        assert_eq!(reloader.reload().await, ReloadOutcome::Unchanged);
        running.stop().await;
    }

    #[test]
    fn start_up_only_changes_are_named() {
        let old = config("");
        assert!(restart_only_changes(&old, &old).is_empty());
        let new = config(
            "listen: \"127.0.0.1:1\"\nlogging: {level: debug, logQueryStrings: true}\nshutdownGracePeriod: 5s\nlimits: {maxTokenBytes: 100}\nclockSkew: 1s\nsharedState: {redis: {url: \"redis://valkey\"}}\nrateLimits: [{clientIds: all, requestsPerSecond: 5}]\n",
        );
        // logQueryStrings, maxTokenBytes, clockSkew and rateLimits are read per request: they
        // follow reloads.
        assert_eq!(
            restart_only_changes(&old, &new),
            [
                "listen",
                "logging.level",
                "shutdownGracePeriod",
                "sharedState"
            ]
        );
    }
}
