//! fhirguard's integration tests, as one test binary (`cargo test --test it`): one module per
//! suite, all sharing [`support`] — the one harness ([`support::stack`]), the fakes and token
//! minting. Select a suite by its module path, e.g. `cargo test --test it proxy::` or
//! `cargo test --test it smart::`.
//!
//! The npm projects of the interop suites (`tests/interop`, `tests/medplum`, `tests/browser`) and
//! `tests/ops/install.sh` stay outside this directory: `.ci/run` and `deploy/check.sh` name them
//! by path.

mod audit_event;
mod audit_trail;
mod auth;
mod browser;
mod cli;
mod config_examples;
mod cors;
mod demo;
mod deploy;
mod docs;
mod dpop;
mod explain_parity;
mod hardening_compartment;
mod hardening_hygiene;
mod hardening_round3;
mod hardening_round3b;
mod interop_oidc;
mod introspection;
mod key_sets;
mod layers;
mod medplum;
mod mtls;
mod ops;
mod proxy;
mod rate_limits;
mod reload;
mod report_only;
mod shared_state;
mod smart;
mod smart_clients;
mod support;
mod tls;
mod token_cache;
mod token_shapes;
mod upstream_lifecycle;
mod upstream_pool;
