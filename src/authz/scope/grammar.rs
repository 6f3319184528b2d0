//! The SMART clinical scope grammar (reference §4.2) and its validation rules (reference §4.4),
//! written as a token parser instead of the reference server's regular expression:
//!
//! ```text
//! scope       = context ("/" | "$" | ".") resource "." access ["?" constraint *("&" constraint)]
//! context     = "patient" | "user" | "system"                  ; case-sensitive
//! resource    = "*" | "all" | 1*ALPHA                          ; an R4 resource type
//! access      = "read" | "write" | "*" | "all" | ["c"]["r"]["u"]["d"]["s"]   ; at least one, in order
//! constraint  = 1*(ALPHA | DIGIT | "_" | "-" | ":" | ".") "=" 1*(not "&", "=", whitespace)
//! ```
//!
//! Stricter than the reference server in two respects (deliberately, fail closed): any token that
//! begins with a context and a separator must match the whole grammar, where the regular
//! expression silently skips some malformed ones (`patient/Observation.xyz`, `patient/Obs-1.read`);
//! and v2 permission letters must come in `cruds` order (`patient/Observation.sr` is refused).

use percent_encoding::percent_decode_str;

use super::{Access, Context, ResourceScope, ScopeError, ScopeSet, SmartScope};
use crate::fhir::resource_types::is_resource_type;

/// Parses the values of a token's scope claims (`scp`, `scope`) into its clinical scopes
/// (reference §4.1, §4.2, §8 rules 14–15).
///
/// Each value is split on whitespace first (so a space-delimited string and a JSON array are
/// alike), and only then is each scope percent-decoded, once (`decode`:
/// `patient%2FObservation.read`, the Entra workaround; `%26` inside a constraint). Decoding the
/// whole claim before splitting, as the reference server does, would let one issued scope
/// become several (`user/Patient.read%20user/Observation.write`, issue 11). Tokens that do not
/// begin like a clinical scope (`openid`, `fhirUser`, `launch/patient`, `offline_access`,
/// `api://app/patient.x.read`, and the capitalised `Patient/Observation.rs`) are ignored. The
/// first malformed token, or the first clinical token whose context or SMART version differs
/// from an earlier one, rejects the whole claim.
pub fn parse_scopes(claims: &[String]) -> Result<ScopeSet, ScopeError> {
    let mut set = ScopeSet::default();
    for raw in claims.iter().flat_map(|claim| claim.split_whitespace()) {
        let token = decode(raw)?;
        let Some(scope) = parse_token(&token)? else {
            continue;
        };
        if let Some(first) = set.scopes.first() {
            if first.access.is_v2() != scope.access.is_v2() {
                return Err(ScopeError::MixedVersions);
            }
        }
        match set.context {
            Some(context) if context != scope.context => return Err(ScopeError::MixedContexts),
            _ => set.context = Some(scope.context),
        }
        set.scopes.push(scope);
    }
    Ok(set)
}

/// Percent-decodes one whitespace-free scope, once. What decoding may not do, as a class:
///
/// - produce whitespace, a control character or an invisible formatting character (`%20`,
///   `%09`, `%0A`, `%0D`, `%00`, `%C2%A0`, `%E2%80%8B`, …): it would split, or hide, a scope
///   that was issued as one → 400 (the same characters unencoded in a token too);
/// - leave a `%` behind (`%2520`, double encoding): another decoder downstream would read a
///   different scope than fhirguard did → 400.
///
/// `%3F`, `%26` and `%3D` become `?`, `&` and `=` and are parsed as such, as by the reference
/// server: they can only add constraints (narrower) or make a constraint invalid (400), never
/// widen a scope.
fn decode(raw: &str) -> Result<std::borrow::Cow<'_, str>, ScopeError> {
    if !raw.contains('%') && !raw.chars().any(separates) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ScopeError::Undecodable)?;
    if decoded.chars().any(separates) {
        return Err(ScopeError::DecodedSeparator(printable(&decoded)));
    }
    if decoded.contains('%') {
        return Err(ScopeError::DoubleEncoded(printable(&decoded)));
    }
    Ok(decoded)
}

/// Whitespace, a control character, or an invisible formatting character (zero-width space and
/// joiners, bidirectional marks and overrides, word joiner, byte-order mark): a character that
/// another reader could take as a separator, or strip, where fhirguard would not.
fn separates(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// A decoded scope as an error message may repeat it: whitespace and control characters
/// shown as `␠`, at most 200 characters.
fn printable(decoded: &str) -> String {
    decoded
        .chars()
        .map(|c| if separates(c) { '␠' } else { c })
        .take(200)
        .collect()
}

/// One whitespace-free token: `Ok(None)` when it is not a clinical scope at all.
fn parse_token(token: &str) -> Result<Option<SmartScope>, ScopeError> {
    let Some((context, rest)) = split_context(token) else {
        return Ok(None);
    };
    let malformed = || ScopeError::Malformed(token.to_owned());
    let (resource, rest) = rest.split_once('.').ok_or_else(malformed)?;
    if resource != "*"
        && (resource.is_empty() || !resource.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(malformed());
    }
    let (access, query) = match rest.split_once('?') {
        Some((access, query)) => (access, Some(query)),
        None => (rest, None),
    };
    let access = parse_access(token, access)?;
    let constraints = match query {
        Some(query) => parse_constraints(token, query)?,
        None => Vec::new(),
    };
    let resource = match resource {
        "*" | "all" => ResourceScope::All,
        name if is_resource_type(name) => ResourceScope::Type(name.to_owned()),
        name => {
            return Err(ScopeError::UnknownResourceType(
                token.to_owned(),
                name.to_owned(),
            ))
        }
    };
    Ok(Some(SmartScope {
        context,
        resource,
        access,
        constraints,
    }))
}

/// `patient/…`, `user.…`, `system$…`: the context and what follows the separator.
fn split_context(token: &str) -> Option<(Context, &str)> {
    [Context::Patient, Context::User, Context::System]
        .into_iter()
        .find_map(|context| {
            let rest = token.strip_prefix(context.as_str())?;
            let rest = rest
                .strip_prefix('/')
                .or_else(|| rest.strip_prefix('$'))
                .or_else(|| rest.strip_prefix('.'))?;
            Some((context, rest))
        })
}

fn parse_access(token: &str, access: &str) -> Result<Access, ScopeError> {
    match access {
        "read" => return Ok(Access::V1Read),
        "write" => return Ok(Access::V1Write),
        "*" | "all" => return Ok(Access::V1All),
        "" => return Err(ScopeError::Malformed(token.to_owned())),
        _ => {}
    }
    // SMART App Launch 2.x §3.2 ("scopes"): the permissions are `c`, `r`, `u`, `d`, `s`, "in
    // that order", each at most once. The reference server accepts any order; fhirguard does
    // not (fail closed): a permission string another reader might take differently, or a later
    // version might give another meaning, is no grant at all.
    let (mut c, mut r, mut u, mut d, mut s) = (false, false, false, false, false);
    let mut last = None;
    for letter in access.chars() {
        let (place, flag) = match letter {
            'c' => (0, &mut c),
            'r' => (1, &mut r),
            'u' => (2, &mut u),
            'd' => (3, &mut d),
            's' => (4, &mut s),
            _ => return Err(ScopeError::Malformed(token.to_owned())),
        };
        if *flag {
            return Err(ScopeError::DuplicateAccessLetter(token.to_owned(), letter));
        }
        if last.is_some_and(|last| place < last) {
            return Err(ScopeError::AccessLetterOrder(token.to_owned(), letter));
        }
        last = Some(place);
        *flag = true;
    }
    Ok(Access::V2 { c, r, u, d, s })
}

/// `k=v&k2=v2` (reference §4.4 rule 6).
fn parse_constraints(token: &str, query: &str) -> Result<Vec<(String, String)>, ScopeError> {
    let invalid = || ScopeError::InvalidConstraint(token.to_owned());
    let mut constraints = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').ok_or_else(invalid)?;
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
        if !name_ok || value.is_empty() || value.contains('=') {
            return Err(invalid());
        }
        check_constraint_name(token, name)?;
        constraints.push((name.to_owned(), value.to_owned()));
    }
    Ok(constraints)
}

/// Only plain parameters, optionally with a resource-type target (`subject:Patient`): no chains,
/// no reverse chains, no modifiers, no `_include`/`_revinclude`.
fn check_constraint_name(token: &str, name: &str) -> Result<(), ScopeError> {
    let (base, modifier) = match name.split_once(':') {
        Some((base, modifier)) => (base, Some(modifier)),
        None => (name, None),
    };
    if base == "_include" || base == "_revinclude" {
        return Err(ScopeError::IncludeConstraint(token.to_owned()));
    }
    if base == "_has" || name.contains('.') {
        return Err(ScopeError::ChainedConstraint(token.to_owned()));
    }
    match modifier {
        None => Ok(()),
        Some(target) if !base.is_empty() && is_resource_type(target) => Ok(()),
        Some(_) => Err(ScopeError::ModifierConstraint(token.to_owned())),
    }
}
