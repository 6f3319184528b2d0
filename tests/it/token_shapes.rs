//! Token shapes fhirguard accepts when valid (reference §2.2, §2.3), one fixture each: Entra ID
//! v1 and v2, ADFS (primary authority), Azure AD B2C and Keycloak/Okta (smart providers), and
//! every allowed algorithm family.

use crate::support::idp::FakeIdp;
use crate::support::token::{self, now, TestKey};
use crate::support::verification::{check, config, primary, AUDIENCE};
use fhirguard::auth::KeyStore;
use fhirguard::authz::smart::SmartGrant;
use fhirguard::config::ProviderKind;
use jsonwebtoken::Algorithm;
use serde_json::json;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const B2C_API: &str = "0a1b2c3d-0000-4000-8000-00000000b2c0";

#[tokio::test]
async fn rs256_ps256_es256_and_es384_are_accepted() {
    let keys = [
        TestKey::rsa("rs"),
        TestKey::rsa("ps").with_alg(Algorithm::PS256),
        TestKey::ec_p256("es256"),
        TestKey::ec_p384("es384"),
    ];
    let idp = FakeIdp::with_keys(keys.iter().map(TestKey::jwk_without_alg).collect()).await;
    let (config, store) = (config(Some(&idp.base_url()), &[]), KeyStore::new());
    for key in &keys {
        let token = token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(key);
        let principal = check(&store, &config, &token)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(principal.key_id.as_deref(), Some(key.kid.as_str()));
    }
}

#[tokio::test]
async fn entra_v1_token_is_accepted_by_the_primary_authority() {
    let (idp, key, store, mut config) = primary().await;
    idp.set_issuer(&token::entra_v1_issuer(TENANT));
    config.roles.groups_claim = Some("groups".into());
    let token = token::entra_v1(TENANT, AUDIENCE, "client-v1", now())
        .claim("groups", json!(["fhir-readers"]));
    let principal = check(&store, &config, &token.sign(&key))
        .await
        .expect("accepted");
    assert_eq!(principal.provider, ProviderKind::Primary);
    assert_eq!(
        principal.issuer,
        format!("https://sts.windows.net/{TENANT}/")
    );
    assert_eq!(principal.client_id.as_deref(), Some("client-v1"));
    assert_eq!(principal.scopes, ["user_impersonation"]);
    assert_eq!(principal.roles, ["FHIR Data Reader", "fhirDataContributor"]);
    assert_eq!(principal.groups, ["fhir-readers"]);
    assert_eq!(
        principal.object_id.as_deref(),
        Some("00000000-0000-0000-0000-0000000000a1")
    );
    assert_eq!(principal.application, None);
}

#[tokio::test]
async fn entra_v2_token_is_accepted_and_a_v1_issuer_is_not_confused_with_it() {
    let (idp, key, store, config) = primary().await;
    idp.set_issuer(&token::entra_v2_issuer(TENANT));
    let token = token::entra_v2(TENANT, AUDIENCE, "client-v2", now()).sign(&key);
    let principal = check(&store, &config, &token).await.expect("accepted");
    assert_eq!(principal.client_id.as_deref(), Some("client-v2"));
    assert_eq!(
        principal.scopes,
        ["patient.Observation.read", "patient.Patient.read"]
    );
    let v1 = token::entra_v1(TENANT, AUDIENCE, "client-v1", now()).sign(&key);
    let error = check(&store, &config, &v1)
        .await
        .expect_err("a v1 issuer is another issuer");
    assert_eq!(error.reason(), "unknown_issuer");
}

#[tokio::test]
async fn adfs_token_is_accepted() {
    let (idp, key, store, config) = primary().await;
    idp.set_issuer("https://adfs.contoso.example/adfs");
    let token = token::adfs(
        "https://adfs.contoso.example/adfs",
        AUDIENCE,
        "adfs-client",
        now(),
    )
    .sign(&key);
    let principal = check(&store, &config, &token).await.expect("accepted");
    assert_eq!(principal.client_id.as_deref(), Some("adfs-client"));
    assert_eq!(principal.scopes, ["openid", "user_impersonation"]);
}

#[tokio::test]
async fn azure_ad_b2c_token_is_accepted_by_a_smart_provider() {
    let key = TestKey::rsa("b2c");
    let idp = FakeIdp::with_keys(vec![key.jwk_without_alg()]).await;
    let issuer = format!("https://contoso.b2clogin.com/{TENANT}/v2.0/");
    idp.set_issuer(&issuer);
    let config = config(
        None,
        &[(&idp.base_url(), &[("other", "x"), ("b2c-app", B2C_API)])],
    );
    let fhir_user = "https://fhir.example.org/Patient/p-1";
    let token = token::b2c(&issuer, B2C_API, "b2c-app", fhir_user, now()).sign(&key);
    let principal = check(&KeyStore::new(), &config, &token)
        .await
        .expect("accepted");
    assert_eq!(principal.provider, ProviderKind::Smart { index: 0 });
    assert_eq!(principal.application, Some(1));
    assert_eq!(principal.fhir_user.as_deref(), Some(fhir_user));
    assert_eq!(principal.scopes, ["patient.all.read"]);
}

#[tokio::test]
async fn keycloak_token_is_accepted_by_the_second_smart_provider() {
    let (other_key, key) = (TestKey::rsa("other"), TestKey::ec_p256("kc"));
    let other = FakeIdp::with_keys(vec![other_key.jwk()]).await;
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    idp.set_issuer("https://keycloak.example.org/realms/fhir");
    let config = config(
        None,
        &[
            (&other.base_url(), &[("x", "y")]),
            (&idp.base_url(), &[("smart-app", AUDIENCE)]),
        ],
    );
    let fhir_user = "https://fhir.example.org/Practitioner/dr-1";
    let token = token::keycloak(
        "https://keycloak.example.org/realms/fhir",
        AUDIENCE,
        "smart-app",
        fhir_user,
        now(),
    );
    let principal = check(&KeyStore::new(), &config, &token.sign(&key))
        .await
        .expect("accepted");
    assert_eq!(principal.provider, ProviderKind::Smart { index: 1 });
    assert_eq!(principal.authority, idp.base_url());
    assert_eq!(principal.application, Some(0));
    assert_eq!(principal.audience, ["account", AUDIENCE]);
    assert_eq!(
        principal.scopes,
        ["openid", "profile", "patient/*.read", "launch/patient"]
    );
}

/// A standard JWT access token (RFC 9068 §2.2): `client_id`, `scope`, `typ: at+jwt`; a
/// client_credentials token of SMART Backend Services carries `system/` scopes and no
/// `fhirUser` (Duende IdentityServer, Spring Authorization Server, PingFederate,
/// `oidc-provider`).
#[tokio::test]
async fn rfc9068_backend_services_token_is_accepted_by_a_smart_provider() {
    let key = TestKey::rsa("at-jwt");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let config = config(None, &[(&idp.base_url(), &[("bulk-client", AUDIENCE)])]);
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .header("typ", "at+jwt")
        .claim("client_id", "bulk-client")
        .claim("sub", "bulk-client")
        .claim("jti", "5f1c")
        .claim("iat", now())
        .claim("scope", "system/*.rs system/Patient.rs");
    let principal = check(&KeyStore::new(), &config, &token.sign(&key))
        .await
        .expect("accepted");
    assert_eq!(principal.application, Some(0));
    assert_eq!(principal.client_id.as_deref(), Some("bulk-client"));
    assert_eq!(principal.client_claim, Some("client_id"));
    assert_eq!(principal.fhir_user, None);
    let grant = SmartGrant::new(&principal.scopes, principal.fhir_user.as_deref(), None)
        .expect("a system/ grant");
    assert_eq!(grant.user, None);
}

/// An Okta access token: the client in `cid`, `scp` as an array, `uid`, a relative `fhirUser`
/// from a custom claim.
#[tokio::test]
async fn okta_token_is_accepted_by_a_smart_provider() {
    let key = TestKey::rsa("okta");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    idp.set_issuer("https://dev-1.okta.com/oauth2/default");
    let config = config(None, &[(&idp.base_url(), &[("0oa1okta", AUDIENCE)])]);
    let token = token::base_claims("https://dev-1.okta.com/oauth2/default", AUDIENCE, now())
        .claim("ver", 1)
        .claim("cid", "0oa1okta")
        .claim("uid", "00u1")
        .claim("scp", json!(["openid", "fhirUser", "user/Observation.rs"]))
        .claim("fhirUser", "Practitioner/dr-1");
    let principal = check(&KeyStore::new(), &config, &token.sign(&key))
        .await
        .expect("accepted");
    assert_eq!(principal.client_claim, Some("cid"));
    assert_eq!(principal.fhir_user.as_deref(), Some("Practitioner/dr-1"));
    let grant = SmartGrant::new(&principal.scopes, principal.fhir_user.as_deref(), None)
        .expect("a user/ grant");
    assert_eq!(
        grant.user.as_ref().map(ToString::to_string).as_deref(),
        Some("Practitioner/dr-1")
    );
}
