//! Near misses: a token claim one well-known step away from what the configuration expects —
//! the most common support question for Azure's FHIR service. An `iss` that is the discovered
//! issuer with or without a trailing `/`, or the other Entra ID token version of it; an `aud`
//! that is the configured audience with or without a trailing `/` or the `api://` prefix of an
//! Entra application ID URI.
//!
//! The comparison itself stays exact (reference §8 rules 5, 8): a near miss is still refused.
//! It only adds a hint to `explain` and to the audit log line, never to the client's answer,
//! which must not teach a caller what the configuration holds.

use std::fmt;

/// The configured value a refused claim nearly matched, and how it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NearMiss {
    /// `iss` differs from a discovered issuer only by a trailing `/`.
    IssuerTrailingSlash {
        /// The discovered issuer it nearly matched.
        issuer: String,
    },
    /// `iss` is the other Entra ID token version of a discovered issuer: v1.0 tokens carry
    /// `https://sts.windows.net/<tenant>/`, v2.0 tokens `https://login.microsoftonline.com/<tenant>/v2.0`
    /// (reference §2.2).
    IssuerEntraVersion {
        /// The discovered issuer of the other version.
        issuer: String,
    },
    /// `aud` differs from the configured audience only by a trailing `/`.
    AudienceTrailingSlash {
        /// The configured audience.
        audience: String,
    },
    /// `aud` differs from the configured audience only by the `api://` prefix.
    AudienceApiPrefix {
        /// The configured audience.
        audience: String,
    },
}

impl fmt::Display for NearMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NearMiss::IssuerTrailingSlash { issuer } => write!(
                f,
                "the issuer differs from the discovered issuer '{issuer}' only by a trailing \
                 '/'; issuers are compared exactly, so make the identity provider's issuer and \
                 its discovery document agree"
            ),
            NearMiss::IssuerEntraVersion { issuer } => write!(
                f,
                "the token is the other Entra ID token version of the discovered issuer \
                 '{issuer}' (v1.0: https://sts.windows.net/<tenant>/, v2.0: \
                 https://login.microsoftonline.com/<tenant>/v2.0); point the authority at the \
                 discovery document of the version the tokens carry (…/<tenant>/v2.0 for v2.0), \
                 or set the API application's accessTokenAcceptedVersion"
            ),
            NearMiss::AudienceTrailingSlash { audience } => write!(
                f,
                "the token's audience differs from the configured audience '{audience}' only by \
                 a trailing '/'; configure it as the tokens carry it, or set \
                 audienceIgnoreTrailingSlash: true (IdentityModel's tolerance)"
            ),
            NearMiss::AudienceApiPrefix { audience } => write!(
                f,
                "the token's audience differs from the configured audience '{audience}' only by \
                 the 'api://' prefix of an Entra application ID URI; configure the audience \
                 exactly as the tokens carry it"
            ),
        }
    }
}

/// The near miss between a refused `iss` and the discovered issuers, if any.
pub fn issuer<'a>(iss: &str, discovered: impl IntoIterator<Item = &'a str>) -> Option<NearMiss> {
    discovered.into_iter().find_map(|known| {
        if iss == known {
            None
        } else if iss.trim_end_matches('/') == known.trim_end_matches('/') {
            Some(NearMiss::IssuerTrailingSlash {
                issuer: known.to_owned(),
            })
        } else if entra_tenant(iss).is_some() && entra_tenant(iss) == entra_tenant(known) {
            Some(NearMiss::IssuerEntraVersion {
                issuer: known.to_owned(),
            })
        } else {
            None
        }
    })
}

/// The near miss between a token's audiences and the configured one, if any.
pub fn audience(audiences: &[String], expected: &str) -> Option<NearMiss> {
    let bare = |value: &str| -> String {
        value
            .strip_prefix("api://")
            .unwrap_or(value)
            .trim_end_matches('/')
            .to_owned()
    };
    audiences.iter().find_map(|aud| {
        if aud == expected || bare(aud) != bare(expected) {
            None
        } else if aud.starts_with("api://") != expected.starts_with("api://") {
            Some(NearMiss::AudienceApiPrefix {
                audience: expected.to_owned(),
            })
        } else {
            Some(NearMiss::AudienceTrailingSlash {
                audience: expected.to_owned(),
            })
        }
    })
}

/// The tenant of an Entra ID issuer in either token version's form (reference §2.2), `/v2.0`
/// with or without a trailing `/`.
fn entra_tenant(issuer: &str) -> Option<&str> {
    if let Some(rest) = issuer.strip_prefix("https://sts.windows.net/") {
        return Some(rest.trim_end_matches('/')).filter(|t| !t.is_empty() && !t.contains('/'));
    }
    let rest = issuer.strip_prefix("https://login.microsoftonline.com/")?;
    let rest = rest.trim_end_matches('/');
    let tenant = rest.strip_suffix("/v2.0").unwrap_or(rest);
    Some(tenant).filter(|t| !t.is_empty() && !t.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn issuer_near_misses() {
        let v1 = format!("https://sts.windows.net/{TENANT}/");
        let v2 = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        let bare = format!("https://login.microsoftonline.com/{TENANT}");
        let slash = |known: &str| NearMiss::IssuerTrailingSlash {
            issuer: known.to_owned(),
        };
        let version = |known: &str| NearMiss::IssuerEntraVersion {
            issuer: known.to_owned(),
        };
        let cases = [
            (
                "https://idp/realms/x/",
                "https://idp/realms/x",
                Some(slash("https://idp/realms/x")),
            ),
            (
                "https://idp/realms/x",
                "https://idp/realms/x/",
                Some(slash("https://idp/realms/x/")),
            ),
            (v2.as_str(), v1.as_str(), Some(version(&v1))),
            (v1.as_str(), v2.as_str(), Some(version(&v2))),
            (bare.as_str(), v2.as_str(), Some(version(&v2))),
            ("https://idp/realms/x", "https://idp/realms/y", None),
            ("https://sts.windows.net/other/", v1.as_str(), None),
            (
                "https://login.microsoftonline.com//v2.0",
                "https://sts.windows.net//",
                None,
            ),
            ("https://idp/realms/x", "https://idp/realms/x", None),
        ];
        for (iss, known, expected) in cases {
            assert_eq!(issuer(iss, [known]), expected, "{iss} vs {known}");
        }
        assert_eq!(
            issuer("https://a/", ["https://b", "https://a"]),
            Some(slash("https://a"))
        );
    }

    #[test]
    fn audience_near_misses() {
        let auds = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let slash = NearMiss::AudienceTrailingSlash {
            audience: "https://fhir.example.org".into(),
        };
        let cases = [
            (
                auds(&["https://fhir.example.org/"]),
                "https://fhir.example.org",
                Some(slash),
            ),
            (
                auds(&["api://fhir-app"]),
                "fhir-app",
                Some(NearMiss::AudienceApiPrefix {
                    audience: "fhir-app".into(),
                }),
            ),
            (
                auds(&["other", "fhir-app/"]),
                "api://fhir-app",
                Some(NearMiss::AudienceApiPrefix {
                    audience: "api://fhir-app".into(),
                }),
            ),
            (
                auds(&["https://other.example.org"]),
                "https://fhir.example.org",
                None,
            ),
            (
                auds(&["HTTPS://FHIR.EXAMPLE.ORG"]),
                "https://fhir.example.org",
                None,
            ),
            (auds(&[]), "https://fhir.example.org", None),
        ];
        for (list, expected, hint) in cases {
            assert_eq!(audience(&list, expected), hint, "{list:?} vs {expected}");
        }
    }

    #[test]
    fn hints_name_the_configured_value_and_the_fix() {
        let hint = NearMiss::AudienceTrailingSlash {
            audience: "https://fhir".into(),
        };
        assert!(hint.to_string().contains("audienceIgnoreTrailingSlash"));
        let hint = NearMiss::IssuerEntraVersion {
            issuer: "https://sts.windows.net/t/".into(),
        };
        assert!(hint.to_string().contains("v2.0"), "{hint}");
    }
}
