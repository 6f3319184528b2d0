//! fhirguard: an authorization sidecar for FHIR servers.
//!
//! Every request walks the same named phases ([`proxy::Proxy::handle`]), each taking typed
//! input and returning typed output:
//!
//! ```text
//! client ─► server (accept, TLS, limits) ─► proxy::handle
//!   proxy::decision  decide_head  step 0 hygiene, path · step 1 anonymous · steps 2–7 token
//!                                 and binding (proxy::authentication: auth/, via
//!                                 proxy::session's caches) · step 8 classify (fhir/) and
//!                                 authorize (authz/)
//!                    → Head::Anonymous | Head::Decided(Authorized) | Head::NeedsBody(Pending)
//!                    decide_body  a batch/transaction entry by entry (proxy::bundle_decision),
//!                                 a POST _search's form (proxy::search)
//!                    → Verdict::Request | Verdict::Bundle   (values: proxy::judgement)
//!   proxy::plan      carries the decision out: SMART's query rewrite, body, stored-resource and
//!                    answer checks (proxy::change, proxy::smart), step 9 forwarding
//!                    (proxy::forward over upstream/)
//!   proxy::outcome   one Outcome from decision to audit line: the answer or the refusal, who
//!                    asked, what report-only spared; the metrics' label, the audit line's verdict
//!   error.rs         a refusal (a typed Rejection) becomes the response, in one exhaustive
//!                    match: status, headers, OperationOutcome, metric outcome
//! admin (/metrics, /healthz, /readyz) · reload (watch, SIGHUP, swap a proxy::Generation)
//! audit: one line per decision (json, or a FHIR AuditEvent), optionally queued to an audit server
//! ```
//!
//! Layers, from the bottom; a module uses only modules below it, and no two import each other.
//! The rule holds at every level: inside a module, no two of its files (or folders of files)
//! import each other either, however the path is written (`super::`, `crate::a::b`, a parent's
//! re-export). `tests/it/layers.rs` checks both.
//!
//! ```text
//! actions   data actions and requirements (reference §3.1)
//! fhir      pure classification: paths, queries, bundles, JSON, patches, formats
//! hygiene   request hygiene: method tunnels, tokens in URLs, preflight bodies, ambiguous authority
//! metrics   the owned Prometheus registry
//! config    raw → validated configuration, the configured providers
//! cors      browser apps: preflight verdicts and the CORS headers of every answer
//! body      response bodies, bounded request-body reads, the buffered-bytes budget
//! upstream  the pooled client towards the FHIR server
//! shared    the store the replicas share (Redis/Valkey): proof ids, introspection answers, GCRAs
//! limits    per-client rate limits (rateLimits): a GCRA per replica, or the store's per cluster
//! authz     pure decisions: data actions, SMART scopes, compartments, enforcement refusals
//! auth      who a token names: bearer, discovery, keys, verification, DPoP, cnf (no session state)
//! audit     each decision as an audit line or a FHIR AuditEvent; the queue to an audit server
//! error     Rejection → response
//! proxy     the request's phases, session caches, sender constraints, forwarding, generations
//! server · reload · admin   the listeners, hot reload, the admin endpoints
//! app       wiring: shared state, listeners, the reload task, graceful shutdown
//! cli       fhirguard's commands: serve, check, explain, demo (main.rs only calls it)
//! ```
//!
//! Classification and authorization are pure functions over plain data; I/O stays at the edges
//! (server, upstream, key fetches).

// A panic in the proxy's own code would drop a request: no `unwrap` outside tests (clippy.toml
// lets tests unwrap, since a panic is how a test fails).
#![deny(clippy::unwrap_used)]

pub mod actions;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod body;
pub mod cli;
pub mod config;
pub mod cors;
pub mod error;
pub mod fhir;
pub mod hygiene;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod shared;
pub mod upstream;
