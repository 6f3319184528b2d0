//! Table tests of configuration errors: each snippet with the exact `(path, message)` list it
//! must produce (reference §6.1 messages for the shared rules).

use super::messages::*;
use super::{Config, ConfigError, ConfigFile};

const UPSTREAM: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n";

/// A document with a valid upstream and `auth` as `authenticationConfiguration`.
fn with_auth(auth: &str) -> String {
    format!("{UPSTREAM}authenticationConfiguration:\n{auth}")
}

/// A valid primary authority, for snippets that test other keys.
fn with_primary(extra: &str) -> String {
    format!(
        "{extra}\n{}",
        with_auth("  authority: \"https://login.example.org/t\"\n  audience: \"https://fhir.example.org\"\n")
    )
}

/// One smart provider with the given application YAML (indented as an `applications` item).
fn with_app(app: &str) -> String {
    with_auth(&format!(
        "  smartIdentityProviders:\n    - authority: \"https://idp.example.org\"\n      applications:\n        - {app}\n"
    ))
}

/// A case: name, document, expected `(path, message)` errors.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
/// A case whose document and paths are built at run time.
type OwnedCase = (&'static str, String, Vec<(String, &'static str)>);

const SP: &str = "authenticationConfiguration.smartIdentityProviders";
const APP0: &str = "authenticationConfiguration.smartIdentityProviders[0].applications[0]";

/// Compares errors with expectations; an expected message ending in "..." is a prefix.
fn assert_errors(name: &str, text: &str, expected: &[(&str, &str)]) {
    let errors = match Config::parse(text) {
        Ok(_) => panic!("{name}: expected errors, the config was accepted:\n{text}"),
        Err(errors) => errors.0,
    };
    let matches = |error: &ConfigError, (path, message): &(&str, &str)| {
        error.path == *path
            && match message.strip_suffix("...") {
                Some(prefix) => error.message.starts_with(prefix),
                None => error.message == *message,
            }
    };
    let unmatched: Vec<_> = expected
        .iter()
        .filter(|want| !errors.iter().any(|got| matches(got, want)))
        .collect();
    assert!(
        unmatched.is_empty() && errors.len() == expected.len(),
        "{name}: expected {expected:#?}\ngot {errors:#?}"
    );
}

/// The YAML parser's own errors keep their words and positions: a duplicate key (which would
/// otherwise let two readers of one file disagree), unclosed flows, tabs, alias bombs and
/// multi-document streams, word for word as the configuration loader has always reported them.
#[test]
fn parser_errors_keep_their_words_and_positions() {
    let cases: &[Case<'_>] = &[
        (
            "duplicate key",
            "upstream:\n  url: http://127.0.0.1:1\n  url: http://127.0.0.1:2\n",
            &[("", "not valid YAML: upstream: duplicate entry with key \"url\" at line 2 column 3")],
        ),
        (
            "unclosed list",
            "a: [\n",
            &[("", "not valid YAML: did not find expected node content at line 2 column 1, while parsing a flow node")],
        ),
        (
            "tab indentation",
            "upstream:\n\turl: x\n",
            &[("", "not valid YAML: found character that cannot start any token at line 2 column 1, while scanning for the next token")],
        ),
        (
            "unclosed mapping",
            "upstream: {url: \"http://a\"\n",
            &[("", "not valid YAML: did not find expected ',' or '}' at line 2 column 1, while parsing a flow mapping at line 1 column 11")],
        ),
        (
            "recursive alias",
            "x: &a [*a]\n",
            &[("", "not valid YAML: recursion limit exceeded at line 1 column 4")],
        ),
        (
            "two documents",
            "upstream: {url: http://a}\n---\nupstream: {url: http://b}\n",
            &[("", "not valid YAML: deserializing from YAML containing more than one document is not supported")],
        ),
        (
            "merge key",
            "upstream:\n  url: http://a\n  <<: {responseTimeout: 5s}\n",
            &[
                ("upstream.<<", "unknown key '<<'; expected one of: url, connectTimeout, responseTimeout, caFile, http2, poolIdleTimeout, poolMaxIdlePerHost, maxConnections"),
                ("authenticationConfiguration", "is required"),
            ],
        ),
    ];
    for (name, text, expected) in cases {
        assert_errors(name, text, expected);
    }
}

#[test]
fn document_errors() {
    let cases: &[Case<'_>] = &[
        ("not yaml", "a: [", &[("", "not valid YAML: ...")]),
        ("bad json", "{\"a\": [}", &[("", "not valid JSON: ...")]),
        ("empty", "", &[("", "the configuration is empty; ...")]),
        (
            "a list",
            "- 1\n",
            &[("", "expected a mapping, found a list")],
        ),
        (
            "required keys",
            "listen: \"127.0.0.1:1\"\n",
            &[
                ("upstream", "is required (the FHIR server's base URL)"),
                ("authenticationConfiguration", "is required"),
            ],
        ),
        (
            "unknown top-level key",
            &with_primary("upstreams: x"),
            &[(
                "upstreams",
                "unknown key 'upstreams'; expected one of: listen, adminListen, upstream, ...",
            )],
        ),
        (
            "non-string key",
            &with_primary("1: x"),
            &[("", "keys must be strings, found a number (1)")],
        ),
    ];
    for (name, text, expected) in cases {
        assert_errors(name, text, expected);
    }
}

#[test]
fn top_level_errors() {
    let cases: &[Case<'_>] = &[
        ("upstream scheme", &with_auth_primary("upstream: \"ftp://h/fhir\""), &[("upstream", "'ftp://h/fhir' must be an http or https URL")]),
        ("upstream query", &with_auth_primary("upstream: \"http://h/fhir?x=1\""), &[("upstream", "'http://h/fhir?x=1' must not have a query or fragment")]),
        ("upstream not a url", &with_auth_primary("upstream: \"h:80\""), &[("upstream", "'h:80' must be an http or https URL")]),
        (
            "upstream object",
            &with_auth_primary("upstream: {urll: \"http://h\", caFile: a.pem}"),
            &[("upstream.urll", "unknown key 'urll'; expected one of: url, connectTimeout, responseTimeout, caFile, http2, poolIdleTimeout, poolMaxIdlePerHost, maxConnections"), ("upstream.url", "is required (the FHIR server's base URL)")],
        ),
        ("caFile needs https", &with_auth_primary("upstream: {url: \"http://h\", caFile: a.pem}"), &[("upstream.caFile", "applies only to an https upstream")]),
        ("listen", &with_primary("listen: localhost:80"), &[("listen", "'localhost:80' is not a socket address (ip:port, e.g. 0.0.0.0:8080)")]),
        ("same listeners", &with_primary("listen: \"0.0.0.0:9090\""), &[("adminListen", "must differ from listen (0.0.0.0:9090)")]),
        ("duration unit", &with_primary("clockSkew: 5 minutes"), &[("clockSkew", "'5 minutes' is not a duration; ...")]),
        ("duration negative", &with_primary("clockSkew: -5"), &[("clockSkew", "must not be negative")]),
        ("duration fraction", &with_primary("clockSkew: 1.5"), &[("clockSkew", "expected whole seconds or a string with a unit (e.g. \"1500ms\")")]),
        ("duration zero", &with_primary("keySets: {fetchTimeout: 0s, maxStale: 0}"), &[("keySets.fetchTimeout", "must be greater than zero"), ("keySets.maxStale", "must be greater than zero")]),
        ("grace period", &with_primary("shutdownGracePeriod: -1"), &[("shutdownGracePeriod", "must not be negative")]),
        ("duration huge", &with_primary("keySets: {maxStale: 400d}"), &[("keySets.maxStale", "is too large (at most 365d)")]),
        ("duration type", &with_primary("keySets: {retryInterval: [1]}"), &[("keySets.retryInterval", "expected a duration (e.g. \"5s\", \"300ms\", or whole seconds), found a list")]),
        ("limits", &with_primary("limits: {maxHeaderBytes: 0, maxTokenBytes: \"1k\", maxBundleBytes: -1}"), &[("limits.maxHeaderBytes", "must be at least 1"), ("limits.maxTokenBytes", "expected a whole number, found a string"), ("limits.maxBundleBytes", "must not be negative")]),
        ("body limits", &with_primary("limits: {bodyReadTimeout: 0s, maxBufferedBytes: 1000}"), &[("limits.bodyReadTimeout", "must be greater than zero"), ("limits.maxBufferedBytes", "must be at least limits.maxBundleBytes (10485760)")]),
        ("bundle over the buffer budget", &with_primary("limits: {maxBundleBytes: 200000000}"), &[("limits.maxBundleBytes", "must be at most limits.maxBufferedBytes (134217728)")]),
        ("worker threads", &with_primary("workerThreads: 2000"), &[("workerThreads", "must be at most 1024 (0 = one per CPU core)")]),
        ("worker threads type", &with_primary("workerThreads: -1"), &[("workerThreads", "must not be negative")]),
        ("bool", &with_primary("allowHttpAuthorities: yes"), &[("allowHttpAuthorities", "expected true or false, found a string")]),
        ("compatibility", &with_primary("compatibility: strict"), &[("compatibility", "unknown value 'strict'; expected one of: open, azure")]),
        ("logging", &with_primary("logging: {format: xml, level: \"\", colour: true}"), &[("logging.colour", "unknown key 'colour'; expected one of: format, level, logQueryStrings"), ("logging.format", "unknown value 'xml'; expected one of: json, text"), ("logging.level", "must not be empty")]),
        ("anonymous paths", &with_primary("anonymousPaths: [metadata, \"/a?b\", 3]"), &[("anonymousPaths[0]", "'metadata' must be a path starting with '/', without a query"), ("anonymousPaths[1]", "'/a?b' must be a path starting with '/', without a query"), ("anonymousPaths[2]", "expected a string, found a number (3)")]),
        ("tls", &with_primary("tls: {certFile: c.pem}"), &[("tls.keyFile", "is required")]),
        ("public base url", &with_primary("publicBaseUrl: \"fhir.example.org\""), &[("publicBaseUrl", "'fhir.example.org' is not a URL: ...")]),
        ("sender constraints", &with_primary("senderConstraints: {dpop: {replayCacheEntries: 0, nonces: true}, clientCertificates: {request: true, header: x-client-cert, trustedProxies: [\"10.0.0.0/33\"]}}"), &[("senderConstraints.dpop.nonces", "unknown key 'nonces'; expected one of: requiredFor, replayCacheEntries, nonce, replayStore"), ("senderConstraints.dpop.replayCacheEntries", "must be at least 1"), ("senderConstraints.clientCertificates.request", "applies only with tls (the listener must terminate TLS to ask for a certificate)"), ("senderConstraints.clientCertificates.header", "unknown value 'x-client-cert'; expected one of: x-forwarded-client-cert, ssl-client-cert"), ("senderConstraints.clientCertificates.trustedProxies[0]", "'10.0.0.0/33': the prefix length must be 0..=32"), ("senderConstraints.clientCertificates.trustedProxies", "applies only with header")]),
        ("dpop nonce", &with_primary("senderConstraints: {dpop: {nonce: {required: yes, lifetime: 5s, secretFile: /nonexistent/fhirguard-nonce, rotate: true}}}"), &[("senderConstraints.dpop.nonce.rotate", "unknown key 'rotate'; expected one of: required, lifetime, secretFile"), ("senderConstraints.dpop.nonce.required", "expected true or false, found a string"), ("senderConstraints.dpop.nonce.lifetime", "must be between 10s and 1d"), ("senderConstraints.dpop.nonce.secretFile", "cannot read '/nonexistent/fhirguard-nonce': ...")]),
        ("certificate header needs proxies", &with_primary("senderConstraints: {clientCertificates: {header: ssl-client-cert}}"), &[("senderConstraints.clientCertificates.trustedProxies", "is required with header (the proxies whose header is believed)")]),
        (
            "roles",
            &with_primary("roles:\n  mappings: {Reader: [read, Reed, READ], reader: [read]}\n  groups: [x]\n  groupsClaim: \"\""),
            &[
                ("roles.mappings.Reader[1]", "'Reed' is not a data action; expected one of: Read, Write, ..."),
                ("roles.mappings.Reader[2]", "duplicate data action 'READ'"),
                ("roles.mappings.reader", "duplicate name 'reader' (names are case-insensitive)"),
                ("roles.groups", "expected a mapping, found a list"),
                ("roles.groupsClaim", "must not be empty"),
            ],
        ),
    ];
    for (name, text, expected) in cases {
        assert_errors(name, text, expected);
    }
}

/// `top` replaces the upstream line of a config with a valid primary authority.
fn with_auth_primary(top: &str) -> String {
    with_primary("").replacen(UPSTREAM, &format!("{top}\n"), 1)
}

#[test]
fn report_only_is_every_client_or_a_list_of_client_ids() {
    use super::ReportOnly;
    let parse = |extra: &str| Config::parse(&with_primary(extra)).unwrap().report_only;
    assert_eq!(parse(""), ReportOnly::Off);
    assert_eq!(parse("reportOnly: false"), ReportOnly::Off);
    assert_eq!(parse("reportOnly: true"), ReportOnly::All);
    let listed = parse("reportOnly: [reader, \" ehr \"]");
    assert_eq!(
        listed,
        ReportOnly::Clients(vec!["reader".to_owned(), "ehr".to_owned()])
    );
    assert!(listed.covers(Some("reader")) && listed.covers(Some("ehr")));
    assert!(!listed.covers(Some("writer")) && !listed.covers(None));
    assert!(ReportOnly::All.covers(None) && !ReportOnly::Off.covers(Some("reader")));
    assert_errors(
        "empty list",
        &with_primary("reportOnly: []"),
        &[("reportOnly", "lists no client id...")],
    );
    assert_errors(
        "blank id",
        &with_primary("reportOnly: [\"\"]"),
        &[("reportOnly[0]", "must not be empty")],
    );
    assert_errors(
        "a string",
        &with_primary("reportOnly: reader"),
        &[("reportOnly", "expected a list...")],
    );
}

#[test]
fn the_launch_patient_claim_is_a_name_and_not_for_azure() {
    let config = Config::parse(&with_primary("smartLaunchPatientClaim: patient")).unwrap();
    assert_eq!(
        config.smart_launch_patient_claim.as_deref(),
        Some("patient")
    );
    let config = Config::parse(&with_primary("")).unwrap();
    assert_eq!(config.smart_launch_patient_claim, None);
    assert_errors(
        "empty",
        &with_primary("smartLaunchPatientClaim: \"\""),
        &[("smartLaunchPatientClaim", "must not be empty")],
    );
    assert_errors(
        "azure",
        &with_primary("compatibility: azure\nsmartLaunchPatientClaim: patient"),
        &[(
            "smartLaunchPatientClaim",
            "is not available with compatibility: azure...",
        )],
    );
}

#[test]
fn primary_authority_errors() {
    let cases: &[Case<'_>] = &[
        ("no provider", &with_auth("  smartProxyEnabled: false\n"), &[("authenticationConfiguration", "no identity provider is configured: set authority and audience, or smartIdentityProviders")]),
        ("no provider, empty list", &with_auth("  smartIdentityProviders: []\n"), &[("authenticationConfiguration", "no identity provider is configured: ...")]),
        ("authority alone", &with_auth("  authority: \"https://login.example.org/t\"\n"), &[("authenticationConfiguration.audience", "is required when authority is set")]),
        ("audience alone", &with_auth("  audience: \"https://fhir\"\n"), &[("authenticationConfiguration.authority", "is required when audience is set")]),
        ("http authority", &with_auth("  authority: \"http://login.example.org/t\"\n  audience: a\n"), &[("authenticationConfiguration.authority", "'http://login.example.org/t' must be a fully qualified https URL. An http:// authority is accepted only with allowHttpAuthorities: true (local testing).")]),
        ("relative authority", &with_auth("  authority: \"/t\"\n  audience: a\n"), &[("authenticationConfiguration.authority", "'/t' must be a fully qualified https URL")]),
        ("empty audience", &with_auth("  authority: \"https://l/t\"\n  audience: \" \"\n"), &[("authenticationConfiguration.audience", "must not be empty")]),
        ("smartProxyEnabled type", &with_auth("  authority: \"https://l/t\"\n  audience: a\n  smartProxyEnabled: 1\n"), &[("authenticationConfiguration.smartProxyEnabled", "expected true or false, found a number (1)")]),
        ("unknown key", &with_auth("  authority: \"https://l/t\"\n  audience: a\n  Authority: x\n"), &[("authenticationConfiguration.Authority", "unknown key 'Authority'; expected one of: authority, audience, smartProxyEnabled, smartIdentityProviders")]),
        ("expression", &with_auth("  authority: \"[parameters('authority')]\"\n  audience: a\n"), &[("authenticationConfiguration.authority", "'[parameters('authority')]' is an ARM template expression; resolve expressions first ...")]),
    ];
    for (name, text, expected) in cases {
        assert_errors(name, text, expected);
    }
}

#[test]
fn smart_provider_errors() {
    let provider = |authority: &str, client: &str| {
        format!("    - authority: \"{authority}\"\n      applications: [{{clientId: \"{client}\", audience: a, allowedDataActions: [Read]}}]\n")
    };
    let providers =
        |list: &[String]| with_auth(&format!("  smartIdentityProviders:\n{}", list.concat()));
    let apps = |n: usize| {
        let list: Vec<String> = (0..n)
            .map(|i| format!("{{clientId: c{i}, audience: a, allowedDataActions: [Read]}}"))
            .collect();
        with_auth(&format!("  smartIdentityProviders:\n    - authority: \"https://idp\"\n      applications: [{}]\n", list.join(", ")))
    };
    let unique = providers(&[
        provider("https://idp.example.org/r", "a"),
        provider("https://IDP.example.org/r/", "b"),
    ]);
    let clients = providers(&[
        provider("https://one.example.org", "same"),
        provider("https://two.example.org", "same"),
    ]);
    let three = format!(
        "compatibility: azure\n{}",
        providers(&[
            provider("https://a", "a"),
            provider("https://b", "b"),
            provider("https://c", "c")
        ])
    );
    let cases: Vec<OwnedCase> = vec![
        ("authority empty", providers(&[provider("", "a")]), vec![(format!("{SP}[0].authority"), AUTHORITY_INVALID)]),
        ("authority relative", providers(&[provider("idp.example.org", "a")]), vec![(format!("{SP}[0].authority"), AUTHORITY_INVALID)]),
        ("authority missing", with_auth("  smartIdentityProviders:\n    - applications: [{clientId: a, audience: a, allowedDataActions: [Read]}]\n"), vec![(format!("{SP}[0].authority"), AUTHORITY_INVALID)]),
        ("authority http", providers(&[provider("http://idp", "a")]), vec![(format!("{SP}[0].authority"), "One or more SMART identity provider authority values are null, empty, or invalid. An http:// authority is accepted only with allowHttpAuthorities: true (local testing).")]),
        ("authorities unique", unique, vec![(format!("{SP}[1].authority"), AUTHORITIES_UNIQUE)]),
        ("client ids unique across providers", clients, vec![(format!("{SP}[1].applications[0].clientId"), CLIENT_IDS_UNIQUE)]),
        ("applications missing", with_auth("  smartIdentityProviders:\n    - authority: \"https://idp\"\n"), vec![(format!("{SP}[0].applications"), APPLICATIONS_NULL)]),
        ("applications empty", with_auth("  smartIdentityProviders:\n    - authority: \"https://idp\"\n      applications: []\n"), vec![(format!("{SP}[0].applications"), APPLICATIONS_NULL)]),
        ("application null", with_auth("  smartIdentityProviders:\n    - authority: \"https://idp\"\n      applications: [null]\n"), vec![(APP0.to_owned(), APPLICATIONS_NULL)]),
        ("26 applications", apps(26), vec![(format!("{SP}[0].applications"), MAX_APPLICATIONS)]),
        ("azure: 3 providers", three, vec![(SP.to_owned(), MAX_PROVIDERS)]),
        ("client id empty", with_app("{clientId: \"\", audience: a, allowedDataActions: [Read]}"), vec![(format!("{APP0}.clientId"), CLIENT_ID_INVALID)]),
        ("client id number", with_app("{clientId: 5, audience: a, allowedDataActions: [Read]}"), vec![(format!("{APP0}.clientId"), "One or more SMART application client id values are null, empty, or invalid. Expected a string, found a number (5).")]),
        ("audience missing", with_app("{clientId: c, allowedDataActions: [Read]}"), vec![(format!("{APP0}.audience"), AUDIENCE_INVALID)]),
        ("audience null", with_app("{clientId: c, audience: null, allowedDataActions: [Read]}"), vec![(format!("{APP0}.audience"), AUDIENCE_INVALID)]),
        ("actions empty", with_app("{clientId: c, audience: a, allowedDataActions: []}"), vec![(format!("{APP0}.allowedDataActions"), ACTIONS_EMPTY)]),
        ("actions missing", with_app("{clientId: c, audience: a}"), vec![(format!("{APP0}.allowedDataActions"), ACTIONS_EMPTY)]),
        ("actions duplicate", with_app("{clientId: c, audience: a, allowedDataActions: [Read, read]}"), vec![(format!("{APP0}.allowedDataActions[1]"), ACTIONS_DUPLICATE)]),
        ("actions invalid", with_app("{clientId: c, audience: a, allowedDataActions: [Read, Reed]}"), vec![(format!("{APP0}.allowedDataActions[1]"), "One or more SMART application allowedDataActions values are invalid. 'Reed' is not one of: Read, Write, ...")]),
        ("smart is not an application action", with_app("{clientId: c, audience: a, allowedDataActions: [Smart]}"), vec![(format!("{APP0}.allowedDataActions[0]"), "One or more SMART application allowedDataActions values are invalid. ...")]),
        ("azure: only Read", format!("compatibility: azure\n{}", with_app("{clientId: c, audience: a, allowedDataActions: [Read, Write, \"*\"]}")), vec![
            (format!("{APP0}.allowedDataActions[1]"), "One or more SMART application allowedDataActions values are invalid. compatibility: azure allows only Read."),
            (format!("{APP0}.allowedDataActions[2]"), "One or more SMART application allowedDataActions values are invalid. compatibility: azure allows only Read."),
        ]),
        ("unknown application key", with_app("{clientID: c, audience: a, allowedDataActions: [Read]}"), vec![
            (format!("{APP0}.clientID"), "unknown key 'clientID'; expected one of: clientId, audience, allowedDataActions"),
            (format!("{APP0}.clientId"), CLIENT_ID_INVALID),
        ]),
        ("expression in actions", with_app("{clientId: c, audience: a, allowedDataActions: \"[variables('actions')]\"}"), vec![(format!("{APP0}.allowedDataActions"), "'[variables('actions')]' is an ARM template expression; ...")]),
        ("provider is also the primary authority", with_auth(&format!("  authority: \"https://idp\"\n  audience: a\n  smartIdentityProviders:\n{}", provider("https://idp/", "c"))), vec![(format!("{SP}[0].authority"), "is also the primary authority; a token's issuer must select exactly one provider")]),
    ];
    for (name, text, expected) in &cases {
        let expected: Vec<(&str, &str)> = expected.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        assert_errors(name, text, &expected);
    }
}

#[test]
fn arm_wrapper_errors() {
    let cases: &[Case<'_>] = &[
        (
            "resource without the object",
            "upstream: \"http://h\"\nauthenticationConfiguration:\n  type: x\n  properties: {kind: fhir}\n",
            &[("authenticationConfiguration.properties.authenticationConfiguration", "is required (the ARM resource must hold properties.authenticationConfiguration)")],
        ),
        (
            "key beside properties",
            "upstream: \"http://h\"\nauthenticationConfiguration:\n  authority: \"https://x\"\n  properties:\n    authenticationConfiguration: {authority: \"https://l\", audience: a}\n",
            &[("authenticationConfiguration.authority", "'authority' belongs inside properties.authenticationConfiguration")],
        ),
        (
            "template without the object",
            "upstream: \"http://h\"\nauthenticationConfiguration:\n  resources: [{type: x, properties: {}}]\n",
            &[("authenticationConfiguration.resources", "no resource holds properties.authenticationConfiguration")],
        ),
        (
            "template with two",
            "upstream: \"http://h\"\nauthenticationConfiguration:\n  resources:\n    - properties: {authenticationConfiguration: {authority: \"https://l\", audience: a}}\n    - properties: {authenticationConfiguration: {authority: \"https://m\", audience: a}}\n",
            &[("authenticationConfiguration.resources", "exactly one resource may hold properties.authenticationConfiguration; found authenticationConfiguration.resources[0].properties.authenticationConfiguration, authenticationConfiguration.resources[1].properties.authenticationConfiguration")],
        ),
        (
            "errors inside a resource carry the full path",
            "upstream: \"http://h\"\nauthenticationConfiguration:\n  properties:\n    authenticationConfiguration: {authority: \"https://l\", audience: \"\"}\n",
            &[("authenticationConfiguration.properties.authenticationConfiguration.audience", "must not be empty")],
        ),
        (
            "the object itself as an expression",
            "upstream: \"http://h\"\nauthenticationConfiguration:\n  properties:\n    authenticationConfiguration: \"[variables('auth')]\"\n",
            &[("authenticationConfiguration.properties.authenticationConfiguration", "'[variables('auth')]' is an ARM template expression; ...")],
        ),
    ];
    for (name, text, expected) in cases {
        assert_errors(name, text, expected);
    }
}

/// Three mistakes in three places: three errors, each with its path.
#[test]
fn every_error_at_once() {
    let text = r#"
listen: "0.0.0.0:80800"
upstream: { url: "http://127.0.0.1:8081/fhir", connectTimeout: 0 }
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "https://idp.example.org"
      applications:
        - { clientID: "portal", clientId: "portal", audience: "a", allowedDataActions: ["Read"] }
"#;
    assert_errors(
        "three mistakes",
        text,
        &[
            (
                "listen",
                "'0.0.0.0:80800' is not a socket address (ip:port, e.g. 0.0.0.0:8080)",
            ),
            ("upstream.connectTimeout", "must be greater than zero"),
            (
                &format!("{APP0}.clientID"),
                "unknown key 'clientID'; expected one of: clientId, audience, allowedDataActions",
            ),
        ],
    );
    let displayed = Config::parse(text).unwrap_err().to_string();
    assert_eq!(displayed.lines().count(), 3, "{displayed}");
    assert!(displayed.starts_with("listen: '0.0.0.0:80800' is not a socket address"));
}

#[test]
fn worker_threads_default_to_one_per_core() {
    let parse = |extra: &str| Config::parse(&with_primary(extra)).expect("valid");
    assert_eq!(parse("").worker_threads, None);
    assert_eq!(parse("workerThreads: 0").worker_threads, None);
    assert_eq!(
        parse("workerThreads: 4").worker_threads.map(|n| n.get()),
        Some(4)
    );
}

/// The token cache tells configurations apart by the text they were parsed from.
#[test]
fn the_fingerprint_is_the_digest_of_the_text() {
    let text = with_primary("");
    let one = Config::parse(&text).expect("valid");
    let again = Config::parse(&text).expect("valid");
    let other = Config::parse(&with_primary("clockSkew: 60")).expect("valid");
    assert_eq!(one.fingerprint, again.fingerprint);
    assert_ne!(one.fingerprint, other.fingerprint);
    assert_ne!(one.fingerprint, [0; 32]);
}

/// `load` reads the file once and fingerprints the bytes it parsed; a file that is not UTF-8 is
/// one document-level error, as an unreadable one is.
#[test]
fn load_fingerprints_the_bytes_it_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fhirguard.yaml");
    let text = with_primary("clockSkew: 60");
    std::fs::write(&path, &text).expect("write");
    let file = ConfigFile::read(&path).expect("readable");
    assert_eq!(file.text(), text);
    let loaded = Config::load(&path).expect("valid");
    assert_eq!(loaded.fingerprint, file.digest());
    assert_eq!(
        loaded.fingerprint,
        Config::parse(&text).expect("valid").fingerprint
    );
    assert_eq!(
        Config::from_file(&file).expect("valid").fingerprint,
        file.digest()
    );

    std::fs::write(&path, b"listen: \xff\n").expect("write");
    let errors = Config::load(&path).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "");
    assert!(errors.0[0].message.starts_with("cannot read "), "{errors}");
}

#[test]
fn body_limits_have_safe_defaults_and_follow_the_file() {
    let defaults = Config::parse(&with_primary("")).expect("valid").limits;
    assert_eq!(
        defaults.body_read_timeout,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(defaults.max_buffered_bytes, 128 * 1024 * 1024);
    let set = Config::parse(&with_primary(
        "limits: {bodyReadTimeout: 1500ms, maxBufferedBytes: 2000, maxBundleBytes: 2000}",
    ))
    .expect("valid")
    .limits;
    assert_eq!(
        set.body_read_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert_eq!((set.max_buffered_bytes, set.max_bundle_bytes), (2000, 2000));
}

/// `senderConstraints` (issue 14): each key read; absent, nothing is required.
#[test]
fn sender_constraints_are_read() {
    let none = Config::parse(&with_primary("")).unwrap().sender;
    assert!(!none.any_required());
    assert_eq!(none.replay_cache_entries, 100_000);
    let text = with_primary(
        "tls: {certFile: c.pem, keyFile: k.pem}\nsenderConstraints:\n  dpop: {requiredFor: [a], replayCacheEntries: 10}\n  clientCertificates: {request: true, requiredFor: [b], header: X-Forwarded-Client-Cert, trustedProxies: [\"10.0.0.0/8\", \"::1\"]}",
    );
    let sender = Config::parse(&text).unwrap().sender;
    assert!(sender.requires_dpop(Some("a")) && !sender.requires_dpop(Some("b")));
    assert!(sender.requires_certificate(Some("b")) && !sender.requires_certificate(None));
    assert_eq!(sender.replay_cache_entries, 10);
    assert!(sender.request_client_certificates);
    let forwarded = sender.forwarded.unwrap();
    assert_eq!(
        forwarded.header,
        super::CertificateHeader::XForwardedClientCert
    );
    assert!(forwarded.trusts("10.1.2.3".parse().unwrap()));
    assert!(forwarded.trusts("::1".parse().unwrap()));
    assert!(!forwarded.trusts("192.0.2.1".parse().unwrap()));
    assert_eq!(sender.dpop_nonce, None);
}

/// `senderConstraints.dpop.nonce` (RFC 9449 §8): on only when required; the secret file is
/// read at load and must hold at least 32 bytes, whether or not nonces are on yet.
#[test]
fn dpop_nonce_settings_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("nonce-secret");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    let short = dir.path().join("short-secret");
    std::fs::write(&short, b"31 bytes, one short of the 32..").unwrap();
    let nonce = |settings: &str| {
        Config::parse(&with_primary(&format!(
            "senderConstraints: {{dpop: {{nonce: {settings}}}}}"
        )))
        .map(|config| config.sender.dpop_nonce)
    };
    let on = nonce("{required: true}").unwrap().unwrap();
    assert_eq!(on.lifetime, std::time::Duration::from_secs(300));
    assert_eq!(on.secret, None);
    let shared = nonce(&format!(
        "{{required: true, lifetime: 2m, secretFile: \"{}\"}}",
        secret.display()
    ))
    .unwrap()
    .unwrap();
    assert_eq!(shared.lifetime, std::time::Duration::from_secs(120));
    assert_eq!(
        shared.secret.as_ref().map(|s| s.bytes()),
        Some(&[7u8; 32][..])
    );
    assert_eq!(
        format!("{:?}", shared.secret.unwrap()),
        "NonceSecret(32 bytes)"
    );
    assert_eq!(nonce("{required: false, lifetime: 1d}").unwrap(), None);
    let errors = nonce(&format!("{{secretFile: \"{}\"}}", short.display())).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors:?}");
    assert_eq!(errors.0[0].path, "senderConstraints.dpop.nonce.secretFile");
    assert!(
        errors.0[0].message.ends_with(
            "holds 31 bytes; a nonce secret needs at least 32 (e.g. `head -c 32 /dev/urandom`)"
        ),
        "{}",
        errors.0[0].message
    );
}
