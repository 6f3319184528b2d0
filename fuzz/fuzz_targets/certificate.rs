//! `proxy::sender::forwarded_certificate`: a trusted proxy's client-certificate header, Envoy's
//! `x-forwarded-client-cert` or nginx ingress's `ssl-client-cert` (URL-encoded PEM). Never
//! panics; its digest gives a 43-character `x5t#S256` (RFC 8705 §3.1). The first byte picks:
//! 0, the rest is an `x-forwarded-client-cert` value; 1, an `ssl-client-cert` value, and the
//! same PEM as the `Cert` of an `x-forwarded-client-cert` gives the same digest; 2, the `Hash`
//! of an `x-forwarded-client-cert`, accepted only as 64 hex digits that are the digest; 3, an
//! `ssl-client-cert` value that reads, as the `Cert` of an element whose `Hash` is its digest
//! (accepted, the same digest) and whose `Hash` is another (refused: they disagree).
#![no_main]

use fhirguard::auth::binding::certificate_thumbprint;
use fhirguard::config::CertificateHeader;
use fhirguard::proxy::sender::forwarded_certificate;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn read(header: CertificateHeader, value: &[u8]) -> Option<Option<[u8; 32]>> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header.name(), value);
    let digest = forwarded_certificate(header, &headers).ok();
    if let Some(Some(digest)) = &digest {
        assert_eq!(certificate_thumbprint(digest).len(), 43);
    }
    digest
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            read(CertificateHeader::XForwardedClientCert, rest);
        }
        1 => {
            let Some(pem) = read(CertificateHeader::SslClientCert, rest) else {
                return;
            };
            // Inside quotes only a quote (or a backslash before one) ends or changes the value.
            if rest.contains(&b'"') {
                return;
            }
            let mut xfcc = b"By=spiffe://proxy;Cert=\"".to_vec();
            xfcc.extend_from_slice(rest);
            xfcc.push(b'"');
            assert_eq!(
                read(CertificateHeader::XForwardedClientCert, &xfcc),
                Some(pem),
                "ssl-client-cert and the Cert of x-forwarded-client-cert differ"
            );
        }
        3 => {
            if rest.contains(&b'"') || rest.contains(&b'\\') {
                return;
            }
            let Some(Some(digest)) = read(CertificateHeader::SslClientCert, rest) else {
                return;
            };
            let element = |hash: &[u8; 32]| {
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                let mut xfcc = format!("Hash={hex};Cert=\"").into_bytes();
                xfcc.extend_from_slice(rest);
                xfcc.push(b'"');
                xfcc
            };
            assert_eq!(
                read(CertificateHeader::XForwardedClientCert, &element(&digest)),
                Some(Some(digest)),
                "a Hash and a Cert that agree"
            );
            let mut other = digest;
            other[0] ^= 1;
            assert_eq!(
                read(CertificateHeader::XForwardedClientCert, &element(&other)),
                None,
                "a Hash and a Cert that disagree must be refused"
            );
        }
        _ => {
            // Only a value the element syntax leaves as it is.
            let plain =
                |b: &u8| !matches!(b, b',' | b';' | b'"' | b'\\') && !b.is_ascii_whitespace();
            if !rest.iter().all(plain) {
                return;
            }
            let mut xfcc = b"Hash=".to_vec();
            xfcc.extend_from_slice(rest);
            if let Some(Some(digest)) = read(CertificateHeader::XForwardedClientCert, &xfcc) {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                assert!(
                    rest.eq_ignore_ascii_case(hex.as_bytes()),
                    "Hash={} read as {hex}",
                    String::from_utf8_lossy(rest)
                );
            }
        }
    }
});
