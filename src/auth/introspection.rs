//! Token introspection (RFC 7662) for opaque access tokens: the token is POSTed to the configured
//! provider's introspection endpoint with fhirguard's own client credentials, and an active
//! answer's members go through the same steps 6–7 as a JWT's claims ([`super::claims`]), so
//! a [`Verified`] comes out either way. Caching the answers is the session layer's business
//! ([`crate::proxy::introspected`]); this module holds only the client and its counters.
//!
//! Which tokens come here: with `introspection` configured, a bearer token that is not shaped
//! like a JWS ([`looks_like_jwt`]). Which provider: the one `introspection.authority` names (an
//! opaque token names no issuer, and sending it to several servers would leak it to all of them).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::claims::judge_claims;
use super::discovery::{IdpClient, IdpConnector};
use super::error::AuthError;
use super::token::ClaimSet;
use super::{selected, KeySettings, KeyStore, Verified};
use crate::config::{Config, Introspection, SecretSource};
use crate::shared::SharedStore;

/// The largest introspection answer read; answers are a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// `Retry-After` of a 503 when the introspection endpoint cannot answer.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How many `timeout`s a call may run, from when it was asked for, before fhirguard closes its
/// connection. The request waits one `timeout` (then 503); the call keeps its slot until the
/// endpoint answers, or until this bound closes the connection, so that a slow endpoint never
/// has more than `maxConcurrent` calls from fhirguard at once (issue 20 item 5).
pub const CALL_TIMEOUTS: u32 = 4;

/// How one introspection ended, for `fhirguard_introspections_total{provider, result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionResult {
    /// `active: true` (whether or not the claims then passed steps 6–7).
    Active,
    /// `active: false`, absent or not a boolean (RFC 7662 §2.2).
    Inactive,
    /// No answer: the endpoint is down, slow, refused fhirguard's credentials, or sent no JSON.
    Error,
}

impl IntrospectionResult {
    /// Every result label, in the metric's order.
    pub const ALL: [IntrospectionResult; 3] = [
        IntrospectionResult::Active,
        IntrospectionResult::Inactive,
        IntrospectionResult::Error,
    ];

    /// The `result` label of `fhirguard_introspections_total`.
    pub fn label(self) -> &'static str {
        match self {
            IntrospectionResult::Active => "active",
            IntrospectionResult::Inactive => "inactive",
            IntrospectionResult::Error => "error",
        }
    }
}

/// The client of introspection requests (a pool of its own, over the key sets'
/// [`IdpConnector`]) and their counters per provider (cheap to clone; kept beside the key sets
/// by the [`KeyStore`], so it outlives configuration generations).
#[derive(Clone)]
pub struct Introspector {
    client: Result<IdpClient, String>,
    counts: Arc<Mutex<HashMap<String, [u64; 3]>>>,
    /// The slots of `introspection.maxConcurrent`, with the size they were made for (a reload
    /// that changes it makes new ones; calls under way keep their old slot).
    slots: Arc<Mutex<Option<Slots>>>,
    /// The shared store, when `sharedState.introspection` shares answers ([`super::shared_answers`]).
    pub(super) shared: Arc<OnceLock<Arc<SharedStore>>>,
}

/// `maxConcurrent` permits, and the size they were made for.
struct Slots {
    size: usize,
    semaphore: Arc<Semaphore>,
}

impl fmt::Debug for Introspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspector").finish_non_exhaustive()
    }
}

impl Introspector {
    /// Introspections sent over `connector` (an error when it could not be built), on pooled
    /// keep-alive connections of their own: a call held by a slow endpoint never delays a key
    /// fetch.
    pub fn new(connector: Result<IdpConnector, String>) -> Introspector {
        let client =
            connector.map(|connector| Client::builder(TokioExecutor::new()).build(connector));
        Introspector {
            client,
            counts: Arc::default(),
            slots: Arc::default(),
            shared: Arc::default(),
        }
    }

    /// Shares answers through `store` from now on (set once, at start-up).
    pub fn share(&self, store: Arc<SharedStore>) {
        let _ = self.shared.set(store);
    }

    /// Introspections of `authority` so far, by [`IntrospectionResult::ALL`].
    pub fn counts(&self, authority: &str) -> [u64; 3] {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(authority).copied().unwrap_or_default()
    }

    fn count(&self, authority: &str, result: IntrospectionResult) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = IntrospectionResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(2);
        counts.entry(authority.to_owned()).or_default()[slot] += 1;
    }

    /// The semaphore of `max_concurrent` slots.
    fn slots(&self, max_concurrent: usize) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slots {
            Some(current) if current.size == max_concurrent => Arc::clone(&current.semaphore),
            _ => {
                let semaphore = Arc::new(Semaphore::new(max_concurrent));
                *slots = Some(Slots {
                    size: max_concurrent,
                    semaphore: Arc::clone(&semaphore),
                });
                semaphore
            }
        }
    }

    /// One POST to `endpoint` (RFC 7662 §2.1): the answer's JSON object, or why there is none,
    /// within `timeout` (the wait for one of `maxConcurrent` slots included).
    ///
    /// The call runs in a task of its own that holds its slot until the call has really ended:
    /// when the request gives up at `timeout`, the call goes on, still counted, until the
    /// endpoint answers or [`CALL_TIMEOUTS`] `timeout`s have passed; then its connection is
    /// closed (a pooled HTTP/1.1 connection whose call is dropped unanswered is closed, never
    /// reused), and only then is the slot freed. Freeing the slot when the request gave up would
    /// let a slow endpoint pile up calls from fhirguard well past `maxConcurrent`.
    pub(super) async fn post(
        &self,
        endpoint: &str,
        settings: &Introspection,
        token: &str,
    ) -> Result<Map<String, Value>, String> {
        let client = self.client.clone()?;
        let secret = read_secret(&settings.client_secret)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let request = Request::post(endpoint)
            .header(header::AUTHORIZATION, basic(&settings.client_id, &secret))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| format!("cannot build the request to {endpoint}: {error}"))?;
        let slots = self.slots(settings.max_concurrent);
        let asked = Instant::now();
        let deadline = asked + settings.timeout;
        let closed_at = asked + settings.timeout * CALL_TIMEOUTS;
        let (answered, answer) = oneshot::channel();
        let call_endpoint = endpoint.to_owned();
        tokio::spawn(async move {
            let Ok(Ok(slot)) = timeout_at(deadline, slots.acquire_owned()).await else {
                return;
            };
            if answered.is_closed() {
                // The request is gone (its client left): no call is made for nobody.
                return;
            }
            let call = exchange(&client, request, &call_endpoint);
            // The call, and with it its connection, is dropped at the end of this statement:
            // the slot is freed only once the endpoint has answered or the socket is closed.
            let outcome = timeout_at(closed_at, call).await;
            drop(slot);
            let _ = answered.send(outcome.unwrap_or_else(|_| {
                Err(format!(
                    "POST {call_endpoint}: connection closed unanswered"
                ))
            }));
        });
        match timeout_at(deadline, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(format!(
                "POST {endpoint}: no introspection slot within {:?} ({} introspections at most \
                 in flight: introspection.maxConcurrent)",
                settings.timeout, settings.max_concurrent
            )),
            Err(_) => Err(format!(
                "POST {endpoint} did not complete within {:?} ({} introspections at most in \
                 flight: introspection.maxConcurrent)",
                settings.timeout, settings.max_concurrent
            )),
        }
    }
}

/// One introspection on a pooled connection: send, read the answer (at most
/// [`MAX_ANSWER_BYTES`]). Dropping this future before the answer has been read closes the
/// connection it was sent on (an HTTP/1.1 connection whose caller went away is not reused), so
/// the endpoint sees a call given up end.
async fn exchange(
    client: &IdpClient,
    request: Request<Full<Bytes>>,
    endpoint: &str,
) -> Result<Map<String, Value>, String> {
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("POST {endpoint} failed: {error}"))?;
    // RFC 7662 §2.3: 401 means fhirguard's own credentials were refused.
    if response.status() != StatusCode::OK {
        return Err(format!("POST {endpoint} answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| format!("POST {endpoint}: the answer is unreadable or too large"))?
        .to_bytes();
    serde_json::from_slice::<Map<String, Value>>(&body)
        .map_err(|_| format!("POST {endpoint}: the answer is not a JSON object"))
}

/// Whether a bearer token is shaped like a compact JWS (RFC 7515 §7.1: three base64url parts,
/// the first a JSON object, whose encoding always starts with `e` for `{`). Cheap on purpose:
/// it runs on every request when introspection is configured, and decides only where the token
/// goes — the JWT path still parses and verifies it in full.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with('e') && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// RFC 6749 §2.3.1, which RFC 7662 §2.1 defers to: client id and secret form-encoded, then
/// `Basic base64(id:secret)`.
fn basic(client_id: &str, secret: &str) -> String {
    let encode =
        |text: &str| -> String { url::form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

/// The client secret, read when needed (a rotated secret applies at the next call).
fn read_secret(source: &SecretSource) -> Result<String, String> {
    let key = match source {
        SecretSource::File(_) => "introspection.clientSecretFile",
        SecretSource::Env(_) => "introspection.clientSecretEnv",
    };
    let secret = source.read().map_err(|error| format!("{key}: {error}"))?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err("the introspection client secret is empty".to_owned());
    }
    Ok(secret.to_owned())
}

/// SPEC §4 steps 4–7 for an opaque token: the configured provider (step 4), its introspection
/// answer in place of a signature (step 5), and the answer's members through steps 6–7.
pub async fn introspect(
    store: &KeyStore,
    config: &Config,
    token: &str,
    now: u64,
) -> Result<Verified, AuthError> {
    let Some(settings) = config.introspection.as_ref() else {
        return Err(AuthError::Malformed { detail: "" });
    };
    let authority = settings.authority.as_str();
    let kind = config
        .auth
        .providers()
        .find_map(|(kind, a)| (a == authority).then_some(kind))
        .ok_or(AuthError::Malformed { detail: "" })?;
    // Discovery gives the issuer (and, unless configured, the endpoint); a provider whose
    // discovery is down is 503 as for JWTs.
    let keys = store.keys(authority, &KeySettings::of(config)).await?;
    let introspector = &store.introspector;
    let unavailable = |detail: String| {
        tracing::warn!(authority, %detail, "token introspection failed");
        introspector.count(authority, IntrospectionResult::Error);
        AuthError::IntrospectionUnavailable {
            authority: authority.to_owned(),
            retry_after: RETRY_AFTER,
        }
    };
    let endpoint = match (&settings.endpoint, &keys.introspection_endpoint) {
        (Some(url), _) => url.as_str(),
        (None, Some(discovered)) => discovered.as_str(),
        (None, None) => {
            return Err(unavailable(
                "the provider advertises no introspection_endpoint and introspection.endpoint \
                 is not set"
                    .to_owned(),
            ))
        }
    };
    let (answer, shared) = introspector
        .answer(endpoint, settings, authority, token, now)
        .await
        .map_err(unavailable)?;
    // Another replica's answer (`sharedState.introspection`) was not an introspection of ours.
    let claims = match active_claims(answer, &keys.issuer, authority) {
        Ok(claims) => {
            if !shared {
                introspector.count(authority, IntrospectionResult::Active);
            }
            claims
        }
        Err(refusal) => {
            if !shared {
                introspector.count(authority, IntrospectionResult::Inactive);
            }
            return Err(refusal);
        }
    };
    let selected = selected(kind, authority, keys);
    let (principal, lifetime) =
        judge_claims(config, &selected, &selected.keys.issuer, &claims, now, None)?;
    Ok(Verified {
        principal: Arc::new(principal),
        lifetime,
        key_set: selected.keys.fingerprint,
        config: config.fingerprint,
    })
}

/// The answer of an active token, as claims; else why it is refused. RFC 7662 §2.2: `active`
/// is a boolean and only `true` means active (anything else is inactive). An `iss` other than
/// the provider's discovered issuer is refused as for a JWT (reference §8 rule 4). A
/// `token_type` other than an access token's (a refresh token sent as a bearer token) is
/// inactive for this resource server.
///
/// `pub` (hidden) only for the `introspection` fuzz target (`fuzz/`).
#[doc(hidden)]
pub fn active_claims(
    mut answer: Map<String, Value>,
    issuer: &str,
    authority: &str,
) -> Result<ClaimSet, AuthError> {
    let inactive = || AuthError::Inactive {
        authority: authority.to_owned(),
    };
    if answer.remove("active") != Some(Value::Bool(true)) {
        return Err(inactive());
    }
    match answer.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind))
            if ["bearer", "dpop", "access_token"]
                .iter()
                .any(|k| kind.eq_ignore_ascii_case(k)) => {}
        Some(_) => return Err(inactive()),
    }
    match answer.get("iss") {
        None | Some(Value::Null) => {}
        Some(Value::String(iss)) if iss == issuer => {}
        Some(other) => {
            return Err(AuthError::UnknownIssuer {
                issuer: super::error::echo(other.as_str().unwrap_or("(not a string)")),
                hint: None,
            })
        }
    }
    Ok(ClaimSet(answer))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_a_jws_shape_is_a_jwt() {
        let cases = [
            ("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln", true),
            ("eyJhbGciOiJSUzI1NiJ9.e30.", true),
            // oidc-provider's opaque tokens: 43 base64url characters, no dots.
            ("Xk2pV1c3z5C0aQ8f7vG9WmQk3rT2yH6nJ4bL1dE0sAu", false),
            // A dotted reference token whose first part is not a JSON object.
            ("ref.abc.def", false),
            ("eyJ.a", false),
            ("eyJ.a.b.c.d", false),
            ("", false),
        ];
        for (token, jwt) in cases {
            assert_eq!(looks_like_jwt(token), jwt, "{token}");
        }
    }

    #[test]
    fn active_only_when_active_is_true() {
        let issuer = "https://idp";
        let refused = [
            json!({"active": false}),
            json!({"active": "true"}),
            json!({"active": 1}),
            json!({}),
            json!({"active": true, "token_type": "refresh_token"}),
        ];
        for value in refused {
            let got = active_claims(answer(value.clone()), issuer, "a");
            assert!(
                matches!(got, Err(AuthError::Inactive { .. })),
                "{value}: {got:?}"
            );
        }
        let foreign = active_claims(answer(json!({"active": true, "iss": "x"})), issuer, "a");
        assert!(matches!(foreign, Err(AuthError::UnknownIssuer { .. })));
        let claims = active_claims(
            answer(json!({
                "active": true, "iss": issuer, "token_type": "Bearer", "client_id": "app",
                "aud": "https://fhir", "scope": "system/*.read", "exp": 2_000_000_000u64,
            })),
            issuer,
            "a",
        )
        .unwrap();
        assert!(claims.get("active").is_none());
        assert_eq!(claims.string("client_id"), Some("app"));
        assert_eq!(claims.strings("aud"), ["https://fhir"]);
        assert_eq!(claims.scopes(), ["system/*.read"]);
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        // RFC 6749 §2.3.1: "a b:c" → "a+b%3Ac".
        let header = basic("a b:c", "s/é");
        let decoded = STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "a+b%3Ac:s%2F%C3%A9");
    }

    #[test]
    fn secrets_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_secret(&SecretSource::File(path)).unwrap(), "s3cret");
        let missing = read_secret(&SecretSource::Env("FHIRGUARD_TEST_NO_SUCH_VAR".into()));
        assert!(missing.unwrap_err().contains("FHIRGUARD_TEST_NO_SUCH_VAR"));
    }
}
