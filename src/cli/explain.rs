//! `fhirguard explain --config FILE --token TOKEN|- [--method M] [--path P] [--body FILE]
//! [--header 'NAME: VALUE']…` (SPEC §2): runs the full decision for one request without
//! forwarding it, through the same phases the proxy uses ([`decide_head`], and [`decide_body`]
//! for a batch/transaction or a `POST …/_search` form), and prints the [`Trace`] they return
//! and the verdict.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::Value;

use crate::auth::dpop::nonce::Nonces;
use crate::auth::introspection::looks_like_jwt;
use crate::auth::KeyStore;
use crate::authz::smart::Confinement;
use crate::authz::Reasons;
use crate::config::{Config, NonceSettings, ProviderKind};
use crate::error::Rejection;
use crate::proxy::decision::{
    configured_actions, decide_body, decide_head, Authorized, BodyNeed, Head, Judge, Plan, Refused,
    Trace, Verdict,
};
use crate::proxy::replay::ReplayCache;
use crate::proxy::session::TokenCache;

/// What to explain.
#[derive(Debug)]
pub struct ExplainRequest<'a> {
    pub config: &'a Path,
    /// The token, or `-` to read it from standard input.
    pub token: &'a str,
    pub method: &'a str,
    /// Path and query relative to the FHIR base, e.g. `/Observation?code=x`.
    pub path: &'a str,
    /// A batch/transaction bundle to decide (`POST /`), or the body of a create or update to
    /// check under a patient context.
    pub body: Option<&'a Path>,
    /// Request headers, each `Name: value`, as the proxy would receive them (the request
    /// hygiene rules read them: method overrides, preflights, `Host`).
    pub headers: &'a [String],
}

/// Prints the steps; exit 0 when the request would be forwarded, 1 when refused, 64 on a bad
/// config or argument.
pub fn explain(request: &ExplainRequest<'_>) -> ExitCode {
    let config = match Config::load(request.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "{}: invalid configuration:\n{errors}",
                request.config.display()
            );
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let token = match read_token(request.token) {
        Ok(token) => token,
        Err(message) => {
            eprintln!("fhirguard explain: {message}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let (Ok(method), Ok(uri)) = (
        Method::from_bytes(request.method.as_bytes()),
        request.path.parse::<Uri>(),
    ) else {
        eprintln!("fhirguard explain: invalid --method or --path");
        return ExitCode::from(super::EXIT_CONFIG);
    };
    let headers = match parse_headers(request.headers) {
        Ok(headers) => headers,
        Err(message) => {
            eprintln!("fhirguard explain: {message}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let body = match request.body.map(std::fs::read).transpose() {
        Ok(body) => body,
        Err(error) => {
            eprintln!("fhirguard explain: cannot read the body: {error}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fhirguard explain: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let allowed = runtime.block_on(run(
        &config,
        &token,
        &method,
        &uri,
        headers,
        body.as_deref(),
    ));
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--header 'Name: value'` arguments as a header map.
fn parse_headers(arguments: &[String]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for argument in arguments {
        let parsed = argument.split_once(':').and_then(|(name, value)| {
            let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            let value = HeaderValue::from_str(value.trim()).ok()?;
            Some((name, value))
        });
        let Some((name, value)) = parsed else {
            return Err(format!(
                "--header {argument:?} is not a valid 'Name: value' header"
            ));
        };
        headers.append(name, value);
    }
    Ok(headers)
}

fn read_token(argument: &str) -> Result<String, String> {
    if argument != "-" {
        return Ok(argument.trim().to_owned());
    }
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
    Ok(token.trim().to_owned())
}

/// A create or update under a patient context: the body the proxy would check (duplicate
/// member names, type, compartment), when given. Checks that need the FHIR server's stored
/// resource (update, patch, delete) are planned, not run, here.
fn check_stored_body(allowed: &Authorized, body: Option<&[u8]>) -> Result<(), Rejection> {
    let Plan::Smart {
        grant,
        confinement: Confinement::Write { body: true, .. },
    } = &allowed.plan
    else {
        return Ok(());
    };
    let (Some(user), Some(body)) = (grant.compartment(), body) else {
        println!("note: under a patient context the body is checked too: pass --body FILE");
        return Ok(());
    };
    crate::proxy::check_body(body, allowed.request.resource_type.as_deref(), user)
}

/// The proxy's phases on one request; `body` stands for the client's body.
async fn decide(
    judge: &Judge<'_>,
    head: &http::request::Parts,
    body: Option<&[u8]>,
) -> Result<Trace, Refused> {
    match decide_head(judge, head).await? {
        Head::Anonymous { path } => {
            // With `cors`, fhirguard answers a preflight itself, as the proxy does.
            let preflight = crate::hygiene::is_preflight(&head.method, &head.headers);
            let refused = match &judge.config.cors {
                Some(cors) if preflight => crate::cors::Policy::new(cors)
                    .preflight(&head.headers)
                    .err(),
                _ => None,
            };
            let trace = Trace {
                path: Some(path),
                anonymous: true,
                ..Trace::default()
            };
            match refused {
                Some(refusal) => Err(Refused::new(Rejection::Cors(refusal), trace)),
                None => Ok(trace),
            }
        }
        Head::Decided(allowed) => {
            let checked = check_stored_body(&allowed, body);
            let trace = Verdict::Request(allowed).into_trace();
            match checked {
                Ok(()) => Ok(trace),
                Err(rejection) => Err(Refused::new(rejection, trace)),
            }
        }
        Head::NeedsBody(pending) => {
            // Without --body, the request is decided as the proxy decides one sent without a
            // body: a POST `_search` on its URL's parameters alone, a bundle refused as empty.
            if body.is_none() && pending.body == BodyNeed::Bundle {
                println!("note: a batch/transaction is decided by its entries: pass --body FILE");
            }
            let body = body.map_or_else(Bytes::new, Bytes::copy_from_slice);
            Ok(decide_body(judge, pending, head, body)?.into_trace())
        }
    }
}

async fn run(
    config: &Config,
    token: &str,
    method: &Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: Option<&[u8]>,
) -> bool {
    let keys = KeyStore::new();
    keys.prefetch(config).await;
    if !token.is_empty() {
        // With a DPoP proof (`--header 'DPoP: …'`) the token goes as a DPoP-bound one
        // (RFC 9449 §7.1).
        let scheme = if headers.contains_key(crate::auth::dpop::DPOP) {
            "DPoP"
        } else {
            "Bearer"
        };
        match HeaderValue::from_str(&format!("{scheme} {token}")) {
            Ok(value) => {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            Err(_) => println!("note: the token holds characters no HTTP header may carry"),
        }
    }
    println!("request: {method} {uri}");
    let introspected = introspected_at(config, token);
    match introspected {
        Some(authority) => println!(
            "token: opaque (not a JWT), introspected at {authority} (RFC 7662 §2; \
             introspection.authority)"
        ),
        None => describe_token(token),
    }
    let claims = describe_proof(&headers, token);
    // Nonces as the proxy's generation makes them: with `secretFile`, the served ones.
    let settings = config.sender.dpop_nonce.as_ref();
    let nonces = settings.map(Nonces::of);
    if let (Some(settings), Some(nonces), Some(claims)) = (settings, &nonces, &claims) {
        describe_nonce(settings, nonces, claims);
    }

    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method.clone();
    head.uri = uri.clone();
    head.headers = headers;
    // No verified-token cache: every explain verifies in full.
    let tokens = TokenCache::new(0);
    // A DPoP proof is checked as the proxy would, against a replay cache of this run only.
    let replay = ReplayCache::new(16);
    let judge = Judge {
        keys: &keys,
        tokens: &tokens,
        config,
        metrics: None,
        memo: None,
        reasons: Reasons::Always,
        replay: &replay,
        nonces: nonces.as_ref(),
        peer: None,
    };
    match decide(&judge, &head, body).await {
        Ok(trace) => {
            report(config, &trace, introspected);
            match config.cors.is_some() && crate::hygiene::is_preflight(method, &head.headers) {
                true => println!("verdict: ALLOW — a CORS preflight, answered by fhirguard (204)"),
                false => println!("verdict: ALLOW — forwarded to {}", config.upstream.url),
            }
            true
        }
        Err(Refused { rejection, trace }) => {
            report(config, &trace, introspected);
            println!(
                "verdict: {} {} — {rejection}",
                rejection.status().as_u16(),
                rejection.reason()
            );
            // A near miss is told to the operator here and in the log, never to the client.
            if let Some(hint) = rejection.token_hint() {
                println!("hint: {hint}");
            }
            false
        }
    }
}

/// The provider that introspects `token` (RFC 7662), when it is opaque and one is configured:
/// the same decision as the proxy's ([`looks_like_jwt`]).
fn introspected_at<'c>(config: &'c Config, token: &str) -> Option<&'c str> {
    let settings = config.introspection.as_ref()?;
    (!token.is_empty() && !looks_like_jwt(token)).then_some(settings.authority.as_str())
}

/// The token's header and the claims that decide, decoded without trusting them.
fn describe_token(token: &str) {
    let mut parts = token.split('.');
    let decode = |part: Option<&str>| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let (header, claims) = (decode(parts.next()), decode(parts.next()));
    let (Some(header), Some(claims)) = (header, claims) else {
        println!("token: not a decodable JWT");
        return;
    };
    let field = |value: &Value, name: &str| {
        value
            .get(name)
            .map_or_else(|| "-".to_owned(), Value::to_string)
    };
    println!(
        "token (unverified): alg={} kid={} iss={} aud={} azp={} appid={} client_id={} cid={} exp={}",
        field(&header, "alg"),
        field(&header, "kid"),
        field(&claims, "iss"),
        field(&claims, "aud"),
        field(&claims, "azp"),
        field(&claims, "appid"),
        field(&claims, "client_id"),
        field(&claims, "cid"),
        field(&claims, "exp"),
    );
    if let Some(cnf) = claims.get("cnf") {
        println!("token binding (unverified): cnf={cnf}");
    }
}

/// The request's DPoP proof (RFC 9449 §4.2), decoded without trusting it: what the proxy
/// checks against the request, the token and the replay cache. Returns its claims.
fn describe_proof(headers: &HeaderMap, token: &str) -> Option<Value> {
    let proof = headers.get(crate::auth::dpop::DPOP)?;
    let mut parts = proof.to_str().unwrap_or("").split('.');
    let decode = |part: Option<&str>| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let (Some(header), Some(claims)) = (decode(parts.next()), decode(parts.next())) else {
        println!("dpop proof: not a decodable JWT");
        return None;
    };
    let field = |value: &Value, name: &str| {
        value
            .get(name)
            .map_or_else(|| "-".to_owned(), Value::to_string)
    };
    let thumbprint = header
        .get("jwk")
        .and_then(Value::as_object)
        .and_then(crate::auth::dpop::jwk_thumbprint)
        .unwrap_or_else(|| "-".to_owned());
    let ath = claims.get("ath").and_then(Value::as_str);
    let ath_matches = ath == Some(crate::auth::dpop::token_hash(token).as_str());
    println!(
        "dpop proof (unverified): typ={} alg={} jwk thumbprint={thumbprint} htm={} htu={} iat={} \
         jti={} ath={}",
        field(&header, "typ"),
        field(&header, "alg"),
        field(&claims, "htm"),
        field(&claims, "htu"),
        field(&claims, "iat"),
        field(&claims, "jti"),
        if ath_matches {
            "matches the token"
        } else {
            "does not match the token"
        },
    );
    Some(claims)
}

/// The proof's `nonce` against the server nonces (RFC 9449 §8), when they are required: the
/// same check the proxy makes after the proof's signature and key.
fn describe_nonce(settings: &NonceSettings, nonces: &Nonces, claims: &Value) {
    let secret = match settings.secret {
        Some(_) => "secretFile",
        None => "this process only: no secretFile, so no served nonce is valid here",
    };
    let nonce = claims.get("nonce").map(|n| n.as_str().unwrap_or_default());
    let verdict = match nonces.check(nonce, crate::auth::unix_now()) {
        Ok(()) => "valid".to_owned(),
        Err(problem) => format!("{problem} → 401 use_dpop_nonce ({})", problem.reason()),
    };
    println!(
        "step 7 dpop nonce: required (lifetime {}s, secret {secret}): {verdict}",
        settings.lifetime.as_secs()
    );
}

fn report(config: &Config, trace: &Trace, introspected: Option<&str>) {
    if let Some(path) = &trace.path {
        println!("step 0 path: normalised to {path}");
    }
    if trace.anonymous {
        println!("step 1 anonymous: yes (no token needed)");
        return;
    }
    let Some(principal) = &trace.principal else {
        return;
    };
    let provider = match principal.provider {
        ProviderKind::Primary => "primary authority".to_owned(),
        ProviderKind::Smart { index } => format!("smartIdentityProviders[{index}]"),
    };
    println!(
        "step 4 provider: {provider} {} (issuer {})",
        principal.authority, principal.issuer
    );
    match introspected {
        Some(authority) => println!(
            "step 5 introspection: active at {authority} (the answer's claims are judged as a \
             JWT's below)"
        ),
        None => println!(
            "step 5 signature: verified with key {}",
            principal.key_id.as_deref().unwrap_or("-")
        ),
    }
    println!(
        "step 6 time: valid until {} (Unix seconds)",
        principal.expires_at
    );
    println!("step 7 audience: {}", principal.audience.join(", "));
    match principal.confirmation.as_deref() {
        Some(cnf) => println!(
            "step 7 binding: {}{}",
            cnf.jkt.as_ref().map_or(String::new(), |jkt| format!(
                "DPoP key jkt={jkt} (proof checked) "
            )),
            cnf.x5t_s256.as_ref().map_or(String::new(), |x5t| format!(
                "client certificate x5t#S256={x5t} (no connection in explain)"
            )),
        ),
        None => println!("step 7 binding: none (a bearer token)"),
    }
    if let (ProviderKind::Smart { index }, Some(app)) = (principal.provider, principal.application)
    {
        let client = config
            .auth
            .smart_providers
            .get(index)
            .and_then(|p| p.applications.get(app))
            .map_or("-", |a| a.client_id.as_str());
        println!("step 7 application: {client}");
    }
    if let (Some(client), Some(claim)) = (&principal.client_id, principal.client_claim) {
        println!("step 7 client: {client} (named by the {claim} claim)");
    }
    println!(
        "        subject={} client={} fhirUser={} roles=[{}] scopes=[{}]",
        principal.subject.as_deref().unwrap_or("-"),
        principal.client_id.as_deref().unwrap_or("-"),
        principal.fhir_user.as_deref().unwrap_or("-"),
        principal.roles.join(", "),
        principal.scopes.join(" ")
    );
    if let Some(classified) = &trace.request {
        println!(
            "step 8 request: {classified}, requires {}",
            classified.required
        );
    }
    if let Some(granted) = trace.granted {
        let expansion = configured_actions(config, principal).implied_description();
        if expansion.is_empty() {
            println!("step 8 granted: {granted}");
        } else {
            println!("step 8 granted: {granted} ({expansion})");
        }
    }
    if let Some(grant) = &trace.grant {
        let context = grant
            .scopes
            .context()
            .map_or_else(|| "none".to_owned(), |c| c.to_string());
        println!("step 8 SMART scopes: {} (context {context})", grant.scopes);
        if let Some(owner) = grant.compartment() {
            let source = match (&grant.launch_patient, &config.smart_launch_patient_claim) {
                (Some(_), Some(claim)) => format!("the launch-context claim {claim}"),
                _ => "fhirUser".to_owned(),
            };
            println!("step 8 compartment: {owner} (from {source})");
        }
    }
    if let Some(decision) = &trace.decision {
        println!("step 8 decision: {decision}");
    }
    if let Some(would_be) = &trace.would_be {
        println!(
            "step 8 report-only: would be {} {} — {would_be}; forwarded (reportOnly)",
            would_be.status().as_u16(),
            would_be.reason()
        );
    }
    if let Some(bundle) = &trace.bundle {
        for (index, entry) in bundle.entries.iter().enumerate() {
            println!("step 8 entry[{index}]: {entry}");
        }
    }
}
