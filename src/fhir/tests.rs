//! Table tests for [`classify`]: every row of reference §3.2 and every error.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;

use super::*;
use crate::actions::{DataAction, DataActions, Requirement};

/// `"Read&Write|Update"` → the requirement; `"any"` → any single action; `"*"` → all at once.
pub(crate) fn req(spec: &str) -> Requirement {
    match spec {
        "any" => Requirement::any_of(&DataAction::ALL),
        "*" => Requirement::alternatives(&[DataActions::ALL]),
        _ => Requirement::alternatives(
            &spec
                .split('|')
                .map(|alt| {
                    alt.split('&')
                        .map(|name| DataAction::parse(name).unwrap_or_else(|| panic!("{name}")))
                        .collect::<DataActions>()
                })
                .collect::<Vec<_>>(),
        ),
    }
}

fn run(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<FhirRequest, ClassifyError> {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    classify(&method, path, query, &map)
}

/// method, target, headers → interaction, resource type, id, requirement.
type Row<'a> = (
    &'a str,
    &'a str,
    Headers<'a>,
    Interaction,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
);
type Headers<'a> = &'a [(&'a str, &'a str)];
/// method, target, headers → error, issue code.
type ErrorRow<'a> = (&'a str, &'a str, Headers<'a>, ClassifyError);

#[test]
fn interactions_and_requirements() {
    use Interaction::*;
    const INE: &[(&str, &str)] = &[("If-None-Exist", "identifier=x")];
    const IF_MATCH: &[(&str, &str)] = &[("If-Match", "W/\"1\"")];
    #[rustfmt::skip]
    let rows: &[Row<'_>] = &[
        ("GET", "/metadata", &[], Capabilities, None, None, "any"),
        ("HEAD", "/metadata", &[], Capabilities, None, None, "any"),
        ("GET", "/Patient/1", &[], Read, Some("Patient"), Some("1"), "Read|ReadById"),
        ("HEAD", "/Patient/1", &[], Read, Some("Patient"), Some("1"), "Read|ReadById"),
        ("GET", "/Patient/1/_history/2", &[], Vread, Some("Patient"), Some("1"), "Read|ReadById"),
        ("GET", "/Patient", &[], SearchType, Some("Patient"), None, "Read|Search"),
        ("GET", "/Patient?name=x&_count=5", &[], SearchType, Some("Patient"), None, "Read|Search"),
        ("POST", "/Patient/_search", &[], SearchType, Some("Patient"), None, "Read|Search"),
        ("GET", "/", &[], SearchSystem, None, None, "Read|Search"),
        ("GET", "/?_type=Patient,Observation", &[], SearchSystem, None, None, "Read|Search"),
        ("POST", "/_search", &[], SearchSystem, None, None, "Read|Search"),
        ("GET", "/Patient/1/Observation", &[], SearchCompartment, Some("Observation"), None, "Read|Search"),
        ("GET", "/Patient/1/*", &[], SearchCompartment, None, None, "Read|Search"),
        ("POST", "/Encounter/e1/Observation/_search", &[], SearchCompartment, Some("Observation"), None, "Read|Search"),
        ("GET", "/Patient/1/_history", &[], HistoryInstance, Some("Patient"), Some("1"), "Read|Search"),
        ("GET", "/Patient/_history", &[], HistoryType, Some("Patient"), None, "Read|Search"),
        ("GET", "/_history", &[], HistorySystem, None, None, "Read|Search"),
        ("POST", "/Patient", &[], Create, Some("Patient"), None, "Write|Create"),
        ("POST", "/Patient", INE, ConditionalCreate, Some("Patient"), None, "Read&Write|Search&Create"),
        ("PUT", "/Patient/1", &[], Update, Some("Patient"), Some("1"), "Write|Update"),
        ("PUT", "/Patient/1", IF_MATCH, Update, Some("Patient"), Some("1"), "Write|Update"),
        ("PUT", "/Patient?identifier=x", &[], ConditionalUpdate, Some("Patient"), None, "Read&Write|Search&Update"),
        ("PATCH", "/Patient/1", &[], Patch, Some("Patient"), Some("1"), "Read&Write|Update"),
        ("PATCH", "/Patient?identifier=x", &[], ConditionalPatch, Some("Patient"), None, "Read&Write|Search&Update"),
        ("DELETE", "/Patient/1", &[], Delete, Some("Patient"), Some("1"), "Delete"),
        ("DELETE", "/Patient/1?hardDelete=true", &[], Delete, Some("Patient"), Some("1"), "Delete&HardDelete"),
        ("DELETE", "/Patient/1?hardDelete=false", &[], Delete, Some("Patient"), Some("1"), "Delete"),
        ("DELETE", "/Patient?identifier=x", &[], ConditionalDelete, Some("Patient"), None, "Delete&Read|Search&Delete"),
        ("DELETE", "/Patient?identifier=x&hardDelete=true", &[], ConditionalDelete, Some("Patient"), None,
            "Delete&Read&HardDelete|Search&Delete&HardDelete"),
        ("POST", "/", &[], Bundle, None, None, "any"),
        // Profile resources (`ProfileResourcesBehaviour`) and SearchParameter (`SearchParameterValidator`).
        ("POST", "/StructureDefinition", &[], Create, Some("StructureDefinition"), None,
            "Write&EditProfileDefinitions|Create&EditProfileDefinitions"),
        ("PUT", "/ValueSet/v1", &[], Update, Some("ValueSet"), Some("v1"),
            "Write&EditProfileDefinitions|Update&EditProfileDefinitions"),
        ("PATCH", "/ValueSet/v1", &[], Patch, Some("ValueSet"), Some("v1"),
            "Read&Write&EditProfileDefinitions|Update&EditProfileDefinitions"),
        ("DELETE", "/CodeSystem/c1", &[], Delete, Some("CodeSystem"), Some("c1"), "Delete&EditProfileDefinitions"),
        ("DELETE", "/CodeSystem?url=x", &[], ConditionalDelete, Some("CodeSystem"), None,
            "Delete&Read&EditProfileDefinitions|Search&Delete&EditProfileDefinitions"),
        ("GET", "/StructureDefinition/s1", &[], Read, Some("StructureDefinition"), Some("s1"), "Read|ReadById"),
        ("POST", "/SearchParameter", &[], Create, Some("SearchParameter"), None, "Write&Reindex|Create&Reindex"),
        ("PUT", "/SearchParameter/sp1", &[], Update, Some("SearchParameter"), Some("sp1"), "Write&Reindex|Update&Reindex"),
        ("PUT", "/SearchParameter?url=x", &[], ConditionalUpdate, Some("SearchParameter"), None,
            "Read&Write&Reindex|Search&Update&Reindex"),
        ("DELETE", "/SearchParameter/sp1", &[], Delete, Some("SearchParameter"), Some("sp1"), "Delete"),
        // Operations.
        ("DELETE", "/Patient/1/$purge-history", &[], Operation, Some("Patient"), Some("1"), "Delete&HardDelete"),
        ("GET", "/$export", &[], Operation, None, None, "Export"),
        ("POST", "/$EXPORT", &[], Operation, None, None, "Export"),
        ("GET", "/Patient/$export?_type=Observation", &[], Operation, Some("Patient"), None, "Export"),
        ("GET", "/Group/g1/$export", &[], Operation, Some("Group"), Some("g1"), "Export"),
        ("GET", "/_operations/export/123", &[], OperationStatus, None, Some("123"), "Export"),
        ("DELETE", "/_operations/export/123", &[], OperationStatus, None, Some("123"), "Export"),
        ("POST", "/$import", &[], Operation, None, None, "Import"),
        ("GET", "/_operations/import/5", &[], OperationStatus, None, Some("5"), "Import"),
        ("DELETE", "/_operations/import/5", &[], OperationStatus, None, Some("5"), "Import"),
        ("POST", "/$reindex", &[], Operation, None, None, "Reindex"),
        ("POST", "/Patient/1/$reindex", &[], Operation, Some("Patient"), Some("1"), "Reindex"),
        ("GET", "/_operations/reindex/5", &[], OperationStatus, None, Some("5"), "Reindex"),
        ("DELETE", "/_operations/reindex/5", &[], OperationStatus, None, Some("5"), "Reindex"),
        ("GET", "/SearchParameter/$status", &[], Operation, Some("SearchParameter"), None, "Read"),
        ("PUT", "/SearchParameter/$status", &[], Operation, Some("SearchParameter"), None, "SearchParameter"),
        ("POST", "/$convert-data", &[], Operation, None, None, "ConvertData"),
        ("POST", "/Patient/$validate", &[], Operation, Some("Patient"), None, "ResourceValidate"),
        ("GET", "/Patient/1/$validate", &[], Operation, Some("Patient"), Some("1"), "ResourceValidate"),
        ("GET", "/Patient/1/$everything", &[], Operation, Some("Patient"), Some("1"), "Read"),
        ("POST", "/Patient/$member-match", &[], Operation, Some("Patient"), None, "Read"),
        ("GET", "/ValueSet/$expand?url=x", &[], Operation, Some("ValueSet"), None, "Read"),
        ("GET", "/ValueSet/vs1/$expand", &[], Operation, Some("ValueSet"), Some("vs1"), "Read"),
        ("GET", "/CodeSystem/$lookup", &[], Operation, Some("CodeSystem"), None, "Read"),
        ("GET", "/ValueSet/$validate-code", &[], Operation, Some("ValueSet"), None, "Read"),
        ("POST", "/CodeSystem/c1/$validate-code", &[], Operation, Some("CodeSystem"), Some("c1"), "Read"),
        ("POST", "/ConceptMap/$translate", &[], Operation, Some("ConceptMap"), None, "Read"),
        ("GET", "/CodeSystem/$subsumes", &[], Operation, Some("CodeSystem"), None, "Read"),
        ("POST", "/$closure", &[], Operation, None, None, "Read"),
        ("DELETE", "/$bulk-delete", &[], Operation, None, None, "Delete"),
        ("DELETE", "/Patient/$bulk-delete?_hardDelete=true", &[], Operation, Some("Patient"), None, "Delete&HardDelete"),
        ("DELETE", "/$bulk-delete?_purgeHistory=true", &[], Operation, None, None, "Delete&HardDelete"),
        ("GET", "/_operations/bulk-delete/7", &[], OperationStatus, None, Some("7"), "Read"),
        ("DELETE", "/_operations/bulk-delete/7", &[], OperationStatus, None, Some("7"), "Delete"),
        ("PATCH", "/$bulk-update", &[], Operation, None, None, "BulkOperator"),
        ("PATCH", "/Patient/$bulk-update", &[], Operation, Some("Patient"), None, "BulkOperator"),
        ("GET", "/_operations/bulk-update/7", &[], OperationStatus, None, Some("7"), "BulkOperator"),
        ("GET", "/$versions", &[], Operation, None, None, "any"),
        // Unknown operations and job kinds fail closed: every action.
        ("GET", "/Patient/1/$frobnicate", &[], Operation, Some("Patient"), Some("1"), "*"),
        ("POST", "/$meta-add", &[], Operation, None, None, "*"),
        ("DELETE", "/Observation/$anything", &[], Operation, Some("Observation"), None, "*"),
        ("GET", "/_operations/mystery/1", &[], OperationStatus, None, Some("1"), "*"),
    ];
    for (method, target, headers, interaction, resource_type, id, required) in rows {
        let classified =
            run(method, target, headers).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        assert_eq!(classified.interaction, *interaction, "{method} {target}");
        assert_eq!(
            classified.resource_type.as_deref(),
            *resource_type,
            "{method} {target}"
        );
        assert_eq!(classified.id.as_deref(), *id, "{method} {target}");
        assert_eq!(
            classified.required,
            req(required),
            "{method} {target}: {}",
            classified.required
        );
    }
}

#[test]
fn details() {
    let vread = run("GET", "/Patient/1/_history/2", &[]).expect("vread");
    assert_eq!(vread.version.as_deref(), Some("2"));
    assert_eq!(vread.to_string(), "vread Patient/1/_history/2");

    let compartment = run("GET", "/Patient/p1/Observation", &[]).expect("compartment");
    assert_eq!(
        compartment.compartment,
        Some(("Patient".to_owned(), "p1".to_owned()))
    );
    assert_eq!(
        compartment.to_string(),
        "search-compartment Patient/p1/Observation"
    );
    let all = run("GET", "/Patient/p1/*", &[]).expect("compartment *");
    assert_eq!(all.to_string(), "search-compartment Patient/p1/*");

    let export = run("POST", "/$EXPORT", &[]).expect("export");
    assert_eq!(export.operation.as_deref(), Some("export"));
    assert_eq!(export.to_string(), "operation $export");
    let everything = run("GET", "/Patient/1/$everything", &[]).expect("everything");
    assert_eq!(everything.to_string(), "operation Patient/1/$everything");
    let unknown = run("GET", "/$Frobnicate", &[]).expect("unknown");
    assert_eq!(unknown.operation.as_deref(), Some("frobnicate"));

    let job = run("GET", "/_operations/export/9", &[]).expect("job");
    assert_eq!(job.operation.as_deref(), Some("export"));
    assert_eq!(job.to_string(), "operation-status _operations/export/9");

    assert_eq!(
        run("GET", "/Patient", &[]).expect("search").to_string(),
        "search-type Patient"
    );
    assert_eq!(
        run("GET", "/", &[]).expect("search").to_string(),
        "search-system"
    );
    assert!(run("POST", "/", &[])
        .expect("bundle")
        .interaction
        .is_bundle());
    assert!(run("POST", "/Patient/_search", &[])
        .expect("search")
        .interaction
        .is_search());
    assert_eq!(
        Interaction::ConditionalUpdate.to_string(),
        "conditional-update"
    );
}

#[test]
fn errors() {
    use ClassifyError::*;
    let long_id = "a".repeat(65);
    let long_path = format!("/Patient/{long_id}");
    let na = |method: &str, path: &str| MethodNotAllowed {
        method: method.into(),
        path: path.into(),
    };
    let rows: Vec<ErrorRow<'_>> = vec![
        (
            "OPTIONS",
            "/Patient",
            &[],
            UnsupportedMethod("OPTIONS".into()),
        ),
        ("TRACE", "/", &[], UnsupportedMethod("TRACE".into())),
        ("GET", "/Foo", &[], UnknownResourceType("Foo".into())),
        (
            "GET",
            "/patient/1",
            &[],
            UnknownResourceType("patient".into()),
        ),
        (
            "GET",
            "/Patient/1/Foo",
            &[],
            UnknownResourceType("Foo".into()),
        ),
        (
            "GET",
            "/Observation/1/Patient",
            &[],
            UnknownRoute("/Observation/1/Patient".into()),
        ),
        (
            "GET",
            "/Patient/1/_history/2/x",
            &[],
            UnknownRoute("/Patient/1/_history/2/x".into()),
        ),
        (
            "GET",
            "/Patient/1/_history/2/x/y/z",
            &[],
            UnknownRoute("/Patient/1/_history/2/x/y/z".into()),
        ),
        (
            "GET",
            "/Foo/1/_history/2/x/y",
            &[],
            UnknownResourceType("Foo".into()),
        ),
        (
            "GET",
            "/_operations/export",
            &[],
            UnknownResourceType("_operations".into()),
        ),
        ("POST", "/Patient/1", &[], na("POST", "/Patient/1")),
        ("PUT", "/Patient", &[], na("PUT", "/Patient")),
        ("PATCH", "/Patient?", &[], na("PATCH", "/Patient")),
        ("DELETE", "/Patient", &[], na("DELETE", "/Patient")),
        (
            "GET",
            "/Patient/_search",
            &[],
            na("GET", "/Patient/_search"),
        ),
        ("DELETE", "/metadata", &[], na("DELETE", "/metadata")),
        ("PUT", "/", &[], na("PUT", "/")),
        (
            "POST",
            "/_operations/export/1",
            &[],
            na("POST", "/_operations/export/1"),
        ),
        (
            "GET",
            "/Patient/1/$purge-history",
            &[],
            na("GET", "/Patient/1/$purge-history"),
        ),
        (
            "POST",
            "/Patient/1/Observation",
            &[],
            na("POST", "/Patient/1/Observation"),
        ),
        (
            "GET",
            "/Patient/1/Observation/_search",
            &[],
            na("GET", "/Patient/1/Observation/_search"),
        ),
        ("GET", "/Patient/a_b", &[], InvalidId("a_b".into())),
        ("GET", &long_path, &[], InvalidId(long_id)),
        (
            "GET",
            "/Patient/1/_history/v%201",
            &[],
            InvalidId("v%201".into()),
        ),
        (
            "GET",
            "/Observation/$export",
            &[],
            OperationNotSupported {
                operation: "export".into(),
                path: "/Observation/$export".into(),
            },
        ),
        (
            "DELETE",
            "/$purge-history",
            &[],
            OperationNotSupported {
                operation: "purge-history".into(),
                path: "/$purge-history".into(),
            },
        ),
    ];
    for (method, target, headers, expected) in rows {
        let error = run(method, target, headers).expect_err(target);
        assert_eq!(error, expected, "{method} {target}");
        assert!(error.to_string().ends_with('.'), "{error}");
    }
}

proptest! {
    #[test]
    fn never_panics(
        method in "[A-Z]{1,8}",
        path in any::<String>(),
        query in proptest::option::of(any::<String>()),
    ) {
        let method = Method::from_bytes(method.as_bytes()).expect("token");
        let _ = classify(&method, &path, query.as_deref(), &HeaderMap::new());
    }

    #[test]
    fn every_classified_requirement_is_met_by_star_only(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        path in "(/(Patient|Observation|ValueSet|Group|SearchParameter|_history|_search|_operations|export|metadata|[$][a-z-]{1,12}|[a-z0-9]{1,3}|[*]|x_y)){0,5}",
        query in proptest::option::of("(hardDelete|_hardDelete|name|_type)=(true|false|x)"),
    ) {
        let method = Method::from_bytes(method.as_bytes()).expect("token");
        let path = if path.is_empty() { "/".to_owned() } else { path };
        if let Ok(classified) = classify(&method, &path, query.as_deref(), &HeaderMap::new()) {
            prop_assert!(!classified.required.alternatives.is_empty());
            prop_assert!(classified.required.is_met_by(DataActions::ALL));
            prop_assert!(!classified.required.is_met_by(DataActions::NONE));
        }
    }
}
