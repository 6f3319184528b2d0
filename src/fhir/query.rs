//! Reading the few query parameters that change a request's required data actions: whether a
//! conditional interaction has criteria, and whether a delete is a hard delete (reference §3.2).
//! Parameter names are compared ASCII case-insensitively, as ASP.NET model binding does in the
//! OSS server, and values are percent-decoded (`+` is a space, as in forms).

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
