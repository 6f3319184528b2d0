//! The discovery documents fhirguard writes for its providers (reference §5.2–5.3):
//! `/.well-known/smart-configuration`, which fhirguard answers itself, and the `/metadata`
//! security block it adds to the upstream's CapabilityStatement.
//!
//! They claim what is true (issue 19): the capabilities fhirguard enforces (SMART v1 and v2
//! scopes, patient and user permissions, the launch patient when `smartLaunchPatientClaim` is
//! set), and what the identity provider's own discovery document says it offers (client
//! authentication methods, PKCE, refresh tokens, DPoP). Until discovery has been fetched, nothing
//! is claimed for the provider.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::smart::{buffer, fhir_response, rebuild};
use crate::auth::discovery::Offered;
use crate::auth::dpop::PROOF_ALGORITHMS_TEXT;
use crate::auth::KeyStore;
use crate::body::Body;
use crate::config::Config;
use crate::error::Rejection;

/// The SMART capabilities (SMART App Launch 2.x §capabilities) that hold for `config` behind a
/// provider that `offered` what its discovery says (`None`: not fetched yet).
pub(super) fn capabilities(config: &Config, offered: Option<&Offered>) -> Vec<&'static str> {
    // What fhirguard itself enforces: both scope syntaxes, patient/ and user/ scopes.
    let mut found = vec![
        "launch-standalone",
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
    ];
    if config.smart_launch_patient_claim.is_some() {
        // The launch patient travels in the token and confines patient/ scopes.
        found.extend([
            "launch-ehr",
            "context-ehr-patient",
            "context-standalone-patient",
        ]);
    }
    let Some(offered) = offered else {
        return found;
    };
    let has = |list: &Option<Vec<String>>, wanted: &[&str]| {
        list.as_ref()
            .is_some_and(|items| items.iter().any(|item| wanted.contains(&item.as_str())))
    };
    // RFC 8414 §2: without the member, client_secret_basic is the only method.
    let methods = &offered.token_endpoint_auth_methods_supported;
    if has(methods, &["none"]) {
        found.push("client-public");
    }
    if methods.is_none()
        || has(
            methods,
            &[
                "client_secret_basic",
                "client_secret_post",
                "client_secret_jwt",
            ],
        )
    {
        found.push("client-confidential-symmetric");
    }
    if has(methods, &["private_key_jwt"]) {
        found.push("client-confidential-asymmetric");
    }
    // A discovered OpenID provider: its authorization endpoint takes POST (OpenID Connect Core
    // §3.1.2.1) and it signs users in, unless it says it has no `openid` scope.
    found.push("authorize-post");
    if offered.scopes_supported.is_none() || has(&offered.scopes_supported, &["openid"]) {
        found.push("sso-openid-connect");
    }
    if has(&offered.scopes_supported, &["offline_access"])
        || has(&offered.grant_types_supported, &["refresh_token"])
    {
        found.push("permission-offline");
    }
    found
}

/// The DPoP proof algorithms a client can use end to end: those fhirguard verifies that the
/// provider also accepts (RFC 9449 §5.1). Empty when the provider offers no DPoP.
pub(super) fn dpop_algorithms(offered: &Offered) -> Vec<&'static str> {
    let Some(advertised) = &offered.dpop_signing_alg_values_supported else {
        return Vec::new();
    };
    PROOF_ALGORITHMS_TEXT
        .split(' ')
        .filter(|alg| advertised.iter().any(|a| a == alg))
        .collect()
}

/// The OAuth endpoints of the provider that discovery documents advertise: the first smart
/// identity provider, else the primary authority (reference §5.2); `issuer` and `jwks_uri` from
/// its discovery document when fetched, else the Entra pattern.
struct Endpoints {
    authorize: String,
    token: String,
    issuer: String,
    jwks_uri: String,
    introspection: Option<String>,
    /// `None` until the provider's discovery document has been fetched.
    offered: Option<Offered>,
}

async fn endpoints(config: &Config, keys: &KeyStore) -> Option<Endpoints> {
    let authority = config
        .auth
        .smart_providers
        .first()
        .map(|p| p.authority.as_str())
        .or(config.auth.primary.as_ref().map(|p| p.authority.as_str()))?;
    let trimmed = authority.trim_end_matches('/');
    let discovered = keys.current(authority, config.key_sets.max_stale).await;
    // Endpoints come from the provider's discovery document; the Entra pattern is the fallback
    // while discovery has not been fetched (reference §5.2, OSS `OidcDiscoveryService`).
    let discovered_endpoint = |pick: fn(&crate::auth::ProviderKeys) -> Option<&String>| {
        discovered.as_ref().and_then(|k| pick(k).cloned())
    };
    let introspection = config
        .introspection
        .as_ref()
        .filter(|i| i.authority == authority)
        .and_then(|i| i.endpoint.as_ref().map(ToString::to_string))
        .or_else(|| discovered_endpoint(|k| k.introspection_endpoint.as_ref()));
    Some(Endpoints {
        authorize: discovered_endpoint(|k| k.authorization_endpoint.as_ref())
            .unwrap_or_else(|| format!("{trimmed}/oauth2/v2.0/authorize")),
        token: discovered_endpoint(|k| k.token_endpoint.as_ref())
            .unwrap_or_else(|| format!("{trimmed}/oauth2/v2.0/token")),
        issuer: discovered
            .as_ref()
            .map_or_else(|| format!("{trimmed}/v2.0"), |k| k.issuer.clone()),
        jwks_uri: discovered.as_ref().map_or_else(
            || format!("{trimmed}/discovery/v2.0/keys"),
            |k| k.jwks_uri.clone(),
        ),
        introspection,
        offered: discovered.as_ref().map(|k| k.offered.clone()),
    })
}

/// `/.well-known/smart-configuration`, generated from the configured providers (reference §5.2).
pub(super) async fn smart_configuration(config: &Config, keys: &KeyStore) -> Response<Body> {
    let Some(endpoints) = endpoints(config, keys).await else {
        return fhir_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "no identity provider is configured" }),
        );
    };
    let mut document = Map::new();
    let mut put = |key: &str, value: Value| {
        document.insert(key.to_owned(), value);
    };
    put("issuer", json!(endpoints.issuer));
    put("jwks_uri", json!(endpoints.jwks_uri));
    put("authorization_endpoint", json!(endpoints.authorize));
    put("token_endpoint", json!(endpoints.token));
    let offered = endpoints.offered.as_ref();
    put("capabilities", json!(capabilities(config, offered)));
    // The provider's own lists where it advertises them; otherwise RFC 8414 §2's defaults, and
    // S256, which SMART requires of every server (Entra ID supports it without advertising it).
    let default = Offered::default();
    let offered = offered.unwrap_or(&default);
    let list = |found: &Option<Vec<String>>, fallback: &[&str]| {
        found
            .as_ref()
            .map_or_else(|| json!(fallback), |items| json!(items))
    };
    put(
        "grant_types_supported",
        list(&offered.grant_types_supported, &["authorization_code"]),
    );
    put(
        "response_types_supported",
        list(&offered.response_types_supported, &["code"]),
    );
    put(
        "token_endpoint_auth_methods_supported",
        list(
            &offered.token_endpoint_auth_methods_supported,
            &["client_secret_basic"],
        ),
    );
    put(
        "code_challenge_methods_supported",
        list(&offered.code_challenge_methods_supported, &["S256"]),
    );
    if let Some(scopes) = &offered.scopes_supported {
        put("scopes_supported", json!(scopes));
    }
    if let Some(revocation) = &offered.revocation_endpoint {
        put("revocation_endpoint", json!(revocation));
    }
    if let Some(introspection) = &endpoints.introspection {
        put("introspection_endpoint", json!(introspection));
    }
    let dpop = dpop_algorithms(offered);
    if !dpop.is_empty() {
        put("dpop_signing_alg_values_supported", json!(dpop));
    }
    let mut response = fhir_response(StatusCode::OK, &Value::Object(document));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `/metadata`: the upstream's CapabilityStatement with a `rest[].security` block added where it
/// has none (reference §5.3). Anything that is not a JSON CapabilityStatement passes unchanged.
pub(super) async fn add_security(
    response: Response<Body>,
    config: &Config,
    keys: &KeyStore,
) -> Result<Response<Body>, Rejection> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, bytes) = buffer(response, config.limits.max_bundle_bytes).await?;
    let Ok(mut statement) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(rebuild(parts, bytes));
    };
    let Some(endpoints) = endpoints(config, keys).await else {
        return Ok(rebuild(parts, bytes));
    };
    let mut extensions = vec![json!({
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            { "url": "token", "valueUri": endpoints.token },
            { "url": "authorize", "valueUri": endpoints.authorize },
        ],
    })];
    let capabilities = capabilities(config, endpoints.offered.as_ref());
    extensions.extend(capabilities.iter().map(|code| {
        json!({
            "url": "http://hl7.org/fhir/smart-app-launch/StructureDefinition/capabilities",
            "valueCode": code,
        })
    }));
    let security = json!({
        "service": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "OAuth",
        }]}],
        "extension": extensions,
    });
    let mut changed = false;
    if statement["resourceType"] == "CapabilityStatement" {
        if let Some(rest) = statement.get_mut("rest").and_then(Value::as_array_mut) {
            for entry in rest.iter_mut().filter(|r| r.get("security").is_none()) {
                if let Some(object) = entry.as_object_mut() {
                    object.insert("security".to_owned(), security.clone());
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return Ok(rebuild(parts, bytes));
    }
    Ok(rebuild(parts, Bytes::from(statement.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n\
        authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
        audience: \"https://fhir.example.org\"\n";

    fn config(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}")).expect("valid")
    }

    fn offered(json: Value) -> Offered {
        serde_json::from_value(json).expect("offered")
    }

    #[test]
    fn before_discovery_only_what_fhirguard_enforces_is_claimed() {
        assert_eq!(
            capabilities(&config(""), None),
            [
                "launch-standalone",
                "permission-patient",
                "permission-user",
                "permission-v1",
                "permission-v2"
            ]
        );
        let launch = capabilities(&config("smartLaunchPatientClaim: patient\n"), None);
        for capability in [
            "launch-ehr",
            "context-ehr-patient",
            "context-standalone-patient",
        ] {
            assert!(launch.contains(&capability), "{capability}");
        }
    }

    #[test]
    fn the_provider_decides_what_it_offers() {
        // oidc-provider's shape: public and secret clients, refresh tokens, DPoP.
        let rich = offered(json!({
            "scopes_supported": ["openid", "offline_access"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "private_key_jwt"],
            "dpop_signing_alg_values_supported": ["ES256", "RS256", "HS256"],
        }));
        let found = capabilities(&config(""), Some(&rich));
        for capability in [
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "authorize-post",
            "sso-openid-connect",
            "permission-offline",
        ] {
            assert!(found.contains(&capability), "{capability}: {found:?}");
        }
        // fhirguard never verifies an HMAC proof.
        assert_eq!(dpop_algorithms(&rich), ["ES256", "RS256"]);

        // Secrets only, no refresh tokens, no openid scope, no DPoP.
        let plain = offered(json!({
            "scopes_supported": ["patient/*.read"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "grant_types_supported": "authorization_code",
        }));
        let found = capabilities(&config(""), Some(&plain));
        for absent in [
            "client-public",
            "client-confidential-asymmetric",
            "sso-openid-connect",
            "permission-offline",
        ] {
            assert!(!found.contains(&absent), "{absent}: {found:?}");
        }
        assert!(found.contains(&"client-confidential-symmetric"));
        // A malformed member counts as not advertised, and never fails discovery.
        assert_eq!(plain.grant_types_supported, None);
        assert!(dpop_algorithms(&plain).is_empty());
    }
}
