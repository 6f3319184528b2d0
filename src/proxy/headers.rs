//! Header hygiene between client and upstream: hop-by-hop headers removed both ways
//! (RFC 9110 §7.6.1), `X-Forwarded-*` set (and `Forwarded`, `X-Real-IP` when a client sends
//! them), the request id propagated, identity headers that fhirguard adds stripped from what
//! clients send (SPEC §7), together with every header whose name holds `_`.

use std::io::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`: propagated when the client sends a sane one, generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The prefix of the identity headers fhirguard sets for the upstream. Any header with this
/// prefix that a client sends is removed first, so it cannot be forged.
pub const IDENTITY_PREFIX: &str = "x-fhirguard-";

/// Identity headers for the upstream: the client the token names (`azp`, else `appid`, …).
pub const CLIENT_ID: HeaderName = HeaderName::from_static("x-fhirguard-client-id");
/// The token's `sub`.
pub const SUBJECT: HeaderName = HeaderName::from_static("x-fhirguard-subject");
/// The token's `fhirUser` (else `extension_fhirUser`), as sent.
pub const FHIR_USER: HeaderName = HeaderName::from_static("x-fhirguard-fhir-user");
/// The token's `iss`: the provider's discovered issuer.
pub const ISSUER: HeaderName = HeaderName::from_static("x-fhirguard-issuer");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The hop-by-hop headers of RFC 9110 §7.6.1 plus the obsolete ones proxies still strip
/// (`Keep-Alive`, `Proxy-Connection`), RFC 9110 §7.8, and `Upgrade` (fhirguard does not tunnel
/// protocols).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1, the obsolete ones of §7.8, and `Upgrade`),
/// including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names notes which are present: most messages carry none, and most of
    // the rest one `Connection: keep-alive`. Only those are looked up again.
    let present = headers
        .keys()
        .filter_map(|name| hop_by_hop_index(name.as_str()))
        .fold(0u16, |present, index| present | 1 << index);
    if present == 0 {
        return;
    }
    // `Connection: keep-alive` (or `Upgrade`, `TE`…) lists only hop-by-hop names, removed below
    // anyway: other names are looked for only when some are listed.
    let others_listed = |headers: &HeaderMap| {
        connection_options(&headers.get_all(header::CONNECTION)).any(|name| {
            !HOP_BY_HOP
                .iter()
                .any(|hop| name.eq_ignore_ascii_case(hop.as_str()))
        })
    };
    if present & 1 != 0 && others_listed(headers) {
        // The values share their bytes with the message: copying them out costs no copy of
        // the text, and frees the map for removals.
        let listed: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for name in connection_options(&listed) {
            // Looked up by text: a listed name that is no header name names nothing here.
            headers.remove(name);
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & 1 << index != 0 {
            headers.remove(name);
        }
    }
}

/// The names a `Connection` header's values list (RFC 9110 §7.6.1), trimmed; a value that is
/// not visible ASCII lists none.
fn connection_options<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = &'a str> {
    values
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// The index in [`HOP_BY_HOP`] of a (lower-case) header name, if it is one. Read on every
/// header of every message both ways: the length picks the one or two names to compare, where
/// comparing with each `HeaderName` would cost nine comparisons a header.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    let index = match name.len() {
        2 if name == "te" => 5,
        7 if name == "trailer" => 6,
        7 if name == "upgrade" => 8,
        10 if name == "connection" => 0,
        10 if name == "keep-alive" => 1,
        16 if name == "proxy-connection" => 2,
        17 if name == "transfer-encoding" => 7,
        18 if name == "proxy-authenticate" => 3,
        19 if name == "proxy-authorization" => 4,
        _ => return None,
    };
    Some(index)
}

/// Removes what a client may not send on: every `X-Fhirguard-*` header (SPEC §7), and every
/// header whose name holds `_`. CGI, WSGI and Rack servers (and PHP, and Tomcat behind AJP)
/// read `_` and `-` alike, so `X_Fhirguard_Client_Id` would arrive next to, or instead of, the
/// identity header fhirguard sets; the same goes for `X_Forwarded_For` and every header yet to
/// be reserved. Dropping the whole class is nginx's default (`underscores_in_headers off`); no
/// FHIR or HTTP header has `_` in its name. Most requests carry neither: one scan of the names,
/// and nothing allocated unless one is found.
///
/// Also removed: the headers with which frameworks let a front proxy re-route a request
/// ([`ROUTING_OVERRIDES`]: IIS and Symfony's `X-Original-URL` / `X-Rewrite-URL`, Spring's
/// `X-Forwarded-Prefix`, …). fhirguard decided on the request line; a server that honoured one
/// of them would run another path or method than the one authorized.
///
/// And every client-certificate header ([`is_client_certificate`]) but `believed`: the one
/// configured header when the peer is a trusted proxy (`None` otherwise). A FHIR server or
/// framework behind fhirguard may read any of them as the client's certificate; from a client
/// they are forged, and a trusted proxy vouches only for the one it was configured to set.
pub fn remove_client_reserved(headers: &mut HeaderMap, believed: Option<&HeaderName>) {
    let reserved = |name: &HeaderName| {
        let text = name.as_str();
        text.starts_with(IDENTITY_PREFIX)
            || text.contains('_')
            || (text.starts_with("x-") && ROUTING_OVERRIDES.contains(&text))
            || (is_client_certificate(text) && believed != Some(name))
    };
    if !headers.keys().any(reserved) {
        return;
    }
    let forged: Vec<HeaderName> = headers.keys().filter(|n| reserved(n)).cloned().collect();
    for name in forged {
        headers.remove(name);
    }
}

/// Whether a (lower-case) header name is one a TLS-terminating proxy puts a client certificate,
/// or what it found in one, in: Envoy's `x-forwarded-client-cert`, RFC 9440's `client-cert` and
/// `client-cert-chain`, nginx's `ssl-client-cert` (and `ssl-client-verify`, `-subject-dn`, …),
/// `x-ssl-client-cert`, `x-client-cert`, Traefik's `x-forwarded-tls-client-cert`, IIS ARR's
/// `x-arr-clientcert`, Cloudflare's `cf-client-cert-*`, AWS ALB's `x-amzn-mtls-clientcert*`. As
/// a class: a name holding `cert` together with `client`, `ssl` or `tls`, or starting with
/// `ssl-client-`, `x-ssl-client-` or `x-amzn-mtls-`, and the `x-client-verify` / `x-client-dn`
/// of nginx set-ups. Names with `_` (`ssl_client_cert`) are removed as a class already.
///
/// It runs on every header of every forwarded request: byte windows rather than `str::contains`,
/// whose substring searcher costs more to set up than these short names take to scan.
pub fn is_client_certificate(name: &str) -> bool {
    let name = name.as_bytes();
    let holds = |word: &[u8]| name.windows(word.len()).any(|part| part == word);
    if holds(b"cert") {
        return holds(b"client") || holds(b"ssl") || holds(b"tls");
    }
    name.starts_with(b"ssl-client-")
        || name.starts_with(b"x-ssl-client-")
        || name.starts_with(b"x-amzn-mtls-")
        || name == b"x-client-verify"
        || name == b"x-client-dn"
}

/// Request-routing headers a client may not send (see [`remove_client_reserved`]): path and
/// method overrides, and the scheme, port and prefix a server uses to build its own URLs
/// (`X-Forwarded-Proto` and `-Host` are set by fhirguard itself).
pub const ROUTING_OVERRIDES: [&str; 12] = [
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-original-method",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-url-scheme",
];

/// The id of one request, as the header value sent to the upstream and back to the client.
/// New on every request, it is marked sensitive: h2 sends it as a never-indexed literal
/// (RFC 7541 §6.2.3) instead of entering the HPACK table, where it would only push out entries
/// that repeat (h2 87,720 -> 86,405 instructions a request; HTTP/1.1 ignores the mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id as text (always visible ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The header value; a clone shares the bytes.
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

/// The request id to use: the client's when it is short visible ASCII, else a new one.
pub fn request_id(headers: &HeaderMap) -> RequestId {
    let sane = |id: &HeaderValue| {
        let id = id.as_bytes();
        !id.is_empty()
            && id.len() <= 128
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    };
    let mut id = match headers.get(&REQUEST_ID) {
        Some(id) if sane(id) => id.clone(),
        _ => new_request_id(),
    };
    id.set_sensitive(true);
    RequestId(id)
}

/// A random 128-bit id in the 8-4-4-4-12 hex layout.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each random byte's two digits go: the 8-4-4-4-12 groups, around the dashes.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let bytes: [u8; 16] = rand::random();
    let mut id = [b'-'; 36];
    for (byte, at) in bytes.into_iter().zip(AT) {
        id[at] = HEX[usize::from(byte >> 4)];
        id[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&id).expect("hex digits and dashes are a valid header value")
}

/// Sets `X-Forwarded-For` (appending the peer to any earlier hops), `-Proto` and `-Host`.
/// `host` is the client's `Host` (or the request target's authority), as received; hygiene
/// has made sure the two agree. `Forwarded` (RFC 7239) and `X-Real-IP` follow the same rule as
/// `X-Forwarded-For`, so none of the three can be forged about the hop fhirguard sees: a
/// `Forwarded` a client sent gets fhirguard's element appended (the last element is the one
/// fhirguard vouches for, as the last `X-Forwarded-For` address is); an `X-Real-IP` (one
/// address, no list to append to) is replaced by the peer. Neither is added when absent:
/// `X-Forwarded-For` always carries the peer, and the hot path stays as cheap as it was.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    https: bool,
    host: Option<HeaderValue>,
) {
    let mut forwarded_for = Vec::with_capacity(64);
    if let Some(earlier) = headers.get(&X_FORWARDED_FOR) {
        let earlier = earlier.as_bytes().trim_ascii();
        if !earlier.is_empty() {
            forwarded_for.extend_from_slice(earlier);
            forwarded_for.extend_from_slice(b", ");
        }
    }
    // An address's text is ASCII digits, dots, colons and hex: always a valid header value.
    push_address(&mut forwarded_for, peer.ip());
    if let Ok(value) = HeaderValue::from_bytes(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if headers.contains_key(header::FORWARDED) {
        append_forwarded(headers, peer, https, host.as_ref());
    }
    if headers.contains_key(&X_REAL_IP) {
        let address = peer.ip().to_string();
        if let Ok(value) = HeaderValue::from_str(&address) {
            headers.insert(X_REAL_IP, value);
        }
    }
    match host {
        Some(value) => {
            headers.insert(X_FORWARDED_HOST, value);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Appends an address's text as `Display` writes it: IPv4 by hand (every forwarded request
/// writes one, and the formatting machinery costs more than the address), IPv6 by `Display`.
fn push_address(out: &mut Vec<u8>, address: std::net::IpAddr) {
    let std::net::IpAddr::V4(v4) = address else {
        write!(out, "{address}").expect("writing to a Vec");
        return;
    };
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

/// Appends `for=…;proto=…[;host=…]` to the client's `Forwarded` (RFC 7239 §4), folding every
/// line into one. The address is quoted and bracketed when IPv6 (§6); the host is a
/// quoted-string (RFC 9110 §5.6.4), its `"` and `\` escaped.
fn append_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    https: bool,
    host: Option<&HeaderValue>,
) {
    let mut forwarded = Vec::with_capacity(128);
    for earlier in headers.get_all(header::FORWARDED) {
        let earlier = earlier.as_bytes().trim_ascii();
        if !earlier.is_empty() {
            forwarded.extend_from_slice(earlier);
            forwarded.extend_from_slice(b", ");
        }
    }
    let proto = if https { "https" } else { "http" };
    let written = match peer.ip() {
        std::net::IpAddr::V4(ip) => write!(forwarded, "for={ip};proto={proto}"),
        std::net::IpAddr::V6(ip) => write!(forwarded, "for=\"[{ip}]\";proto={proto}"),
    };
    written.expect("writing to a Vec");
    if let Some(host) = host {
        forwarded.extend_from_slice(b";host=\"");
        for &byte in host.as_bytes() {
            if byte == b'"' || byte == b'\\' {
                forwarded.push(b'\\');
            }
            forwarded.push(byte);
        }
        forwarded.push(b'"');
    }
    if let Ok(value) = HeaderValue::from_bytes(&forwarded) {
        headers.insert(header::FORWARDED, value);
    } else {
        // Not expected (every byte came from header values), but never forward a forgeable one.
        headers.remove(header::FORWARDED);
    }
}

/// The identity headers' names, in the order of [`Identity`]'s values.
const IDENTITY: [HeaderName; 4] = [CLIENT_ID, SUBJECT, FHIR_USER, ISSUER];

/// The values of a principal's identity headers, built once for a token's session and shared
/// by each of its requests: `None` for a claim the token lacks, or one that is no header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity([Option<HeaderValue>; 4]);

impl Identity {
    /// The values for `principal`: its client, `sub`, `fhirUser` and issuer.
    pub fn of(principal: &crate::auth::Principal) -> Identity {
        Identity(
            Identity::texts(principal)
                .map(|text| text.and_then(|text| HeaderValue::from_str(text).ok())),
        )
    }

    /// The bytes the values hold on the heap, for the token cache's weight.
    pub fn heap_bytes(principal: &crate::auth::Principal, per_allocation: usize) -> usize {
        Identity::texts(principal)
            .into_iter()
            .flatten()
            .map(|text| text.len() + per_allocation)
            .sum::<usize>()
            + size_of::<Identity>()
            + per_allocation
    }

    /// The principal's texts the values are made of, in the order of [`IDENTITY`]'s names.
    fn texts(principal: &crate::auth::Principal) -> [Option<&str>; 4] {
        [
            principal.client_id.as_deref(),
            principal.subject.as_deref(),
            principal.fhir_user.as_deref(),
            Some(principal.issuer.as_str()),
        ]
    }
}

/// The identity headers the upstream may trust (`X-Fhirguard-*`): set from the verified
/// principal only ([`Identity::of`]), after every client-sent one was removed
/// ([`remove_client_reserved`]).
pub fn set_identity(headers: &mut HeaderMap, identity: &Identity) {
    for (name, value) in IDENTITY.iter().zip(&identity.0) {
        if let Some(value) = value {
            headers.insert(name, value.clone());
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

    /// The name match stands for the list: each name in it at its index, and nothing else.
    #[test]
    fn hop_by_hop_names_are_the_listed_ones() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(index), "{name}");
        }
        for name in [
            header::ACCEPT,
            header::AUTHORIZATION,
            header::CONTENT_LENGTH,
            header::HOST,
            header::VIA,
            HeaderName::from_static("tf"),
            HeaderName::from_static("keep-alivf"),
            HeaderName::from_static("proxy-authorizatio"),
            HeaderName::from_static("x-connection"),
        ] {
            assert_eq!(hop_by_hop_index(name.as_str()), None, "{name}");
        }
    }

    /// Only what is present is removed, the names `Connection` lists in any case and spacing
    /// included, over several `Connection` lines.
    #[test]
    fn connection_lists_are_read_over_every_line() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive ,X-A"),
        );
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static(" x-b, not a name, "),
        );
        for name in ["keep-alive", "x-a", "x-b", "x-c", "upgrade"] {
            headers.insert(name, HeaderValue::from_static("1"));
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-c"]);
    }

    /// A `Connection` that lists only hop-by-hop names (nginx's `keep-alive`) removes those
    /// and leaves every other header.
    #[test]
    fn a_connection_of_hop_by_hop_names_removes_only_them() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, TE"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-c", HeaderValue::from_static("1"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-c"]);
    }

    #[test]
    fn forged_identity_headers_and_underscored_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-fhirguard-subject", HeaderValue::from_static("admin"));
        headers.insert("x_fhirguard_client_id", HeaderValue::from_static("writer"));
        headers.insert(
            "x-fhirguard_fhir-user",
            HeaderValue::from_static("Patient/1"),
        );
        headers.insert("x_forwarded_for", HeaderValue::from_static("10.9.9.9"));
        headers.insert("_", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("if-none-match", HeaderValue::from_static("W/\"1\""));
        headers.insert("prefer", HeaderValue::from_static("return=minimal"));
        remove_client_reserved(&mut headers, None);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["if-none-match", "prefer", "x-other"]);
    }

    /// Issue 20 item 6: every known client-certificate header, whichever one is configured.
    const CERTIFICATE_HEADERS: [&str; 20] = [
        "x-forwarded-client-cert",
        "ssl-client-cert",
        "client-cert",
        "client-cert-chain",
        "x-ssl-client-cert",
        "x-client-cert",
        "x-forwarded-tls-client-cert",
        "x-forwarded-tls-client-cert-info",
        "x-arr-clientcert",
        "x-client-certificate",
        "x-ssl-cert",
        "x-tls-client-cert",
        "cf-client-cert-der-base64",
        "x-amzn-mtls-clientcert",
        "x-amzn-mtls-clientcert-leaf",
        "ssl-client-verify",
        "ssl-client-subject-dn",
        "x-ssl-client-verify",
        "x-client-verify",
        "x-client-dn",
    ];

    #[test]
    fn client_certificate_headers_are_removed_but_the_believed_one() {
        let all = || {
            let mut headers = HeaderMap::new();
            for name in CERTIFICATE_HEADERS {
                headers.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static("forged"),
                );
            }
            for name in ["ssl_client_cert", "X_Forwarded_Client_Cert", "Client_Cert"] {
                headers.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("forged"),
                );
            }
            headers.insert("accept", HeaderValue::from_static("application/fhir+json"));
            headers.insert("x-client-id", HeaderValue::from_static("app"));
            headers.insert("content-type", HeaderValue::from_static("text/plain"));
            headers
        };
        let mut untrusted = all();
        remove_client_reserved(&mut untrusted, None);
        let mut left: Vec<&str> = untrusted.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-type", "x-client-id"]);
        for believed in ["x-forwarded-client-cert", "ssl-client-cert"] {
            let mut trusted = all();
            let name = HeaderName::from_static(believed);
            remove_client_reserved(&mut trusted, Some(&name));
            let mut left: Vec<&str> = trusted.keys().map(HeaderName::as_str).collect();
            left.sort_unstable();
            let mut expected = vec!["accept", "content-type", "x-client-id", believed];
            expected.sort_unstable();
            assert_eq!(left, expected);
        }
    }

    #[test]
    fn forwarded_and_real_ip_cannot_be_forged() {
        let mut headers = HeaderMap::new();
        headers.append(header::FORWARDED, HeaderValue::from_static("for=10.9.9.9"));
        headers.append(header::FORWARDED, HeaderValue::from_static("for=10.8.8.8"));
        headers.insert(X_REAL_IP, HeaderValue::from_static("10.9.9.9"));
        set_forwarded(
            &mut headers,
            "[::1]:5000".parse().unwrap(),
            false,
            Some(HeaderValue::from_static("a\"b")),
        );
        assert_eq!(
            headers[header::FORWARDED],
            "for=10.9.9.9, for=10.8.8.8, for=\"[::1]\";proto=http;host=\"a\\\"b\""
        );
        assert_eq!(headers.get_all(header::FORWARDED).iter().count(), 1);
        assert_eq!(headers[&X_REAL_IP], "::1");
        // Absent, they are not added: X-Forwarded-For carries the peer.
        let mut plain = HeaderMap::new();
        set_forwarded(&mut plain, "127.0.0.1:5000".parse().unwrap(), true, None);
        assert!(!plain.contains_key(header::FORWARDED) && !plain.contains_key(&X_REAL_IP));
        assert_eq!(plain[&X_FORWARDED_FOR], "127.0.0.1");
    }

    #[test]
    fn request_ids_are_propagated_only_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers).as_str(), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("a b\"c"));
        let generated = request_id(&headers);
        let text = generated.as_str();
        assert_eq!(text.len(), 36);
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{text}");
        assert!(text
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(generated, request_id(&HeaderMap::new()));
    }

    #[test]
    fn request_ids_are_never_indexed_by_hpack() {
        let mut headers = HeaderMap::new();
        assert!(request_id(&headers).header().is_sensitive());
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        let propagated = request_id(&headers).header();
        assert!(propagated.is_sensitive());
        assert_eq!(propagated, "abc-123");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let addresses = [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ];
        for text in addresses {
            let address: std::net::IpAddr = text.parse().unwrap();
            let mut written = Vec::new();
            push_address(&mut written, address);
            assert_eq!(String::from_utf8(written).unwrap(), address.to_string());
        }
        for octet in 0..=255u8 {
            let address = std::net::IpAddr::from([octet, 0, octet, 9]);
            let mut written = Vec::new();
            push_address(&mut written, address);
            assert_eq!(String::from_utf8(written).unwrap(), address.to_string());
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        set_forwarded(
            &mut headers,
            "127.0.0.1:5000".parse().unwrap(),
            true,
            Some(HeaderValue::from_static("fhir.example.org")),
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(headers[&X_FORWARDED_HOST], "fhir.example.org");
    }
}
