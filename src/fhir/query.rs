//! Reading the few query parameters that change a request's required data actions: whether a
//! conditional interaction has criteria, and whether a delete is a hard delete (reference §3.2).
//! Parameter names are compared ASCII case-insensitively, as ASP.NET model binding does in the
//! OSS server, and values are percent-decoded (`+` is a space, as in forms). Also the `_method`
//! tunnel ([`carries_method_parameter`]), which the proxy refuses in a query string and in a
//! `POST …/_search` form body alike.

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

/// True when a query string or `application/x-www-form-urlencoded` body names a `_method`
/// parameter, which Rails, Laravel, Express `method-override` and ASP.NET Core
/// (`HttpMethodOverrideMiddleware` with a form field) honour to run another method than the
/// request line's. Read as the most lenient of those parsers would, so that no spelling slips
/// through: `&` and `;` both separate parameters (older Python and Java parsers), the name is
/// percent-decoded with `+` as a space (`%5Fmethod`, `_%6Dethod`), compared ASCII
/// case-insensitively, with surrounding whitespace and control bytes ignored, with `.` or `[`
/// in place of the leading `_` (PHP turns both into `_`), and with an array suffix
/// (`_method[]`). Scans without allocating: this runs on every request that has a query.
/// Takes bytes as well as text, so a form body needs no UTF-8 check first.
pub fn carries_method_parameter(query: impl AsRef<[u8]>) -> bool {
    query
        .as_ref()
        .split(|b| *b == b'&' || *b == b';')
        .any(|pair| {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            is_method_name(name)
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
