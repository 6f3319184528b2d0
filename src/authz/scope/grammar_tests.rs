//! Table and property tests for the scope grammar (reference §4.2, §4.4).

use proptest::prelude::*;

use super::{parse_scopes, ScopeError};

fn parse(input: &str) -> Result<String, ScopeError> {
    parse_scopes(&[input.to_owned()]).map(|set| set.to_string())
}

/// Accepted inputs and their canonical form ("" = no clinical scope).
const ACCEPTED: &[(&str, &str)] = &[
    ("patient/Observation.read", "patient/Observation.read"),
    ("user/Patient.write", "user/Patient.write"),
    ("system/*.*", "system/*.*"),
    ("system/*.all", "system/*.*"),
    ("user/all.read", "user/*.read"),
    // Entra / B2C forms: `.` and `$` separators, percent-encoded `/` (reference §4.1, §4.2).
    ("patient.Observation.read", "patient/Observation.read"),
    ("patient.all.read", "patient/*.read"),
    ("system$*.read", "system/*.read"),
    ("patient%2fObservation.read", "patient/Observation.read"),
    ("patient%2FObservation.rs", "patient/Observation.rs"),
    // v2 letters, in `cruds` order (SMART 2.x §3.2).
    ("patient/Observation.rs", "patient/Observation.rs"),
    ("patient/Observation.cruds", "patient/Observation.cruds"),
    ("patient/Observation.cud", "patient/Observation.cud"),
    (
        "patient/Observation.r patient/Condition.s",
        "patient/Observation.r patient/Condition.s",
    ),
    // Non-clinical tokens are ignored (reference §4.2).
    (
        "openid fhirUser launch/patient launch offline_access online_access profile",
        "",
    ),
    (
        "api://fhir-app/patient.Observation.read user_impersonation",
        "",
    ),
    ("Patient/Observation.rs", ""),
    ("patient launch/patient patientObservation.read", ""),
    (
        "openid patient/Observation.rs launch/patient fhirUser",
        "patient/Observation.rs",
    ),
    (
        "patient/Observation.rs\n\tpatient/Condition.rs",
        "patient/Observation.rs patient/Condition.rs",
    ),
    // Constraints (reference §4.4 rule 6).
    (
        "patient/Observation.rs?category=laboratory",
        "patient/Observation.rs?category=laboratory",
    ),
    (
        "patient/Observation.rs?category=laboratory&status=final",
        "patient/Observation.rs?category=laboratory&status=final",
    ),
    (
        "patient/Observation.rs?category=laboratory%26status=final",
        "patient/Observation.rs?category=laboratory&status=final",
    ),
    (
        "patient/Observation.rs?code=http://loinc.org|1234-5",
        "patient/Observation.rs?code=http://loinc.org|1234-5",
    ),
    (
        "user/Observation.rs?subject:Patient=123",
        "user/Observation.rs?subject:Patient=123",
    ),
    (
        "user/Observation.read?_security=N",
        "user/Observation.read?_security=N",
    ),
    (
        "system/Patient.s?identifier=a?b",
        "system/Patient.s?identifier=a?b",
    ),
];

#[test]
fn accepted_scopes_parse_to_their_canonical_form() {
    for (input, canonical) in ACCEPTED {
        assert_eq!(parse(input).as_deref(), Ok(*canonical), "{input}");
        assert_eq!(parse(canonical).as_deref(), Ok(*canonical), "{canonical}");
    }
}

#[test]
fn claim_values_are_joined() {
    let claims = [
        "patient/Observation.rs".to_owned(),
        "openid patient/Condition.r".to_owned(),
    ];
    let set = parse_scopes(&claims).expect("valid");
    assert_eq!(
        set.to_string(),
        "patient/Observation.rs patient/Condition.r"
    );
    assert_eq!(parse_scopes(&[]), Ok(Default::default()));
}

#[test]
fn rejected_scopes_name_the_rule() {
    use ScopeError::*;
    let malformed = |s: &str| Malformed(s.to_owned());
    let invalid = |s: &str| InvalidConstraint(s.to_owned());
    let table: Vec<(&str, ScopeError)> = vec![
        // Rule 1: a clinical-looking token must match as a whole.
        (
            "patient/Observation.read-only",
            malformed("patient/Observation.read-only"),
        ),
        (
            "patient/Observation.rsX",
            malformed("patient/Observation.rsX"),
        ),
        (
            "patient/Observation.readx",
            malformed("patient/Observation.readx"),
        ),
        (
            "patient/Observation.xyz",
            malformed("patient/Observation.xyz"),
        ),
        ("patient/Observation", malformed("patient/Observation")),
        ("patient/Observation.", malformed("patient/Observation.")),
        ("patient/.read", malformed("patient/.read")),
        (
            "patient/Obs-ervation.read",
            malformed("patient/Obs-ervation.read"),
        ),
        ("user.read", malformed("user.read")),
        ("system/", malformed("system/")),
        // Rule 2, 3: one context, one version.
        (
            "patient/Observation.rs system/Observation.rs",
            MixedContexts,
        ),
        (
            "user/Observation.read patient/Observation.read",
            MixedContexts,
        ),
        (
            "patient/Observation.read patient/Condition.rs",
            MixedVersions,
        ),
        ("patient/Observation.rs patient/Condition.*", MixedVersions),
        // Rule 4: duplicate letters.
        (
            "patient/Observation.rrs",
            DuplicateAccessLetter("patient/Observation.rrs".into(), 'r'),
        ),
        (
            "patient/Observation.crudsc",
            DuplicateAccessLetter("patient/Observation.crudsc".into(), 'c'),
        ),
        (
            "patient/Observation.rsr",
            DuplicateAccessLetter("patient/Observation.rsr".into(), 'r'),
        ),
        // SMART 2.x §3.2: `c`, `r`, `u`, `d`, `s` in that order.
        (
            "patient/Observation.sr",
            AccessLetterOrder("patient/Observation.sr".into(), 'r'),
        ),
        (
            "patient/Observation.sdurc",
            AccessLetterOrder("patient/Observation.sdurc".into(), 'd'),
        ),
        (
            "patient/Observation.rc",
            AccessLetterOrder("patient/Observation.rc".into(), 'c'),
        ),
        (
            "user/Patient.crusd",
            AccessLetterOrder("user/Patient.crusd".into(), 'd'),
        ),
        (
            "system/*.dc?category=x",
            AccessLetterOrder("system/*.dc?category=x".into(), 'c'),
        ),
        // Rule 5: unknown (or wrongly cased) resource type.
        (
            "patient/observation.read",
            UnknownResourceType("patient/observation.read".into(), "observation".into()),
        ),
        (
            "patient/Foo.rs",
            UnknownResourceType("patient/Foo.rs".into(), "Foo".into()),
        ),
        (
            "user/ALL.read",
            UnknownResourceType("user/ALL.read".into(), "ALL".into()),
        ),
        // Rule 6: constraints.
        (
            "patient/Observation.rs?active",
            invalid("patient/Observation.rs?active"),
        ),
        (
            "patient/Observation.rs?",
            invalid("patient/Observation.rs?"),
        ),
        (
            "patient/Observation.rs?code=",
            invalid("patient/Observation.rs?code="),
        ),
        (
            "patient/Observation.rs?=x",
            invalid("patient/Observation.rs?=x"),
        ),
        (
            "patient/Observation.rs?code=x&",
            invalid("patient/Observation.rs?code=x&"),
        ),
        (
            "patient/Observation.rs?code=a=b",
            invalid("patient/Observation.rs?code=a=b"),
        ),
        (
            "patient/Observation.rs?code=a%3Db",
            invalid("patient/Observation.rs?code=a=b"),
        ),
        (
            "patient/Observation.rs?c$de=x",
            invalid("patient/Observation.rs?c$de=x"),
        ),
        (
            "patient/Observation.rs?subject.name=x",
            ChainedConstraint("patient/Observation.rs?subject.name=x".into()),
        ),
        (
            "patient/Observation.rs?subject:Patient.name=x",
            ChainedConstraint("patient/Observation.rs?subject:Patient.name=x".into()),
        ),
        (
            "patient/Patient.rs?_has:Observation:patient:code=x",
            ChainedConstraint("patient/Patient.rs?_has:Observation:patient:code=x".into()),
        ),
        (
            "patient/Observation.rs?_include=Observation:subject",
            IncludeConstraint("patient/Observation.rs?_include=Observation:subject".into()),
        ),
        (
            "patient/Observation.rs?_include:iterate=Observation:subject",
            IncludeConstraint("patient/Observation.rs?_include:iterate=Observation:subject".into()),
        ),
        (
            "patient/Patient.rs?_revinclude=Provenance:target",
            IncludeConstraint("patient/Patient.rs?_revinclude=Provenance:target".into()),
        ),
        // Rule 7: undecodable.
        ("patient/Observation.rs?code=%FF", Undecodable),
    ];
    for (input, expected) in table {
        assert_eq!(parse(input), Err(expected), "{input}");
    }
    for modifier in [
        "not",
        "exact",
        "missing",
        "in",
        "text",
        "iterate",
        "recurse",
        "above",
        "below",
        "contains",
        "identifier",
        "patient",
    ] {
        let input = format!("patient/Observation.rs?code:{modifier}=x");
        assert_eq!(
            parse(&input),
            Err(ModifierConstraint(input.clone())),
            "{input}"
        );
    }
}

/// Issue 11 class 2: percent-decoding must not create, split or hide scopes. Every encoded
/// character that would change how a scope splits is refused; those that change how it parses
/// (`?`, `&`, `=`) only narrow it or make it invalid.
#[test]
fn percent_decoding_never_creates_scopes() {
    use ScopeError::{DecodedSeparator, DoubleEncoded, InvalidConstraint};
    let separator = |s: &str| DecodedSeparator(s.to_owned());
    let table: Vec<(&str, Result<&str, ScopeError>)> = vec![
        // Whitespace and control characters, encoded: one issued scope stays one scope → 400.
        (
            "user/Patient.read%20user/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        (
            "user/Patient.read%0Auser/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        (
            "user/Patient.read%09user/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        (
            "user/Patient.read%0D%0Auser/Observation.write",
            Err(separator("user/Patient.read␠␠user/Observation.write")),
        ),
        ("user/Patient.read%00", Err(separator("user/Patient.read␠"))),
        (
            "user/Patient.read%C2%A0user/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        (
            "user/Patient.read%E2%80%A8user/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        ("user/Patient.read%7F", Err(separator("user/Patient.read␠"))),
        (
            "user/Patient.read%E2%80%8Buser/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        (
            "\u{FEFF}user/Observation.write",
            Err(separator("␠user/Observation.write")),
        ),
        // ... whatever the token looks like: a non-clinical token may not hide one either.
        (
            "openid%20user/Observation.write",
            Err(separator("openid␠user/Observation.write")),
        ),
        // A raw control character inside a claim value is no separator either.
        (
            "user/Patient.read\u{0}user/Observation.write",
            Err(separator("user/Patient.read␠user/Observation.write")),
        ),
        // Double encoding: decoded once, a `%` is left → 400.
        (
            "user/Patient.read%2520user/Observation.write",
            Err(DoubleEncoded(
                "user/Patient.read%20user/Observation.write".to_owned(),
            )),
        ),
        (
            "patient/Observation.rs?code=a%2526status=final",
            Err(DoubleEncoded(
                "patient/Observation.rs?code=a%26status=final".to_owned(),
            )),
        ),
        (
            "patient%252FObservation.read",
            Err(DoubleEncoded("patient%2FObservation.read".to_owned())),
        ),
        // `?`, `&`, `=` decoded are parsed as such (as the reference server does): a constraint
        // added, a constraint split in two (ANDed), or an invalid constraint. Never wider.
        (
            "patient/Observation.rs%3Fcategory=laboratory",
            Ok("patient/Observation.rs?category=laboratory"),
        ),
        (
            "patient/Observation.rs?category=laboratory%26status=final",
            Ok("patient/Observation.rs?category=laboratory&status=final"),
        ),
        (
            "patient/Observation.rs?category%3Dlaboratory",
            Ok("patient/Observation.rs?category=laboratory"),
        ),
        (
            "patient/Observation.rs?category=a%3Db",
            Err(InvalidConstraint(
                "patient/Observation.rs?category=a=b".to_owned(),
            )),
        ),
        // The Entra workaround still works, and literal whitespace still separates.
        (
            "patient%2FObservation.rs patient%2fCondition.r",
            Ok("patient/Observation.rs patient/Condition.r"),
        ),
    ];
    for (input, expected) in table {
        assert_eq!(parse(input), expected.map(str::to_owned), "{input:?}");
    }
    // The same scopes, split across a JSON array, are judged alike.
    assert!(matches!(
        parse_scopes(&[
            "openid".to_owned(),
            "user/Patient.read%0Auser/Observation.write".to_owned()
        ]),
        Err(DecodedSeparator(_))
    ));
}

#[test]
fn the_first_bad_token_wins() {
    assert_eq!(
        parse("patient/Observation.rsX system/Foo.rs"),
        Err(ScopeError::Malformed("patient/Observation.rsX".to_owned()))
    );
}

#[test]
fn messages_follow_the_reference_server() {
    assert_eq!(
        ScopeError::MixedContexts.to_string(),
        "SMART clinical scopes must use a single context. Patient, user, and system scopes \
         cannot be mixed."
    );
    assert_eq!(
        parse("patient/observation.read").unwrap_err().to_string(),
        "Invalid SMART on FHIR clinical scope 'patient/observation.read'. The resource type \
         'observation' is not a supported FHIR resource type."
    );
}

/// A clinical-looking token from the grammar's pieces and near misses, with the given context
/// and access candidates.
fn token(
    contexts: Vec<&'static str>,
    accesses: Vec<&'static str>,
) -> impl Strategy<Value = String> {
    let separator = prop::sample::select(vec!["/", "/", ".", "$", "%2f", "%2F", "_"]);
    let resource = prop::sample::select(vec![
        "*",
        "all",
        "Observation",
        "Patient",
        "Condition",
        "observation",
        "Foo",
        "",
    ]);
    let constraint = prop::sample::select(vec![
        "category=laboratory",
        "code=http://loinc.org|1234-5",
        "subject:Patient=1",
        "status=final",
        "value=a%2525b",
        "value=%25",
        "k=a%26j=b",
        "k=a%20j",
        "k=a%0Aj",
        "k%3Dv",
        "code:not=x",
        "subject.name=x",
        "_include=Observation:subject",
        "broken",
        "x=y=z",
    ]);
    let constraints = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(constraint, 1..3),
    ];
    (
        prop::sample::select(contexts),
        separator,
        resource,
        prop::sample::select(accesses),
        constraints,
    )
        .prop_map(|(context, separator, resource, access, constraints)| {
            let mut token = format!("{context}{separator}{resource}.{access}");
            if !constraints.is_empty() {
                token.push('?');
                token.push_str(&constraints.join("&"));
            }
            token
        })
}

/// Claims whose clinical tokens mostly share a context and a SMART version, so that many parse
/// (and the round trip is exercised), mixed with near misses and non-clinical tokens.
fn claims() -> impl Strategy<Value = Vec<String>> {
    let consistent = (
        prop::sample::select(vec!["patient", "user", "system"]),
        prop::bool::ANY,
    )
        .prop_flat_map(|(context, v2)| {
            let accesses = if v2 {
                vec!["r", "rs", "sr", "cruds", "dc", "s", "rrs", "rsX"]
            } else {
                vec!["read", "write", "*", "all", "readx"]
            };
            let noise = prop::sample::select(vec![
                "openid",
                "fhirUser",
                "launch/patient",
                "api://a/patient.x.read",
                "Patient/Observation.rs",
                "user/Patient.read",
            ])
            .prop_map(str::to_owned);
            let tokens = prop_oneof![
                6 => token(vec![context], accesses),
                1 => noise,
            ];
            prop::collection::vec(prop::collection::vec(tokens, 1..4), 1..3)
                .prop_map(|claims| claims.into_iter().map(|t| t.join(" ")).collect::<Vec<_>>())
        });
    prop_oneof![
        4 => consistent,
        1 => prop::collection::vec("[a-zA-Z*/.$?&=:%0-9_ \t-]{0,40}", 0..3),
        1 => prop::collection::vec(any::<String>(), 0..3),
    ]
}

/// Claim values built from scopes with encoded characters spliced in: separators (`%20`,
/// `%09`, `%0A`, `%0D`, `%00`, `%C2%A0`), double encodings, and structural characters.
fn spliced_claims() -> impl Strategy<Value = Vec<String>> {
    let piece = prop::sample::select(vec![
        "user/Patient.read",
        "user/Observation.write",
        "user/Observation.rs",
        "user/*.cruds",
        "patient/Observation.read",
        "openid",
        "launch/patient",
        "user%2FCondition.r",
        "user/Observation.rs?category=laboratory",
        "%20",
        "%09",
        "%0A",
        "%0D",
        "%00",
        "%C2%A0",
        "%2520",
        "%250A",
        "%3F",
        "%26",
        "%3D",
        "%2F",
        "%2",
        "%",
        " ",
        "\t",
        "?",
        "&",
        "=",
        "code=x",
    ]);
    prop::collection::vec(
        prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat()),
        1..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// No scope string yields a grant wider than the scopes it names: each whitespace-separated
    /// token of the claims, as issued, yields at most one scope, and the claims' scopes are
    /// exactly those of their tokens read one by one. A parsed scope holds no whitespace,
    /// control character or `%`.
    #[test]
    fn no_scope_string_grants_more_than_its_tokens(claims in spliced_claims()) {
        let tokens: Vec<&str> = claims.iter().flat_map(|c| c.split_whitespace()).collect();
        if let Ok(set) = parse_scopes(&claims) {
            prop_assert!(set.scopes().len() <= tokens.len());
            let mut one_by_one = Vec::new();
            for token in &tokens {
                let alone = parse_scopes(&[(*token).to_owned()]).expect("part of a valid claim");
                prop_assert!(alone.scopes().len() <= 1, "{} became {}", token, alone);
                one_by_one.extend(alone.scopes().iter().cloned());
            }
            prop_assert_eq!(set.scopes(), one_by_one.as_slice());
            for scope in set.scopes() {
                let printed = scope.to_string();
                prop_assert!(
                    !printed.chars().any(|c| c.is_whitespace() || c.is_control() || c == '%'),
                    "{:?}", printed
                );
            }
        }
    }

    #[test]
    fn never_panics(claims in prop::collection::vec(any::<String>(), 0..4)) {
        let _ = parse_scopes(&claims);
    }

    #[test]
    fn parse_print_parse_is_stable(claims in claims()) {
        if let Ok(set) = parse_scopes(&claims) {
            // Invariants: one context, one SMART version.
            let scopes = set.scopes();
            prop_assert!(scopes.iter().all(|s| Some(s.context) == set.context()));
            prop_assert!(scopes.iter().all(|s| s.access.is_v2() == scopes[0].access.is_v2()));
            prop_assert_eq!(set.context().is_none(), set.is_empty());
            let printed = set.to_string();
            prop_assert_eq!(parse_scopes(std::slice::from_ref(&printed)), Ok(set.clone()), "{}", printed);
            for scope in scopes {
                let reparsed = parse_scopes(&[scope.to_string()]).expect("canonical scope");
                prop_assert_eq!(reparsed.scopes(), std::slice::from_ref(scope));
            }
        }
    }
}
