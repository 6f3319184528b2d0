//! What deciding hands on between the phases of SPEC §4 (steps 0–8), as typed values: what
//! judges a request ([`Judge`]: the configuration in force and the caches it is checked
//! against), what the head decided ([`Head`]), what a body decided ([`Verdict`]), a request or a
//! batch/transaction allowed and how it is carried out ([`Authorized`], [`Plan`],
//! [`AuthorizedBundle`]), and a refusal with what was established before it ([`Refused`],
//! [`Trace`]). Serving and `fhirguard explain` read the same values.

use std::sync::Arc;

use bytes::Bytes;

use crate::actions::DataActions;
use crate::auth::dpop::nonce::Nonces;
use crate::auth::{KeyStore, Principal};
use crate::authz::smart::{Confinement, SmartGrant};
use crate::authz::{BundleDecision, Decision, Reasons};
use crate::config::Config;
use crate::error::Rejection;
use crate::fhir::FhirRequest;
use crate::metrics::Metrics;
use crate::proxy::forward::Peer;
use crate::proxy::replay::ReplayCache;
use crate::proxy::session::{ConnectionMemo, Session, TokenCache};

/// What judges a request: the configuration in force and the caches it is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    /// The identity providers' key sets and introspection client (steps 4–5, 7).
    pub keys: &'a KeyStore,
    /// Tokens already verified or introspected, so a repeated token skips steps 4–7.
    pub tokens: &'a TokenCache,
    /// The configuration generation in force for this request (SPEC §5: one from start to end).
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
    pub(super) fn reports_only(&self, session: &Session) -> bool {
        let client = session.principal().client_id.as_deref();
        self.config.report_only.covers(client)
    }
}

/// What the head decided.
#[derive(Debug)]
pub enum Head {
    /// Step 1: an anonymous path read, or a CORS preflight: no token read.
    Anonymous {
        /// The normalised path, relative to the FHIR base (step 0).
        path: String,
    },
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
    /// A batch/transaction, decided entry by entry (reference §3.2).
    Bundle(AuthorizedBundle),
}

/// A request allowed on its own (not a bundle), and how it is forwarded.
#[derive(Debug)]
pub struct Authorized {
    /// The normalised path, relative to the FHIR base: what is forwarded.
    pub path: String,
    /// The verified token the request came with (steps 3–7).
    pub session: Arc<Session>,
    /// The data actions the principal holds (step 8).
    pub granted: DataActions,
    /// The FHIR interaction and the data actions it requires (step 8).
    pub request: FhirRequest,
    /// The allowed decision (its reason written only under [`Reasons::Always`]).
    pub decision: Decision,
    /// A `POST …/_search`: its parameters, the URL's and the form's joined, which it carries
    /// upstream in a form body (R4 http.html#search). `None` for every other request.
    pub form: Option<String>,
    /// What forwarding carries out: the request as sent, or SMART's confinement.
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
        /// The token's SMART scopes and compartment that decided.
        grant: Arc<SmartGrant>,
        /// What forwarding carries out under SMART (reference §4.7): a query rewrite, compartment
        /// checks of the body, the stored resource or the answer.
        confinement: Confinement,
    },
}

/// A request authenticated and classified (step 8 before the decision).
#[derive(Debug)]
pub struct Classified {
    /// The normalised path, relative to the FHIR base (step 0).
    pub path: String,
    /// The verified token the request came with (steps 3–7).
    pub session: Arc<Session>,
    /// The data actions the principal holds.
    pub granted: DataActions,
    /// The FHIR interaction and the data actions it requires, as far as the head tells.
    pub request: FhirRequest,
    /// The token's SMART grant, when SMART applies (reference §4.1).
    pub grant: Option<Arc<SmartGrant>>,
}

/// A request whose body decides, with what the head established.
#[derive(Debug)]
pub struct Pending {
    /// What the body is read for: a bundle's entries, or a search form.
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
    /// The normalised path, relative to the FHIR base: where the bundle is posted.
    pub path: String,
    /// The verified token the bundle came with (steps 3–7).
    pub session: Arc<Session>,
    /// The data actions the principal holds (step 8).
    pub granted: DataActions,
    /// The token's SMART grant, when SMART applies (reference §4.1).
    pub grant: Option<Arc<SmartGrant>>,
    /// The decision for the bundle as a whole and for each entry (step 8).
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
    /// The refusal, which `error.rs` turns into its status, `OperationOutcome` and headers.
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

    /// A refusal in any phase, with what the phases before it established.
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
    /// The token's session (`None`: anonymous).
    pub fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Head::Anonymous { .. } => None,
            Head::Decided(allowed) => Some(&allowed.session),
            Head::NeedsBody(pending) => Some(&pending.classified.session),
        }
    }

    /// Who the token names (`None`: anonymous).
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        self.session().map(|session| session.principal())
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

impl Trace {
    /// The trace, at the normalised `path`.
    pub(super) fn at(mut self, path: String) -> Trace {
        self.path = Some(path);
        self
    }

    /// The trace, with the classified `request`.
    pub(super) fn with(mut self, request: FhirRequest) -> Trace {
        self.request = Some(request);
        self
    }
}
