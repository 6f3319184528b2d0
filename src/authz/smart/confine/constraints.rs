//! SMART v2 constraints on every interaction that returns a resource (issue 20, item 1). A
//! scope such as `patient/Observation.rs?category=laboratory` grants only the Observations its
//! search parameters select. fhirguard has no FHIRPath engine, so the one proof it has is the
//! server's: the constraint ANDed into a search on the constrained type. Every other way to
//! reach a resource of a type the grant reads *only* under constraints — read, vread, instance
//! and type history, `_include`/`_revinclude` and chains toward it, a search or history across
//! types, `$everything`, an operation, a conditional interaction (whose search the constraint
//! is not ANDed into), a write — is refused (403), alone or as a batch entry. Answers fhirguard
//! filters drop entries of such a type unless they are the proven matches. Pure.

use super::{Denial, Gate};
use crate::actions::{DataAction, DataActions};
use crate::authz::scope::ResourceScope;
use crate::fhir::query::parameters;
use crate::fhir::{FhirRequest, Interaction};

/// The rule these refusals name (docs/smart.md).
const RULE: &str = "SMART v2 constraints hold on every interaction";

/// The actions that read resources (reference §4.3: v1 `read`, v2 `r` and `s`).
const READS: [DataAction; 3] = [DataAction::Read, DataAction::Search, DataAction::ReadById];

impl Gate<'_> {
    /// The read actions (∩ granted) of the scopes covering `resource_type` (`None`: only `*`
    /// scopes), counting only unconstrained scopes when `unconstrained`.
    fn read_actions(&self, resource_type: Option<&str>, unconstrained: bool) -> bool {
        let actions = self
            .grant
            .scopes
            .scopes()
            .iter()
            .filter(|s| !(unconstrained && s.is_constrained()))
            .filter(|s| match resource_type {
                Some(t) => s.resource.covers(Some(t)),
                None => s.resource == ResourceScope::All,
            })
            .fold(DataActions::NONE, |all, s| all.union(s.actions()));
        let actions = self.granted.intersection(actions);
        READS.into_iter().any(|a| actions.contains(a))
    }

    fn has_constraints(&self) -> bool {
        self.grant
            .scopes
            .scopes()
            .iter()
            .any(|s| s.is_constrained())
    }

    /// True when the grant reads `resource_type` (`None`: every type) only through constrained
    /// scopes: resources of it may be returned only where the constraint is proven.
    pub(super) fn constrained_only(&self, resource_type: Option<&str>) -> bool {
        // Most grants hold no constraint at all: one pass over the scopes answers.
        self.has_constraints()
            && self.read_actions(resource_type, false)
            && !self.read_actions(resource_type, true)
    }

    /// A type the grant reads only under constraints, if any (`*` for a constrained wildcard
    /// without an unconstrained one): what an answer of any type could hold unproven.
    pub(super) fn some_constrained_type(&self) -> Option<String> {
        self.grant
            .scopes
            .scopes()
            .iter()
            .filter(|s| s.is_constrained())
            .find_map(|s| match &s.resource {
                ResourceScope::All => self.constrained_only(None).then(|| "*".to_owned()),
                ResourceScope::Type(t) => self.constrained_only(Some(t)).then(|| t.clone()),
            })
    }

    /// The request's own type: unless an unconstrained scope meets its requirement, only a
    /// search on the type (where [`Gate::constraints`] ANDs the constraint) may go on.
    pub(super) fn check_request_type(&self, request: &FhirRequest) -> Result<(), Denial> {
        let Some(resource_type) = request.resource_type.as_deref() else {
            return Ok(());
        };
        if !self.has_constraints() {
            return Ok(());
        }
        let scopes = &self.grant.scopes;
        let all = self
            .granted
            .intersection(scopes.actions_for_type(Some(resource_type)));
        let unconstrained = self
            .granted
            .intersection(scopes.unconstrained_actions_for_type(Some(resource_type)));
        // Not granted at all is the type gate's to refuse (or, in report-only mode, to let
        // through as a would-be denial); granted without constraints needs no proof.
        if !request.required.is_met_by(all) || request.required.is_met_by(unconstrained) {
            return Ok(());
        }
        let searched = matches!(
            request.interaction,
            Interaction::SearchType | Interaction::SearchCompartment
        );
        if searched {
            return Ok(());
        }
        let hint = match request.interaction {
            Interaction::Read | Interaction::Vread => "search with _id instead",
            _ => "search the type instead, where the constraint is applied",
        };
        Err(Denial::Forbidden(format!(
            "the SMART scopes on {resource_type} are constrained by search parameters, which a \
             {} cannot be checked against ({RULE}); {hint}",
            request.interaction.name()
        )))
    }

    /// An answer that may hold resources of other types than the request's: a search or
    /// history across types, `Patient/1/*`, `$everything`, a type-less operation. Each type it
    /// may hold (`types`, `None`: any) must be read without constraints.
    pub(super) fn check_answer_types(
        &self,
        request: &FhirRequest,
        types: Option<&[String]>,
    ) -> Result<(), Denial> {
        let constrained = match types {
            Some(types) => types
                .iter()
                .find(|t| self.constrained_only(Some(t)))
                .cloned(),
            None => self.some_constrained_type(),
        };
        match constrained {
            None => Ok(()),
            Some(t) => Err(Denial::Forbidden(format!(
                "{request} may return {t} resources, and the SMART scopes on {t} are \
                 constrained by search parameters, which fhirguard can apply only to a search \
                 of {t} alone ({RULE}); list the types in _type, or search {t} on its own"
            ))),
        }
    }

    /// An include, revinclude, chain or `_has` reaching `target` (`None`: a type it does not
    /// name): refused when the grant reads that type only under constraints.
    pub(super) fn check_reach(&self, name: &str, target: Option<&str>) -> Result<(), Denial> {
        if !self.constrained_only(target) {
            return Ok(());
        }
        let what = target.unwrap_or("every type");
        Err(Denial::Forbidden(format!(
            "'{name}' reaches {what}, which the SMART scopes read only under search-parameter \
             constraints that an include or a chain does not apply ({RULE})"
        )))
    }
}

impl Gate<'_> {
    /// A patch answers with the stored resource as patched: one of a type the grant does not
    /// read without constraints must not be shown (the server is asked for
    /// `Prefer: return=minimal`, and a body it sends anyway is dropped).
    pub(super) fn hides_answer(&self, request: &FhirRequest) -> bool {
        matches!(
            request.interaction,
            Interaction::Patch | Interaction::ConditionalPatch
        ) && request
            .resource_type
            .as_deref()
            .is_some_and(|t| !self.read_actions(Some(t), true))
    }
}

/// Whether the answer to `request` must not be shown (`Gate::hides_answer`).
pub fn hides_answer(
    request: &FhirRequest,
    granted: DataActions,
    grant: &crate::authz::smart::SmartGrant,
) -> bool {
    Gate { grant, granted }.hides_answer(request)
}

/// The types an answer across types may hold: those listed in `_type` (`None`: any).
pub(super) fn listed_types(query: Option<&str>) -> Option<Vec<String>> {
    let listed: Vec<String> = parameters(query)
        .filter(|(name, _)| name == "_type")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(|t| t.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    (!listed.is_empty()).then_some(listed)
}

/// Which types an answer holds when it may hold others than the request's.
pub(super) enum AcrossTypes {
    /// Only the request's type.
    No,
    /// Any type, whatever the query says (`/_history`, `Patient/1/*`, a type-less operation):
    /// history and compartment searches take no `_type` in R4.
    Any,
    /// The types `_type` lists (a system search, `$everything`), else any.
    Listed,
}

/// Whether the answer to `request` may hold resources of other types than its own.
pub(super) fn across_types(request: &FhirRequest) -> AcrossTypes {
    let everything = request.operation.as_deref() == Some("everything");
    match request.interaction {
        Interaction::SearchSystem => AcrossTypes::Listed,
        Interaction::Operation if everything => AcrossTypes::Listed,
        Interaction::HistorySystem => AcrossTypes::Any,
        Interaction::SearchCompartment | Interaction::Operation
            if request.resource_type.is_none() =>
        {
            AcrossTypes::Any
        }
        _ => AcrossTypes::No,
    }
}
