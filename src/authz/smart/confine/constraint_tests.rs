//! SMART v2 constraints on every interaction (issue 20, item 1) as a table of the issue's case
//! and the variants an attacker tries next, and a property across interactions and scope sets:
//! whatever the request, a resource of a type the grant reads only under constraints reaches
//! the client only as a match of a search of that type carrying one of its constraints.

use http::{HeaderMap, Method};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::authz::smart::authorize;
use crate::authz::Reasons;
use crate::fhir::classify;

const USER: &str = "Patient/123";

fn grant(scopes: &str) -> SmartGrant {
    let scopes: Vec<String> = scopes.split(' ').map(str::to_owned).collect();
    SmartGrant::new(&scopes, Some(USER), None).expect("valid grant")
}

fn request(method: &str, target: &str) -> (FhirRequest, Option<String>) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let request = classify(&method, path, query.as_deref(), &HeaderMap::new()).unwrap();
    (request, query)
}

/// The gate, then the plan: `None` when the type gate already refuses.
fn decide(scopes: &str, method: &str, target: &str) -> Option<Result<Confinement, Denial>> {
    let grant = grant(scopes);
    let (request, query) = request(method, target);
    let decision = authorize(
        &request,
        query.as_deref(),
        DataActions::ALL,
        &grant,
        Reasons::Always,
    );
    decision
        .allowed
        .then(|| confine(&request, query.as_deref(), DataActions::ALL, &grant))
}

/// Every interaction that would return an Observation outside the constraint, under `system/`
/// and `patient/` contexts: refused (403), where the type gate has not refused it already.
#[test]
fn constrained_types_are_refused_wherever_the_constraint_is_not_applied() {
    for context in ["system", "patient"] {
        let scopes = format!(
            "{context}/Observation.cruds?category=laboratory {context}/Patient.rs \
             {context}/Condition.rs {context}/Location.rs"
        );
        for (method, target) in [
            // The issue's case, and its neighbours.
            ("GET", "/Observation/o1/_history"),
            ("GET", "/Observation/o1"),
            ("GET", "/Observation/o1/_history/1"),
            ("GET", "/Observation/_history"),
            ("GET", "/_history"),
            // Includes, revincludes, chains and _has toward the constrained type.
            ("GET", "/Patient?_revinclude=Observation:subject"),
            ("GET", "/Patient?_revinclude:iterate=Observation:subject"),
            ("GET", "/Patient?_REVINCLUDE=Observation:subject"),
            (
                "GET",
                "/Condition?_include=Condition:evidence-detail:Observation",
            ),
            ("GET", "/Patient?_has:Observation:subject:code=x"),
            ("GET", "/Patient?_has:Observation:patient:_id=o1"),
            ("GET", "/Condition?evidence-detail:Observation.code=x"),
            // Answers across types.
            ("GET", "/Patient/123/*"),
            ("GET", "/?_type=Observation"),
            ("GET", "/?_type=Condition,Observation"),
            // Conditional interactions search without the constraint; writes cannot be
            // checked against it.
            ("PUT", "/Observation?code=x"),
            ("DELETE", "/Observation?code=x"),
            ("PATCH", "/Observation?code=x"),
            ("POST", "/Observation"),
            ("PUT", "/Observation/o1"),
            ("PATCH", "/Observation/o1"),
            ("DELETE", "/Observation/o1"),
        ] {
            match decide(&scopes, method, target) {
                None | Some(Err(Denial::Forbidden(_) | Denial::NotFound(_))) => {}
                Some(other) => panic!("{context}: {method} {target}: {other:?}"),
            }
        }
        // A named query may ignore the constraint.
        assert!(matches!(
            decide(&scopes, "GET", "/Observation?_query=everything-lab"),
            Some(Err(Denial::Forbidden(_)))
        ));
        // Includes of the constrained type itself stay refused as before (400).
        assert!(matches!(
            decide(
                &scopes,
                "GET",
                "/Observation?_include=Observation:has-member:Observation"
            ),
            Some(Err(Denial::Invalid(_)))
        ));
    }
}

#[test]
fn a_search_of_the_constrained_type_carries_the_constraint_and_is_proven() {
    let scopes = "system/Observation.rs?category=laboratory system/Patient.rs";
    let proven = ResourceType::parse("Observation");
    assert_eq!(
        decide(scopes, "GET", "/Observation?code=x"),
        Some(Ok(Confinement::Search {
            query: Some("code=x&category=laboratory".to_owned()),
            proven,
        }))
    );
    // A search of another type is filtered too, while a type is constrained.
    assert_eq!(
        decide(scopes, "GET", "/Patient?name=x"),
        Some(Ok(Confinement::Search {
            query: None,
            proven: None
        }))
    );
    // A type-less search is narrowed to the types read without constraints.
    assert_eq!(
        decide(scopes, "GET", "/?_lastUpdated=gt2020"),
        Some(Ok(Confinement::Search {
            query: Some("_lastUpdated=gt2020&_type=Patient".to_owned()),
            proven: None
        }))
    );
    assert!(matches!(
        decide(
            "system/Observation.rs?category=laboratory",
            "GET",
            "/?_lastUpdated=gt2020"
        ),
        Some(Err(Denial::Forbidden(_)))
    ));
    // A constrained wildcard: nothing may be searched across types or read by id.
    let wildcard = "system/*.rs?_security=R";
    assert!(matches!(
        decide(wildcard, "GET", "/"),
        Some(Err(Denial::Forbidden(_)))
    ));
    assert!(matches!(
        decide(wildcard, "GET", "/Condition/c1"),
        Some(Err(Denial::Forbidden(_)))
    ));
    assert!(matches!(
        decide(wildcard, "GET", "/Condition?code=x"),
        Some(Ok(Confinement::Search { .. }))
    ));
}

#[test]
fn unconstrained_scopes_lift_the_rule() {
    for scopes in [
        "system/Observation.rs?category=laboratory system/Observation.rs system/Patient.rs",
        "system/Observation.rs?category=laboratory system/*.rs",
    ] {
        for (method, target) in [
            ("GET", "/Observation/o1"),
            ("GET", "/Observation/o1/_history"),
            ("GET", "/Patient?_revinclude=Observation:subject"),
        ] {
            assert!(
                matches!(decide(scopes, method, target), Some(Ok(_))),
                "{scopes}: {method} {target}"
            );
        }
    }
    // Unconstrained writes do not lift a read constraint, nor the reverse.
    let scopes = "system/Observation.rs?category=laboratory system/Observation.cud";
    assert!(matches!(
        decide(scopes, "PUT", "/Observation/o1"),
        Some(Ok(_))
    ));
    assert!(matches!(
        decide(scopes, "GET", "/Observation/o1/_history"),
        Some(Err(Denial::Forbidden(_)))
    ));
}

/// A patch answers with the whole patched resource: under a grant that reads the type only
/// under constraints (or not at all) the answer is cut, alone and in a batch.
#[test]
fn patches_of_types_read_only_under_constraints_answer_without_the_resource() {
    for scopes in [
        "system/Observation.rs?category=laboratory system/Observation.u",
        "system/Observation.u",
        "system/Observation.cud system/Patient.rs",
    ] {
        assert_eq!(
            decide(scopes, "PATCH", "/Observation/o1"),
            Some(Ok(Confinement::Minimal)),
            "{scopes}"
        );
        let (request, _) = request("PATCH", "/Observation/o1");
        assert!(hides_answer(&request, DataActions::ALL, &grant(scopes)));
    }
    for scopes in ["system/Observation.rus", "system/*.cruds"] {
        assert_eq!(
            decide(scopes, "PATCH", "/Observation/o1"),
            Some(Ok(Confinement::Forward)),
            "{scopes}"
        );
    }
    // Creates and updates answer with what the client sent: shown as before.
    assert_eq!(
        decide("system/Observation.cu", "PUT", "/Observation/o1"),
        Some(Ok(Confinement::Forward))
    );
}

#[test]
fn filtered_answers_keep_only_proven_entries_of_a_constrained_type() {
    let grant = grant("system/Observation.rs?category=laboratory system/Patient.rs");
    let observation = json!({"resourceType": "Observation", "id": "o1"});
    let patient = json!({"resourceType": "Patient", "id": "p1"});
    let outcome = json!({"resourceType": "OperationOutcome"});
    let all = DataActions::ALL;
    assert!(visible(&grant, all, &observation, Some("Observation")));
    assert!(!visible(&grant, all, &observation, None));
    assert!(!visible(&grant, all, &observation, Some("Patient")));
    assert!(visible(&grant, all, &patient, None));
    assert!(visible(&grant, all, &outcome, None));
}

/// A scope of the generated sets: type, v2 letters, constrained or not.
fn scope() -> impl Strategy<Value = (usize, usize, bool)> {
    (0..TYPES.len() + 1, 0..ACCESS.len(), any::<bool>())
}

const TYPES: [&str; 3] = ["Observation", "Condition", "Patient"];
const ACCESS: [&str; 4] = ["rs", "r", "s", "cruds"];
const CONSTRAINT: &str = "category=x";

fn scope_text(context: &str, (t, a, constrained): (usize, usize, bool)) -> String {
    let resource = TYPES.get(t).copied().unwrap_or("*");
    let mut text = format!("{context}/{resource}.{}", ACCESS[a]);
    if constrained {
        text.push('?');
        text.push_str(CONSTRAINT);
    }
    text
}

/// Written apart from the code under test: the grant reads `t` only through constrained
/// scopes (every letter set but `cu`/`d` alone reads; `*` covers every type).
fn constrained_only(scopes: &[(usize, usize, bool)], t: &str) -> bool {
    let covering: Vec<bool> = scopes
        .iter()
        .filter(|(ty, _, _)| TYPES.get(*ty).is_none_or(|name| *name == t))
        .map(|(_, _, constrained)| *constrained)
        .collect();
    !covering.is_empty() && covering.iter().all(|c| *c)
}

/// The types an answer to `target` may hold, read from the request as a client would write it
/// and the query as forwarded (a system search holds the types of its `_type`).
fn answer_types(target: &str, forwarded: &str) -> Vec<String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let listed = forwarded
        .split('&')
        .find_map(|pair| pair.strip_prefix("_type="))
        .map(|types| types.split(',').map(str::to_owned).collect());
    let mut types: Vec<String> = match segments.as_slice() {
        [] if listed.is_some() => listed.unwrap_or_default(),
        [] | ["_history"] | [_, _, "*"] | [_, _, "$everything"] => {
            TYPES.iter().map(|t| (*t).to_owned()).collect()
        }
        [_, _, t] if !t.starts_with('_') && !t.starts_with('$') => vec![(*t).to_owned()],
        [t, ..] => vec![(*t).to_owned()],
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.starts_with("_revinclude") {
            types.push(value.split(':').next().unwrap_or_default().to_owned());
        }
        if name.starts_with("_include") {
            types.extend(value.split(':').nth(2).map(str::to_owned));
        }
        if let Some(has) = name.strip_prefix("_has:") {
            types.push(has.split(':').next().unwrap_or_default().to_owned());
        }
        if let Some((link, _)) = name.split_once('.') {
            types.extend(link.split_once(':').map(|(_, t)| t.to_owned()));
        }
    }
    types
}

const TARGETS: [(&str, &str); 22] = [
    ("GET", "/Observation/o1"),
    ("GET", "/Observation/o1/_history/2"),
    ("GET", "/Observation/o1/_history"),
    ("GET", "/Observation/_history"),
    ("GET", "/_history"),
    ("GET", "/Observation?code=x"),
    ("GET", "/Observation?category=x"),
    ("GET", "/Patient?_revinclude=Observation:subject"),
    (
        "GET",
        "/Condition?_include=Condition:evidence-detail:Observation",
    ),
    ("GET", "/Patient?_has:Observation:subject:code=x"),
    ("GET", "/Observation?subject:Patient.name=x"),
    ("GET", "/Patient/123/*"),
    ("GET", "/Patient/123/Observation"),
    ("GET", "/?_type=Observation,Condition"),
    ("GET", "/"),
    ("POST", "/Observation"),
    ("PUT", "/Observation/o1"),
    ("PATCH", "/Observation/o1"),
    ("DELETE", "/Observation/o1"),
    ("PUT", "/Observation?code=x"),
    ("GET", "/Condition/c1"),
    ("GET", "/Patient/123"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Across interactions and scope sets: when a request goes on, every type its answer may
    /// hold that the grant reads only under constraints is the searched type, its plan is a
    /// filtered search that counts it proven, and the forwarded query carries the constraint.
    #[test]
    fn constrained_resources_are_returned_only_as_proven_search_matches(
        scopes in prop::collection::vec(scope(), 1..4),
        target in 0..TARGETS.len(),
        patient_context in any::<bool>(),
    ) {
        let context = if patient_context { "patient" } else { "system" };
        let text: Vec<String> = scopes.iter().map(|s| scope_text(context, *s)).collect();
        let (method, target) = TARGETS[target];
        let Some(Ok(plan)) = decide(&text.join(" "), method, target) else {
            return Ok(());
        };
        let (request, query) = request(method, target);
        let forwarded = match &plan {
            Confinement::Rewrite { query } | Confinement::Search { query: Some(query), .. } => {
                query.replace("%2C", ",")
            }
            _ => query.unwrap_or_default(),
        };
        for t in answer_types(target, &forwarded) {
            if !constrained_only(&scopes, &t) {
                continue;
            }
            let searched = request.interaction.is_search()
                && request.resource_type.as_deref() == Some(t.as_str());
            prop_assert!(searched, "{text:?} {method} {target}: {t} returned unproven ({plan:?})");
            let Confinement::Search { proven, .. } = &plan else {
                return Err(TestCaseError::fail(format!("{text:?} {target}: {plan:?} is not filtered")));
            };
            prop_assert_eq!(proven.map(ResourceType::name), Some(t.as_str()));
            prop_assert!(
                forwarded.split('&').any(|pair| pair == CONSTRAINT),
                "{text:?} {target}: {forwarded} lacks the constraint"
            );
        }
    }
}
