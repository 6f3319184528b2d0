//! Steps 6–7 of SPEC §4 over a token's claims, whoever vouched for them: a JWT whose signature
//! step 5 verified ([`super::verify`]), or an active introspection answer (RFC 7662 §2.2,
//! [`super::introspection`]). Lifetime, then audience, client and, for a smart provider, the
//! application, scopes and `fhirUser`; what passes becomes the [`Principal`].

use super::error::{echo, AuthError, FhirUserRule};
use super::token::{audience_matches, check_lifetime, is_fhir_user_reference, ClaimSet, Lifetime};
use super::{binding, near_miss, Principal, Selected};
use crate::authz::scope::{parse_scopes, Context};
use crate::config::{Compatibility, Config, ProviderKind};

/// How many token audiences an `error_description` lists (it goes into a response header).
const MAX_ECHOED_AUDIENCES: usize = 5;

/// Steps 6–7 over a token's claims, whoever vouched for them: a JWT whose signature step 5
/// verified, or an active introspection answer (RFC 7662 §2.2, [`super::introspection`]). Both paths
/// share these rules, so an opaque token is judged exactly as a JWT with the same claims.
pub(super) fn judge_claims(
    config: &Config,
    selected: &Selected,
    issuer: &str,
    claims: &ClaimSet,
    now: u64,
    key_id: Option<String>,
) -> Result<(Principal, Lifetime), AuthError> {
    let authority = selected.authority.as_str();
    // Step 6: lifetime.
    let lifetime = check_lifetime(claims, now, config.clock_skew.as_secs(), authority)?;
    // Step 7: audience, and for a smart provider the application, scopes and fhirUser.
    let client = first_string_claim(claims, client_claims(config.compatibility))?;
    let fhir_user =
        first_string_claim(claims, &["fhirUser", "extension_fhirUser"])?.map(|(value, _)| value);
    let judged = Claims {
        audience: claims.strings("aud"),
        client,
        fhir_user,
        scopes: claims.scopes(),
    };
    let application = check_claims(config, selected, &judged)?;
    let launch_patient = match config.smart_launch_patient_claim.as_deref() {
        Some(claim) => launch_patient(claims, claim)?,
        None => None,
    };
    let groups = config
        .roles
        .groups_claim
        .as_deref()
        .map(|claim| claims.strings(claim))
        .unwrap_or_default();
    let principal = Principal {
        provider: selected.kind,
        authority: selected.authority.clone(),
        issuer: issuer.to_owned(),
        subject: claims.string("sub").map(str::to_owned),
        object_id: claims.string("oid").map(str::to_owned),
        client_id: client.map(|(value, _)| value.to_owned()),
        client_claim: client.map(|(_, claim)| claim),
        application,
        audience: judged.audience,
        fhir_user: fhir_user.map(str::to_owned),
        launch_patient,
        scopes: judged.scopes,
        roles: claims.strings("roles"),
        groups,
        expires_at: lifetime.expires_at,
        key_id,
        // RFC 9449 §6 / RFC 8705 §3.1 (and RFC 7662 §2.2 for an introspection answer): the
        // token's binding, checked on every request it is used.
        confirmation: binding::confirmation(&claims.0)?.map(Box::new),
    };
    Ok((principal, lifetime))
}

/// The claims step 7 judges.
#[derive(Debug)]
struct Claims<'t> {
    /// `aud`, string or array.
    audience: Vec<String>,
    /// The client claim's value and name ([`client_claims`]).
    client: Option<(&'t str, &'static str)>,
    fhir_user: Option<&'t str>,
    scopes: Vec<String>,
}

/// Step 7: the audience; for a smart provider also the application named by the client claim,
/// its audience, the presence of scopes and the `fhirUser` rules. Returns the application's
/// index (`None` for the primary authority).
fn check_claims(
    config: &Config,
    selected: &Selected,
    claims: &Claims<'_>,
) -> Result<Option<usize>, AuthError> {
    let authority = selected.authority.as_str();
    let ProviderKind::Smart { index } = selected.kind else {
        let expected = config
            .auth
            .primary
            .as_ref()
            .map_or("", |p| p.audience.as_str());
        check_audience(config, &claims.audience, expected, authority)?;
        return Ok(None);
    };
    let provider = &config.auth.smart_providers[index];
    let unknown = || AuthError::UnknownClient {
        authority: authority.to_owned(),
        client: claims.client.map(|(value, claim)| (echo(value), claim)),
        looked_in: client_claims_text(config.compatibility),
    };
    let (app_index, app) = claims
        .client
        .and_then(|(value, _)| {
            provider
                .applications
                .iter()
                .enumerate()
                .find(|(_, a)| a.client_id == value)
        })
        .ok_or_else(unknown)?;
    check_audience(config, &claims.audience, &app.audience, authority)?;
    if claims.scopes.is_empty() {
        return Err(AuthError::MissingScope {
            authority: authority.to_owned(),
        });
    }
    check_fhir_user(
        config.compatibility,
        claims.fhir_user,
        &claims.scopes,
        authority,
    )?;
    Ok(Some(app_index))
}

/// The claims that name a token's client, in order; the first present one decides (SPEC §4
/// step 7). Entra ID sends `azp` (v2.0) or `appid` (v1.0); a standard JWT access token
/// (RFC 9068 §2.2) sends `client_id`; Okta sends `cid`. `compatibility: azure` looks only where
/// Azure does (reference §2.3 rule 3).
pub fn client_claims(compatibility: Compatibility) -> &'static [&'static str] {
    match compatibility {
        Compatibility::Azure => &["azp", "appid"],
        Compatibility::Open => &["azp", "appid", "client_id", "cid"],
    }
}

/// The first of `names` the token has, with its name. Present but not a string is malformed:
/// a claim that names the client or the user is never skipped for a later one, since another
/// reader of the token (the FHIR server) may take it where fhirguard would not.
fn first_string_claim<'t>(
    token: &'t ClaimSet,
    names: &[&'static str],
) -> Result<Option<(&'t str, &'static str)>, AuthError> {
    let Some((name, value)) = names
        .iter()
        .find_map(|name| token.get(name).map(|value| (*name, value)))
    else {
        return Ok(None);
    };
    match value {
        serde_json::Value::String(text) => Ok(Some((text.as_str(), name))),
        _ => Err(AuthError::Malformed {
            detail: "a client or fhirUser claim is not a string",
        }),
    }
}

fn client_claims_text(compatibility: Compatibility) -> &'static str {
    match compatibility {
        Compatibility::Azure => "azp or appid",
        Compatibility::Open => "azp, appid, client_id or cid",
    }
}

/// `aud` must contain `expected` (reference §8 rules 8, 9); a near miss is kept as a hint.
fn check_audience(
    config: &Config,
    audience: &[String],
    expected: &str,
    authority: &str,
) -> Result<(), AuthError> {
    if audience_matches(audience, expected, config.audience_ignore_trailing_slash) {
        return Ok(());
    }
    Err(AuthError::Audience {
        authority: authority.to_owned(),
        audiences: audience
            .iter()
            .take(MAX_ECHOED_AUDIENCES)
            .map(|a| echo(a))
            .collect(),
        hint: near_miss::audience(audience, expected),
    })
}

/// The `fhirUser` rules of a smart provider's token (SPEC §4 step 7, reference §4.5). Under
/// `compatibility: azure`, Azure's: always required, an absolute URL. Otherwise it is required
/// only when the clinical scopes are `patient/` or `user/` ones (SMART Backend Services tokens,
/// `system/`, name no user), and may be relative; when present it must be a resource
/// reference. Which types it may name, and its base against `publicBaseUrl`, are checked with
/// the grant ([`crate::authz::smart::SmartGrant::new`]), as are malformed scopes (400).
fn check_fhir_user(
    compatibility: Compatibility,
    fhir_user: Option<&str>,
    scopes: &[String],
    authority: &str,
) -> Result<(), AuthError> {
    let azure = compatibility == Compatibility::Azure;
    let Some(value) = fhir_user else {
        let required_by = if azure {
            Some(FhirUserRule::Azure)
        } else {
            match parse_scopes(scopes).map(|set| set.context()) {
                Ok(Some(context @ (Context::Patient | Context::User))) => {
                    Some(FhirUserRule::Scopes(context))
                }
                _ => None,
            }
        };
        return match required_by {
            Some(required_by) => Err(AuthError::MissingFhirUser {
                authority: authority.to_owned(),
                required_by,
            }),
            None => Ok(()),
        };
    };
    if is_fhir_user_reference(value, azure) {
        return Ok(());
    }
    Err(AuthError::BadFhirUser {
        authority: authority.to_owned(),
        value: echo(value),
        absolute_only: azure,
    })
}

/// The launch context's patient from the configured claim: absent, or a non-empty string. A
/// claim that is present but is anything else — `null`, an empty (or all-whitespace) string, a
/// number, an array, an object — is a malformed token (401), never "no launch context": a
/// `null` read as absent would fall back to `fhirUser`'s compartment, which the launch was
/// meant to narrow.
fn launch_patient(token: &ClaimSet, claim: &str) -> Result<Option<String>, AuthError> {
    match token.get(claim) {
        None => Ok(None),
        Some(serde_json::Value::String(value)) if !value.trim().is_empty() => {
            Ok(Some(value.clone()))
        }
        Some(_) => Err(AuthError::Malformed {
            detail: "the launch-context patient claim is present but not a non-empty string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// compatibility, scopes, fhirUser → Ok, or the rule that required it (`None`: malformed).
    type Row = (
        Compatibility,
        &'static str,
        Option<&'static str>,
        Result<(), Option<FhirUserRule>>,
    );

    /// The `fhirUser` rules per context and per `compatibility` (SPEC §4 step 7).
    #[test]
    fn fhir_user_rules_per_context_and_compatibility() {
        use Compatibility::{Azure, Open};
        let scopes = |s: &str| vec![s.to_owned()];
        let missing = |rule| Err(Some(rule));
        let absolute = Some("https://fhir.example.org/Patient/1");
        let relative = Some("Practitioner/7");
        let table: &[Row] = &[
            (
                Open,
                "patient/*.read",
                None,
                missing(FhirUserRule::Scopes(Context::Patient)),
            ),
            (
                Open,
                "user/*.rs",
                None,
                missing(FhirUserRule::Scopes(Context::User)),
            ),
            (Open, "system/*.rs", None, Ok(())),
            (Open, "openid", None, Ok(())),
            (Open, "patient/*.read", relative, Ok(())),
            (Open, "patient/*.read", absolute, Ok(())),
            (Open, "system/*.rs", relative, Ok(())),
            (Open, "system/*.rs", Some("urn:x"), Err(None)),
            (Azure, "system/*.rs", None, missing(FhirUserRule::Azure)),
            (Azure, "patient/*.read", None, missing(FhirUserRule::Azure)),
            (Azure, "patient/*.read", relative, Err(None)),
            (Azure, "patient/*.read", absolute, Ok(())),
        ];
        for (compatibility, claim, fhir_user, expected) in table {
            let got =
                check_fhir_user(*compatibility, *fhir_user, &scopes(claim), "a").map_err(|error| {
                    match error {
                        AuthError::MissingFhirUser { required_by, .. } => Some(required_by),
                        AuthError::BadFhirUser { absolute_only, .. } => {
                            assert_eq!(absolute_only, *compatibility == Azure);
                            None
                        }
                        other => panic!("{other:?}"),
                    }
                });
            assert_eq!(&got, expected, "{compatibility:?} {claim} {fhir_user:?}");
        }
    }

    #[test]
    fn client_claims_per_compatibility() {
        assert_eq!(client_claims(Compatibility::Azure), ["azp", "appid"]);
        assert_eq!(
            client_claims(Compatibility::Open),
            ["azp", "appid", "client_id", "cid"]
        );
    }
}
