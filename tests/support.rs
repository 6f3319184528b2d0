//! Test support shared by the integration suites (`mod support;`): a fake OpenID provider,
//! token minting, (lead) a recording fake FHIR server, and the operations suites' stack. Each suite
//! uses a part of it.
//!
//! Cargo also builds this file as a test target of its own, so the child modules are named by
//! `#[path]` (relative to this file's directory in both roles).
#![allow(dead_code, unreachable_pub)]

#[path = "support/idp.rs"]
pub mod idp;
#[path = "support/stack.rs"]
pub mod stack;
#[path = "support/token.rs"]
pub mod token;
#[path = "support/upstream.rs"]
pub mod upstream;
