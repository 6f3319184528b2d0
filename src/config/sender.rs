//! The `senderConstraints` block (issue 14): DPoP (RFC 9449) and certificate-bound tokens
//! (RFC 8705) — which clients must use them, the DPoP replay cache's bound and server nonces
//! (RFC 9449 §8), whether the TLS
//! listener asks for client certificates, and which proxies may hand fhirguard a client
//! certificate in a header. It sits beside the verbatim ARM `authenticationConfiguration`, which
//! has no such settings. Validated in the same one-pass, every-error walk as the rest of the
//! file (SPEC §3).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::document::{choice, Errors, Node, Object};
use super::schema::{keys_of, RawDuration};

/// Default `dpop.replayCacheEntries`: at ~100 bytes an entry about 10 MiB, room for every proof
/// of 160 requests a second over a 600 s window (twice the default clock skew).
const DEFAULT_REPLAY_CACHE_ENTRIES: usize = 100_000;

/// Default `dpop.nonce.lifetime`: a nonce is accepted for one to two of these (RFC 9449 §8).
const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// `dpop.nonce.lifetime`'s range: short enough to bound a proof made in advance, long enough
/// that clients are not asked again every few requests.
const NONCE_LIFETIME_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(10)..=Duration::from_secs(86_400);
/// The shortest `dpop.nonce.secretFile`: an HMAC-SHA256 key of at least 256 bits.
const MIN_NONCE_SECRET_BYTES: usize = 32;

/// `senderConstraints`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSenderConstraints {
    /// DPoP-bound tokens (RFC 9449).
    pub dpop: Option<RawDpop>,
    /// Certificate-bound tokens (RFC 8705).
    pub client_certificates: Option<RawClientCertificates>,
}

/// `senderConstraints.dpop`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawDpop {
    /// Client ids whose tokens are accepted only DPoP-bound, with a proof; a Bearer token of
    /// theirs is refused (401). Default none.
    pub required_for: Option<Vec<String>>,
    /// The bound of the proof replay cache (entries); a proof's `jti` is remembered while its
    /// `iat` is within the clock skew. Default 100000.
    pub replay_cache_entries: Option<u64>,
    /// Server-provided nonces (RFC 9449 §8): off unless `required`.
    pub nonce: Option<RawDpopNonce>,
    /// Where a proof's `jti` is recorded: `local` (this replica's cache) or `shared` (the
    /// `sharedState` store, so a proof is accepted once across all replicas; SET NX with the
    /// proof's lifetime). Default `shared` when `sharedState` is configured, else `local`.
    pub replay_store: Option<RawReplayStore>,
}

/// `senderConstraints.dpop.replayStore`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RawReplayStore {
    /// `local`: this replica's in-memory replay cache.
    Local,
    /// `shared`: the `sharedState` store, so a proof is accepted once across all replicas.
    Shared,
}

/// `senderConstraints.dpop.replayStore` as written (`None`: the default, which depends on
/// `sharedState`; see [`super::Config::shared_replay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStore {
    /// `local`: each replica remembers the proofs it has seen.
    Local,
    /// `shared`: one record per proof `jti` in the `sharedState` store (SET NX).
    Shared,
}

/// `senderConstraints.dpop.nonce`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawDpopNonce {
    /// Every DPoP proof must carry a nonce fhirguard issued (`DPoP-Nonce`); one without, or with
    /// one no longer valid, gets 401 `use_dpop_nonce` and a fresh nonce. Default false.
    pub required: Option<bool>,
    /// How long a nonce's window lasts; a nonce is accepted in its window and the next.
    /// 10s to 1d. Default 5m.
    pub lifetime: Option<RawDuration>,
    /// A file of at least 32 bytes, the secret nonces are made with: the same file on every
    /// replica lets each accept the others' nonces. Absent: a random secret per process.
    pub secret_file: Option<String>,
}

/// `senderConstraints.clientCertificates`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawClientCertificates {
    /// The TLS listener asks clients for a certificate (optional: a client without one still
    /// connects). Any certificate is accepted at the handshake; a token's `cnf.x5t#S256`
    /// decides (RFC 8705 §2.2, self-signed certificates). Needs `tls`. Read at start-up.
    /// Default false.
    pub request: Option<bool>,
    /// Client ids whose tokens are accepted only certificate-bound. Default none.
    pub required_for: Option<Vec<String>>,
    /// The header a TLS-terminating proxy puts the client certificate in:
    /// `x-forwarded-client-cert` (Envoy's format) or `ssl-client-cert` (nginx ingress, the
    /// URL-encoded PEM). Read only from `trustedProxies`; removed from every other request.
    pub header: Option<RawCertificateHeader>,
    /// Peer addresses (`10.0.0.7`) or networks (`10.0.0.0/8`) whose certificate header is
    /// believed. Required with `header`.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `senderConstraints.clientCertificates.header`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawCertificateHeader {
    XForwardedClientCert,
    SslClientCert,
}

/// The validated `senderConstraints`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConstraints {
    /// `dpop.requiredFor`.
    pub dpop_required_for: Vec<String>,
    /// `dpop.replayCacheEntries`.
    pub replay_cache_entries: usize,
    /// `dpop.nonce`, when `required`.
    pub dpop_nonce: Option<NonceSettings>,
    /// `dpop.replayStore`, when written.
    pub replay_store: Option<ReplayStore>,
    /// `clientCertificates.request`.
    pub request_client_certificates: bool,
    /// `clientCertificates.requiredFor`.
    pub certificate_required_for: Vec<String>,
    /// `clientCertificates.header` and `trustedProxies`.
    pub forwarded: Option<ForwardedCertificate>,
}

impl Default for SenderConstraints {
    fn default() -> SenderConstraints {
        SenderConstraints {
            dpop_required_for: Vec::new(),
            replay_cache_entries: DEFAULT_REPLAY_CACHE_ENTRIES,
            dpop_nonce: None,
            replay_store: None,
            request_client_certificates: false,
            certificate_required_for: Vec::new(),
            forwarded: None,
        }
    }
}

impl SenderConstraints {
    /// Whether `client` must present DPoP-bound tokens.
    pub fn requires_dpop(&self, client: Option<&str>) -> bool {
        !self.dpop_required_for.is_empty()
            && client.is_some_and(|c| self.dpop_required_for.iter().any(|id| id == c))
    }

    /// Whether `client` must present certificate-bound tokens.
    pub fn requires_certificate(&self, client: Option<&str>) -> bool {
        !self.certificate_required_for.is_empty()
            && client.is_some_and(|c| self.certificate_required_for.iter().any(|id| id == c))
    }

    /// Whether any client must present a sender-constrained token (the fast path's test).
    pub fn any_required(&self) -> bool {
        !self.dpop_required_for.is_empty() || !self.certificate_required_for.is_empty()
    }
}

/// `dpop.nonce` in force (RFC 9449 §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceSettings {
    /// `lifetime`: the length of a nonce's window.
    pub lifetime: Duration,
    /// `secretFile`'s bytes, read when the configuration is loaded; `None`: a per-process secret.
    pub secret: Option<NonceSecret>,
}

/// The bytes of `dpop.nonce.secretFile`; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceSecret(Arc<[u8]>);

impl NonceSecret {
    /// The HMAC-SHA256 key nonces are minted and checked with (at least 32 bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for NonceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceSecret({} bytes)", self.0.len())
    }
}

/// Which header carries a client certificate from which proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedCertificate {
    /// `senderConstraints.clientCertificates.header`: which header, in which format.
    pub header: CertificateHeader,
    /// `senderConstraints.clientCertificates.trustedProxies`: the peers whose header is
    /// believed; from any other peer the header is removed.
    pub trusted_proxies: Vec<Network>,
}

impl ForwardedCertificate {
    /// Whether `peer` is a trusted proxy, whose certificate header is believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(peer))
    }
}

/// The format of the forwarded-certificate header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateHeader {
    /// Envoy's `x-forwarded-client-cert`: `Hash=<hex SHA-256 of the DER>;Cert="<URL-encoded
    /// PEM>";…`.
    XForwardedClientCert,
    /// nginx ingress's `ssl-client-cert`: the URL-encoded PEM.
    SslClientCert,
}

impl CertificateHeader {
    /// The header's (lower-case) name.
    pub fn name(self) -> http::HeaderName {
        match self {
            CertificateHeader::XForwardedClientCert => {
                http::HeaderName::from_static("x-forwarded-client-cert")
            }
            CertificateHeader::SslClientCert => http::HeaderName::from_static("ssl-client-cert"),
        }
    }
}

/// An address or network of trusted proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// The address as written (`10.0.0.0` of `10.0.0.0/8`).
    pub address: IpAddr,
    /// The prefix length; 32 (IPv4) or 128 (IPv6) for a single address.
    pub prefix: u8,
}

impl Network {
    /// Whether `peer` is inside (IPv4-mapped IPv6 peers compare as IPv4).
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            IpAddr::V4(_) => peer,
        };
        match (self.address, peer) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(peer) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(peer)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(peer) & mask
            }
            _ => false,
        }
    }

    fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an IP address or network (10.0.0.0/8)"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{text}': the prefix length must be 0..={max}"))?,
        };
        Ok(Network { address, prefix })
    }
}

/// Validates `senderConstraints`; absent, or with mistakes (recorded in `errors`), the default.
pub(super) fn sender_constraints(
    node: Option<Node<'_>>,
    tls: bool,
    errors: &mut Errors,
) -> SenderConstraints {
    let mut sender = SenderConstraints::default();
    let Some(object) = node.and_then(|node| node.object(errors, keys_of::<RawSenderConstraints>()))
    else {
        return sender;
    };
    if let Some(dpop) = object
        .get("dpop")
        .and_then(|node| node.object(errors, keys_of::<RawDpop>()))
    {
        sender.dpop_required_for = client_ids(&dpop, errors);
        if let Some(entries) = dpop
            .get("replayCacheEntries")
            .and_then(|node| node.count(errors, 1))
        {
            sender.replay_cache_entries = entries;
        }
        sender.replay_store =
            match choice(&dpop, "replayStore", keys_of::<RawReplayStore>(), errors) {
                Some("local") => Some(ReplayStore::Local),
                Some(_) => Some(ReplayStore::Shared),
                None => None,
            };
        sender.dpop_nonce = dpop
            .get("nonce")
            .and_then(|node| node.object(errors, keys_of::<RawDpopNonce>()))
            .and_then(|nonce| dpop_nonce(&nonce, errors));
    }
    if let Some(certificates) = object
        .get("clientCertificates")
        .and_then(|node| node.object(errors, keys_of::<RawClientCertificates>()))
    {
        client_certificates(&certificates, tls, &mut sender, errors);
    }
    sender
}

/// `dpop.nonce`: the settings when `required`. The secret file is read and checked whenever it
/// is named, so a mistake shows before nonces are turned on.
fn dpop_nonce(object: &Object<'_>, errors: &mut Errors) -> Option<NonceSettings> {
    let required = object.flag("required", errors);
    let lifetime = object
        .get("lifetime")
        .and_then(|node| {
            let lifetime = node.duration(errors, false)?;
            if NONCE_LIFETIME_RANGE.contains(&lifetime) {
                return Some(lifetime);
            }
            errors.push(&node.path, "must be between 10s and 1d");
            None
        })
        .unwrap_or(DEFAULT_NONCE_LIFETIME);
    let secret = object.get("secretFile").and_then(|node| {
        let path = node.text(errors)?;
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= MIN_NONCE_SECRET_BYTES => {
                Some(NonceSecret(Arc::from(bytes)))
            }
            Ok(bytes) => {
                errors.push(
                    &node.path,
                    format!(
                        "'{path}' holds {} bytes; a nonce secret needs at least \
                         {MIN_NONCE_SECRET_BYTES} (e.g. `head -c 32 /dev/urandom`)",
                        bytes.len()
                    ),
                );
                None
            }
            Err(error) => {
                errors.push(&node.path, format!("cannot read '{path}': {error}"));
                None
            }
        }
    });
    required.then_some(NonceSettings { lifetime, secret })
}

fn client_certificates(
    object: &Object<'_>,
    tls: bool,
    sender: &mut SenderConstraints,
    errors: &mut Errors,
) {
    sender.certificate_required_for = client_ids(object, errors);
    sender.request_client_certificates = object.flag("request", errors);
    if sender.request_client_certificates && !tls {
        errors.push(
            &object.key_path("request"),
            "applies only with tls (the listener must terminate TLS to ask for a certificate)",
        );
    }
    let header =
        choice(object, "header", keys_of::<RawCertificateHeader>(), errors).map(|variant| {
            match variant {
                "ssl-client-cert" => CertificateHeader::SslClientCert,
                _ => CertificateHeader::XForwardedClientCert,
            }
        });
    let proxies: Vec<Network> = object
        .get("trustedProxies")
        .and_then(|node| {
            let items = node.list(errors)?;
            Some(
                items
                    .iter()
                    .filter_map(|item| {
                        let text = item.text(errors)?;
                        Network::parse(text)
                            .map_err(|message| errors.push(&item.path, message))
                            .ok()
                    })
                    .collect(),
            )
        })
        .unwrap_or_default();
    match header {
        Some(_) if proxies.is_empty() => errors.push(
            &object.key_path("trustedProxies"),
            "is required with header (the proxies whose header is believed)",
        ),
        Some(header) => {
            sender.forwarded = Some(ForwardedCertificate {
                header,
                trusted_proxies: proxies,
            });
        }
        None if object.has("trustedProxies") => errors.push(
            &object.key_path("trustedProxies"),
            "applies only with header",
        ),
        None => {}
    }
}

fn client_ids(object: &Object<'_>, errors: &mut Errors) -> Vec<String> {
    object
        .get("requiredFor")
        .and_then(|node| node.list(errors))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.text(errors).map(|id| id.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let one = Network::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("host").is_err());
    }
}
