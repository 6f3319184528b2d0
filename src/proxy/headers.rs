//! Header hygiene between client and upstream: hop-by-hop headers removed both ways
//! (RFC 9110 §7.6.1), `X-Forwarded-*` set, the request id propagated, identity headers that
//! fhirguard adds stripped from what clients send (SPEC §7).

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`: propagated when the client sends a sane one, generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The prefix of the identity headers fhirguard sets for the upstream. Any header with this
/// prefix that a client sends is removed first, so it cannot be forged.
pub const IDENTITY_PREFIX: &str = "x-fhirguard-";

/// Identity headers for the upstream.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("x-fhirguard-client-id");
pub const SUBJECT: HeaderName = HeaderName::from_static("x-fhirguard-subject");
pub const FHIR_USER: HeaderName = HeaderName::from_static("x-fhirguard-fhir-user");
pub const ISSUER: HeaderName = HeaderName::from_static("x-fhirguard-issuer");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop-by-hop headers of RFC 9110 §7.6.1 plus the obsolete ones proxies still strip
/// (`Keep-Alive`, `Proxy-Connection`), RFC 9110 §7.8.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes the hop-by-hop headers, including every header named in `Connection`
/// (RFC 9110 §7.6.1), and `Upgrade` (fhirguard does not tunnel protocols).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Removes every `X-Fhirguard-*` header a client sent.
pub fn remove_identity_headers(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// The request id to use: the client's when it is short visible ASCII, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A random 128-bit id in the 8-4-4-4-12 hex layout.
fn new_request_id() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Sets `X-Forwarded-For` (appending the peer to any earlier hops), `-Proto` and `-Host`.
pub fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, https: bool, host: Option<&str>) {
    let peer_ip = peer.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {peer_ip}"),
        _ => peer_ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    match host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(value) => {
            headers.insert(X_FORWARDED_HOST, value);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_listed_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/fhir+json"),
        );
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn forged_identity_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-fhirguard-subject", HeaderValue::from_static("admin"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        remove_identity_headers(&mut headers);
        assert!(!headers.contains_key("x-fhirguard-subject"));
        assert!(headers.contains_key("x-other"));
    }

    #[test]
    fn request_ids_are_propagated_only_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("a b\"c"));
        let generated = request_id(&headers);
        assert_eq!(generated.len(), 36);
        assert_ne!(generated, request_id(&HeaderMap::new()));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        set_forwarded(
            &mut headers,
            "127.0.0.1:5000".parse().unwrap(),
            true,
            Some("fhir.example.org"),
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(headers[&X_FORWARDED_HOST], "fhir.example.org");
    }
}
