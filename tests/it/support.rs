//! Test support shared by the integration suites (`mod support;`): a fake OpenID provider,
//! token minting, (lead) a recording fake FHIR server, and the operations suites' stack. Each suite
//! uses a part of it.
#![allow(dead_code, unreachable_pub)]

pub mod idp;
pub mod stack;
pub mod token;
pub mod upstream;
