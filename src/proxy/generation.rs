//! A configuration generation: one validated [`Config`], the upstream client, the DPoP nonces
//! and the `client_id` metric labels built from it, and its number, swapped in whole (STYLE habit 3, SPEC §5). This module is the one way to build
//! one: start-up and every reload go through [`Generation::from_config`], and a reload gets
//! there through [`Generation::build`], which parses the very buffer whose digest it was judged by.

use crate::auth::dpop::nonce::Nonces;
use crate::auth::Principal;
use crate::config::{Config, ConfigErrors, ConfigFile, ProviderKind, ReportOnly};
use crate::cors::Policy;
use crate::limits::RateLimiter;
use crate::metrics::{ClientLabel, ClientLabels};
use crate::upstream::{Upstream, UpstreamError};

/// A configuration generation: the validated config and what was built from it.
#[derive(Debug)]
pub struct Generation {
    /// 1 at start-up, one more per applied reload (`fhirguard_config_generation`).
    pub number: u64,
    /// The validated configuration every request of this generation is judged by.
    pub config: Config,
    /// The pooled client towards the FHIR server (`upstream`), built from this config.
    pub upstream: Upstream,
    /// The server nonces DPoP proofs must carry (`senderConstraints.dpop.nonce`, RFC 9449 §8),
    /// when required.
    pub nonces: Option<Nonces>,
    /// The CORS rules with their header values made (`cors`), when configured.
    pub cors: Option<Policy>,
    /// The `client_id` values of `fhirguard_requests_total` under this config: its applications'
    /// client ids, `other` and `anonymous` (with their series cache).
    pub clients: ClientLabels,
    /// This generation's `rateLimits` with the replica's allowances; `None` without limits.
    pub limits: Option<RateLimiter>,
}

/// Why a generation could not be built; the one serving stays.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// Every mistake in the file.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The file is valid but its upstream client cannot be built (an unreadable CA file, …).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl GenerationError {
    /// One line per mistake (`path: message`), as a failed reload logs and reports them.
    pub fn messages(&self) -> Vec<String> {
        match self {
            GenerationError::Config(errors) => errors.0.iter().map(ToString::to_string).collect(),
            GenerationError::Upstream(error) => vec![error.to_string()],
        }
    }
}

impl Generation {
    /// Generation `number` from a file read once: validated with the same function as start-up
    /// and `fhirguard check` ([`Config::from_file`]), then built. Its [`Generation::digest`] is
    /// `file`'s, so a caller that judged the file by that digest applies exactly what it judged.
    pub fn build(number: u64, file: &ConfigFile) -> Result<Generation, GenerationError> {
        let config = Config::from_file(file)?;
        Ok(Generation::from_config(number, config)?)
    }

    /// Generation `number` from a validated config (start-up receives one from
    /// [`Config::load`]): the upstream client, the nonces and the metric labels are built here
    /// and nowhere else.
    pub fn from_config(number: u64, config: Config) -> Result<Generation, UpstreamError> {
        let upstream = Upstream::new(&config.upstream)?;
        // The smart applications' ids, by provider, then the report-only ids (a primary-authority
        // client rolled out in report-only mode gets its own series too).
        let mut ids: Vec<Vec<&str>> = config
            .auth
            .smart_providers
            .iter()
            .map(|provider| {
                provider
                    .applications
                    .iter()
                    .map(|application| application.client_id.as_str())
                    .collect()
            })
            .collect();
        if let ReportOnly::Clients(listed) = &config.report_only {
            ids.push(listed.iter().map(String::as_str).collect());
        }
        let clients = ClientLabels::new(ids);
        let nonces = config.sender.dpop_nonce.as_ref().map(Nonces::of);
        let cors = config.cors.as_ref().map(Policy::new);
        let limits = RateLimiter::new(&config.rate_limits);
        Ok(Generation {
            number,
            config,
            upstream,
            nonces,
            cors,
            clients,
            limits,
        })
    }

    /// The `client_id` label of a request by `principal` (none: no verified token). A smart
    /// token's matched application gives it without a lookup; any other verified token is looked
    /// up by its client id (a primary-authority token may name a configured client too).
    pub fn client_label(&self, principal: Option<&Principal>) -> ClientLabel<'_> {
        let Some(principal) = principal else {
            return self.clients.anonymous();
        };
        let client_id = principal.client_id.as_deref();
        let matched = match (principal.provider, principal.application) {
            (ProviderKind::Smart { index }, Some(application)) => {
                self.clients.application(index, application)
            }
            _ => None,
        };
        // The index is of this generation's config (the token cache keys entries by config
        // fingerprint); the comparison keeps a stale index from naming another client.
        matched
            .filter(|label| Some(label.as_str()) == client_id)
            .unwrap_or_else(|| self.clients.client(client_id))
    }

    /// SHA-256 of the text the config was parsed from ([`Config::fingerprint`]): a reload of a
    /// file with this digest changes nothing.
    pub fn digest(&self) -> [u8; 32] {
        self.config.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\nauthenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  audience: \"https://fhir.example.org\"\n";

    /// The digest a reload compares is the digest of the buffer that was parsed: one read.
    #[test]
    fn the_digest_is_that_of_the_parsed_buffer() {
        let file = ConfigFile::from_text(format!("{TEXT}clockSkew: 7s\n"));
        let generation = Generation::build(3, &file).expect("valid");
        assert_eq!(generation.number, 3);
        assert_eq!(generation.digest(), file.digest());
        assert_eq!(
            generation.config.clock_skew,
            std::time::Duration::from_secs(7)
        );
        let expected: [u8; 32] =
            <sha2::Sha256 as sha2::Digest>::digest(file.text().as_bytes()).into();
        assert_eq!(generation.digest(), expected);
        // The same text parsed on its own path has the same fingerprint.
        let parsed = Config::parse(file.text()).expect("valid");
        assert_eq!(parsed.fingerprint, generation.digest());
    }

    #[test]
    fn every_config_error_is_reported() {
        let file = ConfigFile::from_text(format!("{TEXT}listen: nowhere\nclockSkew: soon\n"));
        let Err(error) = Generation::build(2, &file) else {
            panic!("an invalid file builds no generation");
        };
        let messages = error.messages();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("listen: "), "{messages:?}");
        assert!(messages[1].starts_with("clockSkew: "), "{messages:?}");
    }

    fn principal(provider: ProviderKind, client_id: &str, application: Option<usize>) -> Principal {
        Principal {
            application,
            ..Principal::for_tests(provider, client_id)
        }
    }

    /// Issue 13: the labels are the configured applications' client ids, `other` and
    /// `anonymous`, and each request's principal maps to one of them.
    #[test]
    fn a_principal_gets_its_client_label() {
        let smart = "  smartIdentityProviders:\n    - authority: \"https://smart.example.org\"\n      applications:\n        - { clientId: reader, audience: \"https://fhir.example.org\", allowedDataActions: [Read] }\n        - { clientId: writer, audience: \"https://fhir.example.org\", allowedDataActions: [Read, Write] }\n";
        let file = ConfigFile::from_text(format!("{TEXT}{smart}"));
        let generation = Generation::build(1, &file).expect("valid");
        assert_eq!(
            generation.clients.values().collect::<Vec<_>>(),
            ["anonymous", "other", "reader", "writer"]
        );
        let label = |principal: Option<&Principal>| generation.client_label(principal).as_str();
        let writer = principal(ProviderKind::Smart { index: 0 }, "writer", Some(1));
        assert_eq!(label(Some(&writer)), "writer");
        // An index that names another application than the token's client is not trusted.
        let stale = principal(ProviderKind::Smart { index: 0 }, "writer", Some(0));
        assert_eq!(label(Some(&stale)), "writer");
        let listed = principal(ProviderKind::Primary, "reader", None);
        assert_eq!(label(Some(&listed)), "reader");
        let unlisted = principal(ProviderKind::Primary, "backend-service", None);
        assert_eq!(label(Some(&unlisted)), "other");
        assert_eq!(label(None), "anonymous");
    }

    /// The nonces follow the configuration: built with each generation, absent unless
    /// required; without `secretFile`, every generation of the process shares one secret, so a
    /// reload does not void the nonces clients hold.
    #[test]
    fn nonces_come_and_go_with_the_generation() {
        let off = Generation::build(1, &ConfigFile::from_text(TEXT.to_owned())).expect("valid");
        assert!(off.nonces.is_none());
        let on = format!("{TEXT}senderConstraints: {{dpop: {{nonce: {{required: true}}}}}}\n");
        let first = Generation::build(2, &ConfigFile::from_text(on.clone())).expect("valid");
        let second = Generation::build(3, &ConfigFile::from_text(on)).expect("valid");
        let now = crate::auth::unix_now();
        let nonce = first.nonces.as_ref().expect("required").current(now);
        let reloaded = second.nonces.as_ref().expect("required");
        assert_eq!(reloaded.check(nonce.to_str().ok(), now), Ok(()));
    }

    #[test]
    fn an_unbuildable_upstream_is_an_error() {
        let file = ConfigFile::from_text(TEXT.replace(
            "\"http://127.0.0.1:8081/fhir\"",
            "{url: \"https://127.0.0.1:8081/fhir\", caFile: /nonexistent/ca.pem}",
        ));
        let error = Generation::build(2, &file).map(|_| ()).unwrap_err();
        assert!(matches!(error, GenerationError::Upstream(_)), "{error}");
        assert_eq!(error.messages().len(), 1);
    }
}
