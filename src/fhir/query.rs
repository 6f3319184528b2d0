//! Reading the few query parameters that change a request's required data actions: whether a
//! conditional interaction has criteria, and whether a delete is a hard delete (reference §3.2).
//! Parameter names are compared ASCII case-insensitively, as ASP.NET model binding does in the
//! OSS server, and values are percent-decoded (`+` is a space, as in forms). Also the `_method`
//! tunnel and the `access_token` parameter ([`refused_parameter`]), which the proxy refuses in a
//! query string, in a `POST …/_search` form body and in a bundle entry's URL alike; and which
//! parameter names say they hold a credential ([`is_credential_name`]), whose values logs never
//! show ([`redact_credentials`]).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The query parameters that make a delete hard in the OSS server: `hardDelete` on a delete and
/// conditional delete, `_hardDelete` and `_purgeHistory` on `$bulk-delete`
/// (`KnownQueryParameterNames`). All three are honoured everywhere: failing closed costs nothing.
const HARD_DELETE_PARAMETERS: [&str; 3] = ["hardDelete", "_hardDelete", "_purgeHistory"];

/// True when the query carries at least one parameter (conditional interactions need criteria).
pub(crate) fn has_parameters(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| !pair.is_empty()))
}

/// True when any hard-delete parameter is present with a value other than `false`. A present but
/// empty or unparsable value counts as hard: the upstream's reading is unknown, so fail closed.
pub(crate) fn is_hard_delete(query: Option<&str>) -> bool {
    parameters(query).any(|(name, value)| {
        HARD_DELETE_PARAMETERS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(&name))
            && !value.trim().eq_ignore_ascii_case("false")
    })
}

/// A query parameter that request hygiene refuses wherever a query is read: in the URL, in a
/// `POST …/_search` form body and in a batch/transaction entry's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedParameter {
    /// `_method`, a method tunnel ([`carries_method_parameter`]).
    Method,
    /// `access_token`, a credential in a URL ([`is_access_token_name`]).
    AccessToken,
}

/// The first parameter of a query string or `application/x-www-form-urlencoded` body that
/// hygiene refuses: a `_method` tunnel or an `access_token`. One pass over the parameter names,
/// without allocating: this runs on every request that has a query. Takes bytes as well as
/// text, so a form body needs no UTF-8 check first.
pub fn refused_parameter(query: impl AsRef<[u8]>) -> Option<RefusedParameter> {
    query
        .as_ref()
        .split(|b| *b == b'&' || *b == b';')
        .find_map(|pair| {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            if is_method_name(name) {
                Some(RefusedParameter::Method)
            } else if is_access_token_name(name) {
                Some(RefusedParameter::AccessToken)
            } else {
                None
            }
        })
}

/// True when a query string or `application/x-www-form-urlencoded` body names a `_method`
/// parameter, which Rails, Laravel, Express `method-override` and ASP.NET Core
/// (`HttpMethodOverrideMiddleware` with a form field) honour to run another method than the
/// request line's. Read as the most lenient of those parsers would, so that no spelling slips
/// through: `&` and `;` both separate parameters (older Python and Java parsers), the name is
/// percent-decoded with `+` as a space (`%5Fmethod`, `_%6Dethod`), compared ASCII
/// case-insensitively, with surrounding whitespace and control bytes ignored, with `.` or `[`
/// in place of the leading `_` (PHP turns both into `_`), and with an array suffix
/// (`_method[]`). Scans without allocating.
pub fn carries_method_parameter(query: impl AsRef<[u8]>) -> bool {
    query
        .as_ref()
        .split(|b| *b == b'&' || *b == b';')
        .any(|pair| {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            is_method_name(name)
        })
}

/// Whether one raw (still encoded) parameter name reads as `access_token`, the query parameter
/// of RFC 6750 §2.3, which servers and frameworks (ASP.NET's JwtBearer events, Spring's
/// `allowUriQueryParameter`, many API gateways) take as the bearer token. fhirguard reads the
/// token from the `Authorization` header only, and a URL ends up in access logs, browser
/// history and `Referer` headers (RFC 6750 §5.3; RFC 9700 §2.4.1 forbids the query), so the
/// parameter is refused whatever its value (a JWT, an opaque token, empty, absent). Read as
/// leniently as [`carries_method_parameter`]: percent-decoded with `+` as a space, ASCII
/// case-insensitive, surrounding whitespace and control bytes ignored, with `_`, `.`, `-`, a
/// space, `[` or nothing between the words (PHP turns `.`, ` ` and `[` into `_`; `accessToken`
/// is a common spelling), and an array suffix (`access_token[]`).
///
/// `pub` (hidden) for the `query` fuzz target (`fuzz/`).
#[doc(hidden)]
pub fn is_access_token_name(raw: &[u8]) -> bool {
    // Cheap refusal first: every spelling starts, after optional padding, with one of these.
    if !raw
        .first()
        .is_some_and(|&b| matches!(b, b'a' | b'A' | b'%' | b'+') || b <= b' ')
    {
        return false;
    }
    let ignorable = |b: &u8| *b <= b' ' || *b == 0x7f;
    let mut name = FormDecoded::new(raw).skip_while(ignorable).peekable();
    if !spells(&mut name, b"access") {
        return false;
    }
    // One separator at most, or none.
    let _ = name.next_if(|b| matches!(b, b'_' | b'.' | b'-' | b' ' | b'['));
    if !spells(&mut name, b"token") {
        return false;
    }
    let mut rest = name.skip_while(ignorable);
    matches!(rest.next(), None | Some(b'['))
}

/// Words that, inside a parameter's name, say its value is a credential: OAuth's `access_token`,
/// `refresh_token`, `id_token`, `client_secret`, `client_assertion`, and the `password`,
/// `api_key`, `session`, `signature` of other APIs. Compared on the name percent-decoded,
/// lower-cased and stripped of everything but letters and digits (`Client-Secret`,
/// `client%5Fsecret`, `clientSecret` alike).
const CREDENTIAL_WORDS: [&[u8]; 13] = [
    b"token",
    b"secret",
    b"passw",
    b"pwd",
    b"apikey",
    b"accesskey",
    b"privatekey",
    b"assertion",
    b"credential",
    b"authorization",
    b"signature",
    b"session",
    b"cookie",
];

/// Whole names (as compared in [`CREDENTIAL_WORDS`]) that are credentials on their own.
const CREDENTIAL_NAMES: [&[u8]; 6] = [b"key", b"sig", b"pass", b"auth", b"jwt", b"bearer"];

/// The longest compacted name compared; a longer one is taken for a credential (fail closed).
const LONGEST_NAME: usize = 64;

/// Whether a raw (still encoded) parameter name says its value is a credential
/// ([`CREDENTIAL_WORDS`], [`CREDENTIAL_NAMES`]). No allocation.
///
/// `pub` (hidden) for the `query` fuzz target (`fuzz/`).
#[doc(hidden)]
pub fn is_credential_name(raw: &[u8]) -> bool {
    let mut compact = [0_u8; LONGEST_NAME];
    let mut len = 0;
    for byte in FormDecoded::new(raw).filter(u8::is_ascii_alphanumeric) {
        let Some(slot) = compact.get_mut(len) else {
            return true;
        };
        *slot = byte.to_ascii_lowercase();
        len += 1;
    }
    let name = &compact[..len];
    CREDENTIAL_NAMES.contains(&name)
        || CREDENTIAL_WORDS
            .iter()
            .any(|word| name.windows(word.len()).any(|part| part == *word))
}

/// Writes `query` into `shown` with the value of every parameter whose name is a credential
/// ([`is_credential_name`]) replaced by `[redacted]`, separators kept; returns false, leaving
/// `shown` untouched, when there is none (the caller then shows `query` itself). For logs and
/// audit lines, which must never hold a credential (SPEC §7).
pub fn redact_credentials<'a>(query: &'a str, shown: &mut String) -> bool {
    let name = |pair: &'a str| pair.split('=').next().unwrap_or_default();
    if !query
        .split(['&', ';'])
        .any(|pair| is_credential_name(name(pair).as_bytes()))
    {
        return false;
    }
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let (pair, after) = rest.split_at(end);
        let name = name(pair);
        if is_credential_name(name.as_bytes()) {
            shown.push_str(name);
            shown.push_str("=[redacted]");
        } else {
            shown.push_str(pair);
        }
        let Some(separator) = after.chars().next() else {
            return true;
        };
        shown.push(separator);
        rest = &after[1..];
    }
}

/// Whether the next bytes of `name` spell `word`, ASCII case-insensitively.
fn spells(name: &mut impl Iterator<Item = u8>, word: &[u8]) -> bool {
    word.iter().all(|expected| {
        name.next()
            .is_some_and(|b| b.eq_ignore_ascii_case(expected))
    })
}

/// Whether one raw (still encoded) parameter name reads as `_method`.
fn is_method_name(raw: &[u8]) -> bool {
    // Cheap refusal first: every spelling starts, after optional padding, with one of these.
    if !raw
        .first()
        .is_some_and(|&b| matches!(b, b'_' | b'.' | b'[' | b'%' | b'+') || b <= b' ')
    {
        return false;
    }
    let ignorable = |b: &u8| *b <= b' ' || *b == 0x7f;
    let mut name = FormDecoded::new(raw).skip_while(ignorable);
    if !name.next().is_some_and(|b| matches!(b, b'_' | b'.' | b'[')) {
        return false;
    }
    if !b"method".iter().all(|expected| {
        name.next()
            .is_some_and(|b| b.eq_ignore_ascii_case(expected))
    }) {
        return false;
    }
    let mut rest = name.skip_while(ignorable);
    matches!(rest.next(), None | Some(b'['))
}

/// The bytes of a form-encoded text, decoded on the fly: `%XX` is a byte, `+` a space; a `%`
/// not followed by two hex digits stays itself (as the WHATWG URL parser keeps it).
#[derive(Debug, Clone)]
struct FormDecoded<'a> {
    bytes: &'a [u8],
}

impl<'a> FormDecoded<'a> {
    fn new(bytes: &'a [u8]) -> FormDecoded<'a> {
        FormDecoded { bytes }
    }
}

impl Iterator for FormDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let hex = |b: u8| char::from(b).to_digit(16);
        let (&first, rest) = self.bytes.split_first()?;
        let (byte, consumed) = match (first, rest) {
            (b'%', [high, low, ..]) => match (hex(*high), hex(*low)) {
                // Two hex digits are at most 0xff.
                (Some(high), Some(low)) => (u8::try_from(high * 16 + low).unwrap_or(0), 3),
                _ => (b'%', 1),
            },
            (b'+', _) => (b' ', 1),
            (other, _) => (other, 1),
        };
        self.bytes = &self.bytes[consumed..];
        Some(byte)
    }
}

/// `(name, value)` pairs, percent-decoded.
pub fn parameters(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
}

/// Percent-encodes a parameter name or value for a query string (everything but unreserved
/// characters and the FHIR punctuation `/`, `:`, `,`, `|`, `$`).
pub fn encode(text: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/')
        .remove(b':')
        .remove(b',')
        .remove(b'|')
        .remove(b'$');
    utf8_percent_encode(text, KEEP).to_string()
}

fn decode(text: &str) -> String {
    let spaced: Cow<'_, str> = if text.contains('+') {
        Cow::Owned(text.replace('+', " "))
    } else {
        Cow::Borrowed(text)
    };
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_present() {
        assert!(!has_parameters(None));
        assert!(!has_parameters(Some("")));
        assert!(!has_parameters(Some("&&")));
        assert!(has_parameters(Some("identifier=x")));
        assert!(has_parameters(Some("&name")));
    }

    #[test]
    fn method_parameters_in_every_spelling() {
        let tunnels = [
            "_method=DELETE",
            "_method",
            "_method=",
            "x=1&_method=PUT",
            "x=1;_method=PUT",
            "_METHOD=delete",
            "_MeThOd=delete",
            "%5Fmethod=DELETE",
            "%5fmethod=DELETE",
            "_%6Dethod=DELETE",
            "%5F%6D%65%74%68%6F%64=DELETE",
            "_method%20=DELETE",
            "+_method=DELETE",
            "%20_method+=DELETE",
            "_method%00=DELETE",
            "%09_method=DELETE",
            ".method=DELETE",
            "[method=DELETE",
            "_method[]=DELETE",
            "_method%5B%5D=DELETE",
            "a=b&&_method=GET&c",
        ];
        for query in tunnels {
            assert!(carries_method_parameter(query), "{query}");
        }
        let plain = [
            "",
            "&",
            "method=x",
            "x_method=DELETE",
            "_methods=DELETE",
            "_method_=DELETE",
            "__method=DELETE",
            "_metho=DELETE",
            "name=_method",
            "code=a%26_method",
            "%255Fmethod=DELETE",
            "_format=json&_count=10&subject=Patient/1",
            "_method.x=1",
            "%",
            "%5",
            "_%6",
            "%ZZmethod=1",
        ];
        for query in plain {
            assert!(!carries_method_parameter(query), "{query}");
        }
        // A form body as bytes, not necessarily UTF-8.
        assert!(carries_method_parameter(
            &b"name=\xff\xfe&_method=DELETE"[..]
        ));
        assert!(!carries_method_parameter(&b"name=\xff_method"[..]));
    }

    #[test]
    fn access_tokens_in_every_spelling() {
        let refused = [
            "access_token=eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
            "access_token=opaque-2YotnFZFEjr1zCsicMWpAA",
            "access_token=",
            "access_token",
            "access_token=a&access_token=b",
            "name=x&access_token=a",
            "name=x;access_token=a",
            "ACCESS_TOKEN=a",
            "Access_Token=a",
            "access%5Ftoken=a",
            "access%5ftoken=a",
            "%61ccess_token=a",
            "%61%63%63%65%73%73%5F%74%6F%6B%65%6E=a",
            "access.token=a",
            "access-token=a",
            "access+token=a",
            "access%20token=a",
            "access[token=a",
            "accessToken=a",
            "accesstoken=a",
            "access_token[]=a",
            "access_token%5B%5D=a",
            "access_token[0]=a",
            "+access_token=a",
            "%20access_token%20=a",
            "%00access_token=a",
            "access_token%09=a",
            "&&access_token&",
        ];
        for query in refused {
            assert_eq!(
                refused_parameter(query),
                Some(RefusedParameter::AccessToken),
                "{query}"
            );
        }
        let allowed = [
            "",
            "name=access_token",
            "code=a%26access_token%3Dx",
            "access=token",
            "access_tokens=a",
            "access__token=a",
            "xaccess_token=a",
            "access_token_hint=a",
            "access_toke=a",
            "%2561ccess_token=a",
            "token=a",
            "_access_token=a",
            "access_token.x=a",
        ];
        for query in allowed {
            assert_eq!(refused_parameter(query), None, "{query}");
        }
        // The first refused parameter names the rule.
        assert_eq!(
            refused_parameter("_method=GET&access_token=a"),
            Some(RefusedParameter::Method)
        );
        assert_eq!(
            refused_parameter(&b"q=\xff&access_token=a"[..]),
            Some(RefusedParameter::AccessToken)
        );
    }

    #[test]
    fn credential_names_are_recognised() {
        let credentials = [
            "access_token",
            "refresh_token",
            "id_token",
            "token",
            "client_secret",
            "Client-Secret",
            "clientSecret",
            "client%5Fsecret",
            "client_assertion",
            "password",
            "PassWord",
            "passwd",
            "pwd",
            "api_key",
            "apiKey",
            "x-api-key",
            "key",
            "sig",
            "jwt",
            "session_id",
            "auth",
            "authorization",
            "signature",
            "AWSAccessKeyId",
        ];
        for name in credentials {
            assert!(is_credential_name(name.as_bytes()), "{name}");
        }
        let long = "a".repeat(LONGEST_NAME + 1);
        assert!(
            is_credential_name(long.as_bytes()),
            "a name too long to read"
        );
        let plain = [
            "family",
            "code",
            "author",
            "subject",
            "_count",
            "patient",
            "identifier",
            "keyword",
            "_format",
            "",
        ];
        for name in plain {
            assert!(!is_credential_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn credential_values_are_redacted() {
        let cases = [
            (
                "family=x&access_token=s3cr3t",
                Some("family=x&access_token=[redacted]"),
            ),
            (
                "client_secret=a;family=x&password",
                Some("client_secret=[redacted];family=x&password=[redacted]"),
            ),
            (
                "access%5Ftoken=s3cr3t&access_token=t0k3n&",
                Some("access%5Ftoken=[redacted]&access_token=[redacted]&"),
            ),
            ("family=token&code=password", None),
            ("", None),
        ];
        for (query, expected) in cases {
            let mut shown = String::new();
            let redacted = redact_credentials(query, &mut shown);
            assert_eq!(redacted.then_some(shown.as_str()), expected, "{query}");
        }
    }

    #[test]
    fn hard_delete() {
        let hard = [
            "hardDelete=true",
            "HARDDELETE=True",
            "x=1&hardDelete=true",
            "hardDelete",
            "hardDelete=",
            "hardDelete=yes",
            "_hardDelete=true",
            "_purgeHistory=true",
            "hard%44elete=true",
            "hardDelete=false&hardDelete=true",
        ];
        for query in hard {
            assert!(is_hard_delete(Some(query)), "{query}");
        }
        let soft = [
            "",
            "hardDelete=false",
            "hardDelete=FALSE",
            "x=hardDelete",
            "_soft=true",
        ];
        for query in soft {
            assert!(!is_hard_delete(Some(query)), "{query}");
        }
        assert!(!is_hard_delete(None));
    }
}
