//! Test support shared by every suite of this binary: the one harness ([`stack`]: a builder that
//! starts the fakes and fhirguard between them), one fake of each kind — an OpenID provider
//! ([`idp`]), a FHIR server that records or stores ([`upstream`], [`fhir_store`]) — token
//! minting ([`token`]), a server certificate for the TLS listener ([`tls`]), the HTTP client
//! ([`client`]), the SMART application of the compartment suites ([`smart_app`]), the config builder ([`config`]), running the binary and its `explain`
//! ([`binary`]), reading `/metrics` ([`exposition`]), and waiting on a real signal with a
//! deadline ([`poll`]).
//!
//! The identity provider and token minting live in `tests/support/` because
//! `benches/token_verification.rs` includes those two files by path.
#![allow(dead_code, unreachable_pub)]

pub mod binary;
pub mod client;
pub mod config;
pub mod exposition;
pub mod fhir_store;
pub mod idp;
pub mod oidc;
pub mod poll;
pub mod redis;
pub mod smart_app;
pub mod stack;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod verification;
