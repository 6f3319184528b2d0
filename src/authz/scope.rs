//! SMART on FHIR clinical scopes: the parsed form of a token's `scp`/`scope` values, the data
//! actions each scope grants (reference §4.3), and the per-type questions the authorizer asks of
//! the whole set (reference §4.7). Parsing itself — the §4.2 grammar and the §4.4 rejections —
//! lives in `scope/grammar.rs`; this module owns the types and their semantics. Pure: no I/O.

mod grammar;
#[cfg(test)]
mod grammar_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::actions::{DataAction, DataActions};

pub use grammar::parse_scopes;

/// The launch context a clinical scope is written for (reference §4.2 `id` group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    /// `patient/`: confined to one compartment, the launch-context patient's or else the
    /// `fhirUser`'s (reference §4.5).
    Patient,
    /// `user/`: the signed-in user's (`fhirUser`'s) access; gated by type and action only.
    User,
    /// `system/`: a backend service with no user (SMART Backend Services); the only context
    /// that may `$export` (reference §4.8).
    System,
}

impl Context {
    /// The scope prefix, as written in a token (`patient`, `user`, `system`; case-sensitive).
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which resource types a scope covers: `*` and `all` both mean every type (reference §4.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResourceScope {
    /// `*` or `all`: every resource type.
    All,
    /// An R4 resource type name, checked against the R4 list when parsed.
    Type(String),
}

impl ResourceScope {
    /// True when this scope covers `resource_type`. A type-less request (`None`: system search,
    /// `_type`, history at the base, a bundle) is covered by every scope; the caller then narrows
    /// the types with [`ScopeSet::granted_types`] (reference §4.7).
    pub fn covers(&self, resource_type: Option<&str>) -> bool {
        match (self, resource_type) {
            (ResourceScope::All, _) | (ResourceScope::Type(_), None) => true,
            (ResourceScope::Type(own), Some(requested)) => own == requested,
        }
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceScope::All => f.write_str("*"),
            ResourceScope::Type(name) => f.write_str(name),
        }
    }
}

/// The access part of a scope: a SMART v1 level or a set of SMART v2 letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// v1 `read`.
    V1Read,
    /// v1 `write`.
    V1Write,
    /// v1 `*` or `all`.
    V1All,
    /// v2 letters from `cruds`; at least one is set in a parsed scope.
    V2 {
        /// `c`: create (grants `Create`).
        c: bool,
        /// `r`: read by id (grants `ReadById`, not search).
        r: bool,
        /// `u`: update (grants `Update`).
        u: bool,
        /// `d`: delete (grants `Delete`).
        d: bool,
        /// `s`: search (grants `Search` and `Export`).
        s: bool,
    },
}

impl Access {
    /// The data actions this access level grants (reference §4.3, OSS `ParseScopePermissions`).
    /// v1 `read` includes `Export` (PR #3842); v1 `write` includes `Delete`; neither ever grants
    /// `HardDelete`. v2 `r` is `ReadById` only: it cannot search (reference §4.3 table).
    pub fn actions(&self) -> DataActions {
        use DataAction::{Create, Delete, Export, Read, ReadById, Search, Update, Write};
        match *self {
            Access::V1Read => DataActions::of(&[Read, Export, Search]),
            Access::V1Write => DataActions::of(&[Write, Create, Update, Delete]),
            Access::V1All => {
                DataActions::of(&[Read, Write, Export, Search, Create, Update, Delete])
            }
            Access::V2 { c, r, u, d, s } => [
                (c, DataActions::of(&[Create])),
                (r, DataActions::of(&[ReadById])),
                (u, DataActions::of(&[Update])),
                (d, DataActions::of(&[Delete])),
                (s, DataActions::of(&[Search, Export])),
            ]
            .into_iter()
            .filter(|(set, _)| *set)
            .fold(DataActions::NONE, |all, (_, actions)| all.union(actions)),
        }
    }

    /// True for the SMART v2 letter form.
    pub fn is_v2(&self) -> bool {
        matches!(self, Access::V2 { .. })
    }
}

impl fmt::Display for Access {
    /// v1 levels print as written (`*` for both `*` and `all`); v2 letters print in the
    /// standard's `cruds` order whatever order they were given in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Access::V1Read => f.write_str("read"),
            Access::V1Write => f.write_str("write"),
            Access::V1All => f.write_str("*"),
            Access::V2 { c, r, u, d, s } => {
                for (set, letter) in [(c, "c"), (r, "r"), (u, "u"), (d, "d"), (s, "s")] {
                    if set {
                        f.write_str(letter)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// One clinical scope, e.g. `patient/Observation.rs?category=laboratory`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SmartScope {
    /// The prefix before the separator: `patient`, `user` or `system`.
    pub context: Context,
    /// The resource type after the separator, or every type.
    pub resource: ResourceScope,
    /// The access level after the `.`: v1 `read`/`write`/`*` or v2 `cruds` letters.
    pub access: Access,
    /// SMART v2 search-parameter constraints (`?k=v&k2=v2`), in token order, ANDed. Names are
    /// plain parameter names or a name with a resource-type target (`subject:Patient`); values
    /// are percent-decoded (once, and never to a `%`, whitespace or a control character).
    pub constraints: Vec<(String, String)>,
}

impl SmartScope {
    /// The data actions this scope grants (reference §4.3).
    pub fn actions(&self) -> DataActions {
        self.access.actions()
    }

    /// True when the scope carries SMART v2 search-parameter constraints (`?k=v`): it then
    /// grants only the resources those parameters match, and never `$export`.
    pub fn is_constrained(&self) -> bool {
        !self.constraints.is_empty()
    }
}

impl fmt::Display for SmartScope {
    /// The canonical form: `/` separator, `*` for all types, v2 letters in `cruds` order. It
    /// parses back to the same scope: a parsed value holds no `%`, whitespace or control
    /// character (the parser refuses scopes that decode to them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.{}", self.context, self.resource, self.access)?;
        for (index, (name, value)) in self.constraints.iter().enumerate() {
            let separator = if index == 0 { '?' } else { '&' };
            write!(f, "{separator}{name}={value}")?;
        }
        Ok(())
    }
}

/// The clinical scopes of one token. Invariants established by [`parse_scopes`]: one context,
/// one SMART version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: Vec<SmartScope>,
    context: Option<Context>,
}

impl ScopeSet {
    /// The clinical scopes, in token order; non-clinical scopes (`openid`, `launch/patient`,
    /// `offline_access`, …) are not kept.
    pub fn scopes(&self) -> &[SmartScope] {
        &self.scopes
    }

    /// The single context of the clinical scopes; `None` when the token has none.
    pub fn context(&self) -> Option<Context> {
        self.context
    }

    /// True when the token carries no clinical scope (every token was non-clinical).
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The type gate (reference §4.7, OSS `CheckSMARTScopeAccess`): the union of the actions of
    /// the scopes covering `resource_type` (`*`/`all` or the exact type). A type-less request
    /// (`None`) gets the union over every scope. ANDed by the caller with the role actions.
    pub fn actions_for_type(&self, resource_type: Option<&str>) -> DataActions {
        self.union_where(|scope| scope.resource.covers(resource_type))
    }

    /// Like [`ScopeSet::actions_for_type`], counting only scopes without constraints. `$export`
    /// under SMART counts only unconstrained `system/` scopes (reference §4.8); the caller checks
    /// the context.
    pub fn unconstrained_actions_for_type(&self, resource_type: Option<&str>) -> DataActions {
        self.union_where(|scope| !scope.is_constrained() && scope.resource.covers(resource_type))
    }

    /// The types some scope grants `action` on, for narrowing `_type` on type-less requests
    /// (reference §4.7: "The `_type` filter is restricted to the scope types"). `None` means
    /// every type (an `*`/`all` scope grants it); `Some(empty)` means none ("block all").
    /// Sorted and deduplicated. Asking per action closes a gap of the reference server, which
    /// narrows `_type` to every scope type whatever the scope's access.
    pub fn granted_types(&self, action: DataAction) -> Option<Vec<String>> {
        let mut types = Vec::new();
        for scope in self.scopes.iter().filter(|s| s.actions().contains(action)) {
            match &scope.resource {
                ResourceScope::All => return None,
                ResourceScope::Type(name) => types.push(name.clone()),
            }
        }
        types.sort();
        types.dedup();
        Some(types)
    }

    /// The SMART v2 constraints that apply to `action` on `resource_type` (reference §4.7 "v2
    /// constraints"): one entry per scope that covers the type and grants the action, each the
    /// list of `(name, value)` pairs that scope ANDs. The caller ORs the entries. An empty entry
    /// is an unconstrained scope, so no narrowing is needed; an empty result means no scope
    /// grants the action (deny). Scopes are additive: an unconstrained `*` scope lifts the
    /// constraints of narrower ones, as in the reference server ("a wildcard scope absorbs the
    /// others").
    pub fn constraints_for(
        &self,
        resource_type: &str,
        action: DataAction,
    ) -> Vec<Vec<(String, String)>> {
        self.scopes
            .iter()
            .filter(|s| s.resource.covers(Some(resource_type)) && s.actions().contains(action))
            .map(|s| s.constraints.clone())
            .collect()
    }

    fn union_where(&self, keep: impl Fn(&SmartScope) -> bool) -> DataActions {
        self.scopes
            .iter()
            .filter(|scope| keep(scope))
            .fold(DataActions::NONE, |all, scope| all.union(scope.actions()))
    }
}

impl fmt::Display for ScopeSet {
    /// The canonical scopes, space-separated: a valid input to [`parse_scopes`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, scope) in self.scopes.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

/// Why a token's scopes are rejected: each is a 400 `invalid` OperationOutcome (reference §4.4,
/// §8 rule 14). Messages follow the reference server's `Resources.resx` where it has one
/// (reference §4.6); `{0}` is the offending scope as it appeared after percent-decoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// `patient/`, `user/` and `system/` scopes in one token (reference §4.4 rule 2, PR #5717).
    #[error(
        "SMART clinical scopes must use a single context. Patient, user, and system scopes \
         cannot be mixed."
    )]
    MixedContexts,
    /// v1 levels and v2 letters in one token (reference §4.4 rule 3, PR #5096).
    #[error(
        "SMART v1 and v2 clinical scopes cannot be mixed. Use either read, write and * or the \
         cruds letters in all clinical scopes."
    )]
    MixedVersions,
    /// The scope names a type that is not an R4 resource type, compared case-sensitively
    /// (reference §4.4 rule 5); holds the scope and the type.
    #[error(
        "Invalid SMART on FHIR clinical scope '{0}'. The resource type '{1}' is not a supported \
         FHIR resource type."
    )]
    UnknownResourceType(String, String),
    /// A token that starts like a clinical scope but does not match the grammar as a whole
    /// (reference §4.4 rule 1).
    #[error(
        "Invalid SMART on FHIR clinical scope '{0}'. Expected \
         <patient|user|system>/<resource type|*|all>.<read|write|*|all|cruds> with optional \
         ?name=value constraints."
    )]
    Malformed(String),
    /// A v2 letter given twice, as in `rrs` (reference §4.4 rule 4).
    #[error(
        "Invalid SMART on FHIR clinical scope '{0}'. The access level letter '{1}' appears more \
         than once."
    )]
    DuplicateAccessLetter(String, char),
    /// SMART App Launch 2.x §3.2: the permissions `c`, `r`, `u`, `d`, `s` "in that order".
    #[error(
        "Invalid SMART on FHIR clinical scope '{0}'. The access level letter '{1}' is out of \
         order; SMART v2 permissions are written c, r, u, d, s in that order."
    )]
    AccessLetterOrder(String, char),
    /// A constraint that is not `name=value`: no `=`, an empty name or value, a character
    /// outside `[A-Za-z0-9_\-:.]` in the name, or a value holding `=` (reference §4.4 rule 6).
    #[error(
        "Invalid search parameters in SMART on FHIR clinical scope '{0}'. Constraints must be \
         name=value pairs separated by '&'."
    )]
    InvalidConstraint(String),
    /// A chained constraint: a name holding `.` or starting `_has:` (reference §4.4 rule 6).
    #[error("Chained search parameters are not supported in SMART on FHIR clinical scope '{0}'.")]
    ChainedConstraint(String),
    /// A constraint with a search modifier (`:not`, `:exact`, `:missing`, …); a resource-type
    /// target such as `subject:Patient` is not a modifier (reference §4.4 rule 6, PR #5643).
    #[error("Search parameter modifiers are not supported in SMART on FHIR clinical scope '{0}'.")]
    ModifierConstraint(String),
    /// `_include` or `_revinclude` as a constraint (reference §4.4 rule 6).
    #[error(
        "Result parameters _include and _revinclude are not supported in SMART on FHIR clinical \
         scope '{0}'."
    )]
    IncludeConstraint(String),
    /// The claim is not valid UTF-8 once percent-decoded (reference §4.4 rule 7).
    #[error("The SMART on FHIR scope claim could not be URL-decoded.")]
    Undecodable,
    /// A scope that percent-decodes to whitespace or a control character (`%20`, `%0A`, `%00`):
    /// one issued scope must not become several (issue 11).
    #[error(
        "Invalid SMART on FHIR scope '{0}'. It percent-decodes to whitespace or a control \
         character (shown as ␠); scopes are separated by spaces, never by encoded characters."
    )]
    DecodedSeparator(String),
    /// A scope still holding `%` after one percent-decoding (`%2520`): double encoding.
    #[error(
        "Invalid SMART on FHIR scope '{0}'. It still holds '%' after percent-decoding once \
         (double encoding is not accepted)."
    )]
    DoubleEncoded(String),
}
