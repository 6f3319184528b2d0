//! The SMART application the compartment suites (`smart`, `hardening_compartment`,
//! `hardening_round3`) drive: fhirguard between a SMART provider whose one application `app`
//! (audience [`AUDIENCE`]) may do everything its scopes grant, and the in-memory FHIR store —
//! which records every request, so a test asserts what the client got and what reached the
//! server. The requests go through [`Guard::handle`], with no socket to fhirguard.

use std::ops::Deref;

use serde_json::Value;

use super::fhir_store::Search;
use super::stack::{Guard, Stack, StackBuilder};
use super::token::{self, now, TestKey};
use super::upstream::FakeFhir;

/// The application's audience.
pub const AUDIENCE: &str = "https://fhir.example.org/smart";
/// `publicBaseUrl`: absolute `fhirUser` references start with it.
pub const BASE: &str = "https://fhir.example.org";

/// fhirguard in front of the store, for the application `app`.
#[derive(Debug)]
pub struct SmartApp(Guard);

impl SmartApp {
    /// The provider signs with `key`; the store holds `seed` and answers searches as `search`.
    pub async fn start(key: TestKey, seed: Vec<Value>, search: Search) -> SmartApp {
        SmartApp::serve(Stack::builder().key(key).store(seed, search)).await
    }

    /// The application's config on the stack `builder` starts (a real FHIR server upstream).
    pub async fn serve(builder: StackBuilder) -> SmartApp {
        let guard = builder
            .serve(|stack| {
                stack
                    .config()
                    .with(&format!("publicBaseUrl: \"{BASE}\""))
                    .smart(&stack.idp.base_url(), &[("app", AUDIENCE, r#"["*"]"#)])
                    .to_string()
            })
            .await;
        SmartApp(guard)
    }

    /// A token of `app` with `scopes`, for the user `fhir_user` (`Patient/1`), absolute.
    pub fn token(&self, scopes: &str, fhir_user: &str) -> String {
        token::base_claims(&self.stack.idp.issuer(), AUDIENCE, now())
            .claim("azp", "app")
            .claim("scp", scopes)
            .claim("fhirUser", format!("{BASE}/{fhir_user}"))
            .sign(&self.stack.key)
    }

    /// The store.
    pub fn fhir(&self) -> &FakeFhir {
        &self.stack.upstream
    }
}

impl Deref for SmartApp {
    type Target = Guard;

    fn deref(&self) -> &Guard {
        &self.0
    }
}
