//! Where a token may come from: only the `Authorization: Bearer` header (RFC 6750 §2.1,
//! reference §8 rule 3), and never the URL (reference §2.1 "Token source": a JWT-shaped string
//! in the path or query is refused before authentication, as the OSS
//! `AccessTokenUrlValidationMiddleware` does).

use std::borrow::Cow;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use percent_encoding::percent_decode_str;

use super::error::AuthError;

/// The part of the URL that held a JWT-shaped string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlPart {
    /// The path, raw or percent-decoded.
    Path,
    /// The query string, raw or percent-decoded.
    Query,
}

impl UrlPart {
    /// The OSS server's exact message (400, reference §2.1).
    pub fn message(self) -> &'static str {
        match self {
            UrlPart::Path => "Access tokens must not be passed in the URL path.",
            UrlPart::Query => "Access tokens must not be passed in the URL query string.",
        }
    }
}

/// The scheme an access token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750 §2.1.
    Bearer,
    /// RFC 9449 §7.1: a DPoP-bound token, with a `DPoP` proof header.
    Dpop,
}

/// The bearer token of the request, if it has an `Authorization` header at all.
///
/// RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, the scheme case-insensitive
/// (RFC 9110 §11.1), `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
/// No header is `Ok(None)` (a 401 without `error`, RFC 6750 §3.1); anything else that is not
/// exactly one well-formed bearer token is an [`AuthError`] (401 `invalid_token`).
pub fn bearer_token(headers: &HeaderMap, max_len: usize) -> Result<Option<&str>, AuthError> {
    match access_token(headers, max_len)? {
        Some((Scheme::Bearer, token)) => Ok(Some(token)),
        Some((Scheme::Dpop, _)) => Err(AuthError::NotBearer),
        None => Ok(None),
    }
}

/// The access token of the request and its scheme: `Bearer` (RFC 6750 §2.1) or `DPoP`
/// (RFC 9449 §7.1, whose `token68` is the same alphabet as `b64token`), with the rules of
/// [`bearer_token`].
pub fn access_token(
    headers: &HeaderMap,
    max_len: usize,
) -> Result<Option<(Scheme, &str)>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::SeveralAuthorizationHeaders);
    }
    let value = value.to_str().map_err(|_| AuthError::InvalidCharacters)?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if scheme.is_empty() && rest.is_empty() {
        return Err(AuthError::EmptyToken);
    }
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(AuthError::NotBearer);
    };
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::EmptyToken);
    }
    if token.len() > max_len {
        return Err(AuthError::TooLarge { limit: max_len });
    }
    if !is_b64token(token) {
        return Err(AuthError::InvalidCharacters);
    }
    Ok(Some((scheme, token)))
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    // Non-short-circuit operators over 64-byte chunks: the compiler turns each chunk into a
    // few vector compares, which matters for a check that reads every byte of every token.
    fn allowed(b: u8) -> bool {
        b.is_ascii_digit()
            | b.is_ascii_uppercase()
            | b.is_ascii_lowercase()
            | (b == b'-')
            | (b == b'.')
            | (b == b'_')
            | (b == b'~')
            | (b == b'+')
            | (b == b'/')
    }
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .as_bytes()
            .chunks(64)
            .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & allowed(b)))
}

/// Which part of the URL, if any, carries a JWT-shaped string, raw or percent-decoded.
///
/// The pattern is the OSS one: `eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}`.
pub fn jwt_in_url(path: &str, query: Option<&str>) -> Option<UrlPart> {
    if contains_jwt_raw_or_decoded(path) {
        return Some(UrlPart::Path);
    }
    match query {
        Some(query) if contains_jwt_raw_or_decoded(query) => Some(UrlPart::Query),
        _ => None,
    }
}

fn contains_jwt_raw_or_decoded(text: &str) -> bool {
    if contains_jwt(text) {
        return true;
    }
    // Without a `%` the decoded text is the raw one, already read.
    if !text.as_bytes().contains(&b'%') {
        return false;
    }
    let decoded: Cow<'_, str> = percent_decode_str(text).decode_utf8_lossy();
    matches!(decoded, Cow::Owned(_)) && contains_jwt(&decoded)
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Linear scan for the OSS pattern. Within one maximal run of base64url characters only the
/// first `eyJ` can matter: a later start ends at the same `.` with a shorter first part.
fn contains_jwt(text: &str) -> bool {
    let bytes = text.as_bytes();
    // The pattern holds two `.`: most paths and queries have none, and are not scanned.
    if !bytes.contains(&b'.') {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if !is_b64url(bytes[i]) {
            i += 1;
            continue;
        }
        let run_end = run_end(bytes, i);
        if let Some(start) = find(&bytes[i..run_end], b"eyJ") {
            if jwt_from(bytes, i + start, run_end) {
                return true;
            }
        }
        i = run_end;
    }
    false
}

fn run_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| !is_b64url(b))
        .map_or(bytes.len(), |n| from + n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `start` begins with `eyJ` and the run ends at `first_end`; checks the rest of the pattern.
fn jwt_from(bytes: &[u8], start: usize, first_end: usize) -> bool {
    if first_end - start < 3 + 10 || bytes.get(first_end) != Some(&b'.') {
        return false;
    }
    let second = first_end + 1;
    let second_end = run_end(bytes, second);
    if !bytes[second..].starts_with(b"eyJ") || second_end - second < 3 + 10 {
        return false;
    }
    if bytes.get(second_end) != Some(&b'.') {
        return false;
    }
    let third = second_end + 1;
    run_end(bytes, third) - third >= 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlc2lnbmF0dXJl";

    #[test]
    fn b64token_accepts_exactly_the_rfc_6750_alphabet_at_every_position() {
        let rfc = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        // Each byte value at the start, inside and at the end of a long token (chunk edges).
        for b in 0..=127u8 {
            for at in [0, 63, 64, 100, 199] {
                let mut token = vec![b'a'; 200];
                token[at] = b;
                let token = String::from_utf8(token).unwrap();
                let padding = b == b'=' && at == 199;
                assert_eq!(
                    is_b64token(&token),
                    rfc(b) || padding,
                    "byte {b:#04x} at {at}"
                );
            }
        }
        assert!(is_b64token("abc=="));
        assert!(!is_b64token("=="));
        assert!(!is_b64token("ab=c"));
        assert!(!is_b64token("abcé"));
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    type Case = (
        &'static [&'static str],
        Result<Option<&'static str>, AuthError>,
    );

    #[test]
    fn extracts_exactly_one_bearer_token() {
        let cases: [Case; 12] = [
            (&[], Ok(None)),
            (&["Bearer abc.def.ghi"], Ok(Some("abc.def.ghi"))),
            (&["bearer abc"], Ok(Some("abc"))),
            (&["BEARER   abc=="], Ok(Some("abc=="))),
            (&["Bearer a-b_c~d+e/f"], Ok(Some("a-b_c~d+e/f"))),
            (&["Basic dXNlcjpwYXNz"], Err(AuthError::NotBearer)),
            (&["Bearer"], Err(AuthError::EmptyToken)),
            (&[""], Err(AuthError::EmptyToken)),
            (&["Bearer a b"], Err(AuthError::InvalidCharacters)),
            (&["Bearer a\"b"], Err(AuthError::InvalidCharacters)),
            (&["Bearer ==="], Err(AuthError::InvalidCharacters)),
            (
                &["Bearer a", "Bearer b"],
                Err(AuthError::SeveralAuthorizationHeaders),
            ),
        ];
        for (values, expected) in cases {
            let map = headers(values);
            assert_eq!(bearer_token(&map, 100), expected, "{values:?}");
        }
    }

    #[test]
    fn refuses_a_token_longer_than_the_limit() {
        let map = headers(&["Bearer abcdefghij"]);
        assert_eq!(bearer_token(&map, 10), Ok(Some("abcdefghij")));
        assert_eq!(bearer_token(&map, 9), Err(AuthError::TooLarge { limit: 9 }));
        assert!(!AuthError::TooLarge { limit: 9 }
            .description()
            .contains("abcdefghij"));
    }

    #[test]
    fn refuses_non_ascii_header_bytes() {
        let mut map = HeaderMap::new();
        map.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(bearer_token(&map, 100), Err(AuthError::InvalidCharacters));
    }

    #[test]
    fn finds_jwt_shaped_strings_in_the_url() {
        let encoded = JWT.replace('.', "%2E");
        let cases = [
            (format!("/Patient/{JWT}"), None, Some(UrlPart::Path)),
            (
                "/Patient/123".to_owned(),
                Some(format!("access_token={JWT}")),
                Some(UrlPart::Query),
            ),
            (
                "/Patient".to_owned(),
                Some(format!("t={encoded}")),
                Some(UrlPart::Query),
            ),
            (format!("/x/{encoded}"), None, Some(UrlPart::Path)),
            (
                "/Patient/eyJ123".to_owned(),
                Some("name=eyJabc.eyJdef.ghi".to_owned()),
                None,
            ),
            (
                "/Patient".to_owned(),
                Some("_id=a.b.c&eyJ=1".to_owned()),
                None,
            ),
            // the signature part must have 10 characters
            (
                "/p/eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.short".to_owned(),
                None,
                None,
            ),
            // a start later in a run is covered by the first one
            (format!("/p/xxeyJ{}", &JWT[3..]), None, Some(UrlPart::Path)),
        ];
        for (path, query, expected) in cases {
            assert_eq!(
                jwt_in_url(&path, query.as_deref()),
                expected,
                "{path} {query:?}"
            );
        }
    }

    #[test]
    fn url_messages_are_the_oss_ones() {
        assert_eq!(
            UrlPart::Path.message(),
            "Access tokens must not be passed in the URL path."
        );
        assert_eq!(
            UrlPart::Query.message(),
            "Access tokens must not be passed in the URL query string."
        );
    }
}
