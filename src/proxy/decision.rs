//! Steps 1–8 of SPEC §4 for one request head, shared by serving ([`super::Proxy::handle`]) and
//! `fhirguard explain`, so that explain's answer is the proxy's answer. What each step learned is
//! kept in [`Findings`] for the audit line and for explain's report.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, Uri};

use crate::actions::DataActions;
use crate::auth::{self, KeyStore, Principal};
use crate::authz::smart::{self, Confinement, SmartGrant};
use crate::authz::{self, BundleDecision, Decision, Reasons};
use crate::config::Config;
use crate::config::ProviderKind;
use crate::error::Rejection;
use crate::fhir::{self, bundle, path::normalize_path, FhirRequest};
use crate::hygiene;
use crate::metrics::Metrics;
use crate::proxy::session::{self, ConnectionMemo, TokenCache};

/// What the steps learned, in order; later fields stay `None` after the first failure.
#[derive(Debug, Default)]
pub struct Findings {
    /// The normalised path, relative to the FHIR base (step 0).
    pub path: Option<String>,
    /// The request matched an anonymous path or is a CORS preflight (step 1).
    pub anonymous: bool,
    /// The accepted token's principal (steps 4–7).
    pub principal: Option<Arc<Principal>>,
    /// The FHIR interaction and the data actions it requires (step 8).
    pub classified: Option<FhirRequest>,
    /// The data actions the principal holds (step 8).
    pub granted: Option<DataActions>,
    /// The decision for a request without a bundle body (step 8).
    pub decision: Option<Decision>,
    /// The decision for a batch/transaction bundle, once its body was read (step 8).
    pub bundle: Option<BundleDecision>,
    /// The token's SMART scopes and `fhirUser`, when SMART applies (reference §4.1).
    pub smart: Option<Arc<SmartGrant>>,
    /// What SMART enforcement still asks of the forwarding (query rewrite, checks).
    pub confinement: Option<Confinement>,
    /// The same per bundle entry, in entry order (`Forward` for denied entries).
    pub bundle_plans: Vec<Confinement>,
    /// Whether an allowed decision writes its reason too (explain) or not (serving).
    pub reasons: Reasons,
}

impl Findings {
    /// The request still needs its bundle body to be decided.
    pub fn needs_bundle(&self) -> bool {
        self.classified
            .as_ref()
            .is_some_and(|c| c.interaction.is_bundle())
            && self.bundle.is_none()
    }
}

/// Runs steps 0–8 on a request head. `Ok(())` means forward, unless [`Findings::needs_bundle`],
/// in which case [`decide_bundle`] must pass first.
#[allow(clippy::too_many_arguments)] // the request head and what judges it, all borrowed
pub async fn decide_head(
    keys: &KeyStore,
    tokens: &TokenCache,
    config: &Config,
    metrics: Option<&Metrics>,
    memo: Option<&ConnectionMemo>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    findings: &mut Findings,
) -> Result<(), Rejection> {
    // Step 0: request hygiene, before the anonymous step so that anonymous paths and
    // preflights are held to it too (SPEC §4 step 8 "method tunnels", §7).
    hygiene::check(method, uri, headers)?;
    // The decision is made on exactly the path that is forwarded.
    let path = normalize_path(uri.path())?;
    let query = uri.query();
    let anonymous = is_anonymous(config, method, &path, headers);
    findings.path = Some(path);
    let path = findings.path.as_deref().unwrap_or("/");

    // Step 1: anonymous paths and CORS preflight (SPEC §4.1).
    if anonymous {
        findings.anonymous = true;
        return Ok(());
    }

    // Step 2: tokens outside the header (reference §2.1).
    if let Some(part) = auth::jwt_in_url(uri.path(), query) {
        return Err(Rejection::TokenInUrl(part));
    }

    // Step 3: bearer extraction (RFC 6750 §2.1).
    let token = auth::bearer_token(headers, config.limits.max_token_bytes)?
        .ok_or(Rejection::MissingToken)?;

    // Steps 4–7: provider, signature, time, audience and client.
    let started = Instant::now();
    let authenticated =
        session::authenticate(tokens, keys, config, token, auth::unix_now(), memo).await;
    if let Some(metrics) = metrics {
        metrics
            .auth_duration
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &authenticated {
            metrics
                .auth_failures
                .with_label_values(&[error.provider().unwrap_or("unknown"), error.reason()])
                .inc();
        }
    }
    let session = authenticated?;
    let principal = findings.principal.insert(Arc::clone(session.principal()));

    // Step 8: classification and authorization.
    let granted = granted_actions(config, principal);
    findings.granted = Some(granted);
    let classified = findings
        .classified
        .insert(fhir::classify(method, path, query, headers)?);
    // SMART applies (reference §4.1): the scopes narrow the grant, `fhirUser` confines.
    let grant = if smart::applies(principal.provider, granted) {
        let grant = session.smart_grant(config.public_base_url.as_ref())?;
        Some(&**findings.smart.insert(grant))
    } else {
        None
    };
    if classified.interaction.is_bundle() {
        return Ok(());
    }
    let decision = findings.decision.insert(match grant {
        Some(grant) => smart::authorize(classified, query, granted, grant, findings.reasons),
        None => authz::decide(classified, granted, findings.reasons),
    });
    if !decision.allowed {
        return Err(Rejection::Forbidden(decision.reason.clone()));
    }
    if let Some(grant) = grant {
        findings.confinement = Some(smart::confine(classified, query, granted, grant)?);
    }
    Ok(())
}

/// Step 8 for a batch/transaction: every entry classified and authorized (reference §3.2). A
/// transaction with a denied entry is refused whole; a batch passes when the principal holds
/// any data action, and its denied entries are answered one by one ([`BundleDecision`]).
/// Under SMART an entry must also need no further confinement (no query rewrite, response or
/// compartment check), since those are carried out only for requests sent on their own.
pub fn decide_bundle(body: &[u8], findings: &mut Findings) -> Result<(), Rejection> {
    let bundle = bundle::classify_bundle(body)?;
    let granted = findings.granted.unwrap_or(DataActions::NONE);
    let decision = match &findings.smart {
        Some(grant) => authz::authorize_bundle_with(&bundle, granted, |entry| {
            smart_entry(entry, granted, grant)
        }),
        None => authz::authorize_bundle(&bundle, granted),
    };
    if let Some(grant) = &findings.smart {
        findings.bundle_plans = bundle
            .entries
            .iter()
            .zip(&decision.entries)
            .map(|(entry, decided)| match decided.allowed {
                true => smart::confine(entry, entry.query.as_deref(), granted, grant)
                    .unwrap_or(Confinement::Forward),
                false => Confinement::Forward,
            })
            .collect();
    }
    let decision = findings.bundle.insert(decision);
    let batch_answerable = decision.kind == bundle::BundleKind::Batch
        && !granted.intersection(DataActions::ALL).is_empty();
    if decision.allowed || batch_answerable {
        Ok(())
    } else {
        Err(Rejection::Forbidden(decision.reason.clone()))
    }
}

/// One bundle entry under SMART: the type gate, then a confinement fhirguard can carry out
/// inside a bundle — a forward, a rewritten entry URL, a check of the entry's answer (read) or
/// a filter of it (search). Writes needing a compartment check are denied inside bundles.
fn smart_entry(entry: &FhirRequest, granted: DataActions, grant: &SmartGrant) -> Decision {
    let query = entry.query.as_deref();
    let mut decision = smart::authorize(entry, query, granted, grant, Reasons::Always);
    if decision.allowed {
        match smart::confine(entry, query, granted, grant) {
            Ok(
                Confinement::Forward
                | Confinement::Rewrite { .. }
                | Confinement::Read
                | Confinement::Search { .. },
            ) => {}
            Ok(Confinement::Write { .. } | Confinement::Patch | Confinement::History) => {
                decision.allowed = false;
                decision.reason = format!(
                    "{entry} needs a compartment check of the stored resource, which \
                     fhirguard makes only for a request sent on its own"
                );
            }
            Err(denial) => {
                decision.allowed = false;
                decision.reason = Rejection::from(denial).to_string();
            }
        }
    }
    decision
}

/// Step 1: an anonymous path read with GET/HEAD, or a CORS preflight (the same predicate the
/// hygiene rules use, so a request refused as a preflight with a body is the one that would
/// have passed without a token).
fn is_anonymous(config: &Config, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    (read && config.anonymous_paths.iter().any(|p| p == path))
        || hygiene::is_preflight(method, headers)
}

/// The data actions the principal holds: what the configuration grants it
/// ([`configured_actions`]) with the SMART v2 actions a granted `Read` or `Write` covers
/// ([`DataActions::implied`], SPEC §4.8).
pub fn granted_actions(config: &Config, principal: &Principal) -> DataActions {
    configured_actions(config, principal).implied()
}

/// The data actions the configuration grants the principal, as written: the application's
/// `allowedDataActions` for a smart identity provider, the role mapping for the primary
/// authority (SPEC §4.8).
pub fn configured_actions(config: &Config, principal: &Principal) -> DataActions {
    match principal.provider {
        ProviderKind::Primary => config.roles.granted(&principal.roles, &principal.groups),
        ProviderKind::Smart { index } => principal
            .application
            .and_then(|app| {
                config
                    .auth
                    .smart_providers
                    .get(index)?
                    .applications
                    .get(app)
            })
            .map_or(DataActions::NONE, |app| app.allowed_data_actions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::DataAction::{Read, ReadById, Search, Smart, Write};

    fn principal(provider: ProviderKind, roles: &[&str]) -> Principal {
        Principal {
            provider,
            authority: "https://idp.example.org".into(),
            issuer: "https://idp.example.org".into(),
            subject: None,
            object_id: None,
            client_id: Some("reader".into()),
            client_claim: Some("client_id"),
            application: Some(0),
            audience: vec!["https://fhir.example.org".into()],
            fhir_user: None,
            launch_patient: None,
            scopes: vec!["system/*.rs".into()],
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: Vec::new(),
            expires_at: 0,
            key_id: None,
        }
    }

    /// Issue 10 part 1: the application's `[Read]` covers the v2 letters, as the role mapping's.
    #[test]
    fn granted_actions_cover_the_v2_letters_of_the_configured_ones() {
        let config = Config::parse(
            r#"
upstream: "http://127.0.0.1:1/fhir"
authenticationConfiguration:
  authority: "https://login.example.org/tenant"
  audience: "https://fhir.example.org"
  smartIdentityProviders:
    - authority: "https://idp.example.org"
      applications:
        - clientId: "reader"
          audience: "https://fhir.example.org"
          allowedDataActions: ["Read"]
"#,
        )
        .expect("config");
        let smart = principal(ProviderKind::Smart { index: 0 }, &[]);
        assert_eq!(
            configured_actions(&config, &smart),
            DataActions::of(&[Read])
        );
        assert_eq!(
            granted_actions(&config, &smart),
            DataActions::of(&[Read, ReadById, Search])
        );
        let primary = principal(ProviderKind::Primary, &["FHIR SMART User", "globalReader"]);
        assert!(granted_actions(&config, &primary)
            .contains_all(DataActions::of(&[Read, ReadById, Search, Smart])));
        assert!(!granted_actions(&config, &primary).contains(Write));
    }
}
