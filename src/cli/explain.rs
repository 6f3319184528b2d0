//! `fhirguard explain --config FILE --token TOKEN|- [--method M] [--path P] [--body FILE]
//! [--header 'NAME: VALUE']…` (SPEC §2): runs the full decision for one request without
//! forwarding it, through the same phases the proxy uses ([`decide_head`], and [`decide_body`]
//! for a batch/transaction or a `POST …/_search` form), and prints the [`Trace`] they return
//! and the verdict (its `report` module).

mod report;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::auth::dpop::nonce::Nonces;
use crate::auth::introspection::looks_like_jwt;
use crate::auth::KeyStore;
use crate::authz::smart::Confinement;
use crate::authz::Reasons;
use crate::config::Config;
use crate::error::Rejection;
use crate::proxy::decision::{
    decide_body, decide_head, Authorized, BodyNeed, Head, Judge, Plan, Refused, Trace, Verdict,
};
use crate::proxy::replay::ReplayCache;
use crate::proxy::session::TokenCache;
use report::{describe_nonce, describe_proof, describe_token, report};

/// What to explain.
#[derive(Debug)]
pub struct ExplainRequest<'a> {
    /// The configuration file, loaded and validated as at start-up ([`Config::load`]).
    pub config: &'a Path,
    /// The token, or `-` to read it from standard input.
    pub token: &'a str,
    /// The HTTP method, e.g. `GET`: with the path, what classification reads (SPEC §4 step 8).
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
