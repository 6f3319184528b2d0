//! The store the replicas share (issue 22, SPEC §6 "Many replicas"): one Redis or Valkey server
//! (`sharedState.redis`), through the `redis` crate's reconnecting [`ConnectionManager`] — no
//! protocol code of fhirguard's own. It holds what must hold across replicas:
//!
//! - DPoP proof ids ([`SharedStore::claim`]): `SET key 1 NX EX ttl`, so a proof is accepted once
//!   by the whole cluster (RFC 9449 §11.1);
//! - cluster-wide rate limits ([`SharedStore::gcra`]): a GCRA in one Lua script, one round trip;
//! - introspection answers ([`SharedStore::get`] / [`SharedStore::set`]), keyed by a hash of the
//!   token.
//!
//! Every call is bounded by `redis.timeout`, timed and counted ([`crate::metrics::SharedMetrics`]);
//! a call that fails or times out is a [`StoreError`], and the caller applies
//! `sharedState.failureMode`. The connection is made lazily and remade in the background, so
//! fhirguard starts, and keeps serving, while the store is down.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, Script};

use crate::config::{FailureMode, SharedState};
use crate::metrics::SharedMetrics;

/// The GCRA (generic cell rate algorithm) of `rateLimits[].scope: cluster`, atomic in the
/// server. KEYS[1]: the client's key; ARGV[1]: the emission interval T (µs, 1/rate); ARGV[2]:
/// the burst B. The key holds the theoretical arrival time (TAT, µs of the server's clock, so
/// replicas' clocks do not matter). A request is allowed when `max(TAT, now) + T - now <= B·T`,
/// and then TAT moves on by T; the key expires when the allowance is full again.
/// Returns {allowed (1/0), remaining, retry-after µs, reset µs}.
const GCRA: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local limit = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local ahead = next_tat - now
if ahead > limit then
  return {0, 0, ahead - limit, tat - now}
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((limit - ahead) / interval), 0, ahead}
";

/// Why a store call gave no answer: the request applies `failureMode`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within `redis.timeout` (also while the connection is being remade).
    #[error("the shared-state store did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection or the command failed.
    #[error("the shared-state store failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Why the store could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `sharedState.redis.caFile` could not be read.
    #[error("sharedState.redis.caFile '{path}': {source}")]
    CaFile {
        /// The file's path, as configured.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// `passwordFile` could not be read, or `passwordEnv`'s variable is not set.
    #[error("sharedState.redis password: {0}")]
    Password(String),
    /// The Redis client refused the settings (the URL, or the CA bundle's certificates).
    #[error("sharedState.redis: {0}")]
    Client(#[from] redis::RedisError),
}

/// One GCRA verdict of [`SharedStore::gcra`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Whether the request fits the client's allowance (and was counted against it).
    pub allowed: bool,
    /// Requests left in the burst after this one.
    pub remaining: u64,
    /// How long until a refused request would be allowed.
    pub retry_after: Duration,
    /// How long until the whole burst is available again.
    pub reset: Duration,
}

/// Indexes of [`crate::metrics::STORE_OPERATIONS`].
#[derive(Debug, Clone, Copy)]
enum Operation {
    DpopReplay = 0,
    RateLimit = 1,
    IntrospectionGet = 2,
    IntrospectionSet = 3,
}

/// The shared store: its connection, key prefix, timeout and failure mode.
pub struct SharedStore {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    failure_mode: FailureMode,
    gcra: Script,
    metrics: SharedMetrics,
    /// Whether the last call failed: an outage is logged when it starts and when it ends, not
    /// once per request (its requests are counted in the metrics).
    down: AtomicBool,
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("failure_mode", &self.failure_mode)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// The store of `settings`, not yet connected: the connection is made on first use and
    /// remade in the background after a failure. Needs a Tokio runtime.
    pub fn new(settings: &SharedState, metrics: SharedMetrics) -> Result<SharedStore, SetupError> {
        let redis = &settings.redis;
        let mut info = redis.url.as_str().into_connection_info()?;
        if let Some(source) = &redis.password {
            let password = source.read().map_err(SetupError::Password)?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match &redis.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| SetupError::CaFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)?
            }
            None => Client::open(info)?,
        };
        // Each call is bounded by `timeout` here; the manager's own bounds only keep a broken
        // connection from lingering. Reconnection backs off up to a second, forever.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.timeout))
            .set_response_timeout(Some(redis.timeout))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(usize::MAX);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(SharedStore {
            connection,
            prefix: redis.key_prefix.clone(),
            timeout: redis.timeout,
            failure_mode: settings.failure_mode,
            gcra: Script::new(GCRA),
            metrics,
            down: AtomicBool::new(false),
        })
    }

    /// `sharedState.failureMode`, as read at start-up.
    pub fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }

    /// The metrics the store's users count their fallbacks on.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.metrics
    }

    /// Records `id` (under `kind`) for `ttl` if it is new: true the first time across every
    /// replica, false after (`SET NX EX`).
    pub async fn claim(&self, kind: &str, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = format!("{}{kind}:{id}", self.prefix);
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        let mut connection = self.connection.clone();
        let set: Option<String> = self
            .call(Operation::DpopReplay, command.query_async(&mut connection))
            .await?;
        Ok(set.is_some())
    }

    /// One GCRA step for `id` (under `kind`) at `requests_per_second` with `burst`.
    pub async fn gcra(
        &self,
        kind: &str,
        id: &str,
        requests_per_second: u64,
        burst: u64,
    ) -> Result<Cell, StoreError> {
        let key = format!("{}{kind}:{id}", self.prefix);
        let interval = (1_000_000 / requests_per_second.max(1)).max(1);
        let mut invocation = self.gcra.key(key);
        invocation.arg(interval).arg(burst);
        let mut connection = self.connection.clone();
        let (allowed, remaining, retry, reset): (i64, i64, i64, i64) = self
            .call(
                Operation::RateLimit,
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
        Ok(Cell {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry),
            reset: micros(reset),
        })
    }

    /// The value under `id` (under `kind`), if any.
    pub async fn get(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("{}{kind}:{id}", self.prefix);
        let mut command = redis::cmd("GET");
        command.arg(key);
        let mut connection = self.connection.clone();
        self.call(
            Operation::IntrospectionGet,
            command.query_async(&mut connection),
        )
        .await
    }

    /// Keeps `value` under `id` (under `kind`) for `ttl`.
    pub async fn set(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{}{kind}:{id}", self.prefix);
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut connection = self.connection.clone();
        self.call(
            Operation::IntrospectionSet,
            command.query_async::<()>(&mut connection),
        )
        .await
    }

    /// `PING` within the timeout (`fhirguard check --probe`); not counted.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Runs one call within the timeout, timed and counted.
    async fn call<T>(
        &self,
        operation: Operation,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        let label = match &result {
            Ok(_) => 0,
            Err(StoreError::Redis(_)) => 1,
            Err(StoreError::Timeout(_)) => 2,
        };
        match &result {
            Ok(_) if self.down.swap(false, Ordering::Relaxed) => {
                tracing::info!("the shared-state store answers again");
            }
            Err(error) if !self.down.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    %error,
                    failure_mode = ?self.failure_mode,
                    "the shared-state store does not answer; requests that need it fall back \
                     (open) or are refused (closed) until it does"
                );
            }
            _ => {}
        }
        self.metrics
            .record_call(operation as usize, label, started.elapsed().as_secs_f64());
        result
    }
}

/// A store id made of `bytes` (a digest: never a token, never a proof's own id), in lower-case
/// hex.
pub fn hex_id(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}
