//! Request-path normalization: the one canonical form of a request path that fhirguard both
//! classifies and forwards, so the upstream can never route a request differently from how it
//! was authorized (RFC 3986 §5.2.4 dot-segment removal, §6.2.2 normalization).
//!
//! The rules, in order:
//! - the path must start with `/`;
//! - control characters (also percent-encoded, `%00`–`%1F`, `%7F`), non-ASCII, space, `\`, `?`,
//!   `#` and `;` are refused. `;` because servlet containers strip "path parameters", which makes
//!   `/x/..;/y` a `..` on the upstream but an ordinary segment here;
//! - encoded separators (`%2F`, `%5C`, any case) and their double encodings (`%252F`, `%255C`,
//!   `%252E`) are refused: an upstream that decodes them would see other segments (the OSS server
//!   decodes `%2f`, reference §4.9 #5213);
//! - escapes of unreserved characters and of `$` are decoded (`%2e` → `.`, `%24` → `$`), every
//!   other escape is kept with upper-case hex digits; malformed escapes are refused;
//! - empty segments (duplicate slashes) are dropped, `.` is dropped, `..` removes the previous
//!   segment and is refused when there is none (it would climb above the FHIR base);
//! - a trailing slash is dropped, except for the root `/`.

/// Why a request path was refused. Every variant becomes a 400 `invalid` OperationOutcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (an authority-form or asterisk-form target).
    #[error("The request path must start with '/'.")]
    NotAbsolute,
    /// A control or non-ASCII character, space, `\`, `?`, `#` or `;`; holds it, quoted or as
    /// `U+XXXX`.
    #[error("The request path contains a character that is not allowed ({0}).")]
    InvalidCharacter(String),
    /// `%2F`, `%5C` or a double encoding (`%252F`, `%252E`) an upstream might decode into a
    /// segment boundary.
    #[error("The request path contains an encoded path separator or dot ({0}).")]
    EncodedSeparator(String),
    /// `%00`–`%1F` or `%7F`.
    #[error("The request path contains an encoded control character ({0}).")]
    EncodedControl(String),
    /// A `%` not followed by two hex digits.
    #[error("The request path contains a malformed percent-encoding.")]
    MalformedEscape,
    /// A `..` with no segment left to remove.
    #[error("The request path climbs above the FHIR base ('..').")]
    AboveRoot,
}

/// Normalizes the path part of a request target (no query). The result is exactly the path the
/// proxy forwards (relative to the FHIR base) and classifies; `normalize_path` is idempotent.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if raw.starts_with('/') && is_normal(raw) {
        return Ok(raw.to_owned());
    }
    normalize_in_full(raw)
}

/// Whether `raw` (starting with `/`) is its own normal form, in one pass over its bytes: only
/// allowed characters and no `%`, no empty segment, no segment starting with `.` (so neither
/// `.` nor `..`), no trailing slash. Most requests' paths are; the rest take the full way.
fn is_normal(raw: &str) -> bool {
    let mut previous = 0;
    for &byte in raw.as_bytes() {
        let plain = byte.is_ascii_graphic() && !matches!(byte, b'\\' | b'?' | b'#' | b';' | b'%');
        if !plain || (previous == b'/' && matches!(byte, b'/' | b'.')) {
            return false;
        }
        previous = byte;
    }
    previous != b'/'
}

/// [`normalize_path`] for any path: the rules of the module doc, segment by segment.
fn normalize_in_full(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if let Some(c) = raw.chars().find(|c| !is_allowed_char(*c)) {
        return Err(PathError::InvalidCharacter(describe_char(c)));
    }
    let mut segments: Vec<String> = Vec::new();
    for raw_segment in raw.split('/') {
        let segment = decode_segment(raw_segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(segment),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// Printable ASCII, except space and the characters listed in the module docs.
fn is_allowed_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '\\' | '?' | '#' | ';')
}

fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// Decodes the escapes of unreserved characters and `$`, upper-cases the others, and refuses
/// encoded separators, control characters and malformed escapes.
fn decode_segment(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    // Whether `out` holds a `%` at all: only a kept escape puts one there.
    let mut kept_escape = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let byte = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(high), Some(low)) => hex_pair(*high, *low).ok_or(PathError::MalformedEscape)?,
            _ => return Err(PathError::MalformedEscape),
        };
        let escape = format!("%{byte:02X}");
        match byte {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator(escape)),
            0x00..=0x1F | 0x7F => return Err(PathError::EncodedControl(escape)),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'$') => {
                out.push(char::from(b));
            }
            _ => {
                out.push_str(&escape);
                kept_escape = true;
            }
        }
        i += 3;
    }
    if !kept_escape {
        return Ok(out);
    }
    // Checked on the decoded segment, not the raw one: `%25%32%46` and `%252%66` only spell
    // `%252F` once their unreserved escapes are decoded.
    let double = out
        .match_indices("%25")
        .find(|(at, _)| is_double_encoded_separator(&out.as_bytes()[at + 3..]));
    if let Some((at, _)) = double {
        return Err(PathError::EncodedSeparator(format!(
            "%25{}",
            &out[at + 3..at + 5]
        )));
    }
    Ok(out)
}

/// `%25` followed by `2F`, `5C` or `2E` (any case): a double-encoded `/`, `\` or `.`.
fn is_double_encoded_separator(rest: &[u8]) -> bool {
    match rest {
        [high, low, ..] => matches!(hex_pair(*high, *low), Some(b'/' | b'\\' | b'.')),
        _ => false,
    }
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    let value = digit(high)? * 16 + digit(low)?;
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/Patient/", "/Patient"),
            ("//Patient//1///", "/Patient/1"),
            ("/Patient/./1", "/Patient/1"),
            ("/Observation/../Patient/1", "/Patient/1"),
            ("/Patient/1/..", "/Patient"),
            ("/Patient/%2e%2E/Observation", "/Observation"),
            ("/Patient/.%2e/Observation", "/Observation"),
            ("/Patient/%2e", "/Patient"),
            ("/Patient/%24everything", "/Patient/$everything"),
            ("/Pat%69ent/1", "/Patient/1"),
            ("/Patient/a%20b", "/Patient/a%20b"),
            ("/Patient/a%3ab", "/Patient/a%3Ab"),
            ("/Patient/...", "/Patient/..."),
            ("/a/b/../../c", "/c"),
            ("/$export", "/$export"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn refuses() {
        use PathError::*;
        let cases = [
            ("", NotAbsolute),
            ("Patient/1", NotAbsolute),
            ("/..", AboveRoot),
            ("/Patient/../..", AboveRoot),
            ("/%2e%2e/Patient", AboveRoot),
            ("/Patient%2F1", EncodedSeparator("%2F".into())),
            ("/Patient%2f1", EncodedSeparator("%2F".into())),
            ("/Patient%5c1", EncodedSeparator("%5C".into())),
            ("/Patient%5C1", EncodedSeparator("%5C".into())),
            ("/Patient%252f1", EncodedSeparator("%252f".into())),
            ("/Patient/%252e%252e", EncodedSeparator("%252e".into())),
            ("/Patient\\1", InvalidCharacter("'\\'".into())),
            ("/Patient/1\0", InvalidCharacter("U+0000".into())),
            ("/Patient/\n1", InvalidCharacter("U+000A".into())),
            ("/Patient/1 2", InvalidCharacter("U+0020".into())),
            ("/Patient/é", InvalidCharacter("U+00E9".into())),
            ("/Patient/..;/x", InvalidCharacter("';'".into())),
            ("/Patient?x=1", InvalidCharacter("'?'".into())),
            ("/Patient%00", EncodedControl("%00".into())),
            ("/Patient%7f", EncodedControl("%7F".into())),
            ("/Patient%", MalformedEscape),
            ("/Patient%2", MalformedEscape),
            ("/Patient%zz", MalformedEscape),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw), Err(expected), "{raw:?}");
        }
    }

    /// Found by the `path` fuzz target: a `%25` whose following hex digits are themselves
    /// escaped only spells a double-encoded separator once decoded (`%25%32%46` → `%252F`), which
    /// the next normalization (or an upstream decoding twice) then reads as `%2F`.
    #[test]
    fn refuses_double_encodings_spelled_with_escaped_digits() {
        for (raw, escape) in [
            ("/%252%65", "%252e"),
            ("/a%25%32%46b", "%252F"),
            ("/a%25%32F", "%252F"),
            ("/a%252%66", "%252f"),
            ("/a%25%35%43", "%255C"),
            ("/%25%32%65%25%32%65/x", "%252e"),
        ] {
            assert_eq!(
                normalize_path(raw),
                Err(PathError::EncodedSeparator(escape.into())),
                "{raw}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(raw in any::<String>()) {
            let _ = normalize_path(&raw);
        }

        #[test]
        fn idempotent(raw in "/[a-zA-Z0-9./%$_~;:-]{0,40}") {
            if let Ok(once) = normalize_path(&raw) {
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                prop_assert!(once == "/" || !once.ends_with('/'));
                prop_assert_eq!(normalize_path(&once), Ok(once));
            }
        }

        /// The one-pass shortcut answers exactly as the segment-by-segment way, refusals
        /// included.
        #[test]
        fn the_shortcut_answers_as_the_full_way(raw in "/?[a-zA-Z0-9./%$_~;:?#\\\\ \u{7f}\u{e9}-]{0,30}") {
            prop_assert_eq!(normalize_path(&raw), normalize_in_full(&raw));
        }

        #[test]
        fn idempotent_on_escapes(raw in "(/(%[0-9a-fA-F]{2}|[a-z.]){0,4}){0,6}") {
            if let Ok(once) = normalize_path(&raw) {
                prop_assert_eq!(normalize_path(&once), Ok(once));
            }
        }
    }
}
