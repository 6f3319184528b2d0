//! What `explain` prints about one request: its token and DPoP proof decoded without trusting
//! them (what the proxy will check), then the decision's [`Trace`], step by step in the SPEC's
//! numbering (§4 steps 0–8).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use serde_json::Value;

use crate::auth::dpop::nonce::Nonces;
use crate::config::{Config, NonceSettings, ProviderKind};
use crate::proxy::decision::{configured_actions, Trace};

/// The token's header and the claims that decide, decoded without trusting them.
pub(super) fn describe_token(token: &str) {
    let Some((header, claims)) = decode(token) else {
        println!("token: not a decodable JWT");
        return;
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
pub(super) fn describe_proof(headers: &HeaderMap, token: &str) -> Option<Value> {
    let proof = headers.get(crate::auth::dpop::DPOP)?;
    let Some((header, claims)) = decode(proof.to_str().unwrap_or("")) else {
        println!("dpop proof: not a decodable JWT");
        return None;
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
pub(super) fn describe_nonce(settings: &NonceSettings, nonces: &Nonces, claims: &Value) {
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

/// The decision's trace, step by step; `introspected` names the provider that introspected an
/// opaque token.
pub(super) fn report(config: &Config, trace: &Trace, introspected: Option<&str>) {
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

/// A JWS's header and payload, decoded without checking its signature.
fn decode(jws: &str) -> Option<(Value, Value)> {
    let mut parts = jws.split('.');
    let mut part = || -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    Some((part()?, part()?))
}

/// A member as JSON text, or `-` when absent.
fn field(value: &Value, name: &str) -> String {
    value
        .get(name)
        .map_or_else(|| "-".to_owned(), Value::to_string)
}
