//! Steps 0–8 of SPEC §4, as phases over typed values, shared by serving
//! ([`super::Proxy::handle`]) and `fhirguard explain`, so that explain's answer is the proxy's
//! answer for every request shape:
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

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method};

use crate::actions::DataActions;
use crate::auth::dpop::nonce::Nonces;
use crate::auth::{self, KeyStore, Principal};
use crate::authz::smart::{self, Confinement, SmartGrant};
use crate::authz::{self, BundleDecision, Decision, Reasons};
use crate::config::{Config, ProviderKind};
use crate::error::Rejection;
use crate::fhir::{self, bundle, path::normalize_path, FhirRequest};
use crate::hygiene;
use crate::metrics::Metrics;
use crate::proxy::forward::Peer;
use crate::proxy::replay::ReplayCache;
use crate::proxy::sender::{self, Evidence, ProofState};
use crate::proxy::session::{self, ConnectionMemo, Session, TokenCache};
use crate::proxy::smart::search_form;

/// What judges a request: the configuration in force and the caches it is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub keys: &'a KeyStore,
    pub tokens: &'a TokenCache,
    pub config: &'a Config,
    /// Where authentication is timed and its failures counted (`None`: not counted, explain).
    pub metrics: Option<&'a Metrics>,
    /// The client connection's last token, when the caller keeps one.
    pub memo: Option<&'a ConnectionMemo>,
    /// Whether an allowed decision writes its reason too (explain) or not (serving).
    pub reasons: Reasons,
    /// Seen DPoP proofs (RFC 9449 §11.1).
    pub replay: &'a ReplayCache,
    /// The server nonces DPoP proofs must carry (RFC 9449 §8); `None`: not required.
    pub nonces: Option<&'a Nonces>,
    /// The client connection (`None`: explain).
    pub peer: Option<&'a Peer>,
}

impl Judge<'_> {
    /// Whether this session's client is in report-only mode (`reportOnly`).
    fn reports_only(&self, session: &Session) -> bool {
        let client = session.principal().client_id.as_deref();
        self.config.report_only.covers(client)
    }
}

/// What the head decided.
#[derive(Debug)]
pub enum Head {
    /// Step 1: an anonymous path read, or a CORS preflight: no token read.
    Anonymous { path: String },
    /// Steps 2–8 passed on the head alone.
    Decided(Authorized),
    /// Authenticated, classified and allowed so far; the body decides.
    NeedsBody(Pending),
}

/// What a request whose body decides was allowed to do.
#[derive(Debug)]
pub enum Verdict {
    /// A `POST …/_search`, decided on its URL's and form's parameters together.
    Request(Authorized),
    Bundle(AuthorizedBundle),
}

/// A request allowed on its own (not a bundle), and how it is forwarded.
#[derive(Debug)]
pub struct Authorized {
    /// The normalised path, relative to the FHIR base: what is forwarded.
    pub path: String,
    pub session: Arc<Session>,
    /// The data actions the principal holds (step 8).
    pub granted: DataActions,
    pub request: FhirRequest,
    /// The allowed decision (its reason written only under [`Reasons::Always`]).
    pub decision: Decision,
    /// A `POST …/_search`: its parameters, the URL's and the form's joined, which it carries
    /// upstream in a form body (R4 http.html#search). `None` for every other request.
    pub form: Option<String>,
    pub plan: Plan,
    /// The refusal the decision would have been, had the client not been in report-only mode
    /// (`reportOnly`, issue 13): the request is forwarded and counted as a would-be denial.
    pub would_be: Option<Box<Rejection>>,
}

/// What forwarding carries out for an allowed request.
#[derive(Debug)]
pub enum Plan {
    /// No SMART: the configuration's grant decided, and the request goes as sent.
    Forward,
    /// SMART applies (reference §4.1): the scopes decided, and `confinement` is carried out
    /// while forwarding (query rewrite, stored-resource and answer checks).
    Smart {
        grant: Arc<SmartGrant>,
        confinement: Confinement,
    },
}

/// A request authenticated and classified (step 8 before the decision).
#[derive(Debug)]
pub struct Classified {
    pub path: String,
    pub session: Arc<Session>,
    /// The data actions the principal holds.
    pub granted: DataActions,
    pub request: FhirRequest,
    /// The token's SMART grant, when SMART applies (reference §4.1).
    pub grant: Option<Arc<SmartGrant>>,
}

/// A request whose body decides, with what the head established.
#[derive(Debug)]
pub struct Pending {
    pub body: BodyNeed,
    /// The head's classification: a batch/transaction, or a search on the URL's query (which
    /// was allowed: a search the URL alone refuses is refused before its form is read).
    pub classified: Classified,
}

/// Why the body is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyNeed {
    /// A batch/transaction: every entry is decided (reference §3.2).
    Bundle,
    /// A `POST …/_search`: the form's parameters are checked, and decide with the URL's.
    SearchForm,
}

/// A batch/transaction allowed (whole, or entry by entry for a batch).
#[derive(Debug)]
pub struct AuthorizedBundle {
    pub path: String,
    pub session: Arc<Session>,
    pub granted: DataActions,
    pub grant: Option<Arc<SmartGrant>>,
    pub decision: BundleDecision,
    /// Per entry, in entry order, what SMART enforcement asks of it (`Forward` for denied
    /// entries and without SMART).
    pub plans: Vec<Confinement>,
    /// The bundle as the client sent it.
    pub body: Bytes,
    /// The refusal a report-only client was spared ([`Authorized::would_be`]).
    pub would_be: Option<Box<Rejection>>,
}

/// What the phases established before a refusal, or for an allowed request: for the audit
/// line, the challenge and explain's report.
#[derive(Debug, Default)]
pub struct Trace {
    /// The normalised path (step 0).
    pub path: Option<String>,
    /// Step 1 let the request through without a token.
    pub anonymous: bool,
    /// The accepted token's principal (steps 4–7).
    pub principal: Option<Arc<Principal>>,
    /// The FHIR interaction and the data actions it requires (step 8).
    pub request: Option<FhirRequest>,
    /// The data actions the principal holds (step 8).
    pub granted: Option<DataActions>,
    /// The token's SMART scopes and compartment, when SMART applies.
    pub grant: Option<Arc<SmartGrant>>,
    /// The decision for a request on its own (step 8).
    pub decision: Option<Decision>,
    /// The decision for a batch/transaction, entry by entry (step 8).
    pub bundle: Option<BundleDecision>,
    /// The refusal report-only mode turned into a forward.
    pub would_be: Option<Box<Rejection>>,
}

/// A refusal, with what was established before it.
#[derive(Debug)]
pub struct Refused {
    pub rejection: Rejection,
    /// Boxed: a refusal is the rare path, and every phase's `Result` carries its size.
    pub trace: Box<Trace>,
}

impl Refused {
    /// A refusal after the decision, on behalf of `principal`.
    pub fn of(rejection: Rejection, principal: Option<Arc<Principal>>) -> Refused {
        let trace = Trace {
            principal,
            ..Trace::default()
        };
        Refused::new(rejection, trace)
    }

    pub fn new(rejection: impl Into<Rejection>, trace: Trace) -> Refused {
        Refused {
            rejection: rejection.into(),
            trace: Box::new(trace),
        }
    }
}

impl Authorized {
    /// Decided by the configuration's grant alone, without SMART and without a form: forwarded
    /// as it came.
    pub fn is_plain(&self) -> bool {
        matches!(self.plan, Plan::Forward) && self.form.is_none()
    }
}

impl Head {
    /// Who the token names (`None`: anonymous).
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        match self {
            Head::Anonymous { .. } => None,
            Head::Decided(allowed) => Some(allowed.session.principal()),
            Head::NeedsBody(pending) => Some(pending.classified.session.principal()),
        }
    }
}

impl Verdict {
    /// The trace of an allowed request (explain's report; serving needs none).
    pub fn into_trace(self) -> Trace {
        match self {
            Verdict::Request(allowed) => Trace {
                path: Some(allowed.path),
                principal: Some(Arc::clone(allowed.session.principal())),
                request: Some(allowed.request),
                granted: Some(allowed.granted),
                grant: match allowed.plan {
                    Plan::Smart { grant, .. } => Some(grant),
                    Plan::Forward => None,
                },
                decision: Some(allowed.decision),
                would_be: allowed.would_be,
                ..Trace::default()
            },
            Verdict::Bundle(allowed) => Trace {
                path: Some(allowed.path),
                principal: Some(Arc::clone(allowed.session.principal())),
                granted: Some(allowed.granted),
                grant: allowed.grant,
                bundle: Some(allowed.decision),
                would_be: allowed.would_be,
                ..Trace::default()
            },
        }
    }
}

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

/// Steps 2–7: the token from the `Authorization` header, who it names, and what it is bound
/// to. A refusal for want of the binding names the token's principal (for the trace).
async fn authenticate(
    judge: &Judge<'_>,
    head: &Parts,
) -> Result<Arc<Session>, (Rejection, Option<Arc<Principal>>)> {
    // Step 2: tokens outside the header (reference §2.1).
    if let Some(part) = auth::jwt_in_url(head.uri.path(), head.uri.query()) {
        return Err((Rejection::TokenInUrl(part), None));
    }
    // Step 3: bearer extraction (RFC 6750 §2.1), or a DPoP-bound token (RFC 9449 §7.1).
    let presented = auth::access_token(&head.headers, judge.config.limits.max_token_bytes);
    let (scheme, token) = match presented {
        Ok(Some(presented)) => presented,
        Ok(None) => return Err((Rejection::MissingToken, None)),
        Err(error) => return Err((Rejection::from(error), None)),
    };
    // Steps 4–7: provider, signature, time, audience and client.
    let started = Instant::now();
    let now = auth::unix_now();
    let authenticated = session::authenticate(
        judge.tokens,
        judge.keys,
        judge.config,
        token,
        now,
        judge.memo,
    )
    .await;
    // The token's binding, on every request, cached or not (RFC 9449 §4.3, RFC 8705 §3); boxed,
    // so only requests with a proof, a bound token or a requirement pay for its state.
    if let Ok(session) = &authenticated {
        let principal = session.principal();
        if sender::needs_check(judge.config, scheme, principal, head, judge.peer) {
            let evidence = Evidence {
                head,
                scheme,
                token,
                peer: judge.peer,
                now,
            };
            let bound = Box::pin(bind(judge, &evidence, session, started)).await;
            return bound.map(|()| Arc::clone(session));
        }
    }
    if let Some(metrics) = judge.metrics {
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
    authenticated.map_err(|error| (Rejection::from(error), None))
}

/// The sender-constraint checks of a verified token ([`sender::check`]), timed with
/// authentication and counted under the token's provider when they refuse. The refusal names
/// the token's principal (for the trace).
async fn bind(
    judge: &Judge<'_>,
    evidence: &Evidence<'_>,
    session: &Session,
    started: Instant,
) -> Result<(), (Rejection, Option<Arc<Principal>>)> {
    let principal = session.principal();
    let proofs = ProofState {
        replay: judge.replay,
        nonces: judge.nonces,
    };
    let checked = sender::check(judge.config, proofs, evidence, principal).await;
    if let Some(metrics) = judge.metrics {
        metrics
            .auth_duration
            .observe(started.elapsed().as_secs_f64());
        // A refused proof or binding; not the shared replay store's absence (503), which is
        // no authentication failure (fhirguard_shared_state_calls_total counts it).
        if let Err(Rejection::Sender(error)) = &checked {
            metrics
                .auth_failures
                .with_label_values(&[principal.authority.as_str(), error.reason()])
                .inc();
        }
    }
    checked.map_err(|error| (error, Some(Arc::clone(principal))))
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

impl Trace {
    fn at(mut self, path: String) -> Trace {
        self.path = Some(path);
        self
    }

    fn with(mut self, request: FhirRequest) -> Trace {
        self.request = Some(request);
        self
    }
}

/// Step 8 for a request whose body decides, once the body is read: a batch/transaction entry
/// by entry ([`decide_bundle`]), or a `POST …/_search` on the URL's parameters and the form's
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

/// Step 8 for a batch/transaction: every entry classified and authorized (reference §3.2). A
/// transaction with a denied entry is refused whole; a batch passes when the principal holds
/// any data action, and its denied entries are answered one by one ([`BundleDecision`]).
/// Under SMART an entry must also need no further confinement (no query rewrite, response or
/// compartment check), since those are carried out only for requests sent on their own.
fn decide_bundle(
    judge: &Judge<'_>,
    classified: Classified,
    body: Bytes,
) -> Result<AuthorizedBundle, Refused> {
    let Classified {
        path,
        session,
        granted,
        grant,
        ..
    } = classified;
    let trace = Trace {
        path: Some(path.clone()),
        principal: Some(Arc::clone(session.principal())),
        granted: Some(granted),
        grant: grant.clone(),
        ..Trace::default()
    };
    let bundle = match bundle::classify_bundle(&body) {
        Ok(bundle) => bundle,
        Err(error) => return Err(Refused::new(error, trace)),
    };
    let decision = match &grant {
        Some(grant) => authz::authorize_bundle_with(&bundle, granted, |entry| {
            smart_entry(entry, granted, grant)
        }),
        None => authz::authorize_bundle(&bundle, granted),
    };
    let plans = match &grant {
        Some(grant) => bundle
            .entries
            .iter()
            .zip(&decision.entries)
            .map(|(entry, decided)| match decided.allowed {
                true => smart::confine(entry, entry.query.as_deref(), granted, grant)
                    .unwrap_or(Confinement::Forward),
                false => Confinement::Forward,
            })
            .collect(),
        None => Vec::new(),
    };
    let batch_answerable = decision.kind == bundle::BundleKind::Batch
        && !granted.intersection(DataActions::ALL).is_empty();
    // Report-only mode forwards a bundle's denied entries too — but not under a SMART grant,
    // whose entries may be denied because they need compartment checks a bundle cannot have.
    let mut decision = decision;
    let mut would_be = None;
    let denied = !decision.allowed || decision.denied_entries().next().is_some();
    if denied && grant.is_none() && judge.reports_only(&session) {
        would_be = Some(Box::new(Rejection::BundleDenied(Box::new(
            decision.clone(),
        ))));
        decision.allowed = true;
        for entry in &mut decision.entries {
            entry.allowed = true;
        }
    }
    if !decision.allowed && !batch_answerable {
        let rejection = Rejection::BundleDenied(Box::new(decision.clone()));
        let trace = Trace {
            bundle: Some(decision),
            ..trace
        };
        return Err(Refused::new(rejection, trace));
    }
    Ok(AuthorizedBundle {
        path,
        session,
        granted,
        grant,
        decision,
        plans,
        body,
        would_be,
    })
}

/// One bundle entry under SMART: the type gate, then a confinement fhirguard can carry out
/// inside a bundle — a forward, a rewritten entry URL, a check of the entry's answer (read), a
/// filter of it (search) or its resource left out (a patch the grant cannot read). Writes
/// needing a compartment check are denied inside bundles.
fn smart_entry(entry: &FhirRequest, granted: DataActions, grant: &SmartGrant) -> Decision {
    let query = entry.query.as_deref();
    let mut decision = smart::authorize(entry, query, granted, grant, Reasons::Always);
    if decision.allowed {
        match smart::confine(entry, query, granted, grant) {
            Ok(
                Confinement::Forward
                | Confinement::Rewrite { .. }
                | Confinement::Read
                | Confinement::Search { .. }
                | Confinement::Minimal,
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
                decision.reason = denial.to_string();
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
