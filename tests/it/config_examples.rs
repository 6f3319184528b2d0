//! The example configurations in `config/` stay valid (each is loaded with `Config::load`), the
//! accepted forms of `authenticationConfiguration` (ARM object, resource, template), defaults,
//! durations and role mapping behave as documented, and no input makes `Config::parse` panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fhirguard::actions::{DataAction, DataActions};
use fhirguard::config::raw::RawConfig;
use fhirguard::config::{Allowed, Compatibility, Config, LogFormat};
use proptest::prelude::*;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    Config::load(&path).unwrap_or_else(|errors| panic!("{name}:\n{errors}"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn every_example_is_valid_and_matches_the_raw_mirror() {
    let files = examples();
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        if let Err(errors) = Config::load(&path) {
            panic!("{}:\n{errors}", path.display());
        }
        // The serde mirror accepts every valid file too (STYLE habit 2).
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(error) = yaml_serde::from_str::<RawConfig>(&text) {
            panic!("{}: raw mirror disagrees: {error}", path.display());
        }
    }
}

#[test]
fn entra_example() {
    let config = load("entra.yaml");
    assert_eq!(config.upstream.url.as_str(), "http://127.0.0.1:8081/fhir");
    assert_eq!(config.upstream.base_path(), "/fhir");
    let primary = config.auth.primary.as_ref().expect("primary authority");
    assert_eq!(
        primary.authority,
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(primary.audience, "https://fhir.contoso.example");
    assert!(config.auth.smart_providers.is_empty());
    assert_eq!(config.roles.groups_claim.as_deref(), Some("groups"));
    let roles = ["FHIR.Reader".to_owned(), "unknown".to_owned()];
    assert_eq!(
        config.roles.granted(&roles, &[]),
        DataActions::of(&[DataAction::Read])
    );
    assert_eq!(
        config.roles.granted(&[], &["fhir-exporters".to_owned()]),
        DataActions::of(&[DataAction::Read, DataAction::Export])
    );
    assert_eq!(
        config.public_base_url.as_ref().map(url::Url::as_str),
        Some("https://fhir.contoso.example/fhir")
    );
    // The limits it documents are the defaults.
    assert_eq!(config.limits.body_read_timeout, Duration::from_secs(30));
    assert_eq!(config.limits.max_buffered_bytes, 128 * 1024 * 1024);
}

#[test]
fn entra_smart_example() {
    let config = load("entra-smart.yaml");
    assert_eq!(config.compatibility, Compatibility::Azure);
    let providers = &config.auth.smart_providers;
    assert_eq!(providers.len(), 2);
    assert_eq!(
        providers[0].authority,
        "https://keycloak.contoso.example/realms/fhir"
    );
    assert_eq!(
        providers[1].applications[0].client_id,
        providers[1].applications[0].audience
    );
    assert_eq!(
        providers[1].applications[0].allowed_data_actions,
        DataActions::of(&[DataAction::Read])
    );
}

#[test]
fn local_example() {
    let config = load("local.yaml");
    assert!(config.allow_http_authorities);
    assert_eq!(config.listen, addr("127.0.0.1:8080"));
    assert_eq!(config.logging.format, LogFormat::Text);
    assert_eq!(config.logging.level, "debug");
    assert!(config.logging.log_query);
    assert_eq!(config.clock_skew, Duration::from_secs(60));
    assert_eq!(
        config.key_sets.min_refetch_interval,
        Duration::from_secs(10)
    );
    assert_eq!(config.upstream.response_timeout, Duration::from_secs(30));
    let writer = &config.auth.smart_providers[0].applications[1];
    assert_eq!(writer.client_id, "local-writer");
    assert!(writer.allowed_data_actions.contains(DataAction::Delete));
    assert!(!writer.allowed_data_actions.contains(DataAction::HardDelete));
}

#[test]
fn many_replicas_example() {
    use fhirguard::config::{FailureMode, LimitScope, LimitedClients, SecretSource};
    let config = load("many-replicas.yaml");
    let shared = config.shared_state.as_ref().expect("sharedState");
    assert!(shared.redis.tls());
    assert_eq!(shared.redis.timeout, Duration::from_millis(250));
    assert_eq!(
        shared.redis.password,
        Some(SecretSource::File(
            "/var/run/secrets/valkey/password".into()
        ))
    );
    assert_eq!(shared.failure_mode, FailureMode::Open);
    assert!(shared.introspection);
    assert!(config.shared_replay());
    let limits = &config.rate_limits;
    assert_eq!(limits.len(), 2);
    assert_eq!(
        (
            limits[0].requests_per_second,
            limits[0].burst,
            limits[0].scope
        ),
        (5, 20, LimitScope::Cluster)
    );
    assert_eq!(limits[1].clients, LimitedClients::All);
    assert!(limits[0].covers("bulk-exporter") && !limits[0].covers("app"));
}

#[test]
fn arm_resource_example() {
    let config = load("arm-resource.json");
    let primary = config.auth.primary.as_ref().unwrap();
    assert_eq!(
        primary.audience,
        "https://contosoworkspace-contosofhir.fhir.azurehealthcareapis.com"
    );
    assert_eq!(config.auth.smart_providers.len(), 1);
    assert!(!config.auth.smart_proxy_enabled);
    // The ARM spelling beside authenticationConfiguration (issue 19).
    let cors = config.cors.as_ref().expect("properties.corsConfiguration");
    assert_eq!(
        cors.origins,
        Allowed::Listed(vec!["https://portal.contoso.com".to_owned()])
    );
    assert_eq!(cors.headers, Allowed::Any);
    assert!(cors.methods.contains(&http::Method::PATCH));
    assert_eq!((cors.max_age, cors.allow_credentials), (1440, false));
}

#[test]
fn cors_is_given_once() {
    let resource = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/arm-resource.json"),
    )
    .unwrap();
    let twice = resource.replacen(
        "\"compatibility\": \"azure\",",
        "\"compatibility\": \"azure\", \"cors\": { \"origins\": [] },",
        1,
    );
    let errors = Config::parse(&twice).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(
        errors.0[0].path,
        "authenticationConfiguration.properties.corsConfiguration"
    );
    // In a template, beside the one resource's authenticationConfiguration.
    let template = r#"{"upstream": "http://127.0.0.1:8081/fhir", "authenticationConfiguration":
        {"resources": [{"properties": {"authenticationConfiguration":
        {"authority": "https://login.example.org/t", "audience": "https://f.example.org"},
        "corsConfiguration": {"origins": ["https://a.example.org", "https://a.example.org/x"]}}}]}}"#;
    let errors = Config::parse(template).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "authenticationConfiguration.resources[0].properties.corsConfiguration.origins[1]",
            "authenticationConfiguration.resources[0].properties.corsConfiguration.methods",
            "authenticationConfiguration.resources[0].properties.corsConfiguration.headers",
        ],
        "{errors}"
    );
}

const MINIMAL: &str = r#"
upstream: "http://127.0.0.1:8081/fhir/"
authenticationConfiguration:
  authority: "https://login.example.org/tenant/"
  audience: "https://fhir.example.org"
"#;

#[test]
fn defaults() {
    let config = Config::parse(MINIMAL).unwrap();
    assert_eq!(config.listen, addr("0.0.0.0:8080"));
    assert_eq!(config.admin_listen, addr("0.0.0.0:9090"));
    assert!(config.tls.is_none());
    assert!(config.public_base_url.is_none());
    assert!(!config.allow_http_authorities);
    assert_eq!(config.compatibility, Compatibility::Open);
    assert_eq!(config.clock_skew, Duration::from_secs(300));
    assert!(!config.audience_ignore_trailing_slash);
    let upstream = &config.upstream;
    assert_eq!(upstream.url.as_str(), "http://127.0.0.1:8081/fhir");
    assert_eq!(upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(upstream.response_timeout, Duration::from_secs(60));
    assert_eq!(upstream.pool_idle_timeout, Duration::from_secs(4));
    assert_eq!(upstream.pool_max_idle_per_host, 256);
    assert_eq!(upstream.max_connections, 256);
    assert!(!upstream.http2 && upstream.ca_file.is_none());
    let sets = &config.key_sets;
    assert_eq!(sets.refresh_interval, Duration::from_secs(3600));
    assert_eq!(sets.min_refetch_interval, Duration::from_secs(300));
    assert_eq!(sets.max_stale, Duration::from_secs(86_400));
    assert_eq!(sets.fetch_timeout, Duration::from_secs(5));
    assert_eq!(sets.retry_interval, Duration::from_secs(10));
    let limits = &config.limits;
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(
        (
            limits.max_header_bytes,
            limits.max_token_bytes,
            limits.max_bundle_bytes
        ),
        (65_536, 16_384, 10 * 1024 * 1024)
    );
    assert_eq!(
        config.anonymous_paths,
        [
            "/metadata",
            "/.well-known/smart-configuration",
            "/$versions"
        ]
    );
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.logging.level, "info");
    assert!(!config.logging.log_query);
    assert_eq!(config.shutdown_grace_period, Duration::from_secs(30));
    assert!(config.roles.groups_claim.is_none());
    assert_eq!(config.roles.roles.len(), 15);
    // The authority is kept as written, trailing '/' included.
    let primary = config.auth.primary.unwrap();
    assert_eq!(primary.authority, "https://login.example.org/tenant/");
}

#[test]
fn durations_take_units_or_seconds() {
    let text = format!(
        "{MINIMAL}clockSkew: 0\nkeySets: {{refreshInterval: 12h, minRefetchInterval: 5m, maxStale: 2d, fetchTimeout: 300ms, retryInterval: 7}}\nlimits: {{headerReadTimeout: \"15s\"}}\n"
    );
    let config = Config::parse(&text).unwrap();
    assert_eq!(config.clock_skew, Duration::ZERO);
    for (value, expected) in [
        ("0", Duration::ZERO),
        ("\"1500ms\"", Duration::from_millis(1500)),
    ] {
        let grace = Config::parse(&format!("{MINIMAL}shutdownGracePeriod: {value}\n")).unwrap();
        assert_eq!(grace.shutdown_grace_period, expected, "{value}");
    }
    let sets = &config.key_sets;
    assert_eq!(sets.refresh_interval, Duration::from_secs(43_200));
    assert_eq!(sets.min_refetch_interval, Duration::from_secs(300));
    assert_eq!(sets.max_stale, Duration::from_secs(172_800));
    assert_eq!(sets.fetch_timeout, Duration::from_millis(300));
    assert_eq!(sets.retry_interval, Duration::from_secs(7));
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(15));
}

#[test]
fn root_upstream_and_upstream_object() {
    let text = MINIMAL.replace(
        "upstream: \"http://127.0.0.1:8081/fhir/\"",
        "upstream: {url: \"https://fhir.internal:8443/\", caFile: /ca.pem, http2: true, poolMaxIdlePerHost: 0, maxConnections: 8}",
    );
    let config = Config::parse(&text).unwrap();
    assert_eq!(config.upstream.url.as_str(), "https://fhir.internal:8443/");
    assert_eq!(config.upstream.base_path(), "");
    assert!(config.upstream.http2);
    assert_eq!(config.upstream.pool_max_idle_per_host, 0);
    assert_eq!(config.upstream.max_connections, 8);
    let none = MINIMAL.replace(
        "upstream: \"http://127.0.0.1:8081/fhir/\"",
        "upstream: {url: \"http://127.0.0.1:8081/fhir/\", maxConnections: 0}",
    );
    let errors = Config::parse(&none).unwrap_err().to_string();
    assert!(
        errors.contains("upstream.maxConnections: must be at least 1"),
        "{errors}"
    );
    assert_eq!(config.upstream.ca_file, Some(PathBuf::from("/ca.pem")));
}

/// An ARM template: the one (child) resource holding the object is found; everything Azure's
/// around it is ignored.
#[test]
fn arm_template_form() {
    let text = r#"
upstream: "http://127.0.0.1:8081/fhir"
authenticationConfiguration:
  $schema: "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
  contentVersion: "1.0.0.0"
  parameters: { workspaceName: { type: string } }
  resources:
    - type: Microsoft.HealthcareApis/workspaces
      name: ws
      properties: {}
      resources:
        - type: fhirservices
          kind: fhir-R4
          dependsOn: ["[resourceId('Microsoft.HealthcareApis/workspaces', 'ws')]"]
          properties:
            authenticationConfiguration:
              smartIdentityProviders:
                - authority: "https://idp.example.org/realms/fhir"
                  applications:
                    - { clientId: portal, audience: "https://fhir", allowedDataActions: ["*"] }
            corsConfiguration: { origins: ["*"], headers: ["*"], methods: ["*"] }
"#;
    let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.auth.primary.is_none());
    let app = &config.auth.smart_providers[0].applications[0];
    assert_eq!(app.client_id, "portal");
    assert_eq!(app.allowed_data_actions, DataActions::ALL);
    assert_eq!(config.cors.map(|cors| cors.origins), Some(Allowed::Any));
}

#[test]
fn json_documents_are_accepted() {
    let text = r#"{"upstream": "http://127.0.0.1:1/fhir", "allowHttpAuthorities": true,
        "authenticationConfiguration": {"authority": "http://127.0.0.1:2", "audience": "a"}}"#;
    let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.auth.primary.unwrap().authority, "http://127.0.0.1:2");
}

#[test]
fn role_mappings_merge_with_or_replace_the_built_in_table() {
    let merged = format!(
        "{MINIMAL}roles:\n  mappings:\n    FHIR Data Reader: [read, export]\n    App.Admin: [\"*\", smart]\n"
    );
    let roles = Config::parse(&merged).unwrap().roles;
    let granted = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        roles.granted(&names, &[])
    };
    // The mapping overrides the built-in role of the same name, case-insensitively.
    assert_eq!(
        granted(&["fhir data reader"]),
        DataActions::of(&[DataAction::Read, DataAction::Export])
    );
    assert_eq!(
        granted(&["APP.ADMIN"]),
        DataActions::ALL.with(DataAction::Smart)
    );
    // Built-ins stay: globalWriter = * minus hardDelete, editProfileDefinitions (reference §3.1).
    let writer = granted(&["GlobalWriter"]);
    assert!(writer.contains(DataAction::Update) && !writer.contains(DataAction::HardDelete));
    assert_eq!(
        granted(&["globalReader", "FHIR Data Converter"]),
        DataActions::of(&[
            DataAction::Read,
            DataAction::ResourceValidate,
            DataAction::ConvertData
        ])
    );
    // Groups are ignored unless configured.
    assert_eq!(
        roles.granted(&[], &["globalAdmin".to_owned()]),
        DataActions::NONE
    );

    let replaced =
        format!("{MINIMAL}roles: {{replaceBuiltIn: true, mappings: {{Reader: [read]}}}}\n");
    let roles = Config::parse(&replaced).unwrap().roles;
    assert_eq!(roles.roles.keys().collect::<Vec<_>>(), ["reader"]);
    assert_eq!(
        roles.granted(&["globalAdmin".to_owned()], &[]),
        DataActions::NONE
    );
}

#[test]
fn a_missing_file_is_one_document_error() {
    let dir = tempfile::tempdir().unwrap();
    let errors = Config::load(&dir.path().join("absent.yaml")).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].path, "");
    assert!(errors.0[0].message.starts_with("cannot read "), "{errors}");

    let file = dir.path().join("fhirguard.yaml");
    std::fs::write(&file, MINIMAL).unwrap();
    assert!(Config::load(&file).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Config::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_yaml_ish_text(
        text in "([ a-zA-Z{}\\[\\]:,\"'\\-\n#&*!|>0-9.]|upstream|authenticationConfiguration|smartIdentityProviders|applications|clientId|allowedDataActions|authority|audience|properties|resources|http://h|https://h|\n  ){0,80}"
    ) {
        let _ = Config::parse(&text);
    }

    /// Mutations of a valid file: truncated or with one line dropped, it still only returns.
    #[test]
    fn parse_never_panics_on_mangled_examples(cut in 0usize..2000, drop in 0usize..60) {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/entra-smart.yaml"),
        ).unwrap();
        let truncated: String = text.chars().take(cut).collect();
        let _ = Config::parse(&truncated);
        let dropped: Vec<&str> = text.lines().enumerate().filter(|(i, _)| *i != drop).map(|(_, l)| l).collect();
        let _ = Config::parse(&dropped.join("\n"));
    }
}
