//! FHIR literal references (R4 references.html#literal) read the one way fhirguard trusts:
//! canonical or not at all. A canonical reference is `<Type>/<id>` or
//! `<Type>/<id>/_history/<vid>`, relative, or absolute behind an `http(s)://` base, with an R4
//! type spelled exactly and ids of the R4 `id` shape. Everything a FHIR server might still
//! normalise to some resource — `Patient/p2/`, `Patient//p2`, `./Patient/p2`, `patient/p2`,
//! `Patient/%70%32`, a query or a fragment — is not canonical, and a caller deciding membership
//! or a write must fail closed on it ([`Literal::parse`] answers `None`). [`mentions_type`] says
//! whether such a spelling could name a resource of a given type at all. Pure.

use super::resource_types::is_resource_type;

/// A canonical literal reference, borrowed from the text it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Literal<'a> {
    /// The base before `<Type>/<id>` of an absolute reference, without a trailing slash
    /// (`https://fhir.example.org/r4`); `None` for a relative reference.
    pub base: Option<&'a str>,
    /// The R4 resource type, spelled exactly (`Patient`).
    pub resource_type: &'a str,
    /// The logical id, of the R4 `id` shape.
    pub id: &'a str,
    /// The version id after `/_history/`, for a version-specific reference.
    pub version: Option<&'a str>,
}

impl<'a> Literal<'a> {
    /// Reads `text` as a canonical literal reference; `None` when it is anything else (a
    /// conditional or contained reference, a URN, or a spelling that is not canonical).
    pub fn parse(text: &'a str) -> Option<Literal<'a>> {
        let (base, path) = match text.find("://") {
            Some(at) => split_absolute(text, at)?,
            None => (None, text),
        };
        let mut segments = path.split('/');
        let resource_type = segments.next()?;
        let id = segments.next()?;
        let version = match (segments.next(), segments.next(), segments.next()) {
            (None, _, _) => None,
            (Some("_history"), Some(version), None) if is_id(version) => Some(version),
            _ => return None,
        };
        (is_resource_type(resource_type) && is_id(id)).then_some(Literal {
            base,
            resource_type,
            id,
            version,
        })
    }
}

/// `<scheme>://<authority>[/<path>]/<Type>/<id>[/_history/<vid>]`: the base is everything before
/// the type, which is the second segment from the end (the fourth with a version).
fn split_absolute(text: &str, scheme_end: usize) -> Option<(Option<&str>, &str)> {
    let scheme = &text[..scheme_end];
    if !(scheme == "http" || scheme == "https") {
        return None;
    }
    let authority_start = scheme_end + 3;
    let path_start = authority_start + text[authority_start..].find('/')?;
    let authority = &text[authority_start..path_start];
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_');
    if authority.is_empty() || !authority.bytes().all(plain) {
        return None;
    }
    let path = &text[path_start..];
    let keep = if path.contains("/_history/") { 4 } else { 2 };
    let mut cut = path.len();
    for _ in 0..keep {
        cut = path[..cut].rfind('/')?;
    }
    let clean = path[..cut].split('/').skip(1).all(|s| {
        !matches!(s, "" | "." | "..")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    });
    clean.then_some((Some(&text[..path_start + cut]), &path[cut + 1..]))
}

/// An R4 `id` (R4 datatypes.html#id): `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// True when `text` could name a resource of `resource_type` on some server's reading: the type
/// name appears in it, compared case-insensitively after percent-decoding (`PATIENT/p2`,
/// `%50atient/p2`, `./Patient/p2`, `Patient?identifier=x`). For spellings that are not
/// canonical, where fhirguard cannot tell what a server would make of them.
pub fn mentions_type(text: &str, resource_type: &str) -> bool {
    let decoded = percent_decode(text);
    let needle = resource_type.to_ascii_lowercase();
    decoded.to_ascii_lowercase().contains(&needle)
}

/// Percent-decodes repeatedly (a server may decode more than once) until nothing changes.
fn percent_decode(text: &str) -> String {
    let mut current = text.to_owned();
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn literal<'a>(
        base: Option<&'a str>,
        resource_type: &'a str,
        id: &'a str,
        version: Option<&'a str>,
    ) -> Option<Literal<'a>> {
        Some(Literal {
            base,
            resource_type,
            id,
            version,
        })
    }

    #[test]
    fn canonical_spellings() {
        let table = [
            ("Patient/p1", literal(None, "Patient", "p1", None)),
            (
                "Patient/p1/_history/2",
                literal(None, "Patient", "p1", Some("2")),
            ),
            (
                "https://fhir.example.org/r4/Patient/p1",
                literal(Some("https://fhir.example.org/r4"), "Patient", "p1", None),
            ),
            (
                "http://h:8080/Observation/o.1/_history/v-2",
                literal(Some("http://h:8080"), "Observation", "o.1", Some("v-2")),
            ),
        ];
        for (text, expected) in table {
            assert_eq!(Literal::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn spellings_a_server_may_normalise_are_not_canonical() {
        for text in [
            "Patient/p2/",
            "Patient//p2",
            "/Patient/p2",
            "./Patient/p2",
            "../Patient/p2",
            "patient/p2",
            "PATIENT/p2",
            "Patient/P%32",
            "%50atient/p2",
            "Patient/p2?x=1",
            "Patient/p2#a",
            "Patient?identifier=x|1",
            "Patient/p2/_history",
            "Patient/p2/_history/",
            "Patient/p2/_history/1/",
            "Patient/p2/_history/1/_history/2",
            "Patient/p2/x",
            "Patient/ p2",
            " Patient/p2",
            "Patient/p2 ",
            "Patient/p\u{200b}2",
            "foo/Patient/p2",
            "#p2",
            "urn:uuid:6e5c1b2a-0000-0000-0000-000000000000",
            "https://h/Patient/p2/",
            "https://h//Patient/p2",
            "https://h/./Patient/p2",
            "https://h/a/../Patient/p2",
            "https://h/Patient/p2?x",
            "https://user@h/Patient/p2",
            "ftp://h/Patient/p2",
            "HTTPS://h/Patient/p2",
            "https:///Patient/p2",
            "https://Patient/p2",
            "Patient",
            "",
            "Patient/",
            "Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(Literal::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn mentions() {
        for text in [
            "patient/p2",
            "%50atient/p2",
            "%2550atient/p2",
            "./PATIENT/p2",
            "Patient?identifier=x",
        ] {
            assert!(mentions_type(text, "Patient"), "{text}");
        }
        for text in ["Observation/o1", "#c1", "Group/g1"] {
            assert!(!mentions_type(text, "Patient"), "{text}");
        }
    }

    proptest! {
        /// A parsed reference prints back to the text it came from: nothing was normalised
        /// away, so what fhirguard compared is what the server reads.
        #[test]
        fn canonical_references_are_exact(text in "(https?://[a-z]{1,3}(/[a-z]{1,2}){0,2}/)?[A-Za-z]{1,3}(atient|bservation)?/[a-zA-Z0-9./%_-]{0,6}(/_history/[a-z0-9/.]{0,3})?") {
            if let Some(parsed) = Literal::parse(&text) {
                let mut printed = String::new();
                if let Some(base) = parsed.base {
                    printed.push_str(base);
                    printed.push('/');
                }
                printed.push_str(parsed.resource_type);
                printed.push('/');
                printed.push_str(parsed.id);
                if let Some(version) = parsed.version {
                    printed.push_str("/_history/");
                    printed.push_str(version);
                }
                prop_assert_eq!(&printed, &text);
                prop_assert!(is_resource_type(parsed.resource_type));
                prop_assert!(is_id(parsed.id));
            }
        }

        /// Whatever the spelling, a reference that parses to a Patient mentions Patient: the
        /// fail-closed check never misses what the exact one would find.
        #[test]
        fn a_patient_reference_is_always_mentioned(text in "\\PC{0,24}") {
            if Literal::parse(&text).is_some_and(|l| l.resource_type == "Patient") {
                prop_assert!(mentions_type(&text, "Patient"));
            }
        }
    }
}
