//! Steps 0–8 of SPEC §4, as phases over typed values, shared by serving (`Proxy::handle`) and
//! `fhirguard explain`, so that explain's answer is the proxy's answer for every request shape:
//!
//! ```text
//! decide_head(head)   → Head::Anonymous           step 1: no token needed
//!                     → Head::Decided(Authorized)  steps 2–8 passed on the head
//!                     → Head::NeedsBody(Pending)   a batch/transaction, or a POST _search, whose
//!                                                  body decides
//! decide_body(pending, body) → Verdict::Request | Verdict::Bundle
//! ```
//!
//! A refusal ([`Refused`]) carries the [`Trace`] of what the phases before it established (who
//! the token names, the classified request, the grant), for the audit line, the challenge and
//! explain's report. Nothing reads a trace to decide.
//!
//! This file holds the phases' order, classification and the decision on a request on its own.
//! The values they hand on are `proxy::judgement`'s, re-exported here ([`Judge`], [`Head`],
//! [`Verdict`], …); steps 2–7 (the token and its binding) are `proxy::authentication`'s; a
//! batch/transaction's entries are `proxy::bundle_decision`'s; a `POST …/_search`'s form is
//! read by `proxy::search`.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method};

use crate::actions::DataActions;
use crate::auth::{self, Principal};
use crate::authz;
use crate::authz::smart;
use crate::config::{Config, ProviderKind};
use crate::error::Rejection;
use crate::fhir::{self, path::normalize_path};
use crate::hygiene;
use crate::proxy::authentication::authenticate;
use crate::proxy::bundle_decision::decide_bundle;
pub use crate::proxy::judgement::{
    Authorized, AuthorizedBundle, BodyNeed, Classified, Head, Judge, Pending, Plan, Refused, Trace,
    Verdict,
};
use crate::proxy::search::search_form;
use crate::proxy::session::Session;

/// Steps 0–8 on a request head.
pub async fn decide_head(judge: &Judge<'_>, head: &Parts) -> Result<Head, Refused> {
    // Step 0: request hygiene, before the anonymous step so that anonymous paths and
    // preflights are held to it too (SPEC §4 step 8 "method tunnels", §7); the decision is
    // made on exactly the path that is forwarded.
    let admitted = hygiene::check(&head.method, &head.uri, &head.headers)
        .map_err(Rejection::from)
        .and_then(|()| Ok(normalize_path(head.uri.path())?));
    let path = admitted.map_err(|rejection| Refused::new(rejection, Trace::default()))?;

    // Step 1: anonymous paths and CORS preflight (SPEC §4.1).
    if is_anonymous(judge.config, &head.method, &path, &head.headers) {
        return Ok(Head::Anonymous { path });
    }
    let session = match authenticate(judge, head).await {
        Ok(session) => session,
        Err((rejection, principal)) => {
            let trace = Trace {
                path: Some(path),
                principal,
                ..Trace::default()
            };
            return Err(Refused::new(rejection, trace));
        }
    };
    // Step 8.
    let query = head.uri.query();
    let classified = classify(judge, path, session, head, query)?;
    if classified.request.interaction.is_bundle() {
        let body = BodyNeed::Bundle;
        return Ok(Head::NeedsBody(Pending { body, classified }));
    }
    let allowed = decide(judge, classified, query, None)?;
    // A POST `_search` carries parameters in its form body too (R4 http.html#search): allowed
    // on the URL's, it is decided again once the form is read.
    if head.method == Method::POST && allowed.request.interaction.is_search() {
        let Authorized {
            path,
            session,
            granted,
            request,
            plan,
            ..
        } = allowed;
        let grant = match plan {
            Plan::Smart { grant, .. } => Some(grant),
            Plan::Forward => None,
        };
        let classified = Classified {
            path,
            session,
            granted,
            request,
            grant,
        };
        let body = BodyNeed::SearchForm;
        return Ok(Head::NeedsBody(Pending { body, classified }));
    }
    Ok(Head::Decided(allowed))
}

/// Step 8, first half: the request classified, the principal's grant and SMART grant.
fn classify(
    judge: &Judge<'_>,
    path: String,
    session: Arc<Session>,
    head: &Parts,
    query: Option<&str>,
) -> Result<Classified, Refused> {
    let config = judge.config;
    let principal = session.principal();
    let granted = granted_actions(config, principal);
    let trace = || Trace {
        principal: Some(Arc::clone(principal)),
        granted: Some(granted),
        ..Trace::default()
    };
    let request = match fhir::classify(&head.method, &path, query, &head.headers) {
        Ok(request) => request,
        Err(error) => return Err(Refused::new(error, trace().at(path))),
    };
    // SMART applies (reference §4.1): the scopes narrow the grant, `fhirUser` confines.
    let grant = match smart::applies(principal.provider, granted) {
        true => match session.smart_grant(config.public_base_url.as_ref()) {
            Ok(grant) => Some(grant),
            Err(error) => return Err(Refused::new(error, trace().at(path).with(request))),
        },
        false => None,
    };
    Ok(Classified {
        path,
        session,
        granted,
        request,
        grant,
    })
}

/// Step 8, second half: the decision on a request on its own, and under SMART the plan that
/// confines it. `form`: the joined parameters of a `POST …/_search` (its `query`).
fn decide(
    judge: &Judge<'_>,
    classified: Classified,
    query: Option<&str>,
    form: Option<String>,
) -> Result<Authorized, Refused> {
    let Classified {
        path,
        session,
        granted,
        request,
        grant,
    } = classified;
    let decision = match &grant {
        Some(grant) => smart::authorize(&request, query, granted, grant, judge.reasons),
        None => authz::decide(&request, granted, judge.reasons),
    };
    let refused = |rejection: Rejection, decision, request, grant| {
        let trace = Trace {
            path: Some(path.clone()),
            principal: Some(Arc::clone(session.principal())),
            granted: Some(granted),
            request: Some(request),
            grant,
            decision: Some(decision),
            ..Trace::default()
        };
        Refused::new(rejection, trace)
    };
    // Report-only mode relaxes the decision, never what follows from it: SMART's plan below
    // still confines the request, or refuses it.
    let mut would_be = None;
    if !decision.allowed {
        let rejection = Rejection::Denied(Box::new(decision.clone()));
        if !judge.reports_only(&session) {
            return Err(refused(rejection, decision, request, grant));
        }
        would_be = Some(Box::new(rejection));
    }
    let plan = match grant {
        Some(grant) => match smart::confine(&request, query, granted, &grant) {
            Ok(confinement) => Plan::Smart { grant, confinement },
            Err(denial) => return Err(refused(denial.into(), decision, request, Some(grant))),
        },
        None => Plan::Forward,
    };
    Ok(Authorized {
        path,
        session,
        granted,
        request,
        decision,
        form,
        plan,
        would_be,
    })
}

/// Step 8 for a request whose body decides, once the body is read: a batch/transaction entry
/// by entry (`decide_bundle`), or a `POST …/_search` on the URL's parameters and the form's
/// together, as the FHIR server reads them.
pub fn decide_body(
    judge: &Judge<'_>,
    pending: Pending,
    head: &Parts,
    body: Bytes,
) -> Result<Verdict, Refused> {
    let Pending {
        body: need,
        classified,
    } = pending;
    if need == BodyNeed::Bundle {
        return decide_bundle(judge, classified, body).map(Verdict::Bundle);
    }
    let Classified { path, session, .. } = classified;
    let refused = |rejection: Rejection, path: String| {
        let trace = Trace {
            path: Some(path),
            principal: Some(Arc::clone(session.principal())),
            ..Trace::default()
        };
        Refused::new(rejection, trace)
    };
    // The form is a query too: no `_method`, no `access_token` (request hygiene).
    if let Err(unsafe_form) = hygiene::check_form(&body) {
        return Err(refused(unsafe_form.into(), path));
    }
    let form = match search_form(head, &body) {
        Ok(form) => form,
        Err(rejection) => return Err(refused(rejection, path)),
    };
    // A token in the form is a token outside the header, as it is in the URL (step 2).
    if let Some(part) = auth::jwt_in_url("", Some(&form)) {
        return Err(refused(Rejection::TokenInUrl(part), path));
    }
    let session = Arc::clone(&session);
    let classified = classify(judge, path, session, head, Some(&form))?;
    let query = Some(form.as_str());
    let allowed = decide(judge, classified, query, None)?;
    Ok(Verdict::Request(Authorized {
        form: Some(form),
        ..allowed
    }))
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
            client_claim: Some("client_id"),
            application: Some(0),
            scopes: vec!["system/*.rs".into()],
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..Principal::for_tests(provider, "reader")
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
