//! fhirguard: an authorization sidecar for FHIR servers.
//!
//! Every request walks the same named steps ([`proxy::Proxy::handle`]):
//!
//! ```text
//! client ─► server (accept, TLS, limits) ─► proxy::handle
//!             anonymous paths / token-in-URL check / bearer extraction
//!             authenticate (auth/)  → Principal      token → provider (by discovered issuer) → key → claims
//!             classify     (fhir/)  → FhirRequest    method + normalised path + query (+ bundle) → interaction, data actions
//!             authorize    (authz/) → Decision       required actions vs allowedDataActions / role mapping
//!             forward      (proxy/forward)           streaming, header hygiene, 502 / 504
//!           error.rs: the one place a failure becomes a response (401/403/400/413/502/503/504 OperationOutcome)
//! admin (/metrics, /healthz, /readyz) · config (raw → validated) · reload (watch, SIGHUP, swap)
//! auth (discovery, key-set cache) · metrics (owned Prometheus registry)
//! audit (the audit line or FHIR AuditEvent per decision; the bounded queue to an audit server)
//! ```
//!
//! Classification and authorization are pure functions over plain data; I/O stays at the edges
//! (server, forward, key fetches).

pub mod actions;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod fhir;
pub mod hygiene;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod server;
