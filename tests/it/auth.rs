//! Token validation against a fake OpenID provider (SPEC §4 steps 4–7): one test per refusal,
//! asserting the error and its `error_description`. Accepted shapes: `token_shapes.rs`.

use crate::support::idp::{config_yaml, FakeIdp};
use crate::support::token::{self, now, TestKey, TokenBuilder};
use crate::support::verification::{check, config, primary, AUDIENCE};
use fhirguard::auth::near_miss::NearMiss;
use fhirguard::auth::{authenticate, AuthError, FhirUserRule, KeyStore};
use fhirguard::authz::scope::Context;
use fhirguard::config::Config;
use serde_json::json;

async fn refused(store: &KeyStore, config: &Config, token: &str) -> AuthError {
    check(store, config, token)
        .await
        .expect_err("the token must be refused")
}

#[tokio::test]
async fn a_malformed_token_is_refused() {
    let (_idp, _key, store, config) = primary().await;
    let error = refused(&store, &config, "not-a-jwt").await;
    assert_eq!(error, AuthError::Malformed { detail: "" });
    assert_eq!(error.description(), "The token is malformed");
}

#[tokio::test]
async fn a_token_without_iss_is_refused() {
    let (_idp, key, store, config) = primary().await;
    let token = token::base_claims("x", AUDIENCE, now())
        .without("iss")
        .sign(&key);
    assert_eq!(
        refused(&store, &config, &token).await,
        AuthError::MissingIssuer
    );
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_even_when_it_is_the_authority_string_plus_a_slash() {
    let (idp, key, store, config) = primary().await;
    let iss = format!("{}/", idp.base_url());
    let error = refused(
        &store,
        &config,
        &token::base_claims(&iss, AUDIENCE, now()).sign(&key),
    )
    .await;
    assert_eq!(
        error,
        AuthError::UnknownIssuer {
            issuer: iss.clone(),
            hint: Some(NearMiss::IssuerTrailingSlash {
                issuer: idp.issuer()
            }),
        }
    );
    assert_eq!(
        error.description(),
        format!("The issuer '{iss}' is not a configured identity provider")
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (idp, key, store, config) = primary().await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now()).unsigned(Some(&key.kid));
    let error = refused(&store, &config, &token).await;
    assert!(
        matches!(&error, AuthError::Algorithm { alg, .. } if alg == "none"),
        "{error:?}"
    );
    assert_eq!(error.description(), "The algorithm 'none' is not allowed");
}

#[tokio::test]
async fn hmac_with_the_public_key_as_secret_is_refused() {
    let (idp, key, store, config) = primary().await;
    let claims = token::base_claims(&idp.issuer(), AUDIENCE, now());
    let token = claims.sign_hmac(key.public_key_pem().as_bytes(), Some(&key.kid));
    let error = refused(&store, &config, &token).await;
    assert!(
        matches!(&error, AuthError::Algorithm { alg, .. } if alg == "HS256"),
        "{error:?}"
    );
    assert_eq!(error.description(), "The algorithm 'HS256' is not allowed");
}

#[tokio::test]
async fn a_jku_header_is_never_followed() {
    let (idp, _key, store, config) = primary().await;
    let attacker_key = TestKey::rsa("attacker");
    let attacker = FakeIdp::with_keys(vec![attacker_key.jwk()]).await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .header("jku", format!("{}/jwks", attacker.base_url()))
        .header("x5u", format!("{}/cert", attacker.base_url()))
        .header("jwk", attacker_key.jwk())
        .sign(&attacker_key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::UnknownKid {
            authority: idp.base_url(),
            kid: Some("attacker".into())
        }
    );
    assert_eq!(attacker.jwks_fetches() + attacker.discovery_fetches(), 0);
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let (idp, _key, store, config) = primary().await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(&TestKey::ec_p256("nope"));
    let error = refused(&store, &config, &token).await;
    assert!(matches!(&error, AuthError::UnknownKid { kid: Some(kid), .. } if kid == "nope"));
    assert_eq!(
        error.description(),
        "The signature key 'nope' was not found"
    );
    assert_eq!(error.provider(), Some(idp.base_url().as_str()));
}

#[tokio::test]
async fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let (idp, key, store, config) = primary().await;
    // ES256 under the kid of the provider's RSA key.
    let token =
        token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(&TestKey::ec_p256(&key.kid));
    let error = refused(&store, &config, &token).await;
    assert!(
        matches!(error, AuthError::AlgorithmMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.description(),
        "The algorithm 'ES256' does not fit the signature key 'rsa-1'"
    );
    // An RSA key published with alg RS256 does not verify PS256.
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .header("alg", "PS256")
        .sign(&key);
    assert_eq!(refused(&store, &config, &token).await.reason(), "algorithm");
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let (idp, key, store, config) = primary().await;
    let impostor = TestKey::rsa(&key.kid);
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(&impostor);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::Signature {
            authority: idp.base_url()
        }
    );
    assert_eq!(error.description(), "The signature is invalid");
    // A valid token with one payload byte changed.
    let good = token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(&key);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let other = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("sub", "admin")
        .sign(&key);
    parts[1] = other.split('.').nth(1).unwrap().to_owned();
    assert_eq!(
        refused(&store, &config, &parts.join(".")).await.reason(),
        "signature"
    );
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let (idp, key, store, config) = primary().await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .without("exp")
        .sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::NoExpiration {
            authority: idp.base_url()
        }
    );
    assert_eq!(error.description(), "The token has no expiration");
}

#[tokio::test]
async fn an_expired_token_is_refused_after_the_clock_skew() {
    let (idp, key, store, config) = primary().await;
    let now = now();
    let exp = now - 301;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now - 4000)
        .claim("exp", exp)
        .sign(&key);
    let error = authenticate(&store, &config, &token, now)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::Expired {
            authority: idp.base_url(),
            exp
        }
    );
    // 2026-11-22T10:00:00Z
    let fixed = AuthError::Expired {
        authority: String::new(),
        exp: 1_795_341_600,
    };
    assert_eq!(
        fixed.description(),
        "The token expired at '2026-11-22T10:00:00Z'"
    );
    let within_skew = token::base_claims(&idp.issuer(), AUDIENCE, now - 4000)
        .claim("exp", now - 299)
        .sign(&key);
    assert!(authenticate(&store, &config, &within_skew, now)
        .await
        .is_ok());
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let (idp, key, store, config) = primary().await;
    let now = now();
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now)
        .claim("nbf", now + 301)
        .sign(&key);
    let error = authenticate(&store, &config, &token, now)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::NotYetValid {
            authority: idp.base_url(),
            nbf: now + 301
        }
    );
    assert!(error
        .description()
        .starts_with("The token is not valid before '"));
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let (idp, key, store, config) = primary().await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("aud", json!(["a", "b"]))
        .sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(error.description(), "The audience 'a, b' is invalid");
    assert_eq!(error.reason(), "audience");
}

#[tokio::test]
async fn one_trailing_slash_on_the_audience_is_tolerated_only_when_configured() {
    let (idp, key, store, mut config) = primary().await;
    let token = token::base_claims(&idp.issuer(), &format!("{AUDIENCE}/"), now()).sign(&key);
    assert_eq!(refused(&store, &config, &token).await.reason(), "audience");
    config.audience_ignore_trailing_slash = true;
    assert!(check(&store, &config, &token).await.is_ok());
}

#[tokio::test]
async fn a_token_without_kid_needs_exactly_one_fitting_key() {
    let (idp, key, store, config) = primary().await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .no_kid()
        .sign(&key);
    assert!(check(&store, &config, &token).await.is_ok());
    idp.set_keys(vec![key.jwk(), TestKey::rsa("rsa-2").jwk()]);
    let store = KeyStore::new();
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::UnknownKid {
            authority: idp.base_url(),
            kid: None
        }
    );
}

#[tokio::test]
async fn a_token_claiming_one_providers_issuer_is_never_checked_with_anothers_keys() {
    let (key_a, key_b) = (TestKey::rsa("a-1"), TestKey::rsa("b-1"));
    let idp_a = FakeIdp::with_keys(vec![key_a.jwk()]).await;
    let idp_b = FakeIdp::with_keys(vec![key_b.jwk()]).await;
    let config = config(
        Some(&idp_a.base_url()),
        &[(&idp_b.base_url(), &[("app", AUDIENCE)])],
    );
    let store = KeyStore::new();
    store.prefetch(&config).await;
    let claims = token::base_claims(&idp_a.issuer(), AUDIENCE, now());
    let error = refused(&store, &config, &claims.sign(&key_b)).await;
    assert_eq!(
        error,
        AuthError::UnknownKid {
            authority: idp_a.base_url(),
            kid: Some("b-1".into())
        }
    );
    let error = refused(
        &store,
        &config,
        &claims.sign(&key_b.clone().with_kid("a-1")),
    )
    .await;
    assert_eq!(
        error,
        AuthError::Signature {
            authority: idp_a.base_url()
        }
    );
}

/// A smart provider with two applications.
async fn smart() -> (FakeIdp, TestKey, KeyStore, Config) {
    let key = TestKey::rsa("smart-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let config = config(
        None,
        &[(
            &idp.base_url(),
            &[("portal", AUDIENCE), ("other", "https://other")],
        )],
    );
    (idp, key, KeyStore::new(), config)
}

fn smart_claims(idp: &FakeIdp, client: &str) -> TokenBuilder {
    token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("azp", client)
        .claim("scp", "patient/Observation.read")
        .claim("fhirUser", "https://fhir.example.org/Patient/123")
}

#[tokio::test]
async fn smart_an_unknown_client_is_refused() {
    let (idp, key, store, config) = smart().await;
    let error = refused(&store, &config, &smart_claims(&idp, "stranger").sign(&key)).await;
    assert_eq!(
        error.description(),
        "The client 'stranger' (claim azp) is not a configured application of this identity \
         provider"
    );
    let token = smart_claims(&idp, "x").without("azp").sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::UnknownClient {
            authority: idp.base_url(),
            client: None,
            looked_in: "azp, appid, client_id or cid",
        }
    );
    assert_eq!(
        error.description(),
        "The token names no client: it has no azp, appid, client_id or cid claim"
    );
}

#[tokio::test]
async fn smart_the_audience_must_be_the_applications() {
    let (idp, key, store, config) = smart().await;
    let error = refused(&store, &config, &smart_claims(&idp, "other").sign(&key)).await;
    assert_eq!(
        error.description(),
        format!("The audience '{AUDIENCE}' is invalid")
    );
    assert_eq!(error.hint(), None, "another audience is no near miss");
}

#[tokio::test]
async fn smart_a_token_without_scopes_is_refused() {
    let (idp, key, store, config) = smart().await;
    let token = smart_claims(&idp, "portal").without("scp").sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::MissingScope {
            authority: idp.base_url()
        }
    );
    assert_eq!(error.description(), "The token has no scp or scope claim");
    let token = smart_claims(&idp, "portal").claim("scp", " ").sign(&key);
    assert_eq!(
        refused(&store, &config, &token).await.reason(),
        "missing_scope"
    );
}

#[tokio::test]
async fn smart_patient_and_user_scopes_need_a_fhir_user_and_system_scopes_do_not() {
    let (idp, key, store, config) = smart().await;
    for (scopes, context) in [
        ("patient/Observation.read", Context::Patient),
        ("openid user/*.rs fhirUser", Context::User),
    ] {
        let token = smart_claims(&idp, "portal")
            .claim("scp", scopes)
            .without("fhirUser")
            .sign(&key);
        let error = refused(&store, &config, &token).await;
        assert_eq!(
            error,
            AuthError::MissingFhirUser {
                authority: idp.base_url(),
                required_by: FhirUserRule::Scopes(context),
            }
        );
        assert_eq!(
            error.description(),
            format!(
                "The token has {context}/ scopes but no fhirUser claim (or extension_fhirUser); \
                 patient/ and user/ scopes need one, system/ scopes do not"
            )
        );
    }
    // SMART Backend Services: client_credentials with system/ scopes and no fhirUser.
    for scopes in ["system/*.read", "system/*.rs system/Patient.rs", "openid"] {
        let token = smart_claims(&idp, "portal")
            .claim("scp", scopes)
            .without("fhirUser")
            .sign(&key);
        let principal = check(&store, &config, &token)
            .await
            .unwrap_or_else(|e| panic!("{scopes}: {e}"));
        assert_eq!(principal.fhir_user, None);
    }
    // Malformed scopes are the grant's to refuse (400), not a missing fhirUser.
    let token = smart_claims(&idp, "portal")
        .claim("scp", "patient/Observation.read user/Patient.read")
        .without("fhirUser")
        .sign(&key);
    assert!(check(&store, &config, &token).await.is_ok());
}

#[tokio::test]
async fn smart_a_relative_fhir_user_is_accepted_and_a_non_reference_is_refused() {
    let (idp, key, store, config) = smart().await;
    for value in [
        "Patient/123",
        "Practitioner/fhir-system-client",
        "https://fhir.example.org/Patient/123",
    ] {
        let token = smart_claims(&idp, "portal")
            .claim("fhirUser", value)
            .sign(&key);
        let principal = check(&store, &config, &token)
            .await
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(principal.fhir_user.as_deref(), Some(value));
    }
    for value in ["urn:uuid:1234", "Patient", "x/Patient/1", "Patient/1?x=2"] {
        let token = smart_claims(&idp, "portal")
            .claim("fhirUser", value)
            .sign(&key);
        let error = refused(&store, &config, &token).await;
        assert_eq!(error.reason(), "bad_fhir_user", "{value}");
        assert_eq!(
            error.description(),
            format!(
                "The fhirUser claim '{value}' is not a resource reference: expected \
                 <resourceType>/<id>, relative (Practitioner/7) or an absolute http(s) URL \
                 ending in it"
            )
        );
    }
    // extension_fhirUser (Azure AD B2C) counts as fhirUser.
    let token = smart_claims(&idp, "portal")
        .without("fhirUser")
        .claim("extension_fhirUser", "Patient/9")
        .sign(&key);
    let principal = check(&store, &config, &token).await.expect("accepted");
    assert_eq!(principal.fhir_user.as_deref(), Some("Patient/9"));
}

/// The smart provider of [`smart`] under `compatibility: azure`.
async fn smart_azure() -> (FakeIdp, TestKey, KeyStore, Config) {
    let key = TestKey::rsa("smart-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let yaml = config_yaml(None, &[(&idp.base_url(), &[("portal", AUDIENCE)])]);
    let config = Config::parse(&format!("compatibility: azure\n{yaml}")).expect("config");
    (idp, key, KeyStore::new(), config)
}

#[tokio::test]
async fn smart_under_azure_compatibility_fhir_user_is_always_required_and_absolute() {
    let (idp, key, store, config) = smart_azure().await;
    let token = smart_claims(&idp, "portal")
        .claim("scp", "system/*.read")
        .without("fhirUser")
        .sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error,
        AuthError::MissingFhirUser {
            authority: idp.base_url(),
            required_by: FhirUserRule::Azure,
        }
    );
    assert_eq!(
        error.description(),
        "The token has no fhirUser claim; with compatibility: azure every token of a smart \
         identity provider needs one"
    );
    let token = smart_claims(&idp, "portal")
        .claim("fhirUser", "Patient/123")
        .sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error.description(),
        "The fhirUser claim 'Patient/123' must be an absolute URL ending in <resourceType>/<id> \
         (compatibility: azure)"
    );
    assert!(
        check(&store, &config, &smart_claims(&idp, "portal").sign(&key))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn smart_the_client_is_named_by_azp_else_appid_else_client_id_else_cid() {
    let (idp, key, store, config) = smart().await;
    let cases = [
        (vec![("azp", "portal"), ("appid", "other")], "azp"),
        (vec![("appid", "portal"), ("client_id", "other")], "appid"),
        (vec![("client_id", "portal"), ("cid", "other")], "client_id"),
        (vec![("cid", "portal")], "cid"),
    ];
    for (claims, named_by) in cases {
        let mut token = smart_claims(&idp, "x").without("azp");
        for (name, value) in &claims {
            token = token.claim(name, *value);
        }
        let principal = check(&store, &config, &token.sign(&key))
            .await
            .unwrap_or_else(|e| panic!("{claims:?}: {e}"));
        assert_eq!(principal.application, Some(0), "{claims:?}");
        assert_eq!(principal.client_id.as_deref(), Some("portal"));
        assert_eq!(principal.client_claim, Some(named_by));
    }
    // The first present claim decides: a known client in a later claim does not rescue an
    // unknown one, and 'other' (another audience) is judged as 'other'.
    let token = smart_claims(&idp, "unregistered")
        .claim("appid", "portal")
        .sign(&key);
    assert_eq!(
        refused(&store, &config, &token).await.reason(),
        "unknown_client"
    );
    let token = smart_claims(&idp, "other")
        .claim("client_id", "portal")
        .sign(&key);
    assert_eq!(refused(&store, &config, &token).await.reason(), "audience");
}

#[tokio::test]
async fn a_client_or_fhir_user_claim_that_is_not_a_string_is_never_skipped() {
    let (idp, key, store, config) = smart().await;
    for token in [
        smart_claims(&idp, "x")
            .claim("azp", json!(["stranger"]))
            .claim("client_id", "portal"),
        smart_claims(&idp, "portal")
            .claim("fhirUser", json!({"reference": "Patient/1"}))
            .claim("extension_fhirUser", "Patient/2"),
    ] {
        let error = refused(&store, &config, &token.sign(&key)).await;
        assert_eq!(
            error.description(),
            "The token is malformed: a client or fhirUser claim is not a string"
        );
    }
}

#[tokio::test]
async fn smart_under_azure_compatibility_only_azp_and_appid_name_the_client() {
    let (idp, key, store, config) = smart_azure().await;
    for claim in ["client_id", "cid"] {
        let token = smart_claims(&idp, "x")
            .without("azp")
            .claim(claim, "portal")
            .sign(&key);
        let error = refused(&store, &config, &token).await;
        assert_eq!(
            error.description(),
            "The token names no client: it has no azp or appid claim",
            "{claim}"
        );
    }
}

#[tokio::test]
async fn near_misses_are_hints_for_the_operator_only() {
    let (idp, key, store, config) = smart().await;
    // aud with a trailing slash, or the api:// form of the configured audience.
    for aud in [format!("{AUDIENCE}/"), format!("api://{AUDIENCE}")] {
        let token = token::base_claims(&idp.issuer(), &aud, now())
            .claim("azp", "portal")
            .claim("scp", "system/*.read")
            .sign(&key);
        let error = refused(&store, &config, &token).await;
        assert_eq!(
            error.description(),
            format!("The audience '{aud}' is invalid")
        );
        let hint = error.hint().expect("a near miss").to_string();
        assert!(hint.contains(AUDIENCE), "{hint}");
        assert!(!error.description().contains("hint"), "not in the answer");
    }
    // An issuer one trailing slash away from the discovered one.
    let iss = format!("{}/", idp.issuer());
    let token = token::base_claims(&iss, AUDIENCE, now())
        .claim("azp", "portal")
        .sign(&key);
    let error = refused(&store, &config, &token).await;
    assert_eq!(
        error.hint(),
        Some(&NearMiss::IssuerTrailingSlash {
            issuer: idp.issuer()
        })
    );
}

#[tokio::test]
async fn the_launch_patient_claim_is_read_only_when_configured() {
    let (idp, key, store, config) = smart().await;
    let token = smart_claims(&idp, "portal")
        .claim("patient", "456")
        .sign(&key);
    let principal = check(&store, &config, &token).await.expect("accepted");
    assert_eq!(principal.launch_patient, None, "not configured");

    let yaml = config_yaml(None, &[(&idp.base_url(), &[("portal", AUDIENCE)])]);
    let config = Config::parse(&format!("smartLaunchPatientClaim: patient\n{yaml}")).unwrap();
    let store = KeyStore::new();
    let principal = check(&store, &config, &token).await.expect("accepted");
    assert_eq!(principal.launch_patient.as_deref(), Some("456"));
    // Present but not a non-empty string: 401 malformed, never read as "no launch context"
    // (issue 20 item 7).
    for value in [
        serde_json::json!(456),
        serde_json::Value::Null,
        serde_json::json!(""),
        serde_json::json!("  "),
        serde_json::json!(["456"]),
        serde_json::json!({"reference": "Patient/456"}),
        serde_json::json!(true),
    ] {
        let token = smart_claims(&idp, "portal")
            .claim("patient", value.clone())
            .sign(&key);
        let error = refused(&store, &config, &token).await;
        assert_eq!(
            error.description(),
            "The token is malformed: the launch-context patient claim is present but not a \
             non-empty string",
            "{value}"
        );
    }
}
