//! The headers a refusal's response carries beyond its `OperationOutcome` ([`Extra`]): the
//! `Bearer` challenge (RFC 6750 §3), the DPoP challenge and nonce (RFC 9449 §7.1, §9),
//! `Retry-After`, the rate-limit headers of a 429, `Connection: close` when the rest of the body
//! is never read, and the mark that keeps CORS headers off a refused preflight.

use http::header::{HeaderValue, CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::Response;

use super::Challenge;
use crate::auth::dpop::nonce::DPOP_NONCE;
use crate::auth::dpop::PROOF_ALGORITHMS_TEXT;
use crate::body::Body;
use crate::cors::Withheld;

/// draft-ietf-httpapi-ratelimit-headers: the allowance left, and the policy it is counted by.
const RATE_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");
const RATE_LIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");

/// Headers a response carries beyond the `OperationOutcome`'s.
#[derive(Debug)]
pub(super) enum Extra {
    None,
    /// `WWW-Authenticate: Bearer …` with the `error_description`, if any (RFC 6750 §3).
    Challenge(Option<String>),
    /// `WWW-Authenticate: DPoP error="…", error_description="…", algs="…"` (RFC 9449 §7.1),
    /// and with `use_dpop_nonce` the fresh nonce in `DPoP-Nonce` (§9).
    Dpop {
        error: &'static str,
        description: String,
        nonce: Option<HeaderValue>,
    },
    /// `Retry-After` in seconds.
    RetryAfter(u64),
    /// `Retry-After` in seconds, and draft-ietf-httpapi-ratelimit-headers' `RateLimit` and
    /// `RateLimit-Policy` (a 429).
    RateLimit {
        retry_after: u64,
        limit: HeaderValue,
        policy: HeaderValue,
    },
    /// A refused preflight: no CORS header may be added ([`Withheld`]).
    WithoutCors,
    /// RFC 9110 §15.5.9: the rest of the body is never read, so the connection closes.
    Close,
}

impl Extra {
    /// Adds these headers to `response`; a `Bearer` challenge names `challenge`'s authority
    /// and audience.
    pub(super) fn write(self, response: &mut Response<Body>, challenge: Challenge<'_>) {
        let headers = response.headers_mut();
        match self {
            Extra::None => {}
            Extra::Challenge(description) => {
                let value = bearer(challenge, description.as_deref());
                headers.insert(WWW_AUTHENTICATE, value);
            }
            Extra::Dpop {
                error,
                description,
                nonce,
            } => {
                let value = format!(
                    "DPoP error=\"{error}\", error_description=\"{}\", algs=\"{PROOF_ALGORITHMS_TEXT}\"",
                    quoted(&description)
                );
                let value = HeaderValue::from_str(&value)
                    .unwrap_or_else(|_| HeaderValue::from_static("DPoP"));
                headers.insert(WWW_AUTHENTICATE, value);
                if let Some(nonce) = nonce {
                    headers.insert(DPOP_NONCE, nonce);
                }
            }
            Extra::RetryAfter(seconds) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            Extra::RateLimit {
                retry_after,
                limit,
                policy,
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
                headers.insert(RATE_LIMIT, limit);
                headers.insert(RATE_LIMIT_POLICY, policy);
            }
            Extra::Close => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Extra::WithoutCors => {
                response.extensions_mut().insert(Withheld);
            }
        }
    }
}

/// `Bearer authorization_uri="…", resource_id="…", realm="…"[, error="invalid_token",
/// error_description="…"]` (RFC 6750 §3, reference §2.4).
fn bearer(challenge: Challenge<'_>, description: Option<&str>) -> HeaderValue {
    let mut value = format!(
        "Bearer authorization_uri=\"{}\", resource_id=\"{}\", realm=\"{}\"",
        quoted(challenge.authority),
        quoted(challenge.audience),
        quoted(challenge.audience)
    );
    if let Some(description) = description {
        value.push_str(", error=\"invalid_token\", error_description=\"");
        value.push_str(&quoted(description));
        value.push('"');
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The content of an RFC 9110 §5.6.4 quoted-string: `"` and `\` escaped, anything outside
/// visible ASCII and space dropped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}
